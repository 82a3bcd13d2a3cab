//! The Kubernetes suite's view of a cluster: a thin wrapper of `kubectl`
//! (apply YAML from a string, read objects as JSON, exec, logs, port-forward),
//! waiting for a condition while remembering what was last seen, and reading a
//! replica pod's `/status` from inside the pod.
//!
//! Everything goes through the `kubectl` binary named by `DLEDGER_KUBECTL`
//! (default: `kubectl` on `PATH`) with the `KUBECONFIG` of the environment, so
//! the same scenarios run on `e2e/cluster` and on kind.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::http::Status;

/// How often [`wait_for`] polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The replica's HTTP port inside its pod (the Dockerfile's `EXPOSE`).
pub const REPLICA_HTTP_PORT: u16 = 8080;
/// The replica's binary-protocol port (peers and clients).
pub const REPLICA_PEER_PORT: u16 = 20911;
/// How long `kubectl port-forward` may take to say which local port it chose.
const PORT_FORWARD_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Output longer than this is cut in error messages.
const ERROR_OUTPUT_CHARS_MAX: usize = 2000;

/// Reads a variable the suite cannot run without.
///
/// # Errors
/// [`Error::Kube`] naming the variable and how the suite is meant to be run.
pub fn required_env(name: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(Error::Kube {
            command: format!("${name}"),
            reason: format!(
                "{name} is not set: the Kubernetes suite runs through e2e/kubernetes/run.sh, \
                 which needs KUBECONFIG, DLEDGER_REPLICA_IMAGE and DLEDGER_OPERATOR_IMAGE"
            ),
        }),
    }
}

/// A bound in milliseconds from variable `name`, or `default_ms` when it
/// is not set.
///
/// # Panics
/// When it is set to something that is not a number (a scenario's knob
/// mistyped should stop the run, not be ignored).
pub fn env_ms(name: &str, default_ms: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?}: {e}")),
        Err(_) => default_ms,
    }
}

/// A `kubectl` bound to one kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    program: String,
    kubeconfig: String,
}

impl Kubectl {
    /// The `kubectl` of `DLEDGER_KUBECTL` (or `PATH`) with `KUBECONFIG`.
    ///
    /// # Errors
    /// When `KUBECONFIG` is not set.
    pub fn from_env() -> Result<Self> {
        let kubeconfig = required_env("KUBECONFIG")?;
        let program = std::env::var("DLEDGER_KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
        Ok(Self {
            program,
            kubeconfig,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        command
    }

    fn describe(args: &[&str]) -> String {
        format!("kubectl {}", args.join(" "))
    }

    /// Runs `kubectl <args>` with `stdin` as its standard input; its stdout.
    ///
    /// # Errors
    /// [`Error::Kube`] with the command and its stderr when it cannot start or exits non-zero.
    pub fn run_with_input(&self, args: &[&str], stdin: &str) -> Result<String> {
        let described = Self::describe(args);
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| Error::Kube {
                command: described.clone(),
                reason: format!("cannot start {}: {error}", self.program),
            })?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .map_err(|error| Error::Kube {
                    command: described.clone(),
                    reason: format!("writing its standard input: {error}"),
                })?;
        }
        let output = child.wait_with_output().map_err(|error| Error::Kube {
            command: described.clone(),
            reason: format!("waiting for it: {error}"),
        })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::Kube {
                command: described,
                reason: format!(
                    "{}: {}",
                    output.status,
                    cut(String::from_utf8_lossy(&output.stderr).trim())
                ),
            })
        }
    }

    /// Runs `kubectl <args>`; its stdout.
    ///
    /// # Errors
    /// As [`Kubectl::run_with_input`].
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.run_with_input(args, "")
    }

    /// `kubectl apply -n <namespace> -f -` of a YAML document (or several).
    ///
    /// # Errors
    /// When kubectl refuses it.
    pub fn apply(&self, namespace: &str, yaml: &str) -> Result<()> {
        self.run_with_input(&["apply", "--namespace", namespace, "-f", "-"], yaml)
            .map(drop)
    }

    /// `kubectl get -n <namespace> <what> -o json`, parsed.
    ///
    /// # Errors
    /// When kubectl fails (a missing object included) or prints something that is not JSON.
    pub fn get_json(&self, namespace: &str, what: &str) -> Result<serde_json::Value> {
        let args = ["get", "--namespace", namespace, what, "-o", "json"];
        let out = self.run(&args)?;
        serde_json::from_str(&out).map_err(|error| Error::Kube {
            command: Self::describe(&args),
            reason: format!("output is not JSON: {error}"),
        })
    }

    /// `kubectl delete -n <namespace> <what>`, waiting for it to be gone, with
    /// the given grace period (`None`: the object's own).
    ///
    /// # Errors
    /// When kubectl fails.
    pub fn delete(&self, namespace: &str, what: &str, grace_period_s: Option<u32>) -> Result<()> {
        let grace = grace_period_s.map(|seconds| format!("--grace-period={seconds}"));
        let mut args = vec!["delete", "--namespace", namespace, what, "--wait=true"];
        if let Some(grace) = grace.as_deref() {
            args.push(grace);
        }
        self.run(&args).map(drop)
    }

    /// `kubectl exec -n <namespace> <pod> -c <container> -- <command>`; its stdout.
    ///
    /// # Errors
    /// When the command cannot run in the pod or exits non-zero.
    pub fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &[&str],
    ) -> Result<String> {
        let mut args = vec!["exec", "--namespace", namespace, pod, "-c", container, "--"];
        args.extend_from_slice(command);
        self.run(&args)
    }

    /// `kubectl logs -n <namespace> <pod> --all-containers` (for failure reports).
    ///
    /// # Errors
    /// When kubectl fails.
    pub fn logs(&self, namespace: &str, pod: &str) -> Result<String> {
        self.run(&["logs", "--namespace", namespace, pod, "--all-containers"])
    }

    /// Creates a namespace that is deleted when the returned guard is dropped.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn namespace(&self, name: &str) -> Result<Namespace> {
        let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
        self.run_with_input(&["apply", "-f", "-"], &yaml)?;
        Ok(Namespace {
            kubectl: self.clone(),
            name: name.to_owned(),
        })
    }

    /// A replica pod's `/status`, read from inside the pod by the image's own
    /// `dledger-replica status --json` (no port needs to be reachable from
    /// here), with `credentials` (client flags; empty for plain HTTP).
    ///
    /// # Errors
    /// When the pod cannot be exec'ed into or does not answer with a status.
    pub fn replica_status(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        credentials: &[String],
    ) -> Result<Status> {
        let http = format!("127.0.0.1:{REPLICA_HTTP_PORT}");
        let mut command = vec![
            "/usr/local/bin/dledger-replica",
            "status",
            "--json",
            "--http",
            &http,
        ];
        command.extend(credentials.iter().map(String::as_str));
        let out = self.exec(namespace, pod, container, &command)?;
        let line = out
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("");
        serde_json::from_str(line).map_err(|error| Error::Kube {
            command: format!("kubectl exec {pod} -- dledger-replica status --json"),
            reason: format!("not a /status JSON line ({error}): {}", cut(line)),
        })
    }

    /// `kubectl port-forward -n <namespace> <target> :<remote_port>`: a local
    /// port on 127.0.0.1 that reaches `remote_port` of the pod or Service,
    /// open until the returned value is dropped.
    ///
    /// # Errors
    /// When kubectl cannot start or does not report a forwarded port in time.
    pub fn port_forward(
        &self,
        namespace: &str,
        target: &str,
        remote_port: u16,
    ) -> Result<PortForward> {
        let remote = format!(":{remote_port}");
        let args = [
            "port-forward",
            "--namespace",
            namespace,
            "--address",
            "127.0.0.1",
            target,
            &remote,
        ];
        let described = Self::describe(&args);
        let mut child = self
            .command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| Error::Kube {
                command: described.clone(),
                reason: format!("cannot start {}: {error}", self.program),
            })?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(Error::Kube {
                command: described,
                reason: "no standard output to read the port from".to_owned(),
            });
        };
        // kubectl prints "Forwarding from 127.0.0.1:PORT -> REMOTE" once listening;
        // a thread reads it so that the wait can time out.
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(local) = forwarded_port(&line) {
                    let _ = sender.send(local);
                }
            }
        });
        match receiver.recv_timeout(PORT_FORWARD_START_TIMEOUT) {
            Ok(local) => Ok(PortForward { child, local }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::Kube {
                    command: described,
                    reason: format!(
                        "no \"Forwarding from\" line within {} ms",
                        PORT_FORWARD_START_TIMEOUT.as_millis()
                    ),
                })
            }
        }
    }
}

/// The local address in one line of `kubectl port-forward`'s output.
pub fn forwarded_port(line: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix("Forwarding from ")?;
    let (local, _) = rest.split_once(" -> ")?;
    local.parse().ok()
}

/// A running `kubectl port-forward`; stopped on drop.
#[derive(Debug)]
pub struct PortForward {
    child: Child,
    local: SocketAddr,
}

impl PortForward {
    /// The local end (127.0.0.1:port).
    pub fn local(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A namespace created for one scenario; deleted (without waiting) on drop, so
/// a failing scenario leaves nothing behind either.
#[derive(Debug)]
pub struct Namespace {
    kubectl: Kubectl,
    name: String,
}

impl Namespace {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(error) = self
            .kubectl
            .run(&["delete", "namespace", &self.name, "--wait=false"])
        {
            eprintln!("kube: deleting namespace {}: {error}", self.name);
        }
    }
}

/// Polls `probe` every [`POLL_INTERVAL`] until it returns `Ok`, for at most
/// `timeout_ms`. `probe` returns `Err(what it saw)` while the condition does
/// not hold; the last of those is in the timeout error, so a failure says what
/// the cluster looked like, not only that it was not ready.
///
/// # Errors
/// [`Error::Waited`] naming `what`, the time waited and the last observation.
pub fn wait_for<T>(
    what: &str,
    timeout_ms: u64,
    mut probe: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    let started = Instant::now();
    let timeout = Duration::from_millis(timeout_ms);
    loop {
        let last_seen = match probe() {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if started.elapsed() >= timeout {
            return Err(Error::Waited {
                what: what.to_owned(),
                waited_ms: started.elapsed().as_millis(),
                last_seen: cut(&last_seen),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The `Ready` condition of a pod object (from [`Kubectl::get_json`]).
pub fn pod_is_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// A pod's phase, uid and Ready condition in a few words, for "last seen".
pub fn describe_pod(pod: &serde_json::Value) -> String {
    format!(
        "{} phase={} ready={} uid={}",
        pod["metadata"]["name"].as_str().unwrap_or("?"),
        pod["status"]["phase"].as_str().unwrap_or("?"),
        pod_is_ready(pod),
        pod["metadata"]["uid"].as_str().unwrap_or("?")
    )
}

fn cut(text: &str) -> String {
    if text.chars().count() <= ERROR_OUTPUT_CHARS_MAX {
        text.to_owned()
    } else {
        let kept: String = text.chars().take(ERROR_OUTPUT_CHARS_MAX).collect();
        format!("{kept}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_port_reads_kubectls_line() {
        assert_eq!(
            forwarded_port("Forwarding from 127.0.0.1:43121 -> 8080"),
            Some("127.0.0.1:43121".parse().unwrap())
        );
        assert_eq!(
            forwarded_port("Forwarding from [::1]:43121 -> 8080"),
            Some("[::1]:43121".parse().unwrap())
        );
        assert_eq!(forwarded_port("Handling connection for 43121"), None);
    }

    #[test]
    fn wait_for_reports_the_last_observation() {
        let mut calls = 0;
        let error = wait_for("something", 0, || {
            calls += 1;
            Err::<(), _>(format!("seen {calls}"))
        })
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("something"), "{message}");
        assert!(message.contains("seen 1"), "{message}");
    }

    #[test]
    fn wait_for_returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let value = wait_for("the third call", 10_000, || {
            calls += 1;
            if calls == 3 {
                Ok(calls)
            } else {
                Err(format!("call {calls}"))
            }
        })
        .unwrap();
        assert_eq!(value, 3);
    }

    #[test]
    fn a_missing_variable_is_an_error_that_says_how_to_run() {
        let error = required_env("DLEDGER_E2E_SURELY_UNSET_VARIABLE").unwrap_err();
        assert!(
            error.to_string().contains("e2e/kubernetes/run.sh"),
            "{error}"
        );
    }

    #[test]
    fn pod_readiness_comes_from_the_ready_condition() {
        let ready =
            serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let not_ready =
            serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert!(pod_is_ready(&ready));
        assert!(!pod_is_ready(&not_ready));
        assert!(!pod_is_ready(&serde_json::json!({})));
    }
}
