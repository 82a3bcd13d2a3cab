//! `dledger-replica log verify|dump`: offline tools over a data directory.
//! Both are read-only: they never cut a torn tail or rewrite an index file.
//!
//! Exit codes: 0 healthy, 1 damage found (or an entry could not be read),
//! 2 the tool could not run (missing directory, I/O error, bad arguments).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::datadir;
use crate::entry::{Entry, EntryKind, Index, NodeId};
use crate::server::members;
use crate::store::verify::{self, IndexFileStatus};
use crate::store::{log_dir, meta_path, Log, LogOptions, MetaStore, StoreError};

/// The `log` subcommands.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Check every entry's CRC, index continuity and the index files, and
    /// the hard state's and the consumer checkpoint's CRCs; print the
    /// segments and the first/last index and term. Exits 1 on damage.
    Verify(VerifyArgs),
    /// List entries: index, term, kind, size and a payload preview.
    Dump(DumpArgs),
}

/// Where the replica's data lives.
#[derive(Debug, Args)]
pub struct DataDirArgs {
    /// The replica's data directory (holds `log/` and `meta`).
    #[arg(long, env = "DLEDGER_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// Arguments of `log verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// The group's members, `id=host:port,...` as `serve --peers` takes them
    /// (or just `id,id,...`), to print the vote as a member's name: the
    /// disk holds only a number derived from the name.
    #[arg(long, env = "DLEDGER_PEERS")]
    pub peers: Option<String>,
}

/// Arguments of `log dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// First index to list (default: the first index present).
    #[arg(long)]
    pub from: Option<Index>,
    /// How many entries to list.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
}

/// Exit code when damage was found.
const EXIT_DAMAGE: u8 = 1;
/// Exit code when the tool could not run.
const EXIT_ERROR: u8 = 2;
/// Bytes of payload shown per entry.
const PREVIEW_BYTES: usize = 40;

/// The member name behind the numeric id `vote`, found among `peers`.
fn vote_name(vote: NodeId, peers: Option<&str>) -> String {
    let Some(peers) = peers else {
        return format!("#{vote} (give --peers to name the member)");
    };
    peers
        .split(',')
        .map(|item| item.split_once('=').map_or(item, |(name, _)| name).trim())
        .find(|name| !name.is_empty() && members::node_id_of(name) == vote)
        .map_or_else(
            || format!("#{vote} (none of --peers)"),
            |name| name.to_string(),
        )
}

/// Runs a `log` subcommand.
pub fn run(command: LogCommand) -> ExitCode {
    match command {
        LogCommand::Verify(args) => verify(&args.data.data_dir, args.peers.as_deref()),
        LogCommand::Dump(args) => dump(&args.data.data_dir, args.from, args.count),
    }
}

fn verify(data_dir: &Path, peers: Option<&str>) -> ExitCode {
    let log_dir = log_dir(data_dir);
    let report = match verify::verify_log(&log_dir) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: cannot verify {}: {error}", log_dir.display());
            return ExitCode::from(EXIT_ERROR);
        }
    };
    println!("segments in {}:", log_dir.display());
    for segment in &report.segments {
        let index_file = match &segment.index_file {
            IndexFileStatus::NotExpected => "active".to_string(),
            IndexFileStatus::Matches => "index ok".to_string(),
            IndexFileStatus::NeedsRebuild(reason) => format!("index to rebuild on open: {reason}"),
            IndexFileStatus::Disagrees => "INDEX DISAGREES WITH DATA".to_string(),
        };
        println!(
            "  {}  entries {}..={}  {} bytes  {}",
            segment
                .path
                .file_name()
                .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
            segment.base_index,
            segment.last_index,
            segment.size_bytes,
            index_file
        );
    }
    println!(
        "first index {}  last index {}  last term {}",
        report.first_index, report.last_index, report.last_term
    );
    if let Some(torn) = &report.torn_tail {
        println!(
            "torn tail (crash in a write; cut on next open): {} at offset {}: {}",
            torn.path.display(),
            torn.offset,
            torn.reason
        );
    }
    let mut healthy = report.is_healthy();
    for problem in &report.damage {
        println!(
            "DAMAGE: {} at offset {}: {}",
            problem.path.display(),
            problem.offset,
            problem.reason
        );
    }
    let meta_path = meta_path(data_dir);
    if meta_path.exists() {
        match MetaStore::open(&meta_path) {
            Ok(meta) => {
                let state = meta.hard_state();
                let vote = state
                    .vote
                    .map_or_else(|| "none".to_string(), |vote| vote_name(vote, peers));
                println!("hard state: term {}  vote {vote}", state.term);
            }
            Err(error) => {
                println!("DAMAGE: {error}");
                healthy = false;
            }
        }
    }
    healthy &= verify_checkpoint(data_dir, report.first_index);
    if healthy {
        println!("ok");
        ExitCode::SUCCESS
    } else {
        println!("damaged");
        ExitCode::from(EXIT_DAMAGE)
    }
}

/// Checks the consumer checkpoint, if there is one: its CRC and layout, and
/// that it covers the entries deleted below the log's first index
/// (`first_index`). Prints what it found; false on damage.
fn verify_checkpoint(data_dir: &Path, first_index: Index) -> bool {
    let path = datadir::consumer_checkpoint_path(data_dir);
    match datadir::load_consumer_checkpoint(&path) {
        Ok(Some(state)) if state.applied_index() < first_index.saturating_sub(1) => {
            println!(
                "DAMAGE: consumer checkpoint {}: applied up to index {}, but the log starts at \
                 {first_index}: offsets committed in between are lost (serve refuses to start)",
                path.display(),
                state.applied_index()
            );
            false
        }
        Ok(Some(state)) => {
            println!(
                "consumer checkpoint: {} groups, applied up to index {}",
                state.len(),
                state.applied_index()
            );
            true
        }
        Ok(None) if first_index > 1 => {
            println!(
                "consumer checkpoint: none, and the log starts at {first_index}: offsets \
                 committed only below it are not known"
            );
            true
        }
        Ok(None) => true,
        Err(error) => {
            println!("DAMAGE: {error}");
            false
        }
    }
}

fn dump(data_dir: &Path, from: Option<Index>, count: usize) -> ExitCode {
    let log_dir = log_dir(data_dir);
    let options = LogOptions {
        read_only: true,
        ..LogOptions::default()
    };
    let log = match Log::open(&log_dir, options) {
        Ok(log) => log,
        Err(error) => {
            eprintln!("error: cannot open {}: {error}", log_dir.display());
            return exit_for(&error);
        }
    };
    match dump_entries(&log, from, count) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            exit_for(&error)
        }
    }
}

fn dump_entries(log: &Log, from: Option<Index>, count: usize) -> Result<(), StoreError> {
    let mut index = match from {
        Some(index) => index,
        None => log.first_index()?,
    };
    let last_index = log.last_index()?;
    let end = index.saturating_add(count as u64).min(last_index + 1);
    println!(
        "{:>12} {:>8} {:<13} {:>9}  payload",
        "index", "term", "kind", "bytes"
    );
    while index < end {
        let batch = log.entries(index, (end - index) as usize, 4 << 20)?;
        for entry in &batch {
            println!("{}", describe(entry));
        }
        index += batch.len() as u64;
    }
    Ok(())
}

fn describe(entry: &Entry) -> String {
    let kind = match entry.kind {
        EntryKind::Normal => "normal",
        EntryKind::NoOp => "no-op",
        EntryKind::Configuration => "configuration",
        EntryKind::ConsumerOffset => "offset-commit",
    };
    format!(
        "{:>12} {:>8} {:<13} {:>9}  {}",
        entry.index,
        entry.term,
        kind,
        entry.payload.len(),
        preview(&entry.payload)
    )
}

/// The first bytes of `payload`, printable ASCII as is, the rest escaped.
fn preview(payload: &[u8]) -> String {
    let mut text: String = payload
        .iter()
        .take(PREVIEW_BYTES)
        .flat_map(|byte| std::ascii::escape_default(*byte))
        .map(char::from)
        .collect();
    if payload.len() > PREVIEW_BYTES {
        text.push_str("...");
    }
    text
}

fn exit_for(error: &StoreError) -> ExitCode {
    match error {
        StoreError::Corrupt { .. } => ExitCode::from(EXIT_DAMAGE),
        _ => ExitCode::from(EXIT_ERROR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_escapes_and_shortens() {
        assert_eq!(preview(b"hi\n\x01"), "hi\\n\\x01");
        let long = vec![b'a'; PREVIEW_BYTES + 5];
        assert_eq!(preview(&long), format!("{}...", "a".repeat(PREVIEW_BYTES)));
    }
}
