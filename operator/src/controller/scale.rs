//! The membership executor: builds the planner's input from what the
//! reconcile observed, turns its step into the one admin call to make and the
//! `Progressing` verdict, and makes the call on the leader. The deciding is
//! in [`crate::membership::planner`]; this module is the plumbing around it.

use std::time::Duration;

use dledger_replica::admin_client::AdminError;
use dledger_replica::api::{AddMember, Members, Role, Status};

use super::decide::{Notice, Observed};
use super::poll::{Address, Polled};
use super::tls::Access;
use super::upgrade::Verdict;
use crate::membership::planner::{
    self, Change, ConfigMember, Configuration, LeaderView, PeerProgress, Plan, PodView, Removal,
    ScaleInput, Step, WaitReason,
};
use crate::specs::{Group, HTTP_PORT, PEER_PORT};

/// What the membership executor decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleExecution {
    /// The leader, where the call goes.
    pub leader: Option<String>,
    /// The StatefulSet's replicas.
    pub statefulset_replicas: u32,
    /// A change is under way (or waits): upgrades and switchovers hold.
    pub busy: bool,
    /// The `Progressing` verdict while busy.
    pub progressing: Option<Verdict>,
    /// The change to make on the leader, after the status is written.
    pub call: Option<Change>,
}

/// The `Progressing` reason while the membership changes.
pub const SCALING_REASON: &str = "Scaling";

/// Builds the planner's input. `promote_max_lag` is the lag bound members
/// must meet to count as caught up (`spec.upgrade.maxLag`), and the leader
/// must have heard from a member within `contact_max_ms`.
pub fn input(
    group: &Group<'_>,
    observed: &[Observed],
    statefulset_replicas: Option<u32>,
    promote_max_lag: u64,
    contact_max_ms: u64,
) -> ScaleInput {
    let answers: Vec<&Status> = observed
        .iter()
        .filter_map(|member| match &member.polled {
            Polled::Answered(status) if status.group == group.name => Some(status),
            _ => None,
        })
        .collect();
    let leader = answers
        .iter()
        .filter(|status| status.role == Role::Leader)
        .max_by_key(|status| status.term)
        .and_then(|leader| leader_view(leader));
    let pods = observed
        .iter()
        .filter_map(|member| {
            let ordinal = planner::ordinal_of(&group.name, &member.name)?;
            let pod = member.pod.as_ref()?;
            Some(PodView {
                name: member.name.clone(),
                ordinal,
                incarnation: match &member.polled {
                    Polled::Answered(status)
                        if status.group == group.name && status.id == member.name =>
                    {
                        Some(status.incarnation)
                    }
                    _ => None,
                },
                deleting: pod.deleting,
            })
        })
        .collect();
    ScaleInput {
        group: group.name.clone(),
        desired: group.spec.replicas.max(1).unsigned_abs(),
        statefulset_replicas,
        leader,
        pods,
        promote_max_lag,
        contact_max_ms,
    }
}

fn leader_view(leader: &Status) -> Option<LeaderView> {
    let members = leader.configuration.as_deref()?;
    Some(LeaderView {
        name: leader.id.clone(),
        last_index: leader.last_index,
        configuration: configuration(members),
        peers: leader
            .peers
            .iter()
            .map(|peer| PeerProgress {
                name: peer.id.clone(),
                match_index: peer.match_index,
                last_contact_ms: peer.last_contact_ms,
            })
            .collect(),
    })
}

fn configuration(members: &Members) -> Configuration {
    let list = |addresses: &[dledger_replica::api::MemberAddress]| {
        addresses
            .iter()
            .map(|member| ConfigMember {
                name: member.id.clone(),
                incarnation: member.incarnation,
            })
            .collect()
    };
    Configuration {
        index: members.index,
        committed: members.committed,
        voters: list(&members.voters),
        learners: list(&members.learners),
    }
}

/// The call and verdict for `plan`, made on `input`.
pub fn execute(input: &ScaleInput, plan: &Plan) -> ScaleExecution {
    let leader = input.leader.as_ref().map(|leader| leader.name.clone());
    let verdict = |message: String| {
        Some(Verdict {
            status: true,
            reason: SCALING_REASON.to_string(),
            message,
        })
    };
    let call = match &plan.step {
        // Without a leader nothing is known to be out of line; the poll's
        // own conditions say there is no leader.
        Step::Aligned | Step::Wait(WaitReason::NoLeader) => {
            return ScaleExecution {
                leader,
                statefulset_replicas: plan.statefulset_replicas,
                busy: false,
                progressing: None,
                call: None,
            }
        }
        Step::Wait(_) => None,
        Step::Change(change) => Some(change.clone()),
    };
    ScaleExecution {
        leader,
        statefulset_replicas: plan.statefulset_replicas,
        busy: true,
        progressing: verdict(plan.step.to_string()),
        call,
    }
}

/// The Event of a call that went through.
pub fn notice(call: &Change) -> Notice {
    let (reason, note) = match call {
        Change::Add {
            member,
            incarnation,
        } => (
            "MemberAdded",
            format!("added {member} (incarnation {incarnation:016x}) as a learner; it is promoted once caught up"),
        ),
        Change::Promote { member } => (
            "MemberPromoted",
            format!("promoted {member} to voter"),
        ),
        Change::Remove {
            member,
            why: Removal::Replaced { by },
            incarnation,
        } => (
            "MemberReplaced",
            format!(
                "{member} came back with an empty volume as incarnation {by:016x}: removed incarnation {incarnation:016x}, which cannot vote again; the new one is added as a learner and promoted once caught up"
            ),
        ),
        Change::Remove {
            member,
            why: Removal::ScaledDown,
            ..
        } => (
            "MemberRemoved",
            format!("removed {member} from the configuration (spec.replicas shrank); its pod goes next"),
        ),
        Change::Remove {
            member,
            why: Removal::Foreign,
            ..
        } => (
            "MemberRemoved",
            format!("removed {member} from the configuration: it is not one of this group's pods"),
        ),
        Change::Transfer { from, to } => (
            "LeadershipMoved",
            format!("moved leadership from {from} to {to} before removing {from}"),
        ),
    };
    Notice {
        warning: false,
        reason: reason.to_string(),
        note,
    }
}

/// Makes `call` on the leader at `leader`. The replica answers once the
/// change is committed; the error is a sentence for the `Progressing`
/// condition.
pub async fn call(
    group: &Group<'_>,
    access: &Access,
    leader: &Address,
    call: &Change,
    timeout_ms: u64,
) -> Result<(), String> {
    let timeout = Duration::from_millis(timeout_ms);
    let client = access.client(leader, timeout)?;
    let domain = format!("{}.{}.svc", group.peers_service_name(), group.namespace);
    let call = call.clone();
    let what = format!("{call:?}");
    let running = tokio::task::spawn_blocking(move || -> Result<(), AdminError> {
        match call {
            Change::Add {
                member,
                incarnation,
            } => client
                .add_member(&AddMember {
                    address: format!("{member}.{domain}:{PEER_PORT}"),
                    http_address: Some(format!("{member}.{domain}:{HTTP_PORT}")),
                    incarnation: Some(incarnation),
                    id: member,
                })
                .map(drop),
            Change::Promote { member } => client.promote_member(&member).map(drop),
            Change::Remove { member, .. } => client.remove_member(&member).map(drop),
            Change::Transfer { to, .. } => client.transfer_leadership(Some(&to)).map(drop),
        }
    });
    match tokio::time::timeout(timeout + Duration::from_millis(100), running).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(err))) => Err(format!("{what} failed, retrying: {err}")),
        Ok(Err(join)) => Err(format!("{what} failed, retrying: {join}")),
        Err(_) => Err(format!(
            "{what}: no answer within {timeout_ms} ms, retrying"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> ScaleInput {
        ScaleInput {
            group: "orders".into(),
            desired: 3,
            statefulset_replicas: Some(3),
            leader: None,
            pods: vec![],
            promote_max_lag: 10,
            contact_max_ms: 1000,
        }
    }

    fn plan(step: Step) -> Plan {
        Plan {
            statefulset_replicas: 5,
            step,
        }
    }

    #[test]
    fn aligned_and_leaderless_groups_do_not_hold_upgrades() {
        for step in [Step::Aligned, Step::Wait(WaitReason::NoLeader)] {
            let execution = execute(&idle(), &plan(step));
            assert!(!execution.busy);
            assert_eq!(execution.call, None);
            assert_eq!(execution.progressing, None);
            assert_eq!(execution.statefulset_replicas, 5);
        }
    }

    #[test]
    fn a_wait_holds_and_says_why() {
        let execution = execute(
            &idle(),
            &plan(Step::Wait(WaitReason::CatchingUp {
                member: "orders-3".into(),
                lag: 12,
            })),
        );
        assert!(execution.busy);
        assert_eq!(execution.call, None);
        let verdict = execution.progressing.unwrap();
        assert_eq!(verdict.reason, SCALING_REASON);
        assert!(
            verdict.message.contains("12 entries behind"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn a_replacement_is_announced_as_one() {
        let execution = execute(
            &idle(),
            &plan(Step::Change(Change::Remove {
                member: "orders-1".into(),
                incarnation: 0,
                why: Removal::Replaced { by: 0xbeef },
            })),
        );
        let call = execution.call.unwrap();
        let notice = notice(&call);
        assert_eq!(notice.reason, "MemberReplaced");
        assert!(notice.note.contains("empty volume") && notice.note.contains("beef"));
    }
}
