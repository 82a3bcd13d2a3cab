//! The executor: what carries out a core `Ready` and tracks client requests
//! to their answers, as plain code with no I/O of its own, so the server and
//! the deterministic simulation run the same bookkeeping.
//!
//! - [`proposals`]: appends (batches of entries) from `propose` to their
//!   outcome, entry by entry when a truncation cuts a batch.

pub mod proposals;

pub use proposals::{Outcome, Proposals};
