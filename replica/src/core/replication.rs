//! Log replication: the leader's appends and heartbeats, the follower's
//! answers, and commit by majority.

use crate::entry::{Entry, EntryKind, Index, NodeId, Term};
use crate::membership::ConfigRecord;

use super::log::LogRead;
use super::message::{AppendResult, MessageBody};
use super::node::Node;
use super::progress::{Progress, ProgressState};
use super::ready::Role;
use super::violation::ViolationKind;
use super::CoreError;

impl<L: LogRead> Node<L> {
    /// Send what each follower is missing; with `send_if_empty`, also an
    /// empty append (to carry a new commit index or probe).
    pub(super) fn broadcast_append(&mut self, send_if_empty: bool) -> Result<(), CoreError> {
        for peer in self.peers.clone() {
            self.send_appends(peer, send_if_empty)?;
        }
        Ok(())
    }

    /// Fill the follower's window (bounded by `max_inflight_appends`).
    fn send_appends(&mut self, peer: NodeId, send_if_empty: bool) -> Result<(), CoreError> {
        let mut sent_any = false;
        for _ in 0..self.config.max_inflight_appends {
            if !self.send_append(peer, send_if_empty && !sent_any)? {
                break;
            }
            sent_any = true;
            if self.progress[&peer].state == ProgressState::Probe {
                break;
            }
        }
        Ok(())
    }

    /// Send one append to `peer`. Returns whether one was sent.
    pub(super) fn send_append(
        &mut self,
        peer: NodeId,
        send_if_empty: bool,
    ) -> Result<bool, CoreError> {
        assert_eq!(self.role, Role::Leader);
        let progress = &self.progress[&peer];
        if progress.is_paused() {
            return Ok(false);
        }
        let next_index = progress.next_index;
        assert!(
            progress.match_index <= self.log.last_index(),
            "match past our last index"
        );
        let prev_log_index = next_index - 1;
        let first_index = self.log.first_index();
        let prev_term = if prev_log_index + 1 < first_index {
            None
        } else {
            self.log.term(prev_log_index)?
        };
        let Some(prev_log_term) = prev_term else {
            // Retention removed what this follower needs.
            return self.send_log_start(peer);
        };
        let entries = self.log.entries(
            next_index,
            self.config.max_batch_entries,
            self.config.max_batch_bytes,
        )?;
        if entries.is_empty() && !send_if_empty {
            return Ok(false);
        }
        let last_sent = entries.last().map_or(prev_log_index, |entry| entry.index);
        let leader_commit = self.log.committed();
        let progress = self.progress.get_mut(&peer).expect("peer");
        progress.needs_compacted_entries = false;
        progress.install_sent_at_ticks = None;
        let payload_bytes = entries.iter().map(|entry| entry.payload.len() as u64).sum();
        progress.sent_append(last_sent, entries.len(), payload_bytes);
        // The follower commits no further than the last entry sent here.
        progress.sent_commit(leader_commit.min(last_sent));
        self.send(
            peer,
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            },
        );
        Ok(true)
    }

    /// `peer` needs entries before this log's first index: send it the log
    /// start instead (the entry before the first, the configuration in
    /// force there and the caller's state image), at most once per
    /// election timeout while unanswered. Returns whether it was sent.
    fn send_log_start(&mut self, peer: NodeId) -> Result<bool, CoreError> {
        let now = self.now_ticks;
        let election_ticks = self.config.election_ticks;
        let progress = self.progress.get_mut(&peer).expect("peer");
        progress.needs_compacted_entries = true;
        if progress
            .install_sent_at_ticks
            .is_some_and(|at| now.saturating_sub(at) < election_ticks)
        {
            return Ok(false);
        }
        let prev_log_index = self.log.first_index() - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index)? else {
            return Err(CoreError::Storage(super::LogReadError {
                reason: format!(
                    "the store has no term for {prev_log_index}, the index before its first"
                ),
            }));
        };
        // Records are kept from the newest one at or below the log start
        // (`on_commit_configurations`). It has no payload only when it is
        // a bootstrap set the caller gave as ids alone (the simulation):
        // nothing can be installed then.
        let Some(configuration) = self
            .configs
            .iter()
            .rev()
            .find(|record| record.index <= prev_log_index)
            .map(|record| record.payload.clone())
            .filter(|payload| !payload.is_empty())
        else {
            return Ok(false);
        };
        let state = self.log.store().state_image()?;
        let progress = self.progress.get_mut(&peer).expect("peer");
        progress.install_sent_at_ticks = Some(now);
        // Probing stays below the start until the answer moves the match
        // point to it: until then every probe comes back here.
        progress.become_probe();
        progress.sent_append(prev_log_index, 0, 0);
        let leader_commit = self.log.committed();
        self.send(
            peer,
            MessageBody::InstallLogStart {
                prev_log_index,
                prev_log_term,
                configuration,
                state,
                leader_commit,
            },
        );
        Ok(true)
    }

    /// The leader's log start (see [`MessageBody::InstallLogStart`]),
    /// from the current term's leader.
    pub(super) fn handle_install_log_start(
        &mut self,
        from: NodeId,
        prev_log_index: Index,
        prev_log_term: Term,
        configuration: bytes::Bytes,
        state: bytes::Bytes,
        leader_commit: Index,
    ) -> Result<(), CoreError> {
        if prev_log_term > self.term || prev_log_index == 0 {
            let detail = format!(
                "a log start at {prev_log_index} of term {prev_log_term} in term {}",
                self.term
            );
            self.violation(from, ViolationKind::BadEntryTerm, detail);
            return Ok(());
        }
        if prev_log_index > leader_commit {
            let detail =
                format!("a log start at {prev_log_index} past its commit index {leader_commit}");
            self.violation(from, ViolationKind::BadEntryTerm, detail);
            return Ok(());
        }
        let record = match ConfigRecord::from_entry(prev_log_index, prev_log_term, configuration) {
            Ok(record) => record,
            Err(err) => {
                let detail = format!("the log start's configuration does not decode: {err}");
                self.violation(from, ViolationKind::MalformedConfiguration, detail);
                return Ok(());
            }
        };
        self.leader_commit_told = Some(leader_commit);
        let committed = self.log.committed();
        if prev_log_index <= committed || prev_log_index <= self.leader_match_index {
            // Everything up to the start is here already: committed, or
            // matched with this leader in this term. The latter must not be
            // dropped: answers for entries past the start may be on their
            // way (an append crossed the leader's retention), and the
            // leader would count them with the entries gone (the
            // simulation found it, seed 3445).
            let match_index = committed.max(self.leader_match_index);
            self.leader_match_index = match_index;
            let result = AppendResult::Success { match_index };
            self.send_after_persist(from, MessageBody::AppendResponse { result });
            return Ok(());
        }
        self.log.install_start(prev_log_index, prev_log_term);
        self.leader_match_index = prev_log_index;
        self.install_configuration(record);
        self.log_start = Some(super::ready::LogStart {
            prev_log_index,
            prev_log_term,
            state,
        });
        let result = AppendResult::Success {
            match_index: prev_log_index,
        };
        self.send_after_persist(from, MessageBody::AppendResponse { result });
        Ok(())
    }

    /// Tells the followers the retention floor (the lowest match index
    /// plus one) when it moved, and once per election timeout anyway (a
    /// follower may have missed it, or restarted).
    pub(super) fn broadcast_retention_floor(&mut self) {
        if !self.config.retention_floor {
            return;
        }
        let Some(lowest_match) = self.progress.values().map(|p| p.match_index).min() else {
            return;
        };
        let keep_from = lowest_match + 1;
        let now = self.now_ticks;
        let due = self.keep_from_sent.is_none_or(|(sent, at)| {
            sent != keep_from || now.saturating_sub(at) >= self.config.election_ticks
        });
        if !due {
            return;
        }
        self.keep_from_sent = Some((keep_from, now));
        for peer in self.peers.clone() {
            self.send(peer, MessageBody::RetentionFloor { keep_from });
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self, read_context: Option<u64>) {
        // The commit index as it is, not clamped to what the follower
        // matches: the follower clamps it itself before committing, and
        // needs the real figure to know how far behind it is.
        let leader_commit = self.log.committed();
        for peer in self.peers.clone() {
            // The follower commits no further than it is known to match.
            if let Some(progress) = self.progress.get_mut(&peer) {
                progress.sent_commit(leader_commit.min(progress.match_index));
            }
            self.send(
                peer,
                MessageBody::Heartbeat {
                    leader_commit,
                    read_context,
                },
            );
        }
    }

    /// The rejection a follower sends for an append after `prev_log_index`
    /// whose term did not match (`prev_log_term`, 0 when unknown).
    pub(super) fn reject_append_result(
        &self,
        prev_log_index: Index,
        prev_log_term: Term,
    ) -> Result<AppendResult, CoreError> {
        let (hint_index, hint_term) = self
            .log
            .find_conflict_by_term(prev_log_index.min(self.log.last_index()), prev_log_term)?;
        Ok(AppendResult::Reject {
            rejected_index: prev_log_index,
            hint_index,
            hint_term,
        })
    }

    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: &[Entry],
        leader_commit: Index,
    ) -> Result<(), CoreError> {
        if let Some((kind, detail)) = self.check_append(prev_log_index, prev_log_term, entries)? {
            self.violation(from, kind, detail);
            return Ok(());
        }
        self.leader_commit_told = Some(leader_commit);
        let committed = self.log.committed();
        if prev_log_index < committed {
            // Our committed prefix is in every later leader's log.
            self.leader_match_index = self.leader_match_index.max(committed);
            let result = AppendResult::Success {
                match_index: committed,
            };
            self.send_after_persist(from, MessageBody::AppendResponse { result });
            return Ok(());
        }
        match self
            .log
            .maybe_append(prev_log_index, prev_log_term, leader_commit, entries)?
        {
            Some(last_new) => {
                self.track_configurations(entries);
                self.leader_match_index = self.leader_match_index.max(last_new);
                // Sent only once the appended entries are durable.
                let result = AppendResult::Success {
                    match_index: last_new,
                };
                self.send_after_persist(from, MessageBody::AppendResponse { result });
            }
            None => {
                let result = self.reject_append_result(prev_log_index, prev_log_term)?;
                self.send(from, MessageBody::AppendResponse { result });
            }
        }
        assert!(self.log.committed() <= self.log.last_index());
        Ok(())
    }

    /// What is wrong with an append from the current term's leader, if
    /// anything: entries that do not follow `prev_log_index` one by one,
    /// terms that go back or are newer than the leader's, or a
    /// replacement of entries this leader already confirmed (or that are
    /// committed).
    fn check_append(
        &self,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: &[Entry],
    ) -> Result<Option<(ViolationKind, String)>, CoreError> {
        let mut previous = (prev_log_index, prev_log_term);
        for entry in entries {
            if previous.0.checked_add(1) != Some(entry.index) {
                let detail = format!(
                    "entry {} follows {} in an append after {prev_log_index}",
                    entry.index, previous.0
                );
                return Ok(Some((ViolationKind::NonContiguousEntries, detail)));
            }
            if entry.term < previous.1 || entry.term > self.term {
                let detail = format!(
                    "entry {} has term {} after term {} in an append of term {}",
                    entry.index, entry.term, previous.1, self.term
                );
                return Ok(Some((ViolationKind::BadEntryTerm, detail)));
            }
            if entry.kind == EntryKind::Configuration {
                if let Err(err) =
                    ConfigRecord::from_entry(entry.index, entry.term, entry.payload.clone())
                {
                    let detail = format!("entry {} is not a configuration: {err}", entry.index);
                    return Ok(Some((ViolationKind::MalformedConfiguration, detail)));
                }
            }
            previous = (entry.index, entry.term);
        }
        if prev_log_term > self.term {
            let detail = format!(
                "prev_log_term {prev_log_term} is newer than the append's term {}",
                self.term
            );
            return Ok(Some((ViolationKind::BadEntryTerm, detail)));
        }
        // Only what would be replaced matters; an entry below the commit
        // index is skipped by `handle_append` anyway.
        let keep_through = self.leader_match_index.max(self.log.committed());
        for entry in entries {
            if entry.index > keep_through {
                break;
            }
            match self.log.term(entry.index)? {
                Some(term) if term != entry.term => {
                    let detail = format!(
                        "replaces entry {} (term {term}) with term {}, but entries up to {keep_through} already matched",
                        entry.index, entry.term
                    );
                    return Ok(Some((ViolationKind::LeaderContradiction, detail)));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    pub(super) fn handle_heartbeat(
        &mut self,
        from: NodeId,
        leader_commit: Index,
        read_context: Option<u64>,
    ) {
        self.leader_commit_told = Some(leader_commit);
        // Only commit what is known to match this leader's log.
        let known_match = self.leader_match_index.min(self.log.last_index());
        self.log.commit_to(leader_commit.min(known_match));
        let commit_index = self.log.committed();
        self.send(
            from,
            MessageBody::HeartbeatResponse {
                read_context,
                commit_index,
            },
        );
    }

    /// The progress of `from`, marked as heard from just now (check-quorum
    /// and the status page count on it); `None` for a sender that is not a
    /// member (one just removed, still answering).
    fn heard_from(&mut self, from: NodeId) -> Option<&mut Progress> {
        let progress = self.progress.get_mut(&from)?;
        progress.recent_active = true;
        progress.last_contact_ticks = 0;
        Some(progress)
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        result: AppendResult,
    ) -> Result<(), CoreError> {
        let last_index = self.log.last_index();
        let past_end = match result {
            AppendResult::Success { match_index } => match_index > last_index,
            AppendResult::Reject { rejected_index, .. } => rejected_index > last_index,
        };
        if past_end {
            let detail = format!("answers {result:?} but the last index is {last_index}");
            self.violation(from, ViolationKind::AckPastLastIndex, detail);
            return Ok(());
        }
        let Some(progress) = self.heard_from(from) else {
            return Ok(());
        };
        match result {
            AppendResult::Reject {
                rejected_index,
                hint_index,
                hint_term,
            } => {
                // A hint is the follower's word: never past our own log.
                let next_probe = if hint_term > 0 {
                    self.log.find_conflict_by_term(hint_index, hint_term)?.0
                } else {
                    hint_index.min(last_index)
                };
                // Same index and term: the follower's log matches ours
                // through the hint, and ends there when that is short of
                // the rejected append (a gap, not a disagreement).
                let gap_end = (hint_term > 0
                    && hint_index < rejected_index
                    && self.log.term(hint_index)? == Some(hint_term))
                .then_some(hint_index);
                let Some(progress) = self.progress.get_mut(&from) else {
                    return Ok(());
                };
                if progress.maybe_decrease_to(rejected_index, next_probe, gap_end) {
                    self.send_appends(from, true)?;
                }
            }
            AppendResult::Success { match_index } => {
                if progress.maybe_update(match_index) {
                    if progress.state == ProgressState::Probe {
                        progress.become_replicate();
                    }
                    self.maybe_commit()?;
                    if let Some(transfer) = self.transfer {
                        if transfer.target == from
                            && !transfer.timeout_now_sent
                            && self.progress.get(&from).map(|p| p.match_index)
                                == Some(self.log.last_index())
                        {
                            self.send_timeout_now(from)?;
                        }
                    }
                }
                if self.role == Role::Leader && self.progress.contains_key(&from) {
                    self.send_appends(from, false)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn handle_heartbeat_response(
        &mut self,
        from: NodeId,
        read_context: Option<u64>,
        follower_commit: Index,
    ) -> Result<(), CoreError> {
        let last_index = self.log.last_index();
        let commit = self.log.committed();
        if let Some(context) = read_context.filter(|c| *c > self.read_only.last_context()) {
            let detail = format!(
                "confirms read round {context}; the last one started is {}",
                self.read_only.last_context()
            );
            self.violation(from, ViolationKind::UnknownReadContext, detail);
            return Ok(());
        }
        let Some(progress) = self.heard_from(from) else {
            return Ok(());
        };
        progress.resume_probe();
        if progress.state == ProgressState::Replicate && progress.is_paused() {
            // The follower is alive yet the window stays full: an append was
            // probably lost. Let one more through; a gap makes it reject and
            // the leader re-probes.
            progress.free_first_inflight();
        }
        if follower_commit < commit {
            // It did not take the commit it was sent (a lost message, a
            // restart): owed again, for the next append or tick.
            progress.commit_sent = progress.commit_sent.min(follower_commit);
        }
        if progress.match_index < last_index {
            self.send_append(from, true)?;
        }
        if let Some(context) = read_context {
            self.read_only.ack(from, context);
            for (request_id, index) in self.read_only.take_confirmed(&self.membership) {
                self.answer_read(request_id, Ok(index));
            }
        }
        Ok(())
    }

    /// Advance the commit index to what a majority holds durably, counting
    /// only an entry of the current term (earlier ones commit with it).
    pub(super) fn maybe_commit(&mut self) -> Result<(), CoreError> {
        assert_eq!(self.role, Role::Leader);
        let own = self.log.persisted_index();
        let candidate = self.membership.committed_index(|id| {
            if id == self.id {
                own
            } else {
                self.progress
                    .get(&id)
                    .map_or(0, |progress| progress.match_index)
            }
        });
        let committed = self.log.committed();
        if candidate <= committed || self.log.term(candidate)? != Some(self.term) {
            return Ok(());
        }
        self.log.commit_to(candidate);
        if committed < self.noop_index && candidate >= self.noop_index {
            let waiting = std::mem::take(&mut self.reads_before_noop);
            if !waiting.is_empty() {
                self.start_reads(&waiting);
            }
        }
        // No Append goes out just to carry the new commit index: the
        // followers are owed it (`Progress::commit_sent`), and the next
        // append or heartbeat to each carries it, or, if none goes within
        // a tick, `send_owed_commits` on the tick. At one request in flight
        // this halves the messages between leader and followers (a
        // commit-only Append and its ack per follower per commit). The
        // cost is that followers learn the commit up to a tick later, which
        // nothing needs sooner:
        // - ReadIndex: a read takes the leader's commit index and is
        //   served on the leader; the followers only answer the heartbeat
        //   round (which carries the commit anyway).
        // - Leadership transfer: TimeoutNow goes at once
        //   (`send_timeout_now`), after the owed commits; the new leader
        //   commits its no-op before it serves reads or changes.
        // - Membership: one change at a time is the leader's own commit
        //   index (`propose_configuration`); followers only prune their
        //   records and decide whether a removed voter may campaign from
        //   theirs, and are at worst a tick late there. A leader that
        //   hands over at its removal sends the owed commits first
        //   (`on_commit_configurations`).
        // - A leader stepping down otherwise (check-quorum, newer term)
        //   cannot or need not tell them; the next leader's commit does.
        // - Catch-up, log starts and retention: appends to a lagging
        //   follower carry the commit; the retention floor is a message
        //   of its own and does not depend on it.
        // - `/readyz` and follower reads (`readable_index`) see the commit
        //   up to one tick (10 ms in the server) later.
        Ok(())
    }

    /// Leader, on each tick: send the commit index to every follower that
    /// is owed it (see `maybe_commit`), in an append with whatever entries
    /// it lacks, or empty. A follower whose window is full or whose probe
    /// is unanswered gets it with the next append its answer frees.
    pub(super) fn send_owed_commits(&mut self) -> Result<(), CoreError> {
        let commit = self.log.committed();
        let owed: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(_, progress)| progress.commit_sent < commit)
            .map(|(id, _)| *id)
            .collect();
        for peer in owed {
            self.send_appends(peer, true)?;
        }
        Ok(())
    }
}
