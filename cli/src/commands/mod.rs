//! What each command does: the context every command shares (the local store, the
//! credentials, the default registry) and the dispatch from the command line's
//! definitions in [`crate::args`] to the implementations, the larger ones in their
//! own modules.

mod build;
mod pull;
mod push;
mod show;

use std::path::{Path, PathBuf};

use berth_oci::size::{human_size, SizeFormat};

use crate::args::{Cli, Command, ImageCommand};
use crate::credentials::Credentials;
use crate::image::short_id;
use crate::reference::{self, Reference};
use crate::registry::{BadCredentials, Registry};
use crate::store::{self, Store};
use crate::{archive, image};

/// What every command works with.
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

/// Runs the command `cli` describes.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
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
        Command::Login { host, username, .. } => login(&ctx, &host, &username).await,
        Command::Logout { host } => logout(&ctx, &host),
        Command::Image(command) => image_command(&ctx, command).await,
    }
}

/// Checks the password (read from standard input) with the registry, then saves it.
async fn login(ctx: &Context, host: &str, username: &str) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    Registry::new(host, Some((username.to_owned(), password.clone())))?
        .ping()
        .await
        .map_err(|e| match e.downcast_ref::<BadCredentials>() {
            // Said plainly: running the same command again is not the remedy.
            Some(_) => anyhow::anyhow!("login to {host} failed: incorrect username or password"),
            None => e,
        })?;
    ctx.credentials.store(host, username, &password)?;
    println!("Login Succeeded");
    Ok(())
}

fn logout(ctx: &Context, host: &str) -> anyhow::Result<()> {
    if ctx.credentials.remove(host)? {
        println!("Removing login credentials for {host}");
    } else {
        println!("Not logged in to {host}");
    }
    Ok(())
}

async fn image_command(ctx: &Context, command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Ls {
            repository,
            digests,
            no_trunc,
            quiet,
            format,
        } => show::ls(
            ctx,
            &show::LsOptions {
                repository: repository.as_deref(),
                digests,
                no_trunc,
                quiet,
                format: &format,
            },
        ),
        ImageCommand::Pull {
            reference,
            platform,
            quiet,
        } => pull::pull(ctx, &reference, platform.as_deref(), quiet).await,
        ImageCommand::Push { reference, quiet } => push::push(ctx, &reference, quiet).await,
        ImageCommand::Tag { source, target } => {
            let (source, entry) = ctx.local(&source)?;
            let target = ctx.parse(&target)?;
            // The registry's digest names the image in its own repository only.
            let repo_digest = entry
                .repo_digest()
                .filter(|_| source.name() == target.name());
            ctx.store
                .set(&target.to_string(), entry.descriptor.clone(), repo_digest)
        }
        ImageCommand::Rm { reference } => {
            let (r, _) = ctx.local(&reference)?;
            ctx.store.remove(&r.to_string())?;
            println!("Untagged: {}", r.familiar());
            Ok(())
        }
        ImageCommand::Prune => {
            let freed = ctx.store.prune()?;
            println!(
                "Total reclaimed space: {}",
                human_size(freed, SizeFormat::Docker { digits: 4 })
            );
            Ok(())
        }
        ImageCommand::Inspect { reference } => show::inspect(ctx, &reference),
        ImageCommand::History {
            reference,
            human,
            no_trunc,
            quiet,
            format,
        } => show::history(
            ctx,
            &show::HistoryOptions {
                reference: &reference,
                human,
                no_trunc,
                quiet,
                format: &format,
            },
        ),
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
        ImageCommand::Build(args) => build::build(ctx, args).await,
        ImageCommand::Import { tarball, reference } => {
            let r = ctx.parse(&reference)?;
            let id = image::import(&ctx.store, &tarball, &r.to_string())?;
            println!("{id}");
            Ok(())
        }
    }
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
    bar.set_prefix(short_id(digest).to_owned());
    bar
}
