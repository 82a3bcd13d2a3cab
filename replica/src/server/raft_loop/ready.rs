//! Carrying out a core `Ready`: writing the hard state and the entries
//! (cutting a conflicting tail first), sending messages once what they
//! wait for is durable, and taking in role changes.

use std::time::Instant;

use crate::core::{self, Ready, SoftState, Violation};
use crate::engine::AppendError;
use crate::entry::{Entry, HardState};
use crate::server::role_log;

use super::{Input, RaftLoop};

impl RaftLoop {
    pub(super) fn process_ready(&mut self) -> Result<(), String> {
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
            log_start,
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
        if let Some(start) = log_start {
            self.install_log_start(start)?;
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

    pub(super) fn on_soft_state(&mut self, soft: SoftState) {
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
}
