//! `berth`: docker's image commands without a daemon, on a local OCI image layout.

mod archive;
mod build;
mod credentials;
mod image;
mod inroot;
mod reference;
mod registry;
mod store;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

use berth_oci::{media_types, Algorithm, Digest};

use crate::credentials::Credentials;
use crate::image::Image;
use crate::reference::Reference;
use crate::registry::Registry;
use crate::store::Store;

/// Pull, push, tag, list and inspect container images, without a daemon.
#[derive(Parser)]
#[command(name = "berth", version)]
struct Cli {
    /// Where images and credentials are kept [env: BERTH_HOME] [default: ~/.local/share/berth]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Registry for names without one [env: BERTH_DEFAULT_REGISTRY] [default: docker.io]
    #[arg(long, global = true, value_name = "HOST")]
    default_registry: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in to a registry (Docker's token flow or Basic auth); saves the credentials.
    Login {
        host: String,
        #[arg(short, long)]
        username: String,
        /// Read the password from standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Forget the credentials of a registry.
    Logout { host: String },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Subcommand)]
enum ImageCommand {
    /// List images.
    Ls {
        /// Show manifest digests.
        #[arg(long)]
        digests: bool,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Download an image (only the layers not already here).
    Pull {
        reference: String,
        /// os/arch[/variant] to pick from a multi-platform image [default: this machine's]
        #[arg(long)]
        platform: Option<String>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Upload an image (only the blobs the registry does not have).
    Push {
        reference: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove an image name (the data stays until `prune`).
    Rm { reference: String },
    /// Delete blobs no image uses.
    Prune,
    /// Show an image's details as JSON, like `docker image inspect`.
    Inspect { reference: String },
    /// Show how an image was built, like `docker history`.
    History {
        reference: String,
        #[arg(long)]
        no_trunc: bool,
    },
    /// Build an image from a Dockerfile, like `docker build`.
    Build {
        /// Name the image (repeatable).
        #[arg(short, long = "tag", required = true)]
        tags: Vec<String>,
        /// The Dockerfile [default: CONTEXT/Dockerfile]
        #[arg(short, long)]
        file: Option<PathBuf>,
        /// KEY=VALUE for an ARG (KEY alone takes the value from the environment).
        #[arg(long = "build-arg", value_name = "KEY=VALUE")]
        build_args: Vec<String>,
        /// Build this stage (`FROM … AS name`) instead of the last.
        #[arg(long)]
        target: Option<String>,
        /// os/arch of `FROM scratch` stages and of base images to pull [default: this machine's]
        #[arg(long)]
        platform: Option<String>,
        /// Print only the image id.
        #[arg(short, long)]
        quiet: bool,
        /// The directory COPY and ADD read from.
        context: PathBuf,
    },
    /// Make an image from a root filesystem tarball, like `docker import`.
    Import { tarball: PathBuf, reference: String },
    /// Write images to a tar file that `docker load` and OCI tools read.
    Save {
        #[arg(required = true)]
        references: Vec<String>,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Read images from a `docker save` / `berth image save` / OCI archive tar file.
    Load {
        #[arg(short, long)]
        input: PathBuf,
    },
}

struct Context {
    store: Store,
    credentials: Credentials,
    default_registry: String,
}

impl Context {
    fn parse(&self, text: &str) -> anyhow::Result<Reference> {
        Ok(Reference::parse(text, &self.default_registry)?)
    }

    fn registry(&self, host: &str) -> anyhow::Result<Registry> {
        Registry::new(host, self.credentials.get(host))
    }

    /// The local image `text` names, or a clear error.
    fn local(&self, text: &str) -> anyhow::Result<(Reference, store::Entry)> {
        let r = self.parse(text)?;
        let entry = self.store.find(&r.to_string())?.ok_or_else(|| {
            anyhow::anyhow!("no such image: {r} (see `berth image ls`, or pull it)")
        })?;
        Ok((r, entry))
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = cli
        .home
        .or_else(|| std::env::var_os("BERTH_HOME").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share/berth")))
        .ok_or_else(|| anyhow::anyhow!("set BERTH_HOME or HOME"))?;
    let ctx = Context {
        store: Store::open(&home.join("images"))?,
        credentials: Credentials::new(&home),
        default_registry: cli
            .default_registry
            .or_else(|| std::env::var("BERTH_DEFAULT_REGISTRY").ok())
            .unwrap_or_else(|| reference::DOCKER_HUB.to_owned()),
    };
    match cli.command {
        Command::Login { host, username, .. } => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']).to_owned();
            Registry::new(&host, Some((username.clone(), password.clone())))?
                .ping()
                .await?;
            ctx.credentials.store(&host, &username, &password)?;
            println!("Login Succeeded");
        }
        Command::Logout { host } => {
            if ctx.credentials.remove(&host)? {
                println!("Removing login credentials for {host}");
            } else {
                println!("Not logged in to {host}");
            }
        }
        Command::Image(command) => image_command(&ctx, command).await?,
    }
    Ok(())
}

async fn image_command(ctx: &Context, command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Ls { digests, format } => ls(ctx, digests, &format),
        ImageCommand::Pull {
            reference,
            platform,
            quiet,
        } => pull(ctx, &reference, platform.as_deref(), quiet).await,
        ImageCommand::Push { reference, quiet } => push(ctx, &reference, quiet).await,
        ImageCommand::Tag { source, target } => {
            let (_, entry) = ctx.local(&source)?;
            let target = ctx.parse(&target)?;
            ctx.store.set(&target.to_string(), entry.descriptor)
        }
        ImageCommand::Rm { reference } => {
            let (r, _) = ctx.local(&reference)?;
            ctx.store.remove(&r.to_string())?;
            println!("Untagged: {r}");
            Ok(())
        }
        ImageCommand::Prune => {
            let freed = ctx.store.prune()?;
            println!("Total reclaimed space: {}", human_size(freed));
            Ok(())
        }
        ImageCommand::Inspect { reference } => {
            let (r, entry) = ctx.local(&reference)?;
            let digest = entry.descriptor["digest"].as_str().unwrap_or_default();
            let image = Image::load(&ctx.store, digest)?;
            let names: Vec<String> = ctx
                .store
                .entries()?
                .into_iter()
                .filter(|e| e.descriptor["digest"] == entry.descriptor["digest"])
                .map(|e| e.name)
                .collect();
            let repo_digests = vec![format!("{}@{digest}", r.name())];
            let out = json!([image.inspect(&names, &repo_digests)]);
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        ImageCommand::History {
            reference,
            no_trunc,
        } => {
            let (_, entry) = ctx.local(&reference)?;
            let image = Image::load(
                &ctx.store,
                entry.descriptor["digest"].as_str().unwrap_or_default(),
            )?;
            println!(
                "{:<14} {:<22} {:<48} {:>10}  COMMENT",
                "IMAGE", "CREATED", "CREATED BY", "SIZE"
            );
            for [id, created, created_by, size, comment] in image.history() {
                let id = if no_trunc || id == "<missing>" {
                    id
                } else {
                    short_id(&id)
                };
                let created_by = if no_trunc || created_by.chars().count() <= 45 {
                    created_by
                } else {
                    created_by.chars().take(44).collect::<String>() + "…"
                };
                println!(
                    "{id:<14} {created:<22} {created_by:<48} {:>10}  {comment}",
                    human_size(size.parse().unwrap_or(0))
                );
            }
            Ok(())
        }
        ImageCommand::Save { references, output } => {
            let names = references
                .iter()
                .map(|r| Ok(ctx.local(r)?.0.to_string()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            archive::save(&ctx.store, &names, &output)
        }
        ImageCommand::Load { input } => {
            for name in archive::load(&ctx.store, &input)? {
                println!("Loaded image: {name}");
            }
            Ok(())
        }
        ImageCommand::Build {
            tags,
            file,
            build_args,
            target,
            platform,
            quiet,
            context,
        } => {
            let mut args = std::collections::BTreeMap::new();
            for a in build_args {
                match a.split_once('=') {
                    Some((k, v)) => args.insert(k.to_owned(), v.to_owned()),
                    None => match std::env::var(&a) {
                        Ok(v) => args.insert(a, v),
                        Err(_) => None,
                    },
                };
            }
            let options = build::Options {
                context,
                dockerfile: file,
                tags: tags
                    .iter()
                    .map(|t| Ok(ctx.parse(t)?.to_string()))
                    .collect::<anyhow::Result<_>>()?,
                build_args: args,
                target,
                platform,
                quiet,
            };
            build::build(&ctx.store, ctx, &options).await.map(|_| ())
        }
        ImageCommand::Import { tarball, reference } => {
            let r = ctx.parse(&reference)?;
            let id = image::import(&ctx.store, &tarball, &r.to_string())?;
            println!("{id}");
            Ok(())
        }
    }
}

impl build::Bases for Context {
    /// A base image from the local store, as docker does; pulled when absent.
    async fn base(&self, reference: &str, platform: Option<&str>) -> anyhow::Result<String> {
        let name = self.parse(reference)?.to_string();
        if self.store.find(&name)?.is_none() {
            pull(self, reference, platform, true).await?;
        }
        let entry = self
            .store
            .find(&name)?
            .ok_or_else(|| anyhow::anyhow!("base image {name} is not in the local store"))?;
        Ok(entry.descriptor["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }
}

fn ls(ctx: &Context, digests: bool, format: &str) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for entry in ctx.store.entries()? {
        let digest = entry.descriptor["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let image = Image::load(&ctx.store, &digest)?;
        let r = ctx.parse(&entry.name)?;
        rows.push(json!({
            "Repository": r.name(),
            "Tag": r.tag.clone().unwrap_or_else(|| "<none>".into()),
            "Digest": digest,
            "ID": image.id(),
            "CreatedAt": image.config["created"],
            "Size": image.size(),
        }));
    }
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
        "table" => {
            let digest_col = if digests {
                format!(" {:<71}", "DIGEST")
            } else {
                String::new()
            };
            println!(
                "{:<40} {:<16}{digest_col} {:<14} {:<22} {:>10}",
                "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"
            );
            for row in rows {
                let digest_col = if digests {
                    format!(" {:<71}", row["Digest"].as_str().unwrap_or_default())
                } else {
                    String::new()
                };
                println!(
                    "{:<40} {:<16}{digest_col} {:<14} {:<22} {:>10}",
                    row["Repository"].as_str().unwrap_or_default(),
                    row["Tag"].as_str().unwrap_or_default(),
                    short_id(row["ID"].as_str().unwrap_or_default()),
                    row["CreatedAt"].as_str().unwrap_or_default(),
                    human_size(row["Size"].as_u64().unwrap_or(0)),
                );
            }
        }
        other => anyhow::bail!("unknown format {other:?}: use table or json"),
    }
    Ok(())
}

/// Parallel layer downloads at most.
const DOWNLOADS: usize = 3;

async fn pull(
    ctx: &Context,
    text: &str,
    platform: Option<&str>,
    quiet: bool,
) -> anyhow::Result<()> {
    let r = ctx.parse(text)?;
    let registry = ctx.registry(&r.registry)?;
    let (media_type, bytes) = registry.get_manifest(&r.repository, r.reference()).await?;
    let top_digest = Digest::of(Algorithm::Sha256, &bytes).to_string();
    let mut manifest: Value = serde_json::from_slice(&bytes)?;
    let mut manifest_bytes = bytes;
    let mut manifest_type = media_type.clone();
    if media_types::is_index(&media_type) || manifest["manifests"].is_array() {
        let wanted = platform.map_or_else(
            || format!("linux/{}", image::host_architecture()),
            str::to_owned,
        );
        let child = manifest["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                platform_of(&m["platform"]) == wanted
                    || platform_of(&m["platform"]).starts_with(&format!("{wanted}/"))
            })
            .ok_or_else(|| anyhow::anyhow!("{r} has no image for platform {wanted}"))?;
        let digest = child["digest"].as_str().unwrap_or_default().to_owned();
        let (t, b) = registry.get_manifest(&r.repository, &digest).await?;
        anyhow::ensure!(
            Digest::of(Algorithm::Sha256, &b).as_str() == digest,
            "manifest {digest} does not match its digest"
        );
        manifest = serde_json::from_slice(&b)?;
        manifest_bytes = b;
        manifest_type = t;
    }
    let mut wanted: Vec<(String, u64)> = Vec::new();
    if let Some(d) = manifest["config"]["digest"].as_str() {
        wanted.push((
            d.to_owned(),
            manifest["config"]["size"].as_u64().unwrap_or(0),
        ));
    }
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        wanted.push((
            layer["digest"].as_str().unwrap_or_default().to_owned(),
            layer["size"].as_u64().unwrap_or(0),
        ));
    }
    let registry = &registry;
    let repo = r.repository.as_str();
    let bars = &indicatif::MultiProgress::new();
    futures::stream::iter(wanted)
        .map(|(digest, size)| async move {
            if ctx.store.has_blob(&digest) {
                if !quiet {
                    println!("{}: Already exists", short_id(&digest));
                }
                return Ok(());
            }
            let res = registry.get_blob(repo, &digest).await?;
            let bar = progress_bar(bars, &digest, size, quiet);
            let mut writer = ctx.store.blob_writer()?;
            let mut body = res.bytes_stream();
            while let Some(chunk) = body.try_next().await? {
                std::io::Write::write_all(&mut writer, &chunk)?;
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            writer.finish(Some(&digest))?;
            if !quiet {
                println!("{}: Pull complete", short_id(&digest));
            }
            anyhow::Ok(())
        })
        .buffer_unordered(DOWNLOADS)
        .try_collect::<Vec<()>>()
        .await?;
    // The manifest goes in last, and the name after it: no half-pulled image is listed.
    let digest = ctx.store.put_blob(&manifest_bytes)?;
    ctx.store.set(
        &r.to_string(),
        json!({ "mediaType": manifest_type, "digest": digest, "size": manifest_bytes.len() }),
    )?;
    if quiet {
        println!("{r}");
    } else {
        println!("Digest: {top_digest}");
        println!("Status: Downloaded image for {r}");
    }
    Ok(())
}

async fn push(ctx: &Context, text: &str, quiet: bool) -> anyhow::Result<()> {
    let (r, entry) = ctx.local(text)?;
    let digest = entry.descriptor["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let manifest_type = entry.descriptor["mediaType"]
        .as_str()
        .unwrap_or(media_types::OCI_MANIFEST)
        .to_owned();
    let registry = ctx.registry(&r.registry)?;
    let manifest = ctx.store.read_json(&digest)?;
    let bars = indicatif::MultiProgress::new();
    let mount_sources = mount_sources(ctx, &r)?;
    let upload = |m: Value| push_blobs(ctx, &registry, &r, m, &mount_sources, &bars, quiet);
    if let Some(children) = manifest["manifests"].as_array() {
        // A multi-platform image: every platform's image first, by digest, then the index.
        for child in children {
            let child_digest = child["digest"].as_str().unwrap_or_default();
            anyhow::ensure!(
                ctx.store.has_blob(child_digest),
                "{r} is a multi-platform image whose {} image is not in the local store (berth image pull keeps one platform); push one platform, or load the whole image with berth image load",
                platform_of(&child["platform"])
            );
            upload(ctx.store.read_json(child_digest)?).await?;
            registry
                .put_manifest(
                    &r.repository,
                    child_digest,
                    child["mediaType"]
                        .as_str()
                        .unwrap_or(media_types::OCI_MANIFEST),
                    ctx.store.read_blob(child_digest)?,
                )
                .await?;
        }
    } else {
        upload(manifest).await?;
    }
    let tag = r.reference().to_owned();
    registry
        .put_manifest(
            &r.repository,
            &tag,
            &manifest_type,
            ctx.store.read_blob(&digest)?,
        )
        .await?;
    println!("{tag}: digest: {digest} size: {}", entry.descriptor["size"]);
    Ok(())
}

/// Uploads the config and layers of image `manifest` that the registry lacks (checked
/// with HEAD; mounted from another repository of the registry where one has them).
async fn push_blobs(
    ctx: &Context,
    registry: &Registry,
    r: &Reference,
    manifest: Value,
    mount_sources: &std::collections::HashMap<String, String>,
    bars: &indicatif::MultiProgress,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut blobs = vec![manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned()];
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        blobs.push(layer["digest"].as_str().unwrap_or_default().to_owned());
    }
    for blob in blobs {
        if registry.has_blob(&r.repository, &blob).await? {
            if !quiet {
                println!("{}: Layer already exists", short_id(&blob));
            }
            continue;
        }
        if let Some(from) = mount_sources.get(&blob) {
            if registry.mount_blob(&r.repository, &blob, from).await? {
                if !quiet {
                    println!("{}: Mounted from {from}", short_id(&blob));
                }
                continue;
            }
        }
        let path = ctx.store.blob_path(&blob)?;
        let bar = progress_bar(bars, &blob, std::fs::metadata(&path)?.len(), quiet);
        registry
            .upload_blob(&r.repository, &blob, &path, &|done| bar.set_position(done))
            .await?;
        bar.finish_and_clear();
        if !quiet {
            println!("{}: Pushed", short_id(&blob));
        }
    }
    Ok(())
}

/// For each blob, another repository of the same registry that probably has it: one
/// a local image of that registry (pulled from or pushed to it) uses.
fn mount_sources(
    ctx: &Context,
    target: &Reference,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut sources = std::collections::HashMap::new();
    for entry in ctx.store.entries()? {
        let Ok(other) = ctx.parse(&entry.name) else {
            continue;
        };
        if other.registry != target.registry || other.repository == target.repository {
            continue;
        }
        let digest = entry.descriptor["digest"].as_str().unwrap_or_default();
        for blob in image::blobs_of(&ctx.store, digest)? {
            sources
                .entry(blob)
                .or_insert_with(|| other.repository.clone());
        }
    }
    Ok(sources)
}

/// A per-blob progress bar on stderr (drawn only on a terminal, never when quiet).
fn progress_bar(
    bars: &indicatif::MultiProgress,
    digest: &str,
    size: u64,
    quiet: bool,
) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = bars.add(indicatif::ProgressBar::new(size));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix}: [{bar:30}] {bytes}/{total_bytes}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(short_id(digest));
    bar
}

fn platform_of(p: &Value) -> String {
    let mut s = format!(
        "{}/{}",
        p["os"].as_str().unwrap_or_default(),
        p["architecture"].as_str().unwrap_or_default()
    );
    if let Some(v) = p["variant"].as_str() {
        s.push('/');
        s.push_str(v);
    }
    s
}

/// The first 12 hex digits, as docker shows ids.
fn short_id(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    let number = format!("{value:.2}");
    format!(
        "{}{}",
        number.trim_end_matches('0').trim_end_matches('.'),
        UNITS[unit]
    )
}
