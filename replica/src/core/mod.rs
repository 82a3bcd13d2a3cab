//! The consensus core: Raft as a deterministic state machine, without I/O.
//!
//! Inputs are ticks ([`Node::tick`]), peer messages ([`Node::step`]), client
//! proposals ([`Node::propose`]), reads ([`Node::read_index`]), transfer
//! requests ([`Node::transfer_leadership`]) and storage completions
//! ([`Node::on_persisted`]). Outputs come out of [`Node::ready`] as a
//! [`Ready`]: what to persist, what to send, what became committed and what
//! to answer (its documentation gives the order to handle it in). There is no
//! clock, socket, thread or global randomness: the same inputs and seed give
//! the same outputs, which is what the simulation in `tests/simulation.rs`
//! relies on.
//!
//! Modelled on etcd-io/raft and tikv/raft-rs (the RawNode/Ready loop), with
//! pre-vote, check-quorum and leader stickiness always on, a no-op at the
//! start of every term, pipelined replication with a bounded window per
//! follower, fast back-off, leadership transfer with TimeoutNow, a preferred
//! leader, and ReadIndex reads.
//!
//! # The caller's loop
//!
//! ```text
//! let mut node = Node::new(config, store_reader, saved_hard_state, seed)?;
//! loop {
//!     // every config.tick_ms:     node.tick()?
//!     // a peer message arrived:   node.step(message)?
//!     // a client write:           node.propose(payload) -> (index, term), keep it
//!     // a linearizable read:      node.read_index(request_id)?
//!     // admin / SIGTERM:          node.transfer_leadership(None)
//!     while node.has_ready() {
//!         let ready = node.ready()?;
//!         send(ready.messages);                       // at once
//!         store.truncate_and_append(&ready.entries);  // truncate if entries[0].index <= last
//!         store.save(ready.hard_state);
//!         store.fsync();                              // group commit: one per Ready (or batch)
//!         send(ready.persisted_messages);             // only now
//!         if let Some(last) = ready.entries.last() { node.on_persisted(last.index, last.term)?; }
//!         // ready.commit_index: ack proposals whose entry_term(index) is still their term
//!         // ready.read_states: serve each read once entries up to its index are applied
//!         // ready.violations: log and count the peer messages the core dropped
//!     }
//! }
//! ```
//!
//! A failed read of the durable log ([`LogReadError`]) is fatal: the call
//! returns [`CoreError::Storage`] and every later call [`CoreError::Failed`];
//! the caller must stop the member.

mod config;
mod election;
pub mod log;
pub mod message;
mod node;
pub mod progress;
pub mod quorum;
mod read_only;
mod ready;
mod reconfig;
mod replication;
pub mod rng;
#[cfg(test)]
mod tests;
mod violation;

pub use config::{Config, ConfigError};
pub use log::{LogRead, LogReadError};
pub use message::{AppendResult, Message, MessageBody, VoteRejection};
pub use node::{Node, PeerStatus};
pub use progress::ProgressState;
pub use ready::{
    LogStart, ReadError, ReadState, Ready, Role, SoftState, TransferAbort, TransferOutcome,
};
pub use reconfig::ChangeRefusal;
pub use violation::{Violation, ViolationKind};

use crate::entry::{EntryKind, NodeId};

/// A fatal failure of the core.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// Reading the durable log failed.
    #[error(transparent)]
    Storage(#[from] LogReadError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An earlier call failed; the node must be dropped.
    #[error("the node failed earlier and must be restarted")]
    Failed,
}

/// Why a proposal was refused. Nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, when known: redirect there.
        leader: Option<NodeId>,
    },
    /// Leadership is being handed over; retry shortly (at the new leader).
    #[error("leadership transfer in progress; retry")]
    Transferring,
    /// Too many proposals wait for commit; retry later.
    #[error("too many pending proposals")]
    TooManyPending,
    /// A configuration change was refused.
    #[error("configuration change refused: {0}")]
    Membership(ChangeRefusal),
    /// Entries of this kind are appended by the core alone.
    #[error("entries of kind {} are not proposed by clients", .0.name())]
    NotAClientKind(EntryKind),
    /// The node failed.
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// Why a leadership transfer could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader can hand leadership over.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, when known.
        leader: Option<NodeId>,
    },
    /// The target is not a voter.
    #[error("{0} is not a voting member")]
    UnknownMember(NodeId),
    /// The target already leads.
    #[error("{0} is already the leader")]
    AlreadyLeader(NodeId),
    /// There is no other member to hand over to.
    #[error("no other member to hand leadership to")]
    NoOtherMember,
    /// The node failed.
    #[error(transparent)]
    Core(#[from] CoreError),
}
