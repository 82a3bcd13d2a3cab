//! The planner on hand-picked cases, then along simulated scalings: a model
//! group applies each step as the replica would, pods come and go as the
//! StatefulSet would, volumes are lost at random, and the safety rules are
//! checked at every step.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::planner::*;

const GROUP: &str = "orders";
const LAST: u64 = 5_000;
const MAX_LAG: u64 = 1_000;
const CONTACT_MS: u64 = 2_000;

fn name(ordinal: u32) -> String {
    format!("{GROUP}-{ordinal}")
}

fn member(ordinal: u32, incarnation: u64) -> ConfigMember {
    ConfigMember {
        name: name(ordinal),
        incarnation,
    }
}

fn caught_up(ordinal: u32) -> PeerProgress {
    PeerProgress {
        name: name(ordinal),
        match_index: LAST,
        last_contact_ms: 10,
    }
}

/// A group of `voters` bootstrap members (incarnation 0) led by ordinal 0,
/// every member caught up and answering, asked for `desired` replicas.
fn group(voters: u32, desired: u32) -> ScaleInput {
    ScaleInput {
        group: GROUP.into(),
        desired,
        statefulset_replicas: Some(voters),
        leader: Some(LeaderView {
            name: name(0),
            last_index: LAST,
            configuration: Configuration {
                index: 1,
                committed: true,
                voters: (0..voters).map(|o| member(o, 0)).collect(),
                learners: vec![],
            },
            peers: (1..voters).map(caught_up).collect(),
        }),
        pods: (0..voters).map(|o| pod(o, Some(0))).collect(),
        promote_max_lag: MAX_LAG,
        contact_max_ms: CONTACT_MS,
    }
}

fn pod(ordinal: u32, incarnation: Option<u64>) -> PodView {
    PodView {
        name: name(ordinal),
        ordinal,
        incarnation,
        deleting: false,
    }
}

fn leader(input: &mut ScaleInput) -> &mut LeaderView {
    input.leader.as_mut().unwrap()
}

#[test]
fn an_aligned_group_has_nothing_to_do() {
    let plan = plan(&group(3, 3));
    assert_eq!(plan.step, Step::Aligned);
    assert_eq!(plan.statefulset_replicas, 3);
}

#[test]
fn without_a_leader_nothing_changes_and_the_pods_stay() {
    let mut input = group(5, 3);
    input.leader = None;
    let plan = plan(&input);
    assert_eq!(plan.step, Step::Wait(WaitReason::NoLeader));
    assert_eq!(plan.statefulset_replicas, 5, "shrinking blind");
    input.statefulset_replicas = None;
    assert_eq!(super::planner::plan(&input).statefulset_replicas, 3);
}

#[test]
fn an_uncommitted_change_is_waited_for() {
    let mut input = group(3, 5);
    leader(&mut input).configuration.committed = false;
    assert_eq!(
        plan(&input).step,
        Step::Wait(WaitReason::ChangeNotCommitted { index: 1 })
    );
}

#[test]
fn growth_creates_the_pods_at_once_and_adds_the_lowest_first() {
    let mut input = group(3, 5);
    assert_eq!(plan(&input).statefulset_replicas, 5);
    assert_eq!(
        plan(&input).step,
        Step::Wait(WaitReason::PodNotAnswering { member: name(3) })
    );
    input.pods.push(pod(3, Some(0xabc)));
    input.pods.push(pod(4, Some(0xdef)));
    assert_eq!(
        plan(&input).step,
        Step::Change(Change::Add {
            member: name(3),
            incarnation: 0xabc
        })
    );
}

#[test]
fn a_learner_is_promoted_only_once_caught_up_and_heard_from() {
    let mut input = group(3, 5);
    input.pods.push(pod(3, Some(7)));
    input.pods.push(pod(4, Some(8)));
    let view = leader(&mut input);
    view.configuration.learners.push(member(3, 7));
    view.peers.push(PeerProgress {
        name: name(3),
        match_index: LAST - MAX_LAG - 1,
        last_contact_ms: 10,
    });
    assert_eq!(
        plan(&input).step,
        Step::Wait(WaitReason::CatchingUp {
            member: name(3),
            lag: MAX_LAG + 1
        }),
        "the next pod is not added while one catches up"
    );
    leader(&mut input).peers[2].match_index = LAST - MAX_LAG;
    assert_eq!(
        plan(&input).step,
        Step::Change(Change::Promote { member: name(3) })
    );
    // On a short log the bound is met at once: the learner must at least
    // hold the entry that added it.
    leader(&mut input).configuration.index = LAST - MAX_LAG + 1;
    assert!(matches!(
        plan(&input).step,
        Step::Wait(WaitReason::CatchingUp { .. })
    ));
    leader(&mut input).configuration.index = 1;
    leader(&mut input).peers[2].last_contact_ms = CONTACT_MS + 1;
    assert!(matches!(
        plan(&input).step,
        Step::Wait(WaitReason::CatchingUp { .. })
    ));
}

#[test]
fn shrinking_removes_the_highest_voter_and_keeps_its_pod_until_then() {
    let input = group(5, 3);
    let plan = plan(&input);
    assert_eq!(plan.statefulset_replicas, 5);
    assert_eq!(
        plan.step,
        Step::Change(Change::Remove {
            member: name(4),
            incarnation: 0,
            why: Removal::ScaledDown
        })
    );
    let mut input = input;
    leader(&mut input).configuration.voters.pop();
    let plan = super::planner::plan(&input);
    assert_eq!(plan.statefulset_replicas, 4, "pod 4 may go now");
    assert_eq!(
        plan.step,
        Step::Change(Change::Remove {
            member: name(3),
            incarnation: 0,
            why: Removal::ScaledDown
        })
    );
}

#[test]
fn surplus_learners_go_before_voters() {
    let mut input = group(5, 3);
    input.pods[3].incarnation = Some(9);
    leader(&mut input).configuration.learners.push(member(3, 9));
    leader(&mut input)
        .configuration
        .voters
        .retain(|m| m.name != name(3));
    assert_eq!(
        plan(&input).step,
        Step::Change(Change::Remove {
            member: name(3),
            incarnation: 9,
            why: Removal::ScaledDown
        })
    );
}

#[test]
fn a_leader_to_be_removed_hands_over_to_the_most_caught_up_voter_that_stays() {
    let mut input = group(5, 3);
    let view = leader(&mut input);
    view.name = name(4);
    view.peers = vec![
        PeerProgress {
            match_index: LAST - 5,
            ..caught_up(0)
        },
        caught_up(1),
        PeerProgress {
            last_contact_ms: CONTACT_MS + 1,
            ..caught_up(2)
        },
        caught_up(3),
    ];
    assert_eq!(
        plan(&input).step,
        Step::Change(Change::Transfer {
            from: name(4),
            to: name(1)
        }),
        "not 3 (leaving too), not 2 (silent), not 0 (behind)"
    );
    for peer in &mut leader(&mut input).peers {
        if peer.name != name(3) {
            peer.last_contact_ms = CONTACT_MS + 1;
        }
    }
    assert_eq!(
        plan(&input).step,
        Step::Wait(WaitReason::NoTransferTarget { from: name(4) })
    );
}

#[test]
fn a_voter_is_not_removed_when_the_rest_would_lack_a_live_majority() {
    let mut input = group(3, 1);
    leader(&mut input).peers[0].last_contact_ms = CONTACT_MS + 1; // orders-1 silent
    assert_eq!(
        plan(&input).step,
        Step::Wait(WaitReason::QuorumAtRisk {
            member: name(2),
            live: 1,
            voters: 2
        })
    );
}

#[test]
fn a_pod_back_with_an_empty_volume_is_removed_then_added_again() {
    let mut input = group(3, 3);
    input.pods[1].incarnation = Some(0x5eed);
    assert_eq!(
        plan(&input).step,
        Step::Change(Change::Remove {
            member: name(1),
            incarnation: 0,
            why: Removal::Replaced { by: 0x5eed }
        })
    );
    leader(&mut input)
        .configuration
        .voters
        .retain(|m| m.name != name(1));
    leader(&mut input).peers.retain(|p| p.name != name(1));
    assert_eq!(
        plan(&input).step,
        Step::Change(Change::Add {
            member: name(1),
            incarnation: 0x5eed
        })
    );
    // A pod being deleted may still answer under its old life: not a replacement.
    let mut input = group(3, 3);
    input.pods[1].incarnation = Some(0x5eed);
    input.pods[1].deleting = true;
    assert_eq!(plan(&input).step, Step::Aligned);
}

#[test]
fn members_that_are_not_the_groups_pods_are_removed() {
    let mut input = group(3, 3);
    leader(&mut input).configuration.voters.push(ConfigMember {
        name: "elsewhere".into(),
        incarnation: 0,
    });
    assert_eq!(
        plan(&input).step,
        Step::Change(Change::Remove {
            member: "elsewhere".into(),
            incarnation: 0,
            why: Removal::Foreign
        })
    );
    assert_eq!(ordinal_of(GROUP, "orders-01"), None);
    assert_eq!(ordinal_of(GROUP, "orders-x"), None);
    assert_eq!(ordinal_of(GROUP, "orders2-1"), None);
    assert_eq!(ordinal_of(GROUP, "orders-12"), Some(12));
}

#[test]
fn every_reason_reads_as_a_sentence() {
    let reasons = [
        WaitReason::NoLeader,
        WaitReason::ChangeNotCommitted { index: 4 },
        WaitReason::PodNotAnswering { member: name(1) },
        WaitReason::CatchingUp {
            member: name(1),
            lag: 3,
        },
        WaitReason::QuorumAtRisk {
            member: name(1),
            live: 1,
            voters: 2,
        },
        WaitReason::NoTransferTarget { from: name(0) },
    ];
    for reason in reasons {
        let text = Step::Wait(reason).to_string();
        assert!(text.len() > 20, "{text}");
    }
}

// ---- Simulated scalings ----

/// The group as the replica and the StatefulSet would make it.
#[derive(Clone, Debug)]
struct Model {
    voters: BTreeMap<u32, u64>,
    learners: BTreeMap<u32, u64>,
    leader: u32,
    /// Pods by ordinal: the incarnation of the volume each runs on.
    pods: BTreeMap<u32, u64>,
    /// Learners that have had a round to catch up.
    caught_up: Vec<u32>,
    statefulset_replicas: u32,
    next_incarnation: u64,
}

impl Model {
    fn new(replicas: u32) -> Model {
        Model {
            voters: (0..replicas).map(|o| (o, 0)).collect(),
            learners: BTreeMap::new(),
            leader: 0,
            pods: (0..replicas).map(|o| (o, 0)).collect(),
            caught_up: vec![],
            statefulset_replicas: replicas,
            next_incarnation: 1,
        }
    }

    fn input(&self, desired: u32) -> ScaleInput {
        let peer = |(&ordinal, &incarnation): (&u32, &u64)| PeerProgress {
            name: name(ordinal),
            match_index: if self.voters.contains_key(&ordinal) || self.caught_up.contains(&ordinal)
            {
                LAST
            } else {
                0
            },
            // The leader hears from a member only while its incarnation runs.
            last_contact_ms: if self.pods.get(&ordinal) == Some(&incarnation) {
                10
            } else {
                60_000
            },
        };
        ScaleInput {
            group: GROUP.into(),
            desired,
            statefulset_replicas: Some(self.statefulset_replicas),
            leader: Some(LeaderView {
                name: name(self.leader),
                last_index: LAST,
                configuration: Configuration {
                    index: 1,
                    committed: true,
                    voters: self.voters.iter().map(|(&o, &i)| member(o, i)).collect(),
                    learners: self.learners.iter().map(|(&o, &i)| member(o, i)).collect(),
                },
                peers: self
                    .voters
                    .iter()
                    .chain(&self.learners)
                    .filter(|(&o, _)| o != self.leader)
                    .map(peer)
                    .collect(),
            }),
            pods: self
                .pods
                .iter()
                .map(|(&ordinal, &incarnation)| pod(ordinal, Some(incarnation)))
                .collect(),
            promote_max_lag: MAX_LAG,
            contact_max_ms: CONTACT_MS,
        }
    }

    fn live_voters(&self) -> usize {
        self.voters
            .iter()
            .filter(|(o, i)| self.pods.get(o) == Some(i))
            .count()
    }

    /// A pod's volume is lost: it comes back empty under a new incarnation.
    /// Never the leader's, nor one that would cost the voters their live
    /// majority (then nothing can change until a person restores it).
    fn wipe(&mut self, ordinal: u32) {
        let costs_a_live_voter = self.voters.contains_key(&ordinal)
            && self.voters.get(&ordinal) == self.pods.get(&ordinal);
        if ordinal == self.leader
            || !self.pods.contains_key(&ordinal)
            || (costs_a_live_voter && self.live_voters() - 1 <= self.voters.len() / 2)
        {
            return;
        }
        self.pods.insert(ordinal, self.next_incarnation);
        self.next_incarnation += 1;
    }

    /// Carries out `plan` as the replica and the StatefulSet would, checking
    /// the rules the planner must keep.
    fn apply(&mut self, plan: &Plan, desired: u32) {
        let highest = self
            .voters
            .keys()
            .chain(self.learners.keys())
            .max()
            .copied();
        assert!(
            highest.is_none_or(|h| plan.statefulset_replicas > h),
            "the StatefulSet would delete a member's pod: {plan:?} {self:?}"
        );
        assert!(plan.statefulset_replicas >= desired);
        match &plan.step {
            Step::Change(Change::Add {
                member,
                incarnation,
            }) => {
                let ordinal = ordinal_of(GROUP, member).unwrap();
                assert!(ordinal < desired);
                assert!(
                    !self.voters.contains_key(&ordinal) && !self.learners.contains_key(&ordinal)
                );
                assert_eq!(self.pods.get(&ordinal), Some(incarnation));
                self.learners.insert(ordinal, *incarnation);
            }
            Step::Change(Change::Promote { member }) => {
                let ordinal = ordinal_of(GROUP, member).unwrap();
                assert!(
                    self.caught_up.contains(&ordinal),
                    "promoted before catching up"
                );
                let incarnation = self.learners.remove(&ordinal).unwrap();
                self.voters.insert(ordinal, incarnation);
            }
            Step::Change(Change::Remove {
                member,
                incarnation,
                why,
            }) => {
                let ordinal = ordinal_of(GROUP, member).unwrap();
                assert_ne!(
                    ordinal, self.leader,
                    "the leader removed without a hand-over"
                );
                let voter = self.voters.remove(&ordinal);
                let learner = self.learners.remove(&ordinal);
                assert_eq!(voter.or(learner), Some(*incarnation));
                if voter.is_some() {
                    let live = self.live_voters();
                    assert!(
                        live > self.voters.len() / 2,
                        "a removal left {live} live voters of {}",
                        self.voters.len()
                    );
                }
                match why {
                    Removal::ScaledDown => assert!(ordinal >= desired),
                    Removal::Replaced { by } => assert_eq!(self.pods.get(&ordinal), Some(by)),
                    Removal::Foreign => panic!("every member here is one of the pods"),
                }
                self.caught_up.retain(|&o| o != ordinal);
            }
            Step::Change(Change::Transfer { from, to }) => {
                assert_eq!(ordinal_of(GROUP, from), Some(self.leader));
                let to = ordinal_of(GROUP, to).unwrap();
                assert!(self.voters.contains_key(&to) && to < desired);
                self.leader = to;
            }
            Step::Aligned | Step::Wait(_) => {}
        }
        // A learner catches up in one round; the StatefulSet creates and
        // deletes pods (a new pod starts with an empty volume).
        self.caught_up.extend(self.learners.keys());
        self.statefulset_replicas = plan.statefulset_replicas;
        self.pods.retain(|&o, _| o < plan.statefulset_replicas);
        for ordinal in 0..plan.statefulset_replicas {
            if !self.pods.contains_key(&ordinal) {
                self.pods.insert(ordinal, self.next_incarnation);
                self.next_incarnation += 1;
            }
        }
    }

    fn aligned(&self, desired: u32) -> bool {
        self.learners.is_empty()
            && self.voters.keys().copied().eq(0..desired)
            && self.voters.iter().all(|(o, i)| self.pods.get(o) == Some(i))
    }
}

/// Plans and applies until aligned, wiping `wipes` (ordinal, at round) on the way.
fn scale_to(model: &mut Model, desired: u32, wipes: &[(u32, usize)]) {
    for round in 0..100 {
        for &(ordinal, at) in wipes {
            if at == round {
                model.wipe(ordinal);
            }
        }
        let plan = plan(&model.input(desired));
        model.apply(&plan, desired);
        if plan.step == Step::Aligned {
            assert!(model.aligned(desired), "aligned too early: {model:?}");
            assert_eq!(plan.statefulset_replicas, desired);
            return;
        }
    }
    panic!("no alignment to {desired} in 100 rounds: {model:?}");
}

#[test]
fn one_to_three_to_five_to_three() {
    let mut model = Model::new(1);
    for desired in [3, 5, 3] {
        scale_to(&mut model, desired, &[]);
    }
    assert_eq!(model.statefulset_replicas, 3);
}

#[test]
fn a_leader_on_a_high_ordinal_hands_over_before_the_shrink() {
    let mut model = Model::new(5);
    model.leader = 4;
    scale_to(&mut model, 1, &[]);
    assert_eq!(model.leader, 0);
}

proptest! {
    #[test]
    fn any_sequence_of_sizes_with_lost_volumes_aligns_safely(
        start in prop::sample::select(vec![1u32, 3, 5, 7]),
        sizes in prop::collection::vec(prop::sample::select(vec![1u32, 3, 5, 7]), 1..5),
        wipes in prop::collection::vec((0u32..7, 0usize..12), 0..4),
    ) {
        let mut model = Model::new(start);
        for desired in sizes {
            scale_to(&mut model, desired, &wipes);
        }
    }
}
