//! TLS on a real cluster, as the operator sets it up by default: the
//! group's CA and certificates in Secrets, every member on mutual TLS and
//! HTTPS, callers without a credential refused, an application writing
//! with the client Secret, and the member certificates issued again under
//! a streaming writer (the Secret deleted, as a person forcing a rotation
//! would): each member reloads its new certificate without a restart, and
//! no acknowledged write is lost.
//!
//! `DLEDGER_TLS_ROTATION_TIMEOUT_MS` (default 240000) bounds the rotation:
//! the kubelet refreshes a mounted Secret at its next sync of the pod.

use std::collections::BTreeMap;
use std::time::Instant;

use dledger_e2e::kube::{wait_for, Kubectl};

use super::operator::{group, member_credentials, CONTAINER, GROUP};
use super::scaling::{wait_group_event, Scene};
use super::writes::{check_ack_order, check_acks_kept, longest_gap_ms, Writer};

const MEMBERS: usize = 3;
const ROTATION_TIMEOUT_MS: u64 = 240_000;
/// Acknowledged writes before the rotation, and after it.
const WRITES_AROUND: usize = 100;
/// The longest pause of acknowledged writes the rotation may cause (the
/// goal is none; this is room for a slow shared machine).
const WRITE_GAP_BOUND_MS: u128 = 5_000;

fn rotation_timeout_ms() -> u64 {
    dledger_e2e::kube::env_ms("DLEDGER_TLS_ROTATION_TIMEOUT_MS", ROTATION_TIMEOUT_MS)
}

fn pods() -> Vec<String> {
    (0..MEMBERS).map(|i| format!("{GROUP}-{i}")).collect()
}

/// Runs `dledger-replica <args>` inside `pod`; its output or its failure.
fn in_pod(
    kubectl: &Kubectl,
    namespace: &str,
    pod: &str,
    args: &[String],
) -> Result<String, String> {
    let mut command = vec!["/usr/local/bin/dledger-replica"];
    command.extend(args.iter().map(String::as_str));
    kubectl
        .exec(namespace, pod, CONTAINER, &command)
        .map_err(|e| e.to_string())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// The end of validity of the certificate each member serves, from its
/// `/status`.
fn served_certificates(
    kubectl: &Kubectl,
    namespace: &str,
) -> Result<BTreeMap<String, i64>, String> {
    pods()
        .into_iter()
        .map(|pod| {
            let status = kubectl
                .replica_status(namespace, &pod, CONTAINER, &member_credentials(&pod))
                .map_err(|e| format!("{pod}: {e}"))?;
            let not_after = status
                .certificate_not_after_s
                .ok_or_else(|| format!("{pod} reports no certificate"))?;
            Ok((pod, not_after))
        })
        .collect()
}

#[test]
#[ignore = "needs a cluster: e2e/kubernetes/run.sh"]
fn a_tls_group_refuses_strangers_and_rotates_its_certificates_under_writes() {
    let scene = Scene::start("dlg-tls");
    let Scene {
        kubectl,
        kubectl_program,
        kubeconfig,
        image,
        ..
    } = &scene;
    let namespace = scene.ns.name();
    scene.apply_group(MEMBERS);

    // The Secrets: the CA's key stays in its own.
    let secret_keys = |name: &str| -> Vec<String> {
        let secret = kubectl
            .get_json(namespace, &format!("secret/{name}"))
            .unwrap_or_else(|e| panic!("{e}"));
        secret["data"]
            .as_object()
            .map(|data| data.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(secret_keys(&format!("{GROUP}-ca")), ["ca.crt", "ca.key"]);
    let members_keys = secret_keys(&format!("{GROUP}-tls"));
    assert!(
        members_keys.contains(&format!("{GROUP}-0.crt")),
        "{members_keys:?}"
    );
    assert!(
        !members_keys.iter().any(|k| k == "ca.key"),
        "{members_keys:?}"
    );
    assert_eq!(
        secret_keys(&format!("{GROUP}-client-tls")),
        ["ca.crt", "tls.crt", "tls.key"]
    );

    // Strangers: no certificate on the binary port, none over HTTP, and a
    // member's own certificate (the write right) asking for an admin call.
    let pod = format!("{GROUP}-0");
    let servers = format!("127.0.0.1:{}", dledger_e2e::kube::REPLICA_PEER_PORT);
    let plain_append = in_pod(
        kubectl,
        namespace,
        &pod,
        &strings(&[
            "append",
            "--servers",
            &servers,
            "--group",
            GROUP,
            "stranger",
        ]),
    );
    let refused = plain_append.expect_err("a plaintext append was accepted");
    assert!(refused.contains("requires TLS"), "{refused}");
    let http = format!("127.0.0.1:{}", dledger_e2e::kube::REPLICA_HTTP_PORT);
    let plain_status = in_pod(
        kubectl,
        namespace,
        &pod,
        &strings(&["status", "--servers", &http]),
    );
    assert!(
        plain_status.is_err(),
        "plain HTTP answered: {plain_status:?}"
    );
    // Asked of the leader itself (the command finds it by `/status`, which
    // the write right may read).
    let leader = group(kubectl, namespace)["status"]["leader"]
        .as_str()
        .unwrap_or_else(|| panic!("no leader in the status"))
        .to_owned();
    let mut transfer = strings(&["transfer-leader", "--servers", &http]);
    transfer.extend(member_credentials(&leader));
    let forbidden = in_pod(kubectl, namespace, &leader, &transfer)
        .expect_err("a member's certificate transferred leadership");
    assert!(forbidden.contains("403"), "{forbidden}");
    eprintln!("tls: strangers refused; a write-right certificate's admin call: {forbidden}");

    // An application with the client Secret, streaming through the client
    // Service while the member certificates are issued again.
    let writer = Writer::start(kubectl_program, kubeconfig, namespace, image);
    writer.wait_acks(WRITES_AROUND);
    let before = served_certificates(kubectl, namespace).unwrap_or_else(|e| panic!("{e}"));
    let term_before = kubectl
        .replica_status(namespace, &pod, CONTAINER, &member_credentials(&pod))
        .unwrap_or_else(|e| panic!("{e}"))
        .term;
    let restarts = |kubectl: &Kubectl| -> Vec<i64> {
        pods()
            .iter()
            .map(|pod| {
                let json = kubectl
                    .get_json(namespace, &format!("pod/{pod}"))
                    .unwrap_or_else(|e| panic!("{e}"));
                json["status"]["containerStatuses"][0]["restartCount"]
                    .as_i64()
                    .unwrap_or(-1)
            })
            .collect()
    };
    let restarts_before = restarts(kubectl);
    let started = Instant::now();
    kubectl
        .delete(namespace, &format!("secret/{GROUP}-tls"), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let note = wait_group_event(
        kubectl,
        namespace,
        "CertificatesIssued",
        &format!("{GROUP}-tls"),
    );
    eprintln!("tls: {note}");
    let after = wait_for(
        "every member serving its new certificate",
        rotation_timeout_ms(),
        || {
            let now = served_certificates(kubectl, namespace)?;
            if now.iter().all(|(pod, not_after)| *not_after > before[pod]) {
                Ok(now)
            } else {
                Err(format!("before {before:?}, now {now:?}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rotation_s = started.elapsed().as_secs_f64();
    let seen = writer.acks().len();
    writer.wait_acks(seen + WRITES_AROUND);
    let acks = writer.finish();

    assert_eq!(restarts(kubectl), restarts_before, "a member restarted");
    check_ack_order(&acks);
    for member in pods() {
        check_acks_kept(kubectl, namespace, &member, &acks);
    }
    let gap_ms = longest_gap_ms(&acks);
    let term_after = kubectl
        .replica_status(namespace, &pod, CONTAINER, &member_credentials(&pod))
        .unwrap_or_else(|e| panic!("{e}"))
        .term;
    eprintln!(
        "tls: rotation {rotation_s:.1} s from the Secret's deletion to every member serving the new certificate \
         ({before:?} -> {after:?}); {} acknowledged writes read back from every member; longest gap {gap_ms} ms; \
         term {term_before} -> {term_after}",
        acks.len()
    );
    assert!(
        gap_ms <= WRITE_GAP_BOUND_MS,
        "writes paused {gap_ms} ms during the rotation"
    );
}
