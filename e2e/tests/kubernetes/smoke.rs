//! The cluster's smoke test: a plain StatefulSet of three replicas (no
//! operator) comes up through the real controllers, the members find each
//! other by their DNS names and elect a leader, `kubectl delete pod` of the
//! leader lets a new leader take writes meanwhile and brings the pod back on
//! its own volume, and a Service reaches the group from a client pod.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dledger_e2e::http::{Client, Status};
use dledger_e2e::kube::{
    describe_pod, pod_is_ready, required_env, wait_for, Kubectl, REPLICA_HTTP_PORT,
    REPLICA_PEER_PORT,
};

const GROUP: &str = "smoke";
const STATEFULSET: &str = "dledger";
const HEADLESS_SERVICE: &str = "dledger";
const CLIENT_SERVICE: &str = "dledger-client";
const CONTAINER: &str = "replica";
const MEMBERS: usize = 3;
/// First start: volumes provisioned by helper pods, the image unpacked.
const PODS_READY_TIMEOUT_MS: u64 = 240_000;
const LEADER_TIMEOUT_MS: u64 = 60_000;
const NEW_LEADER_TIMEOUT_MS: u64 = 30_000;
const WRITE_TIMEOUT_MS: u64 = 60_000;
const RETURN_TIMEOUT_MS: u64 = 120_000;
const CLIENT_POD_TIMEOUT_MS: u64 = 120_000;

fn pod_name(ordinal: usize) -> String {
    format!("{STATEFULSET}-{ordinal}")
}

fn manifests(namespace: &str, image: &str) -> String {
    let peers: Vec<String> = (0..MEMBERS)
        .map(|ordinal| {
            let pod = pod_name(ordinal);
            format!(
                "{pod}={pod}.{HEADLESS_SERVICE}.{namespace}.svc.cluster.local:{REPLICA_PEER_PORT}"
            )
        })
        .collect();
    let peers = peers.join(",");
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {HEADLESS_SERVICE}}}
spec:
  clusterIP: None
  # Members must resolve each other before any of them is ready (ready needs a leader).
  publishNotReadyAddresses: true
  selector: {{app: dledger-smoke}}
  ports:
  - {{name: peer, port: {REPLICA_PEER_PORT}}}
  - {{name: http, port: {REPLICA_HTTP_PORT}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {CLIENT_SERVICE}}}
spec:
  selector: {{app: dledger-smoke}}
  ports:
  - {{name: client, port: {REPLICA_PEER_PORT}}}
  - {{name: http, port: {REPLICA_HTTP_PORT}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {STATEFULSET}}}
spec:
  serviceName: {HEADLESS_SERVICE}
  replicas: {MEMBERS}
  # All members start together: none becomes ready before there is a leader.
  podManagementPolicy: Parallel
  selector:
    matchLabels: {{app: dledger-smoke}}
  template:
    metadata:
      labels: {{app: dledger-smoke}}
    spec:
      terminationGracePeriodSeconds: 10
      securityContext: {{runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}}
      containers:
      - name: {CONTAINER}
        image: {image}
        imagePullPolicy: IfNotPresent
        args: [serve]
        env:
        - {{name: DLEDGER_GROUP, value: {GROUP}}}
        - name: DLEDGER_ID
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        - {{name: DLEDGER_PEERS, value: "{peers}"}}
        - {{name: DLEDGER_DATA_DIR, value: /data/replica}}
        ports:
        - {{name: peer, containerPort: {REPLICA_PEER_PORT}}}
        - {{name: http, containerPort: {REPLICA_HTTP_PORT}}}
        readinessProbe:
          httpGet: {{path: /readyz, port: http}}
          periodSeconds: 1
          failureThreshold: 2
        livenessProbe:
          httpGet: {{path: /healthz, port: http}}
          periodSeconds: 5
          failureThreshold: 6
        volumeMounts:
        - {{name: data, mountPath: /data}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 64Mi}}}}
"#
    )
}

/// A pod that appends `payloads` through the client Service and exits.
fn client_pod(name: &str, namespace: &str, image: &str, payloads: &[&str]) -> String {
    let servers = format!("{CLIENT_SERVICE}.{namespace}.svc.cluster.local:{REPLICA_PEER_PORT}");
    let args: Vec<String> = ["append", "--servers", &servers, "--group", GROUP]
        .iter()
        .map(|arg| (*arg).to_owned())
        .chain(payloads.iter().map(|payload| (*payload).to_owned()))
        .map(|arg| format!("\"{arg}\""))
        .collect();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  securityContext: {{runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}}
  containers:
  - name: client
    image: {image}
    imagePullPolicy: IfNotPresent
    args: [{}]
"#,
        args.join(", ")
    )
}

/// Each member's `/status` (or why it could not be read).
fn statuses(
    kubectl: &Kubectl,
    namespace: &str,
    ordinals: &[usize],
) -> BTreeMap<String, Result<Status, String>> {
    ordinals
        .iter()
        .map(|ordinal| {
            let pod = pod_name(*ordinal);
            let status = kubectl
                .replica_status(namespace, &pod, CONTAINER, &[])
                .map_err(|error| error.to_string());
            (pod, status)
        })
        .collect()
}

fn describe_statuses(all: &BTreeMap<String, Result<Status, String>>) -> String {
    all.iter()
        .map(|(pod, status)| match status {
            Ok(s) => format!(
                "{pod}: {} term {} leader {} last {} commit {}",
                s.role,
                s.term,
                s.leader_id.as_deref().unwrap_or("-"),
                s.last_index,
                s.commit_index
            ),
            Err(error) => format!("{pod}: {error}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The leader every listed member agrees on, with its status.
fn agreed_leader(kubectl: &Kubectl, namespace: &str, ordinals: &[usize]) -> Result<Status, String> {
    let all = statuses(kubectl, namespace, ordinals);
    let described = describe_statuses(&all);
    let mut leaders = all
        .values()
        .filter_map(|s| s.as_ref().ok())
        .filter(|s| s.is_leader());
    let Some(leader) = leaders.next().cloned() else {
        return Err(format!("no leader: {described}"));
    };
    if leaders.next().is_some() {
        return Err(format!("two members say they lead: {described}"));
    }
    let agree = all.values().all(|status| {
        status.as_ref().is_ok_and(|s| {
            s.term == leader.term && s.leader_id.as_deref() == Some(leader.id.as_str())
        })
    });
    if agree {
        Ok(leader)
    } else {
        Err(format!("members do not agree yet: {described}"))
    }
}

fn pods_ready(kubectl: &Kubectl, namespace: &str) -> Result<Vec<serde_json::Value>, String> {
    let pods: Vec<serde_json::Value> = (0..MEMBERS)
        .map(|ordinal| kubectl.get_json(namespace, &format!("pod/{}", pod_name(ordinal))))
        .collect::<Result<_, _>>()
        .map_err(|error| error.to_string())?;
    if pods.iter().all(pod_is_ready) {
        Ok(pods)
    } else {
        Err(pods.iter().map(describe_pod).collect::<Vec<_>>().join("; "))
    }
}

/// Runs a client pod that appends `payloads` through the Service; the
/// `(index, term)` of each, as it printed them.
fn append_from_client_pod(
    kubectl: &Kubectl,
    namespace: &str,
    image: &str,
    name: &str,
    payloads: &[&str],
) -> Vec<(u64, u64)> {
    kubectl
        .apply(namespace, &client_pod(name, namespace, image, payloads))
        .unwrap_or_else(|error| panic!("creating client pod {name}: {error}"));
    let phase = wait_for(
        &format!("client pod {name} to finish"),
        CLIENT_POD_TIMEOUT_MS,
        || {
            let pod = kubectl
                .get_json(namespace, &format!("pod/{name}"))
                .map_err(|error| error.to_string())?;
            match pod["status"]["phase"].as_str() {
                Some(phase @ ("Succeeded" | "Failed")) => Ok(phase.to_owned()),
                _ => Err(describe_pod(&pod)),
            }
        },
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let logs = kubectl
        .logs(namespace, name)
        .unwrap_or_else(|error| panic!("logs of client pod {name}: {error}"));
    assert_eq!(
        phase, "Succeeded",
        "client pod {name} failed; its output:\n{logs}"
    );
    parse_appended(&logs)
        .unwrap_or_else(|error| panic!("client pod {name}: {error}; output:\n{logs}"))
}

/// `dledger-replica append` prints `index<TAB>term` per entry.
fn parse_appended(out: &str) -> Result<Vec<(u64, u64)>, String> {
    out.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (index, term) = line
                .trim()
                .split_once('\t')
                .ok_or_else(|| format!("not index<TAB>term: {line:?}"))?;
            Ok((
                index
                    .parse()
                    .map_err(|_| format!("bad index in {line:?}"))?,
                term.parse().map_err(|_| format!("bad term in {line:?}"))?,
            ))
        })
        .collect()
}

/// A PVC's uid and the volume it is bound to.
fn claim_identity(kubectl: &Kubectl, namespace: &str, claim: &str) -> (String, String) {
    let pvc = kubectl
        .get_json(namespace, &format!("pvc/{claim}"))
        .unwrap_or_else(|error| panic!("{error}"));
    let uid = pvc["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let volume = pvc["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !uid.is_empty() && !volume.is_empty(),
        "PVC {claim} is not bound: {pvc}"
    );
    (uid, volume)
}

fn unique_namespace() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    format!("dledger-smoke-{}", seconds % 1_000_000)
}

#[test]
#[ignore = "needs a cluster: e2e/kubernetes/run.sh"]
fn a_statefulset_of_three_replicas_elects_fails_over_and_keeps_its_data() {
    let started = Instant::now();
    let kubectl = Kubectl::from_env().unwrap_or_else(|error| panic!("{error}"));
    let image = required_env("DLEDGER_REPLICA_IMAGE").unwrap_or_else(|error| panic!("{error}"));
    let namespace = kubectl
        .namespace(&unique_namespace())
        .unwrap_or_else(|error| panic!("{error}"));
    let ns = namespace.name();
    eprintln!("smoke: namespace {ns}, image {image}");
    kubectl
        .apply(ns, &manifests(ns, &image))
        .unwrap_or_else(|error| panic!("applying the StatefulSet: {error}"));

    // Up through the StatefulSet controller, the scheduler, the provisioner and the kubelet.
    wait_for("three ready replica pods", PODS_READY_TIMEOUT_MS, || {
        pods_ready(&kubectl, ns)
    })
    .unwrap_or_else(|error| panic!("{error}"));
    let all: Vec<usize> = (0..MEMBERS).collect();
    let leader = wait_for("one leader all members agree on", LEADER_TIMEOUT_MS, || {
        agreed_leader(&kubectl, ns, &all)
    })
    .unwrap_or_else(|error| panic!("{error}"));
    eprintln!(
        "smoke: {} leads in term {} ({:.1} s after apply)",
        leader.id,
        leader.term,
        started.elapsed().as_secs_f64()
    );

    // A Service reaches the group from a client pod.
    let before = append_from_client_pod(
        &kubectl,
        ns,
        &image,
        "client-before",
        &["before-1", "before-2"],
    );
    assert_eq!(
        before.len(),
        2,
        "two entries were sent, {before:?} acknowledged"
    );
    let last_before = before
        .iter()
        .map(|(index, _)| *index)
        .max()
        .unwrap_or_default();
    eprintln!("smoke: client pod appended through {CLIENT_SERVICE}: {before:?}");

    // Delete the leader's pod; the other two elect a new leader and take writes meanwhile.
    let Some(leader_ordinal) = all
        .iter()
        .copied()
        .find(|ordinal| pod_name(*ordinal) == leader.id)
    else {
        panic!("the leader id {} is not one of the pods", leader.id);
    };
    let leader_pod = pod_name(leader_ordinal);
    let claim = format!("data-{leader_pod}");
    let claim_before = claim_identity(&kubectl, ns, &claim);
    let old_uid = kubectl
        .get_json(ns, &format!("pod/{leader_pod}"))
        .map(|pod| {
            pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|error| panic!("{error}"));
    let survivors: Vec<usize> = all
        .iter()
        .copied()
        .filter(|o| *o != leader_ordinal)
        .collect();
    let deleted_at = Instant::now();
    kubectl
        .run(&[
            "delete",
            "--namespace",
            ns,
            &format!("pod/{leader_pod}"),
            "--wait=false",
        ])
        .unwrap_or_else(|error| panic!("{error}"));
    let new_leader = wait_for(
        "a new leader among the other two",
        NEW_LEADER_TIMEOUT_MS,
        || agreed_leader(&kubectl, ns, &survivors),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let failover_s = deleted_at.elapsed().as_secs_f64();
    assert_ne!(new_leader.id, leader_pod, "the deleted pod still leads");
    assert!(
        new_leader.term > leader.term,
        "new leader {new_leader:?} is not in a later term than {leader:?}"
    );
    eprintln!(
        "smoke: {} leads in term {} {failover_s:.2} s after `kubectl delete pod {leader_pod}` (polled through kubectl exec)",
        new_leader.id, new_leader.term
    );
    // The write goes through the client Service from inside a surviving pod.
    let servers = format!("{CLIENT_SERVICE}.{ns}.svc.cluster.local:{REPLICA_PEER_PORT}");
    let writer = pod_name(survivors[0]);
    let during = wait_for(
        "a write acknowledged while the old leader's pod is replaced",
        WRITE_TIMEOUT_MS,
        || {
            let out = kubectl
                .exec(
                    ns,
                    &writer,
                    CONTAINER,
                    &[
                        "/usr/local/bin/dledger-replica",
                        "append",
                        "--servers",
                        &servers,
                        "--group",
                        GROUP,
                        "during-failover",
                    ],
                )
                .map_err(|error| error.to_string())?;
            parse_appended(&out)
        },
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let (during_index, during_term) = during
        .first()
        .copied()
        .unwrap_or_else(|| panic!("append printed nothing"));
    assert!(
        during_index > last_before,
        "during-failover landed at {during_index}, not after {last_before}"
    );
    assert!(
        during_term >= new_leader.term,
        "acknowledged in term {during_term}, before the new leader's {}",
        new_leader.term
    );
    let returned_ready = kubectl
        .get_json(ns, &format!("pod/{leader_pod}"))
        .map(|pod| pod["metadata"]["uid"].as_str() != Some(old_uid.as_str()) && pod_is_ready(&pod))
        .unwrap_or(false);
    eprintln!(
        "smoke: entry {during_index} acknowledged in term {during_term} {:.2} s after the delete (the new {leader_pod} ready by then: {returned_ready})",
        deleted_at.elapsed().as_secs_f64()
    );

    // The pod comes back as a new pod on the same volume, rejoins and holds everything.
    let returned = wait_for(
        &format!("{leader_pod} back, ready, on its volume, caught up"),
        RETURN_TIMEOUT_MS,
        || {
            let pod = kubectl
                .get_json(ns, &format!("pod/{leader_pod}"))
                .map_err(|error| error.to_string())?;
            if pod["metadata"]["uid"].as_str() == Some(old_uid.as_str()) || !pod_is_ready(&pod) {
                return Err(describe_pod(&pod));
            }
            let status = kubectl
                .replica_status(ns, &leader_pod, CONTAINER, &[])
                .map_err(|error| error.to_string())?;
            if status.commit_index >= during_index && status.last_index >= during_index {
                Ok(status)
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .unwrap_or_else(|error| panic!("{error}"));
    eprintln!(
        "smoke: {leader_pod} returned {:.1} s after the delete: {} term {} last {} commit {}",
        deleted_at.elapsed().as_secs_f64(),
        returned.role,
        returned.term,
        returned.last_index,
        returned.commit_index
    );
    assert_eq!(
        claim_identity(&kubectl, ns, &claim),
        claim_before,
        "{leader_pod} came back on another claim or volume: its data would be gone"
    );
    // The same member read from the host through `kubectl port-forward`.
    let forward = kubectl
        .port_forward(ns, &format!("pod/{leader_pod}"), REPLICA_HTTP_PORT)
        .unwrap_or_else(|error| panic!("{error}"));
    let forwarded = Client::new(forward.local(), Duration::from_secs(5))
        .status()
        .unwrap_or_else(|error| {
            panic!("/status through port-forward {}: {error}", forward.local())
        });
    drop(forward);
    assert_eq!(
        forwarded.id, leader_pod,
        "port-forward to {leader_pod} reached {forwarded:?}"
    );
    assert!(forwarded.commit_index >= during_index, "{forwarded:?}");
    let volume_in_pod = kubectl
        .get_json(ns, &format!("pod/{leader_pod}"))
        .map(|pod| pod["spec"]["volumes"].to_string())
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        volume_in_pod.contains(&claim),
        "{leader_pod} does not mount {claim}: {volume_in_pod}"
    );

    // The group holds the three entries at their indexes, read through the Service from the returned pod.
    for (index, payload) in before
        .iter()
        .map(|(index, _)| *index)
        .zip(["before-1", "before-2"])
        .chain([(during_index, "during-failover")])
    {
        let out = kubectl
            .exec(
                ns,
                &leader_pod,
                CONTAINER,
                &[
                    "/usr/local/bin/dledger-replica",
                    "get",
                    "--servers",
                    &servers,
                    "--group",
                    GROUP,
                    &index.to_string(),
                ],
            )
            .unwrap_or_else(|error| panic!("reading entry {index}: {error}"));
        let fields: Vec<&str> = out.trim_end().splitn(3, '\t').collect();
        assert_eq!(
            fields.first().copied(),
            Some(index.to_string().as_str()),
            "entry {index}: {out:?}"
        );
        assert_eq!(
            fields.get(2).copied(),
            Some(payload),
            "entry {index}: {out:?}"
        );
    }
    let final_leader = wait_for(
        "all three members agreeing again",
        LEADER_TIMEOUT_MS,
        || agreed_leader(&kubectl, ns, &all),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    eprintln!(
        "smoke: passed in {:.1} s; {} leads term {}",
        started.elapsed().as_secs_f64(),
        final_leader.id,
        final_leader.term
    );
}
