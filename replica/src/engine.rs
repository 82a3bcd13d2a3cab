//! What a running replica offers its front ends (the HTTP API and the binary
//! client protocol): one trait, so each front end is tested against a fake
//! and the server is the only real implementation.

use std::future::Future;

use bytes::Bytes;

use crate::api::{
    Appended, ConsumerGroup, ConsumerGroups, Members, OffsetCommitted, Status, Transferred,
};
use crate::consumers::Refusal;
use crate::entry::Entry;

/// Why an append was not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// This member is a follower; the client should retry on the leader.
    #[error("not the leader; the leader is {leader_id}")]
    NotLeader {
        /// The leader's member id.
        leader_id: String,
        /// The leader's HTTP address (`host:port`), if known.
        leader_http: Option<String>,
        /// The leader's binary protocol address (`host:port`), if known.
        leader_tcp: Option<String>,
    },
    /// No leader is known (an election is running, or there is no quorum).
    #[error("no leader: {reason}")]
    NoLeader {
        /// What this member knows.
        reason: String,
    },
    /// Leadership is being handed over; retry shortly.
    #[error("leadership transfer in progress; retry shortly")]
    Transferring,
    /// The entry is bigger than the configured maximum.
    #[error("entry of {size_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    TooLarge {
        /// The entry's size.
        size_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// Too many appends are waiting; nothing was appended, retry shortly.
    #[error("overloaded: {reason}; retry shortly")]
    Overloaded {
        /// What limit was hit.
        reason: String,
    },
    /// This member's disk is full: nothing was appended. Reads go on; writes
    /// resume by themselves once space is freed.
    #[error("disk full: {reason}")]
    DiskFull {
        /// What is full.
        reason: String,
    },
    /// The entry was accepted but leadership was lost before it committed:
    /// it may or may not be in the log. Read it back before retrying if
    /// duplicates matter.
    #[error("outcome unknown: {reason}")]
    Unknown {
        /// What happened.
        reason: String,
    },
    /// The replica cannot take writes (stopping, storage failed).
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl AppendError {
    /// A short machine-readable code, used in HTTP bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AppendError::NotLeader { .. } => "not_leader",
            AppendError::NoLeader { .. } => "no_leader",
            AppendError::Transferring => "transferring",
            AppendError::TooLarge { .. } => "too_large",
            AppendError::Overloaded { .. } => "overloaded",
            AppendError::DiskFull { .. } => "disk_full",
            AppendError::Unknown { .. } => "outcome_unknown",
            AppendError::Unavailable { .. } => "unavailable",
        }
    }
}

/// Why a committed entry cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The index is past what this member knows to be committed.
    #[error("index {index} is not committed (commit index {commit_index})")]
    NotCommitted {
        /// The index asked for.
        index: u64,
        /// This member's commit index.
        commit_index: u64,
    },
    /// The entry was deleted by retention.
    #[error("index {index} was deleted by retention (first index {first_index})")]
    Compacted {
        /// The index asked for.
        index: u64,
        /// The first index still kept.
        first_index: u64,
    },
    /// The request itself is wrong (index zero, ...).
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong.
        reason: String,
    },
    /// The store failed to read (damage, I/O error).
    #[error("storage error: {reason}")]
    Storage {
        /// The store's error.
        reason: String,
    },
}

/// Why a leadership transfer failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader can hand over leadership.
    #[error("not the leader (leader: {leader_id:?})")]
    NotLeader {
        /// The leader, if known.
        leader_id: Option<String>,
    },
    /// The target is not a member, or is this member.
    #[error("bad target: {reason}")]
    BadTarget {
        /// Why.
        reason: String,
    },
    /// No new leader took office in time; the old leader carries on.
    #[error("transfer failed: {reason}")]
    Failed {
        /// What happened.
        reason: String,
    },
}

/// Why a configuration change was not made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Only the leader changes the configuration; retry there.
    #[error("not the leader (leader: {})", leader_id.as_deref().unwrap_or("unknown"))]
    NotLeader {
        /// The leader, if known.
        leader_id: Option<String>,
        /// Its HTTP address, if known.
        leader_http: Option<String>,
    },
    /// The request names no such member.
    #[error("{reason}")]
    UnknownMember {
        /// Which.
        reason: String,
    },
    /// The request is malformed (a bad name or address).
    #[error("{reason}")]
    BadRequest {
        /// Why.
        reason: String,
    },
    /// Not now or not this: another change is in progress, the learner is
    /// not caught up, the member is already a voter, ... Nothing changed.
    #[error("{reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// Not proposed (busy, stopping, leadership moving), or proposed and
    /// its fate unknown; read `GET /admin/members` before retrying.
    #[error("{0}")]
    Append(AppendError),
}

/// A change to the configuration, by member name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a learner.
    Add(crate::api::AddMember),
    /// Promote a learner to voter.
    Promote(String),
    /// Remove a member (a leader removing itself hands over first).
    Remove(String),
}

/// Why an offset commit was not stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    /// The request is wrong (a bad group name); nothing was proposed.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong.
        reason: String,
    },
    /// Refused, at once or when the commit was applied: the condition did
    /// not hold, or the offset is out of range. Nothing changed.
    #[error(transparent)]
    Refused(Refusal),
    /// Not proposed, or its fate is unknown, exactly as for an append (not
    /// the leader, busy, outcome unknown, ...).
    #[error(transparent)]
    Write(AppendError),
}

/// Committed entries read from one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedRange {
    /// In index order, without gaps; possibly empty.
    pub entries: Vec<Entry>,
    /// The member's commit index when the read was made.
    pub commit_index: u64,
}

/// A running replica, as its front ends see it.
pub trait Engine: Send + Sync + 'static {
    /// The `/status` document.
    fn status(&self) -> Status;

    /// `Ok` when a leader is known and this member is caught up within the
    /// readiness bound; otherwise the reason.
    fn readiness(&self) -> Result<(), String>;

    /// The `/metrics` exposition.
    fn metrics(&self) -> String;

    /// The largest entry payload accepted, in bytes.
    fn max_entry_bytes(&self) -> usize;

    /// Appends one entry; resolves once it is committed (on a majority's disk).
    fn append(&self, payload: Bytes) -> impl Future<Output = Result<Appended, AppendError>> + Send;

    /// A committed entry. The disk is read off the caller's thread (the
    /// network thread must stay free for peer messages).
    fn entry(&self, index: u64) -> impl Future<Output = Result<Entry, ReadError>> + Send;

    /// A linearizable read point (ReadIndex, on the leader only): resolves
    /// with an index that covers every append acknowledged before the call,
    /// once this member can serve reads up to it. A follower answers
    /// [`AppendError::NotLeader`].
    fn read_index(&self) -> impl Future<Output = Result<u64, AppendError>> + Send;

    /// Committed entries from `from`, up to `max_bytes` of payload (at least
    /// one entry when any is available), waiting up to `wait_ms` for the
    /// first one to commit.
    fn range(
        &self,
        from: u64,
        max_bytes: usize,
        wait_ms: u64,
    ) -> impl Future<Output = Result<CommittedRange, ReadError>> + Send;

    /// Every consumer group and its offset as this member applied them
    /// (possibly behind the leader; call [`read_index`](Self::read_index)
    /// first for a linearizable answer).
    fn consumer_groups(&self) -> ConsumerGroups;

    /// One group, as [`consumer_groups`](Self::consumer_groups); `None`
    /// when it has no offset.
    fn consumer_group(&self, group: &str) -> Option<ConsumerGroup>;

    /// Commits `group`'s offset through the log (leader only), only if its
    /// stored offset is `expected` when given (`Some(0)`: only if it has
    /// none); resolves once the commit is committed and applied, with the
    /// verdict.
    fn commit_offset(
        &self,
        group: String,
        offset: u64,
        expected: Option<u64>,
    ) -> impl Future<Output = Result<OffsetCommitted, OffsetError>> + Send;

    /// Hands leadership to `to` (or the most caught-up follower); resolves
    /// once a new leader is elected.
    fn transfer_leadership(
        &self,
        to: Option<String>,
    ) -> impl Future<Output = Result<Transferred, TransferError>> + Send;

    /// The configuration in force on this member.
    fn members(&self) -> Members;

    /// Changes the configuration by one member (leader only); resolves with
    /// the new configuration once the change is committed.
    fn change_members(
        &self,
        change: MemberChange,
    ) -> impl Future<Output = Result<Members, MembershipError>> + Send;
}
