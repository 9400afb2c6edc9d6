//! Stage planning: the Dockerfile's instructions grouped into stages, which stages a
//! target needs, and the value of each ARG.

use std::collections::{BTreeMap, BTreeSet};

use super::dockerfile::{self, Instruction};

/// One `FROM` and the instructions after it.
pub(super) struct Stage {
    /// `FROM … AS name`, lower case.
    pub name: Option<String>,
    pub from: Instruction,
    pub steps: Vec<Instruction>,
}

/// The ARGs before the first FROM (global) and the stages.
pub(super) fn split_stages(
    instructions: Vec<Instruction>,
) -> anyhow::Result<(Vec<Instruction>, Vec<Stage>)> {
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for inst in instructions {
        match (inst.keyword.as_str(), stages.last_mut()) {
            ("FROM", _) => {
                let words: Vec<String> = inst.raw().split_whitespace().map(str::to_owned).collect();
                let name = match words.as_slice() {
                    [_] => None,
                    [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                        Some(name.to_lowercase())
                    }
                    _ => return Err(inst.invalid("expected FROM image [AS name]").into()),
                };
                stages.push(Stage {
                    name,
                    from: inst,
                    steps: Vec::new(),
                });
            }
            ("ARG", None) => global_args.push(inst),
            (_, None) => {
                return Err(inst
                    .invalid("only ARG may come before the first FROM")
                    .into())
            }
            (_, Some(stage)) => stage.steps.push(inst),
        }
    }
    anyhow::ensure!(!stages.is_empty(), "the Dockerfile has no FROM instruction");
    Ok((global_args, stages))
}

/// The index of the stage `target` names (the last when `None`).
pub(super) fn target_index(stages: &[Stage], target: Option<&str>) -> anyhow::Result<usize> {
    match target {
        None => Ok(stages.len() - 1),
        Some(t) => stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t))
            .ok_or_else(|| anyhow::anyhow!("target stage {t:?} is not in the Dockerfile")),
    }
}

/// The stages `target` depends on (its base, `COPY --from` sources and `RUN --mount`
/// `from=` stages), itself included.
pub(super) fn needed_stages(stages: &[Stage], target: usize) -> BTreeSet<usize> {
    let by_name = |name: &str| -> Option<usize> {
        stages
            .iter()
            .position(|s| s.name.as_deref() == Some(name))
            .or_else(|| name.parse().ok())
    };
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        let base = stages[i].from.raw();
        let base = base.split_whitespace().next().unwrap_or("").to_lowercase();
        let mut deps: Vec<usize> = by_name(&base).filter(|&d| d < i).into_iter().collect();
        for step in &stages[i].steps {
            if let Some(from) = step.flag("from") {
                deps.extend(by_name(&from.to_lowercase()).filter(|&d| d < i));
            }
            // Read with the step's own parser (a spec it refuses is refused there).
            let mounted = step
                .flags
                .iter()
                .filter(|(name, _)| name == "mount")
                .filter_map(|(_, value)| super::mounts::MountSpec::parse(value).ok()?.from);
            for from in mounted {
                deps.extend(by_name(&from.to_lowercase()).filter(|&d| d < i));
            }
        }
        todo.extend(deps);
    }
    needed
}

/// How many steps the build announces (`Step n/N`): each needed stage's FROM and
/// instructions, ARGs included (as docker counts them).
pub(super) fn step_count(stages: &[Stage], needed: &BTreeSet<usize>) -> usize {
    stages
        .iter()
        .enumerate()
        .filter(|(i, _)| needed.contains(i))
        .map(|(_, s)| s.steps.len() + 1)
        .sum()
}

/// BuildKit's automatic platform arguments for a build for `platform` (`os/arch[/variant]`,
/// default this machine's): `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`
/// and the same for `BUILD…`, the machine building.
pub(super) fn platform_args(platform: Option<&str>) -> BTreeMap<String, String> {
    let host = format!("linux/{}", crate::image::host_architecture());
    let mut args = BTreeMap::new();
    for (prefix, p) in [
        ("TARGET", platform.unwrap_or(&host)),
        ("BUILD", host.as_str()),
    ] {
        let mut parts = p.split('/');
        let os = parts.next().unwrap_or("linux");
        let arch = parts.next().unwrap_or_default();
        let variant = parts.next().unwrap_or_default();
        args.insert(format!("{prefix}PLATFORM"), p.to_owned());
        args.insert(format!("{prefix}OS"), os.to_owned());
        args.insert(format!("{prefix}ARCH"), arch.to_owned());
        args.insert(format!("{prefix}VARIANT"), variant.to_owned());
    }
    args
}

/// The values of the global ARGs (for FROM lines and as defaults of stage ARGs).
pub(super) fn global_args(
    args: &[Instruction],
    build_args: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut values = BTreeMap::new();
    for arg in args {
        let (name, value) = declare_arg(arg, build_args, &values, &BTreeMap::new())?;
        values.insert(name, value.unwrap_or_default());
    }
    Ok(values)
}

/// An ARG declaration: its name and value (a `--build-arg`, else its default, else the
/// global ARG of the same name).
pub(super) fn declare_arg(
    inst: &Instruction,
    build_args: &BTreeMap<String, String>,
    globals: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<(String, Option<String>)> {
    let raw = inst.raw();
    let (name, default) = match raw.split_once('=') {
        Some((n, d)) => {
            let words = dockerfile::words(d).map_err(|e| inst.invalid(e))?;
            let d = dockerfile::expand(&words.join(" "), vars).map_err(|e| inst.invalid(e))?;
            (n.trim().to_owned(), Some(d))
        }
        None => (raw.trim().to_owned(), None),
    };
    anyhow::ensure!(
        !name.is_empty() && !name.contains(char::is_whitespace),
        inst.invalid("expected ARG name[=default]")
    );
    let value = build_args
        .get(&name)
        .cloned()
        .or(default)
        .or_else(|| globals.get(&name).cloned());
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_and_what_a_target_needs() {
        let parsed = dockerfile::parse(
            "ARG BASE=scratch\nFROM $BASE AS tools\nRUN x\nFROM scratch AS unused\nFROM scratch\nCOPY --from=tools /a /a\n",
        )
        .unwrap();
        let (globals, stages) = split_stages(parsed).unwrap();
        assert_eq!(globals.len(), 1);
        assert_eq!(stages.len(), 3);
        assert_eq!(stages[0].name.as_deref(), Some("tools"));
        assert_eq!(needed_stages(&stages, 2), BTreeSet::from([0, 2]));
        assert_eq!(step_count(&stages, &BTreeSet::from([0, 2])), 4);
        assert_eq!(target_index(&stages, Some("unused")).unwrap(), 1);
        assert_eq!(target_index(&stages, None).unwrap(), 2);
        assert!(target_index(&stages, Some("nope")).is_err());
        assert!(split_stages(dockerfile::parse("RUN x\nFROM scratch\n").unwrap()).is_err());
    }

    #[test]
    fn args_take_build_args_then_defaults_then_globals() {
        let parsed = dockerfile::parse("ARG A=1\nARG B=2\nARG C\nFROM scratch\n").unwrap();
        let (globals, _) = split_stages(parsed).unwrap();
        let build_args = BTreeMap::from([("B".to_owned(), "set".to_owned())]);
        let values = global_args(&globals, &build_args).unwrap();
        assert_eq!(values["A"], "1");
        assert_eq!(values["B"], "set");
        assert_eq!(values["C"], "");
    }
}
