//! The next step of a membership change, from plain facts: the leader's
//! configuration, each pod's answer and `spec.replicas`. No client, no
//! clock, so every case is a unit test.

use std::fmt;

/// Everything the planner looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleInput {
    /// The group's name: its members are `<group>-<ordinal>`.
    pub group: String,
    /// `spec.replicas`.
    pub desired: u32,
    /// The StatefulSet's `spec.replicas` now; `None` before it exists.
    pub statefulset_replicas: Option<u32>,
    /// The leader's view; `None` while no leader is known.
    pub leader: Option<LeaderView>,
    /// What each pod of the StatefulSet answered, by ordinal.
    pub pods: Vec<PodView>,
    /// Entries behind the leader's last index a learner may be and be promoted.
    pub promote_max_lag: u64,
    /// A member the leader has not heard from for longer than this counts as
    /// down (for promotion and for the quorum left after a removal).
    pub contact_max_ms: u64,
}

/// The leader's `/status`, the parts the planner uses.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderView {
    /// Its name.
    pub name: String,
    /// The last index of its log.
    pub last_index: u64,
    /// The configuration in force on the leader.
    pub configuration: Configuration,
    /// Its followers' and learners' progress.
    pub peers: Vec<PeerProgress>,
}

/// A configuration as the leader reports it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Configuration {
    /// The log index of its entry.
    pub index: u64,
    /// Whether the leader knows it committed.
    pub committed: bool,
    /// Members that vote.
    pub voters: Vec<ConfigMember>,
    /// Members that receive the log only.
    pub learners: Vec<ConfigMember>,
}

/// One member of a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMember {
    /// Its name (the pod name).
    pub name: String,
    /// Its incarnation (0 for a member that bootstrapped the group).
    pub incarnation: u64,
}

/// The leader's word on one other member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// The member's name.
    pub name: String,
    /// The highest index known to be on its disk.
    pub match_index: u64,
    /// Milliseconds since the leader last heard from it.
    pub last_contact_ms: u64,
}

/// One pod of the StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    /// The pod name.
    pub name: String,
    /// Its ordinal.
    pub ordinal: u32,
    /// The incarnation its `/status` reported; `None` when it did not answer
    /// (or answered for another group, which the status reports elsewhere).
    pub incarnation: Option<u64>,
    /// It has a deletion timestamp.
    pub deleting: bool,
}

/// What to do now, and how many pods the StatefulSet should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The StatefulSet's `spec.replicas`: every member still in the
    /// configuration keeps its pod, and growth creates the new pods at once.
    pub statefulset_replicas: u32,
    /// The one change to make (or why none is made).
    pub step: Step,
}

/// The one membership step of this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The configuration is exactly the members `spec.replicas` asks for.
    Aligned,
    /// Nothing can be done yet.
    Wait(WaitReason),
    /// Make this change.
    Change(Change),
}

/// One change, made by one admin call on the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add the pod's member as a learner.
    Add {
        /// The pod name.
        member: String,
        /// The incarnation its `/status` reported.
        incarnation: u64,
    },
    /// Promote a caught-up learner to voter.
    Promote {
        /// The learner.
        member: String,
    },
    /// Remove a member from the configuration.
    Remove {
        /// The member.
        member: String,
        /// The incarnation removed.
        incarnation: u64,
        /// Why.
        why: Removal,
    },
    /// Move leadership off a member about to be removed.
    Transfer {
        /// The leader, to be removed.
        from: String,
        /// The most caught-up voter that stays.
        to: String,
    },
}

/// Why a member leaves the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Its ordinal is at or past `spec.replicas`.
    ScaledDown,
    /// Its pod came back under another incarnation (an empty volume): the
    /// old one is gone for good and is replaced by the new one.
    Replaced {
        /// The incarnation the pod reports now.
        by: u64,
    },
    /// Its name is not one of this group's pods.
    Foreign,
}

/// Why the planner waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// No member leads, so nobody can change the configuration.
    NoLeader,
    /// The last change is not committed yet.
    ChangeNotCommitted {
        /// Its log index.
        index: u64,
    },
    /// The pod to add does not answer `/status` yet.
    PodNotAnswering {
        /// The pod.
        member: String,
    },
    /// The learner is still catching up (or has not acknowledged the entry
    /// that added it yet).
    CatchingUp {
        /// The learner.
        member: String,
        /// Entries behind the leader's last index.
        lag: u64,
    },
    /// Removing the member would leave fewer live voters than a majority.
    QuorumAtRisk {
        /// The member to remove.
        member: String,
        /// Voters the leader hears from that would stay.
        live: usize,
        /// Voters that would stay.
        voters: usize,
    },
    /// The leader must go, and no voter that stays is live to take over.
    NoTransferTarget {
        /// The leader.
        from: String,
    },
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::NoLeader => write!(f, "no member leads; membership changes wait for a leader"),
            WaitReason::ChangeNotCommitted { index } => write!(
                f,
                "the configuration change at index {index} is not committed yet"
            ),
            WaitReason::PodNotAnswering { member } => {
                write!(f, "waiting for {member} to answer /status before adding it")
            }
            WaitReason::CatchingUp { member, lag } => write!(
                f,
                "learner {member} is {lag} entries behind the leader; promoted once caught up"
            ),
            WaitReason::QuorumAtRisk {
                member,
                live,
                voters,
            } => write!(
                f,
                "removing {member} would leave {live} live voters of {voters}, not a majority; waiting for the others"
            ),
            WaitReason::NoTransferTarget { from } => write!(
                f,
                "{from} leads and must be removed, but no voter that stays is live to take over"
            ),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Aligned => write!(f, "the configuration matches spec.replicas"),
            Step::Wait(reason) => reason.fmt(f),
            Step::Change(change) => change.fmt(f),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Add {
                member,
                incarnation,
            } => write!(f, "adding {member} (incarnation {incarnation:016x}) as a learner"),
            Change::Promote { member } => write!(f, "promoting learner {member} to voter"),
            Change::Remove {
                member,
                incarnation,
                why,
            } => match why {
                Removal::ScaledDown => write!(f, "removing {member}: spec.replicas shrank"),
                Removal::Replaced { by } => write!(
                    f,
                    "removing incarnation {incarnation:016x} of {member}: its pod came back with an empty volume as incarnation {by:016x}"
                ),
                Removal::Foreign => {
                    write!(f, "removing {member}: not one of this group's pods")
                }
            },
            Change::Transfer { from, to } => {
                write!(f, "moving leadership from {from} to {to} before removing {from}")
            }
        }
    }
}

/// The ordinal of `name` among `<group>-<ordinal>`, if it is one.
pub fn ordinal_of(group: &str, name: &str) -> Option<u32> {
    let digits = name.strip_prefix(group)?.strip_prefix('-')?;
    let ordinal: u32 = digits.parse().ok()?;
    // "orders-01" is not pod "orders-1".
    (ordinal.to_string() == digits).then_some(ordinal)
}

/// The next step. At most one change per call; the caller makes it and
/// asks again after it committed, so an interrupted operator resumes from
/// what the group reports, never from a record of its own.
pub fn plan(input: &ScaleInput) -> Plan {
    let Some(leader) = &input.leader else {
        // Without the configuration, keep the pods as they are: shrinking
        // blind could take away a member that still votes.
        return Plan {
            statefulset_replicas: input.statefulset_replicas.unwrap_or(input.desired),
            step: Step::Wait(WaitReason::NoLeader),
        };
    };
    let config = &leader.configuration;
    let highest_member = config
        .voters
        .iter()
        .chain(&config.learners)
        .filter_map(|member| ordinal_of(&input.group, &member.name))
        .max();
    let statefulset_replicas = highest_member.map_or(input.desired, |highest| {
        input.desired.max(highest.saturating_add(1))
    });
    let step = next_step(input, leader);
    Plan {
        statefulset_replicas,
        step,
    }
}

fn next_step(input: &ScaleInput, leader: &LeaderView) -> Step {
    let config = &leader.configuration;
    if !config.committed {
        return Step::Wait(WaitReason::ChangeNotCommitted {
            index: config.index,
        });
    }
    if let Some(step) = replaced(input, config) {
        return step;
    }
    if let Some(step) = surplus(input, leader) {
        return step;
    }
    missing(input, leader).unwrap_or(Step::Aligned)
}

/// A member whose pod now answers under another incarnation: the old one's
/// log and votes are gone with its volume, so it leaves first (the replica
/// refuses a second incarnation of one name).
fn replaced(input: &ScaleInput, config: &Configuration) -> Option<Step> {
    let members = config.voters.iter().chain(&config.learners);
    for member in members {
        let Some(ordinal) = ordinal_of(&input.group, &member.name) else {
            continue;
        };
        let Some(pod) = input.pods.iter().find(|pod| pod.ordinal == ordinal) else {
            continue;
        };
        match pod.incarnation {
            Some(now) if now != member.incarnation && !pod.deleting => {
                return Some(Step::Change(Change::Remove {
                    member: member.name.clone(),
                    incarnation: member.incarnation,
                    why: Removal::Replaced { by: now },
                }))
            }
            _ => {}
        }
    }
    None
}

/// Members that must leave: not this group's, or at or past `spec.replicas`.
/// Learners first (they cost no quorum), then voters, highest ordinal first.
fn surplus(input: &ScaleInput, leader: &LeaderView) -> Option<Step> {
    let config = &leader.configuration;
    let leaving = |member: &&ConfigMember| match ordinal_of(&input.group, &member.name) {
        Some(ordinal) => ordinal >= input.desired,
        None => true,
    };
    let highest_leaving = |members: &'_ [ConfigMember]| -> Option<ConfigMember> {
        members
            .iter()
            .filter(leaving)
            .max_by_key(|member| ordinal_of(&input.group, &member.name).map_or(u64::MAX, u64::from))
            .cloned()
    };
    let why = |member: &ConfigMember| match ordinal_of(&input.group, &member.name) {
        Some(_) => Removal::ScaledDown,
        None => Removal::Foreign,
    };
    if let Some(learner) = highest_leaving(&config.learners) {
        return Some(Step::Change(Change::Remove {
            why: why(&learner),
            member: learner.name,
            incarnation: learner.incarnation,
        }));
    }
    let voter = highest_leaving(&config.voters)?;
    let staying: Vec<&ConfigMember> = config
        .voters
        .iter()
        .filter(|other| other.name != voter.name)
        .collect();
    if voter.name == leader.name {
        let to = staying
            .iter()
            .filter(|other| !leaving(other) && is_live(input, leader, &other.name))
            .max_by_key(|other| {
                (
                    match_index(leader, &other.name),
                    std::cmp::Reverse(&other.name),
                )
            });
        return Some(match to {
            Some(to) => Step::Change(Change::Transfer {
                from: voter.name.clone(),
                to: to.name.clone(),
            }),
            None => Step::Wait(WaitReason::NoTransferTarget {
                from: voter.name.clone(),
            }),
        });
    }
    let live = staying
        .iter()
        .filter(|other| is_live(input, leader, &other.name))
        .count();
    if live < staying.len() / 2 + 1 {
        return Some(Step::Wait(WaitReason::QuorumAtRisk {
            member: voter.name.clone(),
            live,
            voters: staying.len(),
        }));
    }
    Some(Step::Change(Change::Remove {
        why: why(&voter),
        member: voter.name,
        incarnation: voter.incarnation,
    }))
}

/// Ordinals below `spec.replicas` that are not voters yet, lowest first: a
/// learner is promoted before the next pod is added, so at most one member
/// is catching up at a time.
fn missing(input: &ScaleInput, leader: &LeaderView) -> Option<Step> {
    let config = &leader.configuration;
    for ordinal in 0..input.desired {
        let name = format!("{}-{ordinal}", input.group);
        if config.voters.iter().any(|member| member.name == name) {
            continue;
        }
        if config.learners.iter().any(|member| member.name == name) {
            let matched = match_index(leader, &name);
            let lag = leader.last_index.saturating_sub(matched);
            // Within the bound is not enough on a short log: it must also
            // hold the entry that added it, proof it has heard this leader.
            if lag > input.promote_max_lag
                || matched < config.index
                || !is_live(input, leader, &name)
            {
                return Some(Step::Wait(WaitReason::CatchingUp { member: name, lag }));
            }
            return Some(Step::Change(Change::Promote { member: name }));
        }
        let pod = input
            .pods
            .iter()
            .find(|pod| pod.ordinal == ordinal && !pod.deleting);
        return Some(match pod.and_then(|pod| pod.incarnation) {
            Some(incarnation) => Step::Change(Change::Add {
                member: name,
                incarnation,
            }),
            None => Step::Wait(WaitReason::PodNotAnswering { member: name }),
        });
    }
    None
}

fn match_index(leader: &LeaderView, name: &str) -> u64 {
    if name == leader.name {
        return leader.last_index;
    }
    leader
        .peers
        .iter()
        .find(|peer| peer.name == name)
        .map_or(0, |peer| peer.match_index)
}

/// The leader itself, or a member it heard from recently.
fn is_live(input: &ScaleInput, leader: &LeaderView, name: &str) -> bool {
    name == leader.name
        || leader
            .peers
            .iter()
            .any(|peer| peer.name == name && peer.last_contact_ms <= input.contact_max_ms)
}
