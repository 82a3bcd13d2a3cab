//! The NetworkPolicy `<name>` (when `spec.networkPolicy.enabled`): ingress
//! to the members only from the other members (both ports), from the
//! operator (the HTTP port, where its polls and admin calls go) and from
//! the `clientsFrom` peers (both ports). A network layer cannot tell
//! `/admin` from the client API on the same port; the admin right of the
//! operator's certificate does.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

use super::{selector_labels, Group, HTTP_PORT, PEER_PORT};

/// The operator's pods, as the chart and `dledger-operator rbac` label them.
const OPERATOR_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "dledger-operator");

fn ports(numbers: &[i32]) -> Option<Vec<NetworkPolicyPort>> {
    Some(
        numbers
            .iter()
            .map(|port| NetworkPolicyPort {
                port: Some(IntOrString::Int(*port)),
                protocol: Some("TCP".into()),
                end_port: None,
            })
            .collect(),
    )
}

/// The policy for `group`; `operator_namespace` is where the operator runs
/// (any namespace when unknown).
pub fn network_policy(group: &Group<'_>, operator_namespace: Option<&str>) -> NetworkPolicy {
    let members = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(&group.name)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: operator_namespace.map(|namespace| {
                BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    namespace.to_string(),
                )])
            }),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                OPERATOR_POD_LABEL.0.to_string(),
                OPERATOR_POD_LABEL.1.to_string(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let mut ingress = vec![
        NetworkPolicyIngressRule {
            from: Some(vec![members]),
            ports: ports(&[PEER_PORT, HTTP_PORT]),
        },
        NetworkPolicyIngressRule {
            from: Some(vec![operator]),
            ports: ports(&[HTTP_PORT]),
        },
    ];
    let clients = &group.spec.network_policy.clients_from;
    if !clients.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(clients.clone()),
            ports: ports(&[PEER_PORT, HTTP_PORT]),
        });
    }
    NetworkPolicy {
        metadata: group.child_meta(group.name.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&group.name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::specs::fixtures;

    #[test]
    fn members_reach_both_ports_the_operator_http_and_clients_as_listed() {
        let group = fixtures::group(serde_json::json!({
            "replicas": 3, "image": "i", "storage": {"size": "1Gi"},
            "networkPolicy": {"enabled": true, "clientsFrom": [{"podSelector": {"matchLabels": {"app": "shop"}}}]}
        }));
        let policy = network_policy(&Group::of(&group).unwrap(), Some("dledger-system"));
        let json = serde_json::to_value(&policy).unwrap();
        let spec = &json["spec"];
        assert_eq!(
            spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
            "orders"
        );
        assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
        let rules = spec["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 3);
        let ports = |rule: &serde_json::Value| -> Vec<i64> {
            rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_i64().unwrap())
                .collect()
        };
        assert_eq!(
            rules[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
            "orders"
        );
        assert_eq!(ports(&rules[0]), [20911, 8080]);
        assert_eq!(
            rules[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "dledger-system"
        );
        assert_eq!(
            rules[1]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "dledger-operator"
        );
        assert_eq!(
            ports(&rules[1]),
            [8080],
            "the operator never needs the peer port"
        );
        assert_eq!(
            rules[2]["from"][0]["podSelector"]["matchLabels"]["app"],
            "shop"
        );
        assert_eq!(json["metadata"]["ownerReferences"][0]["uid"], "uid-1");

        let without_clients = fixtures::minimal();
        let policy = network_policy(&Group::of(&without_clients).unwrap(), None);
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(json["spec"]["ingress"].as_array().unwrap().len(), 2);
        assert_eq!(
            json["spec"]["ingress"][1]["from"][0]["namespaceSelector"],
            serde_json::json!({}),
            "any namespace when the operator's is unknown"
        );
    }
}
