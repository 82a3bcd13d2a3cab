//! The `dledger-replica` binary: parses the command line and runs it.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
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
    cli::run(Cli::parse())
}
