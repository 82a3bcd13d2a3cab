//! A whole group on one thread: nodes, a faulty network, faulty storage,
//! clients, all driven from one seed through an event queue. Nodes `1..=N`:
//! the first are the bootstrap voters, the rest spares that wait to be
//! added (`Config::members` empty) until the operator changes the
//! configuration (`propose_configuration`, `replace_spare`). A member
//! whose disk is lost (`wipe_member`) comes back under a new id, as the
//! server's new incarnation does; its old id is retired for good.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;
use dledger_replica::consumers::{Applied, Condition, ConsumerState, OffsetCommit, PendingCommits};
use dledger_replica::core::rng::Rng;
use dledger_replica::core::{Config, Message, MessageBody, Node, ProposeError, Ready, Role};
use dledger_replica::entry::{Entry, EntryKind, Index, NodeId, Term};
use dledger_replica::executor::{carry_out, Bookkeeping, Outcome};
use dledger_replica::membership::{
    ConfigRecord, Configuration, IdChange, MemberRecord, MemberRole, Membership,
};

use super::checker::{entry_membership, newest_configuration, Checker, FORWARD_ONLY_PREFIX};
use super::storage::{SimLog, SimStorage};

mod host;

use host::Member;

pub const TICK_MS: u64 = 10;

#[derive(Debug)]
enum Event {
    Tick { node: usize, incarnation: u64 },
    Deliver(Message),
    SyncDone { node: usize, incarnation: u64 },
    Restart { node: usize },
    Crash { node: usize, incarnation: u64 },
    HealPartition { generation: u64 },
}

struct Scheduled {
    at_ms: u64,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on (time, sequence).
        (other.at_ms, other.sequence).cmp(&(self.at_ms, self.sequence))
    }
}

/// A client's batch, tracked by the server's own proposal bookkeeping
/// (`executor::Proposals`) until it is answered.
struct ClientBatch {
    /// Payload ids, one per entry, in order.
    ids: Vec<u64>,
    /// An offset commit's client (then `ids` is empty) waits for the
    /// verdict of applying it.
    offset_commit: bool,
    max_acked_when_proposed: Index,
    proposed_at_ms: u64,
}

struct PendingRead {
    request_id: u64,
    incarnation: u64,
    max_acked_when_issued: Index,
}

/// What waits for one write to be durable.
struct WaitingForSync {
    /// The executor's name for the write (`Bookkeeping::persisted`).
    sequence: u64,
    /// Its last entry, for `on_persisted`.
    last: Option<(Index, Term)>,
    /// Batches its truncation failed: "not appended" is true only once the
    /// truncation is durable (the server's `truncate_suffix` syncs before
    /// it answers; here a crash before the sync brings the entries back).
    answers: Vec<(ClientBatch, Outcome)>,
}

struct SimNode {
    /// This incarnation's id: a slot that lost its disk (`wipe_member`)
    /// has a new one.
    id: NodeId,
    /// Started with the bootstrap voters as `Config::members`; false for a
    /// spare and for a replaced (wiped) spare, which wait to be added.
    bootstrap_member: bool,
    /// A voter of some configuration entry written anywhere (or of the
    /// bootstrap set): a member that has that configuration in force may
    /// still ask it for a vote, so its disk is never wiped (a wiped voter
    /// would vote again in a term it voted in: no incarnation ids yet).
    ever_voter: bool,
    /// The highest term of a message it sent since it started.
    max_sent_term: Term,
    /// A term it won while that term was not durable on its disk yet.
    unsynced_leadership: Option<Term>,
    /// The term it led at the end of its last Ready, if it led: a commit
    /// reported as it steps down (its own removal) was still its own.
    led_term: Option<Term>,
    node: Option<Node<SimLog>>,
    storage: Rc<RefCell<SimStorage>>,
    incarnation: u64,
    sync_scheduled: bool,
    /// Per write, in order: what waits for it to be durable.
    waiting_for_sync: Vec<WaitingForSync>,
    /// Batches the Ready being carried out cut, until its write.
    truncated: Vec<(ClientBatch, Outcome)>,
    observed_commit: Index,
    /// The server's executor bookkeeping: proposals, the offset commits
    /// written, the messages waiting for a write. In memory, so a crash
    /// loses it and a restart rebuilds it.
    books: Bookkeeping<ClientBatch>,
    reads: Vec<PendingRead>,
    /// The server's consumer offsets, applied where its raft loop applies
    /// them.
    consumers: ConsumerState,
}

/// Core settings varied per run (small batches and windows split the log
/// into many appends, which exercises back-off and partial replication).
#[derive(Clone, Debug)]
pub struct Tuning {
    pub max_batch_entries: usize,
    pub max_inflight_appends: usize,
    pub preferred_leader: Option<NodeId>,
    /// `Config::promote_max_lag_entries`: small, so promotions are refused
    /// at times and retried.
    pub promote_max_lag_entries: u64,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            max_batch_entries: 16,
            max_inflight_appends: 8,
            preferred_leader: None,
            promote_max_lag_entries: 1_000,
        }
    }
}

/// Network and disk behaviour for one run.
#[derive(Clone, Debug)]
pub struct Faults {
    pub drop_probability: f64,
    pub duplicate_probability: f64,
    pub delay_ms_max: u64,
    pub sync_ms_max: u64,
    /// Chance that a node crashes right after writing a new term or vote,
    /// before the write is synced: the window where ordering bugs live.
    pub crash_on_hard_state_probability: f64,
    /// Chance that a new leader crashes within a few ms of winning: its
    /// no-op may reach some followers, and entries of earlier terms with it.
    pub crash_new_leader_probability: f64,
    /// Chance that a leader crashes right after it wrote entries, before
    /// they are synced or replicated: it leaves entries of its term alone
    /// in its log, the stuff of Figure 8.
    pub crash_leader_after_append_probability: f64,
    /// Chance that a leader crashes as soon as its commit index moves: the
    /// entries it just committed may be on a bare majority only.
    pub crash_leader_on_commit_probability: f64,
    /// Chance that a member crashes right after a Ready that replaces part
    /// of its log, before the truncation is synced: its records file
    /// already lost the records of the replaced entries.
    pub crash_after_truncation_probability: f64,
}

impl Faults {
    pub fn none() -> Faults {
        Faults {
            drop_probability: 0.0,
            duplicate_probability: 0.0,
            delay_ms_max: 5,
            sync_ms_max: 3,
            crash_on_hard_state_probability: 0.0,
            crash_new_leader_probability: 0.0,
            crash_leader_after_append_probability: 0.0,
            crash_leader_on_commit_probability: 0.0,
            crash_after_truncation_probability: 0.0,
        }
    }
}

pub struct World {
    tuning: Tuning,
    pub rng: Rng,
    pub now_ms: u64,
    sequence: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<SimNode>,
    pub faults: Faults,
    /// `blocked[from][to]`: messages from `from` to `to` are dropped.
    blocked: Vec<Vec<bool>>,
    partition_generation: u64,
    pub checker: Checker,
    next_payload_id: u64,
    next_read_id: u64,
    /// Time of the first ack of a proposal made at or after `watch_from_ms`.
    pub watch_from_ms: u64,
    pub first_ack_after_watch_ms: Option<u64>,
    pub trace: Option<VecDeque<String>>,
    pub events_processed: u64,
    pub reads_answered: u64,
    /// Payload ids a client was told were not appended: it sends them
    /// again, as a real client does. A wrong "not appended" duplicates them.
    retries: VecDeque<Vec<u64>>,
    /// Most entries a client batch has (1: no batching).
    pub max_batch_payloads: u64,
    /// Share of proposals that are offset commits, and of how many groups
    /// (half of them, rounded up, `ForwardOnly` alone).
    pub offset_commit_probability: f64,
    pub consumer_groups: u64,
    /// Nodes `1..=bootstrap_voters` start as the group's voters.
    bootstrap_voters: usize,
    /// A configuration entry was written somewhere (until then the
    /// configuration-in-force check at restart has nothing to compare).
    seen_configuration: bool,
    /// Leaders that stepped down because their own removal committed.
    pub removed_leader_handovers: u64,
    /// Retention runs in this seed (`retain`): bootstrap members then
    /// restore the bootstrap record with its payload, as the server's do,
    /// so that a log start can carry it. Off, a seed's course is as it was
    /// before log starts existed.
    pub retention: bool,
    /// Log starts followers took up, and retention deletions.
    pub log_starts_installed: u64,
    pub retention_deletions: u64,
    /// Incarnations whose disk was lost: their id never answers again (the
    /// handshake refuses an older incarnation), and their durable state is
    /// kept as it was for the checkers, as a member that crashed for good.
    retired: Vec<Retired>,
    /// The id the next new incarnation takes.
    next_id: NodeId,
    /// Members wiped with `wipe_member`, voters among them.
    pub wipes: u64,
    pub voter_wipes: u64,
}

struct Retired {
    id: NodeId,
    slot: usize,
    storage: Rc<RefCell<SimStorage>>,
}

pub type SimResult<T> = Result<T, String>;

/// The payload of a configuration entry making `membership`, with the
/// simulation's names and addresses (name and address from the id).
pub fn configuration_payload(membership: &Membership) -> Option<Bytes> {
    let member = |id: NodeId, role| MemberRecord {
        id,
        name: id.to_string(),
        incarnation: 0,
        address: format!("sim:{id}"),
        http_address: format!("sim:{id}"),
        role,
    };
    let members = membership
        .voters
        .iter()
        .map(|id| member(*id, MemberRole::Voter))
        .chain(
            membership
                .learners
                .iter()
                .map(|id| member(*id, MemberRole::Learner)),
        )
        .collect();
    Configuration::new(members)
        .ok()
        .map(|configuration| configuration.encode())
}

impl World {
    /// A group of `size` bootstrap voters and no spare.
    pub fn new(seed: u64, size: usize, faults: Faults, tuning: Tuning, trace: bool) -> World {
        World::with_spares(seed, size, 0, faults, tuning, trace)
    }

    /// `voters` bootstrap voters (nodes `1..=voters`) and `spares` nodes
    /// waiting to be added (the next ids).
    pub fn with_spares(
        seed: u64,
        voters: usize,
        spares: usize,
        faults: Faults,
        tuning: Tuning,
        trace: bool,
    ) -> World {
        let size = voters + spares;
        let bootstrap = Membership::of_voters(1..=voters as NodeId);
        let mut world = World {
            tuning,
            rng: Rng::new(seed ^ 0x5EED_0FD1_ED6E_5000),
            now_ms: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            faults,
            blocked: vec![vec![false; size]; size],
            partition_generation: 0,
            checker: Checker::new(bootstrap),
            next_payload_id: 1,
            next_read_id: 1,
            watch_from_ms: u64::MAX,
            first_ack_after_watch_ms: None,
            trace: trace.then(VecDeque::new),
            events_processed: 0,
            reads_answered: 0,
            retries: VecDeque::new(),
            max_batch_payloads: 1,
            offset_commit_probability: 0.0,
            consumer_groups: 2,
            bootstrap_voters: voters,
            seen_configuration: false,
            removed_leader_handovers: 0,
            retention: false,
            log_starts_installed: 0,
            retention_deletions: 0,
            retired: Vec::new(),
            next_id: size as NodeId + 1,
            wipes: 0,
            voter_wipes: 0,
        };
        for index in 0..size {
            world.nodes.push(SimNode {
                id: index as NodeId + 1,
                bootstrap_member: index < voters,
                ever_voter: index < voters,
                max_sent_term: 0,
                unsynced_leadership: None,
                led_term: None,
                node: None,
                storage: Rc::new(RefCell::new(SimStorage::default())),
                incarnation: 0,
                sync_scheduled: false,
                waiting_for_sync: Vec::new(),
                truncated: Vec::new(),
                observed_commit: 0,
                books: Bookkeeping::new(0, PendingCommits::default()),
                reads: Vec::new(),
                consumers: ConsumerState::default(),
            });
        }
        for index in 0..size {
            world.start_node(index).expect("a fresh node starts");
        }
        world
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The id of slot `index`'s current incarnation.
    pub fn id_of(&self, index: usize) -> NodeId {
        self.nodes[index].id
    }

    /// The slot whose current incarnation is `id` (none for a retired id).
    pub fn slot_of(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|slot| slot.id == id)
    }

    /// Every configuration a member may be in or come back with: each up
    /// member's configuration in force, a stopped one's newest saved
    /// record (a bootstrap member's own set when it has none), and the
    /// group's committed one.
    pub fn configurations_in_force(&self) -> Vec<Membership> {
        let bootstrap = Membership::of_voters(1..=self.bootstrap_voters as NodeId);
        let mut configurations: Vec<Membership> = self
            .nodes
            .iter()
            .filter_map(|slot| match slot.node.as_ref() {
                Some(node) => Some(node.membership().clone()),
                None => {
                    let storage = slot.storage.borrow();
                    match storage.configurations.iter().max_by_key(|r| r.index) {
                        Some(record) => Some(record.membership.clone()),
                        None => slot.bootstrap_member.then(|| bootstrap.clone()),
                    }
                }
            })
            .collect();
        configurations.push(self.checker.committed_membership().clone());
        configurations
    }

    /// The incarnation `id` if its disk was lost.
    fn retired(&self, id: NodeId) -> Option<&Retired> {
        self.retired.iter().find(|retired| retired.id == id)
    }

    /// Whether `id` is an incarnation whose disk was lost.
    pub fn is_retired(&self, id: NodeId) -> bool {
        self.retired(id).is_some()
    }

    /// The slot that sent as `id`, current or retired (its messages may
    /// still be in flight).
    fn sender_slot(&self, id: NodeId) -> Option<usize> {
        self.slot_of(id)
            .or_else(|| self.retired(id).map(|retired| retired.slot))
    }

    /// The disk of incarnation `id`, current or retired.
    fn storage_of(&self, id: NodeId) -> Option<&Rc<RefCell<SimStorage>>> {
        match self.slot_of(id) {
            Some(index) => Some(&self.nodes[index].storage),
            None => self.retired(id).map(|retired| &retired.storage),
        }
    }

    fn config(&self, index: usize) -> Config {
        let slot = &self.nodes[index];
        // A spare starts with no configuration, as a server started with
        // `--initial-state existing`.
        let members = if slot.bootstrap_member {
            (1..=self.bootstrap_voters as NodeId).collect()
        } else {
            Vec::new()
        };
        Config {
            max_inflight_appends: self.tuning.max_inflight_appends,
            max_batch_entries: self.tuning.max_batch_entries,
            max_batch_bytes: 256,
            max_pending_proposals: 256,
            preferred_leader: self.tuning.preferred_leader,
            promote_max_lag_entries: self.tuning.promote_max_lag_entries,
            // Floors only bound what followers delete, which the
            // simulation's retention ignores on purpose; sending them would
            // change every seed's course.
            retention_floor: false,
            ..Config::new(slot.id, members)
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = self.trace.as_mut() {
            trace.push_back(format!("{:>7}ms {}", self.now_ms, line()));
            if trace.len() > 4000 {
                trace.pop_front();
            }
        }
    }

    fn schedule(&mut self, delay_ms: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Scheduled {
            at_ms: self.now_ms + delay_ms,
            sequence: self.sequence,
            event,
        });
    }

    /// Crashes node `index`, as it is now (this incarnation), after `delay_ms`.
    fn crash_later(&mut self, index: usize, delay_ms: u64) {
        let incarnation = self.nodes[index].incarnation;
        self.schedule(
            delay_ms,
            Event::Crash {
                node: index,
                incarnation,
            },
        );
    }

    fn start_node(&mut self, index: usize) -> SimResult<()> {
        let id = self.nodes[index].id;
        let config = self.config(index);
        let hard_state = self.nodes[index].storage.borrow().synced_hard_state;
        let log = SimLog(self.nodes[index].storage.clone());
        let seed = self.rng.next_u64();
        let mut node = Node::new(config, log, hard_state, seed)
            .map_err(|error| format!("node {id} failed to start: {error}"))?;
        // As the server: the saved records before any other input, with
        // the bootstrap record (payload and all) of a bootstrap member.
        let mut records = self.nodes[index].storage.borrow().configurations.clone();
        if self.retention && self.nodes[index].bootstrap_member {
            records.insert(0, self.bootstrap_record());
        }
        node.restore_configurations(records)
            .map_err(|error| format!("node {id} restoring its configurations: {error}"))?;
        if self.seen_configuration {
            let storage = self.nodes[index].storage.borrow();
            self.checker.configuration_in_force(
                id,
                "at restart",
                node.membership(),
                &storage.current,
                &bootstrap_in(&storage, &node, self.bootstrap_voters),
            )?;
        }
        // As `server::rebuild_consumers`: the checkpoint (or nothing
        // applied below the first index), then every offset commit on disk
        // after it waits for the commit index.
        let checkpoint = self.nodes[index].storage.borrow().checkpoint.clone();
        let consumers = if checkpoint.is_empty() {
            let mut consumers = ConsumerState::default();
            consumers.skip_to(node.first_index().saturating_sub(1));
            consumers
        } else {
            ConsumerState::decode_checkpoint(&checkpoint)
                .map_err(|defect| format!("node {id}: its checkpoint: {}", defect.reason))?
        };
        let mut consumer_pending = PendingCommits::default();
        let scan_from = consumers.applied_index() as usize;
        let storage = self.nodes[index].storage.borrow();
        let malformed =
            consumer_pending.on_append(storage.current.get(scan_from..).unwrap_or_default());
        drop(storage);
        if !malformed.is_empty() {
            return Err(format!("node {id}: malformed offset commits {malformed:?}"));
        }
        let last_index = node.last_index();
        let slot = &mut self.nodes[index];
        slot.node = Some(node);
        slot.led_term = None;
        slot.max_sent_term = 0;
        slot.unsynced_leadership = None;
        slot.observed_commit = 0;
        slot.consumers = consumers;
        slot.books = Bookkeeping::new(last_index, consumer_pending);
        let incarnation = slot.incarnation;
        let phase = self.rng.below(TICK_MS) + 1;
        self.schedule(
            phase,
            Event::Tick {
                node: index,
                incarnation,
            },
        );
        self.note(|| format!("node {id} starts"));
        Ok(())
    }

    pub fn is_up(&self, index: usize) -> bool {
        self.nodes[index].node.is_some()
    }

    pub fn node(&self, index: usize) -> Option<&Node<SimLog>> {
        self.nodes[index].node.as_ref()
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter_map(|index| {
                let node = self.nodes[index].node.as_ref()?;
                (node.role() == Role::Leader).then_some((node.term(), index))
            })
            .max()
            .map(|(_, index)| index)
    }

    pub fn crash(&mut self, index: usize) -> SimResult<()> {
        let slot = &mut self.nodes[index];
        if slot.node.take().is_none() {
            return Ok(());
        }
        slot.incarnation += 1;
        slot.sync_scheduled = false;
        slot.waiting_for_sync.clear();
        slot.truncated.clear();
        // The clients of a crashed member never learn the outcome.
        slot.books.proposals.drain();
        slot.reads.clear();
        let id = slot.id;
        let kept = slot.storage.borrow_mut().crash(&mut self.rng);
        let vanished = slot.unsynced_leadership.filter(|term| {
            let storage = slot.storage.borrow();
            let durable_term = storage
                .synced_hard_state
                .term
                .max(storage.synced.last().map_or(0, |entry| entry.term));
            durable_term < *term && slot.max_sent_term < *term
        });
        if let Some(term) = vanished {
            self.checker.leadership_vanished(term, id);
            self.note(|| format!("node {id} led term {term} without a trace: forgotten"));
        }
        if let Some(position) = kept {
            let storage = self.nodes[index].storage.clone();
            self.checker
                .entries_durable(id, &storage.borrow().synced, position)?;
        }
        let synced_len = self.nodes[index].storage.borrow().synced.len();
        self.note(|| {
            format!("node {id} crashes (durable log {synced_len}, torn tail kept: {kept:?})")
        });
        Ok(())
    }

    pub fn restart(&mut self, index: usize) -> SimResult<()> {
        if self.is_up(index) {
            return Ok(());
        }
        self.start_node(index)
    }

    /// Wipe a stopped node's disk (log, hard state, configuration).
    pub fn wipe(&mut self, index: usize) {
        assert!(!self.is_up(index), "wipe a stopped node");
        self.nodes[index].storage.borrow_mut().wipe();
        let id = self.nodes[index].id;
        self.note(|| format!("node {id} disk wiped"));
    }

    /// Whether the operator may replace node `index` with a fresh one: it
    /// was never a voter (see `SimNode::ever_voter`).
    pub fn replaceable(&self, index: usize) -> bool {
        !self.nodes[index].ever_voter
    }

    /// The operator replaces spare `index` with a fresh one (a new pod on
    /// an empty volume, started to join an existing group): stopped, wiped
    /// and started again with no configuration. Only for a node that no
    /// committed configuration of the group has any more, and that was
    /// never a voter: a removed member that never learnt its removal may
    /// still count a former voter's vote, and a wiped one grants it again
    /// (seed 693 had two leaders of term 4 that way).
    pub fn replace_spare(&mut self, index: usize) -> SimResult<()> {
        assert!(self.replaceable(index), "a former voter is never wiped");
        self.crash(index)?;
        self.wipe(index);
        self.nodes[index].bootstrap_member = false;
        self.start_node(index)
    }

    /// Slot `index` loses its disk, whatever it was (voter, learner,
    /// spare): it crashes, and its pod comes back on an empty volume as a
    /// new incarnation with a new id, waiting to be added (the server's
    /// `--initial-state existing`). The old id is retired: the group still
    /// counts it in its configuration until the operator removes it, but
    /// it never answers again, so it can never vote twice in a term nor be
    /// counted for an entry it no longer holds.
    pub fn wipe_member(&mut self, index: usize) -> SimResult<()> {
        self.crash(index)?;
        let old = self.nodes[index].id;
        let id = self.next_id;
        self.next_id += 1;
        let storage = std::mem::take(&mut self.nodes[index].storage);
        self.retired.push(Retired {
            id: old,
            slot: index,
            storage,
        });
        let slot = &mut self.nodes[index];
        slot.id = id;
        slot.bootstrap_member = false;
        slot.ever_voter = false;
        self.wipes += 1;
        self.note(|| format!("node {old} lost its disk: back as node {id}"));
        self.start_node(index)
    }

    /// The operator proposes `next` as the configuration at node `index`
    /// (normally the leader). The core's answer is returned; a refusal
    /// changes nothing and is retried by a later action.
    pub fn propose_configuration(
        &mut self,
        index: usize,
        next: &Membership,
    ) -> SimResult<Option<Result<(Index, Term), ProposeError>>> {
        let Some(payload) = configuration_payload(next) else {
            return Ok(None);
        };
        let id = self.nodes[index].id;
        let Some(node) = self.nodes[index].node.as_mut() else {
            return Ok(None);
        };
        let result = node.propose_configuration(payload);
        self.note(|| format!("operator at node {id}: {next:?}: {result:?}"));
        self.drive(index)?;
        Ok(Some(result))
    }

    pub fn schedule_restart(&mut self, index: usize, delay_ms: u64) {
        self.schedule(delay_ms, Event::Restart { node: index });
    }

    pub fn heal_partitions(&mut self) {
        for row in self.blocked.iter_mut() {
            row.fill(false);
        }
        self.partition_generation += 1;
        self.note(|| "partitions healed".to_string());
    }

    /// Block messages between groups. `cut(a, b)` blocks a→b only.
    pub fn cut(&mut self, from: usize, to: usize) {
        self.blocked[from][to] = true;
    }

    /// A random partition of one of several shapes, healed after `heal_ms`.
    pub fn random_partition(&mut self, heal_ms: u64) {
        let size = self.nodes.len();
        if size < 2 {
            return;
        }
        self.heal_partitions();
        let shape = self.rng.below(4);
        match shape {
            0 => {
                // Symmetric split.
                let side: Vec<bool> = (0..size).map(|_| self.rng.chance(0.5)).collect();
                for a in 0..size {
                    for b in 0..size {
                        if side[a] != side[b] {
                            self.cut(a, b);
                        }
                    }
                }
            }
            1 => {
                // One-way cuts.
                for _ in 0..=self.rng.below(size as u64) {
                    let a = self.rng.below(size as u64) as usize;
                    let b = self.rng.below(size as u64) as usize;
                    if a != b {
                        self.cut(a, b);
                    }
                }
            }
            2 => {
                // A bridge: two sides that only one node connects.
                let bridge = self.rng.below(size as u64) as usize;
                let side: Vec<bool> = (0..size).map(|_| self.rng.chance(0.5)).collect();
                for a in 0..size {
                    for b in 0..size {
                        if a != bridge && b != bridge && side[a] != side[b] {
                            self.cut(a, b);
                        }
                    }
                }
            }
            _ => {
                // Isolate one node.
                let alone = self.rng.below(size as u64) as usize;
                for other in 0..size {
                    if other != alone {
                        self.cut(alone, other);
                        self.cut(other, alone);
                    }
                }
            }
        }
        let blocked = self.blocked.clone();
        self.note(|| format!("partition shape {shape}: blocked {blocked:?}"));
        let generation = self.partition_generation;
        self.schedule(heal_ms, Event::HealPartition { generation });
    }

    /// A client proposes a batch at node `index`: the payloads it was told
    /// were not appended, else 1..=`max_batch_payloads` fresh ones.
    pub fn propose(&mut self, index: usize) -> SimResult<()> {
        let now_ms = self.now_ms;
        let max_acked = self.checker.max_acked_index;
        if self.nodes[index].node.is_none() {
            return Ok(());
        }
        if self.rng.chance(self.offset_commit_probability) {
            return self.propose_offset(index);
        }
        let retry = self.retries.pop_front();
        let is_retry = retry.is_some();
        let ids = retry.unwrap_or_else(|| {
            let count = self.rng.range(1, self.max_batch_payloads + 1);
            let first = self.next_payload_id;
            self.next_payload_id += count;
            (first..first + count).collect()
        });
        let slot = &mut self.nodes[index];
        let node = slot.node.as_mut().expect("up");
        let mut appended: Option<(Index, Index, Term)> = None;
        for id in &ids {
            let mut payload = id.to_le_bytes().to_vec();
            payload.extend_from_slice(&[0xAB; 8]);
            match node.propose(Bytes::from(payload)) {
                Ok((entry_index, term)) => {
                    let (first, _, _) = appended.get_or_insert((entry_index, entry_index, term));
                    appended = Some((*first, entry_index, term));
                }
                Err(_) => break,
            }
        }
        let node_id = slot.id;
        match appended {
            Some((first, last, term)) => {
                let batch = ClientBatch {
                    ids: ids.clone(),
                    offset_commit: false,
                    max_acked_when_proposed: max_acked,
                    proposed_at_ms: now_ms,
                };
                let requested = ids.len() as u64;
                if slot
                    .books
                    .proposals
                    .push(first, last, requested, term, u64::MAX, batch)
                    .is_err()
                {
                    return Err(format!(
                        "node {node_id}: proposal {first}..={last} out of order"
                    ));
                }
                self.note(|| {
                    format!("client proposes {ids:?} at node {node_id}: {first}..={last}@{term}")
                });
            }
            // Refused outright: nothing appended, the client tries again.
            None if is_retry => self.retries.push_front(ids),
            None => {}
        }
        self.drive(index)
    }

    /// A consumer commits an offset at node `index`, as the server's
    /// `propose_offset` does: checked against the state applied so far,
    /// refused at once if that fails, else proposed and answered with the
    /// verdict of applying it.
    fn propose_offset(&mut self, index: usize) -> SimResult<()> {
        let now_ms = self.now_ms;
        let max_acked = self.checker.max_acked_index;
        let group_number = self.rng.below(self.consumer_groups);
        let forward_only = group_number % 2 == 0;
        let group = if forward_only {
            format!("{FORWARD_ONLY_PREFIX}{group_number}")
        } else {
            format!("g-{group_number}")
        };
        let slot = &mut self.nodes[index];
        let Some(node) = slot.node.as_mut() else {
            return Ok(());
        };
        let (first_index, commit_index) = (node.first_index(), node.commit_index());
        // Near the commit index (consumers read the tail), a few entries
        // back at times, so commits of one group race and some go back.
        let back = self.rng.below(8).min(commit_index);
        let offset = (commit_index + 1 - back).max(first_index);
        let current = slot.consumers.offset(&group);
        let condition = match self.rng.below(3) {
            _ if forward_only => Condition::ForwardOnly,
            0 => Condition::None,
            1 => Condition::Expected(current.unwrap_or(0)),
            _ => Condition::ForwardOnly,
        };
        let commit = OffsetCommit {
            group,
            offset,
            condition,
        };
        if slot
            .consumers
            .check(&commit, first_index, commit_index)
            .is_err()
        {
            return Ok(());
        }
        let payload = commit.encode();
        let Ok((entry_index, term)) = node.propose_entry(EntryKind::ConsumerOffset, payload) else {
            return Ok(());
        };
        let batch = ClientBatch {
            ids: Vec::new(),
            offset_commit: true,
            max_acked_when_proposed: max_acked,
            proposed_at_ms: now_ms,
        };
        let node_id = slot.id;
        if slot
            .books
            .proposals
            .push(entry_index, entry_index, 1, term, u64::MAX, batch)
            .is_err()
        {
            return Err(format!(
                "node {node_id}: offset commit at {entry_index} out of order"
            ));
        }
        self.note(|| {
            format!("consumer commits {commit:?} at node {node_id}: {entry_index}@{term}")
        });
        self.drive(index)
    }

    /// A client asks node `index` for a linearizable read.
    pub fn read(&mut self, index: usize) -> SimResult<()> {
        let request_id = self.next_read_id;
        self.next_read_id += 1;
        let max_acked = self.checker.max_acked_index;
        let slot = &mut self.nodes[index];
        let Some(node) = slot.node.as_mut() else {
            return Ok(());
        };
        node.read_index(request_id)
            .map_err(|error| format!("read_index failed: {error}"))?;
        slot.reads.push(PendingRead {
            request_id,
            incarnation: slot.incarnation,
            max_acked_when_issued: max_acked,
        });
        self.drive(index)
    }

    pub fn transfer(&mut self, index: usize, target: Option<NodeId>) -> SimResult<()> {
        let Some(node) = self.nodes[index].node.as_mut() else {
            return Ok(());
        };
        let result = node.transfer_leadership(target);
        let id = self.nodes[index].id;
        self.note(|| format!("transfer at node {id} to {target:?}: {result:?}"));
        self.drive(index)
    }

    /// Run events until `until_ms` (exclusive).
    pub fn run_until(&mut self, until_ms: u64) -> SimResult<()> {
        while let Some(next) = self.queue.peek() {
            if next.at_ms >= until_ms {
                break;
            }
            let scheduled = self.queue.pop().expect("peeked");
            self.now_ms = scheduled.at_ms;
            self.events_processed += 1;
            self.handle(scheduled.event)?;
            self.check_durability()?;
        }
        self.now_ms = until_ms;
        Ok(())
    }

    fn handle(&mut self, event: Event) -> SimResult<()> {
        match event {
            Event::Tick { node, incarnation } => {
                if self.nodes[node].incarnation != incarnation || !self.is_up(node) {
                    return Ok(());
                }
                let id = self.nodes[node].id;
                self.nodes[node]
                    .node
                    .as_mut()
                    .expect("up")
                    .tick()
                    .map_err(|error| format!("node {id} tick: {error}"))?;
                self.schedule(TICK_MS, Event::Tick { node, incarnation });
                self.drive(node)
            }
            Event::Deliver(message) => {
                // To a retired id: the new incarnation at that address
                // refuses the connection.
                let Some(to) = self.slot_of(message.to) else {
                    return Ok(());
                };
                let from = self
                    .sender_slot(message.from)
                    .ok_or_else(|| format!("a message from unknown node {}", message.from))?;
                if self.blocked[from][to] || !self.is_up(to) {
                    return Ok(());
                }
                self.note(|| format!("deliver {message:?}"));
                if let MessageBody::VoteResponse { reject: None } = message.body {
                    self.checker
                        .vote_delivered(message.term, message.from, message.to);
                }
                let id = message.to;
                self.nodes[to]
                    .node
                    .as_mut()
                    .expect("up")
                    .step(message)
                    .map_err(|error| format!("node {id} step: {error}"))?;
                self.drive(to)
            }
            Event::SyncDone { node, incarnation } => {
                if self.nodes[node].incarnation != incarnation || !self.is_up(node) {
                    return Ok(());
                }
                self.sync(node)
            }
            Event::Restart { node } => self.restart(node),
            Event::Crash { node, incarnation } => {
                if self.nodes[node].incarnation != incarnation || !self.is_up(node) {
                    return Ok(());
                }
                self.crash(node)?;
                let down_ms = self.rng.range(10, 1_000);
                self.schedule_restart(node, down_ms);
                Ok(())
            }
            Event::HealPartition { generation } => {
                if generation == self.partition_generation {
                    self.heal_partitions();
                }
                Ok(())
            }
        }
    }

    fn send(&mut self, message: Message) {
        // Sent is seen, even if the network loses it.
        if let Some(index) = self.slot_of(message.from) {
            let slot = &mut self.nodes[index];
            slot.max_sent_term = slot.max_sent_term.max(message.term);
        }
        if self.rng.chance(self.faults.drop_probability) {
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate_probability) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.range(1, self.faults.delay_ms_max + 1);
            self.schedule(delay, Event::Deliver(message.clone()));
        }
    }

    /// Handle every Ready the node has.
    fn drive(&mut self, index: usize) -> SimResult<()> {
        loop {
            let id = self.nodes[index].id;
            let Some(node) = self.nodes[index].node.as_mut() else {
                return Ok(());
            };
            if !node.has_ready() {
                return Ok(());
            }
            let ready = node
                .ready()
                .map_err(|error| format!("node {id} ready: {error}"))?;
            self.handle_ready(index, ready)?;
        }
    }

    /// Carries out a Ready with the server's executor, this member as its
    /// host (`host::Member`).
    fn handle_ready(&mut self, index: usize, ready: Ready) -> SimResult<()> {
        let saves_configurations = ready.configurations.is_some();
        carry_out(&mut Member { world: self, index }, ready)?;
        let slot = &self.nodes[index];
        if let (true, Some(node)) = (saves_configurations, slot.node.as_ref()) {
            let storage = slot.storage.borrow();
            self.checker.configuration_in_force(
                slot.id,
                "after writing",
                node.membership(),
                &storage.current,
                &bootstrap_in(&storage, node, self.bootstrap_voters),
            )?;
        }
        let slot = &mut self.nodes[index];
        slot.led_term = slot
            .node
            .as_ref()
            .filter(|node| node.role() == Role::Leader)
            .map(|node| node.term());
        Ok(())
    }

    /// The bootstrap voters as the server keeps them: a record at index 0
    /// with its payload.
    fn bootstrap_record(&self) -> ConfigRecord {
        let membership = Membership::of_voters(1..=self.bootstrap_voters as NodeId);
        ConfigRecord {
            index: 0,
            term: 0,
            payload: configuration_payload(&membership).unwrap_or_default(),
            membership,
        }
    }

    /// Turns retention on (see `World::retention`), right after the world
    /// is made and before it runs: the started bootstrap members take up
    /// the bootstrap record with its payload, their first input.
    pub fn enable_retention(&mut self) -> SimResult<()> {
        self.retention = true;
        let record = self.bootstrap_record();
        for slot in &mut self.nodes {
            if let (true, Some(node)) = (slot.bootstrap_member, slot.node.as_mut()) {
                node.restore_configurations(vec![record.clone()])
                    .map_err(|error| format!("node {}: {error}", slot.id))?;
            }
        }
        Ok(())
    }

    /// Retention on node `index`: its log starts after its commit index
    /// from now on, with its consumer state there as the checkpoint.
    /// Unlike the server it does not wait for lagging followers: log
    /// starts are what this is for.
    pub fn retain(&mut self, index: usize) -> SimResult<()> {
        let slot = &self.nodes[index];
        let Some(node) = slot.node.as_ref() else {
            return Ok(());
        };
        let start = slot.observed_commit.min(node.commit_index());
        let storage = slot.storage.borrow();
        if start <= storage.start || start as usize > storage.synced.len() {
            return Ok(());
        }
        drop(storage);
        let checkpoint = Bytes::from(slot.consumers.encode_checkpoint(start));
        let id = slot.id;
        slot.storage.borrow_mut().delete_through(start, checkpoint);
        self.retention_deletions += 1;
        self.note(|| format!("node {id} retention: the log starts after {start}"));
        Ok(())
    }

    fn sync(&mut self, index: usize) -> SimResult<()> {
        let id = self.nodes[index].id;
        let storage = self.nodes[index].storage.clone();
        let changed = storage.borrow_mut().sync();
        if let Some(position) = changed {
            self.checker
                .entries_durable(id, &storage.borrow().synced, position)?;
        }
        let slot = &mut self.nodes[index];
        slot.sync_scheduled = false;
        let waiting = std::mem::take(&mut slot.waiting_for_sync);
        for WaitingForSync {
            sequence,
            last,
            answers,
        } in waiting
        {
            self.answer_proposals(answers, &[])?;
            let slot = &mut self.nodes[index];
            if let Some((last_index, last_term)) = last {
                slot.node
                    .as_mut()
                    .expect("up")
                    .on_persisted(last_index, last_term)
                    .map_err(|error| format!("node {id} on_persisted: {error}"))?;
            }
            let free = slot.books.persisted(sequence)?;
            for message in free {
                self.send(message);
            }
        }
        self.drive(index)
    }

    /// The clients learn their batches' outcomes: acknowledged entries go to
    /// the checker, entries "not appended" are sent again.
    fn answer_proposals(
        &mut self,
        answers: Vec<(ClientBatch, Outcome)>,
        verdicts: &[(Index, Applied)],
    ) -> SimResult<()> {
        for (batch, outcome) in answers {
            if batch.offset_commit {
                if let Outcome::Committed { first_index, .. } = outcome {
                    let Some((_, verdict)) = verdicts.iter().find(|(at, _)| *at == first_index)
                    else {
                        return Err(format!(
                            "offset commit at {first_index} committed without a verdict"
                        ));
                    };
                    self.note(|| format!("consumer told {first_index}: {verdict:?}"));
                    self.checker.offset_acknowledged(first_index, verdict)?;
                }
                continue;
            }
            let (first_index, acked) = match outcome {
                Outcome::Committed {
                    first_index, count, ..
                } => (first_index, count as usize),
                Outcome::PartlyCommitted {
                    first_index,
                    committed,
                    ..
                } => (first_index, committed as usize),
                Outcome::NotAppended => (0, 0),
                // Unknown outcome: a careful client does not resend.
                Outcome::TimedOut | Outcome::LogDropped => continue,
            };
            let ids = batch.ids.clone();
            self.note(|| format!("client told {ids:?}: {outcome:?}"));
            for (offset, payload_id) in batch.ids.iter().take(acked).enumerate() {
                self.checker.acknowledged(
                    *payload_id,
                    first_index + offset as Index,
                    batch.max_acked_when_proposed,
                )?;
            }
            if acked > 0
                && batch.proposed_at_ms >= self.watch_from_ms
                && self.first_ack_after_watch_ms.is_none()
            {
                self.first_ack_after_watch_ms = Some(self.now_ms);
            }
            if acked < batch.ids.len() {
                self.retries.push_back(batch.ids[acked..].to_vec());
            }
        }
        Ok(())
    }

    fn read_answered(
        &mut self,
        index: usize,
        request_id: u64,
        result: Option<Index>,
    ) -> SimResult<()> {
        let slot = &mut self.nodes[index];
        let Some(position) = slot
            .reads
            .iter()
            .position(|read| read.request_id == request_id)
        else {
            return Ok(());
        };
        let read = slot.reads.remove(position);
        if read.incarnation != slot.incarnation {
            return Ok(());
        }
        if let Some(read_index) = result {
            self.reads_answered += 1;
            self.checker
                .read_answered(request_id, read_index, read.max_acked_when_issued)?;
        }
        Ok(())
    }

    /// Each promotion leader `id` just appended is of a caught-up learner.
    fn check_promotions(
        &self,
        id: NodeId,
        node: &Node<SimLog>,
        log: &[Entry],
        appended: &[Entry],
    ) -> SimResult<()> {
        for entry in appended {
            if entry.kind != EntryKind::Configuration {
                continue;
            }
            let before = match newest_configuration(&log[..entry.index as usize - 1]) {
                Some(previous) => entry_membership(previous)?,
                None => Membership::of_voters(node.config().members.iter().copied()),
            };
            let Ok(IdChange::Promote(learner)) = before.single_change(&entry_membership(entry)?)
            else {
                continue;
            };
            let storage = self
                .storage_of(learner)
                .ok_or_else(|| format!("promoted node {learner} never existed"))?
                .borrow();
            self.checker.promotion_caught_up(
                id,
                entry.term,
                entry.index,
                learner,
                node.config().promote_max_lag_entries,
                log,
                &storage.synced,
                storage.synced_hard_state.term,
            )?;
        }
        Ok(())
    }

    /// The term of entry `index` in node `id`'s durable log.
    fn synced_term(&self, id: NodeId, index: Index) -> Option<Term> {
        let storage = self.storage_of(id)?.borrow();
        storage
            .synced
            .get((index as usize).checked_sub(1)?)
            .map(|entry| entry.term)
    }

    fn check_durability(&self) -> SimResult<()> {
        self.checker
            .committed_durable(|id, index| self.synced_term(id, index))
    }

    pub fn dump_trace(&self) -> String {
        match &self.trace {
            Some(trace) => trace.iter().cloned().collect::<Vec<_>>().join("\n"),
            None => String::new(),
        }
    }
}

/// The configuration in force where a node's log has no configuration
/// entry: its own bootstrap set, or the group's once it took up a log
/// start (a spare's own is empty, but the start's is the group's).
fn bootstrap_in(storage: &SimStorage, node: &Node<SimLog>, bootstrap_voters: usize) -> Vec<NodeId> {
    if storage.installed_start {
        (1..=bootstrap_voters as NodeId).collect()
    } else {
        node.config().members.clone()
    }
}
