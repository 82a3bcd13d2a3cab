//! The group's configuration as it travels in the log: who the members are
//! (voters and learners), where they listen, and the rule that it changes
//! one member at a time.
//!
//! A [`Configuration`] is the payload of an [`EntryKind::Configuration`]
//! entry, JSON-encoded (such entries are rare and read by people in
//! `log dump`). Every member applies the newest one in its log as soon as it
//! is appended, committed or not, as in the Raft dissertation's single-server
//! changes (section 4.1); a truncation that removes it brings the previous
//! one back. Single-server changes rather than joint consensus because the
//! operator changes one pod at a time anyway, and any majority of the old
//! set then overlaps any majority of the new one with nothing else to get
//! right.
//!
//! [`Membership`] is the same set reduced to the numeric ids the consensus
//! core counts with; [`Membership::single_change`] is the rule the core
//! enforces before appending a change.
//!
//! [`EntryKind::Configuration`]: crate::entry::EntryKind::Configuration

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::entry::{Index, NodeId};

/// The format version written in every configuration payload.
const FORMAT_VERSION: u32 = 1;

/// The numeric id of the member called `name`: FNV-1a of the name, never
/// zero. It stays the same when the list is reordered or a pod restarts, as
/// etcd derives member ids, so a persisted vote always names one member.
pub fn node_id_of(name: &str) -> NodeId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

pub use crate::api::peer_name_of;

/// Whether a member votes and counts for commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// Votes, counts for commit, may lead.
    Voter,
    /// Receives the log only.
    Learner,
}

/// One member as the configuration names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The id the core counts it by; the server derives it from the name
    /// ([`node_id_of`]), the simulation numbers its nodes.
    pub id: NodeId,
    /// Its name (in Kubernetes, the pod name).
    pub name: String,
    /// Which life of that name: 0 for a bootstrap member, a random number
    /// drawn when a member starts with an empty data directory to join.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
    /// Its binary protocol address, `host:port`.
    pub address: String,
    /// Its HTTP address, `host:port`, for redirects.
    #[serde(rename = "httpAddress")]
    pub http_address: String,
    /// Voter or learner.
    pub role: MemberRole,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl MemberRecord {
    /// A bootstrap voter (incarnation 0), its id derived from its name.
    pub fn voter(name: &str, address: &str, http_address: &str) -> MemberRecord {
        MemberRecord {
            id: node_id_of(name),
            name: name.to_string(),
            incarnation: 0,
            address: address.to_string(),
            http_address: http_address.to_string(),
            role: MemberRole::Voter,
        }
    }

    /// The name it goes by among peers ([`peer_name_of`]).
    pub fn peer_name(&self) -> String {
        peer_name_of(&self.name, self.incarnation)
    }
}

/// The member set a configuration entry carries, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Configuration {
    members: Vec<MemberRecord>,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    version: u32,
    members: Vec<MemberRecord>,
}

/// Why a configuration or a change of it is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigurationError {
    /// The payload is not a configuration of a known format.
    #[error("not a configuration: {0}")]
    Malformed(String),
    /// A name is empty or listed twice, or two names share an id.
    #[error("bad member {name:?}: {reason}")]
    BadMember {
        /// The member.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A group needs at least one voter.
    #[error("a configuration needs at least one voter")]
    NoVoter,
    /// The change names a member that is not in the configuration.
    #[error("{0} is not a member")]
    UnknownMember(String),
    /// The member to add is in the configuration already.
    #[error("{0} is a member already")]
    AlreadyMember(String),
    /// Only a learner can be promoted.
    #[error("{0} is a voter already")]
    AlreadyVoter(String),
    /// Removing the last voter would leave nobody to decide.
    #[error("{0} is the last voter and cannot be removed")]
    LastVoter(String),
    /// The name is a member under another incarnation: remove that one
    /// first (it lost its data directory, or is a different process).
    #[error(
        "{name} is a member already, as incarnation {known:x}; remove it first (DELETE \
         /admin/members/{name}), then add the new incarnation"
    )]
    OtherIncarnation {
        /// The name.
        name: String,
        /// The incarnation the configuration has.
        known: u64,
    },
    /// A change of more than one member, or of none.
    #[error("a configuration change changes exactly one member; this one changes {0}")]
    NotSingleChange(usize),
}

impl Configuration {
    /// A configuration of `members`, checked and sorted by name.
    pub fn new(mut members: Vec<MemberRecord>) -> Result<Configuration, ConfigurationError> {
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let mut ids = BTreeSet::new();
        for (position, member) in members.iter().enumerate() {
            let bad = |reason: &str| ConfigurationError::BadMember {
                name: member.name.clone(),
                reason: reason.to_string(),
            };
            if member.name.is_empty() {
                return Err(bad("empty name"));
            }
            if position > 0 && members[position - 1].name == member.name {
                return Err(bad("listed twice"));
            }
            if member.address.is_empty() {
                return Err(bad("empty address"));
            }
            if member.id == 0 {
                return Err(bad("id 0 is reserved"));
            }
            if !ids.insert(member.id) {
                return Err(bad("its id collides with another member's; rename it"));
            }
        }
        if !members
            .iter()
            .any(|member| member.role == MemberRole::Voter)
        {
            return Err(ConfigurationError::NoVoter);
        }
        Ok(Configuration { members })
    }

    /// Decodes an entry's payload.
    pub fn decode(payload: &[u8]) -> Result<Configuration, ConfigurationError> {
        let wire: Wire = serde_json::from_slice(payload)
            .map_err(|err| ConfigurationError::Malformed(err.to_string()))?;
        if wire.version != FORMAT_VERSION {
            return Err(ConfigurationError::Malformed(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                wire.version
            )));
        }
        Configuration::new(wire.members)
    }

    /// The payload of an entry carrying this configuration.
    pub fn encode(&self) -> Bytes {
        let wire = Wire {
            version: FORMAT_VERSION,
            members: self.members.clone(),
        };
        // Serialising plain strings and enums cannot fail.
        Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Every member, voters and learners, sorted by name.
    pub fn members(&self) -> &[MemberRecord] {
        &self.members
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&MemberRecord> {
        self.members.iter().find(|member| member.name == name)
    }

    /// The member whose id is `id`.
    pub fn member_by_id(&self, id: NodeId) -> Option<&MemberRecord> {
        self.members.iter().find(|member| member.id == id)
    }

    /// The same set as ids.
    pub fn membership(&self) -> Membership {
        let mut membership = Membership::default();
        for member in &self.members {
            match member.role {
                MemberRole::Voter => membership.voters.insert(member.id),
                MemberRole::Learner => membership.learners.insert(member.id),
            };
        }
        membership
    }

    /// The configuration after `change`, or why it cannot be made.
    pub fn with_change(&self, change: &Change) -> Result<Configuration, ConfigurationError> {
        let mut members = self.members.clone();
        match change {
            Change::AddLearner {
                name,
                incarnation,
                address,
                http_address,
            } => {
                if let Some(known) = self.member(name) {
                    if known.incarnation == *incarnation {
                        return Err(ConfigurationError::AlreadyMember(name.clone()));
                    }
                    return Err(ConfigurationError::OtherIncarnation {
                        name: name.clone(),
                        known: known.incarnation,
                    });
                }
                members.push(MemberRecord {
                    id: node_id_of(&peer_name_of(name, *incarnation)),
                    name: name.clone(),
                    incarnation: *incarnation,
                    address: address.clone(),
                    http_address: http_address.clone(),
                    role: MemberRole::Learner,
                });
            }
            Change::Promote { name } => {
                let member = members
                    .iter_mut()
                    .find(|member| member.name == *name)
                    .ok_or_else(|| ConfigurationError::UnknownMember(name.clone()))?;
                if member.role == MemberRole::Voter {
                    return Err(ConfigurationError::AlreadyVoter(name.clone()));
                }
                member.role = MemberRole::Voter;
            }
            Change::Remove { name } => {
                let position = members
                    .iter()
                    .position(|member| member.name == *name)
                    .ok_or_else(|| ConfigurationError::UnknownMember(name.clone()))?;
                members.remove(position);
                if !members
                    .iter()
                    .any(|member| member.role == MemberRole::Voter)
                {
                    return Err(ConfigurationError::LastVoter(name.clone()));
                }
            }
        }
        Configuration::new(members)
    }
}

/// One change of the member set, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new member that receives the log and does not vote.
    AddLearner {
        /// Its name.
        name: String,
        /// Its incarnation (0 for a member of the bootstrap list).
        incarnation: u64,
        /// Its binary protocol address.
        address: String,
        /// Its HTTP address.
        http_address: String,
    },
    /// A learner becomes a voter (the leader checks it is caught up).
    Promote {
        /// Its name.
        name: String,
    },
    /// A member leaves.
    Remove {
        /// Its name.
        name: String,
    },
}

/// The member set by id: what the core counts majorities with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Members that vote and count for commit.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log only.
    pub learners: BTreeSet<NodeId>,
}

/// One change between two memberships, by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdChange {
    /// `id` joins as a learner.
    AddLearner(NodeId),
    /// `id` goes from learner to voter.
    Promote(NodeId),
    /// `id` leaves (it was a voter).
    RemoveVoter(NodeId),
    /// `id` leaves (it was a learner).
    RemoveLearner(NodeId),
    /// The same members (addresses may differ; the bootstrap set written
    /// to the log by the first leader).
    Unchanged,
}

impl Membership {
    /// Voters `voters`, no learners.
    pub fn of_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member but `id`, voters first.
    pub fn others(&self, id: NodeId) -> Vec<NodeId> {
        self.voters
            .iter()
            .chain(self.learners.iter())
            .copied()
            .filter(|member| *member != id)
            .collect()
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        crate::core::quorum::majority(self.voters.len())
    }

    /// Whether the voters among `ids` make a majority.
    pub fn has_quorum<'a>(&self, ids: impl IntoIterator<Item = &'a NodeId>) -> bool {
        let count = ids.into_iter().filter(|id| self.is_voter(**id)).count();
        !self.voters.is_empty() && count >= self.quorum()
    }

    /// The highest index a majority of the voters has, given each voter's
    /// match index (0 when unknown).
    pub fn committed_index(&self, match_of: impl Fn(NodeId) -> Index) -> Index {
        if self.voters.is_empty() {
            return 0;
        }
        let mut matches: Vec<Index> = self.voters.iter().map(|id| match_of(*id)).collect();
        crate::core::quorum::committed_index(&mut matches)
    }

    /// The one change that turns `self` into `next`, or why `next` is not
    /// one change away (the core refuses such a configuration entry).
    pub fn single_change(&self, next: &Membership) -> Result<IdChange, ConfigurationError> {
        if next.voters.is_empty() {
            return Err(ConfigurationError::NoVoter);
        }
        let added_voters: Vec<_> = next.voters.difference(&self.voters).copied().collect();
        let removed_voters: Vec<_> = self.voters.difference(&next.voters).copied().collect();
        let added_learners: Vec<_> = next.learners.difference(&self.learners).copied().collect();
        let removed_learners: Vec<_> = self.learners.difference(&next.learners).copied().collect();
        let changed = added_voters.len()
            + removed_voters.len()
            + added_learners.len()
            + removed_learners.len();
        match (
            added_voters.as_slice(),
            removed_voters.as_slice(),
            added_learners.as_slice(),
            removed_learners.as_slice(),
        ) {
            ([promoted], [], [], [was]) if promoted == was => Ok(IdChange::Promote(*promoted)),
            ([], [], [added], []) if !self.voters.contains(added) => {
                Ok(IdChange::AddLearner(*added))
            }
            ([], [removed], [], []) => Ok(IdChange::RemoveVoter(*removed)),
            ([], [], [], [removed]) => Ok(IdChange::RemoveLearner(*removed)),
            ([], [], [], []) => Ok(IdChange::Unchanged),
            _ => Err(ConfigurationError::NotSingleChange(changed)),
        }
    }
}

/// A configuration as a member tracks it: where it is in the log, the
/// payload, and the ids it makes voters and learners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRecord {
    /// Its index; 0 for the bootstrap configuration, which is in no log.
    pub index: Index,
    /// Its term; 0 for the bootstrap configuration.
    pub term: u64,
    /// The entry's payload (a [`Configuration`]); empty for the bootstrap
    /// configuration, which the caller gave as ids.
    pub payload: Bytes,
    /// What it says, by id.
    pub membership: Membership,
}

impl ConfigRecord {
    /// The bootstrap configuration: `voters`, in no log.
    pub fn bootstrap(voters: impl IntoIterator<Item = NodeId>) -> ConfigRecord {
        ConfigRecord {
            index: 0,
            term: 0,
            payload: Bytes::new(),
            membership: Membership::of_voters(voters),
        }
    }

    /// The record of a configuration entry at (`index`, `term`).
    pub fn from_entry(
        index: Index,
        term: u64,
        payload: Bytes,
    ) -> Result<ConfigRecord, ConfigurationError> {
        let membership = Configuration::decode(&payload)?.membership();
        Ok(ConfigRecord {
            index,
            term,
            payload,
            membership,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voter(name: &str) -> MemberRecord {
        MemberRecord::voter(name, &format!("{name}:20911"), &format!("{name}:8080"))
    }

    fn three() -> Configuration {
        Configuration::new(vec![voter("c"), voter("a"), voter("b")]).unwrap()
    }

    #[test]
    fn round_trips_sorted_by_name() {
        let configuration = three();
        let names: Vec<_> = configuration.members().iter().map(|m| &m.name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let decoded = Configuration::decode(&configuration.encode()).unwrap();
        assert_eq!(decoded, configuration);
        assert_eq!(decoded.membership().voters.len(), 3);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert!(matches!(
            Configuration::decode(b"\x00\x01"),
            Err(ConfigurationError::Malformed(_))
        ));
        assert!(matches!(
            Configuration::decode(br#"{"version":9,"members":[]}"#),
            Err(ConfigurationError::Malformed(_))
        ));
        assert_eq!(
            Configuration::decode(br#"{"version":1,"members":[]}"#),
            Err(ConfigurationError::NoVoter)
        );
        let twice = Configuration::new(vec![voter("a"), voter("a")]);
        assert!(matches!(twice, Err(ConfigurationError::BadMember { .. })));
    }

    #[test]
    fn changes_by_name() {
        let configuration = three();
        let added = configuration
            .with_change(&Change::AddLearner {
                name: "d".into(),
                incarnation: 7,
                address: "d:1".into(),
                http_address: "d:2".into(),
            })
            .unwrap();
        let d = added.member("d").unwrap();
        assert_eq!(d.role, MemberRole::Learner);
        assert_eq!(d.id, node_id_of("d#0000000000000007"));
        assert_eq!(Configuration::decode(&added.encode()).unwrap(), added);
        // The same name under another incarnation is refused until removed.
        let again = added.with_change(&Change::AddLearner {
            name: "d".into(),
            incarnation: 8,
            address: "d:1".into(),
            http_address: "d:2".into(),
        });
        assert!(matches!(
            again,
            Err(ConfigurationError::OtherIncarnation { known: 7, .. })
        ));
        let promoted = added
            .with_change(&Change::Promote { name: "d".into() })
            .unwrap();
        assert_eq!(promoted.membership().voters.len(), 4);
        assert_eq!(
            promoted.with_change(&Change::Promote { name: "d".into() }),
            Err(ConfigurationError::AlreadyVoter("d".into()))
        );
        assert_eq!(
            configuration.with_change(&Change::Remove { name: "x".into() }),
            Err(ConfigurationError::UnknownMember("x".into()))
        );
        let one = Configuration::new(vec![voter("a")]).unwrap();
        assert_eq!(
            one.with_change(&Change::Remove { name: "a".into() }),
            Err(ConfigurationError::LastVoter("a".into()))
        );
    }

    #[test]
    fn only_single_changes_pass() {
        let abc = Membership::of_voters([1, 2, 3]);
        let mut add = abc.clone();
        add.learners.insert(4);
        assert_eq!(abc.single_change(&add), Ok(IdChange::AddLearner(4)));
        let promote = Membership::of_voters([1, 2, 3, 4]);
        assert_eq!(add.single_change(&promote), Ok(IdChange::Promote(4)));
        assert_eq!(
            abc.single_change(&Membership::of_voters([1, 2])),
            Ok(IdChange::RemoveVoter(3))
        );
        assert_eq!(add.single_change(&abc), Ok(IdChange::RemoveLearner(4)));
        // Adding a voter directly, or swapping one, is two changes' worth.
        assert!(abc.single_change(&promote).is_err());
        assert!(abc
            .single_change(&Membership::of_voters([1, 2, 4]))
            .is_err());
        assert_eq!(abc.single_change(&abc), Ok(IdChange::Unchanged));
        assert_eq!(
            abc.single_change(&Membership::default()),
            Err(ConfigurationError::NoVoter)
        );
    }

    #[test]
    fn majorities_count_voters_only() {
        let mut membership = Membership::of_voters([1, 2, 3]);
        membership.learners.insert(4);
        assert!(!membership.has_quorum(&[1, 4]));
        assert!(membership.has_quorum(&[1, 3, 4]));
        let matches = |id: NodeId| [0, 10, 7, 2, 99][id as usize];
        // Voters have 10, 7, 2: the majority holds 7, whatever the learner has.
        assert_eq!(membership.committed_index(matches), 7);
        assert_eq!(membership.others(2), vec![1, 3, 4]);
    }
}
