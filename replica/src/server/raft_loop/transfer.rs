//! Leadership transfers: starting one, and answering its caller with what
//! became of it.

use tokio::sync::oneshot;

use crate::core::{self, TransferOutcome};
use crate::engine::TransferError;
use crate::entry::{NodeId, Term};
use crate::server::role_log;

use super::RaftLoop;

pub(super) struct PendingTransfer {
    pub(super) reply: oneshot::Sender<Result<(NodeId, Term), TransferError>>,
    /// Set once this member stepped down; then the first known other leader
    /// answers the request.
    pub(super) stepped_down: bool,
}

impl RaftLoop {
    pub(super) fn start_transfer(
        &mut self,
        target: Option<NodeId>,
        reply: oneshot::Sender<Result<(NodeId, Term), TransferError>>,
    ) {
        let result = self.node.transfer_leadership(target);
        let name = |id: NodeId| self.member_name(id);
        let refused = match result {
            Ok(()) => None,
            Err(core::TransferError::NotLeader { leader }) => Some(TransferError::NotLeader {
                leader_id: leader.map(name),
            }),
            Err(core::TransferError::UnknownMember(id)) => Some(TransferError::BadTarget {
                reason: format!("{} is not a member", name(id)),
            }),
            Err(core::TransferError::AlreadyLeader(id)) => Some(TransferError::BadTarget {
                reason: format!("{} is already the leader", name(id)),
            }),
            Err(core::TransferError::NoOtherMember) => Some(TransferError::BadTarget {
                reason: "there is no other member to hand leadership to".into(),
            }),
            Err(core::TransferError::Core(err)) => Some(TransferError::Failed {
                reason: err.to_string(),
            }),
        };
        if let Some(err) = refused {
            let _ = reply.send(Err(err));
            return;
        }
        role_log::transfer_started(self.node.transfer_target(), self.node.term(), name);
        if let Some(previous) = self.transfer.take() {
            let _ = previous.reply.send(Err(TransferError::Failed {
                reason: "superseded by a newer transfer request".into(),
            }));
        }
        self.transfer = Some(PendingTransfer {
            reply,
            stepped_down: false,
        });
    }

    pub(super) fn on_transfer_outcome(&mut self, outcome: TransferOutcome) {
        role_log::transfer_outcome(outcome, self.node.term(), |id| self.member_name(id));
        match outcome {
            TransferOutcome::SteppedDown { .. } => {
                if let Some(transfer) = &mut self.transfer {
                    transfer.stepped_down = true;
                }
                // The new leader may already be known.
                if let Some(soft) = self.last_soft {
                    self.on_soft_state(soft);
                }
            }
            TransferOutcome::Abandoned { target, reason } => {
                if let Some(transfer) = self.transfer.take() {
                    let _ = transfer.reply.send(Err(TransferError::Failed {
                        reason: format!(
                            "{} did not take over ({reason:?}); this member still leads",
                            self.member_name(target)
                        ),
                    }));
                }
            }
        }
    }
}
