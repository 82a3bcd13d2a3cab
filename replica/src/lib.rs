//! `dledger-replica`: a Raft-replicated, append-only log.
//!
//! Data flows one way, each layer in its own module (see DESIGN.md):
//! network → `core` (consensus, sans-IO) → `store` (segmented log) → network.
//! [`engine`] is what a running replica offers its front ends ([`http`] and
//! the binary protocol); [`api`] holds the JSON types of the HTTP contract.

#![deny(missing_docs)]

pub mod api;
pub mod engine;
pub mod entry;
pub mod http;
pub mod metrics;
