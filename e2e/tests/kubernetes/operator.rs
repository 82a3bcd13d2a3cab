//! The operator on a real cluster (issue 10): the operator runs in a pod from
//! the locally built image with exactly the rights `dledger-operator rbac`
//! prints; a `DLedgerGroup` becomes three ready members with one leader, a
//! filled status and printer columns, and a `-leader` Service whose endpoints
//! follow the leader through process kills; a deleted pod comes back and
//! catches up; children edited or deleted by hand are put back; the operator
//! restarts in the middle and carries on; invalid resources are refused with
//! the field named; deleting the group collects its children and keeps or
//! deletes the volumes as its spec says. Writes go to the client Service in
//! waves between the disruptions and every acknowledged one is read back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dledger_e2e::kube::{
    describe_pod, pod_is_ready, required_env, wait_for, Kubectl, REPLICA_PEER_PORT,
};

pub(super) const CONTAINER: &str = "replica";
pub(super) const GROUP: &str = "orders";
const MEMBERS: usize = 3;
/// First start: volumes provisioned, images unpacked.
const GROUP_READY_TIMEOUT_MS: u64 = 300_000;
const OPERATOR_READY_TIMEOUT_MS: u64 = 120_000;
const REPAIR_TIMEOUT_MS: u64 = 30_000;
const CLIENT_POD_TIMEOUT_MS: u64 = 180_000;
const GONE_TIMEOUT_MS: u64 = 120_000;
/// Leader kills measured for the label-follow figure.
const LEADER_KILLS: usize = 10;
/// From the kill to the `-leader` endpoints naming the new leader: an
/// election (at most twice the 500 ms election timeout) plus the 2 s goal.
const LABEL_FOLLOW_BOUND_MS: u128 = 3_000;

pub(super) fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:x}", nanos & 0xfffff)
}

fn pod_name(group: &str, ordinal: usize) -> String {
    format!("{group}-{ordinal}")
}

/// The CRD and the operator: namespace, RBAC from the operator's own table,
/// a Deployment of one replica of the operator image.
pub(super) fn install_operator(kubectl: &Kubectl, namespace: &str, image: &str) {
    let crd = dledger_operator::crd::crd_yaml().unwrap_or_else(|e| panic!("crd yaml: {e}"));
    // Server-side: the CRD is too big for the last-applied annotation.
    kubectl
        .run_with_input(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            &crd,
        )
        .unwrap_or_else(|e| panic!("installing the CRD: {e}"));
    wait_for("the CRD to be established", 60_000, || {
        let crd = kubectl
            .get_json("default", "crd/dledgergroups.dledger.io")
            .map_err(|e| e.to_string())?;
        let established = crd["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
        if established {
            Ok(())
        } else {
            Err(crd["status"].to_string())
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let rbac = dledger_operator::rbac::manifests_yaml(namespace)
        .unwrap_or_else(|e| panic!("rbac yaml: {e}"));
    kubectl
        .apply(namespace, &rbac)
        .unwrap_or_else(|e| panic!("applying the operator's RBAC: {e}"));
    kubectl
        .apply(namespace, &operator_deployment(image))
        .unwrap_or_else(|e| panic!("operator deployment: {e}"));
    wait_operator_ready(kubectl, namespace);
}

fn operator_deployment(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: dledger-operator}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: dledger-operator}}}}
  template:
    metadata: {{labels: {{app: dledger-operator}}}}
    spec:
      serviceAccountName: dledger-operator
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: operator
        image: {image}
        imagePullPolicy: IfNotPresent
        args: [run]
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: POD_NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
        - {{name: RUST_LOG, value: info}}
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /readyz, port: http}}, periodSeconds: 2}}
        livenessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 10}}
        securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}
"#
    )
}

pub(super) fn wait_operator_ready(kubectl: &Kubectl, namespace: &str) -> String {
    wait_for(
        "the operator pod to be ready",
        OPERATOR_READY_TIMEOUT_MS,
        || {
            let pods = kubectl
                .get_json(namespace, "pods")
                .map_err(|e| e.to_string())?;
            let items = pods["items"].as_array().cloned().unwrap_or_default();
            items
                .iter()
                .find(|pod| pod_is_ready(pod) && pod["metadata"]["deletionTimestamp"].is_null())
                .and_then(|pod| pod["metadata"]["name"].as_str().map(str::to_owned))
                .ok_or_else(|| {
                    items
                        .iter()
                        .map(describe_pod)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn group_yaml(name: &str, image: &str, replicas: usize, extra: &str) -> String {
    format!(
        r#"apiVersion: dledger.io/v1alpha1
kind: DLedgerGroup
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  image: {image}
  storage: {{size: 64Mi}}
{extra}"#
    )
}

/// The group's status once it is Running with every member ready.
pub(super) fn wait_running(
    kubectl: &Kubectl,
    namespace: &str,
    name: &str,
    replicas: usize,
) -> serde_json::Value {
    wait_for(
        &format!("{name} to be Running with {replicas} ready members"),
        GROUP_READY_TIMEOUT_MS,
        || {
            let group = kubectl
                .get_json(namespace, &format!("dlg/{name}"))
                .map_err(|e| e.to_string())?;
            let status = &group["status"];
            let running = status["phase"] == "Running"
                && status["readyReplicas"].as_u64() == Some(replicas as u64)
                && status["leader"].is_string()
                && status["observedGeneration"] == group["metadata"]["generation"];
            if running {
                Ok(status.clone())
            } else {
                Err(status.to_string())
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// What one poll of the group's pods saw.
#[derive(Clone, Debug)]
pub(super) struct PodSeen {
    pub(super) uid: String,
    pub(super) ready: bool,
    pub(super) role: String,
    pub(super) image: String,
    pub(super) deleting: bool,
}

/// The group's pods by name, or why they could not be listed.
pub(super) fn pods_seen(
    kubectl: &Kubectl,
    namespace: &str,
) -> Result<BTreeMap<String, PodSeen>, String> {
    let selector = format!("app.kubernetes.io/instance={GROUP}");
    let out = kubectl
        .run(&[
            "get",
            "--namespace",
            namespace,
            "pods",
            "-l",
            &selector,
            "-o",
            "json",
        ])
        .map_err(|e| e.to_string())?;
    let pods: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|pod| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
            (
                text(&pod["metadata"]["name"]),
                PodSeen {
                    uid: text(&pod["metadata"]["uid"]),
                    ready: pod_is_ready(pod),
                    role: text(&pod["metadata"]["labels"]["dledger.io/role"]),
                    image: text(&pod["spec"]["containers"][0]["image"]),
                    deleting: !pod["metadata"]["deletionTimestamp"].is_null(),
                },
            )
        })
        .collect())
}

/// `kubectl patch dlg/<GROUP> --type merge -p <patch>`.
pub(super) fn patch_group(kubectl: &Kubectl, namespace: &str, patch: &str) {
    kubectl
        .run(&[
            "patch",
            "--namespace",
            namespace,
            &format!("dlg/{GROUP}"),
            "--type",
            "merge",
            "-p",
            patch,
        ])
        .unwrap_or_else(|e| panic!("patching the group with {patch}: {e}"));
}

/// The group object.
pub(super) fn group(kubectl: &Kubectl, namespace: &str) -> serde_json::Value {
    kubectl
        .get_json(namespace, &format!("dlg/{GROUP}"))
        .unwrap_or_else(|e| panic!("the group: {e}"))
}

/// The condition `type_` of a group object: (status, reason, message).
pub(super) fn condition(
    group: &serde_json::Value,
    type_: &str,
) -> Option<(String, String, String)> {
    group["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
            (text(&c["status"]), text(&c["reason"]), text(&c["message"]))
        })
}

/// The pods named by the `-leader` Service's EndpointSlices.
fn leader_endpoints(kubectl: &Kubectl, namespace: &str, name: &str) -> Result<Vec<String>, String> {
    let selector = format!("kubernetes.io/service-name={name}-leader");
    let out = kubectl
        .run(&[
            "get",
            "--namespace",
            namespace,
            "endpointslices",
            "-l",
            &selector,
            "-o",
            "json",
        ])
        .map_err(|e| e.to_string())?;
    let slices: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let mut pods = Vec::new();
    for slice in slices["items"].as_array().into_iter().flatten() {
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            if let Some(pod) = endpoint["targetRef"]["name"].as_str() {
                pods.push(pod.to_owned());
            }
        }
    }
    Ok(pods)
}

fn role_labels(kubectl: &Kubectl, namespace: &str, name: &str) -> BTreeMap<String, String> {
    let selector = format!("app.kubernetes.io/instance={name}");
    let out = kubectl
        .run(&[
            "get",
            "--namespace",
            namespace,
            "pods",
            "-l",
            &selector,
            "-o",
            "json",
        ])
        .unwrap_or_else(|e| panic!("pods: {e}"));
    let pods: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("pods json: {e}"));
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|pod| {
            (
                pod["metadata"]["name"].as_str().unwrap_or("?").to_owned(),
                pod["metadata"]["labels"]["dledger.io/role"]
                    .as_str()
                    .unwrap_or("-")
                    .to_owned(),
            )
        })
        .collect()
}

/// Kills the replica process of `pod` from the node (the image has no
/// shell, and the pod must stay: only its process dies). Finds it by the
/// environment the operator gave it: `DLEDGER_ID=<pod>` and a member list in
/// `namespace`. This is the one-node test cluster's way; on kind the node
/// is a container and this step needs `docker exec`.
fn kill_member_process(namespace: &str, pod: &str) -> i32 {
    let id = format!("DLEDGER_ID={pod}");
    let peers_in = format!(".{namespace}.svc:");
    let entries = std::fs::read_dir("/proc").unwrap_or_else(|e| panic!("/proc: {e}"));
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let ours = vars.contains(&id)
            && vars
                .iter()
                .any(|v| v.starts_with("DLEDGER_PEERS=") && v.contains(&peers_in));
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ours && String::from_utf8_lossy(&cmdline).contains("dledger-replica") {
            // SAFETY: kill(2) with a pid we just found and a valid signal.
            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
            assert_eq!(rc, 0, "kill -9 {pid} ({pod}) failed");
            return pid;
        }
    }
    panic!("no dledger-replica process of {namespace}/{pod} on this node");
}

/// Appends `count` entries through the client Service from a pod; the acknowledgements.
fn write_wave(
    kubectl: &Kubectl,
    namespace: &str,
    image: &str,
    wave: &str,
    count: usize,
) -> Vec<(u64, u64, String)> {
    let servers = format!("{GROUP}.{namespace}.svc.cluster.local:{REPLICA_PEER_PORT}");
    let payloads: Vec<String> = (0..count).map(|i| format!("{wave}-{i}")).collect();
    let args: Vec<String> = ["append", "--servers", &servers, "--group", GROUP]
        .iter()
        .map(|a| (*a).to_owned())
        .chain(client_credentials())
        .chain(payloads.iter().cloned())
        .map(|a| format!("\"{a}\""))
        .collect();
    let pod = format!("writer-{wave}");
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  restartPolicy: Never
  securityContext: {{runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}}
  volumes:
  - name: client-tls
    secret: {{secretName: {GROUP}-client-tls}}
  containers:
  - name: client
    image: {image}
    imagePullPolicy: IfNotPresent
    args: [{}]
    volumeMounts: [{{name: client-tls, mountPath: {CLIENT_TLS_DIR}, readOnly: true}}]
"#,
        args.join(", ")
    );
    kubectl
        .apply(namespace, &yaml)
        .unwrap_or_else(|e| panic!("writer {pod}: {e}"));
    let phase = wait_for(
        &format!("writer {pod} to finish"),
        CLIENT_POD_TIMEOUT_MS,
        || {
            let json = kubectl
                .get_json(namespace, &format!("pod/{pod}"))
                .map_err(|e| e.to_string())?;
            match json["status"]["phase"].as_str() {
                Some(phase @ ("Succeeded" | "Failed")) => Ok(phase.to_owned()),
                _ => Err(describe_pod(&json)),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let logs = kubectl
        .logs(namespace, &pod)
        .unwrap_or_else(|e| panic!("logs of {pod}: {e}"));
    assert_eq!(phase, "Succeeded", "writer {pod} failed:\n{logs}");
    let acks: Vec<(u64, u64, String)> = logs
        .lines()
        // `kubectl logs` merges stderr, where the CLI says what it waits for
        // when the group takes over a second to commit (a leader just died)
        // and when that wait ended; the count below still holds every ack.
        .filter(|line| {
            line.trim().split_once('\t').is_some_and(|(index, term)| {
                index.parse::<u64>().is_ok() && term.parse::<u64>().is_ok()
            })
        })
        .zip(&payloads)
        .map(|(line, payload)| {
            let (index, term) = line
                .trim()
                .split_once('\t')
                .unwrap_or_else(|| panic!("not index<TAB>term: {line:?}"));
            (
                index
                    .parse()
                    .unwrap_or_else(|_| panic!("index in {line:?}")),
                term.parse().unwrap_or_else(|_| panic!("term in {line:?}")),
                payload.clone(),
            )
        })
        .collect();
    assert_eq!(
        acks.len(),
        count,
        "writer {pod} acknowledged {} of {count}:\n{logs}",
        acks.len()
    );
    acks
}

/// Every acknowledged entry, read back from a member: same index, term, payload.
pub(super) fn read_back(
    kubectl: &Kubectl,
    namespace: &str,
    pod: &str,
    acks: &[(u64, u64, String)],
) {
    let log = read_log(kubectl, namespace, pod);
    for (index, term, payload) in acks {
        assert_eq!(
            log.get(index),
            Some(&(*term, payload.clone())),
            "acknowledged entry {index} (term {term}, {payload}) is not in the log"
        );
    }
}

/// Where a member pod has its certificate (the operator's `<group>-tls`
/// Secret), as client flags: a member's certificate has the write right.
pub(super) fn member_credentials(pod: &str) -> Vec<String> {
    let dir = "/etc/dledger/tls";
    [
        "--ca".to_string(),
        format!("{dir}/ca.crt"),
        "--cert".to_string(),
        format!("{dir}/{pod}.crt"),
        "--key".to_string(),
        format!("{dir}/{pod}.key"),
    ]
    .to_vec()
}

/// Where a client pod mounts the group's `<group>-client-tls` Secret.
pub(super) const CLIENT_TLS_DIR: &str = "/etc/dledger/client";

/// The client flags for the files under [`CLIENT_TLS_DIR`].
pub(super) fn client_credentials() -> Vec<String> {
    [
        "--ca".to_string(),
        format!("{CLIENT_TLS_DIR}/ca.crt"),
        "--cert".to_string(),
        format!("{CLIENT_TLS_DIR}/tls.crt"),
        "--key".to_string(),
        format!("{CLIENT_TLS_DIR}/tls.key"),
    ]
    .to_vec()
}

/// A member's committed log from index 1, read inside its pod: index ->
/// (term, payload).
pub(super) fn read_log(
    kubectl: &Kubectl,
    namespace: &str,
    pod: &str,
) -> BTreeMap<u64, (u64, String)> {
    let servers = format!("127.0.0.1:{REPLICA_PEER_PORT}");
    let mut args: Vec<&str> = vec![
        "/usr/local/bin/dledger-replica",
        "read",
        "--servers",
        &servers,
        "--group",
        GROUP,
        "--from",
        "1",
    ];
    let credentials = member_credentials(pod);
    args.extend(credentials.iter().map(String::as_str));
    let out = kubectl
        .exec(namespace, pod, CONTAINER, &args)
        .unwrap_or_else(|e| panic!("reading the log from {pod}: {e}"));
    out.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            let index = parts.next()?.parse().ok()?;
            let term = parts.next()?.parse().ok()?;
            Some((index, (term, parts.next().unwrap_or("").to_owned())))
        })
        .collect()
}

pub(super) fn percentile(sorted_ms: &[u128], p: f64) -> u128 {
    let rank = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[rank.min(sorted_ms.len() - 1)]
}

/// Kills the leader's process and measures how long until the `-leader`
/// endpoints name a new leader (and only it).
fn kill_leader_and_follow(kubectl: &Kubectl, namespace: &str) -> u128 {
    let status = wait_running(kubectl, namespace, GROUP, MEMBERS);
    let old = status["leader"]
        .as_str()
        .unwrap_or_else(|| panic!("no leader in {status}"))
        .to_owned();
    assert_eq!(
        leader_endpoints(kubectl, namespace, GROUP).unwrap_or_default(),
        [old.as_str()]
    );
    kill_member_process(namespace, &old);
    let killed = Instant::now();
    let new = loop {
        let endpoints = leader_endpoints(kubectl, namespace, GROUP).unwrap_or_default();
        if let [one] = endpoints.as_slice() {
            if *one != old {
                break one.clone();
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the -leader endpoints never moved from {old}: {endpoints:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let follow_ms = killed.elapsed().as_millis();
    // The endpoint is the leader the members agree on.
    let status = kubectl
        .replica_status(namespace, &new, CONTAINER, &member_credentials(&new))
        .unwrap_or_else(|e| panic!("status of {new}: {e}"));
    assert_eq!(
        status.role.as_str(),
        "leader",
        "the -leader endpoint {new} is not the leader: {status:?}"
    );
    follow_ms
}

#[test]
#[ignore = "needs a cluster: e2e/kubernetes/run.sh"]
fn the_operator_builds_heals_and_follows_the_leader() {
    let kubectl = Kubectl::from_env().unwrap_or_else(|e| panic!("{e}"));
    let replica_image = required_env("DLEDGER_REPLICA_IMAGE").unwrap_or_else(|e| panic!("{e}"));
    let operator_image = required_env("DLEDGER_OPERATOR_IMAGE").unwrap_or_else(|e| panic!("{e}"));
    let operator_ns = kubectl
        .namespace(&unique("dledger-op"))
        .unwrap_or_else(|e| panic!("{e}"));
    install_operator(&kubectl, operator_ns.name(), &operator_image);
    let ns = kubectl
        .namespace(&unique("dlg-op"))
        .unwrap_or_else(|e| panic!("{e}"));
    let namespace = ns.name();

    // Create: three ready members, one leader, status and printer columns filled.
    let created = Instant::now();
    kubectl
        .apply(namespace, &group_yaml(GROUP, &replica_image, MEMBERS, ""))
        .unwrap_or_else(|e| panic!("{e}"));
    let status = wait_running(&kubectl, namespace, GROUP, MEMBERS);
    eprintln!(
        "operator: group Running {} ms after creation",
        created.elapsed().as_millis()
    );
    let leader = status["leader"].as_str().unwrap_or_default().to_owned();
    assert_eq!(status["members"].as_array().map(Vec::len), Some(MEMBERS));
    assert!(
        status["term"].as_u64().unwrap_or(0) >= 1
            && status["commitIndex"].as_u64().unwrap_or(0) >= 1,
        "{status}"
    );
    let table = kubectl
        .run(&["get", "--namespace", namespace, "dlg", GROUP])
        .unwrap_or_else(|e| panic!("{e}"));
    for column in [
        "REPLICAS", "READY", "LEADER", "TERM", "COMMIT", "PHASE", "AGE",
    ] {
        assert!(table.contains(column), "no {column} column:\n{table}");
    }
    assert!(
        table.contains(&leader) && table.contains("Running"),
        "{table}"
    );
    wait_for(
        "the -leader endpoints to name the leader",
        REPAIR_TIMEOUT_MS,
        || {
            let endpoints = leader_endpoints(&kubectl, namespace, GROUP)?;
            if endpoints == [leader.clone()] {
                Ok(())
            } else {
                Err(format!("{endpoints:?}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let labels = role_labels(&kubectl, namespace, GROUP);
    assert_eq!(
        labels.values().filter(|r| *r == "leader").count(),
        1,
        "{labels:?}"
    );
    let mut acks = write_wave(&kubectl, namespace, &replica_image, "created", 50);

    // Leader kills: the label and the endpoints follow.
    let mut follow_ms = Vec::new();
    for kill in 0..LEADER_KILLS {
        let ms = kill_leader_and_follow(&kubectl, namespace);
        eprintln!(
            "operator: kill {kill}: -leader endpoints on the new leader {ms} ms after the kill"
        );
        follow_ms.push(ms);
        if kill == LEADER_KILLS / 2 {
            // Restart the operator in the middle of all this: it carries on.
            let pod = wait_operator_ready(&kubectl, operator_ns.name());
            kubectl
                .delete(operator_ns.name(), &format!("pod/{pod}"), None)
                .unwrap_or_else(|e| panic!("{e}"));
            wait_operator_ready(&kubectl, operator_ns.name());
        }
        acks.extend(write_wave(
            &kubectl,
            namespace,
            &replica_image,
            &format!("kill{kill}"),
            10,
        ));
    }
    follow_ms.sort_unstable();
    eprintln!(
        "operator: label follow over {} leader kills: p50 {} ms, max {} ms",
        follow_ms.len(),
        percentile(&follow_ms, 0.5),
        follow_ms[follow_ms.len() - 1]
    );
    assert!(
        percentile(&follow_ms, 0.5) <= LABEL_FOLLOW_BOUND_MS,
        "label follow p50 over the bound: {follow_ms:?}"
    );

    // `kubectl delete pod`: it returns and catches up.
    let victim = pod_name(GROUP, 1);
    kubectl
        .delete(namespace, &format!("pod/{victim}"), None)
        .unwrap_or_else(|e| panic!("{e}"));
    acks.extend(write_wave(
        &kubectl,
        namespace,
        &replica_image,
        "podgone",
        20,
    ));
    let status = wait_running(&kubectl, namespace, GROUP, MEMBERS);
    let member = status["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == victim.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(member["answering"], true, "{status}");

    // Children edited or deleted by hand are put back.
    kubectl
        .run(&[
            "delete",
            "--namespace",
            namespace,
            "service",
            &format!("{GROUP}-leader"),
            "--wait=true",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    kubectl
        .run(&[
            "patch",
            "--namespace",
            namespace,
            "statefulset",
            GROUP,
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":1}}}}"#,
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    kubectl
        .run(&[
            "delete",
            "--namespace",
            namespace,
            "pdb",
            GROUP,
            "--wait=true",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for("the children to be put back", REPAIR_TIMEOUT_MS, || {
        let svc = kubectl
            .get_json(namespace, &format!("service/{GROUP}-leader"))
            .map_err(|e| e.to_string())?;
        let pdb = kubectl
            .get_json(namespace, &format!("pdb/{GROUP}"))
            .map_err(|e| e.to_string())?;
        let sts = kubectl
            .get_json(namespace, &format!("statefulset/{GROUP}"))
            .map_err(|e| e.to_string())?;
        let grace = &sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"];
        if svc["spec"]["selector"]["dledger.io/role"] == "leader"
            && pdb["spec"]["maxUnavailable"] == 1
            && grace != 1
        {
            Ok(())
        } else {
            Err(format!("grace={grace} pdb={}", pdb["spec"]))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let events = kubectl
        .run(&["get", "--namespace", namespace, "events", "-o", "json"])
        .unwrap_or_default();
    for reason in ["ChildRepaired", "LeaderElected", "MemberNotAnswering"] {
        assert!(events.contains(reason), "no {reason} Event");
    }
    acks.extend(write_wave(
        &kubectl,
        namespace,
        &replica_image,
        "repaired",
        20,
    ));

    // Every acknowledged write is there.
    let status = wait_running(&kubectl, namespace, GROUP, MEMBERS);
    read_back(
        &kubectl,
        namespace,
        status["leader"].as_str().unwrap_or_default(),
        &acks,
    );
    eprintln!("operator: {} acknowledged writes read back", acks.len());

    // Delete the group: children collected, volumes kept (the default: Retain).
    kubectl
        .run(&[
            "delete",
            "--namespace",
            namespace,
            "dlg",
            GROUP,
            "--wait=true",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "the children to be garbage-collected",
        GONE_TIMEOUT_MS,
        || {
            let left = kubectl
                .run(&[
                    "get",
                    "--namespace",
                    namespace,
                    "statefulsets,services,pdb,pods",
                    "-l",
                    &format!("app.kubernetes.io/instance={GROUP}"),
                    "-o",
                    "name",
                ])
                .map_err(|e| e.to_string())?;
            if left.trim().is_empty() {
                Ok(())
            } else {
                Err(left)
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let claims = kubectl
        .run(&["get", "--namespace", namespace, "pvc", "-o", "name"])
        .unwrap_or_default();
    assert_eq!(
        claims.lines().count(),
        MEMBERS,
        "Retain keeps every volume: {claims}"
    );
}

#[test]
#[ignore = "needs a cluster: e2e/kubernetes/run.sh"]
fn invalid_groups_are_refused_with_the_field_named() {
    let kubectl = Kubectl::from_env().unwrap_or_else(|e| panic!("{e}"));
    let image = required_env("DLEDGER_REPLICA_IMAGE").unwrap_or_else(|e| panic!("{e}"));
    let crd = dledger_operator::crd::crd_yaml().unwrap_or_else(|e| panic!("{e}"));
    kubectl
        .run_with_input(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            &crd,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let ns = kubectl
        .namespace(&unique("dlg-bad"))
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = |yaml: String, field: &str| {
        let err = kubectl
            .apply(ns.name(), &yaml)
            .expect_err("an invalid group was accepted");
        assert!(
            err.to_string().contains(field),
            "the refusal does not name {field}: {err}"
        );
    };
    refused(group_yaml("even", &image, 4, ""), "spec.replicas");
    refused(group_yaml("many", &image, 9, ""), "spec.replicas");
    refused(group_yaml("noimage", "\"\"", 3, ""), "spec.image");
    refused(
        group_yaml("badsize", &image, 3, "").replace("64Mi", "lots"),
        "spec.storage.size",
    );
    refused(
        group_yaml(
            "timing",
            &image,
            3,
            "  config: {heartbeatMs: 100, electionTimeoutMs: 150}\n",
        ),
        "electionTimeoutMs",
    );
    refused(
        group_yaml("slow", &image, 3, "  config: {heartbeatMs: 5}\n"),
        "spec.config.heartbeatMs",
    );
    // Storage class immutable: accepted once, refused when changed.
    let fast = group_yaml("classy", &image, 1, "")
        .replace("{size: 64Mi}", "{size: 64Mi, storageClassName: fast}");
    kubectl
        .apply(ns.name(), &fast)
        .unwrap_or_else(|e| panic!("a valid group was refused: {e}"));
    refused(
        fast.replace("fast", "slow"),
        "storageClassName is immutable",
    );
}

#[test]
#[ignore = "needs a cluster: e2e/kubernetes/run.sh"]
fn a_group_that_says_delete_takes_its_volumes_along() {
    let kubectl = Kubectl::from_env().unwrap_or_else(|e| panic!("{e}"));
    let replica_image = required_env("DLEDGER_REPLICA_IMAGE").unwrap_or_else(|e| panic!("{e}"));
    let operator_image = required_env("DLEDGER_OPERATOR_IMAGE").unwrap_or_else(|e| panic!("{e}"));
    let operator_ns = kubectl
        .namespace(&unique("dledger-op"))
        .unwrap_or_else(|e| panic!("{e}"));
    install_operator(&kubectl, operator_ns.name(), &operator_image);
    let ns = kubectl
        .namespace(&unique("dlg-del"))
        .unwrap_or_else(|e| panic!("{e}"));
    let extra =
        "  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Retain}\n";
    kubectl
        .apply(ns.name(), &group_yaml("single", &replica_image, 1, extra))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_running(&kubectl, ns.name(), "single", 1);
    kubectl
        .run(&[
            "delete",
            "--namespace",
            ns.name(),
            "dlg",
            "single",
            "--wait=true",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "the volume to be deleted with the group",
        GONE_TIMEOUT_MS,
        || {
            let claims = kubectl
                .run(&["get", "--namespace", ns.name(), "pvc", "-o", "name"])
                .map_err(|e| e.to_string())?;
            if claims.trim().is_empty() {
                Ok(())
            } else {
                Err(claims)
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}
