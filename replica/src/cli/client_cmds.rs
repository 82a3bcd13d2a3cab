//! Client subcommands: `append`, `get`, `read`, `status`, `transfer-leader`.
//! Writes and reads use the binary protocol; status and transfer use HTTP.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;

use crate::admin_client::AdminClient;
use crate::api::{Role, Status};
use crate::net::client::Client;
use crate::net::client_proto::ClientEntry;

/// Where the group's members are (binary protocol).
#[derive(Clone, Debug, Args)]
pub struct Target {
    /// Members' binary protocol addresses, `host:port,...`; the client
    /// finds the leader among them.
    #[arg(
        long,
        env = "DLEDGER_SERVERS",
        value_delimiter = ',',
        default_value = "127.0.0.1:20911,127.0.0.1:20912,127.0.0.1:20913"
    )]
    pub servers: Vec<String>,

    /// The group name (checked at the handshake).
    #[arg(long, env = "DLEDGER_GROUP", default_value = "local")]
    pub group: String,
}

/// Where the group's members serve HTTP.
#[derive(Clone, Debug, Args)]
pub struct HttpTarget {
    /// Members' HTTP addresses, `host:port,...`.
    #[arg(
        long = "http",
        env = "DLEDGER_HTTP",
        value_delimiter = ',',
        default_value = "127.0.0.1:18080,127.0.0.1:18081,127.0.0.1:18082"
    )]
    pub addresses: Vec<String>,
}

/// Append entries: each argument is one entry; without arguments, each
/// line of standard input is one entry. Prints each entry's index and term
/// once committed.
#[derive(Clone, Debug, Args)]
pub struct AppendArgs {
    /// Where to send them.
    #[command(flatten)]
    pub target: Target,
    /// The entries.
    pub entries: Vec<String>,
}

/// Print a committed entry: `index<TAB>term<TAB>payload`.
#[derive(Clone, Debug, Args)]
pub struct GetArgs {
    /// Where to read.
    #[command(flatten)]
    pub target: Target,
    /// The entry's index.
    pub index: u64,
    /// Write only the payload's bytes, as they are.
    #[arg(long)]
    pub raw: bool,
}

/// Print committed entries from an index, one per line; with `--follow`,
/// keep waiting for new ones (like `tail -f`).
#[derive(Clone, Debug, Args)]
pub struct ReadArgs {
    /// Where to read.
    #[command(flatten)]
    pub target: Target,
    /// The first index.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Keep waiting for new entries.
    #[arg(long)]
    pub follow: bool,
    /// Stop after this many entries (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
}

/// Show every member's role, term and indexes.
#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    /// Where to ask.
    #[command(flatten)]
    pub target: HttpTarget,
    /// Print each member's `/status` JSON, one per line.
    #[arg(long)]
    pub json: bool,
}

/// Hand leadership to another member (or the most caught-up follower).
#[derive(Clone, Debug, Args)]
pub struct TransferArgs {
    /// Where to ask.
    #[command(flatten)]
    pub target: HttpTarget,
    /// The member that should lead.
    #[arg(long)]
    pub to: Option<String>,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("starting the runtime: {err}"))
}

fn finish(command: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dledger-replica {command}: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(target: &Target) -> Result<Client, String> {
    Client::connect(target.servers.clone(), target.group.clone())
        .await
        .map_err(|err| format!("connecting to {}: {err}", target.servers.join(",")))
}

/// Runs `append`.
pub fn append(args: AppendArgs) -> ExitCode {
    let result = runtime().and_then(|runtime| {
        runtime.block_on(async {
            let client = connect(&args.target).await?;
            let mut entries = args.entries.clone();
            if entries.is_empty() {
                for line in std::io::stdin().lock().lines() {
                    entries.push(line.map_err(|err| format!("reading standard input: {err}"))?);
                }
            }
            for entry in entries {
                let (index, term) = client
                    .append(Bytes::from(entry))
                    .await
                    .map_err(|err| err.to_string())?;
                println!("{index}\t{term}");
            }
            Ok(())
        })
    });
    finish("append", result)
}

fn print_entry(out: &mut impl Write, entry: &ClientEntry) -> std::io::Result<()> {
    writeln!(
        out,
        "{}\t{}\t{}",
        entry.index,
        entry.term,
        String::from_utf8_lossy(&entry.payload)
    )
}

/// Runs `get`.
pub fn get(args: GetArgs) -> ExitCode {
    let result = runtime().and_then(|runtime| {
        runtime.block_on(async {
            let client = connect(&args.target).await?;
            let entry = client
                .get(args.index)
                .await
                .map_err(|err| err.to_string())?;
            let mut out = std::io::stdout().lock();
            let written = if args.raw {
                out.write_all(&entry.payload)
            } else {
                print_entry(&mut out, &entry)
            };
            written.map_err(|err| format!("writing: {err}"))
        })
    });
    finish("get", result)
}

/// Runs `read`.
pub fn read(args: ReadArgs) -> ExitCode {
    let result = runtime().and_then(|runtime| {
        runtime.block_on(async {
            let client = connect(&args.target).await?;
            let mut next = args.from.max(1);
            let mut printed = 0u64;
            let wait_ms = if args.follow { 10_000 } else { 0 };
            loop {
                let batch = client
                    .read(next, 1 << 20, wait_ms)
                    .await
                    .map_err(|err| err.to_string())?;
                let mut out = std::io::stdout().lock();
                for entry in &batch.entries {
                    print_entry(&mut out, entry).map_err(|err| format!("writing: {err}"))?;
                    next = entry.index + 1;
                    printed += 1;
                    if args.count > 0 && printed >= args.count {
                        return Ok(());
                    }
                }
                if batch.entries.is_empty() && !args.follow {
                    return Ok(());
                }
            }
        })
    });
    finish("read", result)
}

fn statuses(target: &HttpTarget) -> Vec<(String, Result<Status, String>)> {
    target
        .addresses
        .iter()
        .map(|address| {
            let status = AdminClient::new(address, Duration::from_secs(2))
                .status()
                .map_err(|err| err.to_string());
            (address.clone(), status)
        })
        .collect()
}

/// Runs `status`.
pub fn status(args: StatusArgs) -> ExitCode {
    let all = statuses(&args.target);
    let mut answered = false;
    for (address, status) in &all {
        match status {
            Ok(status) if args.json => {
                answered = true;
                println!("{}", serde_json::to_string(status).unwrap_or_default());
            }
            Ok(s) => {
                answered = true;
                println!("{:<12} {:<21} {}", s.id, address, s.summary());
            }
            Err(err) => eprintln!("{address}: {err}"),
        }
    }
    if answered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `transfer-leader`.
pub fn transfer(args: TransferArgs) -> ExitCode {
    let all = statuses(&args.target);
    let leader = all.iter().find_map(|(address, status)| match status {
        Ok(status) if status.role == Role::Leader => Some(address.clone()),
        _ => None,
    });
    let result = match leader {
        None => Err(format!(
            "no member of {} reports itself leader",
            args.target.addresses.join(",")
        )),
        Some(address) => AdminClient::new(&address, Duration::from_secs(10))
            .transfer_leadership(args.to.as_deref())
            .map(|transferred| {
                println!(
                    "{} leads now (term {})",
                    transferred.leader_id, transferred.term
                );
            })
            .map_err(|err| err.to_string()),
    };
    finish("transfer-leader", result)
}
