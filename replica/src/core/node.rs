//! [`Node`]: the state of one member, its inputs and its Ready.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::entry::{Entry, EntryKind, HardState, Index, NodeId, Term};
use crate::membership::{ConfigRecord, Membership};

use super::log::{LogRead, RaftLog};
use super::message::{Message, MessageBody};
use super::progress::{Progress, ProgressState};
use super::read_only::ReadOnly;
use super::ready::{
    LogStart, ReadError, ReadState, Ready, Role, SoftState, TransferAbort, TransferOutcome,
};
use super::rng::Rng;
use super::violation::{Violation, ViolationKind};
use super::{Config, CoreError, ProposeError, TransferError};

/// A leadership hand-over in progress.
#[derive(Clone, Copy, Debug)]
pub(super) struct Transfer {
    pub(super) target: NodeId,
    pub(super) elapsed_ticks: u64,
    pub(super) timeout_now_sent: bool,
}

/// What the leader reports about one follower (for `/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The follower.
    pub id: NodeId,
    /// Highest index known durable on it and matching the leader's log.
    pub match_index: Index,
    /// The next index the leader will send it.
    pub next_index: Index,
    /// Probe or replicate.
    pub state: ProgressState,
    /// Ticks since the leader last heard from it.
    pub last_contact_ticks: u64,
    /// Set when it needs entries retention already removed.
    pub needs_compacted_entries: bool,
}

/// One member of a group. See the module documentation for the loop.
pub struct Node<L: LogRead> {
    pub(super) config: Config,
    pub(super) id: NodeId,
    /// The other members of the configuration in force, voters first.
    pub(super) peers: Vec<NodeId>,
    /// The configuration records from the one in force at the log start on
    /// (see `reconfig`). Invariant: non-empty, indexes increasing.
    pub(super) configs: Vec<ConfigRecord>,
    /// The newest record's member set: the configuration in force.
    pub(super) membership: Membership,
    /// `configs` changed since the last Ready.
    pub(super) configs_changed: bool,
    /// Leader only: ticks since its own removal committed (it takes no
    /// proposals and hands over once its entries are committed).
    pub(super) leaving_ticks: Option<u64>,
    /// Records of entries a truncation replaced: the durable log may still
    /// hold them until what replaced them is durable, so the records to
    /// persist keep them (see `reconfig`).
    pub(super) replaced_configs: Vec<ConfigRecord>,
    pub(super) term: Term,
    pub(super) vote: Option<NodeId>,
    pub(super) role: Role,
    pub(super) leader_id: Option<NodeId>,
    pub(super) log: RaftLog<L>,
    pub(super) rng: Rng,
    /// Followers and candidates: ticks since the last leader contact or
    /// election start. Leader: ticks since the last check-quorum.
    pub(super) election_elapsed: u64,
    pub(super) heartbeat_elapsed: u64,
    /// Invariant: in `[election_ticks, 2 * election_ticks)`.
    pub(super) randomized_election_ticks: u64,
    pub(super) votes: BTreeMap<NodeId, bool>,
    /// Leader only: one entry per peer.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    pub(super) read_only: ReadOnly,
    /// Leader only: reads that arrived before its no-op committed, as
    /// (request id, tick asked).
    pub(super) reads_before_noop: Vec<(u64, u64)>,
    /// Ticks since start: the clock read deadlines are measured on.
    pub(super) now_ticks: u64,
    /// Leader only: the index of this term's no-op.
    pub(super) noop_index: Index,
    pub(super) transfer: Option<Transfer>,
    /// Leader only: it won on its own vote alone (a single voter), so its
    /// term may not be durable yet; until its no-op is, everything it sends
    /// waits for the Ready that carries the term. Otherwise a crash could
    /// lose the term and the member win the same term again with other
    /// entries, which members (learners) that heard the first would take
    /// for the same leader's. A leader elected by others' votes has a
    /// durable term: vote requests leave only once it is.
    pub(super) term_unsynced: bool,
    /// Leader only: ticks before the preferred leader may be tried again.
    pub(super) preferred_cooldown_ticks: u64,
    /// Follower: highest index known to match the current leader's log in
    /// this term (a heartbeat never commits past it).
    pub(super) leader_match_index: Index,
    /// Proposals were appended and appends are not yet sent.
    pub(super) appends_pending: bool,
    pub(super) messages: Vec<Message>,
    pub(super) persisted_messages: Vec<Message>,
    pub(super) read_states: Vec<ReadState>,
    pub(super) transfer_outcomes: Vec<TransferOutcome>,
    pub(super) violations: Vec<Violation>,
    /// A log start installed from the leader, for the next Ready.
    pub(super) log_start: Option<LogStart>,
    /// Follower: the retention floor a leader last sent.
    pub(super) leader_keep_from: Option<Index>,
    /// Leader: the floor last sent, and when (ticks).
    pub(super) keep_from_sent: Option<(Index, u64)>,
    /// The commit index the leader of the current term last sent, as sent
    /// (it may be past this member's log: that difference is its lag).
    pub(super) leader_commit_told: Option<Index>,
    /// Whether any leader was followed (or this member led) since start.
    pub(super) heard_from_leader: bool,
    last_hard_state: HardState,
    last_soft_state: SoftState,
    last_commit: Index,
    failed: bool,
}

impl<L: LogRead> Node<L> {
    /// A member restarting from `hard_state` and the durable log `log`,
    /// drawing its timeouts from `rng_seed`. It starts as a follower with no
    /// known leader and a commit index of `log.first_index() - 1`.
    pub fn new(
        config: Config,
        log: L,
        hard_state: HardState,
        rng_seed: u64,
    ) -> Result<Node<L>, CoreError> {
        config.validate()?;
        let log = RaftLog::new(log);
        let last_term = log.last_term()?;
        // Entries are never written at a term newer than the durable term,
        // unless the hard state write was lost: a higher term without a vote
        // is then the safe reading.
        let (term, vote) = if last_term > hard_state.term {
            (last_term, None)
        } else {
            (hard_state.term, hard_state.vote)
        };
        let id = config.id;
        let bootstrap = ConfigRecord::bootstrap(config.members.iter().copied());
        let membership = bootstrap.membership.clone();
        let peers = membership.others(id);
        let commit = log.committed();
        let mut node = Node {
            id,
            peers,
            configs: vec![bootstrap],
            membership,
            configs_changed: false,
            leaving_ticks: None,
            replaced_configs: Vec::new(),
            term,
            vote,
            role: Role::Follower,
            leader_id: None,
            log,
            rng: Rng::new(rng_seed),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks: config.election_ticks,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            read_only: ReadOnly::default(),
            reads_before_noop: Vec::new(),
            now_ticks: 0,
            noop_index: 0,
            transfer: None,
            term_unsynced: false,
            preferred_cooldown_ticks: 0,
            leader_match_index: 0,
            appends_pending: false,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            transfer_outcomes: Vec::new(),
            violations: Vec::new(),
            log_start: None,
            leader_keep_from: None,
            keep_from_sent: None,
            leader_commit_told: None,
            heard_from_leader: false,
            last_hard_state: hard_state,
            last_soft_state: SoftState {
                role: Role::Follower,
                leader_id: None,
                term: hard_state.term,
            },
            last_commit: commit,
            failed: false,
            config,
        };
        node.reset_election_timer();
        Ok(node)
    }

    // ----- inputs -----

    /// Advance the logical clock by one tick.
    pub fn tick(&mut self) -> Result<(), CoreError> {
        self.guard(|node| node.tick_inner())
    }

    /// Take a message from a peer. Messages for another node or from a
    /// non-member are ignored.
    pub fn step(&mut self, message: Message) -> Result<(), CoreError> {
        self.guard(|node| node.step_inner(message))
    }

    /// The transport saw `peer`'s connection close or reset, which a dead
    /// process does and a partition does not. When `peer` is this
    /// follower's leader, it stops counting on it: it forgets the leader
    /// (so it no longer refuses votes for stickiness) and campaigns within
    /// a heartbeat period, still through pre-vote, instead of waiting out
    /// the election timeout. Members that still hear the leader refuse the
    /// pre-vote, so a false alarm changes nothing.
    pub fn peer_connection_closed(&mut self, peer: NodeId) -> Result<(), CoreError> {
        self.ensure_alive()?;
        if self.role == Role::Follower && self.leader_id == Some(peer) {
            self.leader_id = None;
            // Spread over a heartbeat period so the survivors do not split
            // the vote by campaigning in the same tick.
            let delay_ticks = self.rng.range(0, self.config.heartbeat_ticks.max(1));
            self.election_elapsed = self
                .randomized_election_ticks
                .saturating_sub(delay_ticks + 1);
        }
        Ok(())
    }

    /// Append `payload` as a new entry (leader only). Returns its (index,
    /// term); see [`Ready`] for how to tell when it is acknowledged or lost.
    pub fn propose(&mut self, payload: Bytes) -> Result<(Index, Term), ProposeError> {
        self.propose_entry(EntryKind::Normal, payload)
    }

    /// As [`propose`](Self::propose), for an entry of `kind`: a client's
    /// payload ([`EntryKind::Normal`]) or metadata the members apply in log
    /// order ([`EntryKind::ConsumerOffset`]). The core's own kinds (no-op,
    /// configuration) are appended by the core alone and refused here.
    pub fn propose_entry(
        &mut self,
        kind: EntryKind,
        payload: Bytes,
    ) -> Result<(Index, Term), ProposeError> {
        if !matches!(kind, EntryKind::Normal | EntryKind::ConsumerOffset) {
            return Err(ProposeError::NotAClientKind(kind));
        }
        self.ensure_alive()?;
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader_id,
            });
        }
        if self.transfer.is_some() || self.leaving_ticks.is_some() {
            return Err(ProposeError::Transferring);
        }
        let pending = self.log.last_index() - self.log.committed();
        if pending >= self.config.max_pending_proposals as Index {
            return Err(ProposeError::TooManyPending);
        }
        let index = self.append_own(kind, payload);
        Ok((index, self.term))
    }

    /// Ask for a linearizable read. The answer comes in `Ready::read_states`
    /// under `request_id`: an index once the leader confirmed its leadership
    /// with a majority and committed its term's no-op, or an error.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), CoreError> {
        self.guard(|node| node.read_index_inner(request_id))
    }

    /// Hand leadership to `target`, or to the most caught-up follower when
    /// `None`. The target gets TimeoutNow once its log matches the leader's;
    /// proposals meanwhile get [`ProposeError::Transferring`]; the transfer
    /// is abandoned after an election timeout. The end shows in
    /// `Ready::transfer_outcomes`.
    pub fn transfer_leadership(&mut self, target: Option<NodeId>) -> Result<(), TransferError> {
        self.ensure_alive()?;
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader_id,
            });
        }
        let target = match target {
            Some(target) if target == self.id => return Err(TransferError::AlreadyLeader(target)),
            Some(target) if !self.membership.is_voter(target) => {
                return Err(TransferError::UnknownMember(target))
            }
            Some(target) => target,
            None => self
                .most_caught_up_voter()
                .ok_or(TransferError::NoOtherMember)?,
        };
        if let Some(current) = self.transfer {
            if current.target == target {
                return Ok(());
            }
            self.abandon_transfer(TransferAbort::Superseded);
        }
        self.guard(|node| node.start_transfer(target))?;
        Ok(())
    }

    /// The caller made entries up to `index` (whose entry has `term`)
    /// durable. Stale reports (that entry was since replaced) are ignored.
    pub fn on_persisted(&mut self, index: Index, term: Term) -> Result<(), CoreError> {
        self.guard(|node| {
            if node.log.stable_to(index, term) {
                node.forget_durably_replaced_configs();
                if node.log.persisted_index() >= node.noop_index {
                    node.term_unsynced = false;
                }
                if node.role == Role::Leader {
                    node.maybe_commit()?;
                }
            }
            Ok(())
        })
    }

    // ----- outputs -----

    /// Whether `ready` would return anything.
    pub fn has_ready(&self) -> bool {
        self.appends_pending
            || self.log.has_unhanded()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || !self.transfer_outcomes.is_empty()
            || !self.violations.is_empty()
            || self.hard_state() != self.last_hard_state
            || self.soft_state() != self.last_soft_state
            || self.log.committed() != self.last_commit
            || self.configs_changed
            || self.log_start.is_some()
    }

    /// Take what must be done now; see [`Ready`] for the order.
    pub fn ready(&mut self) -> Result<Ready, CoreError> {
        self.guard(|node| {
            node.on_commit_configurations()?;
            if node.appends_pending && node.role == Role::Leader {
                node.appends_pending = false;
                node.broadcast_append(false)?;
            }
            Ok(())
        })?;
        let configurations =
            std::mem::take(&mut self.configs_changed).then(|| self.records_to_persist());
        let hard_state = self.hard_state();
        let soft_state = self.soft_state();
        let commit = self.log.committed();
        let ready = Ready {
            hard_state: (hard_state != self.last_hard_state).then_some(hard_state),
            entries: self.log.take_unhanded(),
            messages: std::mem::take(&mut self.messages),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            commit_index: (commit != self.last_commit).then_some(commit),
            read_states: std::mem::take(&mut self.read_states),
            soft_state: (soft_state != self.last_soft_state).then_some(soft_state),
            transfer_outcomes: std::mem::take(&mut self.transfer_outcomes),
            violations: std::mem::take(&mut self.violations),
            configurations,
            log_start: self.log_start.take(),
        };
        assert!(
            commit >= self.last_commit,
            "commit went back from {} to {commit}",
            self.last_commit
        );
        self.last_hard_state = hard_state;
        self.last_soft_state = soft_state;
        self.last_commit = commit;
        Ok(ready)
    }

    // ----- status -----

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The known leader of the current term.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }

    /// The commit index (volatile: 0 or the retention point after a restart
    /// until a leader says more).
    pub fn commit_index(&self) -> Index {
        self.log.committed()
    }

    /// The commit index of the group as this member last learnt it: its own
    /// when it leads, else what the current term's leader last sent (not
    /// clamped to this member's log). `None` until a leader spoke.
    pub fn leader_commit_index(&self) -> Option<Index> {
        if self.role == Role::Leader {
            Some(self.log.committed())
        } else {
            self.leader_commit_told
        }
    }

    /// What retention on this member must keep: from the index a leader
    /// last said any member may still need (see
    /// [`MessageBody::RetentionFloor`]); `None` when it leads (it knows
    /// its followers' progress) or no leader said.
    pub fn retention_keep_from(&self) -> Option<Index> {
        if self.role == Role::Leader {
            None
        } else {
            self.leader_keep_from
        }
    }

    /// Whether this member followed a leader (or led) since it started.
    pub fn heard_from_leader(&self) -> bool {
        self.heard_from_leader
    }

    /// The first index in the log.
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    /// The last index in the log, unstable tail included.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Result<Term, CoreError> {
        Ok(self.log.last_term()?)
    }

    /// The highest index reported durable.
    pub fn persisted_index(&self) -> Index {
        self.log.persisted_index()
    }

    /// The term of the entry at `index` in this member's log (`None` outside
    /// it). Used to resolve proposal outcomes.
    pub fn entry_term(&self, index: Index) -> Result<Option<Term>, CoreError> {
        Ok(self.log.term(index)?)
    }

    /// The target of the transfer in progress, if any.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|transfer| transfer.target)
    }

    /// Leader only: per-follower progress, by id. Empty on other roles.
    pub fn peer_status(&self) -> Vec<PeerStatus> {
        self.progress
            .iter()
            .map(|(id, progress)| PeerStatus {
                id: *id,
                match_index: progress.match_index,
                next_index: progress.next_index,
                state: progress.state,
                last_contact_ticks: progress.last_contact_ticks,
                needs_compacted_entries: progress.needs_compacted_entries,
            })
            .collect()
    }

    /// The current term and vote.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
        }
    }

    /// The current role, leader and term.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader_id: self.leader_id,
            term: self.term,
        }
    }

    // ----- internals shared by the role modules -----

    pub(super) fn is_failed(&self) -> bool {
        self.failed
    }

    fn ensure_alive(&self) -> Result<(), CoreError> {
        if self.failed {
            Err(CoreError::Failed)
        } else {
            Ok(())
        }
    }

    /// Run `f`, poisoning the node when it fails.
    fn guard<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        self.ensure_alive()?;
        let result = f(self);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_at(to, term, body);
    }

    pub(super) fn send_at(&mut self, to: NodeId, term: Term, body: MessageBody) {
        assert_ne!(to, self.id, "a member never messages itself");
        let message = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if self.role == Role::Leader && self.term_unsynced {
            self.persisted_messages.push(message);
        } else {
            self.messages.push(message);
        }
    }

    /// Send once this Ready's state is durable.
    pub(super) fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        assert_ne!(to, self.id, "a member never messages itself");
        self.persisted_messages.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// Drop a peer message that broke the protocol: report it for the
    /// caller to log and count.
    pub(super) fn violation(&mut self, from: NodeId, kind: ViolationKind, detail: String) {
        self.violations.push(Violation { from, kind, detail });
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let minimum = self.config.election_ticks;
        self.randomized_election_ticks = self.rng.range(minimum, 2 * minimum);
    }

    /// Append an entry of this leader's term; returns its index.
    pub(super) fn append_own(&mut self, kind: EntryKind, payload: Bytes) -> Index {
        assert_eq!(
            self.role,
            Role::Leader,
            "only a leader appends its own entries"
        );
        let index = self.log.last_index() + 1;
        let entry = [Entry {
            index,
            term: self.term,
            kind,
            payload,
        }];
        self.log.append(&entry);
        self.track_configurations(&entry);
        self.appends_pending = true;
        index
    }

    fn tick_inner(&mut self) -> Result<(), CoreError> {
        self.now_ticks += 1;
        if self.role == Role::Leader {
            return self.tick_leader();
        }
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_ticks {
            if self.may_campaign() {
                self.campaign_pre_vote()?;
            } else {
                // A learner or a removed member waits for the leader, but no
                // longer counts on the one it has not heard from for an
                // election timeout: its stickiness would refuse votes for
                // as long as it waits.
                self.leader_id = None;
                self.reset_election_timer();
            }
        }
        Ok(())
    }

    fn tick_leader(&mut self) -> Result<(), CoreError> {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        self.preferred_cooldown_ticks = self.preferred_cooldown_ticks.saturating_sub(1);
        if let Some(ticks) = self.leaving_ticks.as_mut() {
            *ticks += 1;
        }
        for progress in self.progress.values_mut() {
            progress.last_contact_ticks = progress.last_contact_ticks.saturating_add(1);
        }
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            // Check-quorum: a leader cut off from a majority of the voters
            // steps down.
            let active: Vec<NodeId> = std::iter::once(self.id)
                .chain(
                    self.progress
                        .iter()
                        .filter(|(_, progress)| progress.recent_active)
                        .map(|(id, _)| *id),
                )
                .collect();
            for progress in self.progress.values_mut() {
                progress.recent_active = false;
            }
            if !self.membership.has_quorum(&active) {
                let term = self.term;
                self.become_follower(term, None);
                return Ok(());
            }
        }
        if let Some(transfer) = self.transfer.as_mut() {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= self.config.election_ticks {
                self.abandon_transfer(TransferAbort::TimedOut);
            }
        }
        self.maybe_hand_to_preferred()?;
        self.expire_reads();
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            // Every heartbeat carries the newest read round still waiting,
            // so a round whose messages were lost is confirmed by the next.
            let context = self.read_only.newest_context();
            self.broadcast_heartbeat(context);
            self.broadcast_retention_floor();
        }
        // After the heartbeat, which carries the commit too.
        self.send_owed_commits()
    }

    fn read_index_inner(&mut self, request_id: u64) -> Result<(), CoreError> {
        if self.role != Role::Leader {
            let leader = self.leader_id;
            self.answer_read(request_id, Err(ReadError::NotLeader { leader }));
            return Ok(());
        }
        let pending = self.read_only.len() + self.reads_before_noop.len();
        if pending >= self.config.max_pending_proposals {
            self.answer_read(request_id, Err(ReadError::TooManyPending));
            return Ok(());
        }
        if self.log.committed() < self.noop_index {
            // The commit index of an earlier term may be behind what the
            // group committed: wait for this term's no-op.
            self.reads_before_noop.push((request_id, self.now_ticks));
            return Ok(());
        }
        let read = [(request_id, self.now_ticks)];
        self.start_reads(&read);
        Ok(())
    }

    /// How long a read may wait for its confirmation: two election
    /// timeouts, by which check-quorum has deposed a leader cut off from
    /// its majority.
    fn read_timeout_ticks(&self) -> u64 {
        2 * self.config.election_ticks
    }

    /// Answer reads older than the read timeout with an error.
    fn expire_reads(&mut self) {
        let oldest_allowed = self.now_ticks.saturating_sub(self.read_timeout_ticks());
        let mut expired = self.read_only.take_asked_before(oldest_allowed);
        self.reads_before_noop.retain(|(request_id, asked)| {
            let keep = *asked >= oldest_allowed;
            if !keep {
                expired.push(*request_id);
            }
            keep
        });
        for request_id in expired {
            self.answer_read(request_id, Err(ReadError::TimedOut));
        }
    }

    /// Start a confirmation round for reads, given as (request id, tick
    /// asked), at the current commit index.
    pub(super) fn start_reads(&mut self, reads: &[(u64, u64)]) {
        assert_eq!(self.role, Role::Leader);
        assert!(
            self.log.committed() >= self.noop_index,
            "reads wait for the no-op"
        );
        let commit = self.log.committed();
        let context = self.read_only.add(reads, commit, self.id);
        // A single voter confirms its own reads.
        for (request_id, index) in self.read_only.take_confirmed(&self.membership) {
            self.answer_read(request_id, Ok(index));
        }
        if self.read_only.len() > 0 {
            self.broadcast_heartbeat(Some(context));
        }
    }

    pub(super) fn answer_read(&mut self, request_id: u64, result: Result<Index, ReadError>) {
        self.read_states.push(ReadState { request_id, result });
    }

    fn start_transfer(&mut self, target: NodeId) -> Result<(), CoreError> {
        assert_eq!(self.role, Role::Leader);
        self.transfer = Some(Transfer {
            target,
            elapsed_ticks: 0,
            timeout_now_sent: false,
        });
        if self.progress[&target].match_index == self.log.last_index() {
            self.send_timeout_now(target)?;
        } else {
            self.send_append(target, true)?;
        }
        Ok(())
    }

    pub(super) fn send_timeout_now(&mut self, target: NodeId) -> Result<(), CoreError> {
        let transfer = self.transfer.as_mut().expect("a transfer is in progress");
        assert_eq!(transfer.target, target);
        transfer.timeout_now_sent = true;
        // This leader is about to stop: what it committed reaches the
        // followers now rather than with the next leader's first commit.
        // TimeoutNow itself waits for nothing.
        self.send_owed_commits()?;
        self.send(target, MessageBody::TimeoutNow);
        Ok(())
    }

    pub(super) fn abandon_transfer(&mut self, reason: TransferAbort) {
        if let Some(transfer) = self.transfer.take() {
            self.transfer_outcomes.push(TransferOutcome::Abandoned {
                target: transfer.target,
                reason,
            });
        }
    }

    /// Leader: hand over to the preferred leader once it is caught up.
    fn maybe_hand_to_preferred(&mut self) -> Result<(), CoreError> {
        let Some(preferred) = self.config.preferred_leader else {
            return Ok(());
        };
        if preferred == self.id || self.transfer.is_some() || self.preferred_cooldown_ticks > 0 {
            return Ok(());
        }
        if self.log.committed() < self.noop_index || !self.membership.is_voter(preferred) {
            return Ok(());
        }
        let Some(progress) = self.progress.get(&preferred) else {
            return Ok(());
        };
        if progress.match_index == self.log.last_index() && progress.recent_active {
            // Retry at most every other election timeout if it fails.
            self.preferred_cooldown_ticks = 2 * self.config.election_ticks;
            self.start_transfer(preferred)?;
        }
        Ok(())
    }
}
