//! What the leader knows about one follower's log: how far it matches, what
//! to send next, and how many appends are in flight.

use std::collections::VecDeque;

use crate::entry::Index;

/// How the leader sends appends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The match point is unknown: one append at a time, waiting for the answer.
    Probe,
    /// The follower matches: appends are pipelined up to the in-flight window.
    Replicate,
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log and be durable on the
    /// follower. Invariant: `match_index < next_index`.
    pub match_index: Index,
    /// The next index to send.
    pub next_index: Index,
    /// Probe or replicate.
    pub state: ProgressState,
    /// Set when any message came from the follower since the last check-quorum.
    pub recent_active: bool,
    /// Ticks since the last message from the follower (for `/status`).
    pub last_contact_ticks: u64,
    /// Set when the entries the follower needs are no longer in the log
    /// (removed by retention): it gets the log start instead, until it
    /// answers that it took it.
    pub needs_compacted_entries: bool,
    /// When (in the node's ticks) the log start was last sent to it; sent
    /// again only after an election timeout without an answer, as the
    /// state it carries can be megabytes.
    pub install_sent_at_ticks: Option<u64>,
    /// The highest commit index the follower can have learnt from what was
    /// sent to it: the commit an append or heartbeat carried, capped at
    /// what that message lets it commit. Below the leader's commit index,
    /// the follower is owed the commit: the next append or heartbeat
    /// carries it, or the leader's next tick sends it alone.
    pub commit_sent: Index,
    /// In `Probe`: an append is out and no answer came yet.
    probe_sent: bool,
    /// In `Replicate`: the follower log end a gap rejection last made the
    /// leader resend after (see `maybe_decrease_to`); rejections that show
    /// no longer log end are stale. Forgotten at each heartbeat answer, so
    /// a resend that was lost is made again.
    resent_after: Option<Index>,
    /// In `Replicate`: last index and payload bytes of each append in
    /// flight, oldest first. Invariant: `inflight.len() <= max_inflight`,
    /// indices increasing, `inflight_bytes` is the sum of the bytes.
    inflight: VecDeque<(Index, u64)>,
    max_inflight: usize,
    /// Payload bytes in flight; the window is also full once this reaches
    /// `max_inflight_bytes` (so large entries cannot flood a follower's disk
    /// queue with `max_inflight` appends of many megabytes each).
    inflight_bytes: u64,
    max_inflight_bytes: u64,
}

impl Progress {
    /// A follower about which nothing is known yet; sending starts at
    /// `next_index` in probe mode.
    pub fn new(next_index: Index, max_inflight: usize) -> Progress {
        assert!(next_index >= 1, "next index starts at 1");
        assert!(
            max_inflight >= 1,
            "the in-flight window holds at least one append"
        );
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            recent_active: false,
            last_contact_ticks: 0,
            needs_compacted_entries: false,
            install_sent_at_ticks: None,
            commit_sent: 0,
            probe_sent: false,
            resent_after: None,
            inflight: VecDeque::with_capacity(max_inflight),
            max_inflight,
            inflight_bytes: 0,
            max_inflight_bytes: u64::MAX,
        }
    }

    /// The same, with the window also bounded to `max_inflight_bytes` of
    /// payload (one append is always allowed, however large).
    pub fn with_max_inflight_bytes(mut self, max_inflight_bytes: u64) -> Progress {
        assert!(
            max_inflight_bytes >= 1,
            "the byte window holds at least one byte"
        );
        self.max_inflight_bytes = max_inflight_bytes;
        self
    }

    /// Whether no append may be sent now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => {
                self.inflight.len() >= self.max_inflight
                    || self.inflight_bytes >= self.max_inflight_bytes
            }
        }
    }

    /// Payload bytes in flight (replicate mode).
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// How many appends are in flight (replicate mode).
    pub fn inflight_count(&self) -> usize {
        self.inflight.len()
    }

    /// Switch to probing from just after the match point.
    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.clear_inflight();
    }

    /// Switch to pipelining from just after the match point.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.clear_inflight();
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.resent_after = None;
    }

    fn pop_inflight(&mut self) {
        if let Some((_, bytes)) = self.inflight.pop_front() {
            self.inflight_bytes -= bytes;
        }
    }

    /// Allow one more probe (a heartbeat answer arrived), and one more
    /// resend after a gap the leader already resent after.
    pub fn resume_probe(&mut self) {
        self.probe_sent = false;
        self.resent_after = None;
    }

    /// Free the oldest in-flight slot: when the window is full and a
    /// heartbeat answer shows the follower alive, an append was probably lost.
    pub fn free_first_inflight(&mut self) {
        self.pop_inflight();
    }

    /// Record that a message let the follower commit up to `commit`.
    pub fn sent_commit(&mut self, commit: Index) {
        self.commit_sent = self.commit_sent.max(commit);
    }

    /// Record an append sent with `entry_count` entries of `payload_bytes`
    /// in all, ending at `last_index`.
    pub fn sent_append(&mut self, last_index: Index, entry_count: usize, payload_bytes: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if entry_count > 0 {
                    assert!(
                        last_index >= self.next_index,
                        "sent up to {last_index} but next is {}",
                        self.next_index
                    );
                    if let Some((back, _)) = self.inflight.back() {
                        assert!(*back < last_index, "in-flight appends grow");
                    }
                    assert!(!self.is_paused(), "sent an append past the window");
                    self.next_index = last_index + 1;
                    self.inflight.push_back((last_index, payload_bytes));
                    self.inflight_bytes += payload_bytes;
                }
            }
        }
    }

    /// A success answer says the follower matches up to `index`. Returns
    /// whether that is news.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        while self
            .inflight
            .front()
            .is_some_and(|(front, _)| *front <= index)
        {
            self.pop_inflight();
        }
        assert!(self.match_index < self.next_index);
        updated
    }

    /// A rejection of the append after `rejected`, with the follower's hint
    /// `hint_index` (already mapped through the leader's log). `gap_end`
    /// is set when the rejection only shows a gap: the follower's log
    /// matches the leader's through `gap_end` (same index and term) and
    /// ends there, before `rejected`. Returns false when the rejection is
    /// stale and must be ignored; in `Replicate`, a true return either
    /// rewound `next_index` to resend after the gap (still `Replicate`) or
    /// switched to `Probe`.
    pub fn maybe_decrease_to(
        &mut self,
        rejected: Index,
        hint_index: Index,
        gap_end: Option<Index>,
    ) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                if let Some(end) = gap_end.filter(|end| *end >= self.match_index) {
                    // The appends are pipelined and may arrive out of order
                    // (or one got lost): every append of a window past the
                    // follower's log end is rejected, each naming that end.
                    // Dropping to `Probe` on each (etcd's rule) made every
                    // ack send a new window from the match point, whose
                    // rejections dropped it again: a follower caught up
                    // one or two entries per window (the simulation, seed
                    // 10903). Nothing disagrees here; resend after the end
                    // once, and take the other rejections naming the same
                    // end (or an older one) as stale.
                    if self.resent_after.is_some_and(|done| end <= done) {
                        return false;
                    }
                    self.resent_after = Some(end);
                    self.next_index = end + 1;
                    // What was sent past the end is resent; what ends at or
                    // below it still waits for its ack.
                    while self.inflight.back().is_some_and(|(last, _)| *last > end) {
                        if let Some((_, bytes)) = self.inflight.pop_back() {
                            self.inflight_bytes -= bytes;
                        }
                    }
                    assert!(self.match_index < self.next_index);
                    return true;
                }
                self.become_probe();
                true
            }
            ProgressState::Probe => {
                if self.next_index - 1 != rejected {
                    return false;
                }
                if rejected == self.match_index && hint_index < self.match_index {
                    // The follower rejected the very entry it once acknowledged:
                    // it lost its log (a replaced disk). Start over from its hint.
                    self.match_index = 0;
                    self.next_index = hint_index + 1;
                } else {
                    self.next_index = rejected.min(hint_index + 1).max(self.match_index + 1);
                }
                self.probe_sent = false;
                assert!(self.next_index >= 1 && self.match_index < self.next_index);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut progress = Progress::new(11, 4);
        assert!(!progress.is_paused());
        progress.sent_append(12, 2, 0);
        assert!(progress.is_paused());
        progress.resume_probe();
        assert!(!progress.is_paused());
    }

    #[test]
    fn replicate_window_bounds_inflight_and_frees_on_ack() {
        let mut progress = Progress::new(1, 2);
        assert!(!progress.maybe_update(0));
        progress.become_replicate();
        progress.sent_append(3, 3, 0);
        progress.sent_append(5, 2, 0);
        assert!(progress.is_paused());
        assert_eq!(progress.next_index, 6);
        assert!(progress.maybe_update(3));
        assert_eq!(progress.inflight_count(), 1);
        assert!(!progress.is_paused());
        assert!(!progress.maybe_update(2), "an old ack is no news");
        assert!(progress.maybe_update(5));
        assert_eq!(progress.inflight_count(), 0);
    }

    #[test]
    fn replicate_window_bounds_inflight_bytes_and_frees_on_ack() {
        let mut progress = Progress::new(1, 256).with_max_inflight_bytes(8 << 20);
        progress.become_replicate();
        progress.sent_append(1, 1, 4 << 20);
        assert!(!progress.is_paused());
        progress.sent_append(2, 1, 4 << 20);
        assert!(progress.is_paused(), "8 MiB in flight fill the byte window");
        assert_eq!(progress.inflight_bytes(), 8 << 20);
        assert!(progress.maybe_update(1));
        assert_eq!(progress.inflight_bytes(), 4 << 20);
        assert!(!progress.is_paused());
        progress.free_first_inflight();
        assert_eq!(progress.inflight_bytes(), 0);
        progress.sent_append(3, 1, 64 << 20);
        assert!(
            progress.is_paused(),
            "one append larger than the window still goes"
        );
        progress.become_probe();
        assert_eq!(progress.inflight_bytes(), 0);
    }

    #[test]
    fn empty_appends_do_not_use_the_window() {
        let mut progress = Progress::new(1, 1);
        progress.become_replicate();
        progress.sent_append(0, 0, 0);
        assert!(!progress.is_paused());
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut progress = Progress::new(10, 4);
        progress.maybe_update(5);
        progress.become_replicate();
        assert!(!progress.maybe_decrease_to(4, 0, None));
        assert!(progress.maybe_decrease_to(8, 6, None));
        assert_eq!(progress.next_index, 6);
        progress.become_probe();
        progress.sent_append(6, 1, 0);
        assert!(
            !progress.maybe_decrease_to(9, 3, None),
            "not the probe in flight"
        );
    }

    #[test]
    fn probe_backs_off_to_hint_but_not_below_match() {
        let mut progress = Progress::new(100, 4);
        assert!(progress.maybe_decrease_to(99, 40, None));
        assert_eq!(progress.next_index, 41);
        progress.maybe_update(30);
        progress.become_probe();
        progress.next_index = 50;
        assert!(progress.maybe_decrease_to(49, 10, None));
        assert_eq!(progress.next_index, 31, "never below match + 1");
    }

    #[test]
    fn follower_that_lost_its_log_is_probed_from_scratch() {
        let mut progress = Progress::new(1, 4);
        progress.maybe_update(20);
        progress.become_probe();
        assert_eq!(progress.next_index, 21);
        assert!(progress.maybe_decrease_to(20, 0, None));
        assert_eq!(progress.match_index, 0);
        assert_eq!(progress.next_index, 1);
    }
}
