//! The three Services: `<name>-peers` (headless, a DNS name per member),
//! `<name>` (clients, every member) and `<name>-leader` (the leader only).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{selector_labels, Group, HTTP_PORT, PEER_PORT, ROLE_LABEL};

fn ports() -> Vec<ServicePort> {
    vec![
        ServicePort {
            name: Some("peer".into()),
            port: PEER_PORT,
            target_port: Some(IntOrString::String("peer".into())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        },
        ServicePort {
            name: Some("http".into()),
            port: HTTP_PORT,
            target_port: Some(IntOrString::String("http".into())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        },
    ]
}

fn service(group: &Group<'_>, name: String, spec: ServiceSpec) -> Service {
    Service {
        metadata: group.child_meta(name),
        spec: Some(spec),
        status: None,
    }
}

/// `<name>-peers`: headless, and listing members before they are ready,
/// since members must find each other to elect a leader at all.
pub fn peers_service(group: &Group<'_>) -> Service {
    service(
        group,
        group.peers_service_name(),
        ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&group.name)),
            ports: Some(ports()),
            ..ServiceSpec::default()
        },
    )
}

/// `<name>`: every ready member; followers redirect writes to the leader.
pub fn client_service(group: &Group<'_>) -> Service {
    service(
        group,
        group.name.clone(),
        ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&group.name)),
            ports: Some(ports()),
            ..ServiceSpec::default()
        },
    )
}

/// `<name>-leader`: the pod the operator labelled leader. Readiness is not
/// waited for: the label is set from the member's own answer, and a new
/// leader must not wait for a readiness probe period.
pub fn leader_service(group: &Group<'_>) -> Service {
    let mut selector: BTreeMap<String, String> = selector_labels(&group.name);
    selector.insert(ROLE_LABEL.to_string(), "leader".to_string());
    service(
        group,
        group.leader_service_name(),
        ServiceSpec {
            type_: Some("ClusterIP".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector),
            ports: Some(ports()),
            ..ServiceSpec::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::specs::fixtures;

    #[test]
    fn the_peers_service_is_headless_and_publishes_unready_members() {
        let group = fixtures::minimal();
        let svc = peers_service(&Group::of(&group).unwrap());
        assert_eq!(svc.metadata.name.as_deref(), Some("orders-peers"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.selector.unwrap(), selector_labels("orders"));
        let ports: Vec<i32> = spec.ports.unwrap().iter().map(|port| port.port).collect();
        assert_eq!(ports, [20911, 8080]);
    }

    #[test]
    fn the_client_service_selects_every_member() {
        let group = fixtures::minimal();
        let svc = client_service(&Group::of(&group).unwrap());
        assert_eq!(svc.metadata.name.as_deref(), Some("orders"));
        assert_eq!(svc.metadata.owner_references.unwrap()[0].name, "orders");
        let spec = svc.spec.unwrap();
        assert_eq!(spec.selector.unwrap(), selector_labels("orders"));
        assert_eq!(spec.publish_not_ready_addresses, None);
    }

    #[test]
    fn the_leader_service_selects_the_leader_label() {
        let group = fixtures::minimal();
        let svc = leader_service(&Group::of(&group).unwrap());
        assert_eq!(svc.metadata.name.as_deref(), Some("orders-leader"));
        let selector = svc.spec.unwrap().selector.unwrap();
        assert_eq!(selector[ROLE_LABEL], "leader");
        assert_eq!(selector["app.kubernetes.io/instance"], "orders");
    }
}
