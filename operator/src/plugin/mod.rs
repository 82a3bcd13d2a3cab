//! `kubectl dledger` (issue 12): a kubectl plugin that shows a group's
//! members and steers the operator through the resource only — it never
//! talks to a replica and never deletes a pod itself.
//!
//! [`cli`] is the command line; [`render`] turns a resource into the status
//! view; [`patches`] builds what each steering command writes and makes its
//! choices (which follower, whether to refuse); [`commands`] does the API
//! calls. Everything but `commands` is pure.
//!
//! The contract with the operator:
//! - switchover: merge patch `spec.switchover.target`; the operator records
//!   `status.switchover` and sets `completedAt` once the target leads;
//! - restart: annotation [`patches::RESTARTED_AT_ANNOTATION`] (copied into
//!   the pod template, so a new revision the upgrade planner rolls);
//! - pause/resume: annotation [`patches::PAUSE_ANNOTATION`] set to `"true"`
//!   or removed;
//! - proceed: annotation [`patches::APPROVE_ANNOTATION`] naming the leader,
//!   only while `Progressing` says [`patches::APPROVAL_NEEDED_REASON`].

pub mod cli;
pub mod commands;
pub mod patches;
pub mod render;

#[cfg(test)]
mod tests;

/// Why a command failed; each prints as one line for a person.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No kubeconfig or in-cluster configuration to talk to.
    #[error("cannot reach Kubernetes: {0}")]
    Config(String),
    /// The group does not exist.
    #[error("DLedgerGroup {group} not found in namespace {namespace}")]
    GroupNotFound {
        /// Its name.
        group: String,
        /// Where it was looked for.
        namespace: String,
    },
    /// No member leads (or the operator has not reported one yet).
    #[error("{group} has no leader: wait for an election (kubectl dledger status {group})")]
    NoLeader {
        /// The group.
        group: String,
    },
    /// `--to` names no member of the group.
    #[error("{member} is not a member of {group}; its members are {members}")]
    UnknownMember {
        /// The group.
        group: String,
        /// What `--to` said.
        member: String,
        /// The members, comma-separated.
        members: String,
    },
    /// `--to` names a member that cannot take leadership now.
    #[error("{member} cannot take leadership now: {why}")]
    MemberCannotLead {
        /// The member.
        member: String,
        /// Why not.
        why: String,
    },
    /// No follower is Ready and answering.
    #[error("{group} has no Ready follower to hand leadership to")]
    NoSwitchoverCandidate {
        /// The group.
        group: String,
    },
    /// `upgrade proceed` while nothing waits for approval.
    #[error("no upgrade of {group} is waiting for approval (see kubectl dledger status {group})")]
    NotWaitingForApproval {
        /// The group.
        group: String,
    },
    /// `switchover --wait` ran out of time.
    #[error("{target} does not lead {group} after {waited_seconds}s (leader: {leader}); the request stays in spec.switchover")]
    SwitchoverTimedOut {
        /// The group.
        group: String,
        /// The member asked to lead.
        target: String,
        /// How long we waited.
        waited_seconds: u64,
        /// Who leads now, or `none`.
        leader: String,
    },
    /// The API server refused or failed.
    #[error("Kubernetes API: {0}")]
    Api(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(String),
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl From<kube::Error> for Error {
    fn from(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => Error::Api(format!(
                "{} ({} {})",
                status.message, status.code, status.reason
            )),
            other => Error::Api(other.to_string()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Output(err.to_string())
    }
}
