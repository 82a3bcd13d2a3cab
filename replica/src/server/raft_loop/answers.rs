//! Answers: who waits for a proposal's outcome, and what each is told.

use crate::api::Members;
use crate::consumers::Applied;
use crate::engine::{AppendError, MembershipError};
use crate::entry::{Index, Term};
use crate::executor::Outcome;

use super::proposals::COMMIT_TIMEOUT;
use super::{MembersReply, OffsetReply, ProposeReply};

/// Who waits for a proposal's outcome.
pub enum Waiter {
    /// A client's append batch.
    Append(ProposeReply),
    /// An offset commit: answered once committed *and* applied.
    Offset(OffsetReply),
    /// A configuration change, with the configuration it makes.
    Members(MembersReply, Members),
}

impl Waiter {
    /// Answers with what became of the proposal; `verdicts` are those of
    /// the offset commits applied at this commit, by index.
    pub(super) fn answer(self, outcome: Outcome, verdicts: &[(Index, Applied)]) {
        match self {
            Waiter::Append(reply) => reply(proposal_answer(outcome)),
            Waiter::Offset(reply) => reply(offset_answer(outcome, verdicts)),
            Waiter::Members(reply, members) => {
                let answer = proposal_answer(outcome)
                    .map(|_| members)
                    .map_err(MembershipError::Append);
                let _ = reply.send(answer);
            }
        }
    }

    /// Answers with an error (the loop stops).
    pub(super) fn fail(self, err: AppendError) {
        match self {
            Waiter::Append(reply) => reply(Err(err)),
            Waiter::Offset(reply) => reply(Err(err)),
            Waiter::Members(reply, _) => {
                let _ = reply.send(Err(MembershipError::Append(err)));
            }
        }
    }
}

/// What an offset commit's client is told: the verdict of applying it once
/// committed, else what an append would be told.
fn offset_answer(outcome: Outcome, verdicts: &[(Index, Applied)]) -> Result<Applied, AppendError> {
    match outcome {
        Outcome::Committed { first_index, .. } => {
            match verdicts.binary_search_by_key(&first_index, |(index, _)| *index) {
                Ok(position) => Ok(verdicts[position].1.clone()),
                // Applied with the commit that answers it, so this is only
                // reached if the entry did not decode (never one we encoded).
                Err(_) => Err(AppendError::Unknown {
                    reason: format!(
                        "the offset commit at index {first_index} committed but was not applied"
                    ),
                }),
            }
        }
        // Not committed (or not known to be): told as an append is. Only
        // `Committed` answers `Ok`, so the `Ok` arm is never taken.
        other => match proposal_answer(other) {
            Err(err) => Err(err),
            Ok((index, _)) => Err(AppendError::Unknown {
                reason: format!("the offset commit at index {index} has no verdict"),
            }),
        },
    }
}

/// What a proposal's client is told about its batch.
fn proposal_answer(outcome: Outcome) -> Result<(Index, Term), AppendError> {
    match outcome {
        Outcome::Committed {
            first_index, term, ..
        } => Ok((first_index, term)),
        // Not "not appended": the client must not retry the committed part.
        Outcome::PartlyCommitted {
            first_index,
            term,
            committed,
            requested,
        } => Err(AppendError::Unknown {
            reason: format!(
                "partly appended: the first {committed} of {requested} entries committed at \
                 {first_index}..={} in term {term}; the other {} were not appended \
                 (leadership changed): retry only those",
                first_index + committed - 1,
                requested - committed
            ),
        }),
        Outcome::NotAppended => Err(AppendError::Unavailable {
            reason: "leadership changed before the entry committed; it was not appended".into(),
        }),
        Outcome::TimedOut => Err(AppendError::Unknown {
            reason: format!(
                "not committed within {} s; it may still commit",
                COMMIT_TIMEOUT.as_secs()
            ),
        }),
        Outcome::LogDropped => Err(AppendError::Unknown {
            reason: "this member dropped its log for the leader's log start before the entry \
                     was decided; it may have committed"
                .into(),
        }),
    }
}
