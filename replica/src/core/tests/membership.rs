//! Membership changes between whole nodes: learners, promotion, removal
//! (of the leader too), one change at a time, and a change undone by a
//! truncation.

use super::*;
use crate::membership::{Configuration, MemberRecord, MemberRole, Membership};

/// Nodes 1..=voters as the bootstrap voters, and `spares` more that wait to
/// be added (no configuration of their own).
fn cluster_with_spares(voters: u64, spares: u64) -> Cluster {
    let mut cluster = Cluster::new(voters);
    for id in voters + 1..=voters + spares {
        let log = SharedLog::default();
        let node = Node::new(
            Config::new(id, vec![]),
            log.clone(),
            HardState::default(),
            id,
        )
        .unwrap();
        cluster.nodes.push(node);
        cluster.logs.push(log);
        cluster.saved_configurations.push(Vec::new());
    }
    cluster
}

/// The payload of a configuration with these voters and learners.
pub(super) fn payload(voters: &[NodeId], learners: &[NodeId]) -> Bytes {
    let record = |id: &NodeId, role| MemberRecord {
        id: *id,
        name: id.to_string(),
        incarnation: 0,
        address: format!("sim:{id}"),
        http_address: format!("sim:{id}"),
        role,
    };
    let members = voters
        .iter()
        .map(|id| record(id, MemberRole::Voter))
        .chain(learners.iter().map(|id| record(id, MemberRole::Learner)))
        .collect();
    Configuration::new(members).unwrap().encode()
}

fn membership(voters: &[NodeId], learners: &[NodeId]) -> Membership {
    Membership {
        voters: voters.iter().copied().collect(),
        learners: learners.iter().copied().collect(),
    }
}

/// Proposes a change on `leader` and lets it commit.
fn change(cluster: &mut Cluster, leader: NodeId, voters: &[NodeId], learners: &[NodeId]) -> Index {
    let (index, _) = cluster
        .node(leader)
        .propose_configuration(payload(voters, learners))
        .unwrap();
    cluster.stabilize();
    cluster.tick_all(2);
    assert!(cluster.node(leader).commit_index() >= index || cluster.leaders() != vec![leader]);
    index
}

#[test]
fn a_learner_gets_the_log_is_promoted_and_then_counts() {
    let mut cluster = cluster_with_spares(3, 1);
    cluster.elect(1);
    change(&mut cluster, 1, &[1, 2, 3], &[4]);
    for id in 1..=4 {
        assert_eq!(
            cluster.node(id).membership(),
            &membership(&[1, 2, 3], &[4]),
            "node {id}"
        );
    }
    cluster.node(1).propose(Bytes::from_static(b"a")).unwrap();
    cluster.stabilize();
    cluster.tick_all(2);
    assert_eq!(cluster.node(4).last_index(), cluster.node(1).last_index());
    change(&mut cluster, 1, &[1, 2, 3, 4], &[]);
    assert_eq!(
        cluster.node(4).membership(),
        &membership(&[1, 2, 3, 4], &[])
    );
    // Four voters: with two of them down, nothing commits any more.
    cluster.down.extend([2, 3]);
    let (index, _) = cluster.node(1).propose(Bytes::from_static(b"b")).unwrap();
    cluster.stabilize();
    assert!(cluster.node(1).commit_index() < index);
    cluster.down.remove(&3);
    cluster.tick_all(12);
    assert!(cluster.node(1).commit_index() >= index);
}

#[test]
fn a_learner_neither_counts_for_commit_nor_campaigns() {
    let mut cluster = cluster_with_spares(3, 1);
    cluster.elect(1);
    change(&mut cluster, 1, &[1, 2, 3], &[4]);
    cluster.down.extend([2, 3]);
    let (index, _) = cluster.node(1).propose(Bytes::from_static(b"a")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(4).last_index(), index, "the learner has it");
    assert!(
        cluster.node(1).commit_index() < index,
        "1 + a learner is no majority"
    );
    // With the leader gone too, the learner waits instead of campaigning.
    cluster.down.insert(1);
    let term = cluster.node(4).term();
    for _ in 0..10 * cluster.node(4).config().election_ticks {
        cluster.node(4).tick().unwrap();
        cluster.flush();
    }
    assert_eq!(cluster.node(4).term(), term);
    assert_eq!(cluster.node(4).role(), Role::Follower);
}

#[test]
fn changes_wait_for_the_term_to_settle_and_go_one_at_a_time() {
    let mut cluster = cluster_with_spares(3, 2);
    // Elected, but no answer to its appends: its no-op is not committed.
    cluster.drop_if = Some(Box::new(|message: &Message| {
        matches!(message.body, MessageBody::AppendResponse { .. })
    }));
    cluster.elect(1);
    assert_eq!(
        cluster
            .node(1)
            .propose_configuration(payload(&[1, 2, 3], &[4])),
        Err(ProposeError::Membership(ChangeRefusal::LeaderNotSettled))
    );
    cluster.drop_if = None;
    cluster.tick_all(12);
    let (index, _) = cluster
        .node(1)
        .propose_configuration(payload(&[1, 2, 3], &[4]))
        .unwrap();
    assert_eq!(
        cluster
            .node(1)
            .propose_configuration(payload(&[1, 2, 3], &[4, 5])),
        Err(ProposeError::Membership(ChangeRefusal::ChangeInProgress {
            index
        }))
    );
    cluster.stabilize();
    cluster
        .node(1)
        .propose_configuration(payload(&[1, 2, 3], &[4, 5]))
        .unwrap();
    cluster.stabilize();
    // A member the leader just added (it has none of the log yet) is
    // probed on the leader's next tick, as a follower owed the commit.
    cluster.tick_all(1);
    assert_eq!(
        cluster.node(5).membership(),
        &membership(&[1, 2, 3], &[4, 5])
    );
}

#[test]
fn a_change_of_more_than_one_member_or_a_lagging_promotion_is_refused() {
    let mut cluster = cluster_with_spares(3, 1);
    cluster.elect(1);
    // A voter straight away is two changes' worth (learner, then promote).
    let direct = cluster
        .node(1)
        .propose_configuration(payload(&[1, 2, 3, 4], &[]));
    assert!(matches!(
        direct,
        Err(ProposeError::Membership(ChangeRefusal::Invalid(_)))
    ));
    let garbage = cluster
        .node(1)
        .propose_configuration(Bytes::from_static(b"{"));
    assert!(matches!(
        garbage,
        Err(ProposeError::Membership(ChangeRefusal::Invalid(_)))
    ));
    // A learner that has heard nothing is not promoted.
    cluster.down.insert(4);
    change(&mut cluster, 1, &[1, 2, 3], &[4]);
    let early = cluster
        .node(1)
        .propose_configuration(payload(&[1, 2, 3, 4], &[]));
    assert!(
        matches!(
            early,
            Err(ProposeError::Membership(ChangeRefusal::NotCaughtUp { .. }))
        ),
        "{early:?}"
    );
    cluster.down.clear();
    cluster.tick_all(20);
    change(&mut cluster, 1, &[1, 2, 3, 4], &[]);
    assert_eq!(
        cluster.node(1).membership(),
        &membership(&[1, 2, 3, 4], &[])
    );
}

#[test]
fn a_removed_leader_hands_over_and_stays_quiet() {
    let mut cluster = cluster_with_spares(3, 0);
    cluster.elect(1);
    cluster.node(1).propose(Bytes::from_static(b"a")).unwrap();
    cluster.stabilize();
    let (index, _) = cluster
        .node(1)
        .propose_configuration(payload(&[2, 3], &[]))
        .unwrap();
    // Appended after the removal: the old leader sees them committed
    // before it hands over (nobody would tell it afterwards).
    let (after, _) = cluster
        .node(1)
        .propose(Bytes::from_static(b"after"))
        .unwrap();
    cluster.stabilize();
    assert!(cluster.node(1).commit_index() >= after);
    assert_eq!(
        cluster.node(1).propose(Bytes::new()),
        Err(ProposeError::NotLeader { leader: None })
    );
    let leaders = cluster.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(
        leaders[0], 1,
        "the removed leader stepped down and handed over"
    );
    let leader = leaders[0];
    assert!(cluster.node(leader).commit_index() >= index);
    // It no longer campaigns.
    let term = cluster.node(1).term();
    cluster.down.insert(leader);
    for _ in 0..10 * cluster.node(1).config().election_ticks {
        cluster.node(1).tick().unwrap();
        cluster.flush();
    }
    assert_eq!(cluster.node(1).role(), Role::Follower);
    assert_eq!(cluster.node(1).term(), term);
    cluster.down.remove(&leader);
    cluster.stabilize();
    let (written, _) = cluster
        .node(leader)
        .propose(Bytes::from_static(b"b"))
        .unwrap();
    cluster.stabilize();
    cluster.tick_all(2);
    assert!(cluster.node(leader).commit_index() >= written);
}

#[test]
fn a_truncated_change_is_undone() {
    let mut cluster = cluster_with_spares(3, 1);
    cluster.elect(1);
    // Node 1 appends a change nobody else gets.
    cluster.drop_if = Some(Box::new(|message: &Message| message.from == 1));
    cluster
        .node(1)
        .propose_configuration(payload(&[1, 2, 3], &[4]))
        .unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(1).membership(), &membership(&[1, 2, 3], &[4]));
    // Node 2 or 3 takes over; its log replaces node 1's tail.
    cluster.down.insert(1);
    cluster.drop_if = None;
    cluster.tick_all(200);
    let leader = cluster.leaders().into_iter().find(|id| *id != 1).unwrap();
    cluster
        .node(leader)
        .propose(Bytes::from_static(b"x"))
        .unwrap();
    cluster.stabilize();
    cluster.down.clear();
    cluster.tick_all(12);
    assert_eq!(cluster.node(1).membership(), &membership(&[1, 2, 3], &[]));
    assert_eq!(
        cluster.node(1).last_index(),
        cluster.node(leader).last_index()
    );
}

#[test]
fn restored_records_are_in_force_after_a_restart() {
    let mut cluster = cluster_with_spares(3, 1);
    cluster.elect(1);
    change(&mut cluster, 1, &[1, 2, 3], &[4]);
    let records = cluster.saved_configurations[1].clone();
    assert_eq!(
        records.last().unwrap().membership,
        membership(&[1, 2, 3], &[4])
    );
    // Restarting with the bootstrap list of another time: the records win.
    let mut restarted = Node::new(
        Config::new(2, vec![1, 2, 3, 5]),
        cluster.logs[1].clone(),
        HardState::default(),
        2,
    )
    .unwrap();
    restarted.restore_configurations(records.clone()).unwrap();
    assert_eq!(restarted.membership(), &membership(&[1, 2, 3], &[4]));
    // A record past the log's end (its entry lost with an unsynced tail)
    // is dropped.
    let mut beyond = records;
    let mut lost = beyond.last().unwrap().clone();
    lost.index = 1_000;
    lost.membership = membership(&[1, 2], &[]);
    beyond.push(lost);
    let mut restarted = Node::new(
        Config::new(2, vec![1, 2, 3]),
        cluster.logs[1].clone(),
        HardState::default(),
        2,
    )
    .unwrap();
    restarted.restore_configurations(beyond).unwrap();
    assert_eq!(restarted.membership(), &membership(&[1, 2, 3], &[4]));
}

#[test]
fn a_malformed_configuration_entry_is_dropped_and_reported() {
    let mut node = follower_of_2();
    let bad = Message {
        from: 2,
        to: 1,
        term: 2,
        body: MessageBody::Append {
            prev_log_index: 3,
            prev_log_term: 2,
            entries: vec![Entry {
                index: 4,
                term: 2,
                kind: EntryKind::Configuration,
                payload: Bytes::from_static(b"not json"),
            }],
            leader_commit: 0,
        },
    };
    assert_eq!(
        violations_of(&mut node, bad),
        vec![ViolationKind::MalformedConfiguration]
    );
    assert_eq!(node.last_index(), 3);
}
