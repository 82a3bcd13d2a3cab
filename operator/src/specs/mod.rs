//! Pure builders of every child of a `DLedgerGroup` (CloudNativePG's
//! `pkg/specs`): each takes the group and returns the whole object the
//! operator applies. No client, no clock; the unit tests check whole objects.

mod join;
mod labels;
mod network_policy;
mod pdb;
mod services;
mod statefulset;
pub mod tls;

pub use join::{
    join_config_map, join_config_map_name, peer_list, InitialState, Join, INITIAL_STATE_VAR,
    PEERS_VAR,
};
pub use labels::{
    common_labels, selector_labels, selector_string, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
    NAME_LABEL, ROLE_LABEL,
};
pub use network_policy::network_policy;
pub use pdb::pod_disruption_budget;
pub use services::{client_service, leader_service, peers_service};
pub use statefulset::{member_names, statefulset, DATA_DIR, HTTP_PORT, PEER_PORT};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{DLedgerGroup, DLedgerGroupSpec};

/// What every builder needs to know about the group, checked once.
#[derive(Clone, Debug, PartialEq)]
pub struct Group<'a> {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The controller owner reference every child carries.
    pub owner: OwnerReference,
    /// The spec.
    pub spec: &'a DLedgerGroupSpec,
    /// The value of [`RESTARTED_AT_ANNOTATION`] on the resource, copied into
    /// the pod template so that changing it rolls every member.
    pub restarted_at: Option<String>,
}

/// The annotation on the resource that asks for a rolling restart: any new
/// value makes a new pod template revision, rolled out by the upgrade planner.
pub const RESTARTED_AT_ANNOTATION: &str = "dledger.io/restarted-at";

/// Why a group cannot be built from (it came back from the API incomplete).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    /// No namespace: the resource is namespaced, so the API never sends this.
    #[error("DLedgerGroup {0} has no namespace")]
    NoNamespace(String),
    /// No uid, so no owner reference can be made.
    #[error("DLedgerGroup {0} has no uid yet")]
    NoUid(String),
}

impl<'a> Group<'a> {
    /// The identity of `group`, or why it is incomplete.
    pub fn of(group: &'a DLedgerGroup) -> Result<Group<'a>, GroupError> {
        let name = group.name_any();
        let namespace = group
            .namespace()
            .ok_or_else(|| GroupError::NoNamespace(name.clone()))?;
        let owner = group
            .controller_owner_ref(&())
            .ok_or_else(|| GroupError::NoUid(name.clone()))?;
        Ok(Group {
            name,
            namespace,
            owner,
            spec: &group.spec,
            restarted_at: group.annotations().get(RESTARTED_AT_ANNOTATION).cloned(),
        })
    }

    /// `<name>-peers`, the headless Service giving each member its DNS name.
    pub fn peers_service_name(&self) -> String {
        format!("{}-peers", self.name)
    }

    /// The metadata of a child named `name`: the group's namespace, its
    /// labels and its controller reference (garbage collection removes the
    /// child with the group).
    pub fn child_meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(common_labels(&self.name)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// `<name>-leader`, the Service whose endpoints are the leader.
    pub fn leader_service_name(&self) -> String {
        format!("{}-leader", self.name)
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::crd::DLedgerGroupSpec;

    /// A group as the API would hand it to the operator.
    pub fn group(spec: serde_json::Value) -> DLedgerGroup {
        let spec: DLedgerGroupSpec = serde_json::from_value(spec).unwrap();
        let mut group = DLedgerGroup::new("orders", spec);
        group.metadata.namespace = Some("shop".into());
        group.metadata.uid = Some("uid-1".into());
        group.metadata.generation = Some(2);
        group
    }

    pub fn minimal() -> DLedgerGroup {
        group(
            serde_json::json!({"replicas": 3, "image": "localhost/dledger-replica:dev", "storage": {"size": "1Gi"}}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_without_uid_is_refused() {
        let mut group = fixtures::minimal();
        group.metadata.uid = None;
        assert_eq!(Group::of(&group), Err(GroupError::NoUid("orders".into())));
        group.metadata.namespace = None;
        assert_eq!(
            Group::of(&group),
            Err(GroupError::NoNamespace("orders".into()))
        );
    }

    #[test]
    fn the_owner_reference_is_a_controller_reference() {
        let group = fixtures::minimal();
        let identity = Group::of(&group).unwrap();
        assert_eq!(identity.owner.kind, "DLedgerGroup");
        assert_eq!(identity.owner.api_version, "dledger.io/v1alpha1");
        assert_eq!(identity.owner.controller, Some(true));
        assert_eq!(identity.owner.uid, "uid-1");
    }
}
