//! The user's path through the Helm chart: `helm install` the operator, apply
//! the examples, write to a group, `helm upgrade` the operator under a running
//! group (which must not notice), `helm uninstall` (the group and its data stay).
//!
//! Helm is `DLEDGER_HELM` (`e2e/kubernetes/run.sh` points it at the pinned
//! `scripts/helm.sh`; kind runs use the `helm` on `PATH`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use dledger_e2e::kube::{required_env, wait_for, Kubectl};

use super::operator::member_credentials;

const CHART_TIMEOUT: &str = "240s";
const GROUP_READY_TIMEOUT_MS: u64 = 240_000;
const CHILDREN_TIMEOUT_MS: u64 = 60_000;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ sits in the workspace root")
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:05x}", nanos & 0xfffff)
}

/// Runs helm with the suite's kubeconfig; panics with its output on failure.
fn helm(args: &[&str]) -> String {
    let program = std::env::var("DLEDGER_HELM").unwrap_or_else(|_| "helm".to_owned());
    let kubeconfig = required_env("KUBECONFIG").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(&program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An example from `examples/` with the image this run built.
fn example(file: &str, image: &str) -> String {
    let text = std::fs::read_to_string(root().join("examples").join(file))
        .unwrap_or_else(|e| panic!("examples/{file}: {e}"));
    let replaced: Vec<String> = text
        .lines()
        .map(|line| match line.split_once("image: ") {
            Some((indent, _)) if indent.trim().is_empty() && indent.len() == 2 => {
                format!("{indent}image: {image}")
            }
            _ => line.to_owned(),
        })
        .collect();
    let yaml = replaced.join("\n");
    assert!(
        yaml.contains(image),
        "examples/{file} has no spec.image line"
    );
    yaml
}

fn group_ready(kubectl: &Kubectl, namespace: &str, name: &str, replicas: u64) -> serde_json::Value {
    wait_for(
        &format!("{name} Running with {replicas} ready members and a leader"),
        GROUP_READY_TIMEOUT_MS,
        || {
            let group = kubectl
                .get_json(namespace, &format!("dlg/{name}"))
                .map_err(|e| e.to_string())?;
            let status = &group["status"];
            if status["phase"] == "Running"
                && status["readyReplicas"].as_u64() == Some(replicas)
                && status["leader"].is_string()
            {
                Ok(status.clone())
            } else {
                Err(status.to_string())
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Pod name → uid of the group's members.
fn member_uids(kubectl: &Kubectl, namespace: &str, name: &str) -> BTreeMap<String, String> {
    let selector = format!("app.kubernetes.io/instance={name}");
    let out = kubectl
        .run(&[
            "get",
            "pods",
            "--namespace",
            namespace,
            "-l",
            &selector,
            "-o",
            "json",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}"));
    pods["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|pod| {
                    (
                        pod["metadata"]["name"].as_str().unwrap_or("?").to_owned(),
                        pod["metadata"]["uid"].as_str().unwrap_or("?").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Appends one entry through the group's client Service, from a member pod.
fn append(kubectl: &Kubectl, namespace: &str, group: &str, payload: &str) -> String {
    let servers = format!("{group}:20911");
    let pod = format!("{group}-0");
    let credentials = member_credentials(&pod);
    let mut args = vec![
        "/usr/local/bin/dledger-replica",
        "append",
        "--group",
        group,
        "--servers",
        &servers,
    ];
    args.extend(credentials.iter().map(String::as_str));
    args.push(payload);
    wait_for(&format!("an append of {payload:?}"), 60_000, || {
        kubectl
            .exec(namespace, &pod, "replica", &args)
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
#[ignore = "needs a cluster: e2e/kubernetes/run.sh"]
fn helm_install_examples_upgrade_and_uninstall() {
    let kubectl = Kubectl::from_env().unwrap_or_else(|e| panic!("{e}"));
    let replica_image = required_env("DLEDGER_REPLICA_IMAGE").unwrap_or_else(|e| panic!("{e}"));
    let operator_image = required_env("DLEDGER_OPERATOR_IMAGE").unwrap_or_else(|e| panic!("{e}"));
    let (repository, tag) = operator_image
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{operator_image} has no tag"));
    let operator_ns = kubectl
        .namespace(&unique("dledger-chart"))
        .unwrap_or_else(|e| panic!("{e}"));
    let groups_ns = kubectl
        .namespace(&unique("dlg-chart"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (op_ns, ns) = (operator_ns.name().to_owned(), groups_ns.name().to_owned());
    let release = "dledger";
    let repository_value = format!("image.repository={repository}");
    let tag_value = format!("image.tag={tag}");

    // 1. helm install → a running operator.
    let started = Instant::now();
    helm(&[
        "install",
        release,
        "charts/dledger-operator",
        "--namespace",
        &op_ns,
        "--set",
        &repository_value,
        "--set",
        &tag_value,
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--wait",
        "--timeout",
        CHART_TIMEOUT,
    ]);
    println!(
        "helm install → operator ready: {} ms",
        started.elapsed().as_millis()
    );

    // 2. The minimal example becomes a ready group that takes writes.
    kubectl
        .apply(&ns, &example("minimal.yaml", &replica_image))
        .unwrap_or_else(|e| panic!("{e}"));
    let status = group_ready(&kubectl, &ns, "orders", 3);
    println!(
        "helm install → minimal group ready: {} ms (leader {})",
        started.elapsed().as_millis(),
        status["leader"]
    );
    let first = append(&kubectl, &ns, "orders", "before-upgrade");

    // 3. The production example is accepted and gets its children (on one
    //    node its required anti-affinity leaves four members pending).
    kubectl
        .apply(&ns, &example("production.yaml", &replica_image))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "the production example's StatefulSet and PDB",
        CHILDREN_TIMEOUT_MS,
        || {
            let sts = kubectl
                .get_json(&ns, "statefulset/payments")
                .map_err(|e| e.to_string())?;
            kubectl
                .get_json(&ns, "pdb/payments")
                .map_err(|e| e.to_string())?;
            if sts["spec"]["replicas"] == 5 && sts["spec"]["updateStrategy"]["type"] == "OnDelete" {
                Ok(())
            } else {
                Err(sts["spec"].to_string())
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    kubectl
        .delete(&ns, "dlg/payments", None)
        .unwrap_or_else(|e| panic!("{e}"));

    // 4. helm upgrade of the operator (a new pod) leaves the group alone.
    let before = member_uids(&kubectl, &ns, "orders");
    assert_eq!(before.len(), 3, "{before:?}");
    helm(&[
        "upgrade",
        release,
        "charts/dledger-operator",
        "--namespace",
        &op_ns,
        "--set",
        &repository_value,
        "--set",
        &tag_value,
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--set",
        "podAnnotations.upgraded=yes",
        "--wait",
        "--timeout",
        CHART_TIMEOUT,
    ]);
    group_ready(&kubectl, &ns, "orders", 3);
    let second = append(&kubectl, &ns, "orders", "after-upgrade");
    assert_eq!(
        member_uids(&kubectl, &ns, "orders"),
        before,
        "helm upgrade of the operator restarted a member"
    );

    // 5. helm uninstall: the CRD, the group, its pods and its volumes stay.
    helm(&[
        "uninstall",
        release,
        "--namespace",
        &op_ns,
        "--wait",
        "--timeout",
        CHART_TIMEOUT,
    ]);
    kubectl
        .get_json("default", "crd/dledgergroups.dledger.io")
        .unwrap_or_else(|e| panic!("the CRD went with the chart: {e}"));
    kubectl
        .get_json(&ns, "dlg/orders")
        .unwrap_or_else(|e| panic!("the group went with the chart: {e}"));
    let pvcs = kubectl
        .get_json(&ns, "pvc")
        .unwrap_or_else(|e| panic!("{e}"));
    let kept: Vec<&str> = pvcs["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|pvc| pvc["metadata"]["name"].as_str())
                .filter(|name| name.contains("-orders-"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(kept.len(), 3, "every member's volume stays: {kept:?}");
    assert_eq!(member_uids(&kubectl, &ns, "orders"), before);
    let third = append(&kubectl, &ns, "orders", "after-uninstall");
    println!("appends: {first} / {second} / {third}");
}
