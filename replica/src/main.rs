//! The `dledger-replica` binary: parses the command line and runs it.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use dledger_replica::cli::{self, Cli};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Read when this crate is compiled, so a second version of the same
    // sources costs a relink of this binary only, not of the library.
    if let Some(version) = option_env!("DLEDGER_BUILD_VERSION") {
        dledger_replica::set_version(version);
    }
    let matches = Cli::command()
        .version(dledger_replica::version())
        .get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(command) => cli::run(command),
        Err(e) => e.exit(),
    }
}
