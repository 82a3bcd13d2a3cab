//! The command line: one enum variant and one module per subcommand group.
//! Adding a subcommand is adding a variant to [`Command`], a module, and an
//! arm in [`run`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod certs;
pub mod client_cmds;
pub mod local_cluster;
pub mod log;
pub mod members;
pub mod serve;

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
    /// Run one replica (the process a pod runs).
    Serve(Box<serve::ServeArgs>),
    /// Start a replica group on loopback as child processes and watch it.
    LocalCluster(local_cluster::LocalClusterArgs),
    /// Append entries (arguments, or lines of standard input).
    Append(client_cmds::AppendArgs),
    /// Print one committed entry.
    Get(client_cmds::GetArgs),
    /// Print committed entries from an index; --follow waits for more;
    /// --consumer resumes where a consumer group left off (at-least-once).
    Read(client_cmds::ReadArgs),
    /// Show or commit a consumer group's offset (the index it reads next).
    #[command(subcommand)]
    Offset(client_cmds::OffsetCommand),
    /// Show each member's role, term and indexes.
    Status(client_cmds::StatusArgs),
    /// Hand leadership to another member.
    TransferLeader(client_cmds::TransferArgs),
    /// List the voters and learners, or change them one member at a time:
    /// add a learner, promote it to voter, remove a member.
    #[command(subcommand)]
    Members(members::MembersCommand),
    /// Measure append throughput and latency.
    Bench(bench::BenchArgs),
    /// Inspect a replica's on-disk log (offline tools).
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Make a group's CA and certificates for `serve --tls-*` and clients.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

/// Runs the parsed command line and says how the process should exit.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::LocalCluster(args) => local_cluster::run(args),
        Command::Append(args) => client_cmds::append(args),
        Command::Get(args) => client_cmds::get(args),
        Command::Read(args) => client_cmds::read(args),
        Command::Offset(command) => client_cmds::offset(command),
        Command::Status(args) => client_cmds::status(args),
        Command::TransferLeader(args) => client_cmds::transfer(args),
        Command::Members(command) => members::run(command),
        Command::Bench(args) => bench::run(args),
        Command::Log(command) => log::run(command),
        Command::Certs(command) => certs::run(command),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap checks a command line's definition only when it is parsed in a
    /// debug build (two flags of one name, say); this checks every
    /// subcommand at once (`bench` once had two `--servers`).
    #[test]
    fn every_subcommand_is_well_formed() {
        Cli::command().debug_assert();
    }
}
