//! `berth image build`: a Dockerfile builder. Each stage starts from `scratch`, an
//! earlier stage or an image (from the local store, else pulled); every instruction
//! is a step whose result (image config and layers) is cached under a key made of the
//! previous step's key and the instruction with its inputs, so a rebuild with nothing
//! changed reuses every step and gives the same image digest.
//!
//! Steps that change files (RUN, COPY, ADD) run on the stage's root filesystem,
//! unpacked on demand in a temporary directory; their changes become one gzip layer
//! with whiteouts for deletions. Other instructions change the config only.
//!
//! Here: running the stages and their steps, and writing the image. Elsewhere:
//! `plan` (stages, targets, ARGs), `instructions` (one function per instruction),
//! `copy` (COPY and ADD on the file system), `cache` (the step cache), and the
//! Dockerfile parser, build context, layers and RUN in their own modules.

pub(crate) mod context;
pub mod dockerfile;
pub(crate) mod rootfs;
pub(crate) mod run;

mod cache;
mod copy;
mod instructions;
mod mounts;
mod plan;
mod remote;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;
use serde_json::{json, Value};

use berth_oci::media_types::{OCI_CONFIG, OCI_LAYER_GZIP};

use crate::image::{self, short_id};
use crate::inroot::Root;
use crate::manifest::{self, digest_of};
use crate::private::PrivateRoot;
use crate::reference::Reference;
use crate::store::Store;
use cache::{chain_hash, StepCache};
use copy::{CopyStep, Made};
use dockerfile::Instruction;
use instructions::{Action, FileStep, Input};
use plan::Stage;

pub(crate) use mounts::read_secrets;

/// What `berth image build` was asked.
pub(crate) struct Options {
    pub context: PathBuf,
    pub dockerfile: Option<PathBuf>,
    /// The names to give the image.
    pub tags: Vec<Reference>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Option<String>,
    pub quiet: bool,
    /// `--secret`s by id, for `RUN --mount=type=secret`.
    pub secrets: BTreeMap<String, Vec<u8>>,
}

/// Where base images come from: the local store, pulling when absent.
pub(crate) trait Bases {
    /// The manifest digest (in the local store) of the image `reference` names.
    async fn base(&self, reference: &str, platform: Option<&str>) -> anyhow::Result<String>;
}

/// The result of the steps so far in one stage.
#[derive(Clone)]
struct State {
    /// The image config as JSON (see [`crate::image::Image::config`]).
    config: Value,
    layers: Vec<Descriptor>,
    /// The cache key of the last step (hex).
    chain: String,
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
    let (global_args, stages) = plan::split_stages(instructions)?;
    // BuildKit's automatic platform arguments, as defaults a --build-arg overrides:
    // FROM lines may use them undeclared; a stage declares them (`ARG TARGETARCH`).
    let automatic = plan::platform_args(options.platform.as_deref());
    let mut build_args = automatic.clone();
    build_args.extend(options.build_args.clone());
    let mut meta_args = plan::global_args(&global_args, &build_args)?;
    for (name, value) in automatic {
        meta_args.entry(name).or_insert(value);
    }
    let target = plan::target_index(&stages, options.target.as_deref())?;
    let needed = plan::needed_stages(&stages, target);
    let mut builder = Builder {
        store,
        build_args,
        ignore: context::Ignore::load(&options.context)?,
        context: options
            .context
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("build context {}: {e}", options.context.display()))?,
        cache: StepCache::open(&store.build_cache_dir())?,
        options,
        finished: Vec::new(),
        clamp: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.parse().ok()),
        step_number: 0,
        step_count: plan::step_count(&stages, &needed),
    };
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

/// A built stage: its name, final state, and its root filesystem when unpacked.
struct Finished {
    name: Option<String>,
    state: State,
    root: Option<PrivateRoot>,
}

struct Builder<'a> {
    store: &'a Store,
    /// `--build-arg`s over the automatic platform arguments.
    build_args: BTreeMap<String, String>,
    cache: StepCache,
    ignore: context::Ignore,
    context: PathBuf,
    options: &'a Options,
    /// Each stage's name and final state (and its unpacked root, when made), by index.
    finished: Vec<Option<Finished>>,
    clamp: Option<u64>,
    step_number: usize,
    step_count: usize,
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
    ) -> anyhow::Result<(State, Option<PrivateRoot>)> {
        self.step_number += 1;
        self.say(format!(
            "Step {}/{} : FROM {}",
            self.step_number,
            self.step_count,
            stage.from.raw()
        ));
        let (mut state, from_id) = self.from(stage, bases, meta_args).await?;
        self.say(format!(" ---> {}", from_id.as_deref().map_or("", short_id)));
        let mut root: Option<PrivateRoot> = None;
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        let mut cmd_set_here = false;
        for inst in &stage.steps {
            self.step_number += 1;
            self.say(format!(
                "Step {}/{} : {} {}",
                self.step_number, self.step_count, inst.keyword, inst.text
            ));
            if inst.keyword == "ARG" {
                let vars = self.vars(&state, &args);
                let (name, value) = plan::declare_arg(inst, &self.build_args, meta_args, &vars)?;
                args.insert(name, value.unwrap_or_default());
                self.say_id(&state.config);
                continue;
            }
            let input = Input {
                inst,
                config: &state.config,
                args: &args,
                vars: self.vars(&state, &args),
            };
            let mut step = instructions::prepare(&input, &mut cmd_set_here, |from, sources| {
                self.copy_inputs(inst, from, sources)
            })
            .map_err(|e| at_line(inst, e))?;
            // ADD's downloads: fetched now, their content part of the step's key.
            if let Action::Files(FileStep::Copy(CopyStep {
                made: Made::Downloads { remotes, dir },
                ..
            })) = &mut step.action
            {
                let (fetched, digests) =
                    remote::fetch(remotes).await.map_err(|e| at_line(inst, e))?;
                *dir = Some(fetched);
                step.key.push_str(&digests);
            }
            let chain = chain_hash(format!("{}\n{}", state.chain, step.key).as_bytes());
            if let Some(cached) = self.cache.get(self.store, &chain) {
                self.say(" ---> Using cache");
                if cached.layers != state.layers {
                    root = None;
                }
                state = cached;
                self.say_id(&state.config);
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
                    self.apply(kind, &dir).map_err(|e| at_line(inst, e))?;
                    match rootfs::write_diff(self.store, &dir, &before, self.clamp)? {
                        Some(layer) => {
                            layers.push(manifest::descriptor(
                                OCI_LAYER_GZIP,
                                &layer.digest,
                                layer.size,
                            )?);
                            let mut diff_ids = config["rootfs"]["diff_ids"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default();
                            diff_ids.push(json!(layer.diff_id));
                            config["rootfs"]["diff_ids"] = Value::Array(diff_ids);
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
            self.cache.put(&state)?;
            self.say_id(&state.config);
        }
        Ok((state, root))
    }

    /// Says the id of the image the steps so far make (docker's ` ---> <id>`).
    fn say_id(&self, config: &Value) {
        if !self.options.quiet {
            self.say(format!(" ---> {}", short_id(&image_id(config))));
        }
    }

    /// The state a stage starts from (`scratch`, an earlier stage, or an image), with
    /// the id of what it starts from (none for `scratch`). As docker's builders do,
    /// the stage has a `PATH` when its base sets none.
    async fn from(
        &self,
        stage: &Stage,
        bases: &impl Bases,
        meta_args: &BTreeMap<String, String>,
    ) -> anyhow::Result<(State, Option<String>)> {
        let (mut state, id) = self.base_state(stage, bases, meta_args).await?;
        default_path(&mut state.config);
        Ok((state, id))
    }

    async fn base_state(
        &self,
        stage: &Stage,
        bases: &impl Bases,
        meta_args: &BTreeMap<String, String>,
    ) -> anyhow::Result<(State, Option<String>)> {
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
        if base.eq_ignore_ascii_case("scratch") {
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
            let state = State {
                config: json!({
                    "architecture": arch, "os": os, "config": {},
                    "rootfs": {"type": "layers", "diff_ids": []}, "history": [],
                }),
                layers: Vec::new(),
                // Steps on one platform's scratch are not another's.
                chain: chain_hash(format!("FROM scratch {os}/{arch}").as_bytes()),
            };
            Ok((state, None))
        } else if let Some(i) = self.stage_index(&base) {
            let state = self.built(i).state.clone();
            let id = image_id(&state.config);
            Ok((state, Some(id)))
        } else {
            let digest = bases.base(&base, platform.as_deref()).await?;
            let img = image::Image::load(self.store, &digest)?;
            let mut config = img.config;
            if !config["config"].is_object() {
                config["config"] = json!({});
            }
            // The image is written as OCI: a Docker-typed base layer (the same bytes)
            // is described with its OCI type, as strict tools require.
            let layers = img
                .manifest
                .layers()
                .iter()
                .map(manifest::as_oci_layer)
                .collect();
            let state = State {
                config,
                layers,
                chain: chain_hash(format!("FROM {}", img.manifest_digest).as_bytes()),
            };
            Ok((state, Some(img.config_digest)))
        }
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
        vars.extend(instructions::env_map(&state.config));
        vars
    }

    /// A temporary root file system (other users kept out) with `layers` unpacked in
    /// order.
    fn unpack(&self, layers: &[Descriptor]) -> anyhow::Result<PrivateRoot> {
        let dir = PrivateRoot::new("berth-build-")?;
        let root = Root::open(dir.path())?;
        for layer in layers {
            let digest = digest_of(layer);
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

    /// Runs a step that changes files on the stage's root `root`.
    fn apply(&mut self, step: FileStep, root: &Path) -> anyhow::Result<()> {
        match step {
            FileStep::Run {
                argv,
                script,
                mounts,
                mut env,
                workdir,
                user,
            } => {
                let user = user.map(|u| run::resolve_user(root, &u)).transpose()?;
                let options = self.options;
                let lender = mounts::Lender {
                    secrets: &options.secrets,
                    caches: self.store.cache_mounts_dir(),
                };
                let lent = lender.lend(&mounts, |spec| self.bind_source(spec))?;
                env.extend(lent.env.iter().cloned());
                run::run(
                    root,
                    &run::Run {
                        argv: &argv,
                        script: script.as_deref(),
                        env: &env,
                        workdir: &workdir,
                        user,
                        mounts: &lent.mounts,
                    },
                )
            }
            FileStep::Copy(copy) => self.copy_files(root, copy),
        }
    }

    /// Writes the final config and manifest and names the image.
    fn write_image(&self, state: &State) -> anyhow::Result<String> {
        let config = serde_json::to_vec(&state.config)?;
        let config_digest = self.store.put_blob(&config)?;
        let manifest = manifest::image_manifest(
            manifest::descriptor(OCI_CONFIG, &config_digest, config.len() as u64)?,
            state.layers.clone(),
        )?;
        let descriptor = manifest::put(self.store, &manifest)?;
        for tag in &self.options.tags {
            self.store.set(&tag.to_string(), descriptor.clone(), None)?;
        }
        if self.options.quiet {
            println!("{config_digest}");
        } else {
            println!("Successfully built {}", short_id(&config_digest));
            for tag in &self.options.tags {
                println!("Successfully tagged {}", tag.familiar());
            }
        }
        Ok(digest_of(&descriptor).to_owned())
    }
}

/// The id of the image a config makes: the digest it is stored under.
fn image_id(config: &Value) -> String {
    let bytes = serde_json::to_vec(config).expect("a JSON value serializes");
    berth_oci::Digest::of(berth_oci::Algorithm::Sha256, &bytes).to_string()
}

/// The `PATH` docker's builders give a Linux stage whose base sets none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn default_path(config: &mut Value) {
    if config["os"].as_str() == Some("windows") {
        return;
    }
    let env = &mut config["config"]["Env"];
    let has_path = env.as_array().is_some_and(|vars| {
        vars.iter()
            .any(|v| v.as_str().is_some_and(|v| v.starts_with("PATH=")))
    });
    if !has_path {
        // After the base's own variables, as docker's builder adds it.
        let mut vars = env.as_array().cloned().unwrap_or_default();
        vars.push(json!(DEFAULT_PATH));
        *env = Value::Array(vars);
    }
}

/// A step's error as the Dockerfile line it comes from (kept as it is when it names
/// its line already).
fn at_line(inst: &Instruction, e: anyhow::Error) -> anyhow::Error {
    if e.downcast_ref::<dockerfile::ParseError>().is_some() {
        return e;
    }
    inst.invalid(format!("{e:#}")).into()
}
