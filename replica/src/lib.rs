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
pub mod cli;
pub mod core;
pub mod datadir;
pub mod engine;
pub mod entry;
pub mod executor;
pub mod http;
pub mod metrics;
pub mod net;
pub mod server;
pub mod store;
