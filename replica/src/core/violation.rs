//! Peer messages that break the protocol's rules. The core drops them and
//! reports each in `Ready::violations`; the caller logs it with the peer's
//! name and counts it, and the member goes on running.

use crate::entry::NodeId;

/// Which rule a dropped message broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// A leader claim (append or heartbeat) in a term that already has
    /// another leader, or that this member leads.
    SecondLeader,
    /// An append acknowledgement past the leader's last index, or a
    /// rejection of an append the leader cannot have sent.
    AckPastLastIndex,
    /// Append entries that do not follow `prev_log_index` one by one.
    NonContiguousEntries,
    /// Append entries whose terms go back, start below `prev_log_term`, or
    /// are newer than the message's term.
    BadEntryTerm,
    /// A leader replacing entries it already confirmed in its own term.
    LeaderContradiction,
    /// A heartbeat answer confirming a read round that was never started.
    UnknownReadContext,
    /// An append carrying a configuration entry that does not decode.
    MalformedConfiguration,
}

impl ViolationKind {
    /// Every kind, for metrics that list each reason.
    pub const ALL: [ViolationKind; 7] = [
        ViolationKind::SecondLeader,
        ViolationKind::AckPastLastIndex,
        ViolationKind::NonContiguousEntries,
        ViolationKind::BadEntryTerm,
        ViolationKind::LeaderContradiction,
        ViolationKind::UnknownReadContext,
        ViolationKind::MalformedConfiguration,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::SecondLeader => "second_leader",
            ViolationKind::AckPastLastIndex => "ack_past_last_index",
            ViolationKind::NonContiguousEntries => "non_contiguous_entries",
            ViolationKind::BadEntryTerm => "bad_entry_term",
            ViolationKind::LeaderContradiction => "leader_contradiction",
            ViolationKind::UnknownReadContext => "unknown_read_context",
            ViolationKind::MalformedConfiguration => "malformed_configuration",
        }
    }

    /// Position in [`ViolationKind::ALL`].
    pub fn position(self) -> usize {
        self as usize
    }
}

/// One dropped message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The peer that sent it.
    pub from: NodeId,
    /// The rule it broke.
    pub kind: ViolationKind,
    /// What exactly, for the log.
    pub detail: String,
}
