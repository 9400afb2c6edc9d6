//! The `berthd` command line: the server, and the admin commands (one module per
//! group) that work on the same data while it runs.

mod accounts;
mod audit;
mod probe;
mod repo;
mod storage;
mod webhook;

use std::path::PathBuf;

use berth_config::{Config, Layer, LogFormat};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use accounts::{org_command, token_command, user_command, OrgCommand, TokenCommand, UserCommand};
use repo::{repo_command, RepoCommand};
use storage::{gc_command, quota_command, usage_command, QuotaCommand};

/// Berth: a self-hosted OCI container registry.
#[derive(Parser)]
#[command(name = "berthd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    ///
    /// Settings come from flags, then BERTH_* environment variables, then the
    /// config file, then defaults (listen 0.0.0.0:5000, data in ./berth-data).
    Serve(ConfigArgs),
    /// Manage user accounts (works while the server runs).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage organizations: shared namespaces (works while the server runs).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage personal access tokens (works while the server runs).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage repositories (works while the server runs).
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Webhooks of repositories and namespaces, and their deliveries (works while
    /// the server runs).
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Run one garbage collection pass now and print what it deleted (works while the
    /// server runs; the `[gc]` settings apply: grace, delete_untagged_after).
    Gc {
        /// Only count what a pass would delete (manifests, blobs, orphan objects, bytes).
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Storage quotas of namespaces (works while the server runs).
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Show storage use: the registry's, and each namespace's against its quota (or,
    /// given NAME, one namespace's or one repository's).
    Usage {
        /// A namespace (`acme`) or a repository (`acme/app`).
        name: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Read the audit log (sign-ins, account, token, membership, visibility, deletion,
    /// retention and quota changes), newest first.
    Audit(audit::AuditArgs),
    /// Exit 0 if URL answers 200 (a container health check: the image has no curl).
    Probe {
        /// e.g. http://127.0.0.1:5000/readyz
        url: String,
    },
}

/// Options shared by every command that opens the registry's data.
#[derive(Args)]
struct ConfigArgs {
    /// TOML config file (keys in the README: listen, data_dir, log_format, [database] url,
    /// [storage] backend/root/bucket/endpoint/region/redirect/upload_expiry_secs,
    /// [limits], [auth], [gc] interval/grace/delete_untagged_after, [quota] default, [audit] retention,
    /// [[proxy]] prefix/upstream/username_env/password_env/tag_ttl/max_size/access/mirror_listen).
    #[arg(long, value_name = "FILE", env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [env: BERTH_LISTEN] [default: 0.0.0.0:5000]
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Directory for the SQLite database and blobs [env: BERTH_DATA_DIR] [default: ./berth-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format, text or json [env: BERTH_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

impl ConfigArgs {
    fn resolve(&self) -> Result<Config, berth_config::ConfigError> {
        let file = match &self.config {
            Some(path) => Layer::from_file(path)?,
            None => Layer::default(),
        };
        let env = Layer::from_env(|k| std::env::var(k).ok())?;
        let flags = Layer {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            log_format: self.log_format.clone(),
            ..Layer::default()
        };
        Config::resolve(file, env, flags)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args
            .resolve()
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                let (writer, flush_on_exit) = server_log_writer();
                init_logging(config.log_format, writer);
                let served = actix_web::rt::System::new().block_on(berth_server::serve(config));
                // After the runtime and its threads are gone, with their last lines.
                drop(flush_on_exit);
                served
            }),
        Command::User(command) => admin(user_command(command)),
        Command::Repo(command) => admin(repo_command(command)),
        Command::Webhook(command) => admin(webhook::webhook_command(command)),
        Command::Token(command) => admin(token_command(command)),
        Command::Org(command) => admin(org_command(command)),
        Command::Gc { dry_run, config } => admin(gc_command(dry_run, config)),
        Command::Quota(command) => admin(quota_command(command)),
        Command::Usage { name, config } => admin(usage_command(name, config)),
        Command::Audit(args) => admin(audit::audit_command(args)),
        Command::Probe { url } => probe::probe(&url),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs an admin command (logging as text: its output is for a person).
fn admin(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    init_logging(LogFormat::Text, BoxMakeWriter::new(std::io::stderr));
    actix_web::rt::System::new().block_on(command)
}

/// Lines the server's log writer holds before loggers wait for it (an access line is
/// at most a few KiB: `berth_server::observe` shortens long paths).
const LOG_QUEUE: usize = 10_000;

/// The server logs through a thread of its own, which writes whatever lines are queued
/// in one go: request handlers never wait for stderr (a write per access log line was
/// a tenth of a metadata request's time, and the workers queued on stderr's lock). No
/// line is dropped while the server runs: should the writer fall [`LOG_QUEUE`] lines
/// behind, loggers wait. Dropping the guard at exit gives the writer a second to
/// write what is still queued.
fn server_log_writer() -> (BoxMakeWriter, tracing_appender::non_blocking::WorkerGuard) {
    let stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE)
        .thread_name("berthd-log")
        .finish(stderr);
    (BoxMakeWriter::new(writer), guard)
}

fn init_logging(format: LogFormat, writer: BoxMakeWriter) {
    // actix-http logs a client's malformed request (docker probes TLS before plain
    // HTTP) as an ERROR; it is not a server error.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,actix_http::h1::dispatcher=off")
    });
    // Logs go to stderr: stdout is for command output (`berthd user list`).
    let logs = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// The registry's storage for an admin command: what it changes is recorded in the
/// audit log as the local admin's doing.
async fn admin_storage(config: &Config) -> anyhow::Result<berth_storage::Storage> {
    Ok(berth_server::open_storage(config)
        .await?
        .by(berth_storage::audit::Actor::local_admin()))
}

fn millis_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}
