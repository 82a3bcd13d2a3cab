//! What each steering command writes, and the choices it makes first, as
//! pure functions of the resource: no client, no clock (the time is an
//! argument).

use chrono::{DateTime, SecondsFormat, Utc};
use kube::ResourceExt;
use serde_json::{json, Value};

use super::Error;
use crate::crd::{DLedgerGroup, MemberStatus};
pub use crate::upgrade::planner::APPROVE_ANNOTATION;

/// Set to an RFC 3339 time, asks for a rolling restart: the operator copies
/// it into the pod template, which makes a new StatefulSet revision.
pub const RESTARTED_AT_ANNOTATION: &str = "dledger.io/restarted-at";
/// `"true"` pauses a rolling upgrade after the step in progress.
pub const PAUSE_ANNOTATION: &str = "dledger.io/upgrade-pause";
/// The `Progressing` reason of an upgrade waiting for `upgrade proceed`
/// (the planner's `WaitReason::ApprovalNeeded`).
pub const APPROVAL_NEEDED_REASON: &str = "ApprovalNeeded";

/// Merge patch: `spec.switchover.target = member`.
pub fn switchover_patch(member: &str) -> Value {
    json!({"spec": {"switchover": {"target": member}}})
}

/// Merge patch: the restart annotation at `now` (RFC 3339, seconds, `Z`).
pub fn restart_patch(now: DateTime<Utc>) -> Value {
    annotation_patch(
        RESTARTED_AT_ANNOTATION,
        Value::String(now.to_rfc3339_opts(SecondsFormat::Secs, true)),
    )
}

/// Merge patch: pause (`"true"`) or resume (the annotation removed).
pub fn pause_patch(paused: bool) -> Value {
    let value = if paused {
        Value::String("true".into())
    } else {
        Value::Null
    };
    annotation_patch(PAUSE_ANNOTATION, value)
}

/// Merge patch: approve restarting `leader`.
pub fn approve_patch(leader: &str) -> Value {
    annotation_patch(APPROVE_ANNOTATION, Value::String(leader.into()))
}

fn annotation_patch(key: &str, value: Value) -> Value {
    json!({"metadata": {"annotations": {key: value}}})
}

/// Whether the group carries the pause annotation set to `true`.
pub fn is_paused(group: &DLedgerGroup) -> bool {
    group
        .annotations()
        .get(PAUSE_ANNOTATION)
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// Whether the upgrade waits for `upgrade proceed`: the `Progressing`
/// condition is true with reason [`APPROVAL_NEEDED_REASON`].
pub fn waits_for_approval(group: &DLedgerGroup) -> bool {
    group.status.as_ref().is_some_and(|status| {
        status.conditions.iter().any(|condition| {
            condition.type_ == "Progressing"
                && condition.status == "True"
                && condition.reason == APPROVAL_NEEDED_REASON
        })
    })
}

/// The leader `upgrade proceed` approves, or why it refuses.
pub fn approval_target(group: &DLedgerGroup) -> Result<String, Error> {
    let name = group.name_any();
    if !waits_for_approval(group) {
        return Err(Error::NotWaitingForApproval { group: name });
    }
    leader_of(group).ok_or(Error::NoLeader { group: name })
}

fn leader_of(group: &DLedgerGroup) -> Option<String> {
    group
        .status
        .as_ref()
        .and_then(|status| status.leader.clone())
}

fn members(group: &DLedgerGroup) -> &[MemberStatus] {
    group
        .status
        .as_ref()
        .map(|status| status.members.as_slice())
        .unwrap_or_default()
}

/// Whether a member could take leadership now: it answers, is Ready, and
/// follows (a learner cannot vote, a candidate is mid-election).
fn can_lead(member: &MemberStatus) -> bool {
    member.answering && member.ready && member.role.as_deref() == Some("follower")
}

/// The most caught-up Ready follower: the highest `lastIndex`, then the
/// lowest lag, then one already on the update revision, then ordinal order.
pub fn pick_switchover_target(group: &DLedgerGroup) -> Result<String, Error> {
    let name = group.name_any();
    if leader_of(group).is_none() {
        return Err(Error::NoLeader { group: name });
    }
    members(group)
        .iter()
        .filter(|member| can_lead(member))
        .min_by(|a, b| {
            b.last_index
                .cmp(&a.last_index)
                .then(a.lag.cmp(&b.lag))
                .then(b.updated.cmp(&a.updated))
                .then(ordinal(&a.name).cmp(&ordinal(&b.name)))
        })
        .map(|member| member.name.clone())
        .ok_or(Error::NoSwitchoverCandidate { group: name })
}

fn ordinal(member: &str) -> u32 {
    member
        .rsplit('-')
        .next()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(u32::MAX)
}

/// What `switchover` should do about a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchoverPlan {
    /// Patch `spec.switchover.target` to this member.
    Request(String),
    /// This member leads already: nothing to write.
    AlreadyLeads(String),
}

/// Checks `--to` (or picks a target without it) against the resource.
pub fn plan_switchover(group: &DLedgerGroup, to: Option<&str>) -> Result<SwitchoverPlan, Error> {
    let name = group.name_any();
    let Some(target) = to else {
        return pick_switchover_target(group).map(SwitchoverPlan::Request);
    };
    let expected: Vec<String> = (0..group.spec.replicas.max(0))
        .map(|ordinal| format!("{name}-{ordinal}"))
        .collect();
    if !expected.iter().any(|member| member == target) {
        return Err(Error::UnknownMember {
            group: name,
            member: target.to_string(),
            members: expected.join(", "),
        });
    }
    let Some(leader) = leader_of(group) else {
        return Err(Error::NoLeader { group: name });
    };
    if leader == target {
        return Ok(SwitchoverPlan::AlreadyLeads(leader));
    }
    match members(group).iter().find(|member| member.name == target) {
        Some(member) if can_lead(member) => Ok(SwitchoverPlan::Request(target.to_string())),
        Some(member) => Err(Error::MemberCannotLead {
            member: target.to_string(),
            why: cannot_lead_because(member),
        }),
        None => Err(Error::MemberCannotLead {
            member: target.to_string(),
            why: "the operator has not reported it yet".into(),
        }),
    }
}

fn cannot_lead_because(member: &MemberStatus) -> String {
    if !member.answering {
        let error = member.error.as_deref().unwrap_or("no answer");
        format!("it does not answer /status ({error})")
    } else if !member.ready {
        "its pod is not Ready".into()
    } else {
        format!(
            "it is {}, not a follower",
            member.role.as_deref().unwrap_or("of no known role")
        )
    }
}

/// Whether the switchover to `target` has happened: the operator recorded
/// it complete and the target leads (a completion left from an earlier
/// switchover to the same member does not count while another leads).
pub fn switchover_done(group: &DLedgerGroup, target: &str) -> bool {
    let Some(status) = group.status.as_ref() else {
        return false;
    };
    let recorded = status
        .switchover
        .as_ref()
        .is_some_and(|switchover| switchover.target == target && switchover.completed_at.is_some());
    recorded && status.leader.as_deref() == Some(target)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{Condition, DLedgerGroupStatus, SwitchoverStatus};
    use chrono::TimeZone;

    pub(crate) fn member(name: &str, role: &str, last_index: u64, lag: u64) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            answering: true,
            role: Some(role.into()),
            term: 7,
            last_index,
            commit_index: last_index,
            lag,
            version: Some("0.1.0".into()),
            ready: true,
            updated: true,
            ..MemberStatus::default()
        }
    }

    /// `orders` in `shop`, three members, `orders-0` leading.
    pub(crate) fn group() -> DLedgerGroup {
        let spec = serde_json::from_value(
            json!({"replicas": 3, "image": "localhost/dledger-replica:dev", "storage": {"size": "1Gi"}}),
        )
        .unwrap();
        let mut group = DLedgerGroup::new("orders", spec);
        group.metadata.namespace = Some("shop".into());
        group.status = Some(DLedgerGroupStatus {
            phase: Some("Running".into()),
            leader: Some("orders-0".into()),
            term: 7,
            commit_index: 100,
            ready_replicas: 3,
            members: vec![
                member("orders-0", "leader", 100, 0),
                member("orders-1", "follower", 98, 2),
                member("orders-2", "follower", 100, 0),
            ],
            ..DLedgerGroupStatus::default()
        });
        group
    }

    fn status(group: &mut DLedgerGroup) -> &mut DLedgerGroupStatus {
        group.status.as_mut().unwrap()
    }

    pub(crate) fn waiting_for_approval(group: &mut DLedgerGroup) {
        status(group).conditions.push(Condition {
            type_: "Progressing".into(),
            status: "True".into(),
            reason: APPROVAL_NEEDED_REASON.into(),
            message: format!(
                "supervised upgrade: annotate the resource {APPROVE_ANNOTATION}=orders-0 to restart the leader"
            ),
            last_transition_time: "2026-12-02T22:00:00Z".into(),
            observed_generation: None,
        });
    }

    #[test]
    fn the_patches_are_merge_patches_of_one_field() {
        assert_eq!(
            switchover_patch("orders-1"),
            json!({"spec": {"switchover": {"target": "orders-1"}}})
        );
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 22, 5, 9).unwrap();
        assert_eq!(
            restart_patch(now),
            json!({"metadata": {"annotations": {"dledger.io/restarted-at": "2026-12-02T22:05:09Z"}}})
        );
        assert_eq!(
            pause_patch(true),
            json!({"metadata": {"annotations": {"dledger.io/upgrade-pause": "true"}}})
        );
        assert_eq!(
            pause_patch(false),
            json!({"metadata": {"annotations": {"dledger.io/upgrade-pause": null}}})
        );
        assert_eq!(
            approve_patch("orders-0"),
            json!({"metadata": {"annotations": {"dledger.io/upgrade-approve": "orders-0"}}})
        );
    }

    #[test]
    fn the_most_caught_up_ready_follower_is_picked() {
        let mut group = group();
        assert_eq!(pick_switchover_target(&group).unwrap(), "orders-2");
        // Equal indexes: the lower lag, then the updated one, then the lower ordinal.
        status(&mut group).members[1].last_index = 100;
        status(&mut group).members[1].lag = 0;
        assert_eq!(pick_switchover_target(&group).unwrap(), "orders-1");
        status(&mut group).members[1].updated = false;
        assert_eq!(pick_switchover_target(&group).unwrap(), "orders-2");
        // Not Ready, not answering, a learner: never picked.
        status(&mut group).members[2].ready = false;
        assert_eq!(pick_switchover_target(&group).unwrap(), "orders-1");
        status(&mut group).members[1].answering = false;
        assert_eq!(
            pick_switchover_target(&group),
            Err(Error::NoSwitchoverCandidate {
                group: "orders".into()
            })
        );
        status(&mut group).members[1] = member("orders-1", "learner", 500, 0);
        assert!(pick_switchover_target(&group).is_err());
    }

    #[test]
    fn no_leader_no_switchover() {
        let mut group = group();
        status(&mut group).leader = None;
        let no_leader = Error::NoLeader {
            group: "orders".into(),
        };
        assert_eq!(pick_switchover_target(&group), Err(no_leader.clone()));
        assert_eq!(plan_switchover(&group, None), Err(no_leader.clone()));
        assert_eq!(
            plan_switchover(&group, Some("orders-1")),
            Err(no_leader.clone())
        );
        group.status = None;
        assert_eq!(pick_switchover_target(&group), Err(no_leader));
    }

    #[test]
    fn to_must_name_a_member_that_can_lead() {
        let mut group = group();
        assert_eq!(
            plan_switchover(&group, Some("orders-1")),
            Ok(SwitchoverPlan::Request("orders-1".into()))
        );
        assert_eq!(
            plan_switchover(&group, Some("orders-0")),
            Ok(SwitchoverPlan::AlreadyLeads("orders-0".into()))
        );
        assert_eq!(
            plan_switchover(&group, Some("orders-3")),
            Err(Error::UnknownMember {
                group: "orders".into(),
                member: "orders-3".into(),
                members: "orders-0, orders-1, orders-2".into(),
            })
        );
        assert!(plan_switchover(&group, Some("payments-1")).is_err());
        status(&mut group).members[1].ready = false;
        let err = plan_switchover(&group, Some("orders-1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "orders-1 cannot take leadership now: its pod is not Ready"
        );
        status(&mut group).members[1].answering = false;
        status(&mut group).members[1].error = Some("connection refused".into());
        let err = plan_switchover(&group, Some("orders-1")).unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
        status(&mut group).members.truncate(1);
        let err = plan_switchover(&group, Some("orders-2")).unwrap_err();
        assert!(err.to_string().contains("not reported"), "{err}");
    }

    #[test]
    fn proceed_needs_a_waiting_upgrade_and_a_leader() {
        let mut group = group();
        assert_eq!(
            approval_target(&group),
            Err(Error::NotWaitingForApproval {
                group: "orders".into()
            })
        );
        waiting_for_approval(&mut group);
        assert_eq!(approval_target(&group).unwrap(), "orders-0");
        status(&mut group).leader = None;
        assert_eq!(
            approval_target(&group),
            Err(Error::NoLeader {
                group: "orders".into()
            })
        );
        // A false or other Progressing condition is not a wait for approval.
        let mut group = super::tests::group();
        waiting_for_approval(&mut group);
        status(&mut group).conditions[0].status = "False".into();
        assert!(!waits_for_approval(&group));
    }

    #[test]
    fn pause_is_read_from_the_annotation() {
        let mut group = group();
        assert!(!is_paused(&group));
        group
            .annotations_mut()
            .insert(PAUSE_ANNOTATION.into(), "true".into());
        assert!(is_paused(&group));
        group
            .annotations_mut()
            .insert(PAUSE_ANNOTATION.into(), "false".into());
        assert!(!is_paused(&group));
    }

    #[test]
    fn a_switchover_is_done_when_recorded_and_the_target_leads() {
        let mut group = group();
        assert!(!switchover_done(&group, "orders-2"));
        status(&mut group).switchover = Some(SwitchoverStatus {
            target: "orders-2".into(),
            current: Some("orders-0".into()),
            requested_at: "2026-12-02T22:00:00Z".into(),
            completed_at: None,
        });
        assert!(!switchover_done(&group, "orders-2"));
        status(&mut group).leader = Some("orders-2".into());
        assert!(!switchover_done(&group, "orders-2"));
        status(&mut group).switchover.as_mut().unwrap().completed_at =
            Some("2026-12-02T22:00:01Z".into());
        assert!(switchover_done(&group, "orders-2"));
        assert!(!switchover_done(&group, "orders-1"));
        // An old completion while another member leads does not count.
        status(&mut group).leader = Some("orders-0".into());
        assert!(!switchover_done(&group, "orders-2"));
    }
}
