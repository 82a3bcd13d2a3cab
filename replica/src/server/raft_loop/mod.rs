//! The thread that drives the consensus core: it feeds the core its inputs
//! (ticks, peer messages, proposals, reads, transfers, storage completions),
//! carries out each `Ready` in the order the core documents, answers the
//! callers, and publishes a snapshot of its state for the front ends.
//!
//! One plain thread, not a tokio task: the core is synchronous and the loop
//! must tick on time even when the runtime is busy.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use crate::api::Members;
use crate::consumers::{Applied, ConsumerState, OffsetCommit, PendingCommits};
use crate::core::{
    self, Message, MessageBody, Node, ReadState, Ready, SoftState, TransferOutcome, Violation,
};
use crate::engine::{AppendError, MemberChange, MembershipError, TransferError};
use crate::entry::{Entry, EntryKind, HardState, Index, NodeId, Term};
use crate::executor::{Outcome, Proposals};
use crate::metrics::Metrics;
use crate::net::handshake::KnownPeers;
use crate::server::role_log;
use crate::store::{GroupCommit, MetaStore};

use super::directory::{self, Directory};
use super::disk_log::DiskLog;
use super::input_queue::{InputReceiver, InputSender};
use super::members::{not_leader_error, Member};
use super::peers::Peers;
use super::reconfigure;
use super::retention::{self, RetentionPolicy};

/// How often retention looks at the segments.
const RETENTION_PERIOD: Duration = Duration::from_secs(10);

/// Most inputs handled before the loop looks at the Ready again: bounds the
/// latency one burst of inputs can add to the others.
const MAX_INPUTS_PER_ROUND: usize = 4096;

/// How often the room left on the log's file system is looked at.
const DISK_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// Writes are refused while less than this is free on the log's file
/// system: room for the hard state and a segment roll, so a full disk is
/// met by refusing writes rather than by a failed one.
const DISK_RESERVE_BYTES: u64 = 8 << 20;

/// A leader that cannot write this long hands leadership to a follower,
/// so the rest of the group goes on writing.
const DISK_FULL_STEP_ASIDE: Duration = Duration::from_secs(2);

/// Client payload bytes proposed and not yet answered, at most: past it new
/// appends are answered "busy, retry". Bounds the leader's log beyond the
/// commit index, so a flood of large appends waits at the client, not in
/// memory and queues here (where it would time out unanswered).
const MAX_UNCOMMITTED_BYTES: u64 = 64 << 20;

/// How long an append waits for its commit before the client is told the
/// outcome is unknown.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Who waits for a proposal's outcome.
enum Waiter {
    /// A client's append batch.
    Append(ProposeReply),
    /// An offset commit: answered once committed *and* applied.
    Offset(OffsetReply),
    /// A configuration change, with the configuration it makes.
    Members(MembersReply, Members),
}

impl Waiter {
    /// Answers with what became of the proposal; `verdicts` are those of
    /// the offset commits applied at this commit, by index.
    fn answer(self, outcome: Outcome, verdicts: &[(Index, Applied)]) {
        match self {
            Waiter::Append(reply) => reply(proposal_answer(outcome)),
            Waiter::Offset(reply) => reply(offset_answer(outcome, verdicts)),
            Waiter::Members(reply, members) => {
                let answer = proposal_answer(outcome)
                    .map(|_| members)
                    .map_err(MembershipError::Append);
                let _ = reply.send(answer);
            }
        }
    }

    /// Answers with an error (the loop stops).
    fn fail(self, err: AppendError) {
        match self {
            Waiter::Append(reply) => reply(Err(err)),
            Waiter::Offset(reply) => reply(Err(err)),
            Waiter::Members(reply, _) => {
                let _ = reply.send(Err(MembershipError::Append(err)));
            }
        }
    }
}

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

/// How long a linearizable read waits for its answer in all: the core
/// answers or times a read out well before (two election timeouts).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A read the core has not answered yet.
struct AskedRead {
    reply: oneshot::Sender<Result<Index, AppendError>>,
    deadline: Instant,
}

struct PendingTransfer {
    reply: oneshot::Sender<Result<(NodeId, Term), TransferError>>,
    /// Set once this member stepped down; then the first known other leader
    /// answers the request.
    stepped_down: bool,
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

    /// Proposals waiting for commit, in index order.
    proposals: Proposals<Waiter>,
    /// Offset commits appended and not yet committed.
    consumer_pending: PendingCommits,
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
    /// The clock proposal deadlines are on.
    started: Instant,
    /// ReadIndex requests by request id, until the core answers.
    reads_asked: HashMap<u64, AskedRead>,
    /// Confirmed read points waiting for the commit index to reach them.
    reads_waiting: BTreeMap<Index, Vec<oneshot::Sender<Result<Index, AppendError>>>>,
    next_read_id: u64,
    transfer: Option<PendingTransfer>,

    /// Submissions to storage so far, and those known durable.
    submitted: u64,
    persisted: u64,
    /// Messages to send once submission `.0` is durable.
    parked: VecDeque<(u64, Vec<Message>)>,
    /// Last entry written, to tell a suffix truncation.
    written_last: Index,
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
        RaftLoop {
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
            proposals: Proposals::default(),
            consumer_pending: parts.consumer_pending,
            consumers: parts.consumers,
            consumers_applied_through,
            checkpoint_path: parts.checkpoint_path,
            checkpoint_saved: parts.checkpoint_applied_index,
            checkpoint_writing: None,
            started: Instant::now(),
            reads_asked: HashMap::new(),
            reads_waiting: BTreeMap::new(),
            next_read_id: 1,
            transfer: None,
            submitted: 0,
            persisted: 0,
            parked: VecDeque::new(),
            written_last,
            last_soft: None,
            retention: parts.retention,
            next_retention: Instant::now() + RETENTION_PERIOD,
            leader_contact_at: None,
            stale_until: None,
            admitted_bytes: 0,
            disk_full_since: None,
            next_disk_check: Instant::now(),
            uncommitted_bytes: Arc::default(),
        }
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
                assert!(
                    sequence > self.persisted,
                    "storage completions out of order"
                );
                self.persisted = sequence;
                if let Some((index, term)) = last {
                    self.node
                        .on_persisted(index, term)
                        .map_err(|err| err.to_string())?;
                }
                while self
                    .parked
                    .front()
                    .is_some_and(|(sequence, _)| *sequence <= self.persisted)
                {
                    if let Some((_, messages)) = self.parked.pop_front() {
                        self.peers.send_all(messages);
                    }
                }
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

    /// Whether writes must wait for disk space: the file system is nearly
    /// full, or the flusher met a full disk.
    fn disk_full(&self) -> bool {
        self.disk_full_since.is_some() || self.storage.is_disk_full()
    }

    /// Looks at the room left; a leader that stays unable to write hands
    /// leadership over. Writes resume by themselves once space is freed.
    fn check_disk(&mut self, now: Instant) {
        let low = match crate::store::space::free_bytes(self.storage.log().dir()) {
            Ok(free_bytes) => free_bytes < DISK_RESERVE_BYTES,
            Err(err) => {
                tracing::warn!(%err, "cannot tell the room left on the log's file system");
                false
            }
        };
        let full = low || self.storage.is_disk_full();
        match (full, self.disk_full_since) {
            (true, None) => {
                tracing::error!(
                    reserve_bytes = DISK_RESERVE_BYTES,
                    "the log's disk is full; writes are refused until space is freed"
                );
                self.disk_full_since = Some(now);
            }
            (false, Some(_)) => {
                tracing::info!("disk space is back; writes are taken again");
                self.disk_full_since = None;
            }
            _ => {}
        }
        let stuck = self
            .disk_full_since
            .is_some_and(|since| now.duration_since(since) >= DISK_FULL_STEP_ASIDE);
        if stuck && self.node.role() == core::Role::Leader && self.transfer.is_none() {
            match self.node.transfer_leadership(None) {
                Ok(()) => tracing::warn!("the disk is full; handing leadership to a follower"),
                Err(err) => tracing::debug!(%err, "no leadership hand-over on a full disk"),
            }
        }
    }

    /// Whether storage can take `payload_bytes` more now: the log's write
    /// queue is bounded, and what the loop lets in is what it will write.
    fn storage_has_room(&self, payload_bytes: u64) -> bool {
        !self
            .storage
            .would_refuse(self.admitted_bytes.saturating_add(payload_bytes))
    }

    /// Lets a client's entries in, or says why not: "busy, retry" when the
    /// write queue is full, "disk full" while storage waits for space. The
    /// client is answered at once, so load slows clients and never piles up.
    fn admit_proposal(&mut self, payloads: &[Bytes]) -> Result<u64, AppendError> {
        let payload_bytes: u64 = payloads.iter().map(|payload| payload.len() as u64).sum();
        if self.disk_full() {
            self.metrics.appends_refused_disk_full_total.inc();
            return Err(AppendError::DiskFull {
                reason: "this member cannot write its log until space is freed".into(),
            });
        }
        let uncommitted_bytes = self.uncommitted_bytes.load(Ordering::Relaxed);
        let refused = if uncommitted_bytes > 0
            && uncommitted_bytes + payload_bytes > MAX_UNCOMMITTED_BYTES
        {
            Some(format!(
                "{uncommitted_bytes} bytes of appends wait for commit ({MAX_UNCOMMITTED_BYTES} at most)"
            ))
        } else if !self.storage_has_room(payload_bytes) {
            Some(format!(
                "the log's write queue is full ({} bytes at most)",
                self.storage.options().max_pending_bytes
            ))
        } else {
            None
        };
        if let Some(reason) = refused {
            self.metrics.appends_refused_busy_total.inc();
            return Err(AppendError::Overloaded { reason });
        }
        self.admitted_bytes += payload_bytes;
        Ok(payload_bytes)
    }

    /// Counts `payload_bytes` as uncommitted until `reply` is answered (or
    /// dropped), without touching the proposal bookkeeping.
    fn count_uncommitted<T: 'static>(
        &self,
        payload_bytes: u64,
        reply: Box<dyn FnOnce(T) + Send>,
    ) -> Box<dyn FnOnce(T) + Send> {
        struct Uncounted(Arc<std::sync::atomic::AtomicU64>, u64);
        impl Drop for Uncounted {
            fn drop(&mut self) {
                self.0.fetch_sub(self.1, Ordering::Relaxed);
            }
        }
        self.uncommitted_bytes
            .fetch_add(payload_bytes, Ordering::Relaxed);
        let counted = Uncounted(self.uncommitted_bytes.clone(), payload_bytes);
        Box::new(move |result| {
            drop(counted);
            reply(result);
        })
    }

    /// Whether a peer message may be stepped. An append carrying entries
    /// that storage cannot queue now (queue full, disk full) is dropped
    /// unanswered: the leader sends it again, and heartbeats, votes and
    /// everything else still go through, so the member stays in the group.
    fn admit_peer_append(&mut self, message: &Message) -> bool {
        let MessageBody::Append { entries, .. } = &message.body else {
            return true;
        };
        if entries.is_empty() {
            return true;
        }
        let payload_bytes = entries.iter().map(|entry| entry.payload.len() as u64).sum();
        if self.disk_full() || !self.storage_has_room(payload_bytes) {
            self.metrics.peer_appends_refused_total.inc();
            return false;
        }
        self.admitted_bytes += payload_bytes;
        true
    }

    fn propose(&mut self, payloads: Vec<Bytes>, reply: ProposeReply) {
        let requested = payloads.len() as u64;
        let mut first: Option<(Index, Term)> = None;
        let mut last_index = 0;
        for payload in payloads {
            match self.node.propose(payload) {
                Ok((index, term)) => {
                    first.get_or_insert((index, term));
                    last_index = index;
                }
                Err(err) if first.is_none() => {
                    reply(Err(self.propose_error(err)));
                    return;
                }
                // The entries already proposed stay in the log: the batch
                // is tracked with them and answered by what becomes of
                // them (the rest was not appended).
                Err(_) => break,
            }
        }
        let Some((first_index, term)) = first else {
            reply(Err(AppendError::Unavailable {
                reason: "empty append".into(),
            }));
            return;
        };
        self.track_proposal(
            first_index,
            last_index,
            requested,
            term,
            Waiter::Append(reply),
        );
    }

    /// Waits for the fate of entries `first_index..=last_index` of a batch
    /// of `requested`, proposed just now at `term`.
    fn track_proposal(
        &mut self,
        first_index: Index,
        last_index: Index,
        requested: u64,
        term: Term,
        waiter: Waiter,
    ) {
        let deadline_ms = self.now_ms() + COMMIT_TIMEOUT.as_millis() as u64;
        if let Err(waiter) = self.proposals.push(
            first_index,
            last_index,
            requested,
            term,
            deadline_ms,
            waiter,
        ) {
            waiter.fail(AppendError::Unknown {
                reason: format!("entries {first_index}..={last_index} were proposed out of order"),
            });
        }
    }

    /// Proposes one offset commit, through the same gates as an append
    /// (disk, write queue, uncommitted bytes, leadership, transfer), after
    /// checking it against the state applied so far: an offset out of
    /// range, or a condition that already fails, is refused at once. The
    /// verdict that counts is the one given when it applies.
    fn propose_offset(&mut self, commit: OffsetCommit, reply: OffsetReply) {
        let check = self
            .consumers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(&commit, self.node.first_index(), self.node.commit_index());
        if let Err(refusal) = check {
            reply(Ok(Applied::Refused(refusal)));
            return;
        }
        let payload = commit.encode();
        let payload_bytes = match self.admit_proposal(std::slice::from_ref(&payload)) {
            Ok(payload_bytes) => payload_bytes,
            Err(refused) => {
                reply(Err(refused));
                return;
            }
        };
        let reply = self.count_uncommitted(payload_bytes, reply);
        match self.node.propose_entry(EntryKind::ConsumerOffset, payload) {
            Ok((index, term)) => self.track_proposal(index, index, 1, term, Waiter::Offset(reply)),
            Err(err) => reply(Err(self.propose_error(err))),
        }
    }

    /// The election timeout, as a duration.
    fn leader_silence_limit(&self) -> Duration {
        let ticks = u32::try_from(self.node.config().election_ticks).unwrap_or(u32::MAX);
        self.tick.saturating_mul(ticks)
    }

    /// Milliseconds since the loop started: the proposals' clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn propose_error(&self, err: core::ProposeError) -> AppendError {
        match err {
            core::ProposeError::NotLeader { leader } => {
                not_leader_error(&self.directory.members(), leader, self.node.term())
            }
            core::ProposeError::Transferring => AppendError::Transferring,
            core::ProposeError::TooManyPending => AppendError::Overloaded {
                reason: "too many appends wait for commit".into(),
            },
            err @ (core::ProposeError::NotAClientKind(_) | core::ProposeError::Membership(_)) => {
                AppendError::Unavailable {
                    reason: err.to_string(),
                }
            }
            core::ProposeError::Core(err) => AppendError::Unavailable {
                reason: err.to_string(),
            },
        }
    }

    fn start_transfer(
        &mut self,
        target: Option<NodeId>,
        reply: oneshot::Sender<Result<(NodeId, Term), TransferError>>,
    ) {
        let result = self.node.transfer_leadership(target);
        let name = |id: NodeId| self.member_name(id);
        let refused = match result {
            Ok(()) => None,
            Err(core::TransferError::NotLeader { leader }) => Some(TransferError::NotLeader {
                leader_id: leader.map(name),
            }),
            Err(core::TransferError::UnknownMember(id)) => Some(TransferError::BadTarget {
                reason: format!("{} is not a member", name(id)),
            }),
            Err(core::TransferError::AlreadyLeader(id)) => Some(TransferError::BadTarget {
                reason: format!("{} is already the leader", name(id)),
            }),
            Err(core::TransferError::NoOtherMember) => Some(TransferError::BadTarget {
                reason: "there is no other member to hand leadership to".into(),
            }),
            Err(core::TransferError::Core(err)) => Some(TransferError::Failed {
                reason: err.to_string(),
            }),
        };
        if let Some(err) = refused {
            let _ = reply.send(Err(err));
            return;
        }
        role_log::transfer_started(self.node.transfer_target(), self.node.term(), name);
        if let Some(previous) = self.transfer.take() {
            let _ = previous.reply.send(Err(TransferError::Failed {
                reason: "superseded by a newer transfer request".into(),
            }));
        }
        self.transfer = Some(PendingTransfer {
            reply,
            stepped_down: false,
        });
    }

    fn member_name(&self, id: NodeId) -> String {
        self.directory.name_of(id)
    }

    /// Proposes a configuration change by one member; answered once it
    /// is committed.
    fn change_members(&mut self, change: MemberChange, reply: MembersReply) {
        let next = match reconfigure::next_configuration(self.directory.configuration(), &change) {
            Ok(next) => next,
            Err(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        match self.node.propose_configuration(next.encode()) {
            Ok((index, term)) => {
                let mut members = self.directory.clone();
                members.update(self.node.configurations());
                let waiter = Waiter::Members(reply, members.api(true));
                self.track_proposal(index, index, 1, term, waiter);
                tracing::info!(?change, index, "configuration change proposed");
            }
            Err(err) => {
                let leader = |id| self.directory.member(id);
                let _ = reply.send(Err(reconfigure::refusal(err, leader, |err| {
                    self.propose_error(err)
                })));
            }
        }
    }

    /// The configuration records changed: keep them on disk before any
    /// entry that carries them, and follow the newest with the links, the
    /// listener and the names.
    fn on_configurations(
        &mut self,
        records: &[crate::membership::ConfigRecord],
    ) -> Result<(), String> {
        directory::save_records(&self.configuration_path, records)
            .map_err(|err| format!("saving the configuration: {err}"))?;
        let previous = self.directory.index();
        self.directory.update(records);
        let targets = self.directory.link_targets();
        self.peers.set_members(&targets);
        self.known_peers
            .set(targets.iter().map(|member| member.peer_name.clone()));
        if self.directory.index() != previous {
            let members = self.directory.api(false);
            tracing::info!(
                index = members.index,
                voters = ?members.voters.iter().map(|m| &m.id).collect::<Vec<_>>(),
                learners = ?members.learners.iter().map(|m| &m.id).collect::<Vec<_>>(),
                "configuration in force"
            );
        }
        Ok(())
    }

    fn process_ready(&mut self) -> Result<(), String> {
        while self.node.has_ready() {
            let ready = self.node.ready().map_err(|err| err.to_string())?;
            self.carry_out(ready)?;
        }
        Ok(())
    }

    /// Carries out one Ready in the order `core::Ready` documents.
    fn carry_out(&mut self, ready: Ready) -> Result<(), String> {
        let Ready {
            hard_state,
            entries,
            messages,
            persisted_messages,
            commit_index,
            read_states,
            soft_state,
            transfer_outcomes,
            violations,
            configurations,
        } = ready;
        for violation in violations {
            self.on_violation(violation);
        }
        // Before anything is sent or written: the file must never miss a
        // configuration entry the log has, and answers go to the members
        // now in force.
        if let Some(records) = configurations {
            self.on_configurations(&records)?;
        }
        if let Some(soft) = soft_state {
            self.on_soft_state(soft);
        }
        // 1. Messages that do not wait for the disk.
        self.peers.send_all(messages);
        // 2. Persist: the hard state synchronously (rare: elections only),
        //    entries through group commit.
        if let Some(state) = hard_state {
            self.save_hard_state(state)?;
        }
        if !entries.is_empty() {
            self.submit(entries)?;
        }
        // 3. Messages that wait for this Ready (and every earlier one) to be
        //    durable: sent at once when nothing is in flight.
        if !persisted_messages.is_empty() {
            if self.persisted == self.submitted {
                self.peers.send_all(persisted_messages);
            } else {
                self.parked.push_back((self.submitted, persisted_messages));
            }
        }
        // 5. Commit.
        if let Some(commit) = commit_index {
            self.on_commit(commit)?;
        }
        // 6. Answers.
        for read in read_states {
            self.on_read_state(read);
        }
        for outcome in transfer_outcomes {
            self.on_transfer_outcome(outcome);
        }
        Ok(())
    }

    /// A peer broke the protocol; the core dropped its message.
    fn on_violation(&self, violation: Violation) {
        self.metrics.count_violation(violation.kind);
        tracing::warn!(
            peer = %self.member_name(violation.from),
            reason = violation.kind.as_str(),
            detail = %violation.detail,
            "dropped a peer message that breaks the protocol"
        );
    }

    /// Saves term and vote. On a full disk it waits for space (the messages
    /// that depend on the vote must not go out before it is durable); any
    /// other failure stops the loop.
    fn save_hard_state(&mut self, state: HardState) -> Result<(), String> {
        let mut logged = false;
        loop {
            match self.meta.save(state) {
                Ok(()) => return Ok(()),
                Err(crate::store::StoreError::NoSpace { .. }) => {
                    if !logged {
                        tracing::error!(
                            "the disk is full; waiting for space to save term and vote"
                        );
                        logged = true;
                    }
                    std::thread::sleep(crate::store::DISK_FULL_RETRY);
                }
                Err(err) => return Err(format!("saving term and vote: {err}")),
            }
        }
    }

    fn submit(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        let first = entries[0].index;
        let last = entries.last().map(|entry| (entry.index, entry.term));
        if first <= self.written_last {
            // A follower's conflicting tail: cut it before writing ours.
            self.storage
                .truncate_suffix(first)
                .map_err(|err| format!("truncating the log from {first}: {err}"))?;
            self.consumer_pending.truncate_from(first);
            self.fail_truncated_proposals(first);
        }
        for (index, err) in self.consumer_pending.on_append(&entries) {
            // Every member skips it alike when it commits.
            tracing::warn!(index, %err, "an offset commit entry does not decode; it is skipped");
        }
        self.written_last = last.map_or(self.written_last, |(index, _)| index);
        self.submitted += 1;
        let sequence = self.submitted;
        let loopback = self.loopback.clone();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let callback = Box::new(move |result: crate::store::Result<_>| {
            metrics.fsync_latency.observe(started.elapsed());
            let input = match result {
                Ok(_) => Input::Persisted { sequence, last },
                Err(err) => Input::StorageFailed(err.to_string()),
            };
            let _ = loopback.send(input);
        });
        // Admitted: the loop let these bytes in against the queue's bound
        // (`admit_proposal`, `admit_peer_append`), so the queue never refuses.
        self.storage
            .submit_admitted(entries, callback)
            .map_err(|err| format!("submitting entries to the log: {err}"))
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        let previous = self.last_soft.replace(soft);
        let transferring = self.transfer.is_some();
        role_log::soft_change(
            previous,
            soft,
            self.node.transfer_target(),
            transferring,
            |id| self.member_name(id),
        );
        if previous.is_none_or(|previous| previous.leader_id != soft.leader_id)
            && soft.leader_id.is_some()
        {
            self.metrics.leader_changes_total.inc();
        }
        if soft.role == core::Role::Candidate
            && previous.is_none_or(|previous| {
                previous.role != core::Role::Candidate || previous.term != soft.term
            })
        {
            self.metrics.elections_total.inc();
        }
        if soft.role != core::Role::Leader {
            // Confirmed reads need a leader; tell the callers to retry.
            for (_, read) in self.reads_asked.drain() {
                let _ = read.reply.send(Err(AppendError::NoLeader {
                    reason: "leadership changed during the read".into(),
                }));
            }
        }
        if let (Some(transfer), Some(leader)) = (&self.transfer, soft.leader_id) {
            if transfer.stepped_down && leader != self.node.id() {
                if let Some(transfer) = self.transfer.take() {
                    let _ = transfer.reply.send(Ok((leader, soft.term)));
                }
            }
        }
    }

    fn on_commit(&mut self, commit: Index) -> Result<(), String> {
        // Apply first: an offset commit is answered with its verdict, and
        // a read answered below must see what committed before it.
        let verdicts = self.apply_consumer_commits(commit);
        let node = &self.node;
        let answers = self
            .proposals
            .on_commit(commit, |index| node.entry_term(index))
            .map_err(|err| err.to_string())?;
        for (waiter, outcome) in answers {
            if let (
                Waiter::Append(_),
                Outcome::Committed { count, .. }
                | Outcome::PartlyCommitted {
                    committed: count, ..
                },
            ) = (&waiter, outcome)
            {
                self.metrics.appends_total.inc_by(count);
            }
            waiter.answer(outcome, &verdicts);
        }
        let ready: Vec<Index> = self
            .reads_waiting
            .range(..=commit)
            .map(|(i, _)| *i)
            .collect();
        for index in ready {
            for reply in self.reads_waiting.remove(&index).unwrap_or_default() {
                let _ = reply.send(Ok(index));
            }
        }
        Ok(())
    }

    /// Applies the offset commits the commit index now covers; their
    /// verdicts by index. Commits with no offset commit among them cost a
    /// look at the first pending index, no lock.
    fn apply_consumer_commits(&mut self, commit: Index) -> Vec<(Index, Applied)> {
        // Whatever happens below, every offset commit up to here applies.
        self.consumers_applied_through = self.consumers_applied_through.max(commit);
        if !self.consumer_pending.any_committed(commit) {
            return Vec::new();
        }
        let mut state = self
            .consumers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.consumer_pending.apply_committed(commit, &mut state)
    }

    /// Entries from `from` on were just overwritten by another leader's:
    /// they were not committed (committed entries are never overwritten).
    fn fail_truncated_proposals(&mut self, from: Index) {
        for (waiter, outcome) in self.proposals.on_truncate(from) {
            waiter.answer(outcome, &[]);
        }
    }

    fn expire_proposals(&mut self, _now: Instant) {
        let now_ms = self.now_ms();
        for (waiter, outcome) in self.proposals.expire(now_ms) {
            waiter.answer(outcome, &[]);
        }
    }

    /// Reads the core has not answered by their deadline get a timeout.
    fn expire_reads(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .reads_asked
            .iter()
            .filter(|(_, read)| read.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(read) = self.reads_asked.remove(&id) {
                let _ = read.reply.send(Err(AppendError::Unavailable {
                    reason: format!(
                        "the read was not confirmed within {} s",
                        READ_TIMEOUT.as_secs()
                    ),
                }));
            }
        }
    }

    fn on_read_state(&mut self, read: ReadState) {
        let Some(AskedRead { reply, .. }) = self.reads_asked.remove(&read.request_id) else {
            return;
        };
        match read.result {
            Ok(index) if index <= self.node.commit_index() => {
                let _ = reply.send(Ok(index));
            }
            Ok(index) => self.reads_waiting.entry(index).or_default().push(reply),
            Err(err @ core::ReadError::NotLeader { .. }) => {
                let _ = reply.send(Err(AppendError::NoLeader {
                    reason: err.to_string(),
                }));
            }
            Err(err) => {
                let _ = reply.send(Err(AppendError::Unavailable {
                    reason: err.to_string(),
                }));
            }
        }
    }

    fn on_transfer_outcome(&mut self, outcome: TransferOutcome) {
        role_log::transfer_outcome(outcome, self.node.term(), |id| self.member_name(id));
        match outcome {
            TransferOutcome::SteppedDown { .. } => {
                if let Some(transfer) = &mut self.transfer {
                    transfer.stepped_down = true;
                }
                // The new leader may already be known.
                if let Some(soft) = self.last_soft {
                    self.on_soft_state(soft);
                }
            }
            TransferOutcome::Abandoned { target, reason } => {
                if let Some(transfer) = self.transfer.take() {
                    let _ = transfer.reply.send(Err(TransferError::Failed {
                        reason: format!(
                            "{} did not take over ({reason:?}); this member still leads",
                            self.member_name(target)
                        ),
                    }));
                }
            }
        }
    }

    fn fail_everything(&mut self, reason: &str) {
        for waiter in self.proposals.drain() {
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

    /// Deletes the segments retention allows. Runs on this thread so the
    /// core never reads an entry while it is being deleted.
    ///
    /// Deleting below index X loses the offset commits of the entries
    /// below X, so it waits until the consumer checkpoint on disk holds the
    /// state applied up to at least X - 1: when it does not, a checkpoint is
    /// written (off this thread) and the deletion is done once it is on disk
    /// (the next round is brought forward).
    fn apply_retention(&mut self) -> Result<(), String> {
        if !self.retention.is_enabled() {
            return Ok(());
        }
        let log = self.storage.log().clone();
        let segments = log
            .segments()
            .map_err(|err| format!("listing log segments: {err}"))?;
        let self_id = self.node.id();
        let slowest_follower_match = (self.node.role() == core::Role::Leader)
            .then(|| {
                self.node
                    .peer_status()
                    .iter()
                    .filter(|peer| peer.id != self_id)
                    .map(|peer| peer.match_index)
                    .min()
            })
            .flatten();
        let progress = retention::Progress {
            // Never past what the consumer state is applied up to either:
            // the core's commit index may be a Ready ahead of it.
            commit_index: self
                .node
                .commit_index()
                .min(self.node.persisted_index())
                .min(self.consumers_applied_through),
            slowest_follower_match,
        };
        let now = std::time::SystemTime::now();
        if let Some(index) = retention::delete_below(&self.retention, &segments, progress, now) {
            let needed = index.saturating_sub(1);
            if self.checkpoint_saved.is_some_and(|saved| saved >= needed) {
                let deleted = log
                    .delete_below(index)
                    .map_err(|err| format!("deleting log segments below {index}: {err}"))?;
                tracing::info!(
                    below = index,
                    segments = deleted,
                    checkpoint_applied_index = self.checkpoint_saved.unwrap_or(0),
                    "retention deleted log segments"
                );
            } else {
                self.start_checkpoint(needed);
            }
        }
        let bytes = log
            .segments()
            .map(|segments| segments.iter().map(|s| s.size_bytes).sum())
            .unwrap_or(0);
        self.metrics.set_log_bytes(bytes);
        Ok(())
    }

    /// Starts writing the consumer checkpoint, for a deletion that needs the
    /// state applied up to `needed`. Encoding and writing run on a thread of
    /// their own, which reports with [`Input::CheckpointSaved`]: for 100,000
    /// groups the encoding alone takes 9 to 47 ms (12- to 128-byte names) and
    /// the fsync'd write 20 to 90 ms (`checkpoint_figures`), too long for
    /// this thread. The writer holds the state's read lock while it encodes,
    /// so this thread waits only if an offset commit applies meanwhile.
    fn start_checkpoint(&mut self, needed: Index) {
        if let Some(writing) = self.checkpoint_writing {
            tracing::debug!(writing, needed, "a consumer checkpoint is being written");
            return;
        }
        // Every offset commit up to here is applied, so the state is (at
        // least) the state at this index.
        let applied_through = self.consumers_applied_through;
        if applied_through < needed {
            tracing::warn!(
                applied_through,
                needed,
                "the consumer state is not applied as far as retention would delete; \
                 no deletion this round"
            );
            return;
        }
        let consumers = self.consumers.clone();
        let path = self.checkpoint_path.clone();
        let loopback = self.loopback.clone();
        let spawned = std::thread::Builder::new()
            .name("consumer-checkpoint".into())
            .spawn(move || {
                let started = Instant::now();
                let (bytes, applied_index, groups) = {
                    let state = consumers
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    // Offset commits applied since only move it further: the
                    // state's own applied index is then the commit index
                    // they were applied at.
                    let applied_index = applied_through.max(state.applied_index());
                    (
                        state.encode_checkpoint(applied_index),
                        applied_index,
                        state.len(),
                    )
                };
                let encode_us = started.elapsed().as_micros() as u64;
                let outcome = crate::datadir::save_consumer_checkpoint(&path, &bytes)
                    .map_err(|err| err.to_string());
                if outcome.is_ok() {
                    tracing::info!(
                        applied_index,
                        groups,
                        bytes = bytes.len(),
                        encode_us,
                        total_us = started.elapsed().as_micros() as u64,
                        "wrote the consumer checkpoint"
                    );
                }
                let _ = loopback.send(Input::CheckpointSaved {
                    applied_index,
                    outcome,
                });
            });
        match spawned {
            Ok(_) => self.checkpoint_writing = Some(applied_through),
            Err(err) => tracing::error!(
                %err,
                "cannot start the consumer checkpoint writer; retention deletes nothing this round"
            ),
        }
    }

    /// The checkpoint writer is done: on success, retention runs again at
    /// the next tick to delete what it now may.
    fn on_checkpoint_saved(&mut self, applied_index: Index, outcome: Result<(), String>) {
        self.checkpoint_writing = None;
        match outcome {
            Ok(()) => {
                self.checkpoint_saved = Some(
                    self.checkpoint_saved
                        .map_or(applied_index, |saved| saved.max(applied_index)),
                );
                self.next_retention = Instant::now();
            }
            // The old checkpoint is intact (the new one replaces it by a
            // rename), and nothing is deleted past it; tried again next round.
            Err(reason) => tracing::error!(
                %reason,
                path = %self.checkpoint_path.display(),
                "writing the consumer checkpoint failed; retention deletes nothing until it is written"
            ),
        }
    }

    /// The member list for the snapshot, shared with the last one when it
    /// did not change.
    fn published_members(&self) -> Arc<Vec<Member>> {
        let members = self.directory.members();
        let published = self.snapshot.borrow().members.clone();
        if *published == members {
            published
        } else {
            Arc::new(members)
        }
    }

    fn publish(&mut self) {
        let soft = self.node.soft_state();
        let is_leader = soft.role == core::Role::Leader;
        let tick_ms = self.tick.as_millis() as u64;
        let peers = if is_leader {
            self.node
                .peer_status()
                .into_iter()
                .filter(|peer| peer.id != self.node.id())
                .map(|peer| (peer.id, peer.match_index, peer.last_contact_ticks * tick_ms))
                .collect()
        } else {
            Vec::new()
        };
        let commit_index = self.node.commit_index();
        let persisted = self.node.persisted_index();
        let next = Snapshot {
            role: Some(soft.role),
            leader: soft.leader_id,
            term: soft.term,
            commit_index,
            readable_index: commit_index.min(persisted),
            first_index: self.node.first_index(),
            // What is on this member's disk, not what is still being
            // written: the operator and the readers take lastIndex as held.
            last_index: persisted,
            last_term: self.node.entry_term(persisted).ok().flatten().unwrap_or(0),
            peers,
            stopped: None,
            leader_commit_index: self.node.leader_commit_index(),
            heard_from_leader: self.node.heard_from_leader(),
            leader_contact_at: if is_leader {
                None
            } else {
                // Moved on only once a tick old, so heartbeats alone do not
                // wake every snapshot watcher.
                let published = self.snapshot.borrow().leader_contact_at;
                match (published, self.leader_contact_at) {
                    (Some(old), Some(new)) if new.duration_since(old) < self.tick => Some(old),
                    (_, new) => new,
                }
            },
            leader_silence_limit: self.leader_silence_limit(),
            stale_until: self.stale_until,
            configuration: self.directory.api(self.directory.index() <= commit_index),
            members: self.published_members(),
            learner: self.node.membership().learners.contains(&self.node.id()),
        };
        let lost_after_ms = self.node.config().election_ticks * tick_ms;
        role_log::peers_changed(
            &self.snapshot.borrow().peers,
            &next.peers,
            lost_after_ms,
            soft.term,
            |id| self.member_name(id),
        );
        self.snapshot.send_if_modified(|current| {
            if *current == next {
                false
            } else {
                *current = next;
                true
            }
        });
    }
}

/// What an offset commit's client is told: the verdict of applying it once
/// committed, else what an append would be told.
fn offset_answer(outcome: Outcome, verdicts: &[(Index, Applied)]) -> Result<Applied, AppendError> {
    match outcome {
        Outcome::Committed { first_index, .. } => {
            match verdicts.binary_search_by_key(&first_index, |(index, _)| *index) {
                Ok(position) => Ok(verdicts[position].1.clone()),
                // Applied with the commit that answers it, so this is only
                // reached if the entry did not decode (never one we encoded).
                Err(_) => Err(AppendError::Unknown {
                    reason: format!(
                        "the offset commit at index {first_index} committed but was not applied"
                    ),
                }),
            }
        }
        // Not committed (or not known to be): told as an append is. Only
        // `Committed` answers `Ok`, so the `Ok` arm is never taken.
        other => match proposal_answer(other) {
            Err(err) => Err(err),
            Ok((index, _)) => Err(AppendError::Unknown {
                reason: format!("the offset commit at index {index} has no verdict"),
            }),
        },
    }
}

/// What a proposal's client is told about its batch.
fn proposal_answer(outcome: Outcome) -> Result<(Index, Term), AppendError> {
    match outcome {
        Outcome::Committed {
            first_index, term, ..
        } => Ok((first_index, term)),
        // Not "not appended": the client must not retry the committed part.
        Outcome::PartlyCommitted {
            first_index,
            term,
            committed,
            requested,
        } => Err(AppendError::Unknown {
            reason: format!(
                "partly appended: the first {committed} of {requested} entries committed at \
                 {first_index}..={} in term {term}; the other {} were not appended \
                 (leadership changed): retry only those",
                first_index + committed - 1,
                requested - committed
            ),
        }),
        Outcome::NotAppended => Err(AppendError::Unavailable {
            reason: "leadership changed before the entry committed; it was not appended".into(),
        }),
        Outcome::TimedOut => Err(AppendError::Unknown {
            reason: format!(
                "not committed within {} s; it may still commit",
                COMMIT_TIMEOUT.as_secs()
            ),
        }),
    }
}
