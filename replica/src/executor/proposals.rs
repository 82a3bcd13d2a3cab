//! Proposal bookkeeping: each client batch from the moment the core took
//! its entries to its one answer. A batch is answered by what became of
//! its entries: committed, not appended, or (when a new leader's entries
//! replaced only its tail) the prefix committed and the rest not appended.
//! It is never told "not appended" while part of it can still commit: the
//! client would retry and duplicate that part.

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
    /// batch was decided; it may have committed.
    LogDropped,
}

struct Pending<R> {
    first_index: Index,
    /// The batch's last entry still in the log (lowered by truncation).
    last_index: Index,
    requested: u64,
    term: Term,
    deadline_ms: u64,
    reply: R,
}

impl<R> Pending<R> {
    fn kept(&self) -> u64 {
        self.last_index + 1 - self.first_index
    }
}

/// Batches waiting for their outcome, in index order. `R` is how the caller
/// answers one (a callback, a channel, a test's id).
pub struct Proposals<R> {
    pending: VecDeque<Pending<R>>,
}

impl<R> Default for Proposals<R> {
    fn default() -> Self {
        Proposals {
            pending: VecDeque::new(),
        }
    }
}

impl<R> Proposals<R> {
    /// How many batches wait.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
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
            requested,
            term,
            deadline_ms,
            reply,
        });
        Ok(())
    }

    /// The commit index reached `commit`: answer the batches it covers.
    /// `term_at` gives the term of the entry now at an index in the log; a
    /// batch whose last kept entry still has its term committed (Log
    /// Matching: so did the entries before it), else it was replaced.
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
            let outcome = if term_at(pending.last_index)? != Some(pending.term) {
                Outcome::NotAppended
            } else if pending.kept() == pending.requested {
                Outcome::Committed {
                    first_index: pending.first_index,
                    term: pending.term,
                    count: pending.requested,
                }
            } else {
                Outcome::PartlyCommitted {
                    first_index: pending.first_index,
                    term: pending.term,
                    committed: pending.kept(),
                    requested: pending.requested,
                }
            };
            answers.push((pending.reply, outcome));
        }
        Ok(answers)
    }

    /// The log was cut from `from` on (another leader's entries replace
    /// it; committed entries are never cut). Batches wholly at or after
    /// `from` are answered not appended; one that straddles `from` keeps
    /// waiting for the fate of its prefix.
    pub fn on_truncate(&mut self, from: Index) -> Vec<(R, Outcome)> {
        let mut answers = Vec::new();
        while self
            .pending
            .back()
            .is_some_and(|pending| pending.first_index >= from)
        {
            if let Some(pending) = self.pending.pop_back() {
                answers.push((pending.reply, Outcome::NotAppended));
            }
        }
        if let Some(straddling) = self.pending.back_mut() {
            if straddling.last_index >= from {
                straddling.last_index = from - 1;
            }
        }
        answers.reverse();
        answers
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
        answers
    }

    /// Take every waiting batch (the loop stops); their outcome is unknown.
    pub fn drain(&mut self) -> Vec<R> {
        self.pending
            .drain(..)
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

    #[test]
    fn a_batch_straddling_a_truncation_is_answered_by_its_prefix() {
        let mut proposals = Proposals::default();
        proposals.push(2, 3, 2, 1, 100, "before").unwrap();
        proposals.push(4, 7, 4, 1, 100, "straddles").unwrap();
        proposals.push(8, 9, 2, 1, 100, "after").unwrap();
        // A leader of term 2 keeps 1..=5 and replaces 6 on.
        assert_eq!(
            proposals.on_truncate(6),
            vec![("after", Outcome::NotAppended)]
        );
        let log = [1, 1, 1, 1, 1, 2, 2];
        let answers = proposals.on_commit(7, terms(&log)).unwrap();
        assert_eq!(answers.len(), 2);
        assert_eq!(
            answers[1],
            (
                "straddles",
                Outcome::PartlyCommitted {
                    first_index: 4,
                    term: 1,
                    committed: 2,
                    requested: 4
                }
            )
        );
    }

    #[test]
    fn a_straddling_batch_whose_prefix_is_replaced_later_was_not_appended() {
        let mut proposals = Proposals::default();
        proposals.push(4, 7, 4, 1, 100, "straddles").unwrap();
        assert!(proposals.on_truncate(6).is_empty());
        // Yet another leader replaced 4 on as well.
        assert!(proposals
            .on_truncate(4)
            .iter()
            .any(|(r, o)| *r == "straddles" && *o == Outcome::NotAppended));
        assert!(proposals.is_empty());
        let mut proposals = Proposals::default();
        proposals.push(4, 7, 4, 1, 100, "straddles").unwrap();
        proposals.on_truncate(6);
        let log = [1, 1, 1, 3, 3, 3];
        let answers = proposals.on_commit(6, terms(&log)).unwrap();
        assert_eq!(answers, vec![("straddles", Outcome::NotAppended)]);
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
