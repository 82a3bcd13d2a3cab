//! Rolling upgrades (DESIGN.md, "Rolling upgrade"; issue 12): the pure
//! planner that picks the next step. The executor that carries a step out
//! and records it in `status.upgrade` lives with the controller.
//!
//! # How the planner is used
//!
//! Each reconcile builds a [`planner::PlanInput`] from the resource, the
//! StatefulSet's `updateRevision`, the pods, every member's `/status` and
//! `status.upgrade`, plus the current time in seconds, and calls
//! [`planner::plan`]. It returns one [`planner::Step`]; the executor carries
//! out at most one disruptive step per reconcile and records it:
//!
//! - `DeletePod { member, commit_index_seen }`: record step `restart-member`
//!   with the member, `commitIndexAtDeletion` and `startedAt`, then delete.
//!   The step is complete when the member's new pod is on the update revision,
//!   Ready, answers `/status` and its `lastIndex` has reached
//!   `commit_index_seen`.
//! - `TransferLeadership { from, to }`: record step `transfer-leadership`
//!   with member `to`, then ask `from` to transfer. Complete when a member
//!   other than `from` leads.
//! - `Pause { after }`: the step on `after` is complete and `pauseSeconds` is
//!   not zero; record step `pause` with member `after` and `startedAt` now.
//! - `Wait { reason }`: nothing to do; the reason's text is for the
//!   `Progressing` condition.
//! - `StepTimedOut { .. }`: the recorded step took longer than
//!   `stepTimeoutSeconds`; set `Degraded`, emit an Event, and do nothing else.
//!   The planner keeps answering this until the step completes or the
//!   StatefulSet's revision changes (a rollback), which replans with the
//!   stuck pod first.
//! - `Done`: clear `status.upgrade` and remove the approval annotation.
//!
//! # Supervised upgrades
//!
//! With `strategy: supervised` followers roll by themselves, as with
//! `automatic`, but before the leader's turn (the transfer away from it) the
//! planner waits until the resource carries the annotation
//! [`planner::APPROVE_ANNOTATION`] (`dledger.io/upgrade-approve`) whose value
//! is the name of the leader to be restarted, e.g.
//! `kubectl annotate dledgergroup orders dledger.io/upgrade-approve=orders-0`.
//! Naming the member, not just "yes", means an approval given for one
//! leader does not silently apply to another after leadership moved.

pub mod planner;

#[cfg(test)]
mod tests;
