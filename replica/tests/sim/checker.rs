//! The safety checkers. Each returns `Err(description)` naming the property
//! broken; the world turns that into a failure with the seed.

use std::collections::{HashMap, HashSet};

use dledger_replica::entry::{Entry, EntryKind, Index, NodeId, Term};

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
        }
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
