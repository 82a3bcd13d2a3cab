//! Proposals: putting clients' entries and offset commits into the log,
//! and tracking each batch until it commits, fails or times out.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::consumers::{Applied, OffsetCommit};
use crate::core;
use crate::engine::AppendError;
use crate::entry::{EntryKind, Index, Term};
use crate::server::members::not_leader_error;

use super::answers::Waiter;
use super::{OffsetReply, ProposeReply, RaftLoop};

/// How long an append waits for its commit before the client is told the
/// outcome is unknown.
pub(super) const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

impl RaftLoop {
    pub(super) fn propose(&mut self, payloads: Vec<Bytes>, reply: ProposeReply) {
        let requested = payloads.len() as u64;
        let mut first: Option<(Index, Term)> = None;
        let mut last_index = 0;
        for payload in payloads {
            match self.node.propose(payload) {
                Ok((index, term)) => {
                    first.get_or_insert((index, term));
                    last_index = index;
                }
                Err(err) if first.is_none() => {
                    reply(Err(self.propose_error(err)));
                    return;
                }
                // The entries already proposed stay in the log: the batch
                // is tracked with them and answered by what becomes of
                // them (the rest was not appended).
                Err(_) => break,
            }
        }
        let Some((first_index, term)) = first else {
            reply(Err(AppendError::Unavailable {
                reason: "empty append".into(),
            }));
            return;
        };
        self.track_proposal(
            first_index,
            last_index,
            requested,
            term,
            Waiter::Append(reply),
        );
    }

    /// Waits for the fate of entries `first_index..=last_index` of a batch
    /// of `requested`, proposed just now at `term`.
    pub(super) fn track_proposal(
        &mut self,
        first_index: Index,
        last_index: Index,
        requested: u64,
        term: Term,
        waiter: Waiter,
    ) {
        let deadline_ms = self.now_ms() + COMMIT_TIMEOUT.as_millis() as u64;
        if let Err(waiter) = self.books.proposals.push(
            first_index,
            last_index,
            requested,
            term,
            deadline_ms,
            waiter,
        ) {
            waiter.fail(AppendError::Unknown {
                reason: format!("entries {first_index}..={last_index} were proposed out of order"),
            });
        }
    }

    /// Proposes one offset commit, through the same gates as an append
    /// (disk, write queue, uncommitted bytes, leadership, transfer), after
    /// checking it against the state applied so far: an offset out of
    /// range, or a condition that already fails, is refused at once. The
    /// verdict that counts is the one given when it applies.
    pub(super) fn propose_offset(&mut self, commit: OffsetCommit, reply: OffsetReply) {
        let check = self
            .consumers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(&commit, self.node.first_index(), self.node.commit_index());
        if let Err(refusal) = check {
            reply(Ok(Applied::Refused(refusal)));
            return;
        }
        let payload = commit.encode();
        let payload_bytes = match self.admit_proposal(std::slice::from_ref(&payload)) {
            Ok(payload_bytes) => payload_bytes,
            Err(refused) => {
                reply(Err(refused));
                return;
            }
        };
        let reply = self.count_uncommitted(payload_bytes, reply);
        match self.node.propose_entry(EntryKind::ConsumerOffset, payload) {
            Ok((index, term)) => self.track_proposal(index, index, 1, term, Waiter::Offset(reply)),
            Err(err) => reply(Err(self.propose_error(err))),
        }
    }

    /// Milliseconds since the loop started: the proposals' clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn propose_error(&self, err: core::ProposeError) -> AppendError {
        match err {
            core::ProposeError::NotLeader { leader } => {
                not_leader_error(&self.directory.members(), leader, self.node.term())
            }
            core::ProposeError::Transferring => AppendError::Transferring,
            core::ProposeError::TooManyPending => AppendError::Overloaded {
                reason: "too many appends wait for commit".into(),
            },
            err @ (core::ProposeError::NotAClientKind(_) | core::ProposeError::Membership(_)) => {
                AppendError::Unavailable {
                    reason: err.to_string(),
                }
            }
            core::ProposeError::Core(err) => AppendError::Unavailable {
                reason: err.to_string(),
            },
        }
    }

    pub(super) fn expire_proposals(&mut self, _now: Instant) {
        let now_ms = self.now_ms();
        for (waiter, outcome) in self.books.proposals.expire(now_ms) {
            waiter.answer(outcome, &[]);
        }
    }
}
