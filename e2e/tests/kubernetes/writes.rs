//! The streaming writer the scenarios that change the group under load
//! share (`upgrade.rs`, `scaling.rs`): a `kubectl run -i` pod appending
//! through the client Service, one line every [`WRITE_INTERVAL_MS`], each
//! acknowledgement timed as it arrives; the longest gap between
//! acknowledgements; and the checks that what it was told holds.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dledger_e2e::kube::{wait_for, Kubectl, REPLICA_PEER_PORT};

use super::operator::{client_credentials, read_log, CLIENT_TLS_DIR, GROUP};

/// The writer offers one append per this many milliseconds.
pub(super) const WRITE_INTERVAL_MS: u64 = 10;

/// One acknowledged append, as the writer saw it.
#[derive(Clone, Debug)]
pub(super) struct Ack {
    pub(super) at: Instant,
    pub(super) index: u64,
    pub(super) term: u64,
    pub(super) payload: String,
}

/// A `kubectl run -i` pod running `dledger-replica append` against the
/// client Service, fed one line every [`WRITE_INTERVAL_MS`] from this
/// process; each acknowledgement is timed when its line arrives.
pub(super) struct Writer {
    child: Child,
    stop: Arc<AtomicBool>,
    feeder: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
    acks: Arc<Mutex<Vec<Ack>>>,
}

impl Writer {
    pub(super) fn start(
        kubectl_program: &str,
        kubeconfig: &str,
        namespace: &str,
        image: &str,
    ) -> Self {
        let servers = format!("{GROUP}.{namespace}.svc.cluster.local:{REPLICA_PEER_PORT}");
        let mut args = vec![
            "append".to_string(),
            "--servers".to_string(),
            servers,
            "--group".to_string(),
            GROUP.to_string(),
        ];
        args.extend(client_credentials());
        // `kubectl run` has no volume flags: the group's client Secret is
        // mounted through a strategic-merge override of the pod.
        let overrides = serde_json::json!({
            "spec": {
                "volumes": [{"name": "client-tls", "secret": {"secretName": format!("{GROUP}-client-tls")}}],
                "containers": [{
                    "name": "writer",
                    "volumeMounts": [{"name": "client-tls", "mountPath": CLIENT_TLS_DIR, "readOnly": true}],
                }],
            }
        })
        .to_string();
        let mut child = Command::new(kubectl_program)
            .args([
                "--kubeconfig",
                kubeconfig,
                "run",
                "writer",
                "--namespace",
                namespace,
                "--quiet",
                "-i",
                "--restart=Never",
                "--image-pull-policy=IfNotPresent",
                &format!("--image={image}"),
                "--override-type=strategic",
                &format!("--overrides={overrides}"),
                "--",
            ])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("kubectl run writer: {e}"));
        let mut input = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
        let output = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::<String>::new()));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let feeder = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let payload = format!("u-{n}");
                    // Recorded before it is written: the reader pairs the
                    // i-th acknowledgement with the i-th line.
                    sent.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(payload.clone());
                    if writeln!(input, "{payload}").is_err() {
                        return;
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(WRITE_INTERVAL_MS));
                }
                // Dropping stdin ends the writer once it has committed the rest.
            })
        };
        let reader = {
            let acks = acks.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines() {
                    let Ok(line) = line else { return };
                    let at = Instant::now();
                    let Some((index, term)) = line.trim().split_once('\t') else {
                        // `kubectl run` merges the CLI's "waiting for" notices.
                        continue;
                    };
                    let (Ok(index), Ok(term)) = (index.parse(), term.parse()) else {
                        continue;
                    };
                    let mut acks = acks.lock().unwrap_or_else(|e| e.into_inner());
                    let payload = sent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(acks.len())
                        .cloned()
                        .unwrap_or_else(|| panic!("acknowledgement {line:?} of a line never sent"));
                    acks.push(Ack {
                        at,
                        index,
                        term,
                        payload,
                    });
                }
            })
        };
        Self {
            child,
            stop,
            feeder: Some(feeder),
            reader: Some(reader),
            acks,
        }
    }

    pub(super) fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn wait_acks(&self, at_least: usize) {
        wait_for("the writer's acknowledgements", 180_000, || {
            let n = self.acks().len();
            if n >= at_least {
                Ok(())
            } else {
                Err(format!("{n} acknowledged"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stops feeding, lets the writer commit what it has, returns every acknowledgement.
    pub(super) fn finish(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(feeder) = self.feeder.take() {
            feeder
                .join()
                .unwrap_or_else(|_| panic!("the feeder panicked"));
        }
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for kubectl run: {e}"));
        if let Some(reader) = self.reader.take() {
            reader
                .join()
                .unwrap_or_else(|_| panic!("the reader panicked"));
        }
        assert!(status.success(), "the writer pod failed: {status}");
        self.acks()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
    }
}

/// The longest time between two consecutive acknowledgements in `acks`, in
/// milliseconds (0 with fewer than two).
pub(super) fn longest_gap_ms(acks: &[Ack]) -> u128 {
    acks.windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_millis())
        .max()
        .unwrap_or(0)
}

/// The acknowledgements themselves are consistent: indexes strictly
/// increasing in the order they were acknowledged, no payload acknowledged
/// twice.
pub(super) fn check_ack_order(acks: &[Ack]) {
    for w in acks.windows(2) {
        assert!(
            w[0].index < w[1].index,
            "acknowledged indexes not strictly increasing: {} ({}) then {} ({})",
            w[0].index,
            w[0].payload,
            w[1].index,
            w[1].payload
        );
    }
    let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
    for ack in acks {
        if let Some(before) = seen.insert(&ack.payload, ack.index) {
            panic!(
                "{} acknowledged twice: at {before} and at {}",
                ack.payload, ack.index
            );
        }
    }
}

/// Every acknowledged write is in `pod`'s log at its index with its term and
/// payload, and no acknowledged payload is in that log at a second index (a
/// retried append written twice).
pub(super) fn check_acks_kept(kubectl: &Kubectl, namespace: &str, pod: &str, acks: &[Ack]) {
    let log = read_log(kubectl, namespace, pod);
    for ack in acks {
        assert_eq!(
            log.get(&ack.index),
            Some(&(ack.term, ack.payload.clone())),
            "acknowledged entry {} (term {}, {}) is not in the log of {pod}",
            ack.index,
            ack.term,
            ack.payload
        );
    }
    let acknowledged: BTreeMap<&str, u64> =
        acks.iter().map(|a| (a.payload.as_str(), a.index)).collect();
    for (index, (_, payload)) in &log {
        if let Some(at) = acknowledged.get(payload.as_str()) {
            assert_eq!(
                at, index,
                "{payload}, acknowledged at {at}, is also at {index} in the log of {pod}"
            );
        }
    }
}
