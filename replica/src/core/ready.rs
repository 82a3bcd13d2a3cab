//! What the core hands the caller after each batch of inputs.

use crate::entry::{Entry, HardState, Index, NodeId, Term};
use crate::membership::ConfigRecord;

use super::message::Message;
use super::violation::Violation;

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes; its term has not changed yet.
    PreCandidate,
    /// Asking for votes at a new term.
    Candidate,
    /// Leads the group.
    Leader,
}

impl Role {
    /// The name `/status` reports (`follower`, `candidate`, `leader`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate | Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// Volatile state worth reporting when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// This member's role.
    pub role: Role,
    /// The leader this member knows of in `term`.
    pub leader_id: Option<NodeId>,
    /// The current term.
    pub term: Term,
}

/// Why a read could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// This member is not the leader (or stopped being it before the read
    /// was confirmed).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, when known.
        leader: Option<NodeId>,
    },
    /// Too many reads are waiting for confirmation.
    #[error("too many pending reads")]
    TooManyPending,
    /// No majority confirmed the read within the read timeout.
    #[error("the read was not confirmed by a majority in time")]
    TimedOut,
}

/// The answer to `read_index(request_id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id for the read.
    pub request_id: u64,
    /// `Ok(index)`: serve the read once entries up to `index` are applied;
    /// it then reflects every write acknowledged before the read was asked.
    pub result: Result<Index, ReadError>,
}

/// Why a leadership transfer stopped without this member seeing its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferAbort {
    /// The target did not take over within an election timeout.
    TimedOut,
    /// A newer transfer request replaced it.
    Superseded,
    /// A configuration change made the target a non-voter.
    TargetRemoved,
}

/// How a leadership transfer ended, as seen by the old leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferOutcome {
    /// This member stopped leading while the transfer ran; the new leader
    /// shows up in a later `soft_state` (normally the target).
    SteppedDown {
        /// The member it was handing over to.
        target: NodeId,
    },
    /// The transfer was given up; this member still leads.
    Abandoned {
        /// The member it was handing over to.
        target: NodeId,
        /// Why.
        reason: TransferAbort,
    },
}

/// A follower's new log start (the leader no longer has the entries it
/// needed): the caller drops every entry of its log and continues after
/// `prev_log_index`, and takes `state` as what its state beside the log
/// (the consumer offsets) is from then on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStart {
    /// The log's last index from now on; every entry up to it is committed.
    pub prev_log_index: Index,
    /// Its term.
    pub prev_log_term: Term,
    /// The leader's state image ([`LogRead::state_image`]), applied up to
    /// at least `prev_log_index`; not checked by the core.
    ///
    /// [`LogRead::state_image`]: super::LogRead::state_image
    pub state: bytes::Bytes,
}

/// Everything the caller must do after feeding the core.
///
/// # Handling a Ready, in this order
/// 1. `messages`: send now. They do not depend on this Ready's disk writes
///    (a leader's appends go out while it writes the same entries itself).
/// 2. Persist: if `configurations` is set, save it durably first (it must
///    never miss a configuration entry the durable log may have); if
///    `log_start` is set, reset the log and the state beside it as it
///    says (after the configurations: their file then holds both the old
///    log's records and the new start's); if
///    `entries[0].index <= ` the log's last index, truncate the log from
///    `entries[0].index`; then append `entries`; write `hard_state` if set;
///    make all of it durable (fsync).
/// 3. `persisted_messages`: send only once step 2 is durable for this Ready
///    and every earlier one (votes, append answers).
/// 4. Call `Node::on_persisted(last.index, last.term)` for the last entry of
///    `entries`, if any. Readys may be pipelined (take the next before this
///    one is durable) as long as steps 2–4 happen in Ready order.
/// 5. `commit_index`: entries up to it are committed. They may include this
///    Ready's `entries`: read them back only after writing them. A proposal
///    answered `(index, term)` by `propose` is acknowledged when the commit
///    index reaches `index` and `Node::entry_term(index)` is still `term`;
///    if the term differs the proposal was lost (tell the client to retry).
/// 6. `read_states`, `soft_state`, `transfer_outcomes`: answer and report.
/// 7. `violations`: log each with the peer's name and count it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Term and vote to persist, when they changed.
    pub hard_state: Option<HardState>,
    /// Entries to append (possibly replacing a suffix, see above).
    pub entries: Vec<Entry>,
    /// Messages to send at once.
    pub messages: Vec<Message>,
    /// Messages to send once this Ready is durable.
    pub persisted_messages: Vec<Message>,
    /// The new commit index, when it advanced.
    pub commit_index: Option<Index>,
    /// Answers to `read_index`.
    pub read_states: Vec<ReadState>,
    /// Role, leader and term, when any changed.
    pub soft_state: Option<SoftState>,
    /// Ends of leadership transfers.
    pub transfer_outcomes: Vec<TransferOutcome>,
    /// Peer messages dropped because they broke the protocol.
    pub violations: Vec<Violation>,
    /// The configuration records to persist, when they changed: first the
    /// records of entries a truncation replaced, while that truncation may
    /// not be durable yet, then `Node::configurations` (so the last one is
    /// the configuration in force). Persist them before the entries, pass
    /// them back to `Node::restore_configurations` at restart, and bring
    /// the links to the members in line with the last one.
    pub configurations: Option<Vec<ConfigRecord>>,
    /// A new log start to take up (followers only, rare).
    pub log_start: Option<LogStart>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == Ready::default()
    }
}
