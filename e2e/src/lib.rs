//! `dledger-e2e`: end-to-end suites that run real `dledger-replica serve`
//! processes and check what a client was told against what the group kept.
//!
//! Tiers 3 and 4 of DESIGN.md:
//! - `tests/processes.rs`: three replicas on loopback, under load, through
//!   kill -9, SIGSTOP, restarts, a wiped data directory and leadership transfer;
//! - `tests/hosts.rs` (the `e2e/hosts` suite): each replica in its own network
//!   namespace with its own address, partitioned with the kernel's own tools.
//!
//! The harness modules, one job each:
//! [`binary`] finds the replica executable, [`cluster`] runs the processes,
//! [`http`] speaks the HTTP API, [`load`] writes continuously and records every
//! acknowledgement, [`monitor`] watches `/status` for split brain, [`check`]
//! compares the acknowledgements with every member's log, and [`netns`] builds
//! the namespaces, the bridge and the faults. [`kube`] wraps `kubectl` for the
//! Kubernetes suite (`tests/kubernetes.rs`, run by `e2e/kubernetes/run.sh`).

#![deny(missing_docs)]

pub mod binary;
pub mod check;
pub mod cluster;
pub mod error;
pub mod http;
pub mod kube;
pub mod load;
pub mod monitor;
pub mod netns;
pub mod probe;
pub mod scenario;
pub mod wait;

pub use error::Error;
