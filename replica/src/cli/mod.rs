//! The command line: one enum variant and one module per subcommand group.
//! Adding a subcommand is adding a variant to [`Command`], a module, and an
//! arm in [`run`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod log;

/// `dledger-replica`: a Raft-replicated append-only log.
#[derive(Debug, Parser)]
#[command(name = "dledger-replica", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect a replica's on-disk log (offline tools).
    #[command(subcommand)]
    Log(log::LogCommand),
}

/// Runs the parsed command line and says how the process should exit.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Log(command) => log::run(command),
    }
}
