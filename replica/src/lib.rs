//! `dledger-replica`: a Raft-replicated, append-only log.
//!
//! Data flows one way, each layer in its own module (see DESIGN.md):
//! network ([`net`]) → consensus ([`core`], sans-IO) → storage ([`store`])
//! → network. [`server`] wires them together on tokio; [`engine`] is what a
//! running replica offers its front ends ([`http`] and the binary protocol);
//! [`api`] holds the JSON types of the HTTP contract; [`cli`] the commands.

#![deny(missing_docs)]

pub mod admin_client;
pub mod api;
#[cfg(feature = "engine")]
pub mod auth;
#[cfg(feature = "certs")]
pub mod certs;
#[cfg(feature = "engine")]
pub mod cli;
#[cfg(feature = "engine")]
pub mod consumers;
#[cfg(feature = "engine")]
pub mod core;
#[cfg(feature = "engine")]
pub mod datadir;
#[cfg(feature = "engine")]
pub mod engine;
#[cfg(feature = "engine")]
pub mod entry;
#[cfg(feature = "engine")]
pub mod executor;
#[cfg(feature = "engine")]
pub mod http;
#[cfg(feature = "engine")]
pub mod http_auth;
#[cfg(feature = "engine")]
pub mod http_serve;
#[cfg(feature = "engine")]
pub mod membership;
#[cfg(feature = "engine")]
pub mod metrics;
#[cfg(feature = "engine")]
pub mod net;
#[cfg(feature = "engine")]
pub mod server;
#[cfg(feature = "engine")]
pub mod store;

static BUILD_VERSION: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The version this replica reports (`/status`, `--version`, the start-up
/// log, benchmark results): the package version, unless the binary set
/// another with [`set_version`] (the `dledger-replica` binary does when it
/// was built with `DLEDGER_BUILD_VERSION`, which is how the Kubernetes suite
/// makes a second, distinguishable version from the same sources).
pub fn version() -> &'static str {
    BUILD_VERSION
        .get()
        .copied()
        .unwrap_or(env!("CARGO_PKG_VERSION"))
}

/// Sets what [`version`] returns; the first call wins, later ones are ignored.
pub fn set_version(version: &'static str) {
    let _ = BUILD_VERSION.set(version);
}
