//! The safety checkers. Each returns `Err(description)` naming the property
//! broken; the world turns that into a failure with the seed.

use std::collections::{HashMap, HashSet};

use dledger_replica::consumers::{Applied, ConsumerState};
use dledger_replica::entry::{Entry, EntryKind, Index, NodeId, Term};

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
}

pub fn payload_id(entry: &Entry) -> Option<u64> {
    (entry.kind == EntryKind::Normal).then(|| {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&entry.payload[..8]);
        u64::from_le_bytes(raw)
    })
}

impl Checker {
    pub fn leader_elected(&mut self, term: Term, node: NodeId) -> Result<(), String> {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => Err(format!(
                "election safety: {other} and {node} both lead term {term}"
            )),
            _ => Ok(()),
        }
    }

    /// Leader completeness: a new leader holds every committed entry.
    pub fn check_leader_log(
        &self,
        node: NodeId,
        term_at: impl Fn(Index) -> Option<Term>,
    ) -> Result<(), String> {
        for entry in &self.committed {
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
            self.committed.push(entry.clone());
            self.apply_reference(entry)?;
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

    /// Durability: the last committed entry is on a majority of synced logs.
    pub fn committed_durable(&self, synced_logs: &[&[Entry]]) -> Result<(), String> {
        let Some(last) = self.committed.last() else {
            return Ok(());
        };
        let holders = synced_logs
            .iter()
            .filter(|log| {
                log.get(last.index as usize - 1)
                    .is_some_and(|entry| entry.term == last.term)
            })
            .count();
        if holders * 2 <= synced_logs.len() {
            return Err(format!(
                "committed entry lost: {}@{} is durable on only {holders} of {} nodes",
                last.index,
                last.term,
                synced_logs.len()
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
