//! The next step of a rolling upgrade, from plain facts. No client, no
//! clock (the time is an input), so every case is a unit test.

use std::fmt;

use crate::crd::UpgradeStrategy;

/// The annotation on the resource that approves, in `supervised` mode, the
/// leader's turn; its value names the leader (module doc of `upgrade`).
pub const APPROVE_ANNOTATION: &str = "dledger.io/upgrade-approve";

/// Everything the planner looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanInput {
    /// `spec.upgrade.strategy`.
    pub strategy: UpgradeStrategy,
    /// `spec.upgrade.maxLag`: entries behind the leader's commit index a
    /// member may be and still count as caught up.
    pub max_lag: u64,
    /// `spec.upgrade.stepTimeoutSeconds`.
    pub step_timeout_seconds: u32,
    /// `spec.upgrade.pauseSeconds`.
    pub pause_seconds: u32,
    /// The value of [`APPROVE_ANNOTATION`], if the resource carries it.
    pub approved_member: Option<String>,
    /// The StatefulSet's `status.updateRevision`.
    pub update_revision: String,
    /// Every expected member, one per ordinal.
    pub members: Vec<MemberFacts>,
    /// `status.upgrade`, parsed.
    pub in_progress: Option<InProgress>,
    /// The current time, seconds since the Unix epoch.
    pub now_seconds: i64,
}

/// One member: its pod and its answer to `/status`.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberFacts {
    /// The member id (pod name).
    pub name: String,
    /// Its StatefulSet ordinal.
    pub ordinal: u32,
    /// Its pod, if the pod exists.
    pub pod: Option<PodFacts>,
    /// What `/status` said; `None` when it did not answer.
    pub reported: Option<Reported>,
}

/// The facts of a pod the planner needs.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PodFacts {
    /// Its `controller-revision-hash` label.
    pub revision: String,
    /// Its Ready condition.
    pub ready: bool,
    /// A container waits with a reason that will not clear by itself
    /// (`CrashLoopBackOff`, `ImagePullBackOff`, ...).
    pub crash_looping: bool,
    /// It has a deletion timestamp.
    pub deleting: bool,
}

/// A member's role as `/status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leads its term.
    Leader,
    /// Follows a leader.
    Follower,
    /// Stands for election.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
}

/// The parts of `/status` the planner uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reported {
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: u64,
    /// The last index on its disk.
    pub last_index: u64,
    /// Its commit index.
    pub commit_index: u64,
}

/// The kind of step recorded in `status.upgrade.step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// `restart-member`: the member's pod was deleted.
    RestartMember,
    /// `transfer-leadership`: the leader was asked to hand over to the member.
    TransferLeadership,
    /// `pause`: the step on the member completed; waiting `pauseSeconds`.
    Pause,
}

impl StepKind {
    /// The name recorded in `status.upgrade.step`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::RestartMember => "restart-member",
            StepKind::TransferLeadership => "transfer-leadership",
            StepKind::Pause => "pause",
        }
    }

    /// Parses a recorded step name; `None` for a name this version does not know.
    pub fn parse(step: &str) -> Option<StepKind> {
        match step {
            "restart-member" => Some(StepKind::RestartMember),
            "transfer-leadership" => Some(StepKind::TransferLeadership),
            "pause" => Some(StepKind::Pause),
            _ => None,
        }
    }
}

/// The step in progress, from `status.upgrade`.
#[derive(Clone, Debug, PartialEq)]
pub struct InProgress {
    /// What it does.
    pub kind: StepKind,
    /// The member it concerns: the restarted member, the transfer's target,
    /// or the member whose step the pause follows.
    pub member: String,
    /// For a restart: the leader's commit index when the pod was deleted.
    pub commit_index_seen: Option<u64>,
    /// When it started, seconds since the Unix epoch.
    pub started_at_seconds: i64,
}

/// What the executor should do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing now; the reason is for the `Progressing` condition.
    Wait {
        /// Why, in terms a person can act on.
        reason: WaitReason,
    },
    /// Delete this member's pod so the StatefulSet recreates it updated.
    DeletePod {
        /// The member.
        member: String,
        /// The leader's commit index now; the new pod is caught up once its
        /// `lastIndex` reaches it.
        commit_index_seen: u64,
    },
    /// Ask the leader to hand leadership over.
    TransferLeadership {
        /// The leader now.
        from: String,
        /// The most caught-up updated follower.
        to: String,
    },
    /// The step on `after` completed; pause `pauseSeconds` before the next.
    Pause {
        /// The member whose step completed.
        after: String,
    },
    /// The recorded step has taken longer than its timeout.
    StepTimedOut {
        /// The step.
        kind: StepKind,
        /// The member it concerns.
        member: String,
        /// Seconds since it started.
        elapsed_seconds: i64,
        /// What it still waits for.
        reason: WaitReason,
    },
    /// Every member runs the update revision.
    Done,
}

/// Why the planner waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// The resource lists no members.
    NoMembers,
    /// The StatefulSet has not reported an update revision yet.
    NoUpdateRevision,
    /// These members have no pod, a terminating pod, a pod not Ready, or do
    /// not answer `/status`; nothing else may go down meanwhile.
    MembersNotServing {
        /// Their names.
        members: Vec<String>,
    },
    /// No member reports itself leader.
    NoLeader,
    /// The leader's pod is not Ready; it is never deleted.
    LeaderNotServing {
        /// The leader.
        leader: String,
    },
    /// Some member other than `member` is not within the lag bound of the
    /// leader's commit index (DESIGN: every member other than the one about
    /// to restart must be).
    TooFewCaughtUp {
        /// The member that would go.
        member: String,
        /// Members other than it within the bound.
        caught_up: usize,
        /// How many there are (all of them must be).
        needed: usize,
    },
    /// The leader's turn, but no updated follower is Ready and caught up.
    NoTransferTarget {
        /// The leader.
        leader: String,
    },
    /// `supervised`: the leader's turn waits for the approval annotation.
    ApprovalNeeded {
        /// The leader; the annotation's value must be this name.
        leader: String,
    },
    /// The restarted member is not back yet.
    RestartNotComplete {
        /// The member.
        member: String,
        /// What is missing, e.g. "pod not Ready".
        missing: String,
    },
    /// The transfer has not happened yet.
    TransferNotComplete {
        /// The leader asked to hand over.
        from: String,
        /// The target.
        to: String,
    },
    /// Pausing between steps.
    Pausing {
        /// The member whose step completed.
        after: String,
        /// Seconds left.
        remaining_seconds: i64,
    },
}

impl WaitReason {
    /// A CamelCase reason for a condition.
    pub fn code(&self) -> &'static str {
        match self {
            WaitReason::NoMembers => "NoMembers",
            WaitReason::NoUpdateRevision => "NoUpdateRevision",
            WaitReason::MembersNotServing { .. } => "MembersNotServing",
            WaitReason::NoLeader => "NoLeader",
            WaitReason::LeaderNotServing { .. } => "LeaderNotServing",
            WaitReason::TooFewCaughtUp { .. } => "TooFewCaughtUp",
            WaitReason::NoTransferTarget { .. } => "NoTransferTarget",
            WaitReason::ApprovalNeeded { .. } => "ApprovalNeeded",
            WaitReason::RestartNotComplete { .. } => "RestartNotComplete",
            WaitReason::TransferNotComplete { .. } => "TransferNotComplete",
            WaitReason::Pausing { .. } => "Pausing",
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::NoMembers => write!(f, "the group has no members"),
            WaitReason::NoUpdateRevision => {
                write!(f, "the StatefulSet has no update revision yet")
            }
            WaitReason::MembersNotServing { members } => write!(
                f,
                "waiting for {} to be Ready and answer /status before restarting anything",
                members.join(", ")
            ),
            WaitReason::NoLeader => write!(f, "no member reports itself leader"),
            WaitReason::LeaderNotServing { leader } => {
                write!(f, "the leader {leader} is not Ready; it is never restarted")
            }
            WaitReason::TooFewCaughtUp {
                member,
                caught_up,
                needed,
            } => write!(
                f,
                "restarting {member} waits: {caught_up} of the other {needed} members are within maxLag of the leader, and all must be"
            ),
            WaitReason::NoTransferTarget { leader } => write!(
                f,
                "no updated follower is Ready and within maxLag to take over from {leader}"
            ),
            WaitReason::ApprovalNeeded { leader } => write!(
                f,
                "supervised upgrade: annotate the resource {APPROVE_ANNOTATION}={leader} to restart the leader"
            ),
            WaitReason::RestartNotComplete { member, missing } => {
                write!(f, "waiting for restarted {member}: {missing}")
            }
            WaitReason::TransferNotComplete { from, to } => {
                write!(f, "waiting for leadership to move from {from} to {to}")
            }
            WaitReason::Pausing {
                after,
                remaining_seconds,
            } => write!(
                f,
                "pausing {remaining_seconds}s after {after} (pauseSeconds)"
            ),
        }
    }
}

impl MemberFacts {
    /// Its pod runs the update revision.
    pub fn is_updated(&self, update_revision: &str) -> bool {
        self.pod
            .as_ref()
            .is_some_and(|pod| pod.revision == update_revision)
    }

    /// Its pod exists, is not terminating, is Ready and not crash-looping,
    /// and it answers `/status`.
    pub fn is_serving(&self) -> bool {
        let pod_ok = self
            .pod
            .as_ref()
            .is_some_and(|pod| pod.ready && !pod.crash_looping && !pod.deleting);
        pod_ok && self.reported.is_some()
    }

    fn last_index(&self) -> Option<u64> {
        self.reported.map(|reported| reported.last_index)
    }
}

/// The leader: the member reporting `leader` with the highest term, if any.
pub fn leader(members: &[MemberFacts]) -> Option<&MemberFacts> {
    members
        .iter()
        .filter(|member| member.reported.is_some_and(|r| r.role == Role::Leader))
        .max_by_key(|member| member.reported.map(|r| r.term))
}

/// Whether `member` is within `max_lag` of `leader_commit_index`.
pub fn is_caught_up(member: &MemberFacts, leader_commit_index: u64, max_lag: u64) -> bool {
    member
        .last_index()
        .is_some_and(|last| last.saturating_add(max_lag) >= leader_commit_index)
}

/// Members other than `going` within the lag bound of the leader's commit index.
pub fn caught_up_without(
    members: &[MemberFacts],
    going: &str,
    leader_commit_index: u64,
    max_lag: u64,
) -> usize {
    members
        .iter()
        .filter(|member| member.name != going)
        .filter(|member| is_caught_up(member, leader_commit_index, max_lag))
        .count()
}

/// The next step of the upgrade.
pub fn plan(input: &PlanInput) -> Step {
    if input.members.is_empty() {
        return wait(WaitReason::NoMembers);
    }
    if input.update_revision.is_empty() {
        return wait(WaitReason::NoUpdateRevision);
    }
    if let Some(step) = input.in_progress.as_ref().and_then(|p| follow_up(input, p)) {
        return step;
    }
    plan_fresh(input)
}

fn wait(reason: WaitReason) -> Step {
    Step::Wait { reason }
}

/// The answer for a recorded step still under way, or `None` when it is
/// complete or stale and the planner should pick the next step.
fn follow_up(input: &PlanInput, progress: &InProgress) -> Option<Step> {
    let member = input
        .members
        .iter()
        .find(|member| member.name == progress.member)?;
    let missing = match progress.kind {
        StepKind::RestartMember => restart_missing(input, member, progress)?,
        StepKind::TransferLeadership => transfer_missing(input, progress)?,
        StepKind::Pause => return pause_left(input, progress),
    };
    let elapsed_seconds = input
        .now_seconds
        .saturating_sub(progress.started_at_seconds);
    if elapsed_seconds > i64::from(input.step_timeout_seconds) {
        return Some(Step::StepTimedOut {
            kind: progress.kind,
            member: progress.member.clone(),
            elapsed_seconds,
            reason: missing,
        });
    }
    Some(wait(missing))
}

/// What the restarted member still lacks; `None` once it is back and
/// caught up, or when the record is stale (the pod on an old revision and not
/// terminating: the deletion never happened, or the revision was rolled back).
fn restart_missing(
    input: &PlanInput,
    member: &MemberFacts,
    progress: &InProgress,
) -> Option<WaitReason> {
    let incomplete = |missing: &str| {
        Some(WaitReason::RestartNotComplete {
            member: member.name.clone(),
            missing: missing.to_string(),
        })
    };
    let Some(pod) = &member.pod else {
        return incomplete("no pod yet");
    };
    if pod.deleting {
        return incomplete("old pod still terminating");
    }
    if pod.revision != input.update_revision {
        return None;
    }
    if pod.crash_looping {
        return incomplete("pod crash-looping");
    }
    if !pod.ready {
        return incomplete("pod not Ready");
    }
    let Some(reported) = member.reported else {
        return incomplete("not answering /status");
    };
    let seen = progress.commit_index_seen.unwrap_or(0);
    if reported.last_index < seen {
        return incomplete(&format!(
            "lastIndex {} has not reached {seen}, the commit index at deletion",
            reported.last_index
        ));
    }
    None
}

/// What the transfer still lacks; `None` once someone other than the old
/// leader leads. The record names the target; the old leader is whoever
/// still leads on an outdated pod, since the target is always updated.
fn transfer_missing(input: &PlanInput, progress: &InProgress) -> Option<WaitReason> {
    let Some(current) = leader(&input.members) else {
        return Some(WaitReason::NoLeader);
    };
    if current.name == progress.member || current.is_updated(&input.update_revision) {
        return None;
    }
    Some(WaitReason::TransferNotComplete {
        from: current.name.clone(),
        to: progress.member.clone(),
    })
}

fn pause_left(input: &PlanInput, progress: &InProgress) -> Option<Step> {
    let end = progress
        .started_at_seconds
        .saturating_add(i64::from(input.pause_seconds));
    let remaining_seconds = end.saturating_sub(input.now_seconds);
    (remaining_seconds > 0).then(|| {
        wait(WaitReason::Pausing {
            after: progress.member.clone(),
            remaining_seconds,
        })
    })
}

/// The next step with nothing under way (or the last one complete).
fn plan_fresh(input: &PlanInput) -> Step {
    if let Some(step) = pause_after_completed(input) {
        return step;
    }
    let outdated: Vec<&MemberFacts> = input
        .members
        .iter()
        .filter(|member| !member.is_updated(&input.update_revision))
        .collect();
    let not_serving: Vec<&MemberFacts> = input
        .members
        .iter()
        .filter(|member| !member.is_serving())
        .collect();
    if outdated.is_empty() && not_serving.is_empty() {
        return Step::Done;
    }
    // Never two members down: with one down, only that one may be restarted,
    // and only if it has a pod on an old revision to replace.
    match not_serving.as_slice() {
        [] => {}
        [down] if is_replaceable(down, &input.update_revision) => {
            return restart_checked(input, down);
        }
        _ => {
            return wait(WaitReason::MembersNotServing {
                members: not_serving.iter().map(|m| m.name.clone()).collect(),
            });
        }
    }
    let Some(current) = leader(&input.members) else {
        return wait(WaitReason::NoLeader);
    };
    let leader_commit = current.reported.map_or(0, |r| r.commit_index);
    // Outdated followers, most lagging first; the ordinal breaks ties.
    let next_follower = outdated
        .iter()
        .filter(|member| member.name != current.name)
        .min_by_key(|member| (member.last_index().unwrap_or(0), member.ordinal));
    if let Some(follower) = next_follower {
        return restart_checked(input, follower);
    }
    // Every outdated member is the leader (the early returns above saw to
    // it), so its turn has come.
    leader_turn(input, current, leader_commit)
}

/// After a restart or transfer completed, a pause if one is configured.
fn pause_after_completed(input: &PlanInput) -> Option<Step> {
    let progress = input.in_progress.as_ref()?;
    let completed_step = matches!(
        progress.kind,
        StepKind::RestartMember | StepKind::TransferLeadership
    );
    (completed_step && input.pause_seconds > 0).then(|| Step::Pause {
        after: progress.member.clone(),
    })
}

/// A down member may be deleted only when it has a live pod on an old
/// revision; one with no pod or a terminating pod is coming back by itself.
fn is_replaceable(member: &MemberFacts, update_revision: &str) -> bool {
    member
        .pod
        .as_ref()
        .is_some_and(|pod| !pod.deleting && pod.revision != update_revision)
}

/// `DeletePod` for `member` if a leader exists, it is not the leader, and the
/// others are all caught up; otherwise why not.
fn restart_checked(input: &PlanInput, member: &MemberFacts) -> Step {
    let Some(current) = leader(&input.members) else {
        return wait(WaitReason::NoLeader);
    };
    if current.name == member.name {
        return wait(WaitReason::LeaderNotServing {
            leader: current.name.clone(),
        });
    }
    let leader_commit = current.reported.map_or(0, |r| r.commit_index);
    let needed = input.members.len() - 1;
    let caught_up = caught_up_without(&input.members, &member.name, leader_commit, input.max_lag);
    if caught_up < needed {
        return wait(WaitReason::TooFewCaughtUp {
            member: member.name.clone(),
            caught_up,
            needed,
        });
    }
    Step::DeletePod {
        member: member.name.clone(),
        commit_index_seen: leader_commit,
    }
}

/// Only the leader is outdated: hand over to the most caught-up updated
/// follower, after approval in `supervised` mode.
fn leader_turn(input: &PlanInput, current: &MemberFacts, leader_commit: u64) -> Step {
    let needed = input.members.len() - 1;
    let caught_up = caught_up_without(&input.members, &current.name, leader_commit, input.max_lag);
    if caught_up < needed {
        return wait(WaitReason::TooFewCaughtUp {
            member: current.name.clone(),
            caught_up,
            needed,
        });
    }
    let target = input
        .members
        .iter()
        .filter(|member| member.name != current.name)
        .filter(|member| member.is_updated(&input.update_revision) && member.is_serving())
        .filter(|member| member.reported.is_some_and(|r| r.role == Role::Follower))
        .filter(|member| is_caught_up(member, leader_commit, input.max_lag))
        .max_by_key(|member| (member.last_index(), std::cmp::Reverse(member.ordinal)));
    let Some(target) = target else {
        return wait(WaitReason::NoTransferTarget {
            leader: current.name.clone(),
        });
    };
    let approved = input.approved_member.as_deref() == Some(current.name.as_str());
    if input.strategy == UpgradeStrategy::Supervised && !approved {
        return wait(WaitReason::ApprovalNeeded {
            leader: current.name.clone(),
        });
    }
    Step::TransferLeadership {
        from: current.name.clone(),
        to: target.name.clone(),
    }
}
