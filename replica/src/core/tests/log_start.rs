//! A follower that needs entries the leader's retention deleted takes up
//! the leader's log start (`MessageBody::InstallLogStart`) instead of being
//! stranded.

use super::*;

/// A log that starts after (`start`, `start_term`), as retention leaves it,
/// with the state image the server would send beside it.
#[derive(Clone)]
struct StartLog(Rc<RefCell<StartState>>);

struct StartState {
    start: Index,
    start_term: Term,
    /// Entries `start + 1 ..`.
    entries: Vec<Entry>,
    image: Bytes,
}

impl StartLog {
    fn new(start: Index, start_term: Term, last: Index, image: &'static [u8]) -> StartLog {
        let entries = (start + 1..=last)
            .map(|index| Entry::normal(index, start_term, &b"x"[..]))
            .collect();
        StartLog(Rc::new(RefCell::new(StartState {
            start,
            start_term,
            entries,
            image: Bytes::from_static(image),
        })))
    }

    /// Carries out a Ready's writes as the server does: the new start
    /// first, then the entries.
    fn write(&self, ready: &Ready) {
        let mut state = self.0.borrow_mut();
        if let Some(start) = &ready.log_start {
            state.start = start.prev_log_index;
            state.start_term = start.prev_log_term;
            state.entries.clear();
            state.image = start.state.clone();
        }
        if let Some(first) = ready.entries.first() {
            let keep = (first.index - state.start - 1) as usize;
            state.entries.truncate(keep);
            state.entries.extend_from_slice(&ready.entries);
        }
    }
}

impl LogRead for StartLog {
    fn first_index(&self) -> Index {
        self.0.borrow().start + 1
    }
    fn last_index(&self) -> Index {
        let state = self.0.borrow();
        state.start + state.entries.len() as Index
    }
    fn term(&self, index: Index) -> Result<Option<Term>, LogReadError> {
        let state = self.0.borrow();
        if index == state.start {
            return Ok(Some(state.start_term));
        }
        if index < state.start {
            return Ok(None);
        }
        Ok(state
            .entries
            .get((index - state.start - 1) as usize)
            .map(|entry| entry.term))
    }
    fn entries(
        &self,
        from: Index,
        max_count: usize,
        _max_bytes: usize,
    ) -> Result<Vec<Entry>, LogReadError> {
        let state = self.0.borrow();
        Ok(state
            .entries
            .iter()
            .skip((from - state.start - 1) as usize)
            .take(max_count)
            .cloned()
            .collect())
    }
    fn state_image(&self) -> Result<Bytes, LogReadError> {
        Ok(self.0.borrow().image.clone())
    }
}

/// Leader 1 (its log deleted up to 10, the configuration of entry 5 in
/// force) and follower 2 with an older log, ending at 4.
struct Pair {
    nodes: [Node<StartLog>; 2],
    logs: [StartLog; 2],
    saved: [Vec<ConfigRecord>; 2],
    /// Every message delivered, for the assertions.
    seen: Vec<Message>,
}

impl Pair {
    fn new(voters: &[NodeId], learners: &[NodeId]) -> Pair {
        let leader_log = StartLog::new(10, 1, 15, b"leader offsets");
        let follower_log = StartLog::new(0, 1, 4, b"");
        let record = ConfigRecord::from_entry(5, 1, configuration(voters, learners)).unwrap();
        let hard_state = HardState {
            term: 1,
            vote: None,
        };
        let mut leader = Node::new(
            Config::new(1, vec![1, 2, 3]),
            leader_log.clone(),
            hard_state,
            1,
        )
        .unwrap();
        leader.restore_configurations(vec![record]).unwrap();
        let follower = Node::new(
            Config::new(2, vec![1, 2, 3]),
            follower_log.clone(),
            hard_state,
            2,
        )
        .unwrap();
        Pair {
            nodes: [leader, follower],
            logs: [leader_log, follower_log],
            saved: [Vec::new(), Vec::new()],
            seen: Vec::new(),
        }
    }

    fn node(&mut self, id: NodeId) -> &mut Node<StartLog> {
        &mut self.nodes[id as usize - 1]
    }

    /// Readys handled and messages delivered until nothing moves.
    fn stabilize(&mut self) {
        for _ in 0..1000 {
            let mut queue = Vec::new();
            for position in 0..2 {
                while self.nodes[position].has_ready() {
                    let ready = self.nodes[position].ready().unwrap();
                    assert!(ready.violations.is_empty(), "{:?}", ready.violations);
                    if let Some(records) = &ready.configurations {
                        self.saved[position] = saved(records);
                    }
                    self.logs[position].write(&ready);
                    if let Some(last) = ready.entries.last() {
                        self.nodes[position]
                            .on_persisted(last.index, last.term)
                            .unwrap();
                    }
                    queue.extend(ready.messages);
                    queue.extend(ready.persisted_messages);
                }
            }
            if queue.is_empty() {
                return;
            }
            for message in queue {
                self.seen.push(message.clone());
                self.node(message.to).step(message).unwrap();
            }
        }
        panic!("never settled");
    }

    fn elect_leader(&mut self) {
        for _ in 0..200 {
            self.node(1).tick().unwrap();
            self.stabilize();
            if self.node(1).role() == Role::Leader {
                return;
            }
        }
        panic!("node 1 never led");
    }

    fn installs(&self) -> usize {
        self.seen
            .iter()
            .filter(|m| matches!(m.body, MessageBody::InstallLogStart { .. }))
            .count()
    }
}

#[test]
fn a_follower_behind_the_leaders_first_index_takes_up_its_log_start() {
    let mut pair = Pair::new(&[1, 2], &[]);
    pair.elect_leader();
    assert_eq!(pair.installs(), 1);
    let follower = pair.logs[1].0.borrow();
    assert_eq!((follower.start, follower.start_term), (10, 1));
    assert_eq!(&follower.image[..], b"leader offsets");
    drop(follower);
    // The no-op of term 2 and everything after the start replicated; the
    // commit of the last of them reaches the follower on the leader's
    // next tick (nothing else was sent after it).
    pair.node(1).tick().unwrap();
    pair.stabilize();
    assert_eq!(pair.node(2).last_index(), 16);
    assert_eq!(pair.node(2).commit_index(), 16);
    assert_eq!(pair.node(1).commit_index(), 16);
    let status = pair.node(1).peer_status();
    let peer = status.iter().find(|peer| peer.id == 2).unwrap();
    assert_eq!(peer.match_index, 16);
    assert!(!peer.needs_compacted_entries);
    // The configuration in force at the start came with it, stamped there.
    assert_eq!(pair.node(2).membership(), &Membership::of_voters([1, 2]));
    let newest = pair.saved[1].last().unwrap().clone();
    assert_eq!((newest.index, newest.term), (10, 1));
    // The leader keeps the record in force at its log start.
    assert_eq!(pair.node(1).configurations().last().unwrap().index, 5);
}

#[test]
fn the_records_file_brings_the_installed_configuration_back_after_a_restart() {
    let mut pair = Pair::new(&[1, 2], &[]);
    pair.elect_leader();
    let log = pair.logs[1].clone();
    let hard_state = HardState {
        term: 2,
        vote: None,
    };
    let mut restarted = Node::new(Config::new(2, vec![1, 2, 3]), log, hard_state, 7).unwrap();
    restarted
        .restore_configurations(pair.saved[1].clone())
        .unwrap();
    assert_eq!(restarted.membership(), &Membership::of_voters([1, 2]));
    assert_eq!(restarted.commit_index(), 10, "the log start is committed");
}

#[test]
fn a_lost_log_start_is_sent_again_after_an_election_timeout_only() {
    // Node 2 a learner: the leader leads alone. Every log start sent to
    // node 2 is lost; heartbeats and their answers are not, and each
    // answer lets the leader try again: it does so once per election
    // timeout, not at every heartbeat.
    let mut pair = Pair::new(&[1], &[2]);
    for _ in 0..200 {
        pair.node(1).tick().unwrap();
        let mut queue = Vec::new();
        for position in 0..2 {
            while pair.nodes[position].has_ready() {
                let ready = pair.nodes[position].ready().unwrap();
                pair.logs[position].write(&ready);
                if let Some(last) = ready.entries.last() {
                    pair.nodes[position]
                        .on_persisted(last.index, last.term)
                        .unwrap();
                }
                queue.extend(ready.messages);
                queue.extend(ready.persisted_messages);
            }
        }
        for message in queue {
            pair.seen.push(message.clone());
            let lost = matches!(message.body, MessageBody::InstallLogStart { .. });
            if !lost {
                pair.node(message.to).step(message).unwrap();
            }
        }
    }
    assert_eq!(pair.node(1).role(), Role::Leader);
    // 200 ticks, an election timeout of 50, a heartbeat every 10.
    let installs = pair.installs();
    assert!((3..=5).contains(&installs), "{installs} log starts sent");
    assert!(pair.node(1).peer_status()[0].needs_compacted_entries);
}

/// Node 2 of {1, 2}, its log `1..=last` of term 1.
fn follower_of_1_and_2(last: Index) -> (StartLog, Node<StartLog>) {
    let log = StartLog::new(0, 1, last, b"");
    let node = Node::new(
        Config::new(2, vec![1, 2]),
        log.clone(),
        HardState::default(),
        2,
    )
    .unwrap();
    (log, node)
}

#[test]
fn a_log_start_at_or_below_the_commit_index_resets_nothing() {
    let (_, mut follower) = follower_of_1_and_2(12);
    // Entries up to 12 match the leader's and 12 is committed.
    let mut probe = append(1, 1, (12, 1), &[]);
    probe.to = 2;
    follower.step(probe).unwrap();
    let mut heartbeat = message(
        1,
        1,
        MessageBody::Heartbeat {
            leader_commit: 12,
            read_context: None,
        },
    );
    heartbeat.to = 2;
    follower.step(heartbeat).unwrap();
    let _ = follower.ready().unwrap();
    assert_eq!(follower.commit_index(), 12);
    follower
        .step(install(10, 1, configuration(&[1, 2], &[]), 12))
        .unwrap();
    let ready = follower.ready().unwrap();
    assert!(ready.log_start.is_none());
    assert_eq!(follower.last_index(), 12);
    assert_answers_success(&ready, 12);
}

/// `ready` answers the leader, once durable, that the log matches up to
/// `match_index`.
fn assert_answers_success(ready: &Ready, match_index: Index) {
    let answers: Vec<_> = ready
        .persisted_messages
        .iter()
        .map(|m| m.body.clone())
        .collect();
    assert_eq!(
        answers,
        [MessageBody::AppendResponse {
            result: AppendResult::Success { match_index }
        }]
    );
}

fn install(
    prev_log_index: Index,
    prev_log_term: Term,
    configuration: Bytes,
    commit: Index,
) -> Message {
    let mut message = message(
        1,
        1,
        MessageBody::InstallLogStart {
            prev_log_index,
            prev_log_term,
            configuration,
            state: Bytes::new(),
            leader_commit: commit,
        },
    );
    message.to = 2;
    message
}

#[test]
fn a_malformed_log_start_is_dropped_and_reported() {
    let cases = [
        (
            install(10, 1, Bytes::from_static(b"not json"), 10),
            ViolationKind::MalformedConfiguration,
        ),
        (
            install(10, 5, configuration(&[1, 2], &[]), 10),
            ViolationKind::BadEntryTerm,
        ),
        (
            install(10, 1, configuration(&[1, 2], &[]), 9),
            ViolationKind::BadEntryTerm,
        ),
    ];
    for (bad, expected) in cases {
        let (_, mut follower) = follower_of_1_and_2(2);
        follower.step(bad).unwrap();
        let ready = follower.ready().unwrap();
        let kinds: Vec<_> = ready.violations.iter().map(|v| v.kind).collect();
        assert_eq!(kinds, [expected]);
        assert!(ready.log_start.is_none());
        assert_eq!(follower.last_index(), 2, "nothing dropped");
    }
}

/// Found by the simulation (seed 3445): an append crossed the leader's
/// retention, the follower wrote entries past the new start and its answer
/// was on its way when the log start came. Dropping those entries would
/// have let the leader count them for commit.
#[test]
fn a_log_start_below_what_the_follower_matched_in_this_term_resets_nothing() {
    let (follower_log, mut follower) = follower_of_1_and_2(4);
    let mut crossing = append(1, 1, (4, 1), &[(5, 1), (6, 1), (7, 1)]);
    crossing.to = 2;
    follower.step(crossing).unwrap();
    let ready = follower.ready().unwrap();
    assert_eq!(ready.entries.len(), 3);
    follower_log.write(&ready);
    follower
        .step(install(5, 1, configuration(&[1, 2], &[]), 5))
        .unwrap();
    let ready = follower.ready().unwrap();
    assert!(ready.log_start.is_none(), "entries 6 and 7 stay");
    assert_eq!(follower.last_index(), 7);
    assert_answers_success(&ready, 7);
}

/// The leader tells its followers what some member may still need (its
/// lowest match index plus one), when it moves and once per election
/// timeout; a follower keeps what it last heard.
#[test]
fn followers_learn_the_retention_floor_from_the_leader() {
    let mut pair = Pair::new(&[1, 2], &[]);
    pair.elect_leader();
    for _ in 0..10 {
        pair.node(1).tick().unwrap();
        pair.stabilize();
    }
    let floors: Vec<Index> = pair
        .seen
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::RetentionFloor { keep_from } => Some(keep_from),
            _ => None,
        })
        .collect();
    // Node 2 matches 16 once the log start and the no-op are in.
    assert_eq!(floors.last(), Some(&17), "{floors:?}");
    assert_eq!(pair.node(2).retention_keep_from(), Some(17));
    assert_eq!(pair.node(1).retention_keep_from(), None, "a leader knows");
    // Unchanged: not sent again before an election timeout.
    let sent = floors.len();
    // The floors seen after `ticks` more leader ticks.
    let floors_after = |pair: &mut Pair, ticks: usize| {
        for _ in 0..ticks {
            pair.node(1).tick().unwrap();
            pair.stabilize();
        }
        pair.seen
            .iter()
            .filter(|m| matches!(m.body, MessageBody::RetentionFloor { .. }))
            .count()
    };
    assert_eq!(floors_after(&mut pair, 40), sent);
    assert_eq!(
        floors_after(&mut pair, 20),
        sent + 1,
        "sent again after an election timeout"
    );
    assert_eq!(
        MessageBody::RetentionFloor { keep_from: 1 }.wire_version(),
        2,
        "an older build cannot decode it"
    );
}
