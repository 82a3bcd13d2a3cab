//! The upgrade executor's decisions: from the planner's [`Step`] and the
//! facts, what this reconcile does (at most one disruptive action), what it
//! records in `status.upgrade`, the conditions and the Events. Pure: the
//! API calls stay in `mod.rs`; the time comes in as an input.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::decide::{keep_transition_time, Notice, Observed, STUCK_REASONS};
use super::poll::Polled;
use crate::crd::{Condition, DLedgerGroupStatus, UpgradeSpec, UpgradeStatus};
use crate::upgrade::planner::{
    self, InProgress, MemberFacts, PlanInput, Reported, Role, Step, StepKind, WaitReason,
};

/// The annotation on the resource that pauses the upgrade while it is `"true"`.
pub const PAUSE_ANNOTATION: &str = "dledger.io/upgrade-pause";

/// What a reconcile must do through the API; at most one per reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disruption {
    /// Delete the member's pod, on condition that its uid is still `uid`
    /// (a pod recreated meanwhile is never the one deleted).
    DeletePod {
        /// The member (pod name).
        member: String,
        /// The uid precondition.
        uid: String,
    },
    /// Ask the leader `from` to hand leadership to `to`.
    Transfer {
        /// The leader (its pod's address is where the call goes).
        from: String,
        /// The member id to hand over to.
        to: String,
    },
}

/// A condition's status, reason and message, before it gets its times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `True` rather than `False`.
    pub status: bool,
    /// PascalCase reason.
    pub reason: String,
    /// A sentence for a person.
    pub message: String,
}

impl Verdict {
    fn new(status: bool, reason: &str, message: String) -> Verdict {
        Verdict {
            status,
            reason: reason.to_string(),
            message,
        }
    }
}

/// What the upgrade executor decided.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Execution {
    /// The new `status.upgrade` (`None` clears it).
    pub upgrade: Option<UpgradeStatus>,
    /// The disruptive action, to run after the status is written.
    pub action: Option<Disruption>,
    /// Replaces the `Progressing` condition the poll decided, if set.
    pub progressing: Option<Verdict>,
    /// Replaces the `Degraded` condition the poll decided, if set.
    pub degraded: Option<Verdict>,
    /// Events to emit.
    pub notices: Vec<Notice>,
    /// Remove the approval annotation from the resource.
    pub remove_approval: bool,
    /// A step is under way: poll again soon.
    pub in_progress: bool,
}

/// What the executor looks at besides the planner's answer.
#[derive(Clone, Debug)]
pub struct ExecInput<'a> {
    /// What the planner was given.
    pub plan: &'a PlanInput,
    /// What it answered.
    pub step: &'a Step,
    /// Each member's pod uid, where the pod exists.
    pub pod_uids: &'a BTreeMap<String, String>,
    /// The resource carries [`PAUSE_ANNOTATION`]`: "true"`.
    pub paused: bool,
    /// `status.upgrade` as last written.
    pub recorded: Option<&'a UpgradeStatus>,
    /// The conditions last written (an Event is emitted once per trouble).
    pub previous_conditions: &'a [Condition],
    /// Now, RFC 3339.
    pub now: &'a str,
}

/// Builds the planner's input from the resource's parts and what was observed.
pub fn plan_input(
    spec: &UpgradeSpec,
    annotations: &BTreeMap<String, String>,
    update_revision: Option<&str>,
    observed: &[Observed],
    recorded: Option<&UpgradeStatus>,
    now_seconds: i64,
) -> PlanInput {
    let members = observed
        .iter()
        .enumerate()
        .map(|(ordinal, member)| MemberFacts {
            name: member.name.clone(),
            ordinal: u32::try_from(ordinal).unwrap_or(u32::MAX),
            pod: member.pod.as_ref().map(|pod| planner::PodFacts {
                revision: pod.revision.clone().unwrap_or_default(),
                ready: pod.ready,
                crash_looping: pod.restarts_rising
                    || pod
                        .waiting_reason
                        .as_deref()
                        .is_some_and(|reason| STUCK_REASONS.contains(&reason)),
                deleting: pod.deleting,
            }),
            reported: match &member.polled {
                Polled::Answered(status) => Some(Reported {
                    role: role_of(status.role),
                    term: status.term,
                    last_index: status.last_index,
                    commit_index: status.commit_index,
                }),
                Polled::Silent(_) => None,
            },
        })
        .collect();
    PlanInput {
        strategy: spec.strategy,
        max_lag: spec.max_lag,
        step_timeout_seconds: spec.step_timeout_seconds,
        pause_seconds: spec.pause_seconds,
        approved_member: annotations.get(planner::APPROVE_ANNOTATION).cloned(),
        update_revision: update_revision.unwrap_or_default().to_string(),
        members,
        in_progress: recorded.and_then(in_progress_of),
        now_seconds,
    }
}

fn role_of(role: dledger_replica::api::Role) -> Role {
    match role {
        dledger_replica::api::Role::Leader => Role::Leader,
        dledger_replica::api::Role::Follower => Role::Follower,
        dledger_replica::api::Role::Candidate => Role::Candidate,
        dledger_replica::api::Role::Learner => Role::Learner,
    }
}

/// `status.upgrade` as the planner reads it; `None` for a record this
/// version cannot read (an unknown step or time), which is then replanned.
pub fn in_progress_of(recorded: &UpgradeStatus) -> Option<InProgress> {
    Some(InProgress {
        kind: StepKind::parse(&recorded.step)?,
        member: recorded.member.clone(),
        commit_index_seen: recorded.commit_index_at_deletion,
        started_at_seconds: seconds_of(&recorded.started_at)?,
    })
}

/// Seconds since the Unix epoch of an RFC 3339 time.
pub fn seconds_of(rfc3339: &str) -> Option<i64> {
    rfc3339
        .parse::<Timestamp>()
        .ok()
        .map(|time| time.as_second())
}

/// Whether there is an upgrade at all: a step recorded, or a member not on
/// the update revision. Otherwise a planner's wait (a member down) is the
/// poll's business, not the upgrade's.
fn upgrade_needed(input: &ExecInput<'_>) -> bool {
    let plan = input.plan;
    input.recorded.is_some()
        || (!plan.update_revision.is_empty()
            && plan
                .members
                .iter()
                .any(|member| !member.is_updated(&plan.update_revision)))
}

/// The upgrade's decision for this reconcile.
pub fn execute(input: &ExecInput<'_>) -> Execution {
    if let Some(resumed) = resume_deletion(input) {
        return resumed;
    }
    match input.step {
        Step::DeletePod {
            member,
            commit_index_seen,
        } => delete_pod(input, member, *commit_index_seen),
        Step::TransferLeadership { from, to } => transfer(input, from, to),
        Step::Pause { after } => Execution {
            upgrade: Some(record(StepKind::Pause, after, None, None, input.now)),
            progressing: Some(Verdict::new(
                true,
                "UpgradePausing",
                format!(
                    "the step on {after} is complete; pausing {}s (pauseSeconds)",
                    input.plan.pause_seconds
                ),
            )),
            in_progress: true,
            ..Execution::default()
        },
        Step::Wait { reason } => wait(input, reason),
        Step::StepTimedOut {
            kind,
            member,
            elapsed_seconds,
            reason,
        } => timed_out(input, *kind, member, *elapsed_seconds, reason),
        Step::Done => done(input),
    }
}

fn record(
    kind: StepKind,
    member: &str,
    commit_index_at_deletion: Option<u64>,
    pod_uid: Option<String>,
    now: &str,
) -> UpgradeStatus {
    UpgradeStatus {
        step: kind.as_str().to_string(),
        member: member.to_string(),
        commit_index_at_deletion,
        started_at: now.to_string(),
        pod_uid,
    }
}

/// A restart recorded whose pod is still there, outdated and not
/// terminating, with the recorded uid: the operator stopped between writing
/// the record and deleting, or the delete failed. Delete that pod again
/// rather than plan anew (which could pick a second member).
fn resume_deletion(input: &ExecInput<'_>) -> Option<Execution> {
    let recorded = input.recorded?;
    if StepKind::parse(&recorded.step) != Some(StepKind::RestartMember) {
        return None;
    }
    let uid = recorded.pod_uid.as_ref()?;
    let member = input
        .plan
        .members
        .iter()
        .find(|member| member.name == recorded.member)?;
    let pod = member.pod.as_ref()?;
    let same_pod = input.pod_uids.get(&member.name) == Some(uid);
    let outdated = pod.revision != input.plan.update_revision;
    if !same_pod || pod.deleting || !outdated {
        return None;
    }
    Some(Execution {
        upgrade: Some(recorded.clone()),
        action: Some(Disruption::DeletePod {
            member: member.name.clone(),
            uid: uid.clone(),
        }),
        progressing: Some(Verdict::new(
            true,
            "UpgradeRestartingMember",
            format!(
                "deleting pod {} (recorded in status.upgrade, not yet seen terminating)",
                member.name
            ),
        )),
        in_progress: true,
        ..Execution::default()
    })
}

fn paused(input: &ExecInput<'_>, next: String) -> Execution {
    Execution {
        upgrade: input.recorded.cloned(),
        progressing: Some(Verdict::new(
            true,
            "UpgradePaused",
            format!("upgrade paused by the annotation {PAUSE_ANNOTATION}=true; next: {next}"),
        )),
        in_progress: true,
        ..Execution::default()
    }
}

fn delete_pod(input: &ExecInput<'_>, member: &str, commit_index_seen: u64) -> Execution {
    if input.paused {
        return paused(input, format!("restart {member}"));
    }
    let Some(uid) = input.pod_uids.get(member) else {
        // The planner only deletes an existing pod; without its uid there
        // is no safe precondition, so wait for the watch to deliver it.
        return Execution {
            upgrade: input.recorded.cloned(),
            progressing: Some(Verdict::new(
                true,
                "UpgradeWaiting",
                format!("waiting to see the uid of pod {member} before deleting it"),
            )),
            in_progress: true,
            ..Execution::default()
        };
    };
    let note = format!(
        "deleting pod {member} so that it comes back on revision {}; it is done once Ready with lastIndex >= {commit_index_seen}",
        input.plan.update_revision
    );
    Execution {
        upgrade: Some(record(
            StepKind::RestartMember,
            member,
            Some(commit_index_seen),
            Some(uid.clone()),
            input.now,
        )),
        action: Some(Disruption::DeletePod {
            member: member.to_string(),
            uid: uid.clone(),
        }),
        progressing: Some(Verdict::new(true, "UpgradeRestartingMember", note.clone())),
        notices: vec![Notice {
            warning: false,
            reason: "UpgradeRestartingMember".into(),
            note,
        }],
        in_progress: true,
        ..Execution::default()
    }
}

fn transfer(input: &ExecInput<'_>, from: &str, to: &str) -> Execution {
    if input.paused {
        return paused(input, format!("move leadership from {from} to {to}"));
    }
    let note = format!("moving leadership from {from} to {to} before restarting {from}");
    Execution {
        upgrade: Some(record(
            StepKind::TransferLeadership,
            to,
            None,
            None,
            input.now,
        )),
        action: Some(Disruption::Transfer {
            from: from.to_string(),
            to: to.to_string(),
        }),
        progressing: Some(Verdict::new(
            true,
            "UpgradeTransferringLeadership",
            note.clone(),
        )),
        notices: vec![Notice {
            warning: false,
            reason: "UpgradeTransferringLeadership".into(),
            note,
        }],
        in_progress: true,
        ..Execution::default()
    }
}

fn wait(input: &ExecInput<'_>, reason: &WaitReason) -> Execution {
    if !upgrade_needed(input) {
        return Execution::default();
    }
    if input.paused {
        return paused(input, reason.to_string());
    }
    // A recorded transfer that has not happened: the call failed or the
    // operator stopped before making it. Ask again; it is idempotent.
    let retry = match reason {
        WaitReason::TransferNotComplete { from, to } => Some(Disruption::Transfer {
            from: from.clone(),
            to: to.clone(),
        }),
        _ => None,
    };
    Execution {
        upgrade: input.recorded.cloned(),
        action: retry,
        progressing: Some(Verdict::new(true, reason.code(), reason.to_string())),
        in_progress: true,
        ..Execution::default()
    }
}

fn timed_out(
    input: &ExecInput<'_>,
    kind: StepKind,
    member: &str,
    elapsed_seconds: i64,
    reason: &WaitReason,
) -> Execution {
    let message = format!(
        "upgrade stopped: step {} of {member} has taken {elapsed_seconds}s, more than stepTimeoutSeconds {}: {reason}; fix the pod or roll the image back",
        kind.as_str(),
        input.plan.step_timeout_seconds
    );
    let already_reported = input
        .previous_conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "UpgradeStepTimedOut");
    let notices = if already_reported {
        Vec::new()
    } else {
        vec![Notice {
            warning: true,
            reason: "UpgradeStepTimedOut".into(),
            note: message.clone(),
        }]
    };
    Execution {
        upgrade: input.recorded.cloned(),
        progressing: Some(Verdict::new(false, "UpgradeStepTimedOut", message.clone())),
        degraded: Some(Verdict::new(true, "UpgradeStepTimedOut", message)),
        notices,
        in_progress: true,
        ..Execution::default()
    }
}

fn done(input: &ExecInput<'_>) -> Execution {
    let notices = match input.recorded {
        Some(_) => vec![Notice {
            warning: false,
            reason: "UpgradeCompleted".into(),
            note: format!("every member runs revision {}", input.plan.update_revision),
        }],
        None => Vec::new(),
    };
    Execution {
        upgrade: None,
        remove_approval: input.plan.approved_member.is_some(),
        notices,
        ..Execution::default()
    }
}

/// Writes a verdict into `conditions` in place of the condition of that type.
pub fn set_condition(
    status: &mut DLedgerGroupStatus,
    type_: &str,
    verdict: &Verdict,
    previous: &[Condition],
    now: &str,
    generation: Option<i64>,
) {
    let condition = keep_transition_time(
        Condition {
            type_: type_.to_string(),
            status: if verdict.status { "True" } else { "False" }.to_string(),
            reason: verdict.reason.clone(),
            message: verdict.message.clone(),
            last_transition_time: now.to_string(),
            observed_generation: generation,
        },
        previous,
    );
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(slot) => *slot = condition,
        None => status.conditions.push(condition),
    }
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod tests;
