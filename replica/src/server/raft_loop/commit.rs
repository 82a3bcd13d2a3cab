//! Commit, the server's side: applying the offset commits a new commit
//! index covers, and serving the reads it settles (the executor answers
//! the proposals between the two).

use super::RaftLoop;
use crate::consumers::Applied;
use crate::entry::Index;

impl RaftLoop {
    /// Serves the confirmed reads the commit index now reaches.
    pub(super) fn serve_waiting_reads(&mut self, commit: Index) {
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
    }

    /// Applies the offset commits the commit index now covers; their
    /// verdicts by index. Commits with no offset commit among them cost a
    /// look at the first pending index, no lock.
    pub(super) fn apply_consumer_commits(&mut self, commit: Index) -> Vec<(Index, Applied)> {
        // Whatever happens below, every offset commit up to here applies.
        self.consumers_applied_through = self.consumers_applied_through.max(commit);
        if !self.books.consumer_pending.any_committed(commit) {
            return Vec::new();
        }
        let mut state = self
            .consumers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.books
            .consumer_pending
            .apply_committed(commit, &mut state)
    }
}
