//! `status`: the resource (and its pods, for members the operator has not
//! reported yet) turned into one view, printed as a table or as JSON.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde::Serialize;

use super::patches::{is_paused, waits_for_approval};
use crate::crd::{
    Condition, ConfigurationStatus, DLedgerGroup, MemberStatus, SwitchoverStatus, UpgradeStatus,
};

/// Everything `status` shows.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// The group's name.
    pub group: String,
    /// Its namespace.
    pub namespace: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `status.leader`.
    pub leader: Option<String>,
    /// `status.term`.
    pub term: u64,
    /// `status.commitIndex`.
    pub commit_index: u64,
    /// The leader's configuration (`status.configuration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration: Option<ConfigurationStatus>,
    /// The step in progress (`status.upgrade`).
    pub upgrade: Option<UpgradeStatus>,
    /// The pause annotation is set.
    pub upgrade_paused: bool,
    /// The upgrade waits for `upgrade proceed`.
    pub waiting_for_approval: bool,
    /// Members not on the update revision.
    pub outdated_members: usize,
    /// `spec.switchover.target`.
    pub switchover_requested: Option<String>,
    /// `status.switchover`.
    pub switchover: Option<SwitchoverStatus>,
    /// `status.conditions`.
    pub conditions: Vec<Condition>,
    /// The members as last polled, then pods the operator has not reported.
    pub members: Vec<MemberStatus>,
}

/// The view of `group`; `pods` are its pods, used for members absent from
/// `status.members` (a group the operator has not polled yet).
pub fn overview(group: &DLedgerGroup, pods: &[Pod]) -> Overview {
    let status = group.status.clone().unwrap_or_default();
    let mut members = status.members.clone();
    let mut unreported: Vec<MemberStatus> = pods
        .iter()
        .filter(|pod| !members.iter().any(|member| member.name == pod.name_any()))
        .map(unreported_member)
        .collect();
    unreported.sort_by(|a, b| a.name.cmp(&b.name));
    members.extend(unreported);
    Overview {
        group: group.name_any(),
        namespace: group.namespace().unwrap_or_default(),
        replicas: group.spec.replicas,
        ready_replicas: status.ready_replicas,
        phase: status.phase,
        leader: status.leader,
        term: status.term,
        commit_index: status.commit_index,
        configuration: status.configuration,
        upgrade: status.upgrade,
        upgrade_paused: is_paused(group),
        waiting_for_approval: waits_for_approval(group),
        outdated_members: status.members.iter().filter(|m| !m.updated).count(),
        switchover_requested: group.spec.switchover.as_ref().map(|s| s.target.clone()),
        switchover: status.switchover,
        conditions: status.conditions,
        members,
    }
}

fn unreported_member(pod: &Pod) -> MemberStatus {
    let ready = pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    MemberStatus {
        name: pod.name_any(),
        answering: false,
        error: Some("not reported by the operator yet".into()),
        ready,
        ..MemberStatus::default()
    }
}

/// The view as pretty JSON (camelCase, like the resource).
pub fn json(view: &Overview) -> String {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_string_pretty(view).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
}

/// The view as header lines, then an aligned table of members, then one
/// line per member that did not answer.
pub fn table(view: &Overview) -> String {
    let mut out = String::new();
    let mut header = |label: &str, value: String| {
        out.push_str(&format!("{:<13}{value}\n", format!("{label}:")));
    };
    header(
        "Group",
        format!(
            "{}/{} ({} replicas, {} ready)",
            view.namespace, view.group, view.replicas, view.ready_replicas
        ),
    );
    header(
        "Phase",
        view.phase
            .clone()
            .unwrap_or_else(|| "(not reported)".into()),
    );
    header(
        "Leader",
        match &view.leader {
            Some(leader) => format!(
                "{leader} (term {}, commit {})",
                view.term, view.commit_index
            ),
            None => "none".into(),
        },
    );
    if let Some(configuration) = &view.configuration {
        let mut line = format!("voters {}", configuration.voters.join(", "));
        if !configuration.learners.is_empty() {
            line.push_str(&format!("; learners {}", configuration.learners.join(", ")));
        }
        header("Members", line);
    }
    header("Upgrade", upgrade_line(view));
    header("Switchover", switchover_line(view));
    for condition in &view.conditions {
        let shown = matches!(condition.type_.as_str(), "Degraded" | "Progressing");
        if shown && condition.status == "True" {
            header(
                &condition.type_,
                format!("{}: {}", condition.reason, condition.message),
            );
        }
    }
    out.push('\n');
    out.push_str(&members_table(&view.members));
    for member in view.members.iter().filter(|m| !m.answering) {
        let error = member.error.as_deref().unwrap_or("no answer");
        out.push_str(&format!("{}: not answering: {error}\n", member.name));
    }
    out
}

fn upgrade_line(view: &Overview) -> String {
    let mut parts = Vec::new();
    if view.upgrade_paused {
        parts.push(format!(
            "paused (kubectl dledger upgrade resume {})",
            view.group
        ));
    }
    if view.waiting_for_approval {
        let leader = view.leader.as_deref().unwrap_or("the leader");
        parts.push(format!(
            "waiting for approval to restart {leader} (kubectl dledger upgrade proceed {})",
            view.group
        ));
    }
    if let Some(step) = &view.upgrade {
        let mut text = format!(
            "in progress: {} {} since {}",
            step.step, step.member, step.started_at
        );
        if let Some(index) = step.commit_index_at_deletion {
            text.push_str(&format!(" (commit index at deletion {index})"));
        }
        parts.push(text);
    }
    if view.outdated_members > 0 {
        parts.push(format!(
            "{} of {} members outdated",
            view.outdated_members,
            view.members.len()
        ));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}

fn switchover_line(view: &Overview) -> String {
    match (&view.switchover, &view.switchover_requested) {
        (Some(done), requested) if requested.as_ref().is_none_or(|r| *r == done.target) => {
            let from = done
                .current
                .as_deref()
                .map(|current| format!(" from {current}"))
                .unwrap_or_default();
            let state = match &done.completed_at {
                Some(at) => format!("completed {at}"),
                None => "in progress".into(),
            };
            format!(
                "to {}{from}, requested {}, {state}",
                done.target, done.requested_at
            )
        }
        (_, Some(requested)) => {
            format!("to {requested} requested, not yet taken up by the operator")
        }
        (_, None) => "none".into(),
    }
}

const COLUMNS: [&str; 9] = [
    "NAME", "ROLE", "TERM", "LAST", "COMMIT", "LAG", "VERSION", "READY", "UPDATED",
];

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.into()
}

fn row(member: &MemberStatus) -> [String; 9] {
    let answered = |value: u64| {
        if member.answering {
            value.to_string()
        } else {
            "-".into()
        }
    };
    [
        member.name.clone(),
        member.role.clone().unwrap_or_else(|| "-".into()),
        answered(member.term),
        answered(member.last_index),
        answered(member.commit_index),
        answered(member.lag),
        member.version.clone().unwrap_or_else(|| "-".into()),
        yes_no(member.ready),
        yes_no(member.updated),
    ]
}

/// The members as a table aligned like kubectl's (three spaces apart).
pub fn members_table(members: &[MemberStatus]) -> String {
    let rows: Vec<[String; 9]> = std::iter::once(COLUMNS.map(String::from))
        .chain(members.iter().map(row))
        .collect();
    let mut widths = [0usize; 9];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    if members.is_empty() {
        out.push_str("(no members reported yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SwitchoverSpec;
    use crate::plugin::patches::tests::{group, waiting_for_approval};
    use crate::plugin::patches::PAUSE_ANNOTATION;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    #[test]
    fn a_healthy_group_prints_its_members_aligned() {
        let view = overview(&group(), &[]);
        assert_eq!(
            table(&view),
            "\
Group:       shop/orders (3 replicas, 3 ready)
Phase:       Running
Leader:      orders-0 (term 7, commit 100)
Upgrade:     none
Switchover:  none

NAME       ROLE       TERM   LAST   COMMIT   LAG   VERSION   READY   UPDATED
orders-0   leader     7      100    100      0     0.1.0     yes     yes
orders-1   follower   7      98     98       2     0.1.0     yes     yes
orders-2   follower   7      100    100      0     0.1.0     yes     yes
"
        );
    }

    #[test]
    fn the_configuration_gets_a_line_with_its_learners() {
        let mut group = group();
        group.status.as_mut().unwrap().configuration = Some(ConfigurationStatus {
            index: 9,
            voters: vec!["orders-0".into(), "orders-1".into(), "orders-2".into()],
            learners: vec!["orders-3#00000000000000ab".into()],
        });
        let text = table(&overview(&group, &[]));
        let line = text.lines().find(|l| l.starts_with("Members:")).unwrap();
        assert_eq!(
            line,
            "Members:     voters orders-0, orders-1, orders-2; learners orders-3#00000000000000ab"
        );
    }

    #[test]
    fn an_upgrade_a_switchover_and_conditions_get_header_lines() {
        let mut group = group();
        waiting_for_approval(&mut group);
        group
            .annotations_mut()
            .insert(PAUSE_ANNOTATION.into(), "true".into());
        group.spec.switchover = Some(SwitchoverSpec {
            target: "orders-2".into(),
        });
        let status = group.status.as_mut().unwrap();
        status.members[0].updated = false;
        status.members[0].version = None;
        status.members[1].answering = false;
        status.members[1].role = None;
        status.members[1].error = Some("timed out".into());
        status.upgrade = Some(UpgradeStatus {
            step: "restart-member".into(),
            member: "orders-1".into(),
            commit_index_at_deletion: Some(90),
            started_at: "2026-12-02T22:00:00Z".into(),
            pod_uid: None,
        });
        status.switchover = Some(SwitchoverStatus {
            target: "orders-2".into(),
            current: Some("orders-0".into()),
            requested_at: "2026-12-02T21:00:00Z".into(),
            completed_at: None,
        });
        status.conditions.push(Condition {
            type_: "Degraded".into(),
            status: "True".into(),
            reason: "StepTimedOut".into(),
            message: "orders-1 not Ready after 600s".into(),
            ..Condition::default()
        });
        status.conditions.push(Condition {
            type_: "Available".into(),
            status: "True".into(),
            reason: "Quorum".into(),
            message: "not shown".into(),
            ..Condition::default()
        });
        let text = table(&overview(&group, &[]));
        let upgrade = text.lines().find(|l| l.starts_with("Upgrade:")).unwrap();
        assert_eq!(
            upgrade,
            "Upgrade:     paused (kubectl dledger upgrade resume orders); \
             waiting for approval to restart orders-0 (kubectl dledger upgrade proceed orders); \
             in progress: restart-member orders-1 since 2026-12-02T22:00:00Z (commit index at deletion 90); \
             1 of 3 members outdated"
        );
        assert!(
            text.contains(
                "Switchover:  to orders-2 from orders-0, requested 2026-12-02T21:00:00Z, in progress\n"
            ),
            "{text}"
        );
        assert!(text.contains("Degraded:    StepTimedOut: orders-1 not Ready after 600s\n"));
        assert!(text.contains("Progressing: ApprovalNeeded: supervised upgrade"));
        assert!(!text.contains("not shown"));
        assert!(
            text.contains(
                "\norders-1   -          -      -      -        -     0.1.0     yes     yes\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\norders-0   leader     7      100    100      0     -         yes     no\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("orders-1: not answering: timed out\n"),
            "{text}"
        );
    }

    #[test]
    fn a_requested_switchover_not_yet_recorded_says_so() {
        let mut group = group();
        group.spec.switchover = Some(SwitchoverSpec {
            target: "orders-1".into(),
        });
        let text = table(&overview(&group, &[]));
        assert!(
            text.contains("Switchover:  to orders-1 requested, not yet taken up by the operator\n")
        );
        group.status.as_mut().unwrap().switchover = Some(SwitchoverStatus {
            target: "orders-2".into(),
            current: None,
            requested_at: "t0".into(),
            completed_at: Some("t1".into()),
        });
        // The record is of an older target: the new request is what matters.
        let text = table(&overview(&group, &[]));
        assert!(
            text.contains("to orders-1 requested, not yet taken up"),
            "{text}"
        );
        group.spec.switchover = None;
        let text = table(&overview(&group, &[]));
        assert!(
            text.contains("Switchover:  to orders-2, requested t0, completed t1\n"),
            "{text}"
        );
    }

    fn pod(name: &str, ready: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    #[test]
    fn pods_not_reported_yet_are_listed_from_the_pods() {
        let mut group = group();
        group.status = None;
        let view = overview(&group, &[pod("orders-1", false), pod("orders-0", true)]);
        assert_eq!(view.members.len(), 2);
        assert_eq!(view.members[0].name, "orders-0");
        assert!(view.members[0].ready);
        let text = table(&view);
        assert!(text.contains("Phase:       (not reported)\n"));
        assert!(text.contains("Leader:      none\n"));
        assert!(text.contains("orders-1: not answering: not reported by the operator yet\n"));
        // A reported member is not listed twice.
        let view = overview(
            &super::super::patches::tests::group(),
            &[pod("orders-0", true)],
        );
        assert_eq!(view.members.len(), 3);
        assert_eq!(
            members_table(&[]).lines().last(),
            Some("(no members reported yet)")
        );
    }

    #[test]
    fn json_uses_the_resource_field_names() {
        let mut group = group();
        waiting_for_approval(&mut group);
        let value: serde_json::Value = serde_json::from_str(&json(&overview(&group, &[]))).unwrap();
        assert_eq!(value["group"], "orders");
        assert_eq!(value["namespace"], "shop");
        assert_eq!(value["leader"], "orders-0");
        assert_eq!(value["commitIndex"], 100);
        assert_eq!(value["waitingForApproval"], true);
        assert_eq!(value["upgradePaused"], false);
        assert_eq!(value["members"][1]["lastIndex"], 98);
        assert_eq!(value["members"][1]["role"], "follower");
        assert_eq!(value["conditions"][0]["reason"], "ApprovalNeeded");
    }
}
