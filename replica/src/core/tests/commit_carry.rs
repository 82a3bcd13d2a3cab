//! The commit index rides on the next append or heartbeat; an append goes
//! for it alone only on the leader's tick, to a follower nothing else told
//! (bench/profile.md, ranked change 4).

use super::*;

/// The appends among `messages`, as (to, entry count, leader commit).
fn appends(messages: &VecDeque<Message>) -> Vec<(NodeId, usize, Index)> {
    messages
        .iter()
        .filter_map(|message| match &message.body {
            MessageBody::Append {
                entries,
                leader_commit,
                ..
            } => Some((message.to, entries.len(), *leader_commit)),
            _ => None,
        })
        .collect()
}

/// A group of three led by 1, its no-op committed everywhere, the leader
/// `1` tick past its election (a heartbeat is 10 ticks away).
fn settled_group() -> Cluster {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.tick_all(1);
    for id in 1..=3 {
        assert_eq!(cluster.node(id).commit_index(), 1, "node {id}");
    }
    cluster
}

/// Propose one entry and deliver everything: the leader commits it, the
/// followers are not told. Returns its index.
fn commit_one(cluster: &mut Cluster) -> Index {
    let (index, _) = cluster.node(1).propose(Bytes::from_static(b"a")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(1).commit_index(), index);
    for id in [2, 3] {
        assert_eq!(cluster.node(id).commit_index(), index - 1, "node {id}");
    }
    index
}

#[test]
fn a_commit_with_nothing_else_to_send_waits_for_the_tick() {
    let mut cluster = settled_group();
    let index = commit_one(&mut cluster);
    assert!(!cluster.node(1).has_ready(), "nothing sent for the commit");
    let heartbeat_ticks = cluster.node(1).config().heartbeat_ticks;
    assert!(cluster.node(1).heartbeat_elapsed + 1 < heartbeat_ticks);
    cluster.node(1).tick().unwrap();
    cluster.flush();
    assert_eq!(appends(&cluster.queue), vec![(2, 0, index), (3, 0, index)]);
    assert_eq!(cluster.queue.len(), 2, "{:?}", cluster.queue);
    cluster.stabilize();
    for id in 1..=3 {
        assert_eq!(cluster.node(id).commit_index(), index, "node {id}");
    }
    // Nothing is owed any more.
    cluster.node(1).tick().unwrap();
    assert!(!cluster.node(1).has_ready());
}

#[test]
fn a_commit_rides_on_the_next_proposals_append() {
    let mut cluster = settled_group();
    let first = commit_one(&mut cluster);
    let (second, _) = cluster.node(1).propose(Bytes::from_static(b"b")).unwrap();
    cluster.flush();
    assert_eq!(appends(&cluster.queue), vec![(2, 1, first), (3, 1, first)]);
    assert_eq!(cluster.queue.len(), 2, "no append for the commit alone");
    cluster.stabilize();
    assert_eq!(cluster.node(1).commit_index(), second);
    for id in [2, 3] {
        assert_eq!(cluster.node(id).commit_index(), first, "node {id}");
    }
    cluster.node(1).tick().unwrap();
    cluster.flush();
    assert_eq!(
        appends(&cluster.queue),
        vec![(2, 0, second), (3, 0, second)]
    );
    cluster.stabilize();
    for id in 1..=3 {
        assert_eq!(cluster.node(id).commit_index(), second, "node {id}");
    }
}

#[test]
fn a_heartbeat_carries_the_commit_and_no_append_follows() {
    let mut cluster = settled_group();
    let heartbeat_ticks = cluster.node(1).config().heartbeat_ticks;
    while cluster.node(1).heartbeat_elapsed + 1 < heartbeat_ticks {
        cluster.node(1).tick().unwrap();
        assert!(!cluster.node(1).has_ready(), "idle: nothing to send");
    }
    let index = commit_one(&mut cluster);
    cluster.node(1).tick().unwrap();
    cluster.flush();
    assert_eq!(appends(&cluster.queue), vec![], "{:?}", cluster.queue);
    let heartbeats: Vec<(NodeId, Index)> = cluster
        .queue
        .iter()
        .filter_map(|message| match message.body {
            MessageBody::Heartbeat { leader_commit, .. } => Some((message.to, leader_commit)),
            _ => None,
        })
        .collect();
    assert_eq!(heartbeats, vec![(2, index), (3, index)]);
    cluster.stabilize();
    for id in 1..=3 {
        assert_eq!(cluster.node(id).commit_index(), index, "node {id}");
    }
    cluster.node(1).tick().unwrap();
    assert!(!cluster.node(1).has_ready(), "nothing owed");
}

#[test]
fn a_transfer_sends_the_owed_commit_with_timeout_now_at_once() {
    let mut cluster = settled_group();
    let index = commit_one(&mut cluster);
    cluster.node(1).transfer_leadership(Some(2)).unwrap();
    cluster.flush();
    let bodies: Vec<(NodeId, &MessageBody)> = cluster
        .queue
        .iter()
        .map(|message| (message.to, &message.body))
        .collect();
    assert_eq!(appends(&cluster.queue), vec![(2, 0, index), (3, 0, index)]);
    assert_eq!(
        bodies.last(),
        Some(&(2, &MessageBody::TimeoutNow)),
        "{bodies:?}"
    );
    assert_eq!(bodies.len(), 3);
    cluster.stabilize();
    assert_eq!(cluster.leaders(), vec![2]);
    assert!(
        cluster.node(3).commit_index() >= index,
        "told by the old leader"
    );
}

#[test]
fn followers_converge_when_every_commit_only_append_is_lost() {
    let mut cluster = settled_group();
    cluster.drop_if = Some(Box::new(
        |message: &Message| matches!(&message.body, MessageBody::Append { entries, .. } if entries.is_empty()),
    ));
    for round in 0..5 {
        for _ in 0..=round {
            cluster.node(1).propose(Bytes::from_static(b"c")).unwrap();
        }
        cluster.stabilize();
        cluster.tick_all(1);
    }
    let last = cluster.node(1).last_index();
    assert_eq!(cluster.node(1).commit_index(), last);
    // The heartbeat carries the commit too.
    let heartbeat_ticks = cluster.node(1).config().heartbeat_ticks;
    cluster.tick_all(heartbeat_ticks);
    for id in 1..=3 {
        assert_eq!(cluster.node(id).commit_index(), last, "node {id}");
    }
}

#[test]
fn a_follower_that_reports_a_lower_commit_is_owed_it_again() {
    let mut cluster = settled_group();
    let index = commit_one(&mut cluster);
    cluster.tick_all(1);
    assert_eq!(cluster.node(3).commit_index(), index);
    // As if 3 restarted, its commit index back at 0: its heartbeat answer
    // says so, and the next tick sends it the commit again.
    let answer = Message {
        from: 3,
        to: 1,
        term: cluster.node(1).term(),
        body: MessageBody::HeartbeatResponse {
            read_context: None,
            commit_index: 0,
        },
    };
    cluster.node(1).step(answer).unwrap();
    assert!(!cluster.node(1).has_ready(), "not at once");
    cluster.node(1).tick().unwrap();
    cluster.flush();
    assert_eq!(appends(&cluster.queue), vec![(3, 0, index)]);
}
