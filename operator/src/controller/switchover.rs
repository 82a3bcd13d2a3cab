//! Switchover on demand: `spec.switchover.target` names the member that
//! should lead. Recorded in `status.switchover` (target, the leader when
//! requested, timestamps) so that a restarted operator resumes it. Pure;
//! the transfer call itself is made in `mod.rs`.

use super::decide::Notice;
use super::upgrade::{seconds_of, Disruption, Verdict};
use crate::crd::{Condition, SwitchoverStatus};

/// What the switchover looks at.
#[derive(Clone, Debug)]
pub struct SwitchoverInput<'a> {
    /// `spec.switchover.target`.
    pub target: Option<&'a str>,
    /// `status.switchover` as last written.
    pub recorded: Option<&'a SwitchoverStatus>,
    /// The expected members.
    pub members: &'a [String],
    /// The leader now, if any.
    pub leader: Option<&'a str>,
    /// An upgrade step is under way; the upgrade goes first.
    pub upgrade_busy: bool,
    /// `spec.upgrade.stepTimeoutSeconds`, the switchover's bound too.
    pub step_timeout_seconds: u32,
    /// The conditions last written (an Event is emitted once per trouble).
    pub previous_conditions: &'a [Condition],
    /// Now, RFC 3339.
    pub now: &'a str,
    /// Now, seconds since the Unix epoch.
    pub now_seconds: i64,
}

/// What the switchover decided.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SwitchoverExecution {
    /// The new `status.switchover`.
    pub switchover: Option<SwitchoverStatus>,
    /// The transfer to make, after the status is written.
    pub action: Option<Disruption>,
    /// The `Progressing` condition, unless the upgrade set one.
    pub progressing: Option<Verdict>,
    /// The `Degraded` condition, unless the upgrade set one.
    pub degraded: Option<Verdict>,
    /// Events to emit.
    pub notices: Vec<Notice>,
    /// A switchover is under way: poll again soon.
    pub in_progress: bool,
}

fn degraded_before(conditions: &[Condition], reason: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == reason)
}

/// A warning Degraded verdict, with its Event the first time.
fn trouble(input: &SwitchoverInput<'_>, reason: &str, message: String) -> SwitchoverExecution {
    let notices = if degraded_before(input.previous_conditions, reason) {
        Vec::new()
    } else {
        vec![Notice {
            warning: true,
            reason: reason.to_string(),
            note: message.clone(),
        }]
    };
    SwitchoverExecution {
        switchover: input.recorded.cloned(),
        degraded: Some(Verdict {
            status: true,
            reason: reason.to_string(),
            message,
        }),
        notices,
        ..SwitchoverExecution::default()
    }
}

/// The switchover's decision for this reconcile.
pub fn execute(input: &SwitchoverInput<'_>) -> SwitchoverExecution {
    let Some(target) = input.target else {
        // No request: a finished record stays as history; an unfinished one
        // is cancelled, so that asking again starts afresh.
        return SwitchoverExecution {
            switchover: input.recorded.filter(|r| r.completed_at.is_some()).cloned(),
            ..SwitchoverExecution::default()
        };
    };
    if !input.members.iter().any(|member| member == target) {
        return trouble(
            input,
            "SwitchoverTargetUnknown",
            format!(
                "spec.switchover.target {target} is not a member ({})",
                input.members.join(", ")
            ),
        );
    }
    let active = input
        .recorded
        .filter(|r| r.target == target && r.completed_at.is_none());
    if input.leader == Some(target) {
        return match active {
            Some(active) => completed(input, active),
            None => SwitchoverExecution {
                switchover: input.recorded.cloned(),
                ..SwitchoverExecution::default()
            },
        };
    }
    if input.upgrade_busy {
        return SwitchoverExecution {
            switchover: input.recorded.cloned(),
            progressing: Some(Verdict {
                status: true,
                reason: "SwitchoverWaiting".into(),
                message: format!("switchover to {target} waits for the upgrade step under way"),
            }),
            in_progress: active.is_some(),
            ..SwitchoverExecution::default()
        };
    }
    let Some(leader) = input.leader else {
        return SwitchoverExecution {
            switchover: input.recorded.cloned(),
            progressing: Some(Verdict {
                status: true,
                reason: "SwitchoverWaiting".into(),
                message: format!("switchover to {target} waits for a leader"),
            }),
            in_progress: true,
            ..SwitchoverExecution::default()
        };
    };
    match active {
        Some(active) => resume(input, active, leader, target),
        None => start(input, leader, target),
    }
}

fn start(input: &SwitchoverInput<'_>, leader: &str, target: &str) -> SwitchoverExecution {
    let note = format!("switchover requested: moving leadership from {leader} to {target}");
    SwitchoverExecution {
        switchover: Some(SwitchoverStatus {
            target: target.to_string(),
            current: Some(leader.to_string()),
            requested_at: input.now.to_string(),
            completed_at: None,
        }),
        action: Some(Disruption::Transfer {
            from: leader.to_string(),
            to: target.to_string(),
        }),
        progressing: Some(Verdict {
            status: true,
            reason: "Switchover".into(),
            message: note.clone(),
        }),
        notices: vec![Notice {
            warning: false,
            reason: "SwitchoverStarted".into(),
            note,
        }],
        in_progress: true,
        ..SwitchoverExecution::default()
    }
}

fn resume(
    input: &SwitchoverInput<'_>,
    active: &SwitchoverStatus,
    leader: &str,
    target: &str,
) -> SwitchoverExecution {
    // An unreadable time counts as just requested: the bound then starts now.
    let requested_seconds = seconds_of(&active.requested_at).unwrap_or(input.now_seconds);
    let elapsed_seconds = input.now_seconds.saturating_sub(requested_seconds);
    if elapsed_seconds > i64::from(input.step_timeout_seconds) {
        return trouble(
            input,
            "SwitchoverTimedOut",
            format!(
                "switchover to {target} requested at {} has not completed within stepTimeoutSeconds {} ({leader} still leads); change or remove spec.switchover to try again",
                active.requested_at, input.step_timeout_seconds
            ),
        );
    }
    SwitchoverExecution {
        switchover: Some(active.clone()),
        action: Some(Disruption::Transfer {
            from: leader.to_string(),
            to: target.to_string(),
        }),
        progressing: Some(Verdict {
            status: true,
            reason: "Switchover".into(),
            message: format!(
                "moving leadership from {leader} to {target} (requested at {})",
                active.requested_at
            ),
        }),
        in_progress: true,
        ..SwitchoverExecution::default()
    }
}

fn completed(input: &SwitchoverInput<'_>, active: &SwitchoverStatus) -> SwitchoverExecution {
    let note = format!(
        "switchover complete: {} leads (was {})",
        active.target,
        active.current.as_deref().unwrap_or("none")
    );
    SwitchoverExecution {
        switchover: Some(SwitchoverStatus {
            completed_at: Some(input.now.to_string()),
            ..active.clone()
        }),
        notices: vec![Notice {
            warning: false,
            reason: "SwitchoverCompleted".into(),
            note,
        }],
        ..SwitchoverExecution::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<String> {
        (0..3).map(|i| format!("orders-{i}")).collect()
    }

    const T0: &str = "2026-12-02T22:00:00Z";
    const T0_SECONDS: i64 = 1_796_248_800;

    fn input<'a>(
        members: &'a [String],
        target: Option<&'a str>,
        recorded: Option<&'a SwitchoverStatus>,
        leader: Option<&'a str>,
    ) -> SwitchoverInput<'a> {
        SwitchoverInput {
            target,
            recorded,
            members,
            leader,
            upgrade_busy: false,
            step_timeout_seconds: 60,
            previous_conditions: &[],
            now: T0,
            now_seconds: T0_SECONDS,
        }
    }

    #[test]
    fn the_test_clock_agrees_with_the_parser() {
        assert_eq!(seconds_of(T0), Some(T0_SECONDS));
    }

    #[test]
    fn a_request_is_recorded_then_transferred() {
        let members = members();
        let out = execute(&input(&members, Some("orders-1"), None, Some("orders-0")));
        let recorded = out.switchover.clone().unwrap();
        assert_eq!(recorded.target, "orders-1");
        assert_eq!(recorded.current.as_deref(), Some("orders-0"));
        assert_eq!(recorded.requested_at, T0);
        assert_eq!(recorded.completed_at, None);
        assert_eq!(
            out.action,
            Some(Disruption::Transfer {
                from: "orders-0".into(),
                to: "orders-1".into()
            })
        );
        assert_eq!(out.notices[0].reason, "SwitchoverStarted");
        assert_eq!(out.progressing.unwrap().reason, "Switchover");
        assert!(out.in_progress);
    }

    #[test]
    fn a_restarted_operator_resumes_from_the_record_and_retries_the_transfer() {
        let members = members();
        let recorded = SwitchoverStatus {
            target: "orders-1".into(),
            current: Some("orders-0".into()),
            requested_at: "2026-12-02T21:59:30Z".into(),
            completed_at: None,
        };
        let out = execute(&input(
            &members,
            Some("orders-1"),
            Some(&recorded),
            Some("orders-0"),
        ));
        assert_eq!(
            out.switchover.as_ref(),
            Some(&recorded),
            "kept, not restarted"
        );
        assert!(matches!(out.action, Some(Disruption::Transfer { .. })));
        assert!(out.notices.is_empty(), "started once, announced once");
    }

    #[test]
    fn it_completes_when_the_target_leads() {
        let members = members();
        let recorded = SwitchoverStatus {
            target: "orders-1".into(),
            current: Some("orders-0".into()),
            requested_at: T0.into(),
            completed_at: None,
        };
        let out = execute(&input(
            &members,
            Some("orders-1"),
            Some(&recorded),
            Some("orders-1"),
        ));
        assert_eq!(
            out.switchover.as_ref().unwrap().completed_at.as_deref(),
            Some(T0)
        );
        assert_eq!(out.action, None);
        assert_eq!(out.notices[0].reason, "SwitchoverCompleted");
        assert!(!out.in_progress);
        // And then nothing more happens.
        let done = out.switchover.unwrap();
        let again = execute(&input(
            &members,
            Some("orders-1"),
            Some(&done),
            Some("orders-1"),
        ));
        assert_eq!(again.switchover.as_ref(), Some(&done));
        assert!(again.action.is_none() && again.notices.is_empty());
    }

    #[test]
    fn it_times_out_with_a_degraded_reason_once() {
        let members = members();
        let recorded = SwitchoverStatus {
            target: "orders-1".into(),
            current: Some("orders-0".into()),
            requested_at: "2026-12-02T21:58:00Z".into(),
            completed_at: None,
        };
        let out = execute(&input(
            &members,
            Some("orders-1"),
            Some(&recorded),
            Some("orders-0"),
        ));
        assert_eq!(out.action, None, "no transfer after the timeout");
        let degraded = out.degraded.clone().unwrap();
        assert_eq!(degraded.reason, "SwitchoverTimedOut");
        assert!(
            degraded.message.contains("orders-1"),
            "{}",
            degraded.message
        );
        assert_eq!(out.notices.len(), 1);
        assert!(out.notices[0].warning);
        let previous = [Condition {
            type_: "Degraded".into(),
            status: "True".into(),
            reason: "SwitchoverTimedOut".into(),
            ..Condition::default()
        }];
        let mut again_input = input(
            &members,
            Some("orders-1"),
            Some(&recorded),
            Some("orders-0"),
        );
        again_input.previous_conditions = &previous;
        assert!(execute(&again_input).notices.is_empty());
    }

    #[test]
    fn it_waits_for_the_upgrade_and_for_a_leader() {
        let members = members();
        let mut busy = input(&members, Some("orders-1"), None, Some("orders-0"));
        busy.upgrade_busy = true;
        let out = execute(&busy);
        assert_eq!(out.action, None);
        assert_eq!(out.switchover, None, "not recorded while the upgrade acts");
        assert_eq!(out.progressing.unwrap().reason, "SwitchoverWaiting");
        let out = execute(&input(&members, Some("orders-1"), None, None));
        assert_eq!(out.action, None);
        assert_eq!(out.progressing.unwrap().reason, "SwitchoverWaiting");
    }

    #[test]
    fn an_unknown_target_is_degraded_and_nothing_moves() {
        let members = members();
        let out = execute(&input(&members, Some("orders-5"), None, Some("orders-0")));
        assert_eq!(out.action, None);
        assert_eq!(out.degraded.unwrap().reason, "SwitchoverTargetUnknown");
    }

    #[test]
    fn removing_the_request_cancels_an_unfinished_switchover_and_keeps_history() {
        let members = members();
        let unfinished = SwitchoverStatus {
            target: "orders-1".into(),
            current: Some("orders-0".into()),
            requested_at: T0.into(),
            completed_at: None,
        };
        assert_eq!(
            execute(&input(&members, None, Some(&unfinished), Some("orders-0"))).switchover,
            None
        );
        let finished = SwitchoverStatus {
            completed_at: Some(T0.into()),
            ..unfinished
        };
        assert_eq!(
            execute(&input(&members, None, Some(&finished), Some("orders-0"))).switchover,
            Some(finished)
        );
    }

    #[test]
    fn a_target_that_lost_leadership_later_is_switched_to_again() {
        let members = members();
        let finished = SwitchoverStatus {
            target: "orders-1".into(),
            current: Some("orders-0".into()),
            requested_at: "2026-12-02T21:00:00Z".into(),
            completed_at: Some("2026-12-02T21:00:01Z".into()),
        };
        let out = execute(&input(
            &members,
            Some("orders-1"),
            Some(&finished),
            Some("orders-2"),
        ));
        let record = out.switchover.unwrap();
        assert_eq!(record.current.as_deref(), Some("orders-2"));
        assert_eq!(record.requested_at, T0);
        assert!(out.action.is_some());
    }
}
