//! Commit: applying the offset commits a new commit index covers, then
//! answering the proposals and the reads it settles.

use crate::consumers::Applied;
use crate::entry::Index;
use crate::executor::Outcome;

use super::answers::Waiter;
use super::RaftLoop;

impl RaftLoop {
    pub(super) fn on_commit(&mut self, commit: Index) -> Result<(), String> {
        // Apply first: an offset commit is answered with its verdict, and
        // a read answered below must see what committed before it.
        let verdicts = self.apply_consumer_commits(commit);
        let node = &self.node;
        let answers = self
            .proposals
            .on_commit(commit, |index| node.entry_term(index))
            .map_err(|err| err.to_string())?;
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
            waiter.answer(outcome, &verdicts);
        }
        let ready: Vec<Index> = self
            .reads_waiting
            .range(..=commit)
            .map(|(i, _)| *i)
            .collect();
        for index in ready {
            for reply in self.reads_waiting.remove(&index).unwrap_or_default() {
                let _ = reply.send(Ok(index));
            }
        }
        Ok(())
    }

    /// Applies the offset commits the commit index now covers; their
    /// verdicts by index. Commits with no offset commit among them cost a
    /// look at the first pending index, no lock.
    fn apply_consumer_commits(&mut self, commit: Index) -> Vec<(Index, Applied)> {
        // Whatever happens below, every offset commit up to here applies.
        self.consumers_applied_through = self.consumers_applied_through.max(commit);
        if !self.consumer_pending.any_committed(commit) {
            return Vec::new();
        }
        let mut state = self
            .consumers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.consumer_pending.apply_committed(commit, &mut state)
    }
}
