//! The messages members of a group exchange. The network layer encodes them
//! (they derive `serde`); the core only creates and consumes them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Index, NodeId, Term};

/// One message from one member to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term (for a granted pre-vote: the term the candidate would
    /// campaign at).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// Why a vote or pre-vote was refused (DLedger reports reasons too; they make
/// a stuck election readable in a trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoteRejection {
    /// The candidate's term is older than the voter's.
    StaleTerm,
    /// The voter already voted for another candidate in this term.
    AlreadyVoted,
    /// The voter already follows a leader in this term.
    HasLeader,
    /// The candidate's log is behind the voter's (last term, then last index).
    LogNotUpToDate,
    /// The voter heard from a live leader within the election timeout
    /// (leader stickiness).
    LeaderAlive,
    /// The voter knows a committed configuration left it out. No longer
    /// sent (a member votes whatever its own configuration says: a later
    /// one it has not received may have added it back and need its vote);
    /// kept so that answers from members of earlier versions decode.
    NotAMember,
}

/// The answer to an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index`, durably.
    Success {
        /// The highest index known to match the leader's log.
        match_index: Index,
    },
    /// The entry before the appended ones did not match.
    Reject {
        /// The `prev_log_index` of the rejected append.
        rejected_index: Index,
        /// Fast back-off: the highest index at or below `rejected_index` whose
        /// term is at most the append's `prev_log_term` (or the follower's
        /// last index when its log is shorter).
        hint_index: Index,
        /// The follower's term at `hint_index` (0 when unknown).
        hint_term: Term,
    },
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Would you vote for me at `term`? Changes no state on the receiver.
    PreVoteRequest {
        /// The candidate's last log index.
        last_log_index: Index,
        /// The term of the candidate's last entry.
        last_log_term: Term,
    },
    /// The answer to a pre-vote request.
    PreVoteResponse {
        /// `None` when granted.
        reject: Option<VoteRejection>,
    },
    /// Vote for me at `term`.
    VoteRequest {
        /// The candidate's last log index.
        last_log_index: Index,
        /// The term of the candidate's last entry.
        last_log_term: Term,
        /// Set when the election was started by TimeoutNow: voters then ignore
        /// leader stickiness.
        leadership_transfer: bool,
    },
    /// The answer to a vote request (sent only once the vote is durable).
    VoteResponse {
        /// `None` when granted.
        reject: Option<VoteRejection>,
    },
    /// Append `entries` after `prev_log_index`.
    Append {
        /// The index of the entry just before `entries`.
        prev_log_index: Index,
        /// Its term.
        prev_log_term: Term,
        /// The entries, in index order; may be empty (a commit update or probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: Index,
    },
    /// The answer to an append.
    AppendResponse {
        /// Success or a rejection with a back-off hint.
        result: AppendResult,
    },
    /// Leader liveness, commit propagation and ReadIndex confirmation.
    Heartbeat {
        /// `min(leader commit, follower's match index)`.
        leader_commit: Index,
        /// The ReadIndex round this heartbeat confirms, if any.
        read_context: Option<u64>,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// Echo of the heartbeat's `read_context`.
        read_context: Option<u64>,
        /// The follower's commit index, so the leader can tell a follower that
        /// lags only in commit.
        commit_index: Index,
    },
    /// Start an election now, skipping pre-vote (leadership transfer).
    TimeoutNow,
    /// The follower needs entries this leader's retention deleted: drop
    /// the whole log and continue after (`prev_log_index`,
    /// `prev_log_term`), the entry before the leader's first one, as
    /// Kafka's followers take up the leader's log start offset. Answered by
    /// an `AppendResponse` once the new start is durable. New in this
    /// build: a follower of an older build refuses it and stays behind.
    InstallLogStart {
        /// The last index the follower's log will have (it keeps none).
        prev_log_index: Index,
        /// Its term.
        prev_log_term: Term,
        /// The configuration in force at `prev_log_index` (a
        /// `membership::Configuration` payload).
        configuration: Bytes,
        /// The state kept beside the log, applied up to at least
        /// `prev_log_index` (the consumer checkpoint); opaque to the core.
        state: Bytes,
        /// The leader's commit index.
        leader_commit: Index,
    },
    /// The leader's retention floor: entries from `keep_from` on may still
    /// be needed by a member it replicates to (the lowest match index, plus
    /// one). A follower deletes only below it, so that whichever member
    /// leads next can still send them. Sent with heartbeats when it moved,
    /// and at least once per election timeout.
    RetentionFloor {
        /// The first index a follower must keep.
        keep_from: Index,
    },
}

impl MessageBody {
    /// The protocol version a peer must speak to be sent this (a peer of
    /// an older build could not decode it): 2 for the kinds added after
    /// version 1.
    pub fn wire_version(&self) -> u8 {
        match self {
            MessageBody::InstallLogStart { .. } | MessageBody::RetentionFloor { .. } => 2,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_compare_by_value() {
        let a = Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::Append {
                prev_log_index: 4,
                prev_log_term: 3,
                entries: vec![Entry::normal(5, 3, &b"x"[..])],
                leader_commit: 4,
            },
        };
        let mut b = a.clone();
        assert_eq!(a, b);
        b.term = 4;
        assert_ne!(a, b);
    }
}
