//! `dledger-replica`: a Raft-replicated, append-only log.
//!
//! Data flows one way, each layer in its own module (see DESIGN.md):
//! network → [`core`] (consensus, sans-IO) → [`store`] (segmented log) → network.

#![deny(missing_docs)]

pub mod entry;
pub mod net;
