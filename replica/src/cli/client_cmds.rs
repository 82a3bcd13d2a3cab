//! Client subcommands: `append`, `get`, `read` (optionally as a consumer
//! group), `offset get|commit`, `status`, `transfer-leader`. Writes, reads
//! and offsets use the binary protocol; status and transfer use HTTP.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};

use std::path::PathBuf;

use crate::admin_client::{AdminClient, ClientTls, Credentials};
use crate::api::{Role, Status};
use crate::consumers::{validate_group_name, OffsetCommit};
use crate::net::client::ClientConfig;
use crate::net::client::{Client, ClientError};
use crate::net::client_proto::{ClientEntry, RequestError};
use crate::net::tls::{Tls, TlsFiles};

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

    /// The replica group's name (checked at the handshake); not a
    /// consumer group.
    #[arg(long, env = "DLEDGER_GROUP", default_value = "local")]
    pub group: String,

    /// What to prove to a group that requires it.
    #[command(flatten)]
    pub credentials: ClientCredentials,
}

/// A client's credentials for a group with TLS or tokens (`serve
/// --tls-*`, `--token-file`): a client certificate, or a token.
#[derive(Clone, Debug, Default, Args)]
pub struct ClientCredentials {
    /// The group's CA certificate (PEM): turns on TLS (HTTPS for the HTTP
    /// commands).
    #[arg(long = "ca", env = "DLEDGER_CLIENT_CA")]
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM), from the group's CA.
    #[arg(long = "cert", env = "DLEDGER_CLIENT_CERT", requires_all = ["ca", "key"])]
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long = "key", env = "DLEDGER_CLIENT_KEY", requires_all = ["ca", "cert"])]
    pub key: Option<PathBuf>,
    /// A bearer token from the members' token file (HTTP `Authorization:
    /// Bearer`; on the binary port an `Authenticate` request).
    #[arg(long = "token", env = "DLEDGER_TOKEN")]
    pub token: Option<String>,
}

impl ClientCredentials {
    /// TLS for the binary port: needs the CA, the certificate and the key.
    pub fn binary_tls(&self) -> Result<Option<Tls>, String> {
        match (&self.ca, &self.cert, &self.key) {
            (None, _, _) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Tls::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })
            .map(Some)
            .map_err(|err| err.to_string()),
            (Some(_), _, _) => Err(
                "TLS on the binary port needs a client certificate (a token alone is for a \
                 plaintext port, or HTTP): give --cert and --key with --ca"
                    .into(),
            ),
        }
    }

    /// What an HTTP (admin) client sends.
    pub fn http(&self) -> Result<Credentials, String> {
        let tls = match &self.ca {
            None => None,
            Some(ca) => {
                let cert_and_key = match (&self.cert, &self.key) {
                    (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
                    _ => None,
                };
                Some(ClientTls::read(ca, cert_and_key)?)
            }
        };
        Ok(Credentials {
            tls,
            token: self.token.clone(),
        })
    }

    /// An admin client of `address` with these credentials.
    pub fn admin_client(&self, address: &str, timeout: Duration) -> Result<AdminClient, String> {
        AdminClient::with_credentials(address, timeout, &self.http()?)
            .map_err(|err| err.to_string())
    }
}

/// Where the group's members serve HTTP.
#[derive(Clone, Debug, Args)]
pub struct HttpTarget {
    /// Members' HTTP addresses, `host:port,...` (the HTTP ports, not the
    /// binary protocol ones the other subcommands take). `--http` is the
    /// old name of this flag.
    #[arg(
        long = "servers",
        alias = "http",
        env = "DLEDGER_HTTP",
        value_delimiter = ',',
        default_value = "127.0.0.1:18080,127.0.0.1:18081,127.0.0.1:18082"
    )]
    pub addresses: Vec<String>,

    /// What to prove to a group that requires it.
    #[command(flatten)]
    pub credentials: ClientCredentials,
}

/// Append entries: each argument is one entry; without arguments, each
/// line of standard input is one entry, appended as it arrives. Prints each
/// entry's index and term once committed, one at a time, in order. An empty argument (`''`) or line is appended as an empty
/// entry: a legitimate entry, shown by `get` and `read` as `(empty entry)`.
#[derive(Clone, Debug, Args)]
pub struct AppendArgs {
    /// Where to send them.
    #[command(flatten)]
    pub target: Target,
    /// The entries.
    pub entries: Vec<String>,
}

/// Print a committed entry: `index<TAB>term<TAB>payload`. A leader's no-op
/// (the first entry of each term) shows as `(no-op)`, an empty entry a
/// client wrote as `(empty entry)`.
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
/// keep waiting for new ones (like `tail -f`); with `--consumer`, resume
/// where a consumer group left off.
#[derive(Clone, Debug, Args)]
pub struct ReadArgs {
    /// Where to read.
    #[command(flatten)]
    pub target: Target,
    /// The first index (with `--consumer`: only when the group has no
    /// committed offset yet).
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Read as this consumer group: start at its committed offset (read
    /// from the leader), and after each batch is written to standard output
    /// commit the index after the last entry written.
    ///
    /// At-least-once: entries written after the last commit are printed
    /// again by the next `read --consumer` when this one dies before
    /// committing them (a crash, Ctrl-C, a lost connection); none is
    /// skipped. "Written" means handed to standard output: a pipe's reader
    /// that exits early (`| head`) may not have seen what was committed, so
    /// bound the read with `--count` instead. Each commit is conditional on
    /// the offset this reader last saw, so two readers of one group fail
    /// with a conflict rather than both go on. Offset commits are entries
    /// too, shown as `(offset commit: ...)`; a batch of only this group's
    /// own commits is not committed past, so a resumed read may start by
    /// printing the last one again. The name is 1 to 128 characters of
    /// A-Z a-z 0-9 . _ -.
    #[arg(long, value_name = "CONSUMER_GROUP")]
    pub consumer: Option<String>,
    /// Keep waiting for new entries.
    #[arg(long)]
    pub follow: bool,
    /// Stop after this many entries (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Write only the payloads' bytes, as they are, one after the other
    /// (no index, term or separator; no-ops add nothing): for binary data.
    #[arg(long)]
    pub raw: bool,
}

/// Consumer groups' offsets: the index each group reads next.
#[derive(Clone, Debug, Subcommand)]
pub enum OffsetCommand {
    /// Print a consumer group's committed offset (the index it reads next).
    /// Fails when the group has none yet.
    Get(OffsetGetArgs),
    /// Commit a consumer group's offset through the log; prints the offset
    /// stored. With `--expected`, only if the stored offset is that one
    /// (0: only if the group has none yet); otherwise fails with the
    /// current offset and changes nothing.
    Commit(OffsetCommitArgs),
}

/// `offset get`.
#[derive(Clone, Debug, Args)]
pub struct OffsetGetArgs {
    /// Where to ask.
    #[command(flatten)]
    pub target: Target,
    /// The consumer group (1 to 128 characters of A-Z a-z 0-9 . _ -).
    #[arg(value_name = "CONSUMER_GROUP")]
    pub consumer_group: String,
    /// Answer from the member connected to, possibly behind the leader,
    /// instead of from the leader after it confirmed its leadership.
    #[arg(long)]
    pub local: bool,
}

/// `offset commit`.
#[derive(Clone, Debug, Args)]
pub struct OffsetCommitArgs {
    /// Where to send it.
    #[command(flatten)]
    pub target: Target,
    /// The consumer group (1 to 128 characters of A-Z a-z 0-9 . _ -).
    #[arg(value_name = "CONSUMER_GROUP")]
    pub consumer_group: String,
    /// The index the group reads next: at least the first retained index,
    /// at most the commit index + 1.
    pub offset: u64,
    /// Only if the stored offset is this one (0: only if the group has none
    /// yet).
    #[arg(long)]
    pub expected: Option<u64>,
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

/// The exit code of a command, printing its error (prefixed with the
/// command's name) to standard error.
pub(super) fn finish(command: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dledger-replica {command}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// How long one member may take to accept a TCP connection before it
/// counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// After this long, a wait for the group tells the user what it waits for.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// How long a connection may take before the members are probed: a running
/// group answers well within it, so probes (which a member logs as a
/// handshake cut short) are only made when something is wrong.
const PROBE_AFTER: Duration = Duration::from_millis(300);

/// Connects to the group. When no member even accepts a TCP connection
/// this fails at once; when some do (a group electing a leader), the
/// client's retries run, with a progress line past one second.
async fn connect(target: &Target) -> Result<Client, String> {
    let listing = target.servers.join(", ");
    let mut config = ClientConfig::new(target.group.clone());
    config.tls = target.credentials.binary_tls()?;
    config.token = target.credentials.token.clone();
    let connecting = Client::connect_with(target.servers.clone(), config);
    tokio::pin!(connecting);
    tokio::select! {
        connected = &mut connecting => {
            return connected.map_err(|err| format!("connecting to {listing}: {err}"));
        }
        () = tokio::time::sleep(PROBE_AFTER) => {}
    }
    let probes = target.servers.iter().map(|address| async move {
        match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(format!("{address}: {err}")),
            Err(_) => Err(format!(
                "{address}: no answer in {} ms",
                PROBE_TIMEOUT.as_millis()
            )),
        }
    });
    let results = futures_util::future::join_all(probes).await;
    if results.iter().all(Result::is_err) {
        let reasons: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        return Err(format!(
            "no member reachable at {listing} ({}); is the group running? \
             (`dledger-replica local-cluster` starts one on loopback)",
            reasons.join("; ")
        ));
    }
    with_progress(&format!("a leader among {listing}"), connecting)
        .await
        .map_err(|err| format!("connecting to {listing}: {err}"))
}

/// Awaits `work`, printing to standard error what it waits for once it
/// takes longer than [`PROGRESS_AFTER`], and again every few seconds.
async fn with_progress<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    tokio::pin!(work);
    let mut next = PROGRESS_AFTER;
    loop {
        tokio::select! {
            done = &mut work => {
                if started.elapsed() >= PROGRESS_AFTER {
                    eprintln!("... done after {:.1} s", started.elapsed().as_secs_f64());
                }
                return done;
            }
            () = tokio::time::sleep(next.saturating_sub(started.elapsed())) => {
                eprintln!("waiting for {what} ({} s) ...", started.elapsed().as_secs());
                next += Duration::from_secs(3);
            }
        }
    }
}

/// A write that failed because the reader went away (`| head`) ends the
/// command quietly; any other write error is reported.
pub(super) fn written(result: std::io::Result<()>) -> Result<bool, String> {
    match result {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(format!("writing: {err}")),
    }
}

/// What an entry is, as far as a client can see: the binary protocol does
/// not carry the kind, but a leader's no-op is always the first entry of
/// its term, and nothing else is. An offset commit is told by its payload
/// (a client payload that is byte for byte a well-formed commit shows as
/// one too; `--raw` gives the bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shown {
    Payload,
    NoOp,
    Empty,
    OffsetCommit,
}

fn shown(entry: &ClientEntry, previous_term: Option<u64>) -> Shown {
    if !entry.payload.is_empty() {
        return match OffsetCommit::decode(&entry.payload) {
            Ok(_) => Shown::OffsetCommit,
            Err(_) => Shown::Payload,
        };
    }
    let first_of_term = entry.index == 1 || previous_term.is_some_and(|term| term < entry.term);
    if first_of_term {
        Shown::NoOp
    } else {
        Shown::Empty
    }
}

/// The term of the entry before `index`, when it can still be read.
async fn term_before(client: &Client, index: u64) -> Option<u64> {
    if index <= 1 {
        return None;
    }
    client.get(index - 1).await.ok().map(|entry| entry.term)
}

/// Runs `append`.
pub fn append(args: AppendArgs) -> ExitCode {
    let result = runtime().and_then(|runtime| {
        runtime.block_on(async {
            let client = connect(&args.target).await?;
            let mut entries = if args.entries.is_empty() {
                stdin_lines()
            } else {
                let (lines, receiver) = tokio::sync::mpsc::unbounded_channel();
                for entry in args.entries.clone() {
                    // The receiver is alive: it is right here.
                    let _ = lines.send(Ok(entry));
                }
                receiver
            };
            let mut out = std::io::stdout().lock();
            while let Some(entry) = entries.recv().await {
                let (index, term) =
                    with_progress("the group to commit", client.append(Bytes::from(entry?)))
                        .await
                        .map_err(|err| err.to_string())?;
                if !written(writeln!(out, "{index}\t{term}"))? {
                    break;
                }
            }
            Ok(())
        })
    });
    finish("append", result)
}

/// Standard input's lines as they arrive, so `producer | dledger-replica
/// append` commits each line while the producer runs instead of after it
/// ends. A thread reads, because a blocking read on the one runtime thread
/// would stall the client's connection.
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<Result<String, String>> {
    let (lines, receiver) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|err| format!("reading standard input: {err}"));
            let failed = line.is_err();
            if lines.send(line).is_err() || failed {
                break;
            }
        }
    });
    receiver
}

fn print_entry(out: &mut impl Write, entry: &ClientEntry, kind: Shown) -> std::io::Result<()> {
    let payload = match kind {
        Shown::Payload => String::from_utf8_lossy(&entry.payload),
        Shown::NoOp => "(no-op)".into(),
        Shown::Empty => "(empty entry)".into(),
        Shown::OffsetCommit => match OffsetCommit::decode(&entry.payload) {
            Ok(commit) => format!(
                "(offset commit: consumer group {}, offset {})",
                commit.group, commit.offset
            )
            .into(),
            Err(_) => String::from_utf8_lossy(&entry.payload),
        },
    };
    writeln!(out, "{}\t{}\t{payload}", entry.index, entry.term)
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
            let kind = if entry.payload.is_empty() {
                shown(&entry, term_before(&client, entry.index).await)
            } else {
                shown(&entry, None)
            };
            let mut out = std::io::stdout().lock();
            if args.raw {
                if kind == Shown::NoOp {
                    eprintln!(
                        "entry {} is a no-op (a leader's first entry of its term)",
                        entry.index
                    );
                }
                written(out.write_all(&entry.payload).and_then(|()| out.flush()))?;
            } else {
                written(print_entry(&mut out, &entry, kind).and_then(|()| out.flush()))?;
            }
            Ok(())
        })
    });
    finish("get", result)
}

/// Runs `read`.
pub fn read(args: ReadArgs) -> ExitCode {
    let result = runtime().and_then(|runtime| {
        runtime.block_on(async {
            let consumer = match &args.consumer {
                Some(group) => Some(checked_group(group)?),
                None => None,
            };
            let client = connect(&args.target).await?;
            let mut cursor = match consumer {
                Some(group) => Cursor::resume(&client, group, args.from).await?,
                None => Cursor::plain(args.from),
            };
            let mut previous_term = term_before(&client, cursor.next).await;
            let mut printed = 0u64;
            let wait_ms = if args.follow { 10_000 } else { 0 };
            loop {
                let batch = client
                    .read(cursor.next, 1 << 20, wait_ms)
                    .await
                    .map_err(|err| err.to_string())?;
                let mut out = std::io::stdout().lock();
                let mut reached_count = false;
                let mut written_in_batch = Vec::new();
                for entry in &batch.entries {
                    let kind = shown(entry, previous_term);
                    let result = if args.raw {
                        out.write_all(&entry.payload)
                    } else {
                        print_entry(&mut out, entry, kind)
                    };
                    // The reader went away: what was written may not have
                    // been read, so nothing more is committed.
                    if !written(result)? {
                        return Ok(());
                    }
                    previous_term = Some(entry.term);
                    cursor.next = entry.index + 1;
                    written_in_batch.push(entry);
                    printed += 1;
                    if args.count > 0 && printed >= args.count {
                        reached_count = true;
                        break;
                    }
                }
                // Shown before the next long poll (and before the commit:
                // only what reached standard output is committed).
                if !written(out.flush())? {
                    return Ok(());
                }
                drop(out);
                cursor.commit(&client, &written_in_batch).await?;
                if reached_count || (batch.entries.is_empty() && !args.follow) {
                    return Ok(());
                }
            }
        })
    });
    finish("read", result)
}

/// `group`, or why it is not a valid consumer group name (checked here
/// too, so a typo is told before any connection).
fn checked_group(group: &str) -> Result<&str, String> {
    validate_group_name(group)
        .map(|()| group)
        .map_err(|err| format!("consumer group: {err}"))
}

/// Where `read` is, and for `read --consumer` the group and the offset
/// this reader last saw committed.
struct Cursor<'a> {
    /// The index read next.
    next: u64,
    /// The consumer group, when reading as one.
    group: Option<&'a str>,
    /// The group's offset as this reader last saw it; 0: none yet.
    committed: u64,
}

impl<'a> Cursor<'a> {
    fn plain(from: u64) -> Cursor<'a> {
        Cursor {
            next: from.max(1),
            group: None,
            committed: 0,
        }
    }

    /// Starts at `group`'s committed offset, read from the leader (so a
    /// commit acknowledged to an earlier reader is seen), or at `from` when
    /// the group has none yet.
    async fn resume(client: &Client, group: &'a str, from: u64) -> Result<Cursor<'a>, String> {
        let found = client
            .consumer_offset(group, true)
            .await
            .map_err(|err| format!("reading the offset of consumer group {group:?}: {err}"))?;
        let committed = found.map_or(0, |found| found.offset);
        let next = if committed == 0 {
            from.max(1)
        } else {
            committed
        };
        Ok(Cursor {
            next,
            group: Some(group),
            committed,
        })
    }

    /// Commits `self.next` after `written` (the entries of one batch that
    /// reached standard output), conditionally on the offset last seen.
    /// A batch of nothing but this group's own offset commits is not
    /// committed: each commit is itself an entry, so committing past it
    /// would append another for the next batch, without end.
    async fn commit(&mut self, client: &Client, written: &[&ClientEntry]) -> Result<(), String> {
        let Some(group) = self.group else {
            return Ok(());
        };
        let only_own_commits = written
            .iter()
            .all(|entry| is_offset_commit_of(entry, group));
        if only_own_commits || self.next == self.committed {
            return Ok(());
        }
        let expected = self.committed;
        client
            .commit_offset(group, self.next, Some(expected))
            .await
            .map_err(|err| commit_error(group, self.next, expected, err))?;
        self.committed = self.next;
        Ok(())
    }
}

/// Whether `entry` looks like an offset commit of consumer `group`. The
/// binary protocol does not carry the entry's kind; a client payload that
/// happens to be a well-formed commit of this very group is only committed
/// past with the next batch (printed once more after a crash, never lost).
fn is_offset_commit_of(entry: &ClientEntry, group: &str) -> bool {
    OffsetCommit::decode(&entry.payload).is_ok_and(|commit| commit.group == group)
}

/// A failed offset commit in words: a lost condition names the offset the
/// group has instead.
fn commit_error(group: &str, offset: u64, expected: u64, err: ClientError) -> String {
    match err {
        ClientError::Request(RequestError::Conflict { current, .. }) => {
            let now = match current {
                Some(current) => format!("is at offset {current}"),
                None => "has no offset".to_string(),
            };
            let wanted = if expected == 0 {
                "to have no offset yet".to_string()
            } else {
                format!("to be at offset {expected}")
            };
            format!(
                "conflict: consumer group {group:?} {now}, expected {wanted}; \
                 offset {offset} was not committed (another reader of the group?)"
            )
        }
        err => format!("committing offset {offset} of consumer group {group:?}: {err}"),
    }
}

/// Runs `offset get` and `offset commit`.
pub fn offset(command: OffsetCommand) -> ExitCode {
    let (name, result) = match command {
        OffsetCommand::Get(args) => ("offset get", run_async(offset_get(args))),
        OffsetCommand::Commit(args) => ("offset commit", run_async(offset_commit(args))),
    };
    finish(name, result)
}

fn run_async(work: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    runtime().and_then(|runtime| runtime.block_on(work))
}

async fn offset_get(args: OffsetGetArgs) -> Result<(), String> {
    let group = checked_group(&args.consumer_group)?;
    let client = connect(&args.target).await?;
    match client.consumer_offset(group, !args.local).await {
        Ok(Some(found)) => {
            written(writeln!(std::io::stdout(), "{}", found.offset))?;
            Ok(())
        }
        Ok(None) => Err(format!(
            "consumer group {group:?} has no committed offset{}",
            if args.local { " on this member" } else { "" }
        )),
        Err(err) => Err(err.to_string()),
    }
}

async fn offset_commit(args: OffsetCommitArgs) -> Result<(), String> {
    let group = checked_group(&args.consumer_group)?;
    let client = connect(&args.target).await?;
    let stored = with_progress(
        "the group to commit",
        client.commit_offset(group, args.offset, args.expected),
    )
    .await
    .map_err(|err| match args.expected {
        Some(expected) => commit_error(group, args.offset, expected, err),
        None => format!(
            "committing offset {} of consumer group {group:?}: {err}",
            args.offset
        ),
    })?;
    written(writeln!(std::io::stdout(), "{stored}"))?;
    Ok(())
}

/// Each address with its `/status`, or why it did not answer.
pub(super) fn statuses(target: &HttpTarget) -> Vec<(String, Result<Status, String>)> {
    target
        .addresses
        .iter()
        .map(|address| {
            let status = target
                .credentials
                .admin_client(address, Duration::from_secs(2))
                .and_then(|client| client.status().map_err(|err| err.to_string()));
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
        Some(address) => args
            .target
            .credentials
            .admin_client(&address, Duration::from_secs(10))
            .and_then(|client| {
                client
                    .transfer_leadership(args.to.as_deref())
                    .map_err(|err| err.to_string())
            })
            .map(|transferred| {
                println!(
                    "{} leads now (term {})",
                    transferred.leader_id, transferred.term
                );
            }),
    };
    finish("transfer-leader", result)
}
