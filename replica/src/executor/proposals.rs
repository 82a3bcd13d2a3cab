//! Proposal bookkeeping: each client batch from the moment the core took
//! its entries to its one answer. A batch is answered by what became of
//! its entries: committed, not appended, or (when a new leader's entries
//! replaced only its tail) the prefix committed and the rest not appended.
//! It is never told "not appended" while part of it can still commit: the
//! client would retry and duplicate that part. So a batch a truncation cut
//! here is decided only once the commit index covers it: another member
//! may still hold its entries and lead with them (the simulation found
//! that, seed 4561 once commit-only appends were gone: entries cut on the
//! member that proposed them committed later from another's log).

use std::collections::VecDeque;

use crate::entry::{Index, Term};

/// What became of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// All `count` entries committed from `first_index` at `term`.
    Committed {
        /// The first entry's index.
        first_index: Index,
        /// Their term.
        term: Term,
        /// How many entries.
        count: u64,
    },
    /// A new leader replaced the batch's tail: its first `committed`
    /// entries committed from `first_index` at `term`, the other
    /// `requested - committed` were not appended.
    PartlyCommitted {
        /// The first entry's index.
        first_index: Index,
        /// Their term.
        term: Term,
        /// How many of the batch committed.
        committed: u64,
        /// How many the batch had.
        requested: u64,
    },
    /// None of the batch is in the log.
    NotAppended,
    /// Not committed by the deadline; it may still commit.
    TimedOut,
    /// This member dropped its log for the leader's log start before the
    /// batch was decided, or a truncation cut it and retention deleted the
    /// entries that would tell; it may have committed.
    LogDropped,
}

struct Pending<R> {
    first_index: Index,
    /// The batch's last entry the core appended.
    last_index: Index,
    /// The last of its entries never cut from this member's log (lowered
    /// by truncations; `first_index - 1` when all were): committed once
    /// the commit index passes them, even if retention deleted them since.
    kept_last: Index,
    requested: u64,
    term: Term,
    deadline_ms: u64,
    reply: R,
}

impl<R> Pending<R> {
    /// How many of the batch's entries the core appended.
    fn appended(&self) -> u64 {
        self.last_index + 1 - self.first_index
    }

    /// The outcome when the first `committed` of its entries committed.
    fn outcome(&self, committed: u64) -> Outcome {
        if committed == 0 {
            Outcome::NotAppended
        } else if committed == self.requested {
            Outcome::Committed {
                first_index: self.first_index,
                term: self.term,
                count: committed,
            }
        } else {
            Outcome::PartlyCommitted {
                first_index: self.first_index,
                term: self.term,
                committed,
                requested: self.requested,
            }
        }
    }
}

/// Batches waiting for their outcome, in index order. `R` is how the caller
/// answers one (a callback, a channel, a test's id).
pub struct Proposals<R> {
    pending: VecDeque<Pending<R>>,
    /// Batches a truncation cut from this member's log, whole, waiting for
    /// the commit index to pass their last index. Out of `pending`, as
    /// this member may propose at the same indexes again.
    cut: Vec<Pending<R>>,
}

impl<R> Default for Proposals<R> {
    fn default() -> Self {
        Proposals {
            pending: VecDeque::new(),
            cut: Vec::new(),
        }
    }
}

impl<R> Proposals<R> {
    /// How many batches wait.
    pub fn len(&self) -> usize {
        self.pending.len() + self.cut.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.cut.is_empty()
    }

    /// Track a batch of `requested` entries of which the core appended the
    /// first ones at `first_index..=last_index` in `term` (all of them,
    /// unless it refused the rest), to be answered by `deadline_ms` on the
    /// caller's clock. Batches come in index order; one that does not (or
    /// claims more appended than requested) is handed back, which never
    /// happens with entries the core just appended.
    pub fn push(
        &mut self,
        first_index: Index,
        last_index: Index,
        requested: u64,
        term: Term,
        deadline_ms: u64,
        reply: R,
    ) -> Result<(), R> {
        let in_order = first_index <= last_index
            && last_index - first_index < requested
            && self
                .pending
                .back()
                .is_none_or(|previous| previous.last_index < first_index);
        if !in_order {
            return Err(reply);
        }
        self.pending.push_back(Pending {
            first_index,
            last_index,
            kept_last: last_index,
            requested,
            term,
            deadline_ms,
            reply,
        });
        Ok(())
    }

    /// The commit index reached `commit`: answer the batches it covers.
    /// `term_at` gives the term of the entry now at an index in the log
    /// (`None` when retention deleted it). A batch never cut is committed
    /// (its entries are still this log's); a cut one is answered by which
    /// of its entries the committed log holds.
    pub fn on_commit<E>(
        &mut self,
        commit: Index,
        mut term_at: impl FnMut(Index) -> Result<Option<Term>, E>,
    ) -> Result<Vec<(R, Outcome)>, E> {
        let mut answers = Vec::new();
        while self
            .pending
            .front()
            .is_some_and(|pending| pending.last_index <= commit)
        {
            let Some(pending) = self.pending.pop_front() else {
                break;
            };
            let replaced = term_at(pending.last_index)?.is_some_and(|term| term != pending.term);
            let outcome = if replaced {
                Outcome::NotAppended
            } else {
                pending.outcome(pending.appended())
            };
            answers.push((pending.reply, outcome));
        }
        for cut in self.take_cut(|cut| cut.last_index <= commit) {
            // Its entries up to `kept_last` are this member's own, so
            // committed. Of the others, those the committed log holds are
            // a prefix of the rest (Log Matching), found by bisection on
            // the terms of this member's log (the committed log up to the
            // commit index); one retention deleted leaves it unknown.
            let (mut low, mut high) = (cut.kept_last + 1, cut.last_index + 1);
            let mut unknown = false;
            while low < high {
                let middle = low + (high - low) / 2;
                match term_at(middle)? {
                    Some(term) if term == cut.term => low = middle + 1,
                    Some(_) => high = middle,
                    None => {
                        unknown = true;
                        break;
                    }
                }
            }
            let outcome = if unknown {
                Outcome::LogDropped
            } else {
                cut.outcome(low - cut.first_index)
            };
            answers.push((cut.reply, outcome));
        }
        Ok(answers)
    }

    /// Takes the cut batches `due` picks out of `self.cut` (which keeps no
    /// order: each taken one's place goes to the last).
    fn take_cut(&mut self, due: impl Fn(&Pending<R>) -> bool) -> Vec<Pending<R>> {
        let mut taken = Vec::new();
        let mut position = 0;
        while position < self.cut.len() {
            if due(&self.cut[position]) {
                taken.push(self.cut.swap_remove(position));
            } else {
                position += 1;
            }
        }
        taken
    }

    /// The log was cut from `from` on (another leader's entries replace
    /// it; committed entries are never cut). The batches with entries at
    /// or after `from` wait, whole, for the commit index to pass them:
    /// another member may still hold the cut entries and commit them as
    /// leader, so "not appended" is known only then. Answers nothing now;
    /// the answers come from `on_commit`, `expire` or `on_log_start`.
    pub fn on_truncate(&mut self, from: Index) -> Vec<(R, Outcome)> {
        while self
            .pending
            .back()
            .is_some_and(|pending| pending.last_index >= from)
        {
            if let Some(pending) = self.pending.pop_back() {
                self.cut.push(pending);
            }
        }
        for cut in &mut self.cut {
            cut.kept_last = cut.kept_last.min(from - 1).max(cut.first_index - 1);
        }
        Vec::new()
    }

    /// The whole log was dropped for the leader's log start: every batch
    /// is answered [`Outcome::LogDropped`]. Its entries may have committed (up to the
    /// start everything did, and the leader's log may hold them past it),
    /// but this member no longer has them to tell; and its log restarts
    /// without them, so a later proposal of its own may take their
    /// indexes (the simulation found that, seed 8232).
    pub fn on_log_start(&mut self) -> Vec<(R, Outcome)> {
        self.pending
            .drain(..)
            .chain(self.cut.drain(..))
            .map(|pending| (pending.reply, Outcome::LogDropped))
            .collect()
    }

    /// Answer the batches whose deadline passed at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(R, Outcome)> {
        let mut answers = Vec::new();
        // Same timeout for all, in order: the expired ones are in front.
        while self
            .pending
            .front()
            .is_some_and(|pending| pending.deadline_ms <= now_ms)
        {
            if let Some(pending) = self.pending.pop_front() {
                answers.push((pending.reply, Outcome::TimedOut));
            }
        }
        answers.extend(
            self.take_cut(|cut| cut.deadline_ms <= now_ms)
                .into_iter()
                .map(|cut| (cut.reply, Outcome::TimedOut)),
        );
        answers
    }

    /// Take every waiting batch (the loop stops); their outcome is unknown.
    pub fn drain(&mut self) -> Vec<R> {
        self.pending
            .drain(..)
            .chain(self.cut.drain(..))
            .map(|pending| pending.reply)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(log: &[Term]) -> impl FnMut(Index) -> Result<Option<Term>, ()> + '_ {
        move |index| Ok(log.get(index as usize - 1).copied())
    }

    #[test]
    fn committed_batches_are_answered_in_order() {
        let mut proposals = Proposals::default();
        proposals.push(2, 4, 3, 1, 100, "a").unwrap();
        proposals.push(5, 5, 1, 1, 100, "b").unwrap();
        let log = [1, 1, 1, 1, 1];
        let answers = proposals.on_commit(4, terms(&log)).unwrap();
        assert_eq!(
            answers,
            vec![(
                "a",
                Outcome::Committed {
                    first_index: 2,
                    term: 1,
                    count: 3
                }
            )]
        );
        assert_eq!(proposals.len(), 1);
    }

    fn outcome_of(answers: &[(&'static str, Outcome)], reply: &str) -> Option<Outcome> {
        answers
            .iter()
            .find(|(r, _)| *r == reply)
            .map(|(_, outcome)| *outcome)
    }

    #[test]
    fn cut_batches_are_answered_once_the_commit_index_covers_them() {
        let mut proposals = Proposals::default();
        proposals.push(2, 3, 2, 1, 100, "before").unwrap();
        proposals.push(4, 7, 4, 1, 100, "straddles").unwrap();
        proposals.push(8, 9, 2, 1, 100, "after").unwrap();
        // A leader of term 2 keeps 1..=5 and replaces 6 on: nothing is
        // known yet of the cut entries.
        assert!(proposals.on_truncate(6).is_empty());
        assert_eq!(proposals.len(), 3);
        // The same indexes are free for this member's own proposals again.
        proposals.push(6, 6, 1, 3, 100, "new").unwrap();
        let log = [1, 1, 1, 1, 1, 2, 2, 2, 2];
        let answers = proposals.on_commit(5, terms(&log)).unwrap();
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert!(matches!(
            outcome_of(&answers, "before"),
            Some(Outcome::Committed { .. })
        ));
        let answers = proposals.on_commit(9, terms(&log)).unwrap();
        assert_eq!(
            outcome_of(&answers, "straddles"),
            Some(Outcome::PartlyCommitted {
                first_index: 4,
                term: 1,
                committed: 2,
                requested: 4
            })
        );
        assert_eq!(outcome_of(&answers, "after"), Some(Outcome::NotAppended));
        assert_eq!(outcome_of(&answers, "new"), Some(Outcome::NotAppended));
        assert!(proposals.is_empty());
    }

    #[test]
    fn cut_entries_another_member_kept_and_committed_are_answered_committed() {
        // The member that proposed them was cut by a leader without them,
        // and a later leader that had them committed them (seed 4561).
        let mut proposals = Proposals::default();
        proposals.push(4, 7, 4, 2, 100, "kept elsewhere").unwrap();
        assert!(proposals.on_truncate(4).is_empty());
        let log = [1, 1, 1, 2, 2, 2, 2, 5];
        assert!(proposals.on_commit(6, terms(&log)).unwrap().is_empty());
        let answers = proposals.on_commit(8, terms(&log)).unwrap();
        assert_eq!(
            answers,
            vec![(
                "kept elsewhere",
                Outcome::Committed {
                    first_index: 4,
                    term: 2,
                    count: 4
                }
            )]
        );
        // Replaced by the committed log: not appended; past its deadline
        // before that: unknown.
        proposals.push(9, 10, 2, 5, 100, "replaced").unwrap();
        proposals.push(11, 11, 1, 5, 50, "late").unwrap();
        proposals.on_truncate(9);
        assert_eq!(proposals.expire(60), vec![("late", Outcome::TimedOut)]);
        let log = [1, 1, 1, 2, 2, 2, 2, 5, 6, 6, 6];
        let answers = proposals.on_commit(11, terms(&log)).unwrap();
        assert_eq!(answers, vec![("replaced", Outcome::NotAppended)]);
        assert!(proposals.is_empty());
    }

    #[test]
    fn a_cut_batch_whose_kept_prefix_retention_deleted_is_answered_by_that_prefix() {
        // Seed 5054: retention deleted 1..=534 (committed), then a new
        // leader replaced 535 on; the batch's 525..=534 are this log's own.
        let mut proposals = Proposals::default();
        proposals.push(525, 535, 11, 5, 100, "straddles").unwrap();
        proposals.on_truncate(535);
        let term_at = |index: Index| Ok::<_, ()>((index >= 535).then_some(7));
        let answers = proposals.on_commit(538, term_at).unwrap();
        assert_eq!(
            answers,
            vec![(
                "straddles",
                Outcome::PartlyCommitted {
                    first_index: 525,
                    term: 5,
                    committed: 10,
                    requested: 11
                }
            )]
        );
        // Cut lower again later, and the cut entries deleted: unknown.
        proposals.push(600, 603, 4, 8, 100, "twice").unwrap();
        proposals.on_truncate(603);
        proposals.on_truncate(601);
        let term_at = |index: Index| Ok::<_, ()>((index >= 610).then_some(9));
        let answers = proposals.on_commit(610, term_at).unwrap();
        assert_eq!(answers, vec![("twice", Outcome::LogDropped)]);
        // Cut lower again, the rest replaced: the kept prefix alone.
        proposals.push(700, 703, 4, 8, 100, "prefix").unwrap();
        proposals.on_truncate(703);
        proposals.on_truncate(702);
        let log_term = |index: Index| Ok::<_, ()>(Some(if index >= 702 { 9 } else { 8 }));
        let answers = proposals.on_commit(710, log_term).unwrap();
        assert_eq!(
            answers,
            vec![(
                "prefix",
                Outcome::PartlyCommitted {
                    first_index: 700,
                    term: 8,
                    committed: 2,
                    requested: 4
                }
            )]
        );
    }

    #[test]
    fn expiry_and_out_of_order_pushes() {
        let mut proposals = Proposals::default();
        proposals.push(2, 2, 1, 1, 10, 1).unwrap();
        proposals.push(3, 3, 1, 1, 20, 2).unwrap();
        assert_eq!(proposals.push(3, 4, 2, 1, 20, 3), Err(3));
        assert_eq!(proposals.push(6, 5, 1, 1, 20, 4), Err(4));
        assert_eq!(proposals.expire(15), vec![(1, Outcome::TimedOut)]);
        // A batch the core took only in part: its prefix is tracked.
        proposals.push(4, 4, 3, 1, 20, 5).unwrap();
        let log = [1, 1, 1, 1];
        let answers = proposals.on_commit(4, terms(&log)).unwrap();
        assert_eq!(answers.len(), 2);
        assert_eq!(
            answers[1],
            (
                5,
                Outcome::PartlyCommitted {
                    first_index: 4,
                    term: 1,
                    committed: 1,
                    requested: 3
                }
            )
        );
        assert!(proposals.drain().is_empty());
    }

    #[test]
    fn a_log_start_leaves_every_batch_unknown_and_the_indexes_free() {
        let mut proposals = Proposals::default();
        proposals.push(4, 5, 2, 1, 100, "below").unwrap();
        proposals.push(6, 9, 4, 1, 100, "straddles").unwrap();
        proposals.push(10, 11, 2, 1, 100, "after").unwrap();
        assert_eq!(
            proposals.on_log_start(),
            vec![
                ("below", Outcome::LogDropped),
                ("straddles", Outcome::LogDropped),
                ("after", Outcome::LogDropped)
            ]
        );
        // A later proposal of this member's may take the same indexes.
        proposals.push(10, 10, 1, 3, 100, "new").unwrap();
    }
}
