//! The `berth` command: parses the command line and runs it (see the library).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = berth_cli::args::Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(berth_cli::run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
