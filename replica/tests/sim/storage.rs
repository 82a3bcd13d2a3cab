//! Simulated storage: what was written, and the prefix that was synced. A
//! crash keeps the synced state and, sometimes, a torn prefix of the appends
//! written since (a disk may persist part of an unsynced write). The
//! configuration records are a separate file, written atomically and synced
//! at once, as the server's `<data-dir>/configuration`.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use dledger_replica::core::rng::Rng;
use dledger_replica::core::{LogRead, LogReadError};
use dledger_replica::entry::{Entry, HardState, Index, Term};
use dledger_replica::membership::ConfigRecord;

#[derive(Default)]
pub struct SimStorage {
    pub current: Vec<Entry>,
    pub synced: Vec<Entry>,
    /// Lowest position (0-based) changed since the last sync.
    dirty_from: Option<usize>,
    pub hard_state: HardState,
    pub synced_hard_state: HardState,
    /// The configuration records last saved: durable as soon as saved (the
    /// server writes its file atomically and syncs it before the entries).
    pub configurations: Vec<ConfigRecord>,
    /// The log starts after this index: retention deleted the entries up
    /// to it, or it is the leader's log start taken up. Durable at once,
    /// as the server's deletions and resets are. The entries up to it stay
    /// in `current` and `synced`, hidden from the core, so that the
    /// checkers keep reading dense logs: there they are the committed log.
    pub start: Index,
    /// A log start was taken up from a leader: where the log has no
    /// configuration entry, the group's bootstrap set is in force, not
    /// this member's own (a spare's is empty).
    pub installed_start: bool,
    /// The consumer checkpoint (`ConsumerState::encode_checkpoint`),
    /// applied up to `start` exactly: written with every deletion.
    pub checkpoint: Bytes,
}

impl SimStorage {
    /// Save `Ready::configurations`, durably, before that Ready's entries.
    /// As `server::directory::save_records`, the bootstrap record (index 0,
    /// in no log) is left out: the node's `Config::members` gives it back.
    pub fn save_configurations(&mut self, records: &[ConfigRecord]) {
        self.configurations = records
            .iter()
            .filter(|record| record.index > 0)
            .cloned()
            .collect();
    }

    /// Apply one Ready's writes (unsynced).
    pub fn write(&mut self, hard_state: Option<HardState>, entries: &[Entry]) {
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state;
        }
        let Some(first) = entries.first() else { return };
        let position = first.index as usize - 1;
        assert!(position <= self.current.len(), "Ready entries leave a gap");
        self.current.truncate(position);
        self.current.extend_from_slice(entries);
        self.dirty_from = Some(
            self.dirty_from
                .map_or(position, |dirty| dirty.min(position)),
        );
    }

    /// Make everything written durable; returns the position from which
    /// `synced` changed.
    pub fn sync(&mut self) -> Option<usize> {
        self.synced_hard_state = self.hard_state;
        let dirty = self.dirty_from.take()?;
        let dirty = dirty.min(self.synced.len());
        self.synced.truncate(dirty);
        self.synced.extend_from_slice(&self.current[dirty..]);
        Some(dirty)
    }

    /// Lose what was not synced (maybe keeping a torn prefix of new appends).
    /// Returns the position from which `synced` changed, if it did.
    pub fn crash(&mut self, rng: &mut Rng) -> Option<usize> {
        let appended_only = self
            .dirty_from
            .is_none_or(|dirty| dirty >= self.synced.len());
        let mut changed = None;
        if appended_only && self.current.len() > self.synced.len() && rng.chance(0.5) {
            let extra = self.current.len() - self.synced.len();
            let keep = rng.below(extra as u64 + 1) as usize;
            if keep > 0 {
                changed = Some(self.synced.len());
                let start = self.synced.len();
                self.synced
                    .extend_from_slice(&self.current[start..start + keep]);
            }
        }
        self.current = self.synced.clone();
        self.hard_state = self.synced_hard_state;
        self.dirty_from = None;
        changed
    }

    /// Retention: the log starts after `start` from now on, with the
    /// consumer checkpoint `checkpoint` applied up to it.
    pub fn delete_through(&mut self, start: Index, checkpoint: Bytes) {
        assert!(
            start as usize <= self.synced.len() && start > self.start,
            "retention deletes durable entries past the old start"
        );
        self.start = start;
        self.checkpoint = checkpoint;
    }

    /// The leader's log start taken up: every entry dropped, the log
    /// continues after `committed.len()` (the committed log up to there,
    /// kept hidden), with the leader's consumer checkpoint.
    pub fn install_start(&mut self, committed: &[Entry], checkpoint: Bytes) {
        self.current = committed.to_vec();
        self.synced = committed.to_vec();
        self.dirty_from = None;
        self.start = committed.len() as Index;
        self.checkpoint = checkpoint;
        self.installed_start = true;
    }

    /// Wipe everything (a replaced disk), configuration records included.
    pub fn wipe(&mut self) {
        *self = SimStorage::default();
    }
}

/// The core's read-only view of a node's storage.
#[derive(Clone)]
pub struct SimLog(pub Rc<RefCell<SimStorage>>);

impl LogRead for SimLog {
    fn first_index(&self) -> Index {
        self.0.borrow().start + 1
    }

    fn last_index(&self) -> Index {
        self.0.borrow().current.len() as Index
    }

    fn term(&self, index: Index) -> Result<Option<Term>, LogReadError> {
        if index == 0 {
            return Ok(Some(0));
        }
        if index < self.0.borrow().start {
            return Ok(None);
        }
        Ok(self
            .0
            .borrow()
            .current
            .get(index as usize - 1)
            .map(|entry| entry.term))
    }

    fn entries(
        &self,
        from: Index,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogReadError> {
        let storage = self.0.borrow();
        let mut out: Vec<Entry> = Vec::new();
        let mut bytes = 0;
        for entry in storage
            .current
            .iter()
            .skip(from as usize - 1)
            .take(max_count)
        {
            if !out.is_empty() && bytes + entry.payload.len() > max_bytes {
                break;
            }
            bytes += entry.payload.len();
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn state_image(&self) -> Result<Bytes, LogReadError> {
        Ok(self.0.borrow().checkpoint.clone())
    }
}
