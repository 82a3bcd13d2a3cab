//! The Kubernetes suite: scenarios on a real cluster, one test binary. Run it
//! through its one entry point, `e2e/kubernetes/run.sh`, which passes
//! `--ignored` and the environment every scenario needs: `KUBECONFIG`,
//! `DLEDGER_REPLICA_IMAGE` and `DLEDGER_OPERATOR_IMAGE` (a missing one fails
//! the scenario that needs it, with a message; nothing skips). On this machine
//! the cluster is `e2e/cluster`; elsewhere kind (`e2e/kind/run.sh`).
//!
//! Each scenario uses its own namespace and deletes it at the end.

#[path = "kubernetes/chart.rs"]
mod chart;
#[path = "kubernetes/operator.rs"]
mod operator;
#[path = "kubernetes/scaling.rs"]
mod scaling;
#[path = "kubernetes/smoke.rs"]
mod smoke;
#[path = "kubernetes/tls.rs"]
mod tls;
#[path = "kubernetes/upgrade.rs"]
mod upgrade;
#[path = "kubernetes/writes.rs"]
mod writes;
