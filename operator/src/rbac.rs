//! The one table of rights the operator needs (least privilege). The
//! `rbac` subcommand prints it as RBAC objects; the test bed and the chart
//! apply that output, and a test keeps the committed copy in step.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The name of every RBAC object and of the ServiceAccount.
pub const NAME: &str = "dledger-operator";

/// One rule: an API group, its resources, the verbs.
pub struct Right {
    /// The API group (`""` is the core group).
    pub api_group: &'static str,
    /// The resources.
    pub resources: &'static [&'static str],
    /// The verbs, and why each is needed.
    pub verbs: &'static [&'static str],
}

/// Cluster-wide rights: the operator watches groups and their children in
/// every namespace. Children go by garbage collection; the one `delete` is
/// of member pods, the step of a rolling upgrade (the StatefulSet is `OnDelete`).
pub const CLUSTER_RIGHTS: &[Right] = &[
    // The resource it reconciles; `patch` removes the upgrade approval
    // annotation once an upgrade is done.
    Right {
        api_group: "dledger.io",
        resources: &["dledgergroups"],
        verbs: &["get", "list", "watch", "patch"],
    },
    // Status after every poll.
    Right {
        api_group: "dledger.io",
        resources: &["dledgergroups/status"],
        verbs: &["get", "patch"],
    },
    // Children by server-side apply (which creates what is missing).
    Right {
        api_group: "apps",
        resources: &["statefulsets"],
        verbs: &["get", "list", "watch", "create", "patch"],
    },
    Right {
        api_group: "",
        resources: &["services"],
        verbs: &["get", "list", "watch", "create", "patch"],
    },
    // The join ConfigMap: whether a member with an empty volume bootstraps
    // the group or waits to be added.
    Right {
        api_group: "",
        resources: &["configmaps"],
        verbs: &["get", "list", "watch", "create", "patch"],
    },
    // The group's CA, member and client certificates (created and applied;
    // never deleted: garbage collection removes them with the group).
    Right {
        api_group: "",
        resources: &["secrets"],
        verbs: &["get", "list", "watch", "create", "patch"],
    },
    // With spec.networkPolicy.enabled; `delete` when it is turned off again.
    Right {
        api_group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
    },
    // With spec.tls.issuerRef: the certificates asked of cert-manager.
    Right {
        api_group: "cert-manager.io",
        resources: &["certificates"],
        verbs: &["get", "create", "patch"],
    },
    Right {
        api_group: "policy",
        resources: &["poddisruptionbudgets"],
        verbs: &["get", "list", "watch", "create", "patch"],
    },
    // Pods: read their readiness and address, set the role label, delete
    // one outdated member at a time during an upgrade.
    Right {
        api_group: "",
        resources: &["pods"],
        verbs: &["get", "list", "watch", "patch", "delete"],
    },
    // Events about groups.
    Right {
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
    },
];

/// Rights in the operator's own namespace: its leader-election Lease.
pub const NAMESPACE_RIGHTS: &[Right] = &[Right {
    api_group: "coordination.k8s.io",
    resources: &["leases"],
    verbs: &["get", "create", "update"],
}];

fn rules(rights: &[Right]) -> Vec<PolicyRule> {
    rights
        .iter()
        .map(|right| PolicyRule {
            api_groups: Some(vec![right.api_group.to_string()]),
            resources: Some(right.resources.iter().map(|r| r.to_string()).collect()),
            verbs: right.verbs.iter().map(|v| v.to_string()).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

fn meta(namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(NAME.into()),
        namespace: namespace.map(str::to_string),
        labels: Some(
            [("app.kubernetes.io/name".to_string(), NAME.to_string())]
                .into_iter()
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

/// Only the ClusterRole's rules, as a YAML list (the Helm chart embeds them).
pub fn cluster_rules_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&rules(CLUSTER_RIGHTS))
}

/// Only the leader-election Role's rules, as a YAML list.
pub fn namespace_rules_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&rules(NAMESPACE_RIGHTS))
}

/// The ServiceAccount, ClusterRole, Role and bindings for an operator
/// running in `namespace`, as one multi-document YAML.
pub fn manifests_yaml(namespace: &str) -> Result<String, serde_yaml::Error> {
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: NAME.into(),
        namespace: Some(namespace.into()),
        ..Subject::default()
    };
    let account = ServiceAccount {
        metadata: meta(Some(namespace)),
        ..ServiceAccount::default()
    };
    let cluster_role = ClusterRole {
        metadata: meta(None),
        rules: Some(rules(CLUSTER_RIGHTS)),
        ..ClusterRole::default()
    };
    let cluster_binding = ClusterRoleBinding {
        metadata: meta(None),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: NAME.into(),
        },
        subjects: Some(vec![subject.clone()]),
    };
    let role = Role {
        metadata: meta(Some(namespace)),
        rules: Some(rules(NAMESPACE_RIGHTS)),
    };
    let binding = RoleBinding {
        metadata: meta(Some(namespace)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: NAME.into(),
        },
        subjects: Some(vec![subject]),
    };
    let documents = [
        with_type("v1", "ServiceAccount", serde_json::to_value(&account)),
        with_type(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            serde_json::to_value(&cluster_role),
        ),
        with_type(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            serde_json::to_value(&cluster_binding),
        ),
        with_type(
            "rbac.authorization.k8s.io/v1",
            "Role",
            serde_json::to_value(&role),
        ),
        with_type(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            serde_json::to_value(&binding),
        ),
    ];
    let mut out = String::new();
    for document in documents {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&document)?);
    }
    Ok(out)
}

/// k8s-openapi serializes `apiVersion` and `kind`; this keeps the key order
/// stable and fills them when a type leaves them out.
fn with_type(
    api_version: &str,
    kind: &str,
    value: Result<serde_json::Value, serde_json::Error>,
) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    object.insert("apiVersion".into(), api_version.into());
    object.insert("kind".into(), kind.into());
    if let Ok(serde_json::Value::Object(fields)) = value {
        for (key, field) in fields {
            if key != "apiVersion" && key != "kind" {
                object.insert(key, field);
            }
        }
    }
    serde_json::Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_rbac_is_what_the_table_prints() {
        let generated = manifests_yaml("dledger-system").unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml");
        let committed = std::fs::read_to_string(path).unwrap();
        assert!(
            committed == generated,
            "operator/deploy/rbac.yaml drifted: run `cargo run -p dledger-operator --bin dledger-operator -- rbac > operator/deploy/rbac.yaml`"
        );
    }

    #[test]
    fn the_rules_alone_are_the_manifests_rules() {
        let rules: Vec<serde_yaml::Value> =
            serde_yaml::from_str(&cluster_rules_yaml().unwrap()).unwrap();
        assert_eq!(rules.len(), CLUSTER_RIGHTS.len());
        assert_eq!(rules[0]["apiGroups"][0].as_str(), Some("dledger.io"));
        let lease: Vec<serde_yaml::Value> =
            serde_yaml::from_str(&namespace_rules_yaml().unwrap()).unwrap();
        assert_eq!(lease[0]["resources"][0].as_str(), Some("leases"));
    }

    #[test]
    fn only_pods_are_deleted_and_nothing_escalates() {
        for right in CLUSTER_RIGHTS.iter().chain(NAMESPACE_RIGHTS) {
            for verb in right.verbs {
                if *verb == "delete" {
                    // Pods (an upgrade's restarts) and a NetworkPolicy
                    // turned off: nothing that holds data.
                    assert!(
                        [
                            ("", &["pods"][..]),
                            ("networking.k8s.io", &["networkpolicies"][..])
                        ]
                        .contains(&(right.api_group, right.resources)),
                        "delete on {:?}",
                        right.resources
                    );
                    continue;
                }
                assert!(
                    !["deletecollection", "*", "escalate", "bind", "impersonate"].contains(verb),
                    "{verb} on {:?}",
                    right.resources
                );
            }
            assert!(!right.resources.contains(&"*"));
            // Secrets only for the certificates, and never with update or
            // delete: a CA is created once and only ever applied over by
            // the certificates' own code.
            if right.resources.contains(&"secrets") {
                assert_eq!(right.resources, &["secrets"][..]);
                assert_eq!(
                    right.verbs,
                    &["get", "list", "watch", "create", "patch"][..]
                );
            }
        }
    }

    #[test]
    fn the_manifests_bind_the_service_account_in_its_namespace() {
        let yaml = manifests_yaml("ops").unwrap();
        let documents: Vec<serde_yaml::Value> = yaml
            .split("---\n")
            .filter(|doc| !doc.trim().is_empty())
            .map(|doc| serde_yaml::from_str(doc).unwrap())
            .collect();
        let kinds: Vec<&str> = documents
            .iter()
            .map(|doc| doc["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding"
            ]
        );
        assert_eq!(
            documents[2]["subjects"][0]["namespace"].as_str(),
            Some("ops")
        );
        assert_eq!(documents[3]["metadata"]["namespace"].as_str(), Some("ops"));
        assert_eq!(
            documents[1]["rules"].as_sequence().unwrap().len(),
            CLUSTER_RIGHTS.len()
        );
    }
}
