//! The thread that drives the consensus core: it feeds the core its inputs
//! (ticks, peer messages, proposals, reads, transfers, storage completions),
//! carries out each `Ready` in the order the core documents, answers the
//! callers, and publishes a snapshot of its state for the front ends.
//!
//! One plain thread, not a tokio task: the core is synchronous and the loop
//! must tick on time even when the runtime is busy.
//!
//! The loop's jobs, one module each:
//! - `admission`: letting proposals and peer appends in, or refusing them
//!   while storage has no room.
//! - `disk_full`: watching the room left on the log's disk.
//! - `proposals`: proposing clients' entries and tracking them to commit.
//! - `answers`: who waits for a proposal, and what they are told.
//! - `ready`: carrying out a core `Ready`.
//! - `commit`: what a commit answers and applies.
//! - `reads`: linearizable reads (ReadIndex).
//! - `transfer`: leadership transfers.
//! - `configuration`: membership changes and the configuration in force.
//! - `log_retention`: deleting old segments, and the consumer checkpoint
//!   that deletion waits for.
//! - `publish`: the snapshot the front ends see.

mod admission;
mod answers;
mod commit;
mod configuration;
mod disk_full;
mod log_retention;
mod log_start;
mod proposals;
mod publish;
mod reads;
mod ready;
mod transfer;

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use crate::api::Members;
use crate::consumers::{Applied, ConsumerState, OffsetCommit, PendingCommits};
use crate::core::{self, Message, Node, SoftState};
use crate::engine::{AppendError, MemberChange, MembershipError, TransferError};
use crate::entry::{Index, NodeId, Term};
use crate::executor::Bookkeeping;
use crate::metrics::Metrics;
use crate::net::handshake::KnownPeers;
use crate::store::{GroupCommit, MetaStore};

use super::directory::Directory;
use super::disk_log::DiskLog;
use super::input_queue::{InputReceiver, InputSender};
use super::members::Member;
use super::peers::Peers;
use super::retention::RetentionPolicy;

use self::answers::Waiter;
use self::reads::{AskedRead, READ_TIMEOUT};
use self::transfer::PendingTransfer;

/// How often retention looks at the segments.
const RETENTION_PERIOD: Duration = Duration::from_secs(10);

/// Most inputs handled before the loop looks at the Ready again: bounds the
/// latency one burst of inputs can add to the others.
const MAX_INPUTS_PER_ROUND: usize = 4096;

/// How often the room left on the log's file system is looked at.
const DISK_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// Called once with a proposal's outcome: the first index and the term of
/// its entries, or why they were not acknowledged. Runs on the raft loop
/// thread, so it must not block (send on a channel, answer a responder).
pub type ProposeReply = Box<dyn FnOnce(Result<(Index, Term), AppendError>) + Send>;

/// Called once with an offset commit's outcome: the verdict of applying it
/// (stored, or refused), or why it was not committed. Runs on the raft loop
/// thread, so it must not block.
pub type OffsetReply = Box<dyn FnOnce(Result<Applied, AppendError>) + Send>;

/// Answered once with a configuration change's outcome.
pub type MembersReply = oneshot::Sender<Result<Members, MembershipError>>;

/// What the loop is fed.
pub enum Input {
    /// A message from a peer (its sender already checked).
    Peer(Message),
    /// The connection from this peer was closed or reset.
    PeerClosed(NodeId),
    /// Append these payloads as consecutive entries.
    Propose {
        /// One entry each.
        payloads: Vec<Bytes>,
        /// Answered once all of them are committed, or they failed.
        reply: ProposeReply,
    },
    /// Commit a consumer group's offset through the log.
    ProposeOffset {
        /// The commit (its group name already checked).
        commit: OffsetCommit,
        /// Answered once it is committed and applied, or it failed.
        reply: OffsetReply,
    },
    /// A linearizable read point: answered with an index that is committed
    /// and covers every write acknowledged before the request.
    ReadIndex {
        /// The answer.
        reply: oneshot::Sender<Result<Index, AppendError>>,
    },
    /// Hand leadership to a member (or the best follower).
    Transfer {
        /// The target, or `None` for the most caught-up follower.
        target: Option<NodeId>,
        /// Answered when a new leader is known, or the transfer failed.
        reply: oneshot::Sender<Result<(NodeId, Term), TransferError>>,
    },
    /// The storage thread made the entries of submission `sequence` durable.
    Persisted {
        /// Which submission.
        sequence: u64,
        /// The last entry it wrote.
        last: Option<(Index, Term)>,
    },
    /// Storage failed; the loop stops.
    StorageFailed(String),
    /// The consumer checkpoint writer is done.
    CheckpointSaved {
        /// The applied index the checkpoint records.
        applied_index: Index,
        /// Whether it is on disk, or why not.
        outcome: Result<(), String>,
    },
    /// Change the configuration by one member.
    ChangeMembers {
        /// The change, by name.
        change: MemberChange,
        /// Answered once the change is committed, or it failed.
        reply: MembersReply,
    },
    /// Stop the loop.
    Shutdown,
}

/// The loop's state as the front ends see it, republished after each round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Role, leader and term.
    pub role: Option<core::Role>,
    /// The leader this member knows of.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: Term,
    /// The commit index the core knows.
    pub commit_index: Index,
    /// Entries up to here are committed *and* on this member's disk, so they
    /// can be read from the local log.
    pub readable_index: Index,
    /// First index in the log.
    pub first_index: Index,
    /// Last index on this member's disk.
    pub last_index: Index,
    /// Term of that entry.
    pub last_term: Term,
    /// On the leader: each follower's match index and ms since last contact.
    pub peers: Vec<(NodeId, Index, u64)>,
    /// Set when the loop stopped (storage failure, shutdown), with the reason.
    pub stopped: Option<String>,
    /// The leader's commit index as last told (own on the leader).
    pub leader_commit_index: Option<Index>,
    /// Whether a leader was heard from (or this member led) since start.
    pub heard_from_leader: bool,
    /// When the last message from the current leader was taken in (a
    /// follower; `None` on the leader and before any leader spoke).
    pub leader_contact_at: Option<Instant>,
    /// How long a follower may go without word from its leader before its
    /// figures count as stale: the election timeout.
    pub leader_silence_limit: Duration,
    /// Set after this process was paused (SIGSTOP, a stalled VM) for longer
    /// than the election timeout: until then, what it hears may be messages
    /// queued during the pause, so its lag is not known yet.
    pub stale_until: Option<Instant>,
    /// The configuration in force.
    pub configuration: Members,
    /// Its members with their addresses, for redirects and names.
    pub members: Arc<Vec<Member>>,
    /// Whether this member is a learner of the configuration in force.
    pub learner: bool,
}

/// Everything the loop owns.
pub struct RaftLoop {
    node: Node<DiskLog>,
    meta: MetaStore,
    storage: Arc<GroupCommit>,
    peers: Arc<Peers>,
    inputs: InputReceiver,
    /// A clone of the inputs' sender, handed to storage completions.
    loopback: InputSender,
    snapshot: watch::Sender<Snapshot>,
    metrics: Arc<Metrics>,
    tick: Duration,
    /// Names and addresses of the configuration in force.
    directory: Directory,
    /// Where the configuration records are kept.
    configuration_path: std::path::PathBuf,
    /// The peer names the listener admits, kept in line with `directory`.
    known_peers: KnownPeers,

    /// Proposals waiting for their outcome, offset commits written and not
    /// committed, writes in flight and the messages that wait for them.
    books: Bookkeeping<Waiter>,
    /// The consumer groups' offsets, applied up to the commit index; the
    /// front ends read it. Written only here, and only when an offset
    /// commit applies (the write lock is not taken on other commits).
    consumers: Arc<RwLock<ConsumerState>>,
    /// The last commit index handled: every offset commit up to it is
    /// applied to `consumers`, whose own applied index moves only when one
    /// applies. Invariant: at least that applied index.
    consumers_applied_through: Index,
    /// Where the consumer checkpoint is written, before retention deletes.
    checkpoint_path: std::path::PathBuf,
    /// The applied index of the checkpoint on disk, if any: segments whose
    /// entries are all at or below it may be deleted.
    checkpoint_saved: Option<Index>,
    /// While a checkpoint is being written: the applied index it covers at
    /// least.
    checkpoint_writing: Option<Index>,
    /// The applied index of the consumer state taken with the leader's log
    /// start, if one was: a checkpoint written from the older state that
    /// lands after it is written again.
    installed_start: Option<Index>,
    /// The clock proposal deadlines are on.
    started: Instant,
    /// ReadIndex requests by request id, until the core answers.
    reads_asked: HashMap<u64, AskedRead>,
    /// Confirmed read points waiting for the commit index to reach them.
    reads_waiting: BTreeMap<Index, Vec<oneshot::Sender<Result<Index, AppendError>>>>,
    next_read_id: u64,
    transfer: Option<PendingTransfer>,

    last_soft: Option<SoftState>,
    retention: RetentionPolicy,
    next_retention: Instant,
    /// When the last message from the current leader came in.
    leader_contact_at: Option<Instant>,
    /// See `Snapshot::stale_until`.
    stale_until: Option<Instant>,
    /// Payload bytes let in this round and not yet handed to storage; with
    /// the storage queue's own bytes they must stay within its bound.
    admitted_bytes: u64,
    /// Since when the log's file system is (nearly) full, if it is.
    disk_full_since: Option<Instant>,
    next_disk_check: Instant,
    /// Client payload bytes proposed and not yet answered.
    uncommitted_bytes: Arc<std::sync::atomic::AtomicU64>,
}

/// What the loop needs to start.
pub struct RaftLoopParts {
    /// The consensus core, restored from disk.
    pub node: Node<DiskLog>,
    /// The hard state file.
    pub meta: MetaStore,
    /// The log's writer.
    pub storage: Arc<GroupCommit>,
    /// Links to the other members.
    pub peers: Arc<Peers>,
    /// The inputs.
    pub inputs: InputReceiver,
    /// A sender of the same inputs.
    pub loopback: InputSender,
    /// Where snapshots go.
    pub snapshot: watch::Sender<Snapshot>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The tick period.
    pub tick: Duration,
    /// Names and addresses of the configuration the node starts with.
    pub directory: Directory,
    /// Where the configuration records are kept.
    pub configuration_path: std::path::PathBuf,
    /// The peer names the listener admits.
    pub known_peers: KnownPeers,
    /// What to delete from the log, and when.
    pub retention: RetentionPolicy,
    /// The consumer state rebuilt at start (see `server::rebuild_consumers`).
    pub consumers: Arc<RwLock<ConsumerState>>,
    /// The offset commits of the log found at start, not known committed.
    pub consumer_pending: PendingCommits,
    /// Where the consumer checkpoint lives.
    pub checkpoint_path: std::path::PathBuf,
    /// The applied index of the checkpoint found at start, if any.
    pub checkpoint_applied_index: Option<Index>,
}

impl RaftLoop {
    /// A loop over the restored parts.
    pub fn new(parts: RaftLoopParts) -> RaftLoop {
        let written_last = parts.node.last_index();
        let consumers_applied_through = parts
            .consumers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .applied_index();
        let mut raft_loop = RaftLoop {
            node: parts.node,
            meta: parts.meta,
            storage: parts.storage,
            peers: parts.peers,
            inputs: parts.inputs,
            loopback: parts.loopback,
            snapshot: parts.snapshot,
            metrics: parts.metrics,
            tick: parts.tick,
            directory: parts.directory,
            configuration_path: parts.configuration_path,
            known_peers: parts.known_peers,
            books: Bookkeeping::new(written_last, parts.consumer_pending),
            consumers: parts.consumers,
            consumers_applied_through,
            checkpoint_path: parts.checkpoint_path,
            checkpoint_saved: parts.checkpoint_applied_index,
            checkpoint_writing: None,
            installed_start: None,
            started: Instant::now(),
            reads_asked: HashMap::new(),
            reads_waiting: BTreeMap::new(),
            next_read_id: 1,
            transfer: None,
            last_soft: None,
            retention: parts.retention,
            next_retention: Instant::now() + RETENTION_PERIOD,
            leader_contact_at: None,
            stale_until: None,
            admitted_bytes: 0,
            disk_full_since: None,
            next_disk_check: Instant::now(),
            uncommitted_bytes: Arc::default(),
        };
        // The restored log's figures from the start: the front ends serve
        // before the loop's first round, and a default snapshot would say
        // the log starts at 0.
        raft_loop.publish();
        raft_loop
    }

    /// Runs until shutdown or a fatal error; returns why it stopped.
    pub fn run(mut self) -> Result<(), String> {
        let result = self.run_rounds();
        let reason = match &result {
            Ok(()) => "the replica is shutting down".to_string(),
            Err(reason) => reason.clone(),
        };
        self.fail_everything(&reason);
        self.snapshot
            .send_modify(|snapshot| snapshot.stopped = Some(reason));
        result
    }

    fn run_rounds(&mut self) -> Result<(), String> {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.inputs.recv_timeout(wait) {
                Ok(input) => {
                    if !self.handle(input)? {
                        return Ok(());
                    }
                    for _ in 0..MAX_INPUTS_PER_ROUND {
                        match self.inputs.try_recv() {
                            Ok(input) => {
                                if !self.handle(input)? {
                                    return Ok(());
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let now = Instant::now();
            let silence_limit = self.leader_silence_limit();
            if now.saturating_duration_since(next_tick) > silence_limit {
                // The process was paused: messages queued meanwhile tell old
                // news; give the leader's current figures time to arrive.
                self.stale_until = Some(now + silence_limit);
            }
            if now >= next_tick {
                self.node.tick().map_err(|err| err.to_string())?;
                self.expire_proposals(now);
                self.expire_reads(now);
                if now >= self.next_disk_check {
                    self.next_disk_check = now + DISK_CHECK_PERIOD;
                    self.check_disk(now);
                }
                if now >= self.next_retention {
                    self.next_retention = now + RETENTION_PERIOD;
                    self.apply_retention()?;
                }
                // After a stall (a paused process), tick once and move on
                // rather than replaying every missed tick at once.
                next_tick = (next_tick + self.tick).max(now);
            }
            self.process_ready()?;
            self.admitted_bytes = 0;
            self.publish();
        }
    }

    /// Handles one input; false when the loop must stop.
    fn handle(&mut self, input: Input) -> Result<bool, String> {
        match input {
            Input::Peer(message) if !self.admit_peer_append(&message) => {}
            Input::Peer(message) => {
                let from = message.from;
                self.node.step(message).map_err(|err| err.to_string())?;
                if self.node.leader_id() == Some(from) {
                    self.leader_contact_at = Some(Instant::now());
                }
            }
            Input::PeerClosed(peer) => {
                self.node
                    .peer_connection_closed(peer)
                    .map_err(|err| err.to_string())?;
            }
            Input::Propose { payloads, reply } => match self.admit_proposal(&payloads) {
                Ok(payload_bytes) => {
                    let reply = self.count_uncommitted(payload_bytes, reply);
                    self.propose(payloads, reply);
                }
                Err(refused) => reply(Err(refused)),
            },
            Input::ProposeOffset { commit, reply } => self.propose_offset(commit, reply),
            Input::ReadIndex { reply } => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                let deadline = Instant::now() + READ_TIMEOUT;
                self.reads_asked.insert(id, AskedRead { reply, deadline });
                self.node.read_index(id).map_err(|err| err.to_string())?;
            }
            Input::Transfer { target, reply } => self.start_transfer(target, reply),
            Input::ChangeMembers { change, reply } => self.change_members(change, reply),
            Input::Persisted { sequence, last } => {
                if let Some((index, term)) = last {
                    self.node
                        .on_persisted(index, term)
                        .map_err(|err| err.to_string())?;
                }
                let free = self.books.persisted(sequence)?;
                self.peers.send_all(free);
            }
            Input::StorageFailed(reason) => return Err(format!("storage failed: {reason}")),
            Input::CheckpointSaved {
                applied_index,
                outcome,
            } => self.on_checkpoint_saved(applied_index, outcome),
            Input::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    /// The election timeout, as a duration.
    fn leader_silence_limit(&self) -> Duration {
        let ticks = u32::try_from(self.node.config().election_ticks).unwrap_or(u32::MAX);
        self.tick.saturating_mul(ticks)
    }

    fn member_name(&self, id: NodeId) -> String {
        self.directory.name_of(id)
    }

    fn fail_everything(&mut self, reason: &str) {
        for waiter in self.books.proposals.drain() {
            waiter.fail(AppendError::Unknown {
                reason: reason.to_string(),
            });
        }
        let waiting = std::mem::take(&mut self.reads_waiting);
        for reply in self
            .reads_asked
            .drain()
            .map(|(_, read)| read.reply)
            .chain(waiting.into_values().flatten())
        {
            let _ = reply.send(Err(AppendError::Unavailable {
                reason: reason.to_string(),
            }));
        }
        if let Some(transfer) = self.transfer.take() {
            let _ = transfer.reply.send(Err(TransferError::Failed {
                reason: reason.to_string(),
            }));
        }
    }
}
