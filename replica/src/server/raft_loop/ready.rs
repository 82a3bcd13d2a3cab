//! The server's host for the shared Ready executor (`executor::ready`):
//! the hard state and the entries written through group commit, messages
//! sent on the peers' links, clients answered, role changes taken in.

use std::time::Instant;

use crate::consumers::{Applied, MalformedCommit};
use crate::core::{self, LogStart, Message, ReadState, SoftState, TransferOutcome, Violation};
use crate::engine::AppendError;
use crate::entry::{Entry, HardState, Index};
use crate::executor::{self, Answers, Bookkeeping, EntryTerms, Host, Outcome, Written};
use crate::membership::ConfigRecord;
use crate::server::role_log;

use super::answers::Waiter;
use super::{Input, RaftLoop};

impl RaftLoop {
    pub(super) fn process_ready(&mut self) -> Result<(), String> {
        while self.node.has_ready() {
            let ready = self.node.ready().map_err(|err| err.to_string())?;
            executor::carry_out(self, ready)?;
        }
        Ok(())
    }
}

/// The server's side of a Ready: the disk through group commit, the peers'
/// links, the clients' waiters. The order and the bookkeeping are the
/// executor's (`executor::carry_out`), as in the simulation.
impl Host for RaftLoop {
    type Waiter = Waiter;

    fn parts(&mut self) -> (&mut Bookkeeping<Waiter>, &dyn EntryTerms) {
        (&mut self.books, &self.node)
    }

    fn violation(&mut self, violation: Violation) {
        self.metrics.count_violation(violation.kind);
        tracing::warn!(
            peer = %self.member_name(violation.from),
            reason = violation.kind.as_str(),
            detail = %violation.detail,
            "dropped a peer message that breaks the protocol"
        );
    }

    fn save_configurations(&mut self, records: Vec<ConfigRecord>) -> Result<(), String> {
        self.on_configurations(&records)
    }

    fn install_log_start(&mut self, start: LogStart) -> Result<(), String> {
        RaftLoop::install_log_start(self, start)
    }

    fn soft_state(&mut self, soft: SoftState) -> Result<(), String> {
        self.on_soft_state(soft);
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) {
        self.peers.send_all(messages);
    }

    fn truncate_log(&mut self, from: Index) -> Result<(), String> {
        // Synced before it returns, so the batches it cuts may be told
        // "not appended" at once.
        self.storage
            .truncate_suffix(from)
            .map_err(|err| format!("truncating the log from {from}: {err}"))
    }

    fn answer_truncated(&mut self, answers: Answers<Waiter>) -> Result<(), String> {
        self.answer(answers, &[])
    }

    fn malformed_offset_commit(
        &mut self,
        index: Index,
        defect: MalformedCommit,
    ) -> Result<(), String> {
        tracing::warn!(index, err = %defect, "an offset commit entry does not decode; it is skipped");
        Ok(())
    }

    /// The hard state synchronously (rare: elections only), entries
    /// through group commit.
    fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
        sequence: u64,
    ) -> Result<Written, String> {
        if let Some(state) = hard_state {
            self.save_hard_state(state)?;
        }
        if entries.is_empty() {
            return Ok(Written::Durable);
        }
        self.submit(entries, sequence)?;
        Ok(Written::Later)
    }

    fn apply_offsets(&mut self, commit: Index) -> Result<Vec<(Index, Applied)>, String> {
        Ok(self.apply_consumer_commits(commit))
    }

    fn answer(
        &mut self,
        answers: Answers<Waiter>,
        verdicts: &[(Index, Applied)],
    ) -> Result<(), String> {
        if answers.iter().any(|(_, outcome)| {
            matches!(
                outcome,
                Outcome::Committed { .. } | Outcome::PartlyCommitted { .. }
            )
        }) {
            self.publish_commit();
        }
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
            waiter.answer(outcome, verdicts);
        }
        Ok(())
    }

    fn committed(&mut self, commit: Index) -> Result<(), String> {
        self.serve_waiting_reads(commit);
        Ok(())
    }

    fn read_state(&mut self, read: ReadState) -> Result<(), String> {
        self.on_read_state(read);
        Ok(())
    }

    fn transfer_outcome(&mut self, outcome: TransferOutcome) {
        self.on_transfer_outcome(outcome);
    }
}

impl RaftLoop {
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

    /// Hands entries to group commit as write `sequence`; its completion
    /// comes back as `Input::Persisted`.
    fn submit(&mut self, entries: Vec<Entry>, sequence: u64) -> Result<(), String> {
        let last = entries.last().map(|entry| (entry.index, entry.term));
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
