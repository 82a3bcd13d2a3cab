//! The `dledger-replica serve` process: wires the store, the consensus core
//! and the network together on tokio.
//!
//! - [`members`]: the `--peers` list and numeric ids.
//! - [`directory`]: names and addresses of the configuration in force, and
//!   the file that keeps the configuration records.
//! - [`reconfigure`]: an admin's membership change into the next
//!   configuration.
//! - [`identity`]: whose data directory it is, and the incarnation a
//!   member that joins with an empty one draws.
//! - [`raft_loop`]: the thread that drives the core and carries out Readys;
//!   a directory module, one file per job of the loop.
//! - [`handle`]: the [`Engine`](crate::engine::Engine) the front ends call.
//! - [`peers`]: outbound links to the other members.
//! - [`client_api`]: answers binary-protocol client requests.
//! - [`disk_log`]: the core's view of the on-disk log.
//! - [`retention`]: which old segments may be deleted.
//! - [`role_log`]: INFO lines for elections, role changes and lost peers.

pub mod client_api;
pub mod directory;
pub mod disk_log;
pub mod handle;
pub mod identity;
pub mod input_queue;
pub mod members;
pub mod peers;
pub mod raft_loop;
pub mod reconfigure;
pub mod retention;
pub mod role_log;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::consumers::{ConsumerState, PendingCommits};
use crate::core::{self, Message, Node};
use crate::entry::{Index, NodeId};
use crate::metrics::Metrics;
use crate::net::handshake::KnownPeers;
use crate::net::listener::{Inbound, Listener, ListenerConfig};
use crate::net::outbound::PeerLinkConfig;
use crate::net::tls::Tls;
use crate::store::{
    FlushMode, GroupCommit, GroupCommitOptions, Log, LogOptions, MetaStore, StoreError,
    LOG_DIR_NAME, META_FILE_NAME,
};

use self::disk_log::DiskLog;
use self::handle::{HandleParts, ReplicaHandle};
use self::input_queue::{input_queue, InputLimits, InputSender, Refused};
use self::members::Member;
use self::raft_loop::{Input, RaftLoop, RaftLoopParts, Snapshot};

/// Everything `serve` needs, already validated by the CLI.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The group name; peers of another group are refused.
    pub group: String,
    /// The group's id (empty: none given; the data directory's, if any,
    /// is used): members of another group of the same name are not talked
    /// to.
    pub group_id: String,
    /// This member's name.
    pub id: String,
    /// The `--peers` list: all members of a new group, this one included.
    /// Once the log holds a configuration, that one is in force instead.
    pub members: Vec<Member>,
    /// Whether a member with an empty data directory bootstraps a new group
    /// from `members` or waits to be added to an existing one.
    pub initial_state: InitialState,
    /// Where the log and the hard state live.
    pub data_dir: PathBuf,
    /// Binary protocol listen address.
    pub listen: String,
    /// HTTP listen address.
    pub http_listen: String,
    /// The core's tick period.
    pub tick_ms: u64,
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// Minimum election timeout (randomized up to twice this).
    pub election_timeout_ms: u64,
    /// Durable (fdatasync before acknowledging) or the weaker page-cache mode.
    pub flush_mode: FlushMode,
    /// Size of a log segment file.
    pub segment_bytes: u64,
    /// Largest entry payload accepted.
    pub max_entry_bytes: usize,
    /// The member that should lead when it is caught up.
    pub preferred_leader: Option<String>,
    /// Readiness bound: committed entries a member may miss on disk.
    pub ready_max_lag: u64,
    /// On SIGTERM, how long the leader tries to hand over before stopping.
    pub shutdown_transfer_timeout_ms: u64,
    /// What to delete from the log.
    pub retention: retention::RetentionPolicy,
    /// TLS and credentials.
    pub security: Security,
}

/// TLS and who may do what (see `crate::auth`).
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// The certificate, key and CA; `None`: plaintext.
    pub tls: Option<crate::net::tls::TlsFiles>,
    /// How often the TLS files and the token file are read again.
    pub tls_reload_ms: u64,
    /// Bearer tokens and their rights.
    pub token_file: Option<PathBuf>,
    /// Certificate names that get the admin right.
    pub admin_names: Vec<String>,
    /// `/metrics` answers without a credential.
    pub metrics_open: bool,
}

impl Security {
    /// Whether callers need a credential (TLS or a token file is set).
    pub fn requires_credentials(&self) -> bool {
        self.tls.is_some() || self.token_file.is_some()
    }
}

/// What a member with no configuration of its own does at start
/// (etcd's `--initial-cluster-state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialState {
    /// Bootstrap a new group: the `--peers` members are its voters.
    New,
    /// Join an existing group: wait, as a non-voter, until the leader adds
    /// this member (`POST /admin/members`).
    Existing,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be opened.
    #[error("opening the data directory {dir}: {source}")]
    Store {
        /// The directory.
        dir: PathBuf,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The consensus core refused the configuration or the saved state.
    #[error("starting consensus: {0}")]
    Core(#[from] core::CoreError),
    /// A listen address could not be bound.
    #[error("listening on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files or the token file are unusable.
    #[error("{0}")]
    Security(String),
    /// The consensus loop stopped on a fatal error (storage failure, ...).
    #[error("the replica stopped: {0}")]
    Fatal(String),
}

impl ServerConfig {
    /// The core's configuration for this member, known to the core as
    /// `self_id`; `bootstrap` says whether the `--peers` members are the
    /// voters of a new group (else it waits to be added).
    fn core_config(&self, self_id: NodeId, bootstrap: bool) -> core::Config {
        let ticks = |ms: u64| ms.div_ceil(self.tick_ms.max(1)).max(1);
        let voters = if bootstrap {
            self.members.iter().map(|m| m.id).collect()
        } else {
            Vec::new()
        };
        let mut config = core::Config::new(self_id, voters);
        config.tick_ms = self.tick_ms;
        config.heartbeat_ticks = ticks(self.heartbeat_ms);
        config.election_ticks = ticks(self.election_timeout_ms);
        config.preferred_leader = self.preferred_leader.as_deref().map(members::node_id_of);
        config
    }
}

/// A running server's parts that outlive `start`.
struct Running {
    handle: Arc<ReplicaHandle>,
    inputs: InputSender,
    raft_thread: std::thread::JoinHandle<Result<(), String>>,
    listener: Listener,
}

/// Runs the replica until `shutdown` resolves (then hands leadership over
/// if it leads, and stops) or a fatal error.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let transport = Transport::new(&config.security)?;
    let running = start(&config, &transport).await?;
    let reloader = transport.spawn_reloader(config.security.tls_reload_ms);
    let http_listener = tokio::net::TcpListener::bind(&config.http_listen)
        .await
        .map_err(|source| ServerError::Listen {
            address: config.http_listen.clone(),
            source,
        })?;
    tracing::info!(
        group = %config.group,
        id = %config.id,
        listen = %running.listener.local_addr(),
        http = %config.http_listen,
        "replica started"
    );
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_tls = transport.tls.clone();
    // One client bytes budget over both front ends.
    let router = crate::http::router_with_limits(
        running.handle.clone(),
        crate::http::Limits {
            client_bytes: running.listener.client_bytes(),
            auth: transport.auth.clone(),
            serves_https: http_tls.is_some(),
            ..crate::http::Limits::default()
        },
    );
    let http_task = tokio::spawn(async move {
        let stopped = async {
            let _ = http_stopped.await;
        };
        if let Err(error) = crate::http_serve::serve(http_listener, router, http_tls, stopped).await
        {
            tracing::error!(%error, "the HTTP server stopped");
        }
    });

    // Stop on the signal, or when the raft loop dies on its own.
    let mut stopped = running.handle.stopped_watch();
    tokio::select! {
        () = shutdown => {
            tracing::info!("shutdown requested");
            hand_over(&running.handle, config.shutdown_transfer_timeout_ms).await;
        }
        _ = stopped.wait_for(|snapshot| snapshot.stopped.is_some()) => {}
    }
    let _ = running.inputs.send(Input::Shutdown);
    let raft_result = tokio::task::spawn_blocking(move || running.raft_thread.join())
        .await
        .map_err(|err| ServerError::Fatal(format!("joining the raft loop: {err}")))?
        .map_err(|_| ServerError::Fatal("the raft loop panicked".into()))?;
    running.listener.shutdown().await;
    let _ = stop_http.send(());
    let _ = http_task.await;
    reloader.cancel();
    raft_result.map_err(ServerError::Fatal)
}

/// TLS and credentials as in force: read at start, read again every
/// `--tls-reload-ms` while the member runs.
#[derive(Clone, Debug)]
pub struct Transport {
    /// The TLS configuration; `None`: plaintext.
    pub tls: Option<Tls>,
    /// Who may do what.
    pub auth: Auth,
}

impl Transport {
    /// Reads the files `security` names.
    pub fn new(security: &Security) -> Result<Transport, ServerError> {
        let tls = security
            .tls
            .clone()
            .map(Tls::load)
            .transpose()
            .map_err(|error| ServerError::Security(error.to_string()))?;
        let auth = if security.requires_credentials() {
            Auth::required(
                security.admin_names.clone(),
                security.token_file.clone(),
                security.metrics_open,
            )
            .map_err(|error| ServerError::Security(error.to_string()))?
        } else {
            Auth::open()
        };
        Ok(Transport { tls, auth })
    }

    /// Plaintext, everything open.
    pub fn plaintext() -> Transport {
        Transport {
            tls: None,
            auth: Auth::open(),
        }
    }

    /// Reads the TLS files and the token file every `period_ms` until the
    /// returned token is cancelled; a file that cannot be used is logged
    /// and the previous one stays.
    fn spawn_reloader(&self, period_ms: u64) -> CancellationToken {
        let cancel = CancellationToken::new();
        let transport = self.clone();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(period_ms.max(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                // Reading files blocks; off the runtime's threads, which
                // carry the heartbeats.
                let reloading = transport.clone();
                if let Err(error) = tokio::task::spawn_blocking(move || reloading.reload()).await {
                    tracing::warn!(%error, "the TLS and token file reload task failed");
                }
            }
        });
        cancel
    }

    /// Reads the TLS files and the token file again (blocking) and logs
    /// what changed and what cannot be used.
    fn reload(&self) {
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(true) => tracing::info!(
                    cert = %tls.files().cert.display(),
                    "TLS certificate, key or CA changed; new connections use them"
                ),
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    %error,
                    "TLS files changed but cannot be used; the previous ones stay"
                ),
            }
        }
        match self.auth.reload_tokens() {
            Ok(true) => tracing::info!("the token file changed; its tokens are in use"),
            Ok(false) => {}
            Err(error) => tracing::warn!(
                %error,
                "the token file cannot be used; the tokens read before stay"
            ),
        }
    }
}

/// Hands leadership to the most caught-up follower before stopping, so the
/// group does not wait out an election timeout.
async fn hand_over(handle: &ReplicaHandle, timeout_ms: u64) {
    if !handle.is_leader() {
        return;
    }
    let timeout = Duration::from_millis(timeout_ms);
    match tokio::time::timeout(timeout, handle.transfer(None)).await {
        Ok(Ok(transferred)) => tracing::info!(
            new_leader = %transferred.leader_id,
            term = transferred.term,
            "handed leadership over before stopping"
        ),
        Ok(Err(err)) => tracing::warn!("could not hand leadership over: {err}"),
        Err(_) => tracing::warn!("no new leader within {timeout_ms} ms; stopping anyway"),
    }
}

async fn start(config: &ServerConfig, transport: &Transport) -> Result<Running, ServerError> {
    let store_error = |source| ServerError::Store {
        dir: config.data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|err| {
        store_error(StoreError::Io {
            path: config.data_dir.clone(),
            source: err,
        })
    })?;
    let log_options = LogOptions {
        segment_bytes: config.segment_bytes,
        start_writeback: config.flush_mode == FlushMode::PageCache,
        ..LogOptions::default()
    };
    let log =
        Arc::new(Log::open(&config.data_dir.join(LOG_DIR_NAME), log_options).map_err(store_error)?);
    let meta = MetaStore::open(&config.data_dir.join(META_FILE_NAME)).map_err(store_error)?;
    let storage = Arc::new(
        GroupCommit::start(
            log.clone(),
            GroupCommitOptions {
                flush_mode: config.flush_mode,
                ..GroupCommitOptions::default()
            },
        )
        .map_err(store_error)?,
    );
    let scan_log = log.clone();
    let checkpoint_path = crate::datadir::consumer_checkpoint_path(&config.data_dir);
    let scan_checkpoint = checkpoint_path.clone();
    let rebuilt =
        tokio::task::spawn_blocking(move || rebuild_consumers(&scan_log, &scan_checkpoint))
            .await
            .map_err(|err| ServerError::Fatal(format!("rebuilding consumer offsets: {err}")))?
            .map_err(store_error)?;
    let consumers = Arc::new(RwLock::new(rebuilt.state));
    let configuration_path = directory::configuration_path(&config.data_dir);
    let mut records = directory::load_records(&configuration_path).map_err(store_error)?;
    let holds_state = !records.is_empty()
        || log.last_index().map_err(store_error)? > 0
        || meta.hard_state() != crate::entry::HardState::default();
    let join = config.initial_state == InitialState::Existing;
    let identity = identity::claim(
        &config.data_dir,
        &config.group,
        &config.id,
        &config.group_id,
        holds_state,
        join,
    )
    .map_err(|err| ServerError::Fatal(err.to_string()))?;
    let peer_name = identity.peer_name();
    let self_id = members::node_id_of(&peer_name);
    // Only incarnation 0 is in the bootstrap list: a member that joined
    // never bootstraps, whatever --initial-state says later. Incarnation 0
    // with state and `existing` is a bootstrap member restarted after its
    // group formed (the operator then says `existing` to every pod); without
    // configuration records its directory predates membership changes, and
    // `--peers` is its configuration as it always was.
    let bootstrap = identity.incarnation == 0 && (!join || holds_state);
    if identity.incarnation != 0 {
        tracing::info!(
            incarnation = format_args!("{:x}", identity.incarnation),
            peer_name = %peer_name,
            "this member joins as a new incarnation and waits to be added"
        );
    }
    let seed = self_id ^ std::process::id() as u64;
    let mut node = Node::new(
        config.core_config(self_id, bootstrap),
        DiskLog::new(log.clone(), checkpoint_path.clone()),
        meta.hard_state(),
        seed,
    )?;
    let mut member_directory = directory::Directory::new(config.members.clone());
    if records.is_empty() && bootstrap {
        // A new group, or a data directory from a build before membership
        // changes: the `--peers` list is the bootstrap configuration, kept
        // before this member can vote, so a later `--peers` cannot change it.
        records.push(member_directory.bootstrap_record());
        directory::save_records(&configuration_path, &records).map_err(store_error)?;
    } else if !records.is_empty() {
        let in_force = directory::Directory::names(&records);
        let mut flags: Vec<String> = config.members.iter().map(|m| m.name.clone()).collect();
        flags.sort();
        if in_force != flags {
            tracing::warn!(
                ?in_force,
                peers_flag = ?flags,
                "--peers differs from the configuration in the data directory, which is in \
                 force (--peers only bootstraps a new group)"
            );
        }
    }
    node.restore_configurations(records)?;
    member_directory.update(node.configurations());
    let link_targets = member_directory.link_targets();
    let known_peers = KnownPeers::only(link_targets.iter().map(|member| member.name.clone()));

    let metrics = Arc::new(Metrics::default());
    let mut peer_config = PeerLinkConfig::new(config.group.clone(), peer_name.clone());
    peer_config.group_id = identity.group_id.clone();
    peer_config.tls = transport.tls.clone();
    let peers = Arc::new(peers::Peers::start(
        self_id,
        &link_targets,
        &peer_config,
        metrics.clone(),
    ));
    let (inputs, inputs_rx) = input_queue(InputLimits::default());
    let (snapshot_tx, snapshot_rx) = watch::channel(Snapshot::default());
    let raft_loop = RaftLoop::new(RaftLoopParts {
        node,
        meta,
        storage,
        peers,
        inputs: inputs_rx,
        loopback: inputs.clone(),
        snapshot: snapshot_tx,
        metrics: metrics.clone(),
        tick: Duration::from_millis(config.tick_ms),
        directory: member_directory,
        configuration_path,
        known_peers: known_peers.clone(),
        retention: config.retention,
        consumers: consumers.clone(),
        consumer_pending: rebuilt.pending,
        checkpoint_path,
        checkpoint_applied_index: rebuilt.checkpoint,
    });
    let raft_thread = std::thread::Builder::new()
        .name("raft-loop".into())
        .spawn(move || raft_loop.run())
        .map_err(|err| ServerError::Fatal(format!("starting the raft loop thread: {err}")))?;

    let handle = Arc::new(ReplicaHandle::new(HandleParts {
        group: config.group.clone(),
        self_name: config.id.clone(),
        incarnation: identity.incarnation,
        group_id: identity.group_id.clone(),
        members: config.members.clone(),
        inputs: inputs.clone(),
        snapshot: snapshot_rx,
        log,
        consumers,
        metrics: metrics.clone(),
        max_entry_bytes: config.max_entry_bytes,
        ready_max_lag: config.ready_max_lag,
        tls: transport.tls.clone(),
    }));

    let mut listener_config = ListenerConfig::new(config.group.clone(), peer_name);
    listener_config.known_peers = known_peers;
    listener_config.group_id = identity.group_id.clone();
    listener_config.tls = transport.tls.clone();
    listener_config.auth = transport.auth.clone();
    listener_config.unauthenticated_counter =
        Some(metrics.connections_unauthenticated_total.clone());
    let (listener, inbound) = Listener::bind::<Message>(&config.listen, listener_config)
        .await
        .map_err(|source| ServerError::Listen {
            address: config.listen.clone(),
            source,
        })?;
    tokio::spawn(dispatch(
        inbound,
        inputs.clone(),
        handle.clone(),
        metrics,
        self_id,
    ));
    Ok(Running {
        handle,
        inputs,
        raft_thread,
        listener,
    })
}

/// Bytes of entries one read of the start-up scan takes at most.
const SCAN_BATCH_BYTES: u64 = 4 << 20;

/// Entries one read of the start-up scan takes at most.
const SCAN_BATCH_ENTRIES: usize = 16_384;

/// The consumer state a member starts with.
#[derive(Debug)]
struct Rebuilt {
    /// The offsets, applied up to the checkpoint's index (or the first
    /// retained index - 1 without one).
    state: ConsumerState,
    /// The offset commits of the log above that, not known committed.
    pending: PendingCommits,
    /// The applied index of the checkpoint loaded, if there was one.
    checkpoint: Option<Index>,
}

/// The consumer state at start, before the raft loop runs: the checkpoint
/// (`<data-dir>/consumer-offsets`, written before retention deletes
/// segments) if there is one, then one sequential read of the retained log
/// *above* the checkpoint's applied index (entries at or below it are in
/// the checkpoint already). The store keeps no index by kind, so payloads
/// are read and CRC-checked along with the headers; only offset commits are
/// kept, decoded.
///
/// Nothing on disk above the checkpoint is known committed until a leader
/// says so (the commit index is not persisted; the core starts at
/// `first_index - 1`), so every offset commit found waits in the pending
/// map and applies when the commit index covers it, exactly as one appended
/// while running; a tail the new leader replaces is dropped with the
/// truncation. What the checkpoint holds was applied, hence committed.
///
/// Refused, naming the file: a damaged checkpoint, and one applied below
/// `first_index - 1` (the offsets committed in between would be lost;
/// the checkpoint is always written before deleting, so this takes an
/// operator's hand). Without a checkpoint and with a log that does not
/// start at 1 (a data directory from a build before checkpoints), the state
/// starts empty at `first_index - 1` as it did then, with a warning.
fn rebuild_consumers(log: &Log, checkpoint_path: &Path) -> Result<Rebuilt, StoreError> {
    let started = Instant::now();
    let first = log.first_index()?;
    let last = log.last_index()?;
    let loaded = crate::datadir::load_consumer_checkpoint(checkpoint_path)?;
    let checkpoint = loaded.as_ref().map(ConsumerState::applied_index);
    let state = match loaded {
        Some(state) if state.applied_index() < first.saturating_sub(1) => {
            return Err(StoreError::Corrupt {
                path: checkpoint_path.to_path_buf(),
                // Where the checkpoint's applied index is stored.
                offset: 12,
                reason: format!(
                    "the consumer checkpoint holds offsets applied up to index {}, but the log \
                     starts at {first}: offsets committed in entries {}..={} are lost. Restore \
                     the matching checkpoint, or remove this file to start with only the offsets \
                     of the retained log",
                    state.applied_index(),
                    state.applied_index() + 1,
                    first - 1
                ),
            });
        }
        Some(state) => state,
        None => {
            if first > 1 {
                tracing::warn!(
                    first_index = first,
                    checkpoint = %checkpoint_path.display(),
                    "no consumer checkpoint and the log starts past index 1: offsets committed \
                     only in deleted entries are not known"
                );
            }
            let mut state = ConsumerState::default();
            state.skip_to(first.saturating_sub(1));
            state
        }
    };
    let mut pending = PendingCommits::default();
    let scan_from = first.max(state.applied_index().saturating_add(1));
    let mut from = scan_from;
    let mut scanned_bytes: u64 = 0;
    while from <= last {
        let entries = log.entries(from, SCAN_BATCH_ENTRIES, SCAN_BATCH_BYTES)?;
        let Some(next) = entries.last().map(|entry| entry.index + 1) else {
            break;
        };
        scanned_bytes += entries
            .iter()
            .map(|entry| entry.payload.len() as u64)
            .sum::<u64>();
        for (index, err) in pending.on_append(&entries) {
            tracing::warn!(index, %err, "an offset commit entry does not decode; it is skipped");
        }
        from = next;
    }
    tracing::info!(
        first_index = first,
        last_index = last,
        checkpoint_applied_index = checkpoint.unwrap_or(0),
        checkpoint_groups = state.len(),
        scanned_from = scan_from,
        payload_bytes = scanned_bytes,
        offset_commits = pending.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rebuilt the consumer offsets"
    );
    Ok(Rebuilt {
        state,
        pending,
        checkpoint,
    })
}

/// Routes what the listener receives: peer messages to the raft loop,
/// client requests to their own tasks.
async fn dispatch(
    mut inbound: tokio::sync::mpsc::Receiver<Inbound<Message>>,
    inputs: InputSender,
    handle: Arc<ReplicaHandle>,
    metrics: Arc<Metrics>,
    self_id: NodeId,
) {
    while let Some(item) = inbound.recv().await {
        match item {
            Inbound::Peer { from, message } => {
                // The handshake named the sender; a message claiming to be
                // from someone else, or for someone else, is dropped.
                if message.from != members::node_id_of(&from) || message.to != self_id {
                    tracing::warn!(%from, "peer message with a wrong sender or addressee dropped");
                    continue;
                }
                match inputs.offer(Input::Peer(message)) {
                    Ok(()) => {}
                    // The loop is far behind: drop it as a lossy network
                    // would; the sender retries what matters.
                    Err(Refused::Full(_)) => {
                        metrics.inbound_peer_messages_dropped_total.inc();
                    }
                    Err(Refused::Closed(_)) => return,
                }
            }
            Inbound::Client(call) => client_api::answer(&handle, call),
            Inbound::PeerClosed { from } => {
                let peer = members::node_id_of(&from);
                if inputs.send(Input::PeerClosed(peer)).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Right;
    use crate::certs::Ca;
    use crate::net::tls::TlsFiles;

    const WAIT: Duration = Duration::from_secs(10);

    /// Polls `done` every few milliseconds until it holds, or fails after
    /// [`WAIT`] naming `what`.
    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_loop_reloads_the_tls_files_and_the_token_file_until_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::new("orders", 30).unwrap();
        let names = ["orders-0".to_string()];
        let (cert, key) = ca
            .issue(&names, 30)
            .unwrap()
            .write(dir.path(), "tls")
            .unwrap();
        let files = TlsFiles {
            cert,
            key,
            ca: dir.path().join("ca.crt"),
        };
        std::fs::write(&files.ca, ca.cert_pem()).unwrap();
        let token_file = dir.path().join("tokens");
        std::fs::write(&token_file, "write aaaaaaaaaaaaaaaa\n").unwrap();
        let transport = Transport::new(&Security {
            tls: Some(files.clone()),
            tls_reload_ms: 10,
            token_file: Some(token_file.clone()),
            admin_names: Vec::new(),
            metrics_open: true,
        })
        .unwrap();
        let tls = transport.tls.clone().unwrap();
        let auth = transport.auth.clone();
        let reloader = transport.spawn_reloader(10);

        // A key that is not the certificate's is kept out, and the token
        // file beside it is still read.
        let other = ca.issue(&names, 30).unwrap();
        std::fs::write(&files.key, &other.key_pem).unwrap();
        std::fs::write(&token_file, "write bbbbbbbbbbbbbbbb\n").unwrap();
        wait_until("the new token and the refused key", || {
            auth.right_of_token(b"bbbbbbbbbbbbbbbb") == Some(Right::Write)
                && tls.stats().reload_failures > 0
        })
        .await;
        assert_eq!(auth.right_of_token(b"aaaaaaaaaaaaaaaa"), None);
        assert_eq!(tls.stats().reloads, 0);

        // Its certificate completes the set, which is taken.
        std::fs::write(&files.cert, &other.cert_pem).unwrap();
        wait_until("the new certificate", || tls.stats().reloads == 1).await;

        // Cancelled, it reads nothing more (a reload under way has long
        // finished when the file changes).
        reloader.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(&token_file, "write cccccccccccccccc\n").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(auth.right_of_token(b"cccccccccccccccc"), None);
        assert_eq!(auth.right_of_token(b"bbbbbbbbbbbbbbbb"), Some(Right::Write));
    }
}
