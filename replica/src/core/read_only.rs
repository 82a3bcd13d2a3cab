//! ReadIndex: linearizable reads confirmed by a heartbeat round.
//!
//! A read takes the leader's commit index when it arrives, then waits until a
//! majority has answered a heartbeat sent after it: only then is the leader
//! sure no newer leader could have committed more.

use std::collections::{BTreeSet, VecDeque};

use crate::entry::{Index, NodeId};
use crate::membership::Membership;

struct PendingRead {
    request_id: u64,
    index: Index,
    context: u64,
    /// The leader's tick when the read was asked (for its deadline).
    asked_at_tick: u64,
    acks: BTreeSet<NodeId>,
}

/// Reads waiting for their heartbeat round, oldest first.
/// Invariant: contexts increase along the queue.
#[derive(Default)]
pub(crate) struct ReadOnly {
    pending: VecDeque<PendingRead>,
    last_context: u64,
}

impl ReadOnly {
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// The context of the newest round still waiting, if any.
    pub(crate) fn newest_context(&self) -> Option<u64> {
        self.pending.back().map(|read| read.context)
    }

    /// The newest context handed out (0 before the first round).
    pub(crate) fn last_context(&self) -> u64 {
        self.last_context
    }

    /// Queue reads, given as (request id, tick asked), at `index`; returns
    /// the context their heartbeat carries.
    pub(crate) fn add(&mut self, reads: &[(u64, u64)], index: Index, leader: NodeId) -> u64 {
        self.last_context += 1;
        if let Some(back) = self.pending.back() {
            assert!(back.index <= index, "read indexes never go back");
        }
        for (request_id, asked_at_tick) in reads {
            self.pending.push_back(PendingRead {
                request_id: *request_id,
                index,
                context: self.last_context,
                asked_at_tick: *asked_at_tick,
                acks: BTreeSet::from([leader]),
            });
        }
        self.last_context
    }

    /// A heartbeat answer for `context` from `from` also confirms every
    /// earlier round.
    pub(crate) fn ack(&mut self, from: NodeId, context: u64) {
        for read in self
            .pending
            .iter_mut()
            .take_while(|read| read.context <= context)
        {
            read.acks.insert(from);
        }
    }

    /// Reads whose round a majority of `membership`'s voters confirmed, as
    /// (request id, index), in order.
    pub(crate) fn take_confirmed(&mut self, membership: &Membership) -> Vec<(u64, Index)> {
        let mut out = Vec::new();
        // Earlier reads have at least the acks of later ones.
        while self
            .pending
            .front()
            .is_some_and(|read| membership.has_quorum(&read.acks))
        {
            let read = self.pending.pop_front().expect("front exists");
            out.push((read.request_id, read.index));
        }
        out
    }

    /// Remove the reads asked before `tick`; returns their request ids.
    pub(crate) fn take_asked_before(&mut self, tick: u64) -> Vec<u64> {
        let mut expired = Vec::new();
        self.pending.retain(|read| {
            let keep = read.asked_at_tick >= tick;
            if !keep {
                expired.push(read.request_id);
            }
            keep
        });
        expired
    }

    /// Drop every pending read (leadership lost); returns their request ids.
    pub(crate) fn take_all(&mut self) -> Vec<u64> {
        self.pending.drain(..).map(|read| read.request_id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(count: u64) -> Membership {
        Membership::of_voters(1..=count)
    }

    #[test]
    fn confirmed_by_majority_in_order() {
        let mut reads = ReadOnly::default();
        let first = reads.add(&[(10, 0), (11, 0)], 5, 1);
        let second = reads.add(&[(12, 0)], 7, 1);
        assert!(second > first);
        assert!(reads.take_confirmed(&voters(3)).is_empty());
        reads.ack(2, first);
        assert_eq!(reads.take_confirmed(&voters(3)), vec![(10, 5), (11, 5)]);
        assert_eq!(reads.len(), 1);
        reads.ack(3, second);
        assert_eq!(reads.take_confirmed(&voters(3)), vec![(12, 7)]);
    }

    #[test]
    fn later_ack_confirms_earlier_rounds() {
        let mut reads = ReadOnly::default();
        reads.add(&[(1, 0)], 3, 1);
        let second = reads.add(&[(2, 0)], 3, 1);
        reads.ack(2, second);
        assert_eq!(reads.take_confirmed(&voters(3)), vec![(1, 3), (2, 3)]);
    }

    #[test]
    fn duplicate_acks_count_once() {
        let mut reads = ReadOnly::default();
        let context = reads.add(&[(1, 0)], 3, 1);
        reads.ack(2, context);
        reads.ack(2, context);
        assert!(reads.take_confirmed(&voters(5)).is_empty());
        assert_eq!(reads.take_all(), vec![1]);
    }

    #[test]
    fn old_reads_expire_and_the_newest_round_is_resent() {
        let mut reads = ReadOnly::default();
        assert_eq!(reads.newest_context(), None);
        reads.add(&[(1, 3)], 3, 1);
        let second = reads.add(&[(2, 9)], 3, 1);
        assert_eq!(reads.newest_context(), Some(second));
        assert_eq!(reads.take_asked_before(5), vec![1]);
        assert_eq!(reads.len(), 1);
        assert_eq!(reads.last_context(), second);
    }
}
