//! The types the log store and the consensus core share: a log entry, its
//! kind, and the hard state (term and vote) that must survive a crash.
//!
//! They live apart from both so that `store` knows nothing of Raft roles and
//! `core` nothing of files.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A member of a replica group. The server derives it from the member's name
/// (see `server`), the way etcd derives member ids, so it stays stable across
/// restarts and reorderings of the member list. Zero is never a valid id.
pub type NodeId = u64;

/// A Raft term. Zero means "before any election".
pub type Term = u64;

/// A log position. The first entry of a log has index 1; zero means "none".
pub type Index = u64;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum EntryKind {
    /// A client's payload.
    Normal = 0,
    /// Appended by a new leader to commit the entries of earlier terms.
    NoOp = 1,
    /// A membership configuration.
    Configuration = 2,
    /// A consumer group's offset commit (see `consumers`): metadata the
    /// members apply in log order, not a client's payload.
    ConsumerOffset = 3,
}

impl EntryKind {
    /// The kind stored under `code`, if any.
    pub fn from_code(code: u8) -> Option<EntryKind> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::NoOp),
            2 => Some(EntryKind::Configuration),
            3 => Some(EntryKind::ConsumerOffset),
            _ => None,
        }
    }

    /// The name the HTTP API uses.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Normal => "normal",
            EntryKind::NoOp => "noop",
            EntryKind::Configuration => "configuration",
            EntryKind::ConsumerOffset => "consumer_offset",
        }
    }

    /// The code this kind is stored under.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, starting at 1.
    pub index: Index,
    /// Term of the leader that created the entry.
    pub term: Term,
    /// What the payload means.
    pub kind: EntryKind,
    /// The bytes a client appended (empty for a no-op).
    pub payload: Bytes,
}

impl Entry {
    /// A normal entry carrying `payload`.
    pub fn normal(index: Index, term: Term, payload: impl Into<Bytes>) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            payload: payload.into(),
        }
    }
}

/// What a member must persist (fsync) before any reply that depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this member has seen.
    pub term: Term,
    /// Whom this member voted for in `term`, if anyone.
    pub vote: Option<NodeId>,
}
