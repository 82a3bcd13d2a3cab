//! INFO lines for what an operator reads a replica's log for: role changes,
//! elections won and lost (with the reason), leadership transfers, and peers
//! lost and regained, each with the term.
//!
//! The core is sans-IO and logs nothing; the raft loop hands this module
//! what it already sees (soft states, transfer outcomes, the leader's peer
//! contact times). The wording is built by pure `describe_*` functions so
//! it is tested without a subscriber.

use crate::core::{Role, SoftState, TransferOutcome};
use crate::entry::{Index, NodeId, Term};

/// Logs each line of [`describe_soft_change`] at INFO.
pub fn soft_change(
    previous: Option<SoftState>,
    soft: SoftState,
    transfer_target: Option<NodeId>,
    transfer_pending: bool,
    name: impl Fn(NodeId) -> String,
) {
    let transfer = match transfer_target {
        Some(target) => Transfer::To(target),
        None if transfer_pending => Transfer::Unnamed,
        None => Transfer::None,
    };
    for line in describe_soft_change(previous, soft, transfer, name) {
        tracing::info!(term = soft.term, "{line}");
    }
}

/// Logs the start of a leadership transfer at INFO.
pub fn transfer_started(target: Option<NodeId>, term: Term, name: impl Fn(NodeId) -> String) {
    match target {
        Some(target) => tracing::info!(term, "transferring leadership to {}", name(target)),
        None => tracing::info!(term, "transferring leadership"),
    }
}

/// Logs a transfer's end at INFO.
pub fn transfer_outcome(outcome: TransferOutcome, term: Term, name: impl Fn(NodeId) -> String) {
    tracing::info!(term, "{}", describe_transfer_outcome(outcome, &name));
}

/// Logs each line of [`describe_peer_changes`] at INFO.
pub fn peers_changed(
    previous: &[(NodeId, Index, u64)],
    next: &[(NodeId, Index, u64)],
    lost_after_ms: u64,
    term: Term,
    name: impl Fn(NodeId) -> String,
) {
    for line in describe_peer_changes(previous, next, lost_after_ms, name) {
        tracing::info!(term, "{line}");
    }
}

/// Whether a leadership transfer is running, and to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// None is.
    None,
    /// One is, to this member.
    To(NodeId),
    /// One was asked for; the core no longer names its target (it ends as
    /// the leader steps down).
    Unnamed,
}

/// A role as the log says it; unlike `/status`, a pre-candidate is told
/// apart from a candidate.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::PreCandidate => "pre-candidate",
        role => role.as_str(),
    }
}

/// What changed between two soft states, as sentences (none if nothing
/// an operator cares about did).
pub fn describe_soft_change(
    previous: Option<SoftState>,
    soft: SoftState,
    transfer: Transfer,
    name: impl Fn(NodeId) -> String,
) -> Vec<String> {
    let term = soft.term;
    let leader = |soft: SoftState| soft.leader_id.map(&name);
    let Some(previous) = previous else {
        return vec![format!(
            "started as {} at term {term}{}",
            role_name(soft.role),
            leader(soft).map_or_else(String::new, |l| format!(", leader {l}"))
        )];
    };
    if previous == soft {
        return Vec::new();
    }
    let mut lines = Vec::new();
    let higher_term = soft.term > previous.term;
    match (previous.role, soft.role) {
        (Role::Follower, Role::PreCandidate) => lines.push(format!(
            "election timeout at term {term}: no word from a leader; asking for pre-votes"
        )),
        (Role::Follower | Role::PreCandidate, Role::Candidate) => {
            lines.push(format!("started an election at term {term}"))
        }
        (Role::Candidate, Role::Candidate) if higher_term => lines.push(format!(
            "lost the election at term {}: no majority before the timeout; \
             started another at term {term}",
            previous.term
        )),
        (Role::Candidate | Role::PreCandidate, Role::Leader) => {
            lines.push(format!("won the election at term {term}; now leader"))
        }
        (Role::Candidate, Role::Follower) => {
            let reason = match leader(soft) {
                Some(leader) => format!("{leader} leads"),
                None if higher_term => "a member is at a higher term".to_string(),
                None => "no majority of votes".to_string(),
            };
            lines.push(format!(
                "lost the election at term {}: {reason}; now follower at term {term}",
                previous.term
            ));
        }
        (Role::PreCandidate, Role::Follower) => {
            let reason = match leader(soft) {
                Some(leader) => format!("{leader} leads"),
                None => "no majority granted a pre-vote".to_string(),
            };
            lines.push(format!(
                "pre-vote lost at term {}: {reason}; still follower",
                previous.term
            ));
        }
        (Role::Leader, role) if role != Role::Leader => {
            let reason = match (transfer, higher_term) {
                (Transfer::To(target), _) => format!("handing leadership to {}", name(target)),
                (Transfer::Unnamed, _) => "leadership transfer".to_string(),
                (Transfer::None, true) => "a member is at a higher term".to_string(),
                (Transfer::None, false) => "lost contact with a majority".to_string(),
            };
            lines.push(format!(
                "stepped down at term {term} ({reason}); now {}",
                role_name(role)
            ));
        }
        (from, to) if from != to => lines.push(format!(
            "role {} -> {} at term {term}",
            role_name(from),
            role_name(to)
        )),
        _ => {}
    }
    if soft.leader_id != previous.leader_id && soft.role != Role::Leader {
        if let Some(leader) = leader(soft) {
            lines.push(format!("leader is {leader} at term {term}"));
        }
    }
    lines
}

/// One sentence on how a transfer ended.
pub fn describe_transfer_outcome(
    outcome: TransferOutcome,
    name: impl Fn(NodeId) -> String,
) -> String {
    match outcome {
        TransferOutcome::SteppedDown { target } => {
            format!("leadership transfer to {}: stepped down", name(target))
        }
        TransferOutcome::Abandoned { target, reason } => format!(
            "leadership transfer to {} abandoned ({reason:?}); still leader",
            name(target)
        ),
    }
}

/// Peers whose last contact crossed `lost_after_ms` one way or the other
/// between two of the leader's views.
pub fn describe_peer_changes(
    previous: &[(NodeId, Index, u64)],
    next: &[(NodeId, Index, u64)],
    lost_after_ms: u64,
    name: impl Fn(NodeId) -> String,
) -> Vec<String> {
    let mut lines = Vec::new();
    for &(id, match_index, contact_ms) in next {
        let Some(&(_, _, before_ms)) = previous.iter().find(|(peer, _, _)| *peer == id) else {
            continue;
        };
        let lost_now = contact_ms > lost_after_ms;
        let lost_before = before_ms > lost_after_ms;
        if lost_now && !lost_before {
            lines.push(format!(
                "peer {} lost: no answer for {contact_ms} ms (match index {match_index})",
                name(id)
            ));
        } else if lost_before && !lost_now {
            lines.push(format!(
                "peer {} regained (match index {match_index})",
                name(id)
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(id: NodeId) -> String {
        format!("m{id}")
    }

    fn soft(role: Role, leader_id: Option<NodeId>, term: Term) -> SoftState {
        SoftState {
            role,
            leader_id,
            term,
        }
    }

    #[test]
    fn elections_won_and_lost_say_why_with_the_term() {
        let follower = soft(Role::Follower, Some(2), 3);
        let pre = soft(Role::PreCandidate, None, 3);
        let candidate = soft(Role::Candidate, None, 4);
        let lines = describe_soft_change(Some(follower), pre, Transfer::None, name);
        assert_eq!(
            lines,
            ["election timeout at term 3: no word from a leader; asking for pre-votes"]
        );
        let lines = describe_soft_change(Some(pre), candidate, Transfer::None, name);
        assert_eq!(lines, ["started an election at term 4"]);
        let won = soft(Role::Leader, Some(1), 4);
        let lines = describe_soft_change(Some(candidate), won, Transfer::None, name);
        assert_eq!(lines, ["won the election at term 4; now leader"]);
        let lost = soft(Role::Follower, Some(3), 4);
        let lines = describe_soft_change(Some(candidate), lost, Transfer::None, name);
        assert_eq!(
            lines,
            [
                "lost the election at term 4: m3 leads; now follower at term 4",
                "leader is m3 at term 4"
            ]
        );
        let retry = soft(Role::Candidate, None, 5);
        let lines = describe_soft_change(Some(candidate), retry, Transfer::None, name);
        assert!(lines[0].starts_with("lost the election at term 4: no majority"));
    }

    #[test]
    fn a_leader_stepping_down_says_why() {
        let leader = soft(Role::Leader, Some(1), 4);
        let follower = soft(Role::Follower, None, 4);
        let by_transfer = describe_soft_change(Some(leader), follower, Transfer::To(2), name);
        assert_eq!(
            by_transfer,
            ["stepped down at term 4 (handing leadership to m2); now follower"]
        );
        let higher = soft(Role::Follower, None, 6);
        // The target's election raises the term; the transfer is the reason.
        let unnamed = describe_soft_change(Some(leader), higher, Transfer::Unnamed, name);
        assert!(unnamed[0].contains("(leadership transfer)"), "{unnamed:?}");
        let by_term = describe_soft_change(Some(leader), higher, Transfer::None, name);
        assert!(by_term[0].contains("higher term"), "{by_term:?}");
        let quorum = describe_soft_change(Some(leader), follower, Transfer::None, name);
        assert!(
            quorum[0].contains("lost contact with a majority"),
            "{quorum:?}"
        );
        assert!(describe_soft_change(Some(leader), leader, Transfer::None, name).is_empty());
        let pre = soft(Role::PreCandidate, None, 0);
        let first = describe_soft_change(None, pre, Transfer::None, name);
        assert_eq!(first, ["started as pre-candidate at term 0"]);
    }

    #[test]
    fn peers_lost_and_regained_are_told_once() {
        let before = [(2, 10, 50), (3, 10, 50)];
        let after = [(2, 10, 900), (3, 12, 40)];
        let lines = describe_peer_changes(&before, &after, 500, name);
        assert_eq!(
            lines,
            ["peer m2 lost: no answer for 900 ms (match index 10)"]
        );
        assert!(describe_peer_changes(&after, &after, 500, name).is_empty());
        let back = [(2, 12, 10), (3, 12, 40)];
        let lines = describe_peer_changes(&after, &back, 500, name);
        assert_eq!(lines, ["peer m2 regained (match index 12)"]);
    }

    #[test]
    fn transfers_name_the_target() {
        let line = describe_transfer_outcome(TransferOutcome::SteppedDown { target: 2 }, name);
        assert_eq!(line, "leadership transfer to m2: stepped down");
    }
}
