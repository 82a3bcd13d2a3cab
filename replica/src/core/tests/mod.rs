//! Scenario tests of whole nodes over a tiny in-memory network. The
//! randomized, fault-injecting tests live in `tests/simulation.rs`.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

use super::*;
use crate::entry::{Entry, HardState, Index, Term};
use crate::membership::{ConfigRecord, Membership};

#[derive(Clone, Default)]
struct SharedLog(Rc<RefCell<Vec<Entry>>>);

impl LogRead for SharedLog {
    fn first_index(&self) -> Index {
        1
    }
    fn last_index(&self) -> Index {
        self.0.borrow().len() as Index
    }
    fn term(&self, index: Index) -> Result<Option<Term>, LogReadError> {
        Ok(match index {
            0 => Some(0),
            i => self.0.borrow().get(i as usize - 1).map(|entry| entry.term),
        })
    }
    fn entries(
        &self,
        from: Index,
        max_count: usize,
        _max_bytes: usize,
    ) -> Result<Vec<Entry>, LogReadError> {
        Ok(self
            .0
            .borrow()
            .iter()
            .skip(from as usize - 1)
            .take(max_count)
            .cloned()
            .collect())
    }
}

/// Decides which messages the test network loses.
type DropFilter = Box<dyn Fn(&Message) -> bool>;

/// Nodes 1..=n, delivering messages in order; `down` nodes get nothing.
struct Cluster {
    nodes: Vec<Node<SharedLog>>,
    logs: Vec<SharedLog>,
    queue: VecDeque<Message>,
    down: BTreeSet<NodeId>,
    read_states: Vec<(NodeId, ReadState)>,
    outcomes: Vec<TransferOutcome>,
    /// Messages this returns true for are lost.
    drop_if: Option<DropFilter>,
    /// Each node's configuration records as its last Ready handed them.
    saved_configurations: Vec<Vec<crate::membership::ConfigRecord>>,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let members: Vec<NodeId> = (1..=size).collect();
        let logs: Vec<SharedLog> = (0..size).map(|_| SharedLog::default()).collect();
        let nodes = members
            .iter()
            .map(|id| {
                let config = Config::new(*id, members.clone());
                Node::new(
                    config,
                    logs[*id as usize - 1].clone(),
                    HardState::default(),
                    *id,
                )
                .unwrap()
            })
            .collect();
        Cluster {
            nodes,
            logs,
            queue: VecDeque::new(),
            down: BTreeSet::new(),
            read_states: Vec::new(),
            outcomes: Vec::new(),
            drop_if: None,
            saved_configurations: vec![Vec::new(); size as usize],
        }
    }

    /// Nodes restarting from the given logs (terms per index) and hard
    /// states, sending one entry per append.
    fn with_logs(logs: &[&[Term]], hard_states: &[HardState]) -> Cluster {
        let members: Vec<NodeId> = (1..=logs.len() as NodeId).collect();
        let mut cluster = Cluster::new(0);
        for (position, terms) in logs.iter().enumerate() {
            let id = position as NodeId + 1;
            let log = SharedLog::default();
            for (offset, term) in terms.iter().enumerate() {
                log.0
                    .borrow_mut()
                    .push(Entry::normal(offset as Index + 1, *term, &b"x"[..]));
            }
            let config = Config {
                max_batch_entries: 1,
                ..Config::new(id, members.clone())
            };
            cluster
                .nodes
                .push(Node::new(config, log.clone(), hard_states[position], id).unwrap());
            cluster.logs.push(log);
            cluster.saved_configurations.push(Vec::new());
        }
        cluster
    }

    fn node(&mut self, id: NodeId) -> &mut Node<SharedLog> {
        &mut self.nodes[id as usize - 1]
    }

    /// Handle every Ready as a server would, with instant durable writes.
    fn flush(&mut self) {
        for index in 0..self.nodes.len() {
            while self.nodes[index].has_ready() {
                let ready = self.nodes[index].ready().unwrap();
                if let Some(records) = ready.configurations {
                    self.saved_configurations[index] = records;
                }
                if let Some(first) = ready.entries.first() {
                    let mut log = self.logs[index].0.borrow_mut();
                    log.truncate(first.index as usize - 1);
                    log.extend_from_slice(&ready.entries);
                }
                self.queue.extend(ready.messages);
                self.queue.extend(ready.persisted_messages);
                if let Some(last) = ready.entries.last() {
                    self.nodes[index]
                        .on_persisted(last.index, last.term)
                        .unwrap();
                }
                let id = self.nodes[index].id();
                self.read_states
                    .extend(ready.read_states.into_iter().map(|read| (id, read)));
                self.outcomes.extend(ready.transfer_outcomes);
            }
        }
    }

    /// Deliver until quiet.
    fn stabilize(&mut self) {
        for _ in 0..10_000 {
            self.flush();
            let Some(message) = self.queue.pop_front() else {
                return;
            };
            if self.down.contains(&message.to) || self.down.contains(&message.from) {
                continue;
            }
            if self
                .drop_if
                .as_ref()
                .is_some_and(|drop_if| drop_if(&message))
            {
                continue;
            }
            let to = message.to;
            self.node(to).step(message).unwrap();
        }
        panic!("the cluster never went quiet");
    }

    fn tick_all(&mut self, ticks: u64) {
        for _ in 0..ticks {
            for index in 0..self.nodes.len() {
                let id = self.nodes[index].id();
                if !self.down.contains(&id) {
                    self.nodes[index].tick().unwrap();
                }
            }
            self.stabilize();
        }
    }

    fn elect(&mut self, id: NodeId) {
        let ticks = 4 * self.node(id).config().election_ticks;
        for _ in 0..ticks {
            self.node(id).tick().unwrap();
            self.stabilize();
            if self.node(id).role() == Role::Leader {
                return;
            }
        }
        panic!("node {id} was not elected");
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|node| node.role() == Role::Leader)
            .map(|node| node.id())
            .collect()
    }
}

#[test]
fn single_node_group_commits_on_its_own() {
    let mut cluster = Cluster::new(1);
    cluster.elect(1);
    let (index, term) = cluster.node(1).propose(Bytes::from_static(b"a")).unwrap();
    assert_eq!((index, term), (2, 1), "after the no-op at 1");
    cluster.stabilize();
    assert_eq!(cluster.node(1).commit_index(), 2);
    assert_eq!(cluster.node(1).entry_term(2).unwrap(), Some(term));
}

#[test]
fn three_nodes_elect_replicate_and_commit() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    assert_eq!(cluster.leaders(), vec![1]);
    for payload in [&b"a"[..], b"b", b"c"] {
        cluster
            .node(1)
            .propose(Bytes::copy_from_slice(payload))
            .unwrap();
    }
    cluster.stabilize();
    cluster.tick_all(10);
    for id in 1..=3 {
        assert_eq!(cluster.node(id).commit_index(), 4, "node {id}");
        assert_eq!(cluster.logs[id as usize - 1].0.borrow().len(), 4);
        assert_eq!(cluster.node(id).leader_id(), Some(1));
    }
    assert_eq!(
        cluster.node(2).propose(Bytes::new()),
        Err(ProposeError::NotLeader { leader: Some(1) })
    );
}

fn lone_follower(id: NodeId, log_terms: &[Term]) -> Node<SharedLog> {
    let log = SharedLog::default();
    for (position, term) in log_terms.iter().enumerate() {
        log.0
            .borrow_mut()
            .push(Entry::normal(position as Index + 1, *term, &b"x"[..]));
    }
    let hard_state = HardState {
        term: log_terms.last().copied().unwrap_or(0),
        vote: None,
    };
    Node::new(Config::new(id, vec![1, 2, 3]), log, hard_state, 1).unwrap()
}

fn vote_request(
    from: NodeId,
    term: Term,
    last_log_index: Index,
    last_log_term: Term,
    transfer: bool,
) -> Message {
    Message {
        from,
        to: 1,
        term,
        body: MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            leadership_transfer: transfer,
        },
    }
}

#[test]
fn vote_is_sent_only_after_it_is_persisted() {
    let mut node = lone_follower(1, &[1, 1]);
    node.step(vote_request(2, 2, 2, 1, false)).unwrap();
    let ready = node.ready().unwrap();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 2,
            vote: Some(2)
        })
    );
    assert!(
        ready.messages.is_empty(),
        "nothing may leave before the vote is durable"
    );
    assert_eq!(ready.persisted_messages.len(), 1);
    assert_eq!(
        ready.persisted_messages[0].body,
        MessageBody::VoteResponse { reject: None }
    );
    // A second candidate in the same term is refused.
    node.step(vote_request(3, 2, 5, 2, false)).unwrap();
    let ready = node.ready().unwrap();
    assert_eq!(
        ready.messages[0].body,
        MessageBody::VoteResponse {
            reject: Some(VoteRejection::AlreadyVoted)
        }
    );
}

#[test]
fn vote_needs_an_up_to_date_log() {
    let mut node = lone_follower(1, &[1, 2, 2]);
    // Older last term, longer log: refused.
    node.step(vote_request(2, 3, 9, 1, false)).unwrap();
    // Same last term, shorter log: refused.
    node.step(vote_request(3, 3, 2, 2, false)).unwrap();
    let ready = node.ready().unwrap();
    let rejections: Vec<_> = ready.messages.iter().map(|m| m.body.clone()).collect();
    let expected = MessageBody::VoteResponse {
        reject: Some(VoteRejection::LogNotUpToDate),
    };
    assert_eq!(rejections, vec![expected.clone(), expected]);
    assert_eq!(
        node.hard_state(),
        HardState {
            term: 3,
            vote: None
        }
    );
}

#[test]
fn pre_vote_changes_no_state() {
    let mut node = lone_follower(1, &[1]);
    node.step(Message {
        from: 2,
        to: 1,
        term: 2,
        body: MessageBody::PreVoteRequest {
            last_log_index: 1,
            last_log_term: 1,
        },
    })
    .unwrap();
    let ready = node.ready().unwrap();
    assert_eq!(ready.hard_state, None, "term and vote unchanged");
    assert_eq!(ready.messages.len(), 1);
    assert_eq!(ready.messages[0].term, 2);
    assert_eq!(
        ready.messages[0].body,
        MessageBody::PreVoteResponse { reject: None }
    );
    assert_eq!(node.term(), 1);
}

#[test]
fn leader_stickiness_refuses_votes_unless_transfer() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    // Node 2 hears from its leader; a vote request from 3 at a higher term is refused.
    cluster
        .node(2)
        .step(vote_request(3, 5, 100, 5, false).retarget(2))
        .unwrap();
    let ready = cluster.node(2).ready().unwrap();
    assert_eq!(
        ready.messages[0].body,
        MessageBody::VoteResponse {
            reject: Some(VoteRejection::LeaderAlive)
        }
    );
    assert_eq!(
        cluster.node(2).term(),
        1,
        "a refused vote does not raise the term"
    );
    // A TimeoutNow-initiated election skips stickiness.
    cluster
        .node(2)
        .step(vote_request(3, 5, 100, 5, true).retarget(2))
        .unwrap();
    let ready = cluster.node(2).ready().unwrap();
    assert_eq!(
        ready.persisted_messages[0].body,
        MessageBody::VoteResponse { reject: None }
    );
    assert_eq!(cluster.node(2).term(), 5);
}

impl Message {
    fn retarget(mut self, to: NodeId) -> Message {
        self.to = to;
        self
    }
}

#[test]
fn isolated_leader_steps_down_by_check_quorum() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.down.extend([2, 3]);
    let election_ticks = cluster.node(1).config().election_ticks;
    for _ in 0..election_ticks * 2 {
        cluster.node(1).tick().unwrap();
        cluster.stabilize();
    }
    assert_eq!(cluster.node(1).role(), Role::Follower);
}

#[test]
fn partitioned_follower_does_not_disrupt_with_pre_vote() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.down.insert(3);
    for _ in 0..300 {
        cluster.node(3).tick().unwrap();
        cluster.stabilize();
    }
    assert_eq!(cluster.node(3).term(), 1, "pre-vote kept the term");
    cluster.down.clear();
    cluster.tick_all(20);
    assert_eq!(cluster.leaders(), vec![1]);
    assert_eq!(cluster.node(1).term(), 1);
}

#[test]
fn leadership_transfer_to_caught_up_follower() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.node(1).propose(Bytes::from_static(b"a")).unwrap();
    cluster.node(1).transfer_leadership(Some(3)).unwrap();
    assert_eq!(
        cluster.node(1).propose(Bytes::new()),
        Err(ProposeError::Transferring)
    );
    cluster.stabilize();
    assert_eq!(cluster.leaders(), vec![3]);
    assert_eq!(
        cluster.outcomes,
        vec![TransferOutcome::SteppedDown { target: 3 }]
    );
    // The most caught-up follower is chosen when no target is given.
    cluster.node(3).transfer_leadership(None).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.leaders(), vec![1], "ties go to the lowest id");
}

#[test]
fn transfer_errors_and_timeout() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    assert_eq!(
        cluster.node(2).transfer_leadership(Some(3)),
        Err(TransferError::NotLeader { leader: Some(1) })
    );
    assert_eq!(
        cluster.node(1).transfer_leadership(Some(1)),
        Err(TransferError::AlreadyLeader(1))
    );
    assert_eq!(
        cluster.node(1).transfer_leadership(Some(9)),
        Err(TransferError::UnknownMember(9))
    );
    cluster.down.insert(2);
    cluster.node(1).transfer_leadership(Some(2)).unwrap();
    let election_ticks = cluster.node(1).config().election_ticks;
    for _ in 0..election_ticks {
        cluster.node(1).tick().unwrap();
        cluster.stabilize();
    }
    assert_eq!(
        cluster.outcomes,
        vec![TransferOutcome::Abandoned {
            target: 2,
            reason: TransferAbort::TimedOut
        }]
    );
    assert!(cluster
        .node(1)
        .propose(Bytes::from_static(b"again"))
        .is_ok());
}

#[test]
fn read_index_waits_for_noop_and_quorum() {
    let mut cluster = Cluster::new(3);
    cluster.down.extend([2, 3]);
    for _ in 0..200 {
        cluster.node(1).tick().unwrap();
        cluster.stabilize();
    }
    assert_ne!(
        cluster.node(1).role(),
        Role::Leader,
        "no leader without a quorum"
    );
    cluster.down.clear();
    cluster.elect(1);
    cluster.node(2).read_index(7).unwrap();
    cluster.flush();
    assert_eq!(
        cluster.read_states,
        vec![(
            2,
            ReadState {
                request_id: 7,
                result: Err(ReadError::NotLeader { leader: Some(1) })
            }
        )]
    );
    cluster.read_states.clear();
    cluster.node(1).propose(Bytes::from_static(b"a")).unwrap();
    cluster.stabilize();
    // Without followers the leader cannot confirm a read.
    cluster.down.extend([2, 3]);
    cluster.node(1).read_index(8).unwrap();
    cluster.stabilize();
    assert!(cluster.read_states.is_empty());
    cluster.down.clear();
    cluster.node(1).read_index(9).unwrap();
    cluster.stabilize();
    let commit = cluster.node(1).commit_index();
    assert_eq!(commit, 2);
    assert_eq!(
        cluster.read_states,
        vec![
            (
                1,
                ReadState {
                    request_id: 8,
                    result: Ok(commit)
                }
            ),
            (
                1,
                ReadState {
                    request_id: 9,
                    result: Ok(commit)
                }
            )
        ]
    );
}

#[test]
fn proposals_are_bounded() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.down.extend([2, 3]);
    let limit = cluster.node(1).config().max_pending_proposals;
    let mut refused = None;
    for attempt in 0..limit + 1 {
        if let Err(error) = cluster.node(1).propose(Bytes::from_static(b"p")) {
            refused = Some((attempt, error));
            break;
        }
    }
    assert_eq!(refused, Some((limit, ProposeError::TooManyPending)));
}

#[test]
fn follower_truncates_uncommitted_suffix_and_stale_persist_is_ignored() {
    let mut node = lone_follower(1, &[1, 1, 1]);
    // A leader of term 2 whose log diverges after index 1.
    node.step(Message {
        from: 2,
        to: 1,
        term: 2,
        body: MessageBody::Append {
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![Entry::normal(2, 2, &b"new"[..])],
            leader_commit: 1,
        },
    })
    .unwrap();
    let ready = node.ready().unwrap();
    assert_eq!(ready.entries, vec![Entry::normal(2, 2, &b"new"[..])]);
    assert_eq!(node.last_index(), 2);
    assert_eq!(ready.commit_index, Some(1));
    node.on_persisted(3, 1).unwrap();
    assert_eq!(
        node.persisted_index(),
        1,
        "a report about the replaced entries is stale"
    );
    node.on_persisted(2, 2).unwrap();
    assert_eq!(node.persisted_index(), 2);
}

#[test]
fn bad_hard_state_and_config_are_errors() {
    let log = SharedLog::default();
    let hard_state = HardState {
        term: 1,
        vote: Some(9),
    };
    // A vote for a member since removed is a vote all the same.
    let result = Node::new(Config::new(1, vec![1, 2, 3]), log.clone(), hard_state, 0);
    assert!(result.is_ok());
    let result = Node::new(Config::new(4, vec![1, 2, 3]), log, HardState::default(), 0);
    assert!(matches!(
        result,
        Err(CoreError::Config(ConfigError::NotAMember(4)))
    ));
}

/// Raft's Figure 8: an entry of an earlier term replicated to a majority is
/// not committed by counting, because a leader of a newer term that lacks it
/// can still be elected and overwrite it.
#[test]
fn earlier_term_entry_is_not_committed_by_counting() {
    let state = |term, vote| HardState { term, vote };
    let mut cluster = Cluster::with_logs(
        &[&[1, 2], &[1], &[1], &[1], &[1, 3]],
        &[
            state(3, Some(1)),
            state(3, None),
            state(3, None),
            state(3, None),
            state(3, Some(5)),
        ],
    );
    cluster.down.extend([4, 5]);
    // Nodes 2 and 3 get entry 2 but never the new leader's no-op (index 3).
    let logs = cluster.logs.clone();
    cluster.drop_if = Some(Box::new(move |message: &Message| {
        (message.to == 2 || message.to == 3)
            && logs[message.to as usize - 1].0.borrow().len() >= 2
            && matches!(&message.body, MessageBody::Append { entries, .. } if entries.iter().any(|e| e.index == 3))
    }));
    cluster.elect(1);
    assert_eq!(cluster.node(1).term(), 4);
    cluster.stabilize();
    // Entry 2 (term 2) is on nodes 1, 2 and 3, a majority...
    assert_eq!(cluster.logs[1].0.borrow().len(), 2);
    assert_eq!(cluster.logs[2].0.borrow().len(), 2);
    // ...but must not be committed: its term is not the leader's.
    assert_eq!(cluster.node(1).commit_index(), 0);
    // Why: with node 1 gone, node 5 (last term 3) wins and replaces entry 2.
    cluster.down.clear();
    cluster.down.insert(1);
    // Let nodes 2-4 forget their leader without electing one of their own.
    cluster.drop_if = Some(Box::new(|message: &Message| {
        matches!(message.body, MessageBody::PreVoteRequest { .. })
    }));
    for _ in 0..2 * cluster.node(2).config().election_ticks {
        for id in 2..=4 {
            cluster.node(id).tick().unwrap();
        }
        cluster.stabilize();
    }
    cluster.drop_if = None;
    cluster.elect(5);
    cluster.stabilize();
    assert_eq!(cluster.node(3).entry_term(2).unwrap(), Some(3));
}

/// A candidate's own term and vote are durable before anyone can vote for it.
#[test]
fn vote_requests_wait_for_the_candidates_own_vote_to_persist() {
    let mut node = lone_follower(1, &[1]);
    let election_ticks = node.config().election_ticks;
    for _ in 0..2 * election_ticks {
        node.tick().unwrap();
    }
    assert_eq!(node.role(), Role::PreCandidate);
    let ready = node.ready().unwrap();
    assert_eq!(ready.hard_state, None, "pre-vote persists nothing");
    assert_eq!(ready.messages.len(), 2);
    node.step(Message {
        from: 2,
        to: 1,
        term: 2,
        body: MessageBody::PreVoteResponse { reject: None },
    })
    .unwrap();
    assert_eq!(node.role(), Role::Candidate);
    let ready = node.ready().unwrap();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 2,
            vote: Some(1)
        })
    );
    assert!(ready.messages.is_empty());
    assert_eq!(ready.persisted_messages.len(), 2);
    assert!(ready
        .persisted_messages
        .iter()
        .all(|message| matches!(message.body, MessageBody::VoteRequest { .. })));
}

// ----- peer messages that break the protocol: dropped, reported, survived -----

fn message(from: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to: 1,
        term,
        body,
    }
}

fn append(from: NodeId, term: Term, prev: (Index, Term), entries: &[(Index, Term)]) -> Message {
    message(
        from,
        term,
        MessageBody::Append {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries: entries
                .iter()
                .map(|(index, term)| Entry::normal(*index, *term, &b"x"[..]))
                .collect(),
            leader_commit: 0,
        },
    )
}

/// Steps `bad` into `node` and returns the violations it reported.
fn violations_of(node: &mut Node<SharedLog>, bad: Message) -> Vec<ViolationKind> {
    node.step(bad).unwrap();
    let ready = node.ready().unwrap();
    ready.violations.iter().map(|v| v.kind).collect()
}

/// A follower of node 2 in term 2 with a log of terms [1, 1, 2], all of it
/// matched by that leader.
fn follower_of_2() -> Node<SharedLog> {
    let mut node = lone_follower(1, &[1, 1, 2]);
    node.step(append(2, 2, (3, 2), &[])).unwrap();
    let ready = node.ready().unwrap();
    assert!(ready.violations.is_empty());
    assert_eq!(node.leader_id(), Some(2));
    node
}

#[test]
fn a_second_leader_in_a_term_is_dropped_and_reported() {
    let mut node = follower_of_2();
    let kinds = violations_of(&mut node, append(3, 2, (3, 2), &[(4, 2)]));
    assert_eq!(kinds, vec![ViolationKind::SecondLeader]);
    assert_eq!(node.leader_id(), Some(2), "still follows the first leader");
    assert_eq!(node.last_index(), 3, "nothing appended");
    let heartbeat = message(
        3,
        2,
        MessageBody::Heartbeat {
            leader_commit: 3,
            read_context: None,
        },
    );
    assert_eq!(
        violations_of(&mut node, heartbeat),
        vec![ViolationKind::SecondLeader]
    );
    // A leader told of another leader in its own term drops that too.
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    let term = cluster.node(1).term();
    let kinds = violations_of(cluster.node(1), append(2, term, (0, 0), &[]));
    assert_eq!(kinds, vec![ViolationKind::SecondLeader]);
    assert_eq!(cluster.node(1).role(), Role::Leader);
}

#[test]
fn acknowledgements_past_the_last_index_are_dropped() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    let term = cluster.node(1).term();
    let last = cluster.node(1).last_index();
    for result in [
        AppendResult::Success { match_index: 1000 },
        AppendResult::Reject {
            rejected_index: 1000,
            hint_index: 5,
            hint_term: 1,
        },
    ] {
        let bad = message(2, term, MessageBody::AppendResponse { result });
        let kinds = violations_of(cluster.node(1), bad);
        assert_eq!(kinds, vec![ViolationKind::AckPastLastIndex]);
    }
    let status = cluster.node(1).peer_status();
    assert!(status.iter().all(|peer| peer.match_index <= last));
    assert_eq!(cluster.node(1).commit_index(), last, "commit unchanged");
}

#[test]
fn malformed_append_entries_are_dropped() {
    let mut node = follower_of_2();
    let gap = append(2, 2, (3, 2), &[(4, 2), (6, 2)]);
    assert_eq!(
        violations_of(&mut node, gap),
        vec![ViolationKind::NonContiguousEntries]
    );
    let wrong_start = append(2, 2, (3, 2), &[(5, 2)]);
    assert_eq!(
        violations_of(&mut node, wrong_start),
        vec![ViolationKind::NonContiguousEntries]
    );
    let overflow = append(2, 2, (u64::MAX, 2), &[(0, 2)]);
    assert_eq!(
        violations_of(&mut node, overflow),
        vec![ViolationKind::NonContiguousEntries]
    );
    let newer_than_leader = append(2, 2, (3, 2), &[(4, 9)]);
    assert_eq!(
        violations_of(&mut node, newer_than_leader),
        vec![ViolationKind::BadEntryTerm]
    );
    let terms_go_back = append(2, 2, (3, 2), &[(4, 2), (5, 1)]);
    assert_eq!(
        violations_of(&mut node, terms_go_back),
        vec![ViolationKind::BadEntryTerm]
    );
    assert_eq!(node.last_index(), 3, "nothing appended");
    // Still takes a good append.
    node.step(append(2, 2, (3, 2), &[(4, 2)])).unwrap();
    assert_eq!(node.last_index(), 4);
}

#[test]
fn a_leader_contradicting_what_it_confirmed_is_dropped() {
    let mut node = follower_of_2();
    // Entry 3 (term 2) matched this leader; it now claims a different one.
    let contradiction = append(2, 2, (2, 1), &[(3, 1)]);
    assert_eq!(
        violations_of(&mut node, contradiction),
        vec![ViolationKind::LeaderContradiction]
    );
    assert_eq!(node.entry_term(3).unwrap(), Some(2));
    // Committing what it matched does not panic either.
    let heartbeat = message(
        2,
        2,
        MessageBody::Heartbeat {
            leader_commit: 1_000,
            read_context: None,
        },
    );
    node.step(heartbeat).unwrap();
    assert_eq!(node.commit_index(), 3);
}

#[test]
fn an_unknown_read_context_is_dropped() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    let term = cluster.node(1).term();
    let bad = message(
        2,
        term,
        MessageBody::HeartbeatResponse {
            read_context: Some(77),
            commit_index: 0,
        },
    );
    assert_eq!(
        violations_of(cluster.node(1), bad),
        vec![ViolationKind::UnknownReadContext]
    );
}

// ----- the leader's commit as told, for readiness -----

#[test]
fn followers_learn_the_leaders_commit_beyond_their_own_log() {
    let mut node = lone_follower(1, &[1]);
    assert_eq!(node.leader_commit_index(), None);
    assert!(!node.heard_from_leader());
    let heartbeat = message(
        2,
        1,
        MessageBody::Heartbeat {
            leader_commit: 16_000,
            read_context: None,
        },
    );
    node.step(heartbeat).unwrap();
    assert!(node.heard_from_leader());
    assert_eq!(node.leader_commit_index(), Some(16_000), "as sent");
    assert_eq!(node.commit_index(), 0, "commits nothing it has not matched");
    // The leader sends its commit as it is, not clamped to the follower.
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.down.insert(3);
    for _ in 0..5 {
        cluster.node(1).propose(Bytes::from_static(b"a")).unwrap();
    }
    cluster.stabilize();
    let commit = cluster.node(1).commit_index();
    assert_eq!(commit, 6);
    for _ in 0..cluster.node(1).config().heartbeat_ticks {
        cluster.node(1).tick().unwrap();
    }
    let ready = cluster.node(1).ready().unwrap();
    let to_3 = ready
        .messages
        .iter()
        .find(|m| m.to == 3 && matches!(m.body, MessageBody::Heartbeat { .. }));
    assert!(
        matches!(to_3.map(|m| &m.body), Some(MessageBody::Heartbeat { leader_commit, .. }) if *leader_commit == commit),
        "{to_3:?}"
    );
    assert_eq!(cluster.node(1).leader_commit_index(), Some(commit));
}

// ----- ReadIndex under loss -----

#[test]
fn a_read_whose_round_was_lost_is_confirmed_by_the_next_heartbeat() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.stabilize();
    // The first round's heartbeats are lost; nothing else is.
    let lost = Rc::new(RefCell::new(true));
    let lose = lost.clone();
    cluster.drop_if = Some(Box::new(move |message: &Message| {
        *lose.borrow()
            && matches!(
                message.body,
                MessageBody::Heartbeat {
                    read_context: Some(_),
                    ..
                }
            )
    }));
    cluster.node(1).read_index(5).unwrap();
    cluster.stabilize();
    assert!(cluster.read_states.is_empty());
    *lost.borrow_mut() = false;
    let heartbeat_ticks = cluster.node(1).config().heartbeat_ticks;
    cluster.tick_all(heartbeat_ticks);
    let commit = cluster.node(1).commit_index();
    assert_eq!(
        cluster.read_states,
        vec![(
            1,
            ReadState {
                request_id: 5,
                result: Ok(commit)
            }
        )]
    );
}

#[test]
fn a_read_that_cannot_be_confirmed_times_out() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.stabilize();
    // Every answer to a read round is lost while appends flow: the leader
    // keeps its quorum (check-quorum) yet can never confirm the read.
    cluster.drop_if = Some(Box::new(|message: &Message| {
        matches!(
            message.body,
            MessageBody::HeartbeatResponse {
                read_context: Some(_),
                ..
            }
        )
    }));
    cluster.node(1).read_index(6).unwrap();
    let election_ticks = cluster.node(1).config().election_ticks;
    for _ in 0..3 * election_ticks {
        cluster.node(1).propose(Bytes::from_static(b"a")).unwrap();
        cluster.tick_all(1);
        if !cluster.read_states.is_empty() {
            break;
        }
    }
    assert_eq!(cluster.node(1).role(), Role::Leader);
    assert_eq!(
        cluster.read_states,
        vec![(
            1,
            ReadState {
                request_id: 6,
                result: Err(ReadError::TimedOut)
            }
        )]
    );
}

// ----- failover when the leader's connection closes -----

#[test]
fn a_closed_leader_connection_starts_a_pre_vote_within_a_heartbeat() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.stabilize();
    let heartbeat_ticks = cluster.node(2).config().heartbeat_ticks;
    let election_ticks = cluster.node(2).config().election_ticks;
    assert!(heartbeat_ticks < election_ticks);
    cluster.down.insert(1);
    // Node 2 sees the leader's connection close; node 3 does not (yet).
    cluster.node(2).peer_connection_closed(1).unwrap();
    assert_eq!(cluster.node(2).leader_id(), None);
    cluster.node(3).peer_connection_closed(2).unwrap();
    assert_eq!(cluster.node(3).leader_id(), Some(1), "not its leader");
    for _ in 0..heartbeat_ticks {
        cluster.node(2).tick().unwrap();
        cluster.stabilize();
    }
    // Node 3 still counts on its leader: stickiness refuses the pre-vote,
    // so nobody's term moved.
    assert_ne!(cluster.node(2).role(), Role::Candidate);
    assert_eq!((cluster.node(2).term(), cluster.node(3).term()), (1, 1));
    assert_eq!(cluster.node(3).leader_id(), Some(1));
    // Once node 3 sees the close too, the next early campaign wins.
    cluster.node(3).peer_connection_closed(1).unwrap();
    cluster.node(2).peer_connection_closed(1).unwrap();
    let mut ticks = 0;
    // (Node 1, down, still thinks it leads term 1.)
    while ![2, 3]
        .iter()
        .any(|id| cluster.node(*id).role() == Role::Leader)
    {
        cluster.node(2).tick().unwrap();
        cluster.node(3).tick().unwrap();
        cluster.stabilize();
        ticks += 1;
        assert!(
            ticks < election_ticks,
            "no early election: {:?} {:?} terms {} {}",
            cluster.node(2).role(),
            cluster.node(3).role(),
            cluster.node(2).term(),
            cluster.node(3).term()
        );
    }
}

// ----- membership changes: records across crashes, a leader removing itself -----

use self::membership::payload as configuration;

fn configuration_entry(index: Index, term: Term, voters: &[NodeId], learners: &[NodeId]) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Configuration,
        payload: configuration(voters, learners),
    }
}

/// What the server's records file holds: the records but the bootstrap one.
fn saved(records: &[ConfigRecord]) -> Vec<ConfigRecord> {
    records.iter().filter(|r| r.index > 0).cloned().collect()
}

/// Node 1 of bootstrap group `members` restarting from `entries` (durable)
/// and the saved `records`.
fn restarted(members: &[NodeId], entries: &[Entry], records: &[ConfigRecord]) -> Node<SharedLog> {
    let log = SharedLog::default();
    log.0.borrow_mut().extend_from_slice(entries);
    let hard_state = HardState {
        term: entries.last().map_or(0, |entry| entry.term),
        vote: None,
    };
    let mut node = Node::new(Config::new(1, members.to_vec()), log, hard_state, 1).unwrap();
    node.restore_configurations(saved(records)).unwrap();
    node
}

/// Found by the simulation (seed 514): the first configuration entry,
/// uncommitted, was the only record in the file (the bootstrap record is
/// not saved); a new leader truncated it after a restart, which left no
/// record at all, and the member kept counting with the truncated set.
#[test]
fn a_truncated_first_configuration_brings_the_bootstrap_set_back_after_a_restart() {
    let entries = [
        Entry::normal(1, 1, &b"x"[..]),
        configuration_entry(2, 1, &[1, 2], &[]),
    ];
    let record = ConfigRecord::from_entry(2, 1, entries[1].payload.clone()).unwrap();
    let mut node = restarted(&[1, 2, 3], &entries, &[record]);
    assert_eq!(node.membership(), &Membership::of_voters([1, 2]));
    // Leader 2 of term 2 replaces entry 2.
    node.step(append(2, 2, (1, 1), &[(2, 2)])).unwrap();
    let ready = node.ready().unwrap();
    assert!(ready.violations.is_empty());
    assert_eq!(node.membership(), &Membership::of_voters([1, 2, 3]));
    assert_eq!(node.configurations().len(), 1);
    assert_eq!(node.configurations()[0].index, 0);
}

/// Found by the simulation (seed 134): a follower learnt that entry 3 (a
/// configuration) committed before its own copy was durable, pruned the
/// record of entry 2 from its file, and crashed losing entry 3: at restart
/// no record was left and it counted with the bootstrap set, though its log
/// holds entry 2.
#[test]
fn a_committed_configuration_not_yet_durable_here_keeps_the_one_before_on_file() {
    let entries = [
        Entry::normal(1, 1, &b"x"[..]),
        configuration_entry(2, 1, &[1, 2], &[]),
    ];
    let record_2 = ConfigRecord::from_entry(2, 1, entries[1].payload.clone()).unwrap();
    let mut node = restarted(&[1, 2, 3], &entries, &[record_2]);
    let entry_3 = configuration_entry(3, 1, &[1, 2], &[4]);
    node.step(Message {
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::Append {
            prev_log_index: 2,
            prev_log_term: 1,
            entries: vec![entry_3.clone()],
            leader_commit: 3,
        },
    })
    .unwrap();
    let ready = node.ready().unwrap();
    assert_eq!(
        ready.commit_index,
        Some(3),
        "committed before it is durable"
    );
    let file = saved(&ready.configurations.expect("the records changed"));
    let indexes: Vec<Index> = file.iter().map(|record| record.index).collect();
    assert_eq!(indexes, [2, 3], "entry 2's record stays until 3 is durable");
    // A crash now loses entry 3: the restarted member counts with entry 2.
    let after_crash = restarted(&[1, 2, 3], &entries, &file);
    assert_eq!(after_crash.membership(), &Membership::of_voters([1, 2]));
    // Entry 3 durable here: entry 2's record stays all the same, as the
    // log starts at 1 (the record in force at the log start is kept for a
    // follower that would need it; see `log_start`).
    node.on_persisted(3, 1).unwrap();
    let ready = node.ready().unwrap();
    assert_eq!(ready.configurations, None);
    let indexes: Vec<Index> = node.configurations().iter().map(|r| r.index).collect();
    assert_eq!(indexes, [0, 2, 3]);
}

/// Found by the simulation (seed 34): leader 1 of {1, 2} appended its own
/// removal ({2}) and entries node 2 never got, then restarted. Node 2
/// needed node 1's vote and was refused for its shorter log; node 1, out of
/// its newest configuration, never campaigned: no leader, ever. Node 1 now
/// campaigns with the new configuration's votes, commits its removal and
/// hands over.
#[test]
fn a_leader_that_removed_itself_and_restarted_commits_its_removal_and_hands_over() {
    let mut cluster = Cluster::new(2);
    cluster.elect(1);
    cluster.down.insert(2);
    for payload in [&b"a"[..], b"b"] {
        cluster
            .node(1)
            .propose(Bytes::copy_from_slice(payload))
            .unwrap();
    }
    let (removal, _) = cluster
        .node(1)
        .propose_configuration(configuration(&[2], &[]))
        .unwrap();
    cluster.stabilize();
    // Node 1 restarts from its log and its records.
    let records = saved(cluster.node(1).configurations());
    let hard_state = cluster.node(1).hard_state();
    let log = cluster.logs[0].clone();
    cluster.nodes[0] = Node::new(Config::new(1, vec![1, 2]), log, hard_state, 1).unwrap();
    cluster.node(1).restore_configurations(records).unwrap();
    assert!(!cluster.node(1).membership().contains(1));
    cluster.down.remove(&2);
    let election_ticks = cluster.node(2).config().election_ticks;
    cluster.tick_all(10 * election_ticks);
    assert_eq!(cluster.leaders(), vec![2]);
    assert_eq!(cluster.node(2).membership(), &Membership::of_voters([2]));
    assert!(cluster.node(2).commit_index() > removal);
    assert_eq!(cluster.node(1).role(), Role::Follower);
}

/// Found by the simulation (seed 14, with crashes right after truncations):
/// a new leader replaced entry 39, a configuration, on node 3; the records
/// without it were saved before the truncation was durable, node 3 crashed
/// with entry 39 still in its durable log, and counted with the previous
/// configuration. The records of replaced entries now stay on file until
/// what replaced them is durable.
#[test]
fn a_replaced_configuration_keeps_its_record_until_the_truncation_is_durable() {
    let old_log = [
        Entry::normal(1, 1, &b"x"[..]),
        configuration_entry(2, 1, &[1, 2, 3], &[]),
        configuration_entry(3, 1, &[1, 2], &[]),
    ];
    let records: Vec<ConfigRecord> = old_log[1..]
        .iter()
        .map(|entry| ConfigRecord::from_entry(entry.index, entry.term, entry.payload.clone()))
        .collect::<Result<_, _>>()
        .unwrap();
    let mut node = restarted(&[1, 2, 3], &old_log, &records);
    assert_eq!(node.membership(), &Membership::of_voters([1, 2]));
    // Leader 2 of term 2 replaces entry 3.
    node.step(append(2, 2, (2, 1), &[(3, 2)])).unwrap();
    assert_eq!(node.membership(), &Membership::of_voters([1, 2, 3]));
    let ready = node.ready().unwrap();
    let file = saved(&ready.configurations.expect("the records changed"));
    assert_eq!(
        file.last().map(|record| record.index),
        Some(2),
        "the last record is the one in force"
    );
    // A crash before the truncation is durable keeps the old entry 3.
    let after_crash = restarted(&[1, 2, 3], &old_log, &file);
    assert_eq!(after_crash.membership(), &Membership::of_voters([1, 2]));
    // Durable, the truncation takes the record of entry 3 with it.
    let new_log = [
        old_log[0].clone(),
        old_log[1].clone(),
        Entry::normal(3, 2, &b"x"[..]),
    ];
    let after_sync = restarted(&[1, 2, 3], &new_log, &file);
    assert_eq!(after_sync.membership(), &Membership::of_voters([1, 2, 3]));
    node.on_persisted(3, 2).unwrap();
    let ready = node.ready().unwrap();
    let file = saved(&ready.configurations.expect("the replaced record goes"));
    let indexes: Vec<Index> = file.iter().map(|record| record.index).collect();
    assert_eq!(indexes, [2]);
}

/// Found by the simulation (seed 3491): the only voter won its term on its
/// own vote and sent appends to its learner before the term was durable,
/// crashed, restarted at the term before, won the same term again and sent
/// other entries under it: the learner held two different entries 128@8.
/// Such a leader now sends nothing before the Ready that carries its term
/// is durable.
#[test]
fn a_leader_elected_by_its_own_vote_sends_only_once_its_term_is_durable() {
    let entries = [configuration_entry(1, 1, &[1], &[2])];
    let record = ConfigRecord::from_entry(1, 1, entries[0].payload.clone()).unwrap();
    let mut node = restarted(&[1], &entries, &[record]);
    let election_ticks = node.config().election_ticks;
    for _ in 0..2 * election_ticks {
        node.tick().unwrap();
    }
    assert_eq!(node.role(), Role::Leader);
    let ready = node.ready().unwrap();
    assert_eq!(ready.hard_state.map(|state| state.term), Some(2));
    let noop = ready.entries.last().expect("the no-op").clone();
    assert!(
        ready.messages.iter().all(|message| message.to != 2),
        "nothing to the learner before the term is durable: {:?}",
        ready.messages
    );
    assert!(ready
        .persisted_messages
        .iter()
        .any(|message| message.to == 2 && matches!(message.body, MessageBody::Append { .. })));
    // Once the no-op (and so the term) is durable, it sends at once again.
    node.on_persisted(noop.index, noop.term).unwrap();
    for _ in 0..node.config().heartbeat_ticks {
        node.tick().unwrap();
    }
    let ready = node.ready().unwrap();
    assert!(ready
        .messages
        .iter()
        .any(|message| message.to == 2 && matches!(message.body, MessageBody::Heartbeat { .. })));
}

/// Node 2 of bootstrap group {1, 2, 3}, whose log has its removal ({1, 3}
/// at 2), known committed: leader 1 of term 1 said so.
fn removed_member_2() -> Node<SharedLog> {
    let entries = [
        Entry::normal(1, 1, &b"x"[..]),
        configuration_entry(2, 1, &[1, 3], &[]),
    ];
    let log = SharedLog::default();
    log.0.borrow_mut().extend_from_slice(&entries);
    let hard_state = HardState {
        term: 1,
        vote: None,
    };
    let mut node = Node::new(Config::new(2, vec![1, 2, 3]), log, hard_state, 2).unwrap();
    let record = ConfigRecord::from_entry(2, 1, entries[1].payload.clone()).unwrap();
    node.restore_configurations(vec![record]).unwrap();
    node.step(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_log_index: 2,
            prev_log_term: 1,
            entries: Vec::new(),
            leader_commit: 2,
        },
    })
    .unwrap();
    node.ready().unwrap();
    assert_eq!(node.commit_index(), 2);
    assert_eq!(node.leader_id(), Some(1));
    node
}

fn vote_answers(node: &mut Node<SharedLog>) -> Vec<MessageBody> {
    let ready = node.ready().unwrap();
    ready
        .messages
        .into_iter()
        .chain(ready.persisted_messages)
        .map(|message| message.body)
        .collect()
}

/// Found by the simulation (seed 759 with the vote-durability plant, which
/// only changed its course): node 2, removed at 99 and knowing it, was added
/// back as a learner and promoted ({1, 2}) by entries it had not received
/// when leader 1 crashed. Node 1 needed its vote and node 2 refused it as
/// "not a member": no leader, ever. A member votes whatever its own
/// configuration says (the dissertation's rule); a candidate whose
/// configuration leaves it out does not count the vote anyway.
#[test]
fn a_member_that_knows_its_removal_committed_still_votes() {
    let mut node = removed_member_2();
    assert!(!node.membership().contains(2));
    // Candidate 1's log is longer: it may hold a configuration adding 2 back.
    node.step(Message {
        from: 1,
        to: 2,
        term: 2,
        body: MessageBody::VoteRequest {
            last_log_index: 5,
            last_log_term: 1,
            leadership_transfer: true,
        },
    })
    .unwrap();
    assert_eq!(
        vote_answers(&mut node),
        [MessageBody::VoteResponse { reject: None }]
    );
}

/// Found with the same seed: a learner or removed member that stopped
/// hearing from its leader only restarted its timer, kept the leader and
/// answered "leader alive" for most of every election timeout, forever.
#[test]
fn a_member_that_does_not_campaign_forgets_a_silent_leader() {
    let mut node = removed_member_2();
    let election_ticks = node.config().election_ticks;
    for _ in 0..2 * election_ticks {
        node.tick().unwrap();
    }
    assert_eq!(node.leader_id(), None);
    node.step(Message {
        from: 1,
        to: 2,
        term: 2,
        body: MessageBody::PreVoteRequest {
            last_log_index: 5,
            last_log_term: 1,
        },
    })
    .unwrap();
    assert_eq!(
        vote_answers(&mut node),
        [MessageBody::PreVoteResponse { reject: None }]
    );
}

mod commit_carry;
mod log_start;
mod membership;

// ----- pipelined appends that arrive out of order -----

/// The appends to `to` among the messages queued now.
fn appends_to(cluster: &Cluster, to: NodeId) -> usize {
    cluster
        .queue
        .iter()
        .filter(|m| m.to == to && matches!(m.body, MessageBody::Append { .. }))
        .count()
}

/// Single-entry appends to a follower arrive last first: it rejects all
/// but the first, each rejection naming its log end. The first rejection
/// has the leader resend after that end, still pipelining; the others of
/// the same window are stale and change nothing. (Before, each rejection
/// dropped the leader to probing from the match point and each ack sent a
/// new window: the simulation's seed 10903 caught up one or two entries
/// per window and missed its liveness bound.)
#[test]
fn stale_gap_rejections_of_a_reordered_window_resend_once_and_keep_pipelining() {
    let mut cluster = Cluster::with_logs(&[&[], &[], &[]], &[HardState::default(); 3]);
    cluster.elect(1);
    cluster.stabilize();
    let start = cluster.node(1).last_index();
    for _ in 0..6 {
        cluster.node(1).propose(Bytes::from_static(b"e")).unwrap();
    }
    cluster.flush();
    let (to_2, others): (Vec<Message>, Vec<Message>) =
        cluster.queue.drain(..).partition(|m| m.to == 2);
    cluster.queue.extend(others);
    assert_eq!(to_2.len(), 6, "one entry per append");
    for append in to_2.into_iter().rev() {
        cluster.node(2).step(append).unwrap();
    }
    cluster.flush();
    let (answers, others): (Vec<Message>, Vec<Message>) =
        cluster.queue.drain(..).partition(|m| m.from == 2);
    cluster.queue.extend(others);
    let rejections: Vec<Message> = answers
        .iter()
        .filter(|m| {
            matches!(
                m.body,
                MessageBody::AppendResponse {
                    result: AppendResult::Reject { .. }
                }
            )
        })
        .cloned()
        .collect();
    assert_eq!(
        rejections.len(),
        5,
        "all but the first rejected: {answers:?}"
    );
    let state_of_2 = |cluster: &Cluster| {
        let status = cluster.nodes[0].peer_status();
        let peer = status.iter().find(|p| p.id == 2).expect("peer 2");
        (peer.state, peer.match_index, peer.next_index)
    };
    let mut sent = Vec::new();
    for rejection in rejections {
        let before = appends_to(&cluster, 2);
        cluster.node(1).step(rejection).unwrap();
        cluster.flush();
        sent.push(appends_to(&cluster, 2) - before);
        let (state, match_index, next_index) = state_of_2(&cluster);
        assert_eq!(state, ProgressState::Replicate, "sent {sent:?}");
        assert_eq!(match_index, start, "a rejection moves no match point");
        assert!(next_index > match_index);
    }
    assert_eq!(
        sent,
        vec![6, 0, 0, 0, 0],
        "the window resent once after the follower's end, the rest stale"
    );
    // The ack of the one entry that got through, and the resent window.
    cluster.queue.extend(answers.into_iter().filter(|m| {
        matches!(
            m.body,
            MessageBody::AppendResponse {
                result: AppendResult::Success { .. }
            }
        )
    }));
    cluster.stabilize();
    cluster.tick_all(10);
    let last = cluster.node(1).last_index();
    assert_eq!(last, start + 6);
    for id in 1..=3 {
        assert_eq!(cluster.node(id).last_index(), last, "node {id}");
        assert_eq!(cluster.node(id).commit_index(), last, "node {id}");
    }
}
