//! `berth image build`: a Dockerfile builder. Each stage starts from `scratch`, an
//! earlier stage or an image (from the local store, else pulled); every instruction
//! is a step whose result (image config and layers) is cached under a key made of the
//! previous step's key and the instruction with its inputs, so a rebuild with nothing
//! changed reuses every step and gives the same image digest.
//!
//! Steps that change files (RUN, COPY, ADD) run on the stage's root filesystem,
//! unpacked on demand in a temporary directory; their changes become one gzip layer
//! with whiteouts for deletions. Other instructions change the config only.

pub mod context;
pub mod dockerfile;
pub mod rootfs;
pub mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use berth_oci::media_types::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use berth_oci::{Algorithm, Digest};

use crate::image;
use crate::inroot::{self, Kind, Meta, Root};
use crate::store::Store;
use dockerfile::{Args, Instruction};

/// What `berth image build` was asked.
pub(crate) struct Options {
    pub context: PathBuf,
    pub dockerfile: Option<PathBuf>,
    /// Full references (`registry/repo:tag`) to name the image.
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Option<String>,
    pub quiet: bool,
}

/// Where base images come from: the local store, pulling when absent.
pub(crate) trait Bases {
    /// The manifest digest (in the local store) of the image `reference` names.
    async fn base(&self, reference: &str, platform: Option<&str>) -> anyhow::Result<String>;
}

/// The result of the steps so far in one stage.
#[derive(Clone)]
struct State {
    config: Value,
    layers: Vec<Value>,
    /// The cache key of the last step (hex).
    chain: String,
}

struct Stage {
    name: Option<String>,
    from: Instruction,
    steps: Vec<Instruction>,
}

/// Builds the image; returns its manifest digest (the image is in the store under
/// every tag).
pub(crate) async fn build(
    store: &Store,
    bases: &impl Bases,
    options: &Options,
) -> anyhow::Result<String> {
    let dockerfile_path = options
        .dockerfile
        .clone()
        .unwrap_or_else(|| options.context.join("Dockerfile"));
    let text = std::fs::read_to_string(&dockerfile_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dockerfile_path.display()))?;
    let instructions = dockerfile::parse(&text)?;
    let (global_args, stages) = split_stages(instructions)?;
    let mut meta_args = BTreeMap::new();
    for arg in &global_args {
        let (name, value) = declare_arg(arg, &options.build_args, &meta_args, &BTreeMap::new())?;
        meta_args.insert(name, value.unwrap_or_default());
    }
    let target = match &options.target {
        None => stages.len() - 1,
        Some(t) => stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t.as_str()))
            .ok_or_else(|| anyhow::anyhow!("target stage {t:?} is not in the Dockerfile"))?,
    };
    let needed = needed_stages(&stages, target);
    let mut builder = Builder {
        store,
        cache_dir: store.build_cache_dir(),
        ignore: context::Ignore::load(&options.context)?,
        context: options
            .context
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("build context {}: {e}", options.context.display()))?,
        options,
        finished: Vec::new(),
        clamp: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.parse().ok()),
        step_number: 0,
        step_count: stages
            .iter()
            .enumerate()
            .filter(|(i, _)| needed.contains(i))
            .map(|(_, s)| s.steps.iter().filter(|i| i.keyword != "ARG").count() + 1)
            .sum(),
    };
    std::fs::create_dir_all(&builder.cache_dir)?;
    for (i, stage) in stages.iter().enumerate() {
        if !needed.contains(&i) {
            builder.finished.push(None);
            continue;
        }
        let (state, root) = builder.stage(stage, bases, &meta_args).await?;
        builder.finished.push(Some(Finished {
            name: stage.name.clone(),
            state,
            root,
        }));
    }
    let target = builder.finished[target]
        .take()
        .expect("the target stage was built");
    builder.write_image(&target.state)
}

fn split_stages(instructions: Vec<Instruction>) -> anyhow::Result<(Vec<Instruction>, Vec<Stage>)> {
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

/// The stages `target` depends on (its base and `COPY --from` sources), itself included.
fn needed_stages(stages: &[Stage], target: usize) -> BTreeSet<usize> {
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
        }
        todo.extend(deps);
    }
    needed
}

/// An ARG declaration: its name and value (a `--build-arg`, else its default, else the
/// global ARG of the same name).
fn declare_arg(
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

/// A built stage: its name, final state, and its root filesystem when unpacked.
struct Finished {
    name: Option<String>,
    state: State,
    root: Option<tempfile::TempDir>,
}

struct Builder<'a> {
    store: &'a Store,
    cache_dir: PathBuf,
    ignore: context::Ignore,
    context: PathBuf,
    options: &'a Options,
    /// Each stage's name and final state (and its unpacked root, when made), by index.
    finished: Vec<Option<Finished>>,
    clamp: Option<u64>,
    step_number: usize,
    step_count: usize,
}

/// The step cache's key for a chain of steps: the hex SHA-256 of its description.
fn chain_hash(data: &[u8]) -> String {
    Digest::of(Algorithm::Sha256, data).hex().to_owned()
}

fn env_map(config: &Value) -> BTreeMap<String, String> {
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

impl Builder<'_> {
    fn say(&self, line: impl AsRef<str>) {
        if !self.options.quiet {
            println!("{}", line.as_ref());
        }
    }

    async fn stage(
        &mut self,
        stage: &Stage,
        bases: &impl Bases,
        meta_args: &BTreeMap<String, String>,
    ) -> anyhow::Result<(State, Option<tempfile::TempDir>)> {
        self.step_number += 1;
        self.say(format!(
            "Step {}/{} : FROM {}",
            self.step_number,
            self.step_count,
            stage.from.raw()
        ));
        let from =
            dockerfile::expand(&stage.from.raw(), meta_args).map_err(|e| stage.from.invalid(e))?;
        let base = from.split_whitespace().next().unwrap_or("").to_owned();
        let platform = stage
            .from
            .flag("platform")
            .map(|p| dockerfile::expand(p, meta_args))
            .transpose()
            .map_err(|e| stage.from.invalid(e))?
            .or_else(|| self.options.platform.clone());
        let mut state = if base.eq_ignore_ascii_case("scratch") {
            let (os, arch) = match &platform {
                Some(p) => {
                    let mut parts = p.split('/');
                    (
                        parts.next().unwrap_or("linux").to_owned(),
                        parts
                            .next()
                            .unwrap_or(image::host_architecture())
                            .to_owned(),
                    )
                }
                None => ("linux".to_owned(), image::host_architecture().to_owned()),
            };
            State {
                config: json!({
                    "architecture": arch, "os": os, "config": {},
                    "rootfs": {"type": "layers", "diff_ids": []}, "history": [],
                }),
                layers: Vec::new(),
                chain: chain_hash(b"FROM scratch"),
            }
        } else if let Some(i) = self.stage_index(&base) {
            self.built(i).state.clone()
        } else {
            let digest = bases.base(&base, platform.as_deref()).await?;
            let img = image::Image::load(self.store, &digest)?;
            let mut config = img.config.clone();
            if !config["config"].is_object() {
                config["config"] = json!({});
            }
            State {
                config,
                layers: img.manifest["layers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                chain: chain_hash(format!("FROM {}", img.manifest_digest).as_bytes()),
            }
        };
        let mut root: Option<tempfile::TempDir> = None;
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        let mut cmd_set_here = false;
        for inst in &stage.steps {
            if inst.keyword == "ARG" {
                let vars = self.vars(&state, &args);
                let (name, value) = declare_arg(inst, &self.options.build_args, meta_args, &vars)?;
                args.insert(name, value.unwrap_or_default());
                continue;
            }
            self.step_number += 1;
            self.say(format!(
                "Step {}/{} : {} {}",
                self.step_number, self.step_count, inst.keyword, inst.text
            ));
            let step = self.prepare(inst, &state, &args, &mut cmd_set_here)?;
            let chain = chain_hash(format!("{}\n{}", state.chain, step.key).as_bytes());
            if let Some(cached) = self.cached(&chain)? {
                self.say(" ---> Using cache");
                if cached.layers != state.layers {
                    root = None;
                }
                state = cached;
                continue;
            }
            let mut config = state.config.clone();
            let mut layers = state.layers.clone();
            let created = image::created_now();
            let mut history = json!({"created": created, "created_by": step.created_by});
            match step.action {
                Action::Config(change) => {
                    change(&mut config);
                    history["empty_layer"] = json!(true);
                }
                Action::Files(kind) => {
                    if root.is_none() {
                        root = Some(self.unpack(&layers)?);
                    }
                    let dir = root.as_ref().expect("unpacked").path().to_owned();
                    let before = rootfs::snapshot(&dir)?;
                    self.apply(kind, &dir, inst)?;
                    match rootfs::write_diff(self.store, &dir, &before, self.clamp)? {
                        Some(layer) => {
                            layers.push(json!({"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}));
                            let mut diff_ids = config["rootfs"]["diff_ids"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default();
                            diff_ids.push(json!(layer.diff_id));
                            config["rootfs"]["diff_ids"] = Value::Array(diff_ids);
                            self.say(format!(" ---> layer {}", &layer.digest[..19]));
                        }
                        None => history["empty_layer"] = json!(true),
                    }
                }
            }
            config["created"] = json!(created);
            let mut all = config["history"].as_array().cloned().unwrap_or_default();
            all.push(history);
            config["history"] = Value::Array(all);
            state = State {
                config,
                layers,
                chain,
            };
            self.remember(&state)?;
        }
        Ok((state, root))
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        let name = name.to_lowercase();
        self.finished
            .iter()
            .position(|s| {
                s.as_ref()
                    .is_some_and(|f| f.name.as_deref() == Some(name.as_str()))
            })
            .or_else(|| {
                name.parse()
                    .ok()
                    .filter(|&i: &usize| i < self.finished.len() && self.finished[i].is_some())
            })
    }

    /// Variables for expansion: the stage's ARGs, overridden by its ENV.
    fn vars(&self, state: &State, args: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut vars = args.clone();
        vars.extend(env_map(&state.config));
        vars
    }

    /// A step's cached result, if every blob it names is still in the store.
    fn cached(&self, chain: &str) -> anyhow::Result<Option<State>> {
        let path = self.cache_dir.join(chain);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        let Ok(saved) = serde_json::from_slice::<Value>(&bytes) else {
            return Ok(None);
        };
        let layers = saved["layers"].as_array().cloned().unwrap_or_default();
        let complete = layers.iter().all(|l| {
            self.store
                .has_blob(l["digest"].as_str().unwrap_or_default())
        });
        Ok(complete.then(|| State {
            config: saved["config"].clone(),
            layers,
            chain: chain.to_owned(),
        }))
    }

    fn remember(&self, state: &State) -> anyhow::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.cache_dir)?;
        std::io::Write::write_all(
            &mut tmp,
            &serde_json::to_vec(&json!({"config": state.config, "layers": state.layers}))?,
        )?;
        tmp.persist(self.cache_dir.join(&state.chain))?;
        Ok(())
    }

    /// A temporary directory with `layers` unpacked in order.
    fn unpack(&self, layers: &[Value]) -> anyhow::Result<tempfile::TempDir> {
        let dir = tempfile::Builder::new().prefix("berth-build-").tempdir()?;
        let root = Root::open(dir.path())?;
        for layer in layers {
            let digest = layer["digest"].as_str().unwrap_or_default();
            let file = std::fs::File::open(self.store.blob_path(digest)?)
                .map_err(|e| anyhow::anyhow!("layer {digest} is not in the local store: {e}"))?;
            rootfs::apply_layer(&root, file)
                .map_err(|e| anyhow::anyhow!("layer {digest}: {e:#}"))?;
        }
        Ok(dir)
    }

    /// Stage `i`, which a later stage depends on and so was built before it.
    fn built(&self, i: usize) -> &Finished {
        self.finished[i]
            .as_ref()
            .expect("dependencies are built first")
    }

    /// The root filesystem of finished stage `name` (unpacked now if needed).
    fn stage_root(&mut self, name: &str) -> anyhow::Result<PathBuf> {
        let i = self
            .stage_index(name)
            .ok_or_else(|| anyhow::anyhow!("COPY --from={name}: no earlier stage of that name"))?;
        if self.built(i).root.is_none() {
            let dir = self.unpack(&self.built(i).state.layers)?;
            self.finished[i].as_mut().expect("built").root = Some(dir);
        }
        Ok(self
            .built(i)
            .root
            .as_ref()
            .expect("unpacked")
            .path()
            .to_owned())
    }
}

/// What a step does, once its cache key is known not to be cached.
enum Action {
    Config(Box<dyn FnOnce(&mut Value)>),
    Files(FileStep),
}

enum FileStep {
    Run {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        workdir: String,
        user: Option<String>,
    },
    Copy {
        /// A finished stage, or `None` for the build context.
        from: Option<String>,
        sources: Vec<String>,
        dest: String,
        chown: Option<String>,
        chmod: Option<u32>,
        /// ADD: local tar archives are unpacked.
        extract: bool,
    },
}

struct Step {
    key: String,
    created_by: String,
    action: Action,
}

fn config_step(key: String, change: impl FnOnce(&mut Value) + 'static) -> Step {
    Step {
        created_by: key.clone(),
        key,
        action: Action::Config(Box::new(change)),
    }
}

impl Builder<'_> {
    /// Works out what `inst` does and its cache key (with its inputs: the files a COPY
    /// reads, the environment a RUN sees).
    fn prepare(
        &mut self,
        inst: &Instruction,
        state: &State,
        args: &BTreeMap<String, String>,
        cmd_set_here: &mut bool,
    ) -> anyhow::Result<Step> {
        let vars = self.vars(state, args);
        let expand = |s: &str| dockerfile::expand(s, &vars).map_err(|e| inst.invalid(e));
        let exec_or_shell = |inst: &Instruction| -> Vec<String> {
            match &inst.args {
                Args::Exec(words) => words.clone(),
                Args::Shell(text) => {
                    let mut shell = shell_of(&state.config);
                    shell.push(text.clone());
                    shell
                }
            }
        };
        let step = match inst.keyword.as_str() {
            "ENV" | "LABEL" => {
                let pairs =
                    dockerfile::key_values(&inst.raw(), &vars).map_err(|e| inst.invalid(e))?;
                anyhow::ensure!(!pairs.is_empty(), inst.invalid("expected KEY=value"));
                let shown: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let env = inst.keyword == "ENV";
                config_step(format!("{} {}", inst.keyword, shown.join(" ")), move |c| {
                    for (k, v) in pairs {
                        if env {
                            set_env(c, &k, &v);
                        } else {
                            if !c["config"]["Labels"].is_object() {
                                c["config"]["Labels"] = json!({});
                            }
                            c["config"]["Labels"][k] = json!(v);
                        }
                    }
                })
            }
            "MAINTAINER" => {
                let who = inst.raw();
                config_step(format!("MAINTAINER {who}"), move |c| {
                    c["author"] = json!(who)
                })
            }
            "WORKDIR" => {
                let dir = expand(&inst.raw())?;
                let current = state.config["config"]["WorkingDir"]
                    .as_str()
                    .unwrap_or("/")
                    .to_owned();
                let dir = clean_path(&Path::new(&current).join(dir));
                config_step(format!("WORKDIR {dir}"), move |c| {
                    c["config"]["WorkingDir"] = json!(dir)
                })
            }
            "USER" => {
                let user = expand(&inst.raw())?;
                config_step(format!("USER {user}"), move |c| {
                    c["config"]["User"] = json!(user)
                })
            }
            "STOPSIGNAL" => {
                let signal = expand(&inst.raw())?;
                config_step(format!("STOPSIGNAL {signal}"), move |c| {
                    c["config"]["StopSignal"] = json!(signal)
                })
            }
            "EXPOSE" => {
                let ports: Vec<String> = expand(&inst.raw())?
                    .split_whitespace()
                    .map(|p| {
                        if p.contains('/') {
                            p.to_lowercase()
                        } else {
                            format!("{p}/tcp")
                        }
                    })
                    .collect();
                config_step(format!("EXPOSE {}", ports.join(" ")), move |c| {
                    if !c["config"]["ExposedPorts"].is_object() {
                        c["config"]["ExposedPorts"] = json!({});
                    }
                    for p in ports {
                        c["config"]["ExposedPorts"][p] = json!({});
                    }
                })
            }
            "VOLUME" => {
                let volumes: Vec<String> = match &inst.args {
                    Args::Exec(v) => v.iter().map(|v| expand(v)).collect::<Result<_, _>>()?,
                    Args::Shell(s) => expand(s)?.split_whitespace().map(str::to_owned).collect(),
                };
                config_step(
                    format!("VOLUME {}", serde_json::to_string(&volumes)?),
                    move |c| {
                        if !c["config"]["Volumes"].is_object() {
                            c["config"]["Volumes"] = json!({});
                        }
                        for v in volumes {
                            c["config"]["Volumes"][v] = json!({});
                        }
                    },
                )
            }
            "SHELL" => {
                let Args::Exec(shell) = &inst.args else {
                    return Err(inst
                        .invalid("SHELL needs the JSON form: SHELL [\"/bin/sh\", \"-c\"]")
                        .into());
                };
                let shell = shell.clone();
                config_step(
                    format!("SHELL {}", serde_json::to_string(&shell)?),
                    move |c| c["config"]["Shell"] = json!(shell),
                )
            }
            "CMD" => {
                let cmd = exec_or_shell(inst);
                *cmd_set_here = true;
                config_step(format!("CMD {}", serde_json::to_string(&cmd)?), move |c| {
                    c["config"]["Cmd"] = json!(cmd)
                })
            }
            "ENTRYPOINT" => {
                let entrypoint = exec_or_shell(inst);
                // An ENTRYPOINT resets a CMD inherited from the base image.
                let reset_cmd = !*cmd_set_here;
                config_step(
                    format!("ENTRYPOINT {}", serde_json::to_string(&entrypoint)?),
                    move |c| {
                        c["config"]["Entrypoint"] = json!(entrypoint);
                        if reset_cmd {
                            c["config"]["Cmd"] = Value::Null;
                        }
                    },
                )
            }
            "ONBUILD" => {
                let trigger = inst.raw();
                config_step(format!("ONBUILD {trigger}"), move |c| {
                    let mut all = c["config"]["OnBuild"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    all.push(json!(trigger));
                    c["config"]["OnBuild"] = Value::Array(all);
                })
            }
            "HEALTHCHECK" => {
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
                    let n: u32 = retries.parse().map_err(|_| {
                        inst.invalid(format!("--retries={retries} is not a number"))
                    })?;
                    check["Retries"] = json!(n);
                }
                config_step(format!("HEALTHCHECK {check}"), move |c| {
                    c["config"]["Healthcheck"] = check
                })
            }
            "RUN" => {
                let argv = exec_or_shell(inst);
                // Build arguments reach the command as environment variables, as in
                // docker; the image's ENV wins over an ARG of the same name.
                let config_env = env_map(&state.config);
                let mut env: BTreeMap<String, String> = args
                    .iter()
                    .filter(|(k, _)| !config_env.contains_key(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let used_args: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                env.extend(config_env);
                env.entry("PATH".into()).or_insert_with(|| {
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
                });
                let workdir = state.config["config"]["WorkingDir"]
                    .as_str()
                    .unwrap_or("/")
                    .to_owned();
                let user = state.config["config"]["User"]
                    .as_str()
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned);
                let shown = if used_args.is_empty() {
                    format!("RUN {}", argv.join(" "))
                } else {
                    format!(
                        "RUN |{} {} {}",
                        used_args.len(),
                        used_args.join(" "),
                        argv.join(" ")
                    )
                };
                let env: Vec<(String, String)> = env.into_iter().collect();
                Step {
                    key: format!("{shown}\n{env:?}\n{workdir}\n{user:?}"),
                    created_by: shown,
                    action: Action::Files(FileStep::Run {
                        argv,
                        env,
                        workdir,
                        user,
                    }),
                }
            }
            "COPY" | "ADD" => {
                let words = match &inst.args {
                    Args::Exec(words) => words
                        .iter()
                        .map(|w| expand(w))
                        .collect::<Result<Vec<_>, _>>()?,
                    Args::Shell(text) => {
                        dockerfile::words(&expand(text)?).map_err(|e| inst.invalid(e))?
                    }
                };
                anyhow::ensure!(
                    words.len() >= 2,
                    inst.invalid("expected one or more sources and a destination")
                );
                let (dest, sources) = words.split_last().expect("two words at least");
                if inst.keyword == "ADD" {
                    if let Some(url) = sources.iter().find(|s| s.contains("://")) {
                        return Err(inst
                            .invalid(format!("ADD from a URL ({url}) is not supported; download it in a RUN step, or next to the Dockerfile"))
                            .into());
                    }
                }
                let from = inst.flag("from").map(&expand).transpose()?;
                let chown = inst.flag("chown").map(&expand).transpose()?;
                let chmod = inst
                    .flag("chmod")
                    .map(|m| {
                        u32::from_str_radix(m, 8)
                            .map_err(|_| inst.invalid(format!("--chmod={m} is not an octal mode")))
                    })
                    .transpose()?;
                let workdir = state.config["config"]["WorkingDir"].as_str().unwrap_or("/");
                let dest_path = if dest.starts_with('/') {
                    dest.clone()
                } else {
                    format!("{}/{dest}", workdir.trim_end_matches('/'))
                };
                let dest_path = if dest.ends_with('/') && !dest_path.ends_with('/') {
                    format!("{dest_path}/")
                } else {
                    dest_path
                };
                // The inputs: the content of every source, or the source stage's identity.
                let inputs = match &from {
                    None => {
                        let mut h = Sha256::new();
                        for s in sources {
                            for rel in context::sources(&self.context, s, Some(&self.ignore))? {
                                hash_tree(&mut h, &self.context, &rel, &self.ignore)?;
                            }
                        }
                        hex::encode(h.finalize())
                    }
                    Some(stage) => {
                        let i = self.stage_index(stage).ok_or_else(|| {
                            inst.invalid(format!("--from={stage}: no earlier stage of that name"))
                        })?;
                        self.built(i).state.chain.clone()
                    }
                };
                let mut flags = String::new();
                for (k, v) in &inst.flags {
                    flags.push_str(&format!("--{k}={v} "));
                }
                let shown = format!("{} {flags}{} {dest}", inst.keyword, sources.join(" "));
                Step {
                    key: format!("{shown}\n{dest_path}\n{inputs}"),
                    created_by: shown,
                    action: Action::Files(FileStep::Copy {
                        from,
                        sources: sources.to_vec(),
                        dest: dest_path,
                        chown,
                        chmod,
                        extract: inst.keyword == "ADD",
                    }),
                }
            }
            other => {
                return Err(inst
                    .invalid(format!("{other} is not supported here"))
                    .into())
            }
        };
        Ok(step)
    }

    fn apply(&mut self, step: FileStep, root: &Path, inst: &Instruction) -> anyhow::Result<()> {
        match step {
            FileStep::Run {
                argv,
                env,
                workdir,
                user,
            } => {
                let user = user.map(|u| run::resolve_user(root, &u)).transpose()?;
                run::run(root, &argv, &env, &workdir, user).map_err(|e| {
                    anyhow::anyhow!("Dockerfile line {}: RUN {}: {e}", inst.line, inst.text)
                })
            }
            FileStep::Copy {
                from,
                sources,
                dest,
                chown,
                chmod,
                extract,
            } => {
                let owner = chown.map(|c| run::resolve_user(root, &c)).transpose()?;
                let dst = Root::open(root)?;
                // Another stage's files are read through that stage's root, as the
                // image's own are written through this one.
                let stage_root = match &from {
                    None => None,
                    Some(stage) => Some(Root::open(&self.stage_root(stage)?)?),
                };
                let (source, ignore) = match &stage_root {
                    None => (Source::Context(&self.context), Some(&self.ignore)),
                    Some(r) => (Source::Stage(r), None),
                };
                let mut paths = Vec::new();
                for s in &sources {
                    match &stage_root {
                        None => paths.extend(context::sources(&self.context, s, ignore)?),
                        Some(r) => paths.extend(context::stage_sources(r, s).map_err(|e| {
                            anyhow::anyhow!("COPY --from={}: {e}", from.as_deref().unwrap_or(""))
                        })?),
                    }
                }
                let to_dir = dest.ends_with('/') || paths.len() > 1;
                let dest_rel = PathBuf::from(dest.trim_start_matches('/'));
                for rel in paths {
                    let meta = source.lstat(&rel)?;
                    if meta.is_dir() {
                        copy_tree(&source, &rel, &dst, &dest_rel, owner, chmod, ignore)?;
                    } else if extract && source.open(&rel).map_or(Ok(false), is_archive)? {
                        // Unpacked with the destination as its root, as docker does.
                        let target = dst.subroot(&dest_rel)?;
                        rootfs::apply_layer(&target, source.open(&rel)?)?;
                    } else {
                        let into_dir = to_dir || dst.is_dir(&dest_rel)?;
                        let target = if into_dir {
                            dest_rel.join(rel.file_name().unwrap_or_default())
                        } else {
                            dest_rel.clone()
                        };
                        copy_entry(&source, &rel, &dst, &target, owner, chmod)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes the final config and manifest and names the image.
    fn write_image(&self, state: &State) -> anyhow::Result<String> {
        let config = serde_json::to_vec(&state.config)?;
        let config_digest = self.store.put_blob(&config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": state.layers,
        }))?;
        let digest = self.store.put_blob(&manifest)?;
        for tag in &self.options.tags {
            self.store.set(
                tag,
                json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len()}),
            )?;
        }
        if self.options.quiet {
            println!("{config_digest}");
        } else {
            println!("Successfully built {}", &config_digest[7..19]);
            for tag in &self.options.tags {
                println!("Successfully tagged {tag}");
            }
            println!("Digest: {digest}");
        }
        Ok(digest)
    }
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

/// Feeds a source's content to the cache key: paths, modes, link targets, bytes.
fn hash_tree(
    h: &mut Sha256,
    root: &Path,
    rel: &Path,
    ignore: &context::Ignore,
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let full = root.join(rel);
    let meta = full.symlink_metadata()?;
    h.update(rel.to_string_lossy().as_bytes());
    h.update(meta.mode().to_le_bytes());
    if meta.file_type().is_symlink() {
        h.update(std::fs::read_link(&full)?.to_string_lossy().as_bytes());
    } else if meta.is_file() {
        use std::io::Read;
        let mut file = std::fs::File::open(&full)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else if meta.is_dir() {
        let mut children: Vec<PathBuf> = std::fs::read_dir(&full)?
            .map(|e| Ok(child_path(rel, &e?.file_name())))
            .collect::<std::io::Result<_>>()?;
        children.sort();
        for child in children {
            if !ignore.ignored(&child) {
                hash_tree(h, root, &child, ignore)?;
            }
        }
    }
    Ok(())
}

/// `rel/name`, where the context itself (`.`) is the empty path, as `.dockerignore`
/// patterns expect.
fn child_path(rel: &Path, name: &std::ffi::OsStr) -> PathBuf {
    if rel == Path::new(".") {
        PathBuf::from(name)
    } else {
        rel.join(name)
    }
}

/// Where COPY reads: the build context (the user's own directory, read as it is) or
/// an earlier stage's root (read through that root, its symbolic links followed
/// inside it).
enum Source<'a> {
    Context(&'a Path),
    Stage(&'a Root),
}

impl Source<'_> {
    /// The metadata of `rel` itself (a symbolic link is not followed).
    fn lstat(&self, rel: &Path) -> anyhow::Result<Meta> {
        match self {
            Source::Context(dir) => {
                use std::os::unix::fs::MetadataExt;
                let m = dir.join(rel).symlink_metadata()?;
                let t = m.file_type();
                Ok(Meta {
                    kind: if t.is_symlink() {
                        Kind::Symlink
                    } else if t.is_dir() {
                        Kind::Dir
                    } else if t.is_file() {
                        Kind::File
                    } else {
                        Kind::Other
                    },
                    mode: m.mode() & 0o7777,
                    mtime: m.mtime(),
                    mtime_nsec: m.mtime_nsec() as u32,
                })
            }
            Source::Stage(root) => root
                .lstat(rel)?
                .ok_or_else(|| anyhow::anyhow!("{}: no such file or directory", rel.display())),
        }
    }

    fn read_dir(&self, rel: &Path) -> anyhow::Result<Vec<std::ffi::OsString>> {
        match self {
            Source::Context(dir) => Ok(std::fs::read_dir(dir.join(rel))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()?),
            Source::Stage(root) => Ok(root.read_dir(rel)?),
        }
    }

    fn read_link(&self, rel: &Path) -> anyhow::Result<PathBuf> {
        match self {
            Source::Context(dir) => Ok(std::fs::read_link(dir.join(rel))?),
            Source::Stage(root) => Ok(root.read_link(rel)?),
        }
    }

    /// Opens the file `rel` for reading.
    fn open(&self, rel: &Path) -> anyhow::Result<std::fs::File> {
        match self {
            Source::Context(dir) => Ok(std::fs::File::open(dir.join(rel))?),
            Source::Stage(root) => Ok(root.open_read(rel, false)?),
        }
    }
}

/// Copies the directory `rel`'s contents into `dest` (created as needed, symbolic
/// links on the way followed inside the root).
fn copy_tree(
    src: &Source<'_>,
    rel: &Path,
    dst: &Root,
    dest: &Path,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
    ignore: Option<&context::Ignore>,
) -> anyhow::Result<()> {
    dst.create_dir_all(dest)?;
    for name in src.read_dir(rel)? {
        let child_rel = child_path(rel, &name);
        if ignore.is_some_and(|i| i.ignored(&child_rel)) {
            continue;
        }
        let target = dest.join(&name);
        let meta = src.lstat(&child_rel)?;
        if meta.is_dir() {
            copy_tree(src, &child_rel, dst, &target, owner, chmod, ignore)?;
            // Without --chown, files belong to root, as in docker.
            let owner = owner.or(rootfs::running_as_root().then_some((0, 0)));
            dst.set_meta(&target, owner, chmod, Some((meta.mtime, meta.mtime_nsec)))?;
        } else {
            copy_entry(src, &child_rel, dst, &target, owner, chmod)?;
        }
    }
    Ok(())
}

/// Copies one file or symlink to `dest` in the root, keeping its mode and
/// modification time (as docker does), then applies --chown / --chmod.
fn copy_entry(
    src: &Source<'_>,
    rel: &Path,
    dst: &Root,
    dest: &Path,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
) -> anyhow::Result<()> {
    let meta = src.lstat(rel)?;
    match meta.kind {
        Kind::Symlink => {
            dst.symlink(dest, &src.read_link(rel)?)?;
            if owner.is_some() {
                dst.set_meta(dest, owner, None, None)?;
            }
        }
        Kind::File => {
            let mut from = src.open(rel)?;
            let mut to = dst.create_file(dest, 0o600)?;
            std::io::copy(&mut from, &mut to)?;
            // Without --chown, files belong to root, as in docker.
            let owner = owner.or(rootfs::running_as_root().then_some((0, 0)));
            inroot::set_meta_fd(
                to.as_fd(),
                owner,
                Some(chmod.unwrap_or(meta.mode)),
                Some((meta.mtime, meta.mtime_nsec)),
            )
            .map_err(|e| anyhow::anyhow!("cannot set the metadata of /{}: {e}", dest.display()))?;
        }
        Kind::Dir | Kind::Other => anyhow::bail!(
            "{}: only files, directories and symbolic links can be copied",
            rel.display()
        ),
    }
    Ok(())
}

/// Whether ADD unpacks this file: a tar archive, plain or gzip-compressed.
fn is_archive(mut file: std::fs::File) -> anyhow::Result<bool> {
    use std::io::{Read, Seek};
    let mut head = vec![0u8; 512];
    let n = file.read(&mut head)?;
    head.truncate(n);
    if head.starts_with(&[0x1f, 0x8b]) {
        file.rewind()?;
        let mut gz = flate2::read::GzDecoder::new(file);
        let mut block = vec![0u8; 512];
        return Ok(gz.read_exact(&mut block).is_ok() && &block[257..262] == b"ustar");
    }
    Ok(head.len() == 512 && &head[257..262] == b"ustar")
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
        assert!(split_stages(dockerfile::parse("RUN x\nFROM scratch\n").unwrap()).is_err());
    }

    #[test]
    fn env_replaces_by_key() {
        let mut c = json!({"config": {"Env": ["A=1", "B=2"]}});
        set_env(&mut c, "A", "3");
        set_env(&mut c, "C", "4");
        assert_eq!(c["config"]["Env"], json!(["A=3", "B=2", "C=4"]));
    }
}
