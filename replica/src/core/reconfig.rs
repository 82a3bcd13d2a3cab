//! Membership changes: which configuration is in force, proposing a change,
//! and what a change does to the member's state.
//!
//! A member keeps the configuration records of its log from the one in
//! force at its log start (committed and durable) onwards (`Node::configs`,
//! never empty; the first may be the bootstrap set, at index 0): a
//! follower that needs entries before the start gets that one with it. The newest record is in force as soon as
//! it is appended (Raft dissertation, section 4.1); a truncation that
//! removes it brings the one before back. The leader proposes one change at
//! a time, and only once an entry of its own term is committed: without
//! that rule two leaders of different terms could each append a change
//! against a different base, and their majorities need not overlap (the
//! bug Ongaro described on raft-dev in 2015).
//!
//! The caller's records file must keep, whatever a crash loses, a record
//! for every configuration entry of the durable log: the first record is
//! pruned only up to a committed one that is durable here, the records of
//! entries a truncation replaced stay until that truncation is durable
//! (the old entries may survive a crash), and the bootstrap record stays
//! in front of restored ones. `restore_configurations` keeps only the
//! records the log still has.

use crate::entry::{Entry, EntryKind, Index, NodeId, Term};
use crate::membership::{ConfigRecord, IdChange, Membership};

use super::log::LogRead;
use super::message::MessageBody;
use super::node::Node;
use super::progress::Progress;
use super::ready::{Role, TransferAbort};
use super::{CoreError, ProposeError};

/// Why a configuration change was not proposed. Nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefusal {
    /// The previous change is not committed yet.
    #[error(
        "the configuration change at index {index} is not committed yet; one change at a time"
    )]
    ChangeInProgress {
        /// Where the uncommitted change is.
        index: Index,
    },
    /// This leader has not committed an entry of its term yet.
    #[error("this leader has not committed an entry of its term yet; retry shortly")]
    LeaderNotSettled,
    /// The payload is not a configuration, or not one change away.
    #[error("{0}")]
    Invalid(String),
    /// The learner to promote is too far behind.
    #[error(
        "the learner is {lag} entries behind the leader (at most {max} to be promoted) or was \
         not heard from within an election timeout; retry once it has caught up"
    )]
    NotCaughtUp {
        /// Entries it misses.
        lag: u64,
        /// The bound.
        max: u64,
    },
}

impl<L: LogRead> Node<L> {
    /// The configuration in force (the newest in the log).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The configuration records known, oldest first: the one in force at
    /// the log start, then every later one. The caller persists these (they must
    /// survive retention and restarts) whenever `Ready::configurations`
    /// carries them.
    pub fn configurations(&self) -> &[ConfigRecord] {
        &self.configs
    }

    /// Take up `records`, the ones the caller persisted from
    /// `Ready::configurations` (the bootstrap one left out or not). Call it
    /// before any other input. Records whose entries the log does not have
    /// are dropped: lost with an unsynced tail, or replaced by a truncation
    /// that became durable.
    pub fn restore_configurations(&mut self, records: Vec<ConfigRecord>) -> Result<(), CoreError> {
        let last = self.log.last_index();
        // The bootstrap record stays in front: a caller that leaves it out
        // of its file (the server does, it is in no log) may have saved an
        // uncommitted first entry alone, and a truncation of that entry must
        // bring the bootstrap set back. In front of a committed record it
        // is harmless: that record is never truncated, and prunes it.
        let mut kept: Vec<ConfigRecord> =
            vec![ConfigRecord::bootstrap(self.config.members.iter().copied())];
        let mut bootstrap_payload = false;
        for record in records {
            // The caller's own bootstrap record, with the payload the core
            // cannot make from ids: a follower may need it as the
            // configuration in force at a log start (`send_log_start`).
            if record.index == 0 && !record.payload.is_empty() {
                kept[0] = record;
                bootstrap_payload = true;
                continue;
            }
            // A record at the log start is checked too: a log start taken
            // from the leader is a record there, and one of the dropped
            // log's may be in the file at the same index.
            let in_log = record.index + 1 < self.log.first_index()
                || self.log.term(record.index)? == Some(record.term);
            if record.index > 0 && record.index <= last && in_log {
                kept.push(record);
            }
        }
        // Replaced records come first in the file; one index has one entry.
        kept.sort_by_key(|record| record.index);
        kept.dedup_by_key(|record| record.index);
        if kept.len() > 1 || bootstrap_payload {
            self.configs = kept;
            self.on_configuration_change();
        }
        Ok(())
    }

    /// Append `payload`, a configuration one change away from the one in
    /// force (leader only). Returns its (index, term); it takes effect at
    /// once and the answer comes as for any proposal.
    pub fn propose_configuration(
        &mut self,
        payload: bytes::Bytes,
    ) -> Result<(Index, Term), ProposeError> {
        if self.is_failed() {
            return Err(ProposeError::Core(CoreError::Failed));
        }
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader_id,
            });
        }
        if self.transfer.is_some() || self.leaving_ticks.is_some() {
            return Err(ProposeError::Transferring);
        }
        let committed = self.log.committed();
        if committed < self.noop_index {
            return Err(ProposeError::Membership(ChangeRefusal::LeaderNotSettled));
        }
        let newest = self.configs.last().map_or(0, |record| record.index);
        if newest > committed {
            return Err(ProposeError::Membership(ChangeRefusal::ChangeInProgress {
                index: newest,
            }));
        }
        let record = ConfigRecord::from_entry(0, 0, payload.clone())
            .map_err(|err| ProposeError::Membership(ChangeRefusal::Invalid(err.to_string())))?;
        let change = self
            .membership
            .single_change(&record.membership)
            .map_err(|err| ProposeError::Membership(ChangeRefusal::Invalid(err.to_string())))?;
        if let IdChange::Promote(learner) = change {
            let max = self.config.promote_max_lag_entries;
            let (lag, active) = self.progress.get(&learner).map_or((u64::MAX, false), |p| {
                (
                    self.log.last_index().saturating_sub(p.match_index),
                    p.recent_active,
                )
            });
            if lag > max || !active {
                return Err(ProposeError::Membership(ChangeRefusal::NotCaughtUp {
                    lag,
                    max,
                }));
            }
        }
        let index = self.append_own(EntryKind::Configuration, payload);
        Ok((index, self.term))
    }

    /// Entries were just appended to the log (by this leader, or from the
    /// leader as a follower): drop the records they replaced and take up
    /// the configurations they carry.
    pub(super) fn track_configurations(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first().map(|entry| entry.index) else {
            return;
        };
        let last = self.log.last_index();
        let before = self.configs.clone();
        self.configs.retain(|record| {
            if record.index < first {
                return true;
            }
            match entries.get((record.index - first) as usize) {
                // Same index and term: the same entry.
                Some(entry) => entry.term == record.term,
                // Past this batch: still in the log only without truncation.
                None => record.index <= last,
            }
        });
        for entry in entries {
            if entry.kind != EntryKind::Configuration
                || self
                    .configs
                    .iter()
                    .any(|record| record.index == entry.index)
            {
                continue;
            }
            // Checked before appending (`check_append`, `propose_configuration`).
            if let Ok(record) =
                ConfigRecord::from_entry(entry.index, entry.term, entry.payload.clone())
            {
                let position = self
                    .configs
                    .partition_point(|known| known.index < record.index);
                self.configs.insert(position, record);
            }
        }
        debug_assert!(
            !self.configs.is_empty(),
            "the committed configuration is never replaced"
        );
        // A truncation replaced these entries; until that is durable a
        // crash may bring them back, so their records stay on file.
        for record in &before {
            if record.index >= first && !self.configs.contains(record) {
                self.replaced_configs.push(record.clone());
            }
        }
        let configs = &self.configs;
        self.replaced_configs
            .retain(|record| !configs.contains(record));
        if self.configs != before {
            self.on_configuration_change();
        }
    }

    /// The records to persist: those of replaced entries that a crash may
    /// still bring back, then the ones tracked (the newest last).
    pub(super) fn records_to_persist(&self) -> Vec<ConfigRecord> {
        self.replaced_configs
            .iter()
            .chain(self.configs.iter())
            .cloned()
            .collect()
    }

    /// The persisted index moved. It is below a replaced entry's index when
    /// that entry is replaced (the truncation reset it), and reaches it only
    /// once what replaced it is durable: that entry is then gone from disk,
    /// and so can its record be.
    pub(super) fn forget_durably_replaced_configs(&mut self) {
        let persisted = self.log.persisted_index();
        let count = self.replaced_configs.len();
        self.replaced_configs
            .retain(|record| record.index > persisted);
        if self.replaced_configs.len() != count {
            self.configs_changed = true;
        }
    }

    /// Forget the records older than the newest committed one that is
    /// also durable here and at or below the log start; a leader whose removal committed stops taking
    /// proposals, and hands over once every entry it appended is committed
    /// (or after an election timeout).
    pub(super) fn on_commit_configurations(&mut self) -> Result<(), CoreError> {
        let committed = self.log.committed();
        // A member may learn that an entry committed before its own copy is
        // durable. Pruning up to that record could leave the caller's file
        // with it alone, and a crash that loses its entry would then leave
        // no record of the configurations still in the log.
        let durable_committed = committed.min(self.log.persisted_index());
        // The record in force at the log start stays too: a follower that
        // needs the entries before it gets it with the log start
        // (`send_log_start`). Without retention nothing is pruned: one
        // small record per change.
        let prune_through = durable_committed.min(self.log.first_index() - 1);
        let mut pruned = false;
        while self.configs.len() > 1 && self.configs[1].index <= prune_through {
            self.configs.remove(0);
            pruned = true;
        }
        if pruned {
            self.configs_changed = true;
        }
        let newest_committed = self.configs.last().is_some_and(|r| r.index <= committed);
        if self.role != Role::Leader || !newest_committed || self.membership.is_voter(self.id) {
            return Ok(());
        }
        if self.leaving_ticks.is_none() {
            self.leaving_ticks = Some(0);
        }
        // Once out of the configuration nobody replicates to it: had it
        // stepped down with entries uncommitted, it could never tell their
        // writers what became of them.
        let drained = committed == self.log.last_index();
        let timed_out = self
            .leaving_ticks
            .is_some_and(|ticks| ticks >= self.config.election_ticks);
        if drained || timed_out {
            // The followers learn the commit (its removal's among it) from
            // this leader, not a tick later from no one.
            self.send_owed_commits()?;
            // The new leader skips pre-vote and stickiness.
            if let Some(target) = self.most_caught_up_voter() {
                self.send(target, MessageBody::TimeoutNow);
            }
            let term = self.term;
            self.become_follower(term, None);
        }
        Ok(())
    }

    /// The follower took up the leader's log start, with `record` (stamped
    /// with the start's index and term) the configuration in force there.
    /// Every record of the dropped log stays on file as replaced until the
    /// new start is durable, as for a truncation.
    pub(super) fn install_configuration(&mut self, record: ConfigRecord) {
        let dropped = std::mem::replace(&mut self.configs, vec![record]);
        for old in dropped {
            if !self.replaced_configs.contains(&old) {
                self.replaced_configs.push(old);
            }
        }
        self.on_configuration_change();
    }

    /// Whether this member may start an election: a voter of the
    /// configuration in force, or a voter that a change not known committed
    /// removes. The latter may hold entries no one else has, that change
    /// among them (a leader that removed itself and restarted before the
    /// change went out): if it waited, the others would need its vote and
    /// it would refuse them for their shorter logs, forever. It counts the
    /// new configuration's votes only (its own is not one), and once the
    /// change commits it hands over as a removed leader does. LogCabin lets
    /// any member with a configuration campaign; learners and members that
    /// know their removal committed still do not here.
    pub(super) fn may_campaign(&self) -> bool {
        if self.membership.is_voter(self.id) {
            return true;
        }
        match self.configs.as_slice() {
            [.., previous, newest] => {
                newest.index > self.log.committed()
                    && !newest.membership.contains(self.id)
                    && previous.membership.is_voter(self.id)
            }
            _ => false,
        }
    }

    /// The voter with the highest match index (ties to the lowest id).
    pub(super) fn most_caught_up_voter(&self) -> Option<NodeId> {
        self.progress
            .iter()
            .filter(|(id, _)| self.membership.is_voter(**id))
            .max_by(|(id_a, a), (id_b, b)| a.match_index.cmp(&b.match_index).then(id_b.cmp(id_a)))
            .map(|(id, _)| *id)
    }

    /// The newest record changed: bring the member set, the leader's
    /// progress map and a transfer in progress in line with it.
    fn on_configuration_change(&mut self) {
        self.configs_changed = true;
        let Some(newest) = self.configs.last() else {
            return;
        };
        self.membership = newest.membership.clone();
        self.peers = self.membership.others(self.id);
        if self.role != Role::Leader {
            return;
        }
        let next_index = self.log.last_index() + 1;
        let (window, window_bytes) = (
            self.config.max_inflight_appends,
            self.config.max_inflight_bytes,
        );
        let peers = self.peers.clone();
        self.progress.retain(|id, _| peers.contains(id));
        for peer in peers {
            self.progress.entry(peer).or_insert_with(|| {
                Progress::new(next_index, window).with_max_inflight_bytes(window_bytes)
            });
        }
        if let Some(transfer) = self.transfer {
            if !self.membership.is_voter(transfer.target) {
                self.abandon_transfer(TransferAbort::TargetRemoved);
            }
        }
    }
}
