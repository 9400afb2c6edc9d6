//! One function per Dockerfile instruction: what the instruction does and its cache
//! key (with its inputs: the files a COPY reads, the environment a RUN sees). Most
//! change the image config only; RUN, COPY and ADD give a [`FileStep`] that the
//! builder runs on the stage's root filesystem.
//!
//! The config is JSON (`serde_json::Value`), not oci-spec's `ImageConfiguration`:
//! see [`crate::image::Image::config`].

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::copy::{CopyStep, Made};
use super::dockerfile::{self, Args, Instruction, ParseError};
use super::mounts::{self, MountSpec};
use super::remote::Remote;

/// What a step does, once its cache key is known not to be cached.
pub(super) enum Action {
    Config(Box<dyn FnOnce(&mut Value)>),
    Files(FileStep),
}

pub(super) enum FileStep {
    Run {
        argv: Vec<String>,
        /// A here-document run as a script of its own (`RUN <<EOF` whose body starts
        /// with `#!`): put in the image for the command and removed after it.
        script: Option<String>,
        /// `--mount`s, for the command only.
        mounts: Vec<MountSpec>,
        env: Vec<(String, String)>,
        workdir: String,
        user: Option<String>,
    },
    Copy(CopyStep),
}

pub(super) struct Step {
    pub key: String,
    pub created_by: String,
    pub action: Action,
}

fn config_step(key: String, change: impl FnOnce(&mut Value) + 'static) -> Step {
    Step {
        created_by: key.clone(),
        key,
        action: Action::Config(Box::new(change)),
    }
}

/// An instruction and what it is prepared with.
pub(super) struct Input<'a> {
    pub inst: &'a Instruction,
    /// The stage's config after the steps before this one.
    pub config: &'a Value,
    /// The stage's ARGs so far.
    pub args: &'a BTreeMap<String, String>,
    /// The variables for expansion: the ARGs, overridden by the config's ENV.
    pub vars: BTreeMap<String, String>,
}

impl Input<'_> {
    fn expand(&self, text: &str) -> Result<String, ParseError> {
        dockerfile::expand(text, &self.vars).map_err(|e| self.inst.invalid(e))
    }

    /// The exec form's words, or the shell form run by the config's shell.
    fn exec_or_shell(&self) -> Vec<String> {
        match &self.inst.args {
            Args::Exec(words) => words.clone(),
            Args::Shell(text) => {
                let mut shell = shell_of(self.config);
                shell.push(text.clone());
                shell
            }
        }
    }

    fn working_dir(&self) -> &str {
        self.config["config"]["WorkingDir"].as_str().unwrap_or("/")
    }
}

/// Works out what `input`'s instruction does. `cmd_set_here` records whether the
/// stage has set CMD (an ENTRYPOINT resets only an inherited one); `copy_inputs`
/// describes what a COPY or ADD reads, or a RUN's bind mounts show (see [`copy`]).
pub(super) fn prepare(
    input: &Input<'_>,
    cmd_set_here: &mut bool,
    copy_inputs: impl FnMut(Option<&str>, &[String]) -> anyhow::Result<String>,
) -> anyhow::Result<Step> {
    match input.inst.keyword.as_str() {
        "ENV" => env(input),
        "LABEL" => label(input),
        "MAINTAINER" => Ok(maintainer(input)),
        "WORKDIR" => workdir(input),
        "USER" => user(input),
        "STOPSIGNAL" => stop_signal(input),
        "EXPOSE" => expose(input),
        "VOLUME" => volume(input),
        "SHELL" => shell(input),
        "CMD" => {
            *cmd_set_here = true;
            cmd(input)
        }
        "ENTRYPOINT" => entrypoint(input, !*cmd_set_here),
        "ONBUILD" => Ok(onbuild(input)),
        "HEALTHCHECK" => healthcheck(input),
        "RUN" => run(input, copy_inputs),
        "COPY" | "ADD" => copy(input, copy_inputs),
        other => Err(input
            .inst
            .invalid(format!("{other} is not supported here"))
            .into()),
    }
}

/// ENV's or LABEL's pairs, and how the step shows them (`KEYWORD k=v k2=v2`).
fn pairs(input: &Input<'_>) -> anyhow::Result<(Vec<(String, String)>, String)> {
    let inst = input.inst;
    let pairs = dockerfile::key_values(&inst.raw(), &input.vars).map_err(|e| inst.invalid(e))?;
    anyhow::ensure!(!pairs.is_empty(), inst.invalid("expected KEY=value"));
    let shown: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok((pairs, format!("{} {}", inst.keyword, shown.join(" "))))
}

fn env(input: &Input<'_>) -> anyhow::Result<Step> {
    let (pairs, shown) = pairs(input)?;
    Ok(config_step(shown, move |c| {
        for (k, v) in pairs {
            set_env(c, &k, &v);
        }
    }))
}

fn label(input: &Input<'_>) -> anyhow::Result<Step> {
    let (pairs, shown) = pairs(input)?;
    Ok(config_step(shown, move |c| {
        if !c["config"]["Labels"].is_object() {
            c["config"]["Labels"] = json!({});
        }
        for (k, v) in pairs {
            c["config"]["Labels"][k] = json!(v);
        }
    }))
}

fn maintainer(input: &Input<'_>) -> Step {
    let who = input.inst.raw();
    config_step(format!("MAINTAINER {who}"), move |c| {
        c["author"] = json!(who)
    })
}

fn workdir(input: &Input<'_>) -> anyhow::Result<Step> {
    let dir = input.expand(&input.inst.raw())?;
    let dir = clean_path(&Path::new(input.working_dir()).join(dir));
    Ok(config_step(format!("WORKDIR {dir}"), move |c| {
        c["config"]["WorkingDir"] = json!(dir)
    }))
}

fn user(input: &Input<'_>) -> anyhow::Result<Step> {
    let user = input.expand(&input.inst.raw())?;
    Ok(config_step(format!("USER {user}"), move |c| {
        c["config"]["User"] = json!(user)
    }))
}

fn stop_signal(input: &Input<'_>) -> anyhow::Result<Step> {
    let signal = input.expand(&input.inst.raw())?;
    Ok(config_step(format!("STOPSIGNAL {signal}"), move |c| {
        c["config"]["StopSignal"] = json!(signal)
    }))
}

fn expose(input: &Input<'_>) -> anyhow::Result<Step> {
    let ports: Vec<String> = input
        .expand(&input.inst.raw())?
        .split_whitespace()
        .map(|p| {
            if p.contains('/') {
                p.to_lowercase()
            } else {
                format!("{p}/tcp")
            }
        })
        .collect();
    Ok(config_step(
        format!("EXPOSE {}", ports.join(" ")),
        move |c| add_to_set(c, "ExposedPorts", ports),
    ))
}

fn volume(input: &Input<'_>) -> anyhow::Result<Step> {
    let volumes: Vec<String> = match &input.inst.args {
        Args::Exec(v) => v
            .iter()
            .map(|v| input.expand(v))
            .collect::<Result<_, _>>()?,
        Args::Shell(s) => input
            .expand(s)?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    };
    Ok(config_step(
        format!("VOLUME {}", serde_json::to_string(&volumes)?),
        move |c| add_to_set(c, "Volumes", volumes),
    ))
}

fn shell(input: &Input<'_>) -> anyhow::Result<Step> {
    let Args::Exec(shell) = &input.inst.args else {
        return Err(input
            .inst
            .invalid("SHELL needs the JSON form: SHELL [\"/bin/sh\", \"-c\"]")
            .into());
    };
    let shell = shell.clone();
    Ok(config_step(
        format!("SHELL {}", serde_json::to_string(&shell)?),
        move |c| c["config"]["Shell"] = json!(shell),
    ))
}

fn cmd(input: &Input<'_>) -> anyhow::Result<Step> {
    let cmd = input.exec_or_shell();
    Ok(config_step(
        format!("CMD {}", serde_json::to_string(&cmd)?),
        move |c| c["config"]["Cmd"] = json!(cmd),
    ))
}

/// ENTRYPOINT; `reset_cmd` when the CMD is inherited from the base image (an
/// ENTRYPOINT resets it).
fn entrypoint(input: &Input<'_>, reset_cmd: bool) -> anyhow::Result<Step> {
    let entrypoint = input.exec_or_shell();
    Ok(config_step(
        format!("ENTRYPOINT {}", serde_json::to_string(&entrypoint)?),
        move |c| {
            c["config"]["Entrypoint"] = json!(entrypoint);
            if reset_cmd {
                c["config"]["Cmd"] = Value::Null;
            }
        },
    ))
}

fn onbuild(input: &Input<'_>) -> Step {
    let trigger = input.inst.raw();
    config_step(format!("ONBUILD {trigger}"), move |c| {
        let mut all = c["config"]["OnBuild"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.push(json!(trigger));
        c["config"]["OnBuild"] = Value::Array(all);
    })
}

fn healthcheck(input: &Input<'_>) -> anyhow::Result<Step> {
    let inst = input.inst;
    let text = inst.raw();
    let test: Vec<String> = if text.trim().eq_ignore_ascii_case("none") {
        vec!["NONE".into()]
    } else {
        let cmd = text
            .trim()
            .strip_prefix("CMD")
            .ok_or_else(|| inst.invalid("expected HEALTHCHECK CMD command, or NONE"))?
            .trim();
        match serde_json::from_str::<Vec<String>>(cmd) {
            Ok(words) => std::iter::once("CMD".to_owned()).chain(words).collect(),
            Err(_) => vec!["CMD-SHELL".into(), cmd.to_owned()],
        }
    };
    let mut check = json!({ "Test": test });
    for (flag, field) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(value) = inst.flag(flag) {
            let ns = dockerfile::duration_ns(value).map_err(|e| inst.invalid(e))?;
            check[field] = json!(ns);
        }
    }
    if let Some(retries) = inst.flag("retries") {
        let n: u32 = retries
            .parse()
            .map_err(|_| inst.invalid(format!("--retries={retries} is not a number")))?;
        check["Retries"] = json!(n);
    }
    Ok(config_step(format!("HEALTHCHECK {check}"), move |c| {
        c["config"]["Healthcheck"] = check
    }))
}

fn run(
    input: &Input<'_>,
    mut inputs: impl FnMut(Option<&str>, &[String]) -> anyhow::Result<String>,
) -> anyhow::Result<Step> {
    let inst = input.inst;
    let (argv, script) = run_command(input);
    let mut mounts = Vec::new();
    let mut mount_key = String::new();
    for (name, value) in &inst.flags {
        if name != "mount" {
            continue;
        }
        let spec = MountSpec::parse(&input.expand(value)?).map_err(|e| inst.invalid(e))?;
        mount_key.push_str(&format!("\n{}", spec.key()));
        // What a bind mount shows the command is part of what the step depends on.
        if spec.kind == mounts::Kind::Bind {
            let source = spec.source.clone().unwrap_or_else(|| ".".into());
            mount_key.push_str(&format!(" {}", inputs(spec.from.as_deref(), &[source])?));
        }
        mounts.push(spec);
    }
    // Build arguments reach the command as environment variables, as in docker; the
    // image's ENV wins over an ARG of the same name.
    let config_env = env_map(input.config);
    let mut env: BTreeMap<String, String> = input
        .args
        .iter()
        .filter(|(k, _)| !config_env.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let used_args: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend(config_env);
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let workdir = input.working_dir().to_owned();
    let user = input.config["config"]["User"]
        .as_str()
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    // A script here-document is shown (and keyed) by its text, not its path.
    let command = match &script {
        Some(body) => format!("{}\n{body}{}", input.inst.text, input.inst.heredocs[0].name),
        None => argv.join(" "),
    };
    let shown = if used_args.is_empty() {
        format!("RUN {command}")
    } else {
        format!("RUN |{} {} {command}", used_args.len(), used_args.join(" "),)
    };
    let env: Vec<(String, String)> = env.into_iter().collect();
    Ok(Step {
        key: format!("{shown}\n{env:?}\n{workdir}\n{user:?}{mount_key}"),
        created_by: shown,
        action: Action::Files(FileStep::Run {
            argv,
            script,
            mounts,
            env,
            workdir,
            user,
        }),
    })
}

/// What RUN executes, here-documents included, as BuildKit does: `RUN <<EOF` alone
/// runs the document with the shell (or, when it starts with `#!`, as a script of
/// its own); a document after a command (`RUN python3 <<EOF`) goes to the shell with
/// the command, which feeds it to the command's input.
fn run_command(input: &Input<'_>) -> (Vec<String>, Option<String>) {
    let heredocs = &input.inst.heredocs;
    let Args::Shell(text) = &input.inst.args else {
        return (input.exec_or_shell(), None);
    };
    if heredocs.is_empty() {
        return (input.exec_or_shell(), None);
    }
    let mut shell = shell_of(input.config);
    if let [only] = heredocs.as_slice() {
        if text.split_whitespace().count() == 1 {
            let content = only.content();
            if content.starts_with("#!") {
                return (vec![super::run::SCRIPT_PATH.to_owned()], Some(content));
            }
            shell.push(content);
            return (shell, None);
        }
    }
    let mut script = text.clone();
    for doc in heredocs {
        script.push('\n');
        script.push_str(&doc.body);
        script.push_str(&doc.name);
    }
    shell.push(script);
    (shell, None)
}

/// COPY and ADD. `inputs` gives what the sources are made of, for the cache key:
/// called with the `--from` stage (or `None` for the build context) and the sources.
fn copy(
    input: &Input<'_>,
    inputs: impl FnOnce(Option<&str>, &[String]) -> anyhow::Result<String>,
) -> anyhow::Result<Step> {
    let inst = input.inst;
    let words = match &inst.args {
        Args::Exec(words) => words
            .iter()
            .map(|w| input.expand(w))
            .collect::<Result<Vec<_>, _>>()?,
        Args::Shell(text) => {
            dockerfile::words(&input.expand(text)?).map_err(|e| inst.invalid(e))?
        }
    };
    anyhow::ensure!(
        words.len() >= 2,
        inst.invalid("expected one or more sources and a destination")
    );
    let (dest, sources) = words.split_last().expect("two words at least");
    let made = made_files(input, sources)?;
    let names;
    let sources: &[String] = match &made {
        Made::Nothing => sources,
        Made::Documents(docs) => {
            names = docs
                .iter()
                .map(|(name, _)| name.clone())
                .collect::<Vec<_>>();
            &names
        }
        Made::Downloads { remotes, .. } => {
            names = remotes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
            &names
        }
    };
    let expand_flag = |name: &str| inst.flag(name).map(|v| input.expand(v)).transpose();
    let from = expand_flag("from")?;
    let chown = expand_flag("chown")?;
    let chmod = inst
        .flag("chmod")
        .map(|m| {
            u32::from_str_radix(m, 8)
                .map_err(|_| inst.invalid(format!("--chmod={m} is not an octal mode")))
        })
        .transpose()?;
    let dest_path = if dest.starts_with('/') {
        dest.clone()
    } else {
        format!("{}/{dest}", input.working_dir().trim_end_matches('/'))
    };
    let dest_path = if dest.ends_with('/') && !dest_path.ends_with('/') {
        format!("{dest_path}/")
    } else {
        dest_path
    };
    // The inputs: the content of every source, or the source stage's identity (the
    // content of downloads is added to the key once they are fetched).
    let inputs = match &made {
        Made::Nothing => inputs(from.as_deref(), sources)?,
        Made::Documents(docs) => format!("{docs:?}"),
        Made::Downloads { remotes, .. } => {
            let shown: Vec<(&str, &Option<String>)> = remotes
                .iter()
                .map(|r| (r.shown.as_str(), &r.checksum))
                .collect();
            format!("{shown:?}")
        }
    };
    // Shown and keyed as they apply: `--chown=$USER` by its value.
    let mut flags = String::new();
    for (k, v) in &inst.flags {
        flags.push_str(&format!("--{k}={} ", input.expand(v)?));
    }
    let shown = match &made {
        Made::Downloads { remotes, .. } => {
            let urls: Vec<&str> = remotes.iter().map(|r| r.shown.as_str()).collect();
            format!("{} {flags}{} {dest}", inst.keyword, urls.join(" "))
        }
        _ => format!("{} {flags}{} {dest}", inst.keyword, sources.join(" ")),
    };
    Ok(Step {
        key: format!("{shown}\n{dest_path}\n{inputs}"),
        created_by: shown,
        action: Action::Files(FileStep::Copy(CopyStep {
            from,
            sources: sources.to_vec(),
            dest: dest_path,
            chown,
            chmod,
            // Only local archives are unpacked, as docker does.
            extract: inst.keyword == "ADD" && matches!(made, Made::Nothing),
            made,
        })),
    })
}

/// Refuses two made files of one name (the second would replace the first).
fn unique_names<'a>(
    inst: &Instruction,
    names: impl Iterator<Item = &'a String>,
) -> Result<(), ParseError> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(inst.invalid(format!(
                "two sources would both be named {name}: add them in two steps"
            )));
        }
    }
    Ok(())
}

/// The files a COPY or ADD makes itself rather than reads: here-documents (`COPY
/// <<app.conf /etc/`, named after the document, variables expanded unless the name
/// is quoted), or ADD's URLs (fetched before the step is keyed). Sources of one kind
/// only: a mix is refused.
fn made_files(input: &Input<'_>, sources: &[String]) -> anyhow::Result<Made> {
    let inst = input.inst;
    let documents = sources.iter().filter(|s| s.starts_with("<<")).count();
    let urls = sources.iter().filter(|s| s.contains("://")).count();
    if (documents > 0 || urls > 0) && inst.flag("from").is_some() {
        return Err(inst
            .invalid("--from copies files of a stage, not here-documents or URLs")
            .into());
    }
    let checksum = inst.flag("checksum").map(|c| input.expand(c)).transpose()?;
    if checksum.is_some() && (urls != 1 || sources.len() != 1) {
        return Err(inst
            .invalid("--checksum is for one http(s) URL source")
            .into());
    }
    if documents > 0 {
        if documents != sources.len() {
            return Err(inst
                .invalid("here-documents and files cannot be copied in one step: use two")
                .into());
        }
        if documents != inst.heredocs.len() {
            return Err(inst
                .invalid("a here-document's name is letters, digits and _ . - (not only dots)")
                .into());
        }
        let docs: Vec<(String, String)> = inst
            .heredocs
            .iter()
            .map(|doc| {
                let content = match doc.quoted {
                    true => doc.content(),
                    false => input.expand(&doc.content())?,
                };
                Ok((doc.name.clone(), content))
            })
            .collect::<Result<_, ParseError>>()?;
        unique_names(inst, docs.iter().map(|(name, _)| name))?;
        return Ok(Made::Documents(docs));
    }
    if urls == 0 {
        return Ok(Made::Nothing);
    }
    if inst.keyword == "COPY" {
        return Err(inst
            .invalid("COPY does not download: use ADD for a URL")
            .into());
    }
    if urls != sources.len() {
        return Err(inst
            .invalid("URLs and files cannot be added in one step: use two")
            .into());
    }
    let remotes: Vec<Remote> = sources
        .iter()
        .map(|url| Remote::parse(url, checksum.clone()).map_err(|e| inst.invalid(e)))
        .collect::<Result<_, ParseError>>()?;
    unique_names(inst, remotes.iter().map(|r| &r.name))?;
    Ok(Made::Downloads { remotes, dir: None })
}

/// Adds `items` to the config's set `field` (`ExposedPorts`, `Volumes`: objects whose
/// keys are the members, each `{}`).
fn add_to_set(config: &mut Value, field: &str, items: Vec<String>) {
    if !config["config"][field].is_object() {
        config["config"][field] = json!({});
    }
    for item in items {
        config["config"][field][item] = json!({});
    }
}

/// The config's ENV as a map.
pub(super) fn env_map(config: &Value) -> BTreeMap<String, String> {
    config["config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn set_env(config: &mut Value, key: &str, value: &str) {
    let mut env: Vec<Value> = config["config"]["Env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let entry = json!(format!("{key}={value}"));
    match env.iter().position(|e| {
        e.as_str()
            .is_some_and(|s| s.split_once('=').map(|(k, _)| k) == Some(key))
    }) {
        Some(i) => env[i] = entry,
        None => env.push(entry),
    }
    config["config"]["Env"] = Value::Array(env);
}

/// The shell for shell-form RUN, CMD and ENTRYPOINT: SHELL, else `/bin/sh -c`.
fn shell_of(config: &Value) -> Vec<String> {
    config["config"]["Shell"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}

/// `/a/./b/../c` → `/a/c`.
fn clean_path(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean_path(Path::new("/a/./b/../c")), "/a/c");
        assert_eq!(clean_path(Path::new("/")), "/");
    }

    #[test]
    fn env_replaces_by_key() {
        let mut c = json!({"config": {"Env": ["A=1", "B=2"]}});
        set_env(&mut c, "A", "3");
        set_env(&mut c, "C", "4");
        assert_eq!(c["config"]["Env"], json!(["A=3", "B=2", "C=4"]));
    }

    /// Prepares the one instruction `line` on `config`, with no ARGs.
    fn prepared(line: &str, config: &Value) -> anyhow::Result<Step> {
        let inst = dockerfile::parse(line).unwrap().remove(0);
        let args = BTreeMap::new();
        let input = Input {
            inst: &inst,
            config,
            args: &args,
            vars: env_map(config),
        };
        prepare(&input, &mut false, |_, _| Ok("inputs".into()))
    }

    fn applied(line: &str, config: &Value) -> Value {
        let step = prepared(line, config).unwrap();
        let Action::Config(change) = step.action else {
            panic!("{line} changes the config only");
        };
        let mut config = config.clone();
        change(&mut config);
        config
    }

    #[test]
    fn config_instructions_change_the_config() {
        let base = json!({"config": {"Env": ["HOME=/root"], "Cmd": ["sh"]}, "unknown": 1});
        let c = applied("WORKDIR $HOME/app/../src", &base);
        assert_eq!(c["config"]["WorkingDir"], "/root/src");
        assert_eq!(c["unknown"], 1, "fields the builder does not know are kept");
        let c = applied("EXPOSE 80 53/UDP", &base);
        assert_eq!(
            c["config"]["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}})
        );
        let c = applied("ENTRYPOINT [\"/app\"]", &base);
        assert_eq!(c["config"]["Entrypoint"], json!(["/app"]));
        assert!(c["config"]["Cmd"].is_null(), "an inherited CMD is reset");
        let c = applied("CMD run", &base);
        assert_eq!(c["config"]["Cmd"], json!(["/bin/sh", "-c", "run"]));
        let c = applied("HEALTHCHECK --retries=3 CMD [\"true\"]", &base);
        assert_eq!(
            c["config"]["Healthcheck"],
            json!({"Test": ["CMD", "true"], "Retries": 3})
        );
        let c = applied("LABEL a=1 b=\"two words\"", &base);
        assert_eq!(c["config"]["Labels"], json!({"a": "1", "b": "two words"}));
    }

    #[test]
    fn file_steps_carry_their_inputs_in_the_key() {
        let config = json!({"config": {"WorkingDir": "/app"}});
        let step = prepared("COPY --chmod=644 a b dest/", &config).unwrap();
        assert_eq!(step.created_by, "COPY --chmod=644 a b dest/");
        assert!(step.key.ends_with("\n/app/dest/\ninputs"), "{}", step.key);
        let Action::Files(FileStep::Copy(CopyStep { dest, chmod, .. })) = step.action else {
            panic!("COPY copies files");
        };
        assert_eq!((dest.as_str(), chmod), ("/app/dest/", Some(0o644)));
        let step = prepared("RUN make", &config).unwrap();
        assert_eq!(step.created_by, "RUN /bin/sh -c make");
        // ADD of a URL: the download is named after the URL; its content joins the
        // key once fetched. Mixing, COPY of a URL, git and --from are refused.
        let step = prepared("ADD https://example.com/dl/x.tar.gz /opt/", &config).unwrap();
        assert_eq!(step.created_by, "ADD https://example.com/dl/x.tar.gz /opt/");
        let Action::Files(FileStep::Copy(CopyStep {
            sources, extract, ..
        })) = step.action
        else {
            panic!("ADD copies files");
        };
        assert_eq!((sources, extract), (vec!["x.tar.gz".to_owned()], false));
        for refused in [
            "ADD https://example.com/x local /x",
            "COPY https://example.com/x /x",
            "ADD https://github.com/a/b.git /src",
            "ADD --checksum=sha256:abc https://example.com/x /x",
            "ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 local /x",
        ] {
            assert!(prepared(refused, &config).is_err(), "{refused}");
        }
        assert!(prepared("SHELL sh -c", &config).is_err());
    }
}
