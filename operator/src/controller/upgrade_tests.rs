//! The executor's decisions, one per planner step, plus resuming from a
//! recorded status, the pause annotation and the Done clean-up.

use dledger_replica::api::{Role as ApiRole, Status};

use super::*;
use crate::controller::decide::PodFacts;
use crate::crd::UpgradeStrategy;

const NOW: &str = "2026-12-02T22:00:00Z";
const NOW_SECONDS: i64 = 1_796_248_800;

fn status(id: &str, role: ApiRole, last_index: u64) -> Status {
    Status {
        group: "orders".into(),
        id: id.into(),
        version: "0.1.0".into(),
        role,
        term: 3,
        leader_id: Some("orders-0".into()),
        first_index: 1,
        last_index,
        last_term: 3,
        commit_index: last_index,
        peers: vec![],
        leader_commit_index: None,
        lag: 0,
        configuration: None,
        incarnation: 0,
        group_id: String::new(),
        certificate_not_after_s: None,
    }
}

/// Three members, orders-0 leads; each pod on `revisions[i]`, uid `uid-i`.
fn observed(revisions: [&str; 3]) -> Vec<Observed> {
    (0..3)
        .map(|i| {
            let name = format!("orders-{i}");
            let role = if i == 0 {
                ApiRole::Leader
            } else {
                ApiRole::Follower
            };
            Observed {
                name: name.clone(),
                pod: Some(PodFacts {
                    ready: true,
                    revision: Some(revisions[i].to_string()),
                    uid: Some(format!("uid-{i}")),
                    ..PodFacts::default()
                }),
                polled: Polled::Answered(status(&name, role, 100)),
            }
        })
        .collect()
}

fn uids(observed: &[Observed]) -> BTreeMap<String, String> {
    observed
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.pod.as_ref()?.uid.clone()?)))
        .collect()
}

fn plan_of(observed: &[Observed], recorded: Option<&UpgradeStatus>) -> PlanInput {
    plan_input(
        &UpgradeSpec::default(),
        &BTreeMap::new(),
        Some("new"),
        observed,
        recorded,
        NOW_SECONDS,
    )
}

/// Plans and executes in one go, as the reconcile does.
fn run(
    observed: &[Observed],
    recorded: Option<&UpgradeStatus>,
    paused: bool,
    tweak: impl FnOnce(&mut PlanInput),
) -> (Step, Execution) {
    let mut plan = plan_of(observed, recorded);
    tweak(&mut plan);
    let step = planner::plan(&plan);
    let pod_uids = uids(observed);
    let execution = execute(&ExecInput {
        plan: &plan,
        step: &step,
        pod_uids: &pod_uids,
        paused,
        recorded,
        previous_conditions: &[],
        now: NOW,
    });
    (step, execution)
}

#[test]
fn the_plan_input_carries_the_pods_the_answers_and_the_record() {
    let mut members = observed(["old", "new", "old"]);
    members[2].pod.as_mut().unwrap().waiting_reason = Some("CrashLoopBackOff".into());
    members[1].pod.as_mut().unwrap().restarts_rising = true;
    members[0].pod.as_mut().unwrap().deleting = true;
    let recorded = UpgradeStatus {
        step: "restart-member".into(),
        member: "orders-1".into(),
        commit_index_at_deletion: Some(90),
        started_at: "2026-12-02T21:59:00Z".into(),
        pod_uid: Some("uid-1".into()),
    };
    let annotations: BTreeMap<String, String> = [(
        planner::APPROVE_ANNOTATION.to_string(),
        "orders-0".to_string(),
    )]
    .into_iter()
    .collect();
    let spec = UpgradeSpec {
        strategy: UpgradeStrategy::Supervised,
        ..UpgradeSpec::default()
    };
    let plan = plan_input(
        &spec,
        &annotations,
        Some("new"),
        &members,
        Some(&recorded),
        NOW_SECONDS,
    );
    assert_eq!(plan.strategy, UpgradeStrategy::Supervised);
    assert_eq!(plan.approved_member.as_deref(), Some("orders-0"));
    assert_eq!(plan.update_revision, "new");
    assert_eq!(plan.members[2].ordinal, 2);
    let pods: Vec<_> = plan
        .members
        .iter()
        .map(|m| m.pod.clone().unwrap())
        .collect();
    assert!(pods[0].deleting);
    assert!(
        pods[1].crash_looping,
        "a rising restart count is a crash loop"
    );
    assert!(pods[2].crash_looping);
    assert_eq!(plan.members[0].reported.unwrap().role, Role::Leader);
    let in_progress = plan.in_progress.unwrap();
    assert_eq!(in_progress.kind, StepKind::RestartMember);
    assert_eq!(in_progress.commit_index_seen, Some(90));
    assert_eq!(in_progress.started_at_seconds, NOW_SECONDS - 60);
    // An unreadable record is replanned, not trusted.
    let odd = UpgradeStatus {
        step: "restart-follower".into(),
        ..recorded
    };
    assert_eq!(in_progress_of(&odd), None);
}

#[test]
fn delete_pod_records_the_step_with_the_uid_first() {
    let members = observed(["old", "old", "old"]);
    let (step, out) = run(&members, None, false, |_| {});
    assert!(matches!(step, Step::DeletePod { .. }), "{step:?}");
    let record = out.upgrade.clone().unwrap();
    assert_eq!(record.step, "restart-member");
    assert_eq!(record.member, "orders-1");
    assert_eq!(record.commit_index_at_deletion, Some(100));
    assert_eq!(record.started_at, NOW);
    assert_eq!(record.pod_uid.as_deref(), Some("uid-1"));
    assert_eq!(
        out.action,
        Some(Disruption::DeletePod {
            member: "orders-1".into(),
            uid: "uid-1".into()
        })
    );
    assert_eq!(out.progressing.unwrap().reason, "UpgradeRestartingMember");
    assert_eq!(out.notices.len(), 1);
    assert!(!out.notices[0].warning);
    assert!(out.in_progress);
}

#[test]
fn a_pod_without_a_known_uid_is_not_deleted() {
    let mut members = observed(["old", "old", "old"]);
    for member in &mut members {
        member.pod.as_mut().unwrap().uid = None;
    }
    let (_, out) = run(&members, None, false, |_| {});
    assert_eq!(out.action, None);
    assert_eq!(out.upgrade, None);
    assert_eq!(out.progressing.unwrap().reason, "UpgradeWaiting");
}

fn restart_record(member: &str, uid: &str) -> UpgradeStatus {
    UpgradeStatus {
        step: "restart-member".into(),
        member: member.into(),
        commit_index_at_deletion: Some(100),
        started_at: "2026-12-02T21:59:50Z".into(),
        pod_uid: Some(uid.into()),
    }
}

#[test]
fn a_restarted_operator_deletes_the_recorded_pod_and_no_other() {
    // Recorded, then the operator stopped before the delete: the pod is
    // still there, old and not terminating, with the recorded uid.
    let members = observed(["old", "old", "old"]);
    let recorded = restart_record("orders-2", "uid-2");
    let (_, out) = run(&members, Some(&recorded), false, |_| {});
    assert_eq!(
        out.action,
        Some(Disruption::DeletePod {
            member: "orders-2".into(),
            uid: "uid-2".into()
        })
    );
    assert_eq!(
        out.upgrade.as_ref(),
        Some(&recorded),
        "the record stays as it was"
    );
    assert!(out.notices.is_empty());
}

#[test]
fn a_restart_under_way_waits_without_touching_anything() {
    let mut members = observed(["old", "old", "new"]);
    let recorded = restart_record("orders-2", "uid-2");
    // The new pod: another uid, not Ready yet.
    let pod = members[2].pod.as_mut().unwrap();
    pod.uid = Some("uid-2b".into());
    pod.ready = false;
    members[2].polled = Polled::Silent("connection refused".into());
    let (step, out) = run(&members, Some(&recorded), false, |_| {});
    assert!(
        matches!(
            step,
            Step::Wait {
                reason: WaitReason::RestartNotComplete { .. }
            }
        ),
        "{step:?}"
    );
    assert_eq!(out.action, None);
    assert_eq!(out.upgrade.as_ref(), Some(&recorded));
    let progressing = out.progressing.unwrap();
    assert_eq!(progressing.reason, "RestartNotComplete");
    assert!(progressing.message.contains("orders-2"));
    // The old pod seen terminating: still waiting, no second delete.
    let mut terminating = observed(["old", "old", "old"]);
    terminating[2].pod.as_mut().unwrap().deleting = true;
    let (_, out) = run(&terminating, Some(&recorded), false, |_| {});
    assert_eq!(out.action, None);
}

#[test]
fn a_completed_restart_moves_on_to_the_next_follower() {
    let members = observed(["old", "old", "new"]);
    let mut recorded = restart_record("orders-2", "uid-2");
    recorded.pod_uid = Some("uid-2-old".into());
    let (_, out) = run(&members, Some(&recorded), false, |_| {});
    assert_eq!(
        out.action,
        Some(Disruption::DeletePod {
            member: "orders-1".into(),
            uid: "uid-1".into()
        })
    );
    assert_eq!(out.upgrade.unwrap().member, "orders-1");
}

#[test]
fn the_leaders_turn_records_the_transfer_and_asks_the_leader() {
    let members = observed(["old", "new", "new"]);
    let (step, out) = run(&members, None, false, |_| {});
    assert!(matches!(step, Step::TransferLeadership { .. }), "{step:?}");
    let record = out.upgrade.clone().unwrap();
    assert_eq!(record.step, "transfer-leadership");
    assert_eq!(
        record.member, "orders-1",
        "the most caught-up, lowest ordinal"
    );
    assert_eq!(
        out.action,
        Some(Disruption::Transfer {
            from: "orders-0".into(),
            to: "orders-1".into()
        })
    );
    assert_eq!(
        out.progressing.unwrap().reason,
        "UpgradeTransferringLeadership"
    );
}

#[test]
fn a_transfer_not_done_yet_is_asked_again() {
    let members = observed(["old", "new", "new"]);
    let recorded = UpgradeStatus {
        step: "transfer-leadership".into(),
        member: "orders-1".into(),
        commit_index_at_deletion: None,
        started_at: "2026-12-02T21:59:58Z".into(),
        pod_uid: None,
    };
    let (_, out) = run(&members, Some(&recorded), false, |_| {});
    assert_eq!(
        out.action,
        Some(Disruption::Transfer {
            from: "orders-0".into(),
            to: "orders-1".into()
        })
    );
    assert_eq!(out.upgrade.as_ref(), Some(&recorded));
    assert_eq!(out.progressing.unwrap().reason, "TransferNotComplete");
}

#[test]
fn supervised_waits_for_the_approval_of_that_leader() {
    let members = observed(["old", "new", "new"]);
    let supervised = |plan: &mut PlanInput| plan.strategy = UpgradeStrategy::Supervised;
    let (_, out) = run(&members, None, false, supervised);
    assert_eq!(out.action, None);
    let progressing = out.progressing.unwrap();
    assert_eq!(progressing.reason, "ApprovalNeeded");
    assert!(progressing
        .message
        .contains("dledger.io/upgrade-approve=orders-0"));
    let (_, out) = run(&members, None, false, |plan| {
        plan.strategy = UpgradeStrategy::Supervised;
        plan.approved_member = Some("orders-0".into());
    });
    assert!(matches!(out.action, Some(Disruption::Transfer { .. })));
}

#[test]
fn the_pause_annotation_stops_new_steps_and_says_so() {
    let members = observed(["old", "old", "old"]);
    let (_, out) = run(&members, None, true, |_| {});
    assert_eq!(out.action, None);
    assert_eq!(out.upgrade, None, "nothing recorded while paused");
    let progressing = out.progressing.unwrap();
    assert_eq!(progressing.reason, "UpgradePaused");
    assert!(progressing.message.contains("restart orders-1"));
    // A transfer under way is not retried while paused either.
    let members = observed(["old", "new", "new"]);
    let recorded = UpgradeStatus {
        step: "transfer-leadership".into(),
        member: "orders-1".into(),
        commit_index_at_deletion: None,
        started_at: "2026-12-02T21:59:58Z".into(),
        pod_uid: None,
    };
    let (_, out) = run(&members, Some(&recorded), true, |_| {});
    assert_eq!(out.action, None);
    assert_eq!(out.upgrade.as_ref(), Some(&recorded));
    assert_eq!(out.progressing.unwrap().reason, "UpgradePaused");
}

#[test]
fn a_pause_between_steps_is_recorded() {
    let members = observed(["old", "old", "new"]);
    let mut recorded = restart_record("orders-2", "uid-2-old");
    recorded.started_at = "2026-12-02T21:59:00Z".into();
    let (step, out) = run(&members, Some(&recorded), false, |plan| {
        plan.pause_seconds = 30
    });
    assert_eq!(
        step,
        Step::Pause {
            after: "orders-2".into()
        }
    );
    let record = out.upgrade.unwrap();
    assert_eq!(
        (record.step.as_str(), record.member.as_str()),
        ("pause", "orders-2")
    );
    assert_eq!(record.started_at, NOW);
    assert_eq!(out.action, None);
    assert_eq!(out.progressing.unwrap().reason, "UpgradePausing");
}

#[test]
fn a_timed_out_step_is_degraded_once_and_deletes_nothing() {
    let mut members = observed(["old", "old", "new"]);
    let pod = members[2].pod.as_mut().unwrap();
    pod.uid = Some("uid-2b".into());
    pod.ready = false;
    pod.waiting_reason = Some("CrashLoopBackOff".into());
    members[2].polled = Polled::Silent("connection refused".into());
    let mut recorded = restart_record("orders-2", "uid-2");
    recorded.started_at = "2026-12-02T21:40:00Z".into();
    let (step, out) = run(&members, Some(&recorded), false, |_| {});
    assert!(matches!(step, Step::StepTimedOut { .. }), "{step:?}");
    assert_eq!(out.action, None);
    assert_eq!(out.upgrade.as_ref(), Some(&recorded));
    let degraded = out.degraded.clone().unwrap();
    assert!(degraded.status);
    assert_eq!(degraded.reason, "UpgradeStepTimedOut");
    assert!(
        degraded.message.contains("orders-2") && degraded.message.contains("crash-looping"),
        "{}",
        degraded.message
    );
    let progressing = out.progressing.clone().unwrap();
    assert!(!progressing.status);
    assert_eq!(out.notices.len(), 1);
    assert!(out.notices[0].warning);
    // The next reconcile sees it written and does not announce it again.
    let plan = plan_of(&members, Some(&recorded));
    let step = planner::plan(&plan);
    let previous = [Condition {
        type_: "Degraded".into(),
        status: "True".into(),
        reason: "UpgradeStepTimedOut".into(),
        ..Condition::default()
    }];
    let pod_uids = uids(&members);
    let again = execute(&ExecInput {
        plan: &plan,
        step: &step,
        pod_uids: &pod_uids,
        paused: false,
        recorded: Some(&recorded),
        previous_conditions: &previous,
        now: NOW,
    });
    assert!(again.notices.is_empty());
    assert_eq!(again.action, None);
}

#[test]
fn done_clears_the_record_and_the_approval_and_announces_once() {
    let members = observed(["new", "new", "new"]);
    let recorded = restart_record("orders-0", "uid-0-old");
    let (step, out) = run(&members, Some(&recorded), false, |plan| {
        plan.approved_member = Some("orders-0".into())
    });
    assert_eq!(step, Step::Done);
    assert_eq!(out.upgrade, None);
    assert!(out.remove_approval);
    assert_eq!(out.action, None);
    assert_eq!(out.notices[0].reason, "UpgradeCompleted");
    assert!(!out.in_progress);
    // Nothing recorded, nothing to announce or remove.
    let (_, out) = run(&members, None, false, |_| {});
    assert_eq!(out, Execution::default());
}

#[test]
fn a_member_down_with_nothing_to_upgrade_is_left_to_the_poll() {
    let mut members = observed(["new", "new", "new"]);
    members[2].pod.as_mut().unwrap().ready = false;
    let (step, out) = run(&members, None, false, |_| {});
    assert!(matches!(step, Step::Wait { .. }), "{step:?}");
    assert_eq!(out, Execution::default());
}

#[test]
fn set_condition_replaces_the_type_and_keeps_the_transition_time() {
    let mut status = DLedgerGroupStatus::default();
    let verdict = Verdict::new(true, "UpgradePaused", "paused".into());
    set_condition(&mut status, "Progressing", &verdict, &[], NOW, Some(3));
    assert_eq!(status.conditions.len(), 1);
    let previous = status.conditions.clone();
    let later = Verdict::new(true, "RestartNotComplete", "waiting".into());
    set_condition(
        &mut status,
        "Progressing",
        &later,
        &previous,
        "2026-12-02T22:05:00Z",
        Some(3),
    );
    assert_eq!(status.conditions.len(), 1);
    assert_eq!(status.conditions[0].reason, "RestartNotComplete");
    assert_eq!(status.conditions[0].last_transition_time, NOW);
}
