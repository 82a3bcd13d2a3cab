//! The pure part of a reconcile: from what the pods and the members said,
//! the new status, the role labels to set and the Events to emit. No client,
//! no clock (the time comes in as a string), so every case is a unit test.

use dledger_replica::api::peer_name_of;
use dledger_replica::api::{MemberAddress, Members, Role, Status};

use super::poll::Polled;
use crate::crd::{Condition, ConfigurationStatus, DLedgerGroupStatus, MemberStatus};

/// The role label of a pod whose member did not answer.
pub const UNKNOWN_ROLE: &str = "unknown";

/// Container waiting reasons that mean the image will not run by itself.
pub const STUCK_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Whether an Event reason is one of the poll's troubles (the `Degraded`
/// reasons only the operator can see).
pub fn is_trouble_reason(reason: &str) -> bool {
    matches!(reason, "MembersDisagree" | "ImageNotStarting")
}

/// What the operator knows about one expected member.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The member id (pod name).
    pub name: String,
    /// Its pod, if the pod exists.
    pub pod: Option<PodFacts>,
    /// Its answer to `/status`.
    pub polled: Polled,
}

/// The facts of a member's pod the decisions need.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PodFacts {
    /// The pod's Ready condition.
    pub ready: bool,
    /// The `dledger.io/role` label it carries now.
    pub role_label: Option<String>,
    /// `controller-revision-hash`.
    pub revision: Option<String>,
    /// The replica container's waiting reason, if it waits.
    pub waiting_reason: Option<String>,
    /// The message that came with it.
    pub waiting_message: Option<String>,
    /// The pod's uid (the precondition of a deletion).
    pub uid: Option<String>,
    /// It has a deletion timestamp.
    pub deleting: bool,
    /// The replica container's restart count went up since the last poll.
    pub restarts_rising: bool,
}

/// The inputs of one decision besides the members.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts<'a> {
    /// The group's name (every member must report it).
    pub group: &'a str,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `spec.replicas`.
    pub replicas: i32,
    /// The StatefulSet's current and update revisions.
    pub current_revision: Option<String>,
    /// Pods on another revision are outdated.
    pub update_revision: Option<String>,
    /// The status written last time.
    pub previous: &'a DLedgerGroupStatus,
    /// Now, RFC 3339.
    pub now: &'a str,
}

/// An Event to publish about the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// A sentence for a person.
    pub note: String,
}

/// What a reconcile should do after a poll.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write.
    pub status: DLedgerGroupStatus,
    /// Pods whose role label must change: (pod, new role).
    pub labels: Vec<(String, String)>,
    /// Events to emit.
    pub notices: Vec<Notice>,
}

/// A problem only the operator can see, most serious first.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Trouble {
    reason: &'static str,
    message: String,
}

/// Decides the status, labels and Events from one round of observations.
pub fn decide(facts: &Facts<'_>, observed: &[Observed]) -> Decision {
    let answers: Vec<&Status> = observed
        .iter()
        .filter_map(|member| match &member.polled {
            Polled::Answered(status) => Some(status),
            Polled::Silent(_) => None,
        })
        .collect();
    let leader = leader_of(&answers);
    let term = answers.iter().map(|s| s.term).max().unwrap_or(0);
    let commit_index = match leader {
        Some(leader) => leader.commit_index,
        None => answers.iter().map(|s| s.commit_index).max().unwrap_or(0),
    };
    let members = member_statuses(facts, observed, commit_index);
    let ready_replicas = members.iter().filter(|m| m.ready).count() as i32;
    let answering = members.iter().filter(|m| m.answering).count() as i32;
    let majority = facts.replicas / 2 + 1;
    let available = leader.is_some() && answering >= majority;
    let troubles = troubles(facts, observed, &answers);
    let degraded = troubles.first();

    let conditions = vec![
        available_condition(facts, leader, answering, majority),
        progressing_condition(facts, &members, ready_replicas),
        degraded_condition(facts, degraded),
    ];
    let phase = phase(facts, leader.is_some(), available, degraded, &members);
    let status = DLedgerGroupStatus {
        phase: Some(phase.to_string()),
        leader: leader.map(|s| s.id.clone()),
        term,
        commit_index,
        ready_replicas,
        members,
        configuration: leader
            .and_then(|leader| leader.configuration.as_deref())
            .map(configuration_status),
        current_revision: facts.current_revision.clone(),
        update_revision: facts.update_revision.clone(),
        // Owned by the upgrade planner: carried over untouched.
        upgrade: facts.previous.upgrade.clone(),
        switchover: facts.previous.switchover.clone(),
        conditions: conditions
            .into_iter()
            .map(|condition| keep_transition_time(condition, &facts.previous.conditions))
            .collect(),
        observed_generation: facts.generation,
    };
    let notices = notices(facts.previous, &status, degraded);
    Decision {
        labels: labels(observed),
        status,
        notices,
    }
}

/// The leader's configuration for `status.configuration`.
fn configuration_status(members: &Members) -> ConfigurationStatus {
    let names = |list: &[MemberAddress]| {
        let mut names: Vec<String> = list
            .iter()
            .map(|member| peer_name_of(&member.id, member.incarnation))
            .collect();
        names.sort();
        names
    };
    ConfigurationStatus {
        index: members.index,
        voters: names(&members.voters),
        learners: names(&members.learners),
    }
}

/// The leader: the member that says it leads, in the highest such term.
fn leader_of<'a>(answers: &[&'a Status]) -> Option<&'a Status> {
    answers
        .iter()
        .copied()
        .filter(|status| status.role == Role::Leader)
        .max_by_key(|status| status.term)
}

fn member_statuses(
    facts: &Facts<'_>,
    observed: &[Observed],
    commit_index: u64,
) -> Vec<MemberStatus> {
    observed
        .iter()
        .map(|member| {
            let pod = member.pod.as_ref();
            let updated = match (
                pod.and_then(|p| p.revision.as_ref()),
                &facts.update_revision,
            ) {
                (Some(revision), Some(update)) => revision == update,
                _ => false,
            };
            let base = MemberStatus {
                name: member.name.clone(),
                ready: pod.is_some_and(|p| p.ready),
                updated,
                ..MemberStatus::default()
            };
            match &member.polled {
                Polled::Answered(status) => MemberStatus {
                    answering: true,
                    role: Some(status.role.as_str().to_string()),
                    term: status.term,
                    last_index: status.last_index,
                    commit_index: status.commit_index,
                    lag: commit_index.saturating_sub(status.last_index),
                    version: Some(status.version.clone()),
                    certificate_not_after: status
                        .certificate_not_after_s
                        .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
                        .map(|at| at.to_string()),
                    ..base
                },
                Polled::Silent(reason) => MemberStatus {
                    answering: false,
                    error: Some(reason.clone()),
                    ..base
                },
            }
        })
        .collect()
}

/// What only the operator can find out, most serious first.
fn troubles(facts: &Facts<'_>, observed: &[Observed], answers: &[&Status]) -> Vec<Trouble> {
    let mut found = Vec::new();
    for status in answers {
        if status.group != facts.group {
            found.push(Trouble {
                reason: "MembersDisagree",
                message: format!(
                    "member {} reports group {:?}, not {:?}",
                    status.id, status.group, facts.group
                ),
            });
        }
    }
    for member in observed {
        if let Polled::Answered(status) = &member.polled {
            if status.id != member.name {
                found.push(Trouble {
                    reason: "MembersDisagree",
                    message: format!("pod {} answers as member {}", member.name, status.id),
                });
            }
        }
    }
    let leaders: Vec<&&Status> = answers.iter().filter(|s| s.role == Role::Leader).collect();
    for (i, a) in leaders.iter().enumerate() {
        for b in &leaders[i + 1..] {
            if a.term == b.term {
                found.push(Trouble {
                    reason: "MembersDisagree",
                    message: format!("{} and {} both lead in term {}", a.id, b.id, a.term),
                });
            }
        }
    }
    for member in observed {
        let Some(pod) = &member.pod else { continue };
        if let Some(reason) = &pod.waiting_reason {
            if STUCK_REASONS.contains(&reason.as_str()) {
                found.push(Trouble {
                    reason: "ImageNotStarting",
                    message: format!(
                        "{}: {reason}{}",
                        member.name,
                        pod.waiting_message
                            .as_ref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                });
            }
        }
    }
    for member in observed {
        // A member whose pod is not there yet is starting, not failing.
        if let (Some(_), Polled::Silent(reason)) = (&member.pod, &member.polled) {
            found.push(Trouble {
                reason: "MemberNotAnswering",
                message: format!("{} does not answer /status: {reason}", member.name),
            });
        }
    }
    found
}

fn condition(
    facts: &Facts<'_>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: facts.now.to_string(),
        observed_generation: facts.generation,
    }
}

fn available_condition(
    facts: &Facts<'_>,
    leader: Option<&Status>,
    answering: i32,
    majority: i32,
) -> Condition {
    match leader {
        Some(leader) if answering >= majority => condition(
            facts,
            "Available",
            true,
            "QuorumAvailable",
            format!(
                "{} leads in term {}; {answering} of {} members answer",
                leader.id, leader.term, facts.replicas
            ),
        ),
        Some(_) => condition(
            facts,
            "Available",
            false,
            "QuorumLost",
            format!(
                "only {answering} of {} members answer, {majority} needed",
                facts.replicas
            ),
        ),
        None => condition(
            facts,
            "Available",
            false,
            "NoLeader",
            format!("no member leads; {answering} of {} answer", facts.replicas),
        ),
    }
}

fn progressing_condition(
    facts: &Facts<'_>,
    members: &[MemberStatus],
    ready_replicas: i32,
) -> Condition {
    let outdated = members.iter().filter(|m| !m.updated).count();
    if ready_replicas < facts.replicas {
        condition(
            facts,
            "Progressing",
            true,
            "MembersNotReady",
            format!("{ready_replicas} of {} members ready", facts.replicas),
        )
    } else if outdated > 0 && facts.update_revision.is_some() {
        condition(
            facts,
            "Progressing",
            true,
            "MembersOutdated",
            format!("{outdated} members not on the update revision"),
        )
    } else {
        condition(
            facts,
            "Progressing",
            false,
            "AllMembersReady",
            format!("all {} members ready and up to date", facts.replicas),
        )
    }
}

fn degraded_condition(facts: &Facts<'_>, trouble: Option<&Trouble>) -> Condition {
    match trouble {
        Some(trouble) => condition(
            facts,
            "Degraded",
            true,
            trouble.reason,
            trouble.message.clone(),
        ),
        None => condition(
            facts,
            "Degraded",
            false,
            "AllMembersHealthy",
            "every member answers and agrees".to_string(),
        ),
    }
}

fn phase(
    facts: &Facts<'_>,
    has_leader: bool,
    available: bool,
    trouble: Option<&Trouble>,
    members: &[MemberStatus],
) -> &'static str {
    let ever_led = facts.previous.leader.is_some()
        || matches!(
            facts.previous.phase.as_deref(),
            Some("Running" | "Degraded" | "NoQuorum")
        );
    match trouble {
        Some(t) if t.reason != "MemberNotAnswering" => "Degraded",
        _ if !has_leader && ever_led => "NoQuorum",
        _ if !has_leader => "Creating",
        _ if !available => "NoQuorum",
        Some(_) => "Degraded",
        None if members.iter().all(|m| m.ready) => "Running",
        None => "Creating",
    }
}

/// A condition keeps its transition time while its status does not change.
pub fn keep_transition_time(mut condition: Condition, previous: &[Condition]) -> Condition {
    if let Some(before) = previous.iter().find(|c| c.type_ == condition.type_) {
        if before.status == condition.status {
            condition.last_transition_time = before.last_transition_time.clone();
        }
    }
    condition
}

fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn notices(
    previous: &DLedgerGroupStatus,
    now: &DLedgerGroupStatus,
    trouble: Option<&Trouble>,
) -> Vec<Notice> {
    let mut out = Vec::new();
    if now.leader.is_some() && now.leader != previous.leader {
        out.push(Notice {
            warning: false,
            reason: "LeaderElected".into(),
            note: format!(
                "{} leads in term {} (was {})",
                now.leader.as_deref().unwrap_or("-"),
                now.term,
                previous.leader.as_deref().unwrap_or("none")
            ),
        });
    }
    let was_available = find(&previous.conditions, "Available").map(|c| c.status == "True");
    let is_available = find(&now.conditions, "Available").is_some_and(|c| c.status == "True");
    match (was_available, is_available) {
        (Some(true), false) => out.push(Notice {
            warning: true,
            reason: "QuorumLost".into(),
            note: find(&now.conditions, "Available")
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        }),
        (Some(false), true)
            if previous.leader.is_some() || previous.phase.as_deref() == Some("NoQuorum") =>
        {
            out.push(Notice {
                warning: false,
                reason: "QuorumRegained".into(),
                note: find(&now.conditions, "Available")
                    .map(|c| c.message.clone())
                    .unwrap_or_default(),
            })
        }
        _ => {}
    }
    for member in &now.members {
        let was_answering = previous
            .members
            .iter()
            .find(|m| m.name == member.name)
            .is_some_and(|m| m.answering);
        if was_answering && !member.answering {
            out.push(Notice {
                warning: true,
                reason: "MemberNotAnswering".into(),
                note: format!(
                    "{} stopped answering /status: {}",
                    member.name,
                    member.error.as_deref().unwrap_or("")
                ),
            });
        }
    }
    if let Some(trouble) = trouble.filter(|t| t.reason != "MemberNotAnswering") {
        let before = find(&previous.conditions, "Degraded");
        if before.is_none_or(|c| c.status != "True" || c.reason != trouble.reason) {
            out.push(Notice {
                warning: true,
                reason: trouble.reason.into(),
                note: trouble.message.clone(),
            });
        }
    }
    out
}

/// The role label every pod should carry, where it differs from what it has.
fn labels(observed: &[Observed]) -> Vec<(String, String)> {
    observed
        .iter()
        .filter_map(|member| {
            let pod = member.pod.as_ref()?;
            let role = match &member.polled {
                Polled::Answered(status) => status.role.as_str(),
                Polled::Silent(_) => UNKNOWN_ROLE,
            };
            (pod.role_label.as_deref() != Some(role))
                .then(|| (member.name.clone(), role.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, role: Role, term: u64, last_index: u64, commit_index: u64) -> Status {
        Status {
            group: "orders".into(),
            id: id.into(),
            version: "0.1.0".into(),
            role,
            term,
            leader_id: (role == Role::Leader).then(|| id.to_string()),
            first_index: 1,
            last_index,
            last_term: term,
            commit_index,
            peers: vec![],
            leader_commit_index: None,
            lag: 0,
            configuration: None,
            incarnation: 0,
            group_id: String::new(),
            certificate_not_after_s: None,
        }
    }

    fn member(name: &str, polled: Polled, role_label: Option<&str>) -> Observed {
        Observed {
            name: name.into(),
            pod: Some(PodFacts {
                ready: matches!(polled, Polled::Answered(_)),
                role_label: role_label.map(str::to_string),
                revision: Some("rev-1".into()),
                ..PodFacts::default()
            }),
            polled,
        }
    }

    fn facts<'a>(previous: &'a DLedgerGroupStatus) -> Facts<'a> {
        Facts {
            group: "orders",
            generation: Some(4),
            replicas: 3,
            current_revision: Some("rev-1".into()),
            update_revision: Some("rev-1".into()),
            previous,
            now: "2026-12-01T22:00:00Z",
        }
    }

    fn healthy() -> Vec<Observed> {
        vec![
            member(
                "orders-0",
                Polled::Answered(status("orders-0", Role::Leader, 2, 100, 100)),
                Some("leader"),
            ),
            member(
                "orders-1",
                Polled::Answered(status("orders-1", Role::Follower, 2, 98, 98)),
                Some("follower"),
            ),
            member(
                "orders-2",
                Polled::Answered(status("orders-2", Role::Follower, 2, 100, 100)),
                Some("follower"),
            ),
        ]
    }

    fn condition_of<'a>(status: &'a DLedgerGroupStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_healthy_group_is_running_and_needs_no_label() {
        let previous = DLedgerGroupStatus::default();
        let decision = decide(&facts(&previous), &healthy());
        let status = &decision.status;
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.leader.as_deref(), Some("orders-0"));
        assert_eq!(
            (status.term, status.commit_index, status.ready_replicas),
            (2, 100, 3)
        );
        assert_eq!(status.members[1].lag, 2);
        assert_eq!(status.members[1].role.as_deref(), Some("follower"));
        assert!(status.members.iter().all(|m| m.updated && m.answering));
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(condition_of(status, "Available").status, "True");
        assert_eq!(condition_of(status, "Progressing").status, "False");
        assert_eq!(condition_of(status, "Degraded").status, "False");
        assert!(decision.labels.is_empty());
        // The first leader is news.
        assert_eq!(
            decision
                .notices
                .iter()
                .map(|n| n.reason.as_str())
                .collect::<Vec<_>>(),
            ["LeaderElected"]
        );
    }

    #[test]
    fn the_certificate_a_member_serves_is_reported_with_its_end() {
        let previous = DLedgerGroupStatus::default();
        let mut observed = healthy();
        if let Polled::Answered(status) = &mut observed[1].polled {
            status.certificate_not_after_s = Some(1_798_761_600);
        }
        let status = decide(&facts(&previous), &observed).status;
        assert_eq!(
            status.members[1].certificate_not_after.as_deref(),
            Some("2027-01-01T00:00:00Z")
        );
        assert_eq!(status.members[0].certificate_not_after, None);
    }

    #[test]
    fn a_new_leader_is_labelled_and_announced_and_the_dead_one_unlabelled() {
        let previous = decide(&facts(&DLedgerGroupStatus::default()), &healthy()).status;
        let observed = vec![
            member(
                "orders-0",
                Polled::Silent("connection refused".into()),
                Some("leader"),
            ),
            member(
                "orders-1",
                Polled::Answered(status("orders-1", Role::Leader, 3, 101, 101)),
                Some("follower"),
            ),
            member(
                "orders-2",
                Polled::Answered(status("orders-2", Role::Follower, 3, 101, 101)),
                Some("follower"),
            ),
        ];
        let decision = decide(&facts(&previous), &observed);
        assert_eq!(
            decision.labels,
            [
                ("orders-0".to_string(), UNKNOWN_ROLE.to_string()),
                ("orders-1".to_string(), "leader".to_string())
            ]
        );
        let status = &decision.status;
        assert_eq!(status.leader.as_deref(), Some("orders-1"));
        assert_eq!(status.phase.as_deref(), Some("Degraded"));
        assert!(!status.members[0].answering);
        assert_eq!(
            status.members[0].error.as_deref(),
            Some("connection refused")
        );
        assert_eq!(condition_of(status, "Available").status, "True");
        assert_eq!(
            condition_of(status, "Degraded").reason,
            "MemberNotAnswering"
        );
        let reasons: Vec<&str> = decision.notices.iter().map(|n| n.reason.as_str()).collect();
        assert_eq!(reasons, ["LeaderElected", "MemberNotAnswering"]);
        assert!(decision.notices[0].note.contains("was orders-0"));
    }

    #[test]
    fn losing_and_regaining_quorum_are_announced_once() {
        let running = decide(&facts(&DLedgerGroupStatus::default()), &healthy()).status;
        let lost = vec![
            member("orders-0", Polled::Silent("timeout".into()), Some("leader")),
            member(
                "orders-1",
                Polled::Silent("timeout".into()),
                Some("follower"),
            ),
            member(
                "orders-2",
                Polled::Answered(status("orders-2", Role::Candidate, 5, 100, 100)),
                Some("follower"),
            ),
        ];
        let decision = decide(&facts(&running), &lost);
        assert_eq!(decision.status.phase.as_deref(), Some("NoQuorum"));
        assert_eq!(decision.status.leader, None);
        assert_eq!(
            condition_of(&decision.status, "Available").reason,
            "NoLeader"
        );
        assert!(decision
            .notices
            .iter()
            .any(|n| n.reason == "QuorumLost" && n.warning));
        let again = decide(&facts(&decision.status), &lost);
        assert!(
            !again.notices.iter().any(|n| n.reason == "QuorumLost"),
            "announced twice: {:?}",
            again.notices
        );
        // The transition time stays while the status does not change.
        assert_eq!(
            condition_of(&again.status, "Available").last_transition_time,
            condition_of(&decision.status, "Available").last_transition_time
        );
        let regained = decide(&facts(&again.status), &healthy());
        assert!(regained
            .notices
            .iter()
            .any(|n| n.reason == "QuorumRegained"));
    }

    #[test]
    fn a_new_group_is_creating_without_alarms() {
        let observed = vec![
            Observed {
                name: "orders-0".into(),
                pod: None,
                polled: Polled::Silent("no pod".into()),
            },
            Observed {
                name: "orders-1".into(),
                pod: None,
                polled: Polled::Silent("no pod".into()),
            },
            Observed {
                name: "orders-2".into(),
                pod: None,
                polled: Polled::Silent("no pod".into()),
            },
        ];
        let decision = decide(&facts(&DLedgerGroupStatus::default()), &observed);
        assert_eq!(decision.status.phase.as_deref(), Some("Creating"));
        assert_eq!(condition_of(&decision.status, "Degraded").status, "False");
        assert_eq!(
            condition_of(&decision.status, "Progressing").reason,
            "MembersNotReady"
        );
        assert!(decision.notices.is_empty());
        assert!(decision.labels.is_empty(), "no pod, no label");
    }

    #[test]
    fn an_image_that_never_starts_is_degraded_with_a_reason() {
        let mut observed: Vec<Observed> = (0..3)
            .map(|i| member(&format!("orders-{i}"), Polled::Silent("no IP".into()), None))
            .collect();
        for member in &mut observed {
            let pod = member.pod.as_mut().unwrap();
            pod.waiting_reason = Some("ImagePullBackOff".into());
            pod.waiting_message = Some("pull access denied".into());
        }
        let decision = decide(&facts(&DLedgerGroupStatus::default()), &observed);
        let degraded = condition_of(&decision.status, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ImageNotStarting")
        );
        assert!(degraded.message.contains("pull access denied"));
        assert_eq!(decision.status.phase.as_deref(), Some("Degraded"));
        assert_eq!(decision.notices.len(), 1);
        assert_eq!(decision.notices[0].reason, "ImageNotStarting");
        // Reported once, not at every poll.
        let again = decide(&facts(&decision.status), &observed);
        assert!(again.notices.is_empty());
    }

    #[test]
    fn members_of_another_group_or_two_leaders_in_a_term_disagree() {
        let mut observed = healthy();
        if let Polled::Answered(status) = &mut observed[2].polled {
            status.group = "payments".into();
        }
        let decision = decide(&facts(&DLedgerGroupStatus::default()), &observed);
        let degraded = condition_of(&decision.status, "Degraded");
        assert_eq!(degraded.reason, "MembersDisagree");
        assert!(degraded.message.contains("payments"));

        let mut observed = healthy();
        observed[1].polled = Polled::Answered(status("orders-1", Role::Leader, 2, 98, 98));
        let decision = decide(&facts(&DLedgerGroupStatus::default()), &observed);
        let degraded = condition_of(&decision.status, "Degraded");
        assert_eq!(degraded.reason, "MembersDisagree");
        assert!(degraded.message.contains("both lead in term 2"));
    }

    #[test]
    fn a_stale_leader_in_an_old_term_loses_to_the_newer_one() {
        let mut observed = healthy();
        observed[1].polled = Polled::Answered(status("orders-1", Role::Leader, 3, 100, 100));
        let decision = decide(&facts(&DLedgerGroupStatus::default()), &observed);
        assert_eq!(decision.status.leader.as_deref(), Some("orders-1"));
        assert_eq!(decision.status.term, 3);
        assert_eq!(condition_of(&decision.status, "Degraded").status, "False");
    }

    #[test]
    fn outdated_pods_keep_the_group_progressing() {
        let mut observed = healthy();
        observed[2].pod.as_mut().unwrap().revision = Some("rev-0".into());
        let previous = DLedgerGroupStatus::default();
        let mut f = facts(&previous);
        f.current_revision = Some("rev-0".into());
        let decision = decide(&f, &observed);
        assert!(!decision.status.members[2].updated);
        assert_eq!(
            condition_of(&decision.status, "Progressing").reason,
            "MembersOutdated"
        );
        assert_eq!(decision.status.current_revision.as_deref(), Some("rev-0"));
    }
}
