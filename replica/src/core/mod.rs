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
mod replication;
pub mod rng;
#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError};
pub use log::{LogRead, LogReadError};
pub use message::{AppendResult, Message, MessageBody, VoteRejection};
pub use node::{Node, PeerStatus};
pub use progress::ProgressState;
pub use ready::{ReadError, ReadState, Ready, Role, SoftState, TransferAbort, TransferOutcome};

use crate::entry::NodeId;

/// A fatal failure of the core.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// Reading the durable log failed.
    #[error(transparent)]
    Storage(#[from] LogReadError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The saved vote names a node that is not a member.
    #[error("the saved vote names {0}, which is not a member")]
    VoteNotAMember(NodeId),
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
    /// The target is not a member.
    #[error("{0} is not a member")]
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
