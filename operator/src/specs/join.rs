//! The ConfigMap `<name>-join`: how a member starting with an empty volume
//! finds the group. Kept out of the pod template on purpose: it changes when
//! the group forms and when it is scaled, and a template change would be a
//! new revision that restarts every member.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{Group, PEER_PORT};

/// The variable that says whether an empty member bootstraps or joins.
pub const INITIAL_STATE_VAR: &str = "DLEDGER_INITIAL_STATE";
/// The member list variable.
pub const PEERS_VAR: &str = "DLEDGER_PEERS";
/// The variable naming the group's unique id: the resource's uid, so that
/// a group deleted and created again under the same name (its pods finding
/// volumes of the old one) never mixes with the old one's members.
pub const GROUP_ID_VAR: &str = "DLEDGER_GROUP_ID";

/// What a member with an empty data directory does
/// (`dledger-replica serve --initial-state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialState {
    /// The group is being created: the members in `DLEDGER_PEERS` form it.
    New,
    /// The group exists: wait to be added (as a new incarnation) by the operator.
    Existing,
}

impl InitialState {
    /// The flag's value.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialState::New => "new",
            InitialState::Existing => "existing",
        }
    }
}

/// What the ConfigMap holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join {
    /// `DLEDGER_INITIAL_STATE`.
    pub initial_state: InitialState,
    /// `DLEDGER_PEERS`: the bootstrap members while the group is `New`,
    /// afterwards the pods a joining member may ask for the leader.
    pub peers: String,
}

impl Join {
    /// What the ConfigMap `current` (if any) says.
    pub fn of(current: &ConfigMap) -> Option<Join> {
        let data = current.data.as_ref()?;
        let initial_state = match data.get(INITIAL_STATE_VAR)?.as_str() {
            "new" => InitialState::New,
            "existing" => InitialState::Existing,
            _ => return None,
        };
        Some(Join {
            initial_state,
            peers: data.get(PEERS_VAR)?.clone(),
        })
    }

    /// What it should say. `current` is what it says now; `formed` whether a
    /// leader reports a committed configuration; `statefulset_exists` whether
    /// pods may already hold data; `members` how many pods the StatefulSet
    /// keeps. Once `existing`, never `new` again: a member that lost its
    /// volume must never bootstrap a second group.
    pub fn desired(
        group: &Group<'_>,
        current: Option<&Join>,
        formed: bool,
        statefulset_exists: bool,
        members: u32,
    ) -> Join {
        let existing = Join {
            initial_state: InitialState::Existing,
            peers: peer_list(group, members),
        };
        match current {
            Some(join) if join.initial_state == InitialState::Existing => existing,
            // The bootstrap list stays as it was written until the group formed.
            Some(join) if !formed => join.clone(),
            Some(_) => existing,
            // Lost, or written by an operator from before this ConfigMap:
            // pods exist, so the group may too.
            None if statefulset_exists || formed => existing,
            None => Join {
                initial_state: InitialState::New,
                peers: peer_list(group, group.spec.replicas.max(1).unsigned_abs()),
            },
        }
    }
}

/// `<name>-join`.
pub fn join_config_map_name(group: &Group<'_>) -> String {
    format!("{}-join", group.name)
}

/// `DLEDGER_PEERS` for the first `members` pods, at their stable DNS names.
pub fn peer_list(group: &Group<'_>, members: u32) -> String {
    let peers = group.peers_service_name();
    (0..members)
        .map(|ordinal| {
            let pod = format!("{}-{ordinal}", group.name);
            format!("{pod}={pod}.{peers}.{}.svc:{PEER_PORT}", group.namespace)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The ConfigMap `<name>-join` saying `join`.
pub fn join_config_map(group: &Group<'_>, join: &Join) -> ConfigMap {
    ConfigMap {
        metadata: group.child_meta(join_config_map_name(group)),
        data: Some(BTreeMap::from([
            (
                INITIAL_STATE_VAR.to_string(),
                join.initial_state.as_str().to_string(),
            ),
            (PEERS_VAR.to_string(), join.peers.clone()),
            (GROUP_ID_VAR.to_string(), group.owner.uid.clone()),
        ])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::specs::fixtures;

    #[test]
    fn a_new_group_bootstraps_from_spec_replicas_and_then_joins_for_good() {
        let resource = fixtures::minimal();
        let group = Group::of(&resource).unwrap();
        let new = Join::desired(&group, None, false, false, 3);
        assert_eq!(new.initial_state, InitialState::New);
        assert_eq!(
            new.peers,
            "orders-0=orders-0.orders-peers.shop.svc:20911,orders-1=orders-1.orders-peers.shop.svc:20911,orders-2=orders-2.orders-peers.shop.svc:20911"
        );
        // Before the group formed, a change of spec.replicas changes nothing.
        assert_eq!(Join::desired(&group, Some(&new), false, true, 5), new);
        let formed = Join::desired(&group, Some(&new), true, true, 5);
        assert_eq!(formed.initial_state, InitialState::Existing);
        assert_eq!(formed.peers.split(',').count(), 5);
        // Never back to new, even while no leader is known.
        let later = Join::desired(&group, Some(&formed), false, true, 3);
        assert_eq!(later.initial_state, InitialState::Existing);
        assert_eq!(later.peers.split(',').count(), 3);
    }

    #[test]
    fn a_lost_config_map_with_pods_around_is_existing() {
        let resource = fixtures::minimal();
        let group = Group::of(&resource).unwrap();
        let join = Join::desired(&group, None, false, true, 3);
        assert_eq!(join.initial_state, InitialState::Existing);
    }

    #[test]
    fn the_config_map_reads_back_what_it_was_written_with() {
        let resource = fixtures::minimal();
        let group = Group::of(&resource).unwrap();
        let join = Join::desired(&group, None, false, false, 3);
        let map = join_config_map(&group, &join);
        assert_eq!(map.metadata.name.as_deref(), Some("orders-join"));
        assert_eq!(
            map.metadata.owner_references.as_ref().unwrap()[0].kind,
            "DLedgerGroup"
        );
        assert_eq!(Join::of(&map), Some(join));
        assert_eq!(map.data.as_ref().unwrap()[GROUP_ID_VAR], "uid-1");
        let mut garbled = map.clone();
        garbled
            .data
            .as_mut()
            .unwrap()
            .insert(INITIAL_STATE_VAR.into(), "maybe".into());
        assert_eq!(Join::of(&garbled), None);
    }
}
