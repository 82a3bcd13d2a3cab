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
pub mod metrics;
#[cfg(feature = "engine")]
pub mod net;
#[cfg(feature = "engine")]
pub mod server;
#[cfg(feature = "engine")]
pub mod store;
