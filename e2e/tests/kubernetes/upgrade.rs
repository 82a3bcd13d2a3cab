//! Rolling upgrades and switchover on a real cluster (issue 12). A group of
//! three rolls from one replica image to another and back while a writer
//! streams appends through the client Service: every acknowledged write is
//! read back afterwards, the pods were replaced one at a time, followers
//! first and the old leader last, the writes saw exactly one leadership
//! change per round, and the longest gap between acknowledgements is
//! reported. The operator is killed in the middle of the second round and
//! carries on without a second member down. Then a rolling restart
//! (`kubectl dledger restart`) paused while a follower is deleted by hand:
//! the member that came back is not restarted again. Then a switchover to a named
//! member (`kubectl dledger switchover --to --wait`, then `status`), a
//! supervised upgrade that waits before the leader until `kubectl dledger
//! upgrade proceed`,
//! and an image that never becomes ready: the upgrade stops after that one
//! pod with the reason in `Degraded`, the quorum stays, a rollback recovers.
//!
//! `DLEDGER_UPGRADE_ROUNDS` (default 2) sets how many automatic upgrades the
//! first part makes and `DLEDGER_UPGRADE_MEMBERS` (default 3) the group's
//! size, for the closing note's figures.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dledger_e2e::kube::{required_env, wait_for, Kubectl};

use super::operator::{
    condition, group, group_yaml, install_operator, patch_group, percentile, pods_seen, read_back,
    unique, wait_operator_ready, wait_running, PodSeen, GROUP,
};
use super::writes::{longest_gap_ms, Ack, Writer};

/// How many members the group has: `DLEDGER_UPGRADE_MEMBERS` (odd, at
/// least 3; default 3).
static MEMBERS: LazyLock<usize> = LazyLock::new(|| {
    let members = std::env::var("DLEDGER_UPGRADE_MEMBERS")
        .ok()
        .map(|v| {
            v.parse::<usize>()
                .unwrap_or_else(|e| panic!("DLEDGER_UPGRADE_MEMBERS={v:?}: {e}"))
        })
        .unwrap_or(3);
    assert!(
        members >= 3 && members % 2 == 1,
        "DLEDGER_UPGRADE_MEMBERS must be odd and at least 3, not {members}"
    );
    members
});
/// Each member restarts in turn, back and caught up, within this.
const UPGRADE_TIMEOUT_PER_MEMBER_MS: u64 = 140_000;
const SWITCHOVER_TIMEOUT_SECONDS: u64 = 60;
fn upgrade_timeout_ms() -> u64 {
    UPGRADE_TIMEOUT_PER_MEMBER_MS * *MEMBERS as u64
}
/// The broken image's step gives up after this long (the schema's minimum is 10).
const BROKEN_STEP_TIMEOUT_SECONDS: u32 = 20;
/// The issue's goal for the longest pause of acknowledged writes in an upgrade.
const WRITE_GAP_GOAL_MS: u128 = 1_000;

/// Watches the pods during an upgrade: the order in which they went away
/// (with the role each had last) and the most members out of service at once.
struct Monitor {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<MonitorReport>>,
}

#[derive(Debug, Default)]
struct MonitorReport {
    /// (pod, its role when last seen before it went) in the order they went.
    replaced: Vec<(String, String)>,
    /// When the poll first saw each of those go (after it really went).
    replaced_seen_at: Vec<jiff::Timestamp>,
    most_out_of_service: usize,
    out_of_service_seen: Vec<String>,
    /// `status.upgrade` (step, member) each time it changed.
    steps: Vec<(String, String)>,
    /// The `Progressing` condition's reason and message each time it
    /// changed: where the planner chose to wait, and why.
    waits: Vec<(String, String)>,
}

impl Monitor {
    fn start(kubectl: &Kubectl, namespace: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        // Seen before start returns, i.e. before the change that starts the
        // upgrade: the operator can delete the first pod within milliseconds.
        let first = pods_seen(kubectl, namespace).unwrap_or_else(|e| panic!("pods: {e}"));
        let handle = {
            let (kubectl, namespace, stop) = (kubectl.clone(), namespace.to_owned(), stop.clone());
            std::thread::spawn(move || {
                let mut report = MonitorReport::default();
                let mut last: BTreeMap<String, PodSeen> = first;
                let mut gone: BTreeSet<String> = BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(now) = pods_seen(&kubectl, &namespace) {
                        for (name, before) in &last {
                            let went = match now.get(name) {
                                None => true,
                                Some(seen) => seen.deleting || seen.uid != before.uid,
                            };
                            if went && gone.insert(format!("{name}/{}", before.uid)) {
                                report.replaced.push((name.clone(), before.role.clone()));
                                report.replaced_seen_at.push(jiff::Timestamp::now());
                            }
                        }
                        let out: Vec<String> = (0..*MEMBERS)
                            .map(|i| format!("{GROUP}-{i}"))
                            .filter(|name| now.get(name).is_none_or(|p| !p.ready || p.deleting))
                            .collect();
                        if out.len() > report.most_out_of_service {
                            report.most_out_of_service = out.len();
                            report.out_of_service_seen = out;
                        }
                        for (name, seen) in now {
                            if !seen.deleting {
                                last.insert(name, seen);
                            }
                        }
                    }
                    if let Ok(group) = kubectl.get_json(&namespace, &format!("dlg/{GROUP}")) {
                        let upgrade = &group["status"]["upgrade"];
                        if let (Some(step), Some(member)) =
                            (upgrade["step"].as_str(), upgrade["member"].as_str())
                        {
                            let step = (step.to_owned(), member.to_owned());
                            if report.steps.last() != Some(&step) {
                                report.steps.push(step);
                            }
                        }
                        if let Some((_, reason, message)) = condition(&group, "Progressing") {
                            let wait = (reason, message);
                            if report.waits.last() != Some(&wait) {
                                report.waits.push(wait);
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                report
            })
        };
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> MonitorReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().unwrap_or_else(|_| panic!("the monitor panicked")))
            .unwrap_or_default()
    }
}

/// The version a replica built into `image` reports in `/status`: the two
/// images of this suite are built to report different ones
/// (scripts/test-kubernetes.sh), so a member that says it runs the new image
/// but still answers with the old binary is caught.
fn expected_version(image: &str) -> String {
    let pairs = [
        ("DLEDGER_REPLICA_IMAGE", "DLEDGER_REPLICA_VERSION"),
        ("DLEDGER_REPLICA_IMAGE_V2", "DLEDGER_REPLICA_VERSION_V2"),
    ];
    for (image_var, version_var) in pairs {
        if required_env(image_var).ok().as_deref() == Some(image) {
            return required_env(version_var).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    panic!("{image} is neither DLEDGER_REPLICA_IMAGE nor DLEDGER_REPLICA_IMAGE_V2")
}

/// Every member on `image`, reporting its version, ready, and no upgrade in
/// progress.
fn wait_upgraded(kubectl: &Kubectl, namespace: &str, image: &str, members: usize) {
    let version = expected_version(image);
    wait_for(
        &format!("every member on {image} (version {version}) with the upgrade done"),
        upgrade_timeout_ms(),
        || {
            let pods = pods_seen(kubectl, namespace)?;
            let group = kubectl
                .get_json(namespace, &format!("dlg/{GROUP}"))
                .map_err(|e| e.to_string())?;
            let on_image = pods
                .values()
                .filter(|p| p.image == image && p.ready && !p.deleting)
                .count();
            let reported: Vec<String> = group["status"]["members"]
                .as_array()
                .map(|members| {
                    members
                        .iter()
                        .map(|m| m["version"].as_str().unwrap_or("?").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let on_version = reported.iter().filter(|v| **v == version).count();
            let done = group["status"]["upgrade"].is_null()
                && group["status"]["readyReplicas"].as_u64() == Some(members as u64)
                && group["status"]["leader"].is_string();
            if on_image == members && on_version == members && done {
                Ok(())
            } else {
                Err(format!(
                    "{on_image} of {members} on the image, versions reported {reported:?}; pods {pods:?}; status.upgrade {}; Progressing {:?}",
                    group["status"]["upgrade"],
                    condition(&group, "Progressing")
                ))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// One automatic upgrade to `image`; returns (longest ack gap ms, total ms).
fn upgrade_round(
    kubectl: &Kubectl,
    namespace: &str,
    operator_ns: &str,
    writer: &Writer,
    image: &str,
    kill_operator: bool,
) -> (u128, u128) {
    let status = wait_running(kubectl, namespace, GROUP, *MEMBERS);
    let leader_before = status["leader"].as_str().unwrap_or_default().to_owned();
    let acks_before = writer.acks().len();
    writer.wait_acks(acks_before + 20);
    let monitor = Monitor::start(kubectl, namespace);
    let started = Instant::now();
    // Event times have whole seconds at worst: a second of slack.
    let round_started = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    patch_group(
        kubectl,
        namespace,
        &format!(r#"{{"spec":{{"image":"{image}"}}}}"#),
    );
    if kill_operator {
        // In the middle: once the first member is on its way back.
        wait_for(
            "the first member to be restarted",
            upgrade_timeout_ms(),
            || {
                let pods = pods_seen(kubectl, namespace)?;
                if pods.values().any(|p| p.image == image) {
                    Ok(())
                } else {
                    Err(format!("{pods:?}"))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let pod = wait_operator_ready(kubectl, operator_ns);
        kubectl
            .delete(operator_ns, &format!("pod/{pod}"), Some(0))
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("upgrade: operator pod {pod} killed in the middle of the upgrade");
    }
    wait_upgraded(kubectl, namespace, image, *MEMBERS);
    let total_ms = started.elapsed().as_millis();
    let report = monitor.finish();
    // A few writes after the end, so the last gap is closed.
    writer.wait_acks(writer.acks().len() + 20);
    let acks: Vec<Ack> = writer.acks()[acks_before..].to_vec();

    let replaced: Vec<&str> = report.replaced.iter().map(|(p, _)| p.as_str()).collect();
    eprintln!(
        "upgrade: to {image}: replaced in order {:?}",
        report.replaced
    );
    assert_eq!(
        replaced.iter().collect::<BTreeSet<_>>().len(),
        *MEMBERS,
        "every member replaced exactly once: {:?}",
        report.replaced
    );
    assert_eq!(
        replaced.len(),
        *MEMBERS,
        "a member replaced twice: {:?}",
        report.replaced
    );
    assert_eq!(
        replaced.last().copied(),
        Some(leader_before.as_str()),
        "the leader {leader_before} goes last: {:?}",
        report.replaced
    );
    // The followers were followers when they went. The old leader's label
    // changes in the same reconcile that deletes it, faster than a poll
    // sees, so its turn is checked on the recorded steps instead: the
    // transfer away from it comes before its restart.
    for (pod, role) in &report.replaced[..*MEMBERS - 1] {
        assert_ne!(
            role, "leader",
            "{pod} was restarted while it led: {:?}",
            report.replaced
        );
    }
    eprintln!("upgrade: to {image}: steps {:?}", report.steps);
    for (reason, message) in &report.waits {
        eprintln!("upgrade: to {image}: Progressing {reason}: {message}");
    }
    // The operator's Event for the transfer (repeats of one reason fold
    // into one Event's series, so the reason and the latest time it was
    // seen are what is reliable).
    let transferred_at = last_event_at(kubectl, namespace, "UpgradeTransferringLeadership");
    let leader_gone_at = report.replaced_seen_at.last().copied();
    assert!(
        matches!((transferred_at, leader_gone_at), (Some(t), Some(g)) if t >= round_started && t <= g),
        "no transfer away from {leader_before} before its restart in this round \
         (started {round_started}): transfer Event {transferred_at:?}, {leader_before} seen gone {leader_gone_at:?}"
    );
    assert!(
        report.most_out_of_service <= 1,
        "two members out of service at once: {:?}",
        report.out_of_service_seen
    );
    let terms: BTreeSet<u64> = acks.iter().map(|a| a.term).collect();
    assert_eq!(
        terms.len(),
        2,
        "exactly one leadership change seen by the writes: terms {terms:?}"
    );
    let gap_ms = longest_gap_ms(&acks);
    eprintln!(
        "upgrade: to {image}: {total_ms} ms in all, {} writes acknowledged meanwhile, longest gap between acknowledgements {gap_ms} ms (goal {WRITE_GAP_GOAL_MS})",
        acks.len()
    );
    (gap_ms, total_ms)
}

/// A rolling restart (`kubectl dledger restart`) during which a follower is
/// deleted by hand: the restart is paused, the follower deleted and let come
/// back, then resumed. The operator must count the member that came back on
/// the new revision as done (it is replaced once, by hand), restart only the
/// others, the leader last, never two out of service, and lose no write.
fn restart_with_a_hand_delete(kubectl: &Kubectl, namespace: &str, writer: &Writer) {
    let status = wait_running(kubectl, namespace, GROUP, *MEMBERS);
    let leader_before = status["leader"].as_str().unwrap_or_default().to_owned();
    let before = pods_seen(kubectl, namespace).unwrap_or_else(|e| panic!("pods: {e}"));
    let acks_before = writer.acks().len();
    writer.wait_acks(acks_before + 20);
    plugin(&["upgrade", "pause", GROUP, "--namespace", namespace]);
    let monitor = Monitor::start(kubectl, namespace);
    plugin(&["restart", GROUP, "--namespace", namespace]);
    wait_for(
        "the restart to wait on the pause",
        60_000,
        || match condition(&group(kubectl, namespace), "Progressing") {
            Some((_, reason, message)) if reason == "UpgradePaused" => Ok(message),
            other => Err(format!("Progressing {other:?}")),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let by_hand = before
        .iter()
        .find(|(name, _)| **name != leader_before)
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| panic!("no follower in {before:?}"));
    kubectl
        .delete(namespace, &format!("pod/{by_hand}"), None)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("upgrade: restart paused; {by_hand} deleted by hand");
    wait_for(&format!("{by_hand} back and ready"), 180_000, || {
        let pods = pods_seen(kubectl, namespace)?;
        match pods.get(&by_hand) {
            Some(p) if p.uid != before[&by_hand].uid && p.ready && !p.deleting => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    plugin(&["upgrade", "resume", GROUP, "--namespace", namespace]);
    wait_for(
        "every member restarted with the restart done",
        upgrade_timeout_ms(),
        || {
            let pods = pods_seen(kubectl, namespace)?;
            let group = group(kubectl, namespace);
            let renewed = pods
                .iter()
                .filter(|(name, p)| {
                    before.get(*name).is_some_and(|b| b.uid != p.uid) && p.ready && !p.deleting
                })
                .count();
            let done = group["status"]["upgrade"].is_null()
                && group["status"]["readyReplicas"].as_u64() == Some(*MEMBERS as u64)
                && group["status"]["leader"].is_string();
            if renewed == *MEMBERS && done {
                Ok(())
            } else {
                Err(format!(
                    "{renewed} of {} restarted; pods {pods:?}; status.upgrade {}; Progressing {:?}",
                    *MEMBERS,
                    group["status"]["upgrade"],
                    condition(&group, "Progressing")
                ))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let total_ms = started.elapsed().as_millis();
    let report = monitor.finish();
    writer.wait_acks(writer.acks().len() + 20);
    let replaced: Vec<&str> = report.replaced.iter().map(|(p, _)| p.as_str()).collect();
    eprintln!("upgrade: restart: replaced in order {:?}", report.replaced);
    assert_eq!(
        replaced.first().copied(),
        Some(by_hand.as_str()),
        "the hand-deleted member goes first: {replaced:?}"
    );
    assert_eq!(
        replaced.len(),
        *MEMBERS,
        "each member replaced once (the one deleted by hand not again): {replaced:?}"
    );
    assert_eq!(
        replaced.iter().collect::<BTreeSet<_>>().len(),
        *MEMBERS,
        "{replaced:?}"
    );
    assert_eq!(
        replaced.last().copied(),
        Some(leader_before.as_str()),
        "the leader {leader_before} goes last: {replaced:?}"
    );
    assert!(
        report.most_out_of_service <= 1,
        "two members out of service at once: {:?}",
        report.out_of_service_seen
    );
    let acks = &writer.acks()[acks_before..];
    let terms: BTreeSet<u64> = acks.iter().map(|a| a.term).collect();
    assert_eq!(
        terms.len(),
        2,
        "exactly one leadership change seen by the writes: terms {terms:?}"
    );
    let gap_ms = longest_gap_ms(acks);
    eprintln!(
        "upgrade: restart with {by_hand} deleted by hand: {total_ms} ms after the resume, \
         longest gap between acknowledgements {gap_ms} ms"
    );
}

/// When the operator last emitted an Event `reason` in `namespace`.
fn last_event_at(kubectl: &Kubectl, namespace: &str, reason: &str) -> Option<jiff::Timestamp> {
    let events = kubectl
        .get_json(namespace, "events.events.k8s.io")
        .unwrap_or_else(|e| panic!("events: {e}"));
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == reason)
        .flat_map(|e| {
            [
                e["eventTime"].clone(),
                e["series"]["lastObservedTime"].clone(),
                e["deprecatedLastTimestamp"].clone(),
            ]
        })
        .filter_map(|t| t.as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()))
        .max()
}

/// `kubectl dledger <args>` (the workspace's `kubectl-dledger`, built when
/// missing); its stdout, or the panic says why it failed.
fn plugin(args: &[&str]) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target"));
    let binary = format!("{target}/release/kubectl-dledger");
    if !std::path::Path::new(&binary).exists() {
        let built = Command::new("cargo")
            .args([
                "build",
                "--release",
                "-p",
                "dledger-operator",
                "--bin",
                "kubectl-dledger",
            ])
            .current_dir(root)
            .status()
            .unwrap_or_else(|e| panic!("cargo build kubectl-dledger: {e}"));
        assert!(built.success(), "cargo build kubectl-dledger: {built}");
    }
    let out = Command::new(&binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{binary}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl dledger {}: {}\n{stdout}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn leader(kubectl: &Kubectl, namespace: &str) -> String {
    wait_running(kubectl, namespace, GROUP, *MEMBERS)["leader"]
        .as_str()
        .unwrap_or_else(|| panic!("no leader"))
        .to_owned()
}

#[test]
#[ignore = "needs a cluster: e2e/kubernetes/run.sh"]
fn upgrades_roll_followers_first_and_the_leader_last_without_losing_a_write() {
    let kubectl = Kubectl::from_env().unwrap_or_else(|e| panic!("{e}"));
    let kubectl_program = std::env::var("DLEDGER_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let kubeconfig = required_env("KUBECONFIG").unwrap_or_else(|e| panic!("{e}"));
    let v1 = required_env("DLEDGER_REPLICA_IMAGE").unwrap_or_else(|e| panic!("{e}"));
    let v2 = required_env("DLEDGER_REPLICA_IMAGE_V2").unwrap_or_else(|e| panic!("{e}"));
    let operator_image = required_env("DLEDGER_OPERATOR_IMAGE").unwrap_or_else(|e| panic!("{e}"));
    let rounds: usize = std::env::var("DLEDGER_UPGRADE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(2);
    let operator_ns = kubectl
        .namespace(&unique("dledger-op"))
        .unwrap_or_else(|e| panic!("{e}"));
    install_operator(&kubectl, operator_ns.name(), &operator_image);
    let ns = kubectl
        .namespace(&unique("dlg-up"))
        .unwrap_or_else(|e| panic!("{e}"));
    let namespace = ns.name();
    kubectl
        .apply(namespace, &group_yaml(GROUP, &v1, *MEMBERS, ""))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_running(&kubectl, namespace, GROUP, *MEMBERS);
    let writer = Writer::start(&kubectl_program, &kubeconfig, namespace, &v1);
    writer.wait_acks(20);

    // Automatic upgrades, back and forth; the operator dies in the second.
    let mut gaps_ms = Vec::new();
    let mut totals_ms = Vec::new();
    for round in 0..rounds {
        let image = if round % 2 == 0 { &v2 } else { &v1 };
        let (gap, total) = upgrade_round(
            &kubectl,
            namespace,
            operator_ns.name(),
            &writer,
            image,
            round == 1,
        );
        gaps_ms.push(gap);
        totals_ms.push(total);
    }
    let mut image = if rounds % 2 == 0 {
        v1.clone()
    } else {
        v2.clone()
    };
    gaps_ms.sort_unstable();
    totals_ms.sort_unstable();
    eprintln!(
        "upgrade: {rounds} upgrades of {} members: longest write gap p50 {} ms, max {} ms; upgrade time p50 {} ms, max {} ms",
        *MEMBERS,
        percentile(&gaps_ms, 0.5),
        percentile(&gaps_ms, 1.0),
        percentile(&totals_ms, 0.5),
        percentile(&totals_ms, 1.0),
    );

    // A rolling restart, paused while a follower is deleted by hand.
    restart_with_a_hand_delete(&kubectl, namespace, &writer);

    // Switchover to a named member.
    let old = leader(&kubectl, namespace);
    let target = (0..*MEMBERS)
        .map(|i| format!("{GROUP}-{i}"))
        .find(|p| *p != old)
        .unwrap_or_else(|| panic!("no follower"));
    let asked = Instant::now();
    plugin(&[
        "switchover",
        GROUP,
        "--namespace",
        namespace,
        "--to",
        &target,
        &format!("--wait={SWITCHOVER_TIMEOUT_SECONDS}s"),
    ]);
    let s = group(&kubectl, namespace)["status"].clone();
    assert!(
        s["leader"] == target.as_str() && s["switchover"]["completedAt"].is_string(),
        "the plugin waited, but: leader {}, switchover {}",
        s["leader"],
        s["switchover"]
    );
    let table = plugin(&["status", GROUP, "--namespace", namespace]);
    for member in 0..*MEMBERS {
        assert!(table.contains(&format!("{GROUP}-{member}")), "{table}");
    }
    assert!(table.contains("leader"), "{table}");
    eprintln!("upgrade: kubectl dledger status:\n{table}");
    // Done: leave the leader free to move again (the target is a desired state).
    patch_group(&kubectl, namespace, r#"{"spec":{"switchover":null}}"#);
    eprintln!(
        "upgrade: switchover {old} -> {target} reported done {} ms after the request",
        asked.elapsed().as_millis()
    );

    // Supervised: followers roll, the leader waits for the approval naming it.
    let next = if image == v1 { v2.clone() } else { v1.clone() };
    patch_group(
        &kubectl,
        namespace,
        &format!(r#"{{"spec":{{"image":"{next}","upgrade":{{"strategy":"supervised"}}}}}}"#),
    );
    let waiting_leader = wait_for(
        "the upgrade to wait for approval",
        upgrade_timeout_ms(),
        || {
            let group = group(&kubectl, namespace);
            let pods = pods_seen(&kubectl, namespace)?;
            let leader = group["status"]["leader"].as_str().unwrap_or("").to_owned();
            let followers_done = pods
                .iter()
                .filter(|(name, _)| **name != leader)
                .all(|(_, p)| p.image == next && p.ready);
            let progressing = condition(&group, "Progressing");
            let asks = progressing.as_ref().is_some_and(|(_, reason, message)| {
                (reason.contains("Approval") || message.contains("approv"))
                    && message.contains(&leader)
            });
            if followers_done && asks {
                Ok(leader)
            } else {
                Err(format!(
                    "leader {leader}, pods {pods:?}, Progressing {progressing:?}"
                ))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let leader_uid = pods_seen(&kubectl, namespace).unwrap_or_default()[&waiting_leader]
        .uid
        .clone();
    std::thread::sleep(Duration::from_secs(5));
    let still = pods_seen(&kubectl, namespace).unwrap_or_default();
    assert_eq!(
        still
            .get(&waiting_leader)
            .map(|p| (p.uid.clone(), p.image.clone())),
        Some((leader_uid, image.clone())),
        "the leader was restarted without approval"
    );
    let table = plugin(&["status", GROUP, "--namespace", namespace]);
    assert!(
        table.contains(&format!("waiting for approval to restart {waiting_leader}")),
        "{table}"
    );
    plugin(&["upgrade", "proceed", GROUP, "--namespace", namespace]);
    wait_upgraded(&kubectl, namespace, &next, *MEMBERS);
    let annotations = group(&kubectl, namespace)["metadata"]["annotations"].clone();
    assert!(
        annotations["dledger.io/upgrade-approve"].is_null(),
        "the approval outlived its upgrade: {annotations}"
    );
    image = next;
    eprintln!(
        "upgrade: supervised upgrade waited before {waiting_leader} and went on when approved"
    );

    // An image that never becomes ready: one pod, then the upgrade stops.
    let broken = format!("{image}-never-pulled");
    patch_group(
        &kubectl,
        namespace,
        &format!(
            r#"{{"spec":{{"image":"{broken}","upgrade":{{"strategy":"automatic","stepTimeoutSeconds":{BROKEN_STEP_TIMEOUT_SECONDS}}}}}}}"#
        ),
    );
    let stuck = wait_for(
        "the upgrade to stop as Degraded",
        upgrade_timeout_ms(),
        || {
            let group = group(&kubectl, namespace);
            match condition(&group, "Degraded") {
                Some((status, reason, message))
                    if status == "True" && reason == "UpgradeStepTimedOut" =>
                {
                    Ok(message)
                }
                other => Err(format!(
                    "Degraded {other:?}, upgrade {}",
                    group["status"]["upgrade"]
                )),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("upgrade: broken image: Degraded says {stuck:?}");
    std::thread::sleep(Duration::from_secs(5));
    let pods = pods_seen(&kubectl, namespace).unwrap_or_default();
    let on_broken: Vec<&String> = pods
        .iter()
        .filter(|(_, p)| p.image == broken)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        on_broken.len(),
        1,
        "the upgrade went past the stuck pod: {pods:?}"
    );
    assert!(
        stuck.contains(on_broken[0].as_str()),
        "{stuck:?} does not name {on_broken:?}"
    );
    let serving = pods
        .values()
        .filter(|p| p.image == image && p.ready)
        .count();
    assert_eq!(serving, *MEMBERS - 1, "the others are left alone: {pods:?}");
    writer.wait_acks(writer.acks().len() + 20);

    // Rolling back resumes with the stuck pod and recovers the group.
    patch_group(
        &kubectl,
        namespace,
        &format!(r#"{{"spec":{{"image":"{image}"}}}}"#),
    );
    wait_upgraded(&kubectl, namespace, &image, *MEMBERS);
    wait_for(
        "Degraded to clear after the rollback",
        60_000,
        || match condition(&group(&kubectl, namespace), "Degraded") {
            Some((status, ..)) if status == "True" => Err(status),
            _ => Ok(()),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("upgrade: rollback from the broken image recovered every member");

    // Every acknowledged write, from every member.
    let acks = writer.finish();
    assert!(acks.len() > 100, "only {} writes acknowledged", acks.len());
    let acks: Vec<(u64, u64, String)> = acks
        .into_iter()
        .map(|a| (a.index, a.term, a.payload))
        .collect();
    for i in 0..*MEMBERS {
        read_back(&kubectl, namespace, &format!("{GROUP}-{i}"), &acks);
    }
    eprintln!(
        "upgrade: {} acknowledged writes read back from every member",
        acks.len()
    );
}
