//! Membership changes (issue 11): carrying out `spec.replicas` one member
//! at a time, and replacing a member whose volume was lost. The pure
//! planner picks the next step; the executor that makes the admin call and
//! scales the StatefulSet lives with the controller (`controller::scale`).
//!
//! # How a change is carried out
//!
//! The planner starts from the configuration the leader reports, never from
//! a record of its own, so an operator that stops between two steps resumes
//! from what the group says (as etcd-operator re-aligns with the member
//! list first). One step per reconcile, and only once the last change is
//! committed:
//!
//! 1. **Replaced members.** A pod that answers `/status` under another
//!    incarnation than its configuration entry came back with an empty
//!    volume: its old incarnation is removed (it is gone with its log and
//!    its votes), then step 3 adds the new one as a learner and promotes it.
//! 2. **Surplus members**, at or past `spec.replicas` (or not one of the
//!    group's pods): learners first, then voters from the highest ordinal
//!    down. A leader that must go is asked to hand over first; a voter is
//!    removed only if the voters that stay still have a live majority.
//! 3. **Missing members**, below `spec.replicas`, lowest ordinal first: the
//!    pod is added as a learner once it answers, and promoted once it is
//!    within the lag bound of the leader's last index and heard from.
//!
//! The StatefulSet keeps a pod for every member still in the configuration:
//! its replicas are `max(spec.replicas, highest member ordinal + 1)`, so a
//! pod goes only after its member was removed, and new pods start at once
//! (they wait, `DLEDGER_INITIAL_STATE=existing`, to be added).

pub mod planner;

#[cfg(test)]
mod tests;
