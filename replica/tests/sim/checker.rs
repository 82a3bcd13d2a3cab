//! The safety checkers. Each returns `Err(description)` naming the property
//! broken; the world turns that into a failure with the seed.
//!
//! Membership changes: the checker follows the configuration of the
//! committed log (the newest configuration entry in it, else the bootstrap
//! voters) and checks what the core promises about changes: elections and
//! commits count the voters of the configuration in force on the member
//! that counts, a leader has one change in flight at most, and the
//! configuration in force is the newest one in the log.

use std::collections::{BTreeSet, HashMap, HashSet};

use dledger_replica::consumers::{Applied, ConsumerState};
use dledger_replica::entry::{Entry, EntryKind, Index, NodeId, Term};
use dledger_replica::membership::{Configuration, IdChange, Membership};

/// Groups whose name starts with this get `ForwardOnly` commits alone, so
/// their offset must never move backwards.
pub const FORWARD_ONLY_PREFIX: &str = "fwd-";

#[derive(Default)]
pub struct Checker {
    /// Election safety: the leader of each term.
    leaders: HashMap<Term, NodeId>,
    /// Log matching: every durable (index, term) seen, with its content and
    /// the term of the entry before it.
    durable: HashMap<(Index, Term), (EntryKind, bytes::Bytes, Term)>,
    /// The committed log as observed by any node. Never changes, only grows.
    pub committed: Vec<Entry>,
    /// Client payload ids in `committed` (exactly-once).
    committed_ids: HashSet<u64>,
    /// Highest index acknowledged to a client so far.
    pub max_acked_index: Index,
    pub acked_count: u64,
    /// The consumer state of `committed`, applied entry by entry with
    /// `ConsumerState::apply` (not the members' `PendingCommits` path).
    reference: ConsumerState,
    /// `reference` after each committed offset commit, by index: the state
    /// at commit index C is the last one at or below C.
    reference_history: Vec<(Index, ConsumerState)>,
    /// The verdict of each committed offset commit, by index.
    reference_verdicts: HashMap<Index, Applied>,
    /// Offset commits acknowledged to clients: stored, refused.
    pub offsets_stored: u64,
    pub offsets_refused: u64,
    /// The configuration of `committed`: its newest configuration entry,
    /// else the bootstrap voters.
    committed_membership: Membership,
    /// Granted votes that reached their candidate: (term, candidate) to the
    /// voters that granted them.
    votes: HashMap<(Term, NodeId), BTreeSet<NodeId>>,
    /// Committed configuration changes by kind (see `ChangeCounts`).
    pub changes: ChangeCounts,
}

/// Configuration entries committed, by what they changed.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChangeCounts {
    pub added_learners: u64,
    pub promoted: u64,
    pub removed_voters: u64,
    pub removed_learners: u64,
    /// The bootstrap set written to the log (the server's first leader
    /// does that).
    pub unchanged: u64,
}

impl ChangeCounts {
    pub fn add(&mut self, other: &ChangeCounts) {
        self.added_learners += other.added_learners;
        self.promoted += other.promoted;
        self.removed_voters += other.removed_voters;
        self.removed_learners += other.removed_learners;
        self.unchanged += other.unchanged;
    }
}

/// The membership a configuration entry carries.
pub fn entry_membership(entry: &Entry) -> Result<Membership, String> {
    Configuration::decode(&entry.payload)
        .map(|configuration| configuration.membership())
        .map_err(|error| format!("configuration entry {} malformed: {error}", entry.index))
}

/// The newest configuration entry of `log`, if any.
pub fn newest_configuration(log: &[Entry]) -> Option<&Entry> {
    log.iter()
        .rev()
        .find(|entry| entry.kind == EntryKind::Configuration)
}

pub fn payload_id(entry: &Entry) -> Option<u64> {
    (entry.kind == EntryKind::Normal).then(|| {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&entry.payload[..8]);
        u64::from_le_bytes(raw)
    })
}

impl Checker {
    /// A checker for a group that starts with `bootstrap` as its voters.
    pub fn new(bootstrap: Membership) -> Checker {
        Checker {
            committed_membership: bootstrap,
            ..Checker::default()
        }
    }

    pub fn leader_elected(&mut self, term: Term, node: NodeId) -> Result<(), String> {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => Err(format!(
                "election safety: {other} and {node} both lead term {term}"
            )),
            _ => Ok(()),
        }
    }

    /// `node` crashed after leading `term` without a trace: its term was not
    /// durable when it won, nothing of that term is in its durable state,
    /// and it sent no message of that term or later (a single voter wins
    /// on its own vote and sends nothing until its term is durable). Then
    /// it never led as far as anyone can tell, and after its restart it may
    /// rightly vote for another member in that term.
    /// The configuration of the newest committed configuration entry (the
    /// bootstrap set before any).
    pub fn committed_membership(&self) -> &Membership {
        &self.committed_membership
    }

    pub fn leadership_vanished(&mut self, term: Term, node: NodeId) {
        if self.leaders.get(&term) == Some(&node) {
            self.leaders.remove(&term);
        }
    }

    /// Leader completeness: a new leader holds every committed entry.
    pub fn check_leader_log(
        &self,
        node: NodeId,
        first_index: Index,
        term_at: impl Fn(Index) -> Option<Term>,
    ) -> Result<(), String> {
        // Retention deleted the entries before its first index (only
        // committed ones), but not the term of the one before.
        let kept = (first_index as usize).saturating_sub(2);
        for entry in self.committed.iter().skip(kept) {
            if term_at(entry.index) != Some(entry.term) {
                return Err(format!(
                    "leader completeness: new leader {node} lacks committed entry {} (term {}), has term {:?}",
                    entry.index,
                    entry.term,
                    term_at(entry.index)
                ));
            }
        }
        Ok(())
    }

    /// The committed log up to `index`, when it reaches that far.
    pub fn committed_prefix(&self, index: Index) -> Option<Vec<Entry>> {
        self.committed.get(..index as usize).map(<[Entry]>::to_vec)
    }

    /// Log matching, checked on every entry as it becomes durable somewhere.
    pub fn entries_durable(
        &mut self,
        node: NodeId,
        log: &[Entry],
        from_position: usize,
    ) -> Result<(), String> {
        for position in from_position..log.len() {
            let entry = &log[position];
            assert_eq!(
                entry.index as usize,
                position + 1,
                "sim storage keeps indexes dense"
            );
            let prev_term = if position == 0 {
                0
            } else {
                log[position - 1].term
            };
            let value = (entry.kind, entry.payload.clone(), prev_term);
            match self.durable.get(&(entry.index, entry.term)) {
                Some(known) if *known != value => {
                    return Err(format!(
                        "log matching: node {node} has entry {}@{} with {:?} after term {}, elsewhere {:?} after term {}",
                        entry.index, entry.term, entry.payload, prev_term, known.1, known.2
                    ))
                }
                Some(_) => {}
                None => {
                    self.durable.insert((entry.index, entry.term), value);
                }
            }
        }
        Ok(())
    }

    /// State machine safety: a node's committed prefix equals everyone's.
    pub fn node_committed(&mut self, node: NodeId, entries: &[Entry]) -> Result<(), String> {
        for entry in entries {
            let position = entry.index as usize - 1;
            if let Some(known) = self.committed.get(position) {
                if known != entry {
                    return Err(format!(
                        "committed entry changed: node {node} committed {entry:?}, earlier {known:?}"
                    ));
                }
                continue;
            }
            if position != self.committed.len() {
                return Err(format!("node {node} committed {} past a gap", entry.index));
            }
            if let Some(id) = payload_id(entry) {
                if !self.committed_ids.insert(id) {
                    return Err(format!(
                        "exactly once: payload {id} committed twice (again at {})",
                        entry.index
                    ));
                }
            }
            if entry.kind == EntryKind::Configuration {
                self.configuration_committed(entry)?;
            }
            self.committed.push(entry.clone());
            self.apply_reference(entry)?;
        }
        Ok(())
    }

    fn configuration_committed(&mut self, entry: &Entry) -> Result<(), String> {
        let next = entry_membership(entry)?;
        // The core checks this before appending; a committed entry that is
        // not one change away would mean two majorities need not overlap.
        let change = self
            .committed_membership
            .single_change(&next)
            .map_err(|error| {
                format!(
                    "committed configuration {} is not one change from {:?}: {error}",
                    entry.index, self.committed_membership
                )
            })?;
        let counts = &mut self.changes;
        match change {
            IdChange::AddLearner(_) => counts.added_learners += 1,
            IdChange::Promote(_) => counts.promoted += 1,
            IdChange::RemoveVoter(_) => counts.removed_voters += 1,
            IdChange::RemoveLearner(_) => counts.removed_learners += 1,
            IdChange::Unchanged => counts.unchanged += 1,
        }
        self.committed_membership = next;
        Ok(())
    }

    /// A granted vote of `voter` for `candidate` in `term` reached the
    /// candidate.
    pub fn vote_delivered(&mut self, term: Term, voter: NodeId, candidate: NodeId) {
        self.votes
            .entry((term, candidate))
            .or_default()
            .insert(voter);
    }

    /// Elections count the configuration in force: `leader` won `term`
    /// with granted votes, actually delivered to it, from a majority of the
    /// voters of `membership` (its configuration in force as it won; its
    /// own vote counts if it is one of them). It need not be one: a voter
    /// that a change not yet committed removes may lead to commit it.
    pub fn election_quorum(
        &self,
        term: Term,
        leader: NodeId,
        membership: &Membership,
    ) -> Result<(), String> {
        let mut granted: BTreeSet<NodeId> =
            self.votes.get(&(term, leader)).cloned().unwrap_or_default();
        granted.insert(leader);
        let counted: Vec<NodeId> = granted
            .iter()
            .copied()
            .filter(|voter| membership.is_voter(*voter))
            .collect();
        if counted.len() < membership.quorum() {
            return Err(format!(
                "election quorum: {leader} won term {term} with votes from {granted:?}, of which only {counted:?} are voters of its configuration in force {membership:?} (a majority is {})",
                membership.quorum()
            ));
        }
        Ok(())
    }

    /// The configuration in force is the newest in the log: `membership`,
    /// what `node` counts with, is that of the newest configuration entry
    /// of `log` (its written log), else of `bootstrap` (its
    /// `Config::members`).
    pub fn configuration_in_force(
        &self,
        node: NodeId,
        when: &str,
        membership: &Membership,
        log: &[Entry],
        bootstrap: &[NodeId],
    ) -> Result<(), String> {
        let (expected, from) = match newest_configuration(log) {
            Some(entry) => (entry_membership(entry)?, format!("entry {}", entry.index)),
            None => (
                Membership::of_voters(bootstrap.iter().copied()),
                "the bootstrap voters".to_string(),
            ),
        };
        if *membership != expected {
            return Err(format!(
                "configuration in force: node {node} {when} counts with {membership:?}, but the newest configuration in its log ({from}) is {expected:?}"
            ));
        }
        Ok(())
    }

    /// One change at a time: a leader's written log `log` holds at most
    /// one configuration entry past the highest commit index anyone knows
    /// (`leader_commit` or the checker's).
    pub fn changes_in_flight(
        &self,
        leader: NodeId,
        leader_commit: Index,
        log: &[Entry],
    ) -> Result<(), String> {
        let committed = (self.committed.len() as Index).max(leader_commit) as usize;
        let pending: Vec<Index> = log
            .iter()
            .skip(committed)
            .filter(|entry| entry.kind == EntryKind::Configuration)
            .map(|entry| entry.index)
            .collect();
        if pending.len() > 1 {
            return Err(format!(
                "one change at a time: leader {leader} has uncommitted configuration entries at {pending:?} (committed up to {committed})"
            ));
        }
        Ok(())
    }

    /// Promotion of a caught-up learner only: `leader` (of `leader_term`)
    /// appended at `index` a configuration promoting `learner`, which the
    /// core allows when the learner's acknowledged match index is within
    /// `max_lag` of the leader's last index, `index - 1`. So the learner's
    /// durable log holds the leader's entry `index - 1 - max_lag`, unless a
    /// newer leader replaced it (the learner then has a newer term: this
    /// leader is stale, and its uncommitted tail may be gone).
    #[allow(clippy::too_many_arguments)]
    pub fn promotion_caught_up(
        &self,
        leader: NodeId,
        leader_term: Term,
        index: Index,
        learner: NodeId,
        max_lag: u64,
        leader_log: &[Entry],
        learner_log: &[Entry],
        learner_term: Term,
    ) -> Result<(), String> {
        let Some(needed) = (index - 1).checked_sub(max_lag).filter(|at| *at > 0) else {
            return Ok(());
        };
        if learner_term > leader_term {
            return Ok(());
        }
        let term_at = |log: &[Entry]| log.get(needed as usize - 1).map(|entry| entry.term);
        if term_at(leader_log) != term_at(learner_log) {
            return Err(format!(
                "promotion of a caught-up learner: leader {leader} promotes {learner} at {index}, but the learner's durable log ({} entries) lacks entry {needed}, within {max_lag} of the leader's last",
                learner_log.len()
            ));
        }
        Ok(())
    }

    /// Commit counts voters only: `leader` just moved its commit index to
    /// `commit` counting `membership` (its configuration in force), so the
    /// committed entry there is in the durable logs of a majority of that
    /// configuration's voters. `synced_term(id, index)` reads node `id`'s.
    pub fn leader_commit(
        &self,
        leader: NodeId,
        commit: Index,
        membership: &Membership,
        synced_term: impl Fn(NodeId, Index) -> Option<Term>,
    ) -> Result<(), String> {
        let Some(entry) = self.committed.get(commit as usize - 1) else {
            return Err(format!(
                "leader {leader} committed {commit} past the committed log"
            ));
        };
        let holders: Vec<NodeId> = membership
            .voters
            .iter()
            .copied()
            .filter(|voter| synced_term(*voter, entry.index) == Some(entry.term))
            .collect();
        if holders.len() < membership.quorum() {
            return Err(format!(
                "commit counts voters only: leader {leader} committed {}@{} but only voters {holders:?} of {:?} hold it durably (a majority is {})",
                entry.index,
                entry.term,
                membership.voters,
                membership.quorum()
            ));
        }
        Ok(())
    }

    fn apply_reference(&mut self, entry: &Entry) -> Result<(), String> {
        let applied = self.reference.apply(entry).map_err(|error| {
            format!("committed offset commit {} malformed: {error}", entry.index)
        })?;
        let Some(applied) = applied else {
            return Ok(());
        };
        if let (Applied::Stored { group, offset }, Some((_, before))) =
            (&applied, self.reference_history.last())
        {
            // Forward only: with ForwardOnly commits alone, never backwards.
            if let Some(previous) = before.offset(group) {
                if group.starts_with(FORWARD_ONLY_PREFIX) && *offset < previous {
                    return Err(format!(
                        "offset moved backwards: group {group} from {previous} to {offset} at {}",
                        entry.index
                    ));
                }
            }
        }
        self.reference_history
            .push((entry.index, self.reference.clone()));
        self.reference_verdicts.insert(entry.index, applied);
        Ok(())
    }

    /// Offsets' state machine safety: a member's consumer state once its
    /// commit index is `commit` equals the committed prefix `[1..commit]`
    /// applied to a fresh state.
    pub fn consumer_state(
        &self,
        node: NodeId,
        commit: Index,
        state: &ConsumerState,
    ) -> Result<(), String> {
        let position = self
            .reference_history
            .partition_point(|(index, _)| *index <= commit);
        let mut expected = match position {
            0 => ConsumerState::default(),
            _ => self.reference_history[position - 1].1.clone(),
        };
        expected.skip_to(commit);
        if *state != expected {
            return Err(format!(
                "consumer state: node {node} at commit {commit} has {state:?}, the committed log gives {expected:?}"
            ));
        }
        Ok(())
    }

    /// An offset commit at `index` was answered with `verdict`: it is the
    /// verdict of the committed log, so an acknowledged offset is the
    /// reference's until a later commit of its group (the reference state
    /// is what every member's is compared with).
    pub fn offset_acknowledged(&mut self, index: Index, verdict: &Applied) -> Result<(), String> {
        match self.reference_verdicts.get(&index) {
            Some(expected) if expected == verdict => {}
            expected => {
                return Err(format!(
                    "offset commit at {index} answered {verdict:?}, the committed log gives {expected:?}"
                ))
            }
        }
        match verdict {
            Applied::Stored { .. } => self.offsets_stored += 1,
            Applied::Refused(_) => self.offsets_refused += 1,
        }
        self.max_acked_index = self.max_acked_index.max(index);
        Ok(())
    }

    /// Durability: no majority of the voters of the committed configuration
    /// lacks the last committed entry in its durable logs, so no leader can
    /// be elected without it. (Not "a majority holds it": an entry may be
    /// committed by the next configuration, appended after it and one
    /// change away, e.g. on 3 of 5 voters of which 2 are among the 4 of
    /// the committed one; what is safe is that those 2 block any majority
    /// of the 4.) `synced_term(id, index)` reads node `id`'s durable log.
    pub fn committed_durable(
        &self,
        synced_term: impl Fn(NodeId, Index) -> Option<Term>,
    ) -> Result<(), String> {
        let Some(last) = self.committed.last() else {
            return Ok(());
        };
        let voters = &self.committed_membership.voters;
        let lacks = |voter: &NodeId| synced_term(*voter, last.index) != Some(last.term);
        // Counted first: this runs after every event.
        if voters.iter().filter(|voter| lacks(voter)).count() >= self.committed_membership.quorum()
        {
            let lacking: Vec<NodeId> = voters
                .iter()
                .copied()
                .filter(|voter| lacks(voter))
                .collect();
            return Err(format!(
                "committed entry lost: {}@{} is missing from the durable logs of voters {lacking:?}, a majority of the committed configuration's {voters:?}",
                last.index, last.term,
            ));
        }
        Ok(())
    }

    /// A proposal was acknowledged at `index`.
    pub fn acknowledged(
        &mut self,
        id: u64,
        index: Index,
        max_acked_when_proposed: Index,
    ) -> Result<(), String> {
        let Some(entry) = self.committed.get(index as usize - 1) else {
            return Err(format!(
                "acknowledged proposal {id} at {index} past the committed log"
            ));
        };
        if payload_id(entry) != Some(id) {
            return Err(format!(
                "acknowledged proposal {id} at {index} but the committed entry there is {entry:?}"
            ));
        }
        if index <= max_acked_when_proposed {
            return Err(format!(
                "ack order: proposal {id} acknowledged at {index}, not after {max_acked_when_proposed} acknowledged before it was proposed"
            ));
        }
        self.max_acked_index = self.max_acked_index.max(index);
        self.acked_count += 1;
        Ok(())
    }

    /// A read answered `index` must cover every ack before it was issued.
    pub fn read_answered(
        &self,
        request_id: u64,
        index: Index,
        max_acked_when_issued: Index,
    ) -> Result<(), String> {
        if index < max_acked_when_issued {
            return Err(format!(
                "linearizability: read {request_id} answered index {index}, below {max_acked_when_issued} acknowledged before it was issued"
            ));
        }
        Ok(())
    }
}
