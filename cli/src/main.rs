//! The `berth` command: parses the command line and runs it (see the library).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = berth_cli::args::Cli::parse();
    // A build by a user who is not root runs again in a user namespace (rootless).
    if let Err(e) = berth_cli::rootless::enter_if_child() {
        eprintln!("berth: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let building = matches!(
        cli.command,
        berth_cli::args::Command::Image(berth_cli::args::ImageCommand::Build(_))
    );
    if building && !rustix::process::geteuid().is_root() {
        match berth_cli::rootless::rerun_in_user_namespace() {
            Ok(Some(code)) => return code,
            Ok(None) => {}
            Err(e) => {
                eprintln!("berth: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
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
