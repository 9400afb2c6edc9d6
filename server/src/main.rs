//! The `berthd` command line.

use std::path::PathBuf;

use berth_config::{Config, Layer};
use clap::{Args, Parser, Subcommand};

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
}

/// Options shared by every command that opens the registry's data.
#[derive(Args)]
struct ConfigArgs {
    /// TOML config file (keys: listen, data_dir, [database] url, [storage] backend/root,
    /// [limits] max_manifest_bytes).
    #[arg(long, value_name = "FILE", env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [env: BERTH_LISTEN] [default: 0.0.0.0:5000]
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Directory for the SQLite database and blobs [env: BERTH_DATA_DIR] [default: ./berth-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
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
            ..Layer::default()
        };
        Config::resolve(file, env, flags)
    }
}

fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args
            .resolve()
            .map_err(anyhow::Error::from)
            .and_then(|config| actix_web::rt::System::new().block_on(berth_server::serve(config))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    // actix-http logs a client's malformed request (docker probes TLS before plain
    // HTTP) as an ERROR; it is not a server error.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,actix_http::h1::dispatcher=off")
    });
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(filter)
        .init();
}
