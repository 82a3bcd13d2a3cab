//! The StatefulSet: one pod and one volume per member, restarted only by the
//! operator (`OnDelete`), all started at once (`Parallel`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::join::join_config_map_name;
use super::{common_labels, selector_labels, tls, Group, RESTARTED_AT_ANNOTATION};

/// The binary protocol port (peers and clients).
pub const PEER_PORT: i32 = 20911;
/// The HTTP port (status, health, metrics, admin, client API).
pub const HTTP_PORT: i32 = 8080;
/// Where the member's volume is mounted.
pub const DATA_DIR: &str = "/var/lib/dledger";
/// The image's non-root user and group.
const RUN_AS_ID: i64 = 65532;
/// Time the pod gets beyond the replica's own SIGTERM hand-off.
const TERMINATION_MARGIN_SECONDS: i64 = 10;

/// The pod names of the first `count` ordinals.
pub fn member_names(group: &Group<'_>, count: u32) -> Vec<String> {
    (0..count)
        .map(|ordinal| format!("{}-{ordinal}", group.name))
        .collect()
}

/// The StatefulSet `<name>` with `replicas` pods: `spec.replicas`, or more
/// while members past it are still in the configuration (the membership
/// planner decides).
pub fn statefulset(group: &Group<'_>, replicas: u32) -> StatefulSet {
    let spec = group.spec;
    let retention = spec
        .persistent_volume_claim_retention_policy
        .clone()
        .unwrap_or(StatefulSetPersistentVolumeClaimRetentionPolicy {
            when_deleted: Some("Retain".into()),
            when_scaled: Some("Retain".into()),
        });
    StatefulSet {
        metadata: group.child_meta(group.name.clone()),
        spec: StatefulSetSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            service_name: Some(group.peers_service_name()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&group.name)),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            }),
            persistent_volume_claim_retention_policy: Some(retention),
            template: pod_template(group),
            volume_claim_templates: Some(vec![volume_claim_template(group)]),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

fn pod_template(group: &Group<'_>) -> PodTemplateSpec {
    let spec = group.spec;
    // The user's labels first so that the operator's own win.
    let mut labels: BTreeMap<String, String> = spec.pod.labels.clone();
    labels.extend(common_labels(&group.name));
    let termination_grace_period_seconds =
        (i64::from(spec.config.shutdown_transfer_timeout_ms) + 999) / 1000
            + TERMINATION_MARGIN_SECONDS;
    let mut annotations = spec.pod.annotations.clone();
    if let Some(restarted_at) = &group.restarted_at {
        annotations.insert(RESTARTED_AT_ANNOTATION.to_string(), restarted_at.clone());
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![replica_container(group)],
            termination_grace_period_seconds: Some(termination_grace_period_seconds),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS_ID),
                run_as_group: Some(RUN_AS_ID),
                fs_group: Some(RUN_AS_ID),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            affinity: Some(
                spec.pod
                    .affinity
                    .clone()
                    .unwrap_or_else(|| default_affinity(group)),
            ),
            tolerations: (!spec.pod.tolerations.is_empty()).then(|| spec.pod.tolerations.clone()),
            node_selector: (!spec.pod.node_selector.is_empty())
                .then(|| spec.pod.node_selector.clone()),
            topology_spread_constraints: (!spec.pod.topology_spread_constraints.is_empty())
                .then(|| spec.pod.topology_spread_constraints.clone()),
            // Members talk to each other by name, not through the API.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            volumes: Some(volumes(group)),
            ..PodSpec::default()
        }),
    }
}

fn volumes(group: &Group<'_>) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    if group.spec.tls.enabled {
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls::members_secret_name(group)),
                // Owner and the pod's fsGroup: the replica runs as neither root nor the owner.
                default_mode: Some(0o440),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes
}

/// Members preferably on different hosts, so one node failure costs one member.
fn default_affinity(group: &Group<'_>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(&group.name)),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn replica_container(group: &Group<'_>) -> Container {
    let spec = group.spec;
    Container {
        name: "replica".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
        args: Some(vec!["serve".into()]),
        env: Some(environment(group)),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: join_config_map_name(group),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("peer".into()),
                container_port: PEER_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        // Readiness tolerates an election (a few seconds without a leader)
        // before the member leaves the client Service.
        readiness_probe: Some(http_probe(group, "/readyz", 1, 3)),
        liveness_probe: Some(http_probe(group, "/healthz", 5, 3)),
        // Opening a long log can take a while; liveness waits for it.
        startup_probe: Some(http_probe(group, "/healthz", 1, 120)),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts(group)),
        ..Container::default()
    }
}

fn volume_mounts(group: &Group<'_>) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    if group.spec.tls.enabled {
        // Not a subPath: the kubelet updates a whole-Secret mount in
        // place, and the replica reloads what changed.
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: tls::TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    mounts
}

/// The kubelet does not verify the certificate of an HTTPS probe; the
/// probe paths are open (`--metrics-open` and the health endpoints).
fn http_probe(group: &Group<'_>, path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    let scheme = if group.spec.tls.enabled {
        "HTTPS"
    } else {
        "HTTP"
    };
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: Some(scheme.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(1),
        failure_threshold: Some(failure_threshold),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

fn value(name: &str, value: impl ToString) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

/// The `DLEDGER_*` variables of `dledger-replica serve`.
fn environment(group: &Group<'_>) -> Vec<EnvVar> {
    let config = &group.spec.config;
    let mut env = vec![
        value("DLEDGER_GROUP", &group.name),
        EnvVar {
            name: "DLEDGER_ID".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: Some("v1".into()),
                }),
                ..EnvVarSource::default()
            }),
        },
        // DLEDGER_PEERS, DLEDGER_INITIAL_STATE and DLEDGER_GROUP_ID come
        // from the join ConfigMap.
        value("DLEDGER_LISTEN", format!("0.0.0.0:{PEER_PORT}")),
        value("DLEDGER_DATA_DIR", DATA_DIR),
        value("DLEDGER_HTTP_LISTEN", format!("0.0.0.0:{HTTP_PORT}")),
        value("DLEDGER_HEARTBEAT_MS", config.heartbeat_ms),
        value("DLEDGER_ELECTION_TIMEOUT_MS", config.election_timeout_ms),
        value("DLEDGER_FLUSH_MODE", config.flush_mode.as_str()),
        value("DLEDGER_SEGMENT_BYTES", config.segment_bytes),
        value("DLEDGER_MAX_ENTRY_BYTES", config.max_entry_bytes),
        value("DLEDGER_READY_MAX_LAG", config.ready_max_lag),
        value(
            "DLEDGER_RETENTION_MAX_AGE_S",
            config.retention_max_age_seconds,
        ),
        value("DLEDGER_RETENTION_MAX_BYTES", config.retention_max_bytes),
        value(
            "DLEDGER_SHUTDOWN_TRANSFER_TIMEOUT_MS",
            config.shutdown_transfer_timeout_ms,
        ),
    ];
    if let Some(preferred) = &group.spec.preferred_leader {
        env.push(value("DLEDGER_PREFERRED_LEADER", preferred));
    }
    if group.spec.tls.enabled {
        // $(DLEDGER_ID) is expanded by the kubelet: each member reads its
        // own pair from the one Secret.
        let dir = tls::TLS_DIR;
        env.push(value(
            "DLEDGER_TLS_CERT",
            format!("{dir}/$(DLEDGER_ID).crt"),
        ));
        env.push(value("DLEDGER_TLS_KEY", format!("{dir}/$(DLEDGER_ID).key")));
        env.push(value(
            "DLEDGER_TLS_CA",
            format!("{dir}/{}", tls::CA_CERT_KEY),
        ));
    }
    env
}

fn volume_claim_template(group: &Group<'_>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(selector_labels(&group.name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: group.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(group.spec.storage.size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::specs::fixtures;

    fn env_of(sts: &StatefulSet) -> BTreeMap<String, EnvVar> {
        let pod = sts.spec.template.spec.as_ref().unwrap();
        pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|var| (var.name.clone(), var))
            .collect()
    }

    #[test]
    fn the_statefulset_is_ondelete_parallel_and_owned() {
        let group = fixtures::minimal();
        let sts = statefulset(&Group::of(&group).unwrap(), 3);
        let spec = &sts.spec;
        assert_eq!(sts.metadata.name.as_deref(), Some("orders"));
        assert_eq!(sts.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            sts.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("orders-peers"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        let retention = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "1Gi"
        );
        assert_eq!(claim_spec.storage_class_name, None);
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (key, value) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(
                &template_labels[key], value,
                "the selector must match the template"
            );
        }
        assert!(
            !template_labels.contains_key(crate::specs::ROLE_LABEL),
            "the operator owns the role label on pods"
        );
    }

    #[test]
    fn scaling_changes_the_replicas_and_not_the_pod_template() {
        let group = fixtures::minimal();
        let group = Group::of(&group).unwrap();
        let three = statefulset(&group, 3).spec;
        let five = statefulset(&group, 5).spec;
        assert_eq!((three.replicas, five.replicas), (Some(3), Some(5)));
        assert_eq!(
            three.template, five.template,
            "a new revision would restart every member"
        );
    }

    #[test]
    fn the_environment_names_the_pod_and_the_member_list_comes_from_the_join_config_map() {
        let group = fixtures::minimal();
        let sts = statefulset(&Group::of(&group).unwrap(), 3);
        let env = env_of(&sts);
        // In the template, a member list would make every scaling a new
        // revision that restarts every member.
        assert!(!env.contains_key("DLEDGER_PEERS"));
        assert!(!env.contains_key("DLEDGER_INITIAL_STATE"));
        assert_eq!(
            env["DLEDGER_LISTEN"].value.as_deref(),
            Some("0.0.0.0:20911")
        );
        let container = &sts.spec.template.spec.as_ref().unwrap().containers[0];
        let from = container.env_from.as_ref().unwrap();
        assert_eq!(from[0].config_map_ref.as_ref().unwrap().name, "orders-join");
        assert_eq!(env["DLEDGER_GROUP"].value.as_deref(), Some("orders"));
        let id = env["DLEDGER_ID"]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(id.field_path, "metadata.name");
        assert_eq!(env["DLEDGER_DATA_DIR"].value.as_deref(), Some(DATA_DIR));
        assert_eq!(
            env["DLEDGER_ELECTION_TIMEOUT_MS"].value.as_deref(),
            Some("500")
        );
        assert_eq!(env["DLEDGER_HEARTBEAT_MS"].value.as_deref(), Some("100"));
        assert_eq!(env["DLEDGER_FLUSH_MODE"].value.as_deref(), Some("durable"));
        assert!(!env.contains_key("DLEDGER_PREFERRED_LEADER"));
    }

    #[test]
    fn the_pod_is_restricted_probed_and_outlives_the_hand_off() {
        let group = fixtures::minimal();
        let sts = statefulset(&Group::of(&group).unwrap(), 3);
        let pod = sts.spec.template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.args, Some(vec!["serve".to_string()]));
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let path = |probe: &Option<Probe>| {
            probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .clone()
                .unwrap()
        };
        assert_eq!(path(&container.readiness_probe), "/readyz");
        assert_eq!(path(&container.liveness_probe), "/healthz");
        assert_eq!(path(&container.startup_probe), "/healthz");
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.run_as_user, Some(65532));
        assert_eq!(pod_security.fs_group, Some(65532));
        assert_eq!(
            pod_security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        // 3 s hand-off by default, plus the margin.
        assert_eq!(pod.termination_grace_period_seconds, Some(13));
        let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
        let preferred = anti
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(
            preferred[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
    }

    #[test]
    fn tls_mounts_the_members_secret_names_each_members_pair_and_probes_https() {
        let group = fixtures::minimal();
        let sts = statefulset(&Group::of(&group).unwrap(), 3);
        let env = env_of(&sts);
        let text = |name: &str| env[name].value.clone().unwrap();
        // The kubelet expands $(DLEDGER_ID) only when it is defined earlier.
        let order: Vec<&str> = sts.spec.template.spec.as_ref().unwrap().containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|var| var.name.as_str())
            .collect();
        let position = |name: &str| order.iter().position(|n| *n == name).unwrap();
        assert!(position("DLEDGER_ID") < position("DLEDGER_TLS_CERT"));
        assert_eq!(
            text("DLEDGER_TLS_CERT"),
            "/etc/dledger/tls/$(DLEDGER_ID).crt"
        );
        assert_eq!(
            text("DLEDGER_TLS_KEY"),
            "/etc/dledger/tls/$(DLEDGER_ID).key"
        );
        assert_eq!(text("DLEDGER_TLS_CA"), "/etc/dledger/tls/ca.crt");
        let pod = sts.spec.template.spec.as_ref().unwrap();
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "tls")
            .unwrap();
        assert_eq!(
            volume.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("orders-tls")
        );
        let container = &pod.containers[0];
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "tls")
            .unwrap();
        assert_eq!(mount.mount_path, "/etc/dledger/tls");
        assert!(mount.sub_path.is_none(), "a subPath mount is never updated");
        for probe in [
            &container.readiness_probe,
            &container.liveness_probe,
            &container.startup_probe,
        ] {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        }

        let plaintext = fixtures::group(serde_json::json!({
            "replicas": 3, "image": "i", "storage": {"size": "1Gi"}, "tls": {"enabled": false}
        }));
        let sts = statefulset(&Group::of(&plaintext).unwrap(), 3);
        assert!(!env_of(&sts).contains_key("DLEDGER_TLS_CERT"));
        let pod = sts.spec.template.spec.as_ref().unwrap();
        assert!(pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.name != "tls"));
        let get = pod.containers[0]
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(get.scheme.as_deref(), Some("HTTP"));
    }

    #[test]
    fn spec_overrides_reach_the_pods() {
        let group = fixtures::group(serde_json::json!({
            "replicas": 5,
            "image": "img:1",
            "imagePullPolicy": "Always",
            "storage": {"size": "5Gi", "storageClassName": "fast"},
            "preferredLeader": "orders-2",
            "config": {"heartbeatMs": 50, "electionTimeoutMs": 300, "flushMode": "page-cache", "shutdownTransferTimeoutMs": 7500},
            "pod": {
                "nodeSelector": {"disk": "ssd"},
                "labels": {"team": "payments", "app.kubernetes.io/name": "not-ours"},
                "annotations": {"note": "x"},
                "affinity": {"nodeAffinity": {}},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}]
            },
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}
        }));
        let sts = statefulset(&Group::of(&group).unwrap(), 3);
        let env = env_of(&sts);
        assert_eq!(
            env["DLEDGER_PREFERRED_LEADER"].value.as_deref(),
            Some("orders-2")
        );
        assert_eq!(
            env["DLEDGER_FLUSH_MODE"].value.as_deref(),
            Some("page-cache")
        );
        assert_eq!(sts.spec.replicas, Some(3));
        let spec = sts.spec;
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Delete")
        );
        let claim = &spec.volume_claim_templates.unwrap()[0];
        assert_eq!(
            claim.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some("fast")
        );
        let metadata = spec.template.metadata.unwrap();
        let labels = metadata.labels.unwrap();
        assert_eq!(labels["team"], "payments");
        assert_eq!(
            labels["app.kubernetes.io/name"], "dledger",
            "the operator's labels win"
        );
        assert_eq!(metadata.annotations.unwrap()["note"], "x");
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["disk"], "ssd");
        assert!(
            pod.affinity.unwrap().pod_anti_affinity.is_none(),
            "the spec's affinity replaces the default"
        );
        assert_eq!(
            pod.tolerations.unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(pod.termination_grace_period_seconds, Some(18));
        assert_eq!(
            pod.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
    }

    #[test]
    fn the_restart_annotation_reaches_the_pod_template_so_a_new_value_rolls_the_members() {
        let mut group = fixtures::minimal();
        let before = statefulset(&Group::of(&group).unwrap(), 3).spec.template;
        assert!(before.metadata.unwrap().annotations.is_none());
        group.metadata.annotations = Some(
            [(
                RESTARTED_AT_ANNOTATION.to_string(),
                "2026-12-02T22:00:00Z".to_string(),
            )]
            .into_iter()
            .collect(),
        );
        let after = statefulset(&Group::of(&group).unwrap(), 3).spec.template;
        assert_eq!(
            after.metadata.unwrap().annotations.unwrap()[RESTARTED_AT_ANNOTATION],
            "2026-12-02T22:00:00Z"
        );
    }
}
