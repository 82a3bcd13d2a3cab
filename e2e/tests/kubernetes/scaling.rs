//! Changing the number of members on a real cluster while a writer streams
//! appends through the client Service. A group created with one member is
//! grown to three, then five, then shrunk back to three: the operator adds
//! one member at a time as a learner and promotes it once caught up, and on
//! the way down removes the highest ordinal from the configuration before
//! its pod goes. Each step ends with `status.configuration` naming exactly
//! the pods of the new size as voters, no learner, the StatefulSet at that
//! size and every pod Ready; the longest pause between acknowledgements and
//! the time of each step are printed, and every acknowledged write is read
//! back from every member afterwards. Then a member whose volume is
//! deleted: its pod comes back empty as a new incarnation, which the
//! operator puts in place of the old one (`MemberReplaced`) and which ends
//! up holding the whole log.
//!
//! `DLEDGER_SCALING_STEP_TIMEOUT_MS` (default 180000) bounds each step.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dledger_e2e::kube::{required_env, wait_for, Kubectl, Namespace};

use super::operator::{
    condition, group_yaml, install_operator, member_credentials, patch_group, pods_seen, unique,
    wait_running, CONTAINER, GROUP,
};
use super::writes::{check_ack_order, check_acks_kept, longest_gap_ms, Ack, Writer};

/// A step (a change of `spec.replicas`, or a replacement) is done within this
/// unless `DLEDGER_SCALING_STEP_TIMEOUT_MS` says otherwise.
const STEP_TIMEOUT_MS: u64 = 180_000;
/// The longest pause of acknowledged writes a step may cause: about one
/// election (the goal is no pause at all but the one a leader's removal
/// costs), with room for a slow shared machine.
const WRITE_GAP_BOUND_MS: u128 = 5_000;
/// Acknowledged writes before the first change: the log the new members copy.
const WRITES_BEFORE: usize = 200;
/// Acknowledged writes after a step ends, so its last gap is closed.
const WRITES_AFTER_STEP: usize = 20;
/// The replaced member's log reaches the leader's commit index within this.
const CAUGHT_UP_TIMEOUT_MS: u64 = 60_000;
/// An Event is listed within this of the step it tells of.
const EVENT_TIMEOUT_MS: u64 = 30_000;
/// Recent events shown when a wait fails.
const EVENTS_SHOWN: usize = 25;

fn step_timeout_ms() -> u64 {
    dledger_e2e::kube::env_ms("DLEDGER_SCALING_STEP_TIMEOUT_MS", STEP_TIMEOUT_MS)
}

fn pod(ordinal: usize) -> String {
    format!("{GROUP}-{ordinal}")
}

/// The pods of a group of `members`: `<GROUP>-0` to `<GROUP>-<members - 1>`.
fn pods(members: usize) -> Vec<String> {
    (0..members).map(pod).collect()
}

/// One entry of `status.configuration`'s lists: the member's pod name and its
/// incarnation (`None` for the plain name of incarnation 0, else the text
/// after `#`).
fn member_of(entry: &str) -> (&str, Option<&str>) {
    match entry.split_once('#') {
        Some((name, incarnation)) => (name, Some(incarnation)),
        None => (entry, None),
    }
}

/// `status.configuration` as the operator wrote it from the leader's view.
#[derive(Clone, Debug)]
struct Configuration {
    index: u64,
    voters: Vec<String>,
    learners: Vec<String>,
}

impl Configuration {
    fn of(group: &serde_json::Value) -> Result<Self, String> {
        let configuration = &group["status"]["configuration"];
        if configuration.is_null() {
            return Err(format!(
                "no status.configuration (leader {})",
                group["status"]["leader"]
            ));
        }
        let names = |field: &str| -> Result<Vec<String>, String> {
            configuration[field]
                .as_array()
                .ok_or_else(|| {
                    format!("status.configuration.{field} is not a list: {configuration}")
                })?
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        format!("status.configuration.{field} holds a non-string: {configuration}")
                    })
                })
                .collect()
        };
        Ok(Self {
            index: configuration["index"].as_u64().ok_or_else(|| {
                format!("status.configuration.index is not a number: {configuration}")
            })?,
            voters: names("voters")?,
            learners: names("learners")?,
        })
    }

    /// The voters' pod names (without incarnations), sorted.
    fn voter_pods(&self) -> Vec<String> {
        let mut pods: Vec<String> = self
            .voters
            .iter()
            .map(|v| member_of(v).0.to_owned())
            .collect();
        pods.sort();
        pods
    }
}

/// What a failure message needs to tell what the cluster looked like: the
/// pods, the group's status and the latest events of the namespace.
fn diagnostics(kubectl: &Kubectl, namespace: &str) -> String {
    let pods = kubectl
        .run(&["get", "--namespace", namespace, "pods", "-o", "wide"])
        .unwrap_or_else(|e| format!("({e})"));
    let status = kubectl
        .get_json(namespace, &format!("dlg/{GROUP}"))
        .map(|g| serde_json::to_string_pretty(&g["status"]).unwrap_or_default())
        .unwrap_or_else(|e| format!("({e})"));
    let events = kubectl
        .run(&["events", "--namespace", namespace])
        .map(|out| {
            let lines: Vec<&str> = out.lines().collect();
            let first = lines.len().saturating_sub(EVENTS_SHOWN);
            lines[first..].join("\n")
        })
        .unwrap_or_else(|e| format!("({e})"));
    format!("kubectl get pods:\n{pods}\nthe group's status:\n{status}\nlatest events:\n{events}")
}

/// What the polls of one step saw on the way.
#[derive(Debug, Default)]
struct Seen {
    /// Every reason of the `Progressing` condition seen (with the message,
    /// for a failed step).
    progressing: BTreeSet<String>,
    /// Every member seen in `status.configuration.learners`.
    learners: BTreeSet<String>,
}

/// Waits until the group is exactly `members` members: `status.configuration`
/// names the pods `-0` to `-<members - 1>` as voters (whatever their
/// incarnations) and no learner, the StatefulSet asks for `members` pods,
/// exactly those pods exist and are Ready, a leader is known and
/// `Progressing` no longer says `Scaling`. Its configuration.
fn wait_members(
    kubectl: &Kubectl,
    namespace: &str,
    members: usize,
    seen: &mut Seen,
) -> Configuration {
    let expected = pods(members);
    wait_for(
        &format!("the group to be exactly the {members} members {expected:?}"),
        step_timeout_ms(),
        || {
            let group = kubectl
                .get_json(namespace, &format!("dlg/{GROUP}"))
                .map_err(|e| e.to_string())?;
            let progressing = condition(&group, "Progressing");
            if let Some((_, reason, message)) = &progressing {
                // A failed step is retried; its message says why it failed.
                let failed = reason.ends_with("Failed");
                let shown = if failed {
                    format!("{reason}: {message}")
                } else {
                    reason.clone()
                };
                seen.progressing.insert(shown);
            }
            let configuration = Configuration::of(&group)?;
            seen.learners.extend(configuration.learners.iter().cloned());
            let statefulset = kubectl
                .get_json(namespace, &format!("statefulset/{GROUP}"))
                .map_err(|e| e.to_string())?;
            let pods = pods_seen(kubectl, namespace)?;
            let names: Vec<&String> = pods.keys().collect();
            let done = configuration.voter_pods() == expected
                && configuration.learners.is_empty()
                && statefulset["spec"]["replicas"].as_u64() == Some(members as u64)
                && names == expected.iter().collect::<Vec<_>>()
                && pods.values().all(|p| p.ready && !p.deleting)
                && group["status"]["leader"].is_string()
                && progressing
                    .as_ref()
                    .is_none_or(|(_, reason, _)| reason != "Scaling");
            if done {
                Ok(configuration)
            } else {
                Err(format!(
                    "configuration {configuration:?}; StatefulSet replicas {}; pods {pods:?}; \
                     leader {}; Progressing {progressing:?}",
                    statefulset["spec"]["replicas"], group["status"]["leader"]
                ))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnostics(kubectl, namespace)))
}

/// One step's figures.
#[derive(Debug)]
struct Step {
    name: String,
    longest_gap_ms: u128,
    took: Duration,
    acknowledged: usize,
    seen: Seen,
}

/// Measures a step that began when the writer had `acks_before`
/// acknowledgements, at `started`, and whose end has just been seen: waits
/// for a few more acknowledgements to close the last gap, then takes the
/// longest gap from the last acknowledgement before the step to the first
/// after it.
fn measure(name: &str, writer: &Writer, acks_before: usize, started: Instant, seen: Seen) -> Step {
    let took = started.elapsed();
    let ended = Instant::now();
    writer.wait_acks(writer.acks().len() + WRITES_AFTER_STEP);
    let acks = writer.acks();
    let acknowledged = acks[acks_before..].iter().filter(|a| a.at <= ended).count();
    Step {
        name: name.to_owned(),
        longest_gap_ms: longest_gap_ms(&acks[acks_before.saturating_sub(1)..]),
        took,
        acknowledged,
        seen,
    }
}

/// Patches `spec.replicas` from `from` to `to` and waits until the group is
/// exactly the `to` members; the step's figures and the configuration it
/// ended with.
fn scale(
    kubectl: &Kubectl,
    namespace: &str,
    writer: &Writer,
    from: usize,
    to: usize,
) -> (Step, Configuration) {
    let mut seen = Seen::default();
    let acks_before = writer.acks().len();
    let started = Instant::now();
    patch_group(
        kubectl,
        namespace,
        &format!(r#"{{"spec":{{"replicas":{to}}}}}"#),
    );
    let configuration = wait_members(kubectl, namespace, to, &mut seen);
    let step = measure(
        &format!("{from} -> {to}"),
        writer,
        acks_before,
        started,
        seen,
    );
    eprintln!(
        "scaling: {from} -> {to}: done in {} ms; configuration {configuration:?}; \
         Progressing reasons seen {:?}; learners seen {:?}",
        step.took.as_millis(),
        step.seen.progressing,
        step.seen.learners
    );
    (step, configuration)
}

/// The notes of the Events about the group with reason `reason`.
fn group_events(kubectl: &Kubectl, namespace: &str, reason: &str) -> Result<Vec<String>, String> {
    let events = kubectl
        .get_json(namespace, "events.events.k8s.io")
        .map_err(|e| e.to_string())?;
    Ok(events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["reason"] == reason
                && e["regarding"]["kind"] == "DLedgerGroup"
                && e["regarding"]["name"] == GROUP
        })
        .map(|e| e["note"].as_str().unwrap_or("").to_owned())
        .collect())
}

/// Waits for an Event `reason` about the group whose note contains `naming`
/// (any, when empty); its note.
pub(super) fn wait_group_event(
    kubectl: &Kubectl,
    namespace: &str,
    reason: &str,
    naming: &str,
) -> String {
    wait_for(
        &format!("an Event {reason} on dlg/{GROUP} naming {naming:?}"),
        EVENT_TIMEOUT_MS,
        || {
            let notes = group_events(kubectl, namespace, reason)?;
            notes
                .iter()
                .find(|note| note.contains(naming))
                .cloned()
                .ok_or_else(|| format!("{reason} Events' notes: {notes:?}"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnostics(kubectl, namespace)))
}

/// The writer's figures and the checks on what it was told: the
/// acknowledgements are in order and unique, and every one is in the log of
/// each of `members` at its index with its payload, once.
fn check_writes(kubectl: &Kubectl, namespace: &str, members: &[String], acks: &[Ack]) {
    assert!(
        acks.len() > WRITES_BEFORE,
        "only {} writes acknowledged",
        acks.len()
    );
    check_ack_order(acks);
    for member in members {
        check_acks_kept(kubectl, namespace, member, acks);
    }
    eprintln!(
        "scaling: {} acknowledged writes (indexes {} to {}) read back from {members:?}",
        acks.len(),
        acks[0].index,
        acks[acks.len() - 1].index
    );
}

/// What both scenarios start from: the environment, the operator installed
/// in a namespace of its own, and the namespace of the group (both deleted
/// when the scene is dropped).
pub(super) struct Scene {
    pub(super) kubectl: Kubectl,
    pub(super) kubectl_program: String,
    pub(super) kubeconfig: String,
    pub(super) image: String,
    _operator_ns: Namespace,
    pub(super) ns: Namespace,
}

impl Scene {
    pub(super) fn start(prefix: &str) -> Scene {
        let kubectl = Kubectl::from_env().unwrap_or_else(|e| panic!("{e}"));
        let kubectl_program = std::env::var("DLEDGER_KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let kubeconfig = required_env("KUBECONFIG").unwrap_or_else(|e| panic!("{e}"));
        let image = required_env("DLEDGER_REPLICA_IMAGE").unwrap_or_else(|e| panic!("{e}"));
        let operator_image =
            required_env("DLEDGER_OPERATOR_IMAGE").unwrap_or_else(|e| panic!("{e}"));
        let operator_ns = kubectl
            .namespace(&unique("dledger-op"))
            .unwrap_or_else(|e| panic!("{e}"));
        install_operator(&kubectl, operator_ns.name(), &operator_image);
        let ns = kubectl
            .namespace(&unique(prefix))
            .unwrap_or_else(|e| panic!("{e}"));
        Scene {
            kubectl,
            kubectl_program,
            kubeconfig,
            image,
            _operator_ns: operator_ns,
            ns,
        }
    }

    /// Applies the group with `members` replicas and waits until it runs.
    pub(super) fn apply_group(&self, members: usize) {
        let namespace = self.ns.name();
        self.kubectl
            .apply(namespace, &group_yaml(GROUP, &self.image, members, ""))
            .unwrap_or_else(|e| panic!("{e}"));
        wait_running(&self.kubectl, namespace, GROUP, members);
    }
}

#[test]
#[ignore = "needs a cluster: e2e/kubernetes/run.sh"]
fn scaling_one_three_five_three_keeps_every_write() {
    let scene = Scene::start("dlg-scale");
    let Scene {
        kubectl,
        kubectl_program,
        kubeconfig,
        image,
        ..
    } = &scene;
    let namespace = scene.ns.name();

    // One member, a leader, a log.
    scene.apply_group(1);
    let mut seen = Seen::default();
    let configuration = wait_members(kubectl, namespace, 1, &mut seen);
    assert_eq!(
        configuration.voters,
        [pod(0)],
        "a member the group was created with has incarnation 0, so its plain name: \
         {configuration:?}"
    );
    let writer = Writer::start(kubectl_program, kubeconfig, namespace, image);
    writer.wait_acks(WRITES_BEFORE);

    // 1 -> 3 -> 5 -> 3 while the writer streams; each change commits a
    // later configuration.
    let mut steps = Vec::new();
    let mut index = configuration.index;
    for (from, to) in [(1, 3), (3, 5), (5, 3)] {
        let (step, configuration) = scale(kubectl, namespace, &writer, from, to);
        assert!(
            configuration.index > index,
            "{from} -> {to} ended on the configuration at index {}, not after the one at {index}",
            configuration.index
        );
        index = configuration.index;
        steps.push(step);
    }
    eprintln!("scaling: step     longest gap ms  duration s  writes acknowledged");
    for step in &steps {
        eprintln!(
            "scaling: {:<8} {:>14}  {:>10.1}  {:>19}",
            step.name,
            step.longest_gap_ms,
            step.took.as_secs_f64(),
            step.acknowledged
        );
    }

    // The members removed on the way down kept their volumes (the default
    // retention when scaled is Retain).
    let claims = kubectl
        .run(&["get", "--namespace", namespace, "pvc", "-o", "name"])
        .unwrap_or_else(|e| panic!("{e}"));
    for removed in [pod(3), pod(4)] {
        assert!(
            claims
                .lines()
                .any(|c| c.trim() == format!("persistentvolumeclaim/data-{removed}")),
            "the volume of {removed} was not retained: {claims}"
        );
    }
    // Each kind of step was told as an Event on the group.
    for reason in ["MemberAdded", "MemberPromoted", "MemberRemoved"] {
        wait_group_event(kubectl, namespace, reason, "");
    }

    let acks = writer.finish();
    check_writes(kubectl, namespace, &pods(3), &acks);
    for step in &steps {
        assert!(
            step.longest_gap_ms < WRITE_GAP_BOUND_MS,
            "writes paused {} ms during {} (bound {WRITE_GAP_BOUND_MS} ms): {steps:?}",
            step.longest_gap_ms,
            step.name
        );
    }
    assert!(
        steps.iter().any(|s| s.seen.progressing.contains("Scaling")),
        "no step was seen with the Progressing reason Scaling: {steps:?}"
    );
}

#[test]
#[ignore = "needs a cluster: e2e/kubernetes/run.sh"]
fn a_member_whose_volume_is_deleted_is_replaced_and_promoted() {
    let scene = Scene::start("dlg-replace");
    let Scene {
        kubectl,
        kubectl_program,
        kubeconfig,
        image,
        ..
    } = &scene;
    let namespace = scene.ns.name();
    let members = pods(3);

    scene.apply_group(members.len());
    let mut seen = Seen::default();
    let configuration = wait_members(kubectl, namespace, members.len(), &mut seen);
    // A member that starts only after the others formed the group finds the
    // join ConfigMap saying `existing` and is added as a new incarnation
    // (its empty volume cannot tell "never started" from "wiped"), so the
    // names are compared without incarnations here; the members that
    // bootstrapped keep their plain names.
    assert_eq!(
        configuration.voter_pods(),
        members,
        "the group is not the members it was created with: {configuration:?}"
    );
    let voters_before = configuration.voters.clone();
    let index_before = configuration.index;
    let writer = Writer::start(kubectl_program, kubeconfig, namespace, image);
    writer.wait_acks(WRITES_BEFORE);

    // A follower loses its volume: the claim first (held Terminating by its
    // pvc-protection finalizer while the pod uses it), then the pod.
    let status = wait_running(kubectl, namespace, GROUP, members.len());
    let leader = status["leader"].as_str().unwrap_or_default().to_owned();
    let victim = members
        .iter()
        .find(|p| **p != leader)
        .cloned()
        .unwrap_or_else(|| panic!("no follower beside the leader {leader}"));
    let claim = format!("pvc/data-{victim}");
    let claim_uid = |kubectl: &Kubectl| -> Result<String, String> {
        let claim = kubectl
            .get_json(namespace, &claim)
            .map_err(|e| e.to_string())?;
        Ok(claim["metadata"]["uid"].as_str().unwrap_or("?").to_owned())
    };
    let old_claim = claim_uid(kubectl).unwrap_or_else(|e| panic!("{e}"));
    let old_pod = pods_seen(kubectl, namespace).unwrap_or_else(|e| panic!("pods: {e}"))[&victim]
        .uid
        .clone();
    let acks_before = writer.acks().len();
    let started = Instant::now();
    kubectl
        .run(&["delete", "--namespace", namespace, &claim, "--wait=false"])
        .unwrap_or_else(|e| panic!("{e}"));
    let terminating = kubectl
        .get_json(namespace, &claim)
        .unwrap_or_else(|e| panic!("{claim} went at once, while {victim} still used it: {e}"));
    assert!(
        terminating["metadata"]["deletionTimestamp"].is_string(),
        "{claim} is not being deleted: {}",
        terminating["metadata"]
    );
    kubectl
        .delete(namespace, &format!("pod/{victim}"), None)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("scaling: {claim} and pod/{victim} deleted (the leader is {leader})");

    // The pod comes back on a new volume as a new incarnation, which takes
    // the old one's place.
    let (incarnation, configuration) = wait_for(
        &format!("{victim} back as a new incarnation, a voter, with no learner left"),
        step_timeout_ms(),
        || {
            let group = kubectl
                .get_json(namespace, &format!("dlg/{GROUP}"))
                .map_err(|e| e.to_string())?;
            let configuration = Configuration::of(&group)?;
            let pods = pods_seen(kubectl, namespace)?;
            let renewed = pods
                .get(&victim)
                .is_some_and(|p| p.uid != old_pod && p.ready && !p.deleting);
            let incarnation = configuration
                .voters
                .iter()
                .find_map(|v| match member_of(v) {
                    (name, Some(hex)) if name == victim => u64::from_str_radix(hex, 16).ok(),
                    _ => None,
                });
            let done = configuration.voter_pods() == members
                && configuration.learners.is_empty()
                && renewed
                && pods.values().all(|p| p.ready && !p.deleting)
                && group["status"]["leader"].is_string();
            let replaced = !voters_before
                .iter()
                .any(|v| member_of(v).0 == victim && configuration.voters.contains(v));
            match incarnation {
                Some(incarnation) if done && replaced && incarnation != 0 => {
                    Ok((incarnation, configuration))
                }
                _ => Err(format!(
                    "configuration {configuration:?}; pods {pods:?}; leader {}",
                    group["status"]["leader"]
                )),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnostics(kubectl, namespace)));
    let step = measure(
        &format!("replace {victim}"),
        &writer,
        acks_before,
        started,
        Seen::default(),
    );
    assert!(
        configuration
            .voters
            .contains(&format!("{victim}#{incarnation:016x}")),
        "{victim}'s incarnation is not written as 16 lowercase hex digits: {configuration:?}"
    );
    assert!(
        configuration.index > index_before,
        "the replacement ended on the configuration at index {}, not after the one at \
         {index_before}",
        configuration.index
    );
    for voter in &configuration.voters {
        assert!(
            member_of(voter).0 == victim || voters_before.contains(voter),
            "only {victim} was replaced, but {voter} was not a voter before ({voters_before:?}): \
             {configuration:?}"
        );
    }
    let new_claim = claim_uid(kubectl).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        new_claim, old_claim,
        "{victim} came back on its old claim {claim}"
    );
    let replaced = kubectl
        .replica_status(namespace, &victim, CONTAINER, &member_credentials(&victim))
        .unwrap_or_else(|e| panic!("status of {victim}: {e}"));
    assert_eq!(
        replaced.incarnation, incarnation,
        "{victim} says it is incarnation {:016x}, the group's status {incarnation:016x}: {replaced:?}",
        replaced.incarnation
    );
    let note = wait_group_event(kubectl, namespace, "MemberReplaced", &victim);
    eprintln!(
        "scaling: {victim} replaced by incarnation {incarnation:016x} in {} ms; configuration \
         {configuration:?}; MemberReplaced: {note}",
        step.took.as_millis()
    );

    // Every acknowledged write is kept, and the new incarnation holds the
    // whole log.
    let acks = writer.finish();
    let status = wait_running(kubectl, namespace, GROUP, members.len());
    let leader = status["leader"].as_str().unwrap_or_default().to_owned();
    let leader_status = kubectl
        .replica_status(namespace, &leader, CONTAINER, &member_credentials(&leader))
        .unwrap_or_else(|e| panic!("status of {leader}: {e}"));
    assert_eq!(
        leader_status.role, "leader",
        "{leader}, the group's leader, says {leader_status:?}"
    );
    let commit = leader_status.commit_index;
    wait_for(
        &format!("{victim}'s log to reach the leader's commit index {commit}"),
        CAUGHT_UP_TIMEOUT_MS,
        || {
            let status = kubectl
                .replica_status(namespace, &victim, CONTAINER, &member_credentials(&victim))
                .map_err(|e| e.to_string())?;
            if status.last_index >= commit && status.commit_index >= commit {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnostics(kubectl, namespace)));
    eprintln!(
        "scaling: step              longest gap ms  duration s  writes acknowledged\n\
         scaling: {:<17} {:>14}  {:>10.1}  {:>19}",
        step.name,
        step.longest_gap_ms,
        step.took.as_secs_f64(),
        step.acknowledged
    );
    check_writes(kubectl, namespace, &members, &acks);
    assert!(
        step.longest_gap_ms < WRITE_GAP_BOUND_MS,
        "writes paused {} ms while {victim} was replaced (bound {WRITE_GAP_BOUND_MS} ms)",
        step.longest_gap_ms
    );
}
