//! The executor: what carries out a core `Ready` and tracks client requests
//! to their answers, as plain code with no I/O of its own, so the server and
//! the deterministic simulation run the same bookkeeping.
//!
//! - [`ready`]: the order of a Ready's steps, what each decides, and the
//!   [`Host`] that does the I/O (the server's raft loop, the simulation).
//! - [`proposals`]: appends (batches of entries) from `propose` to their
//!   outcome, entry by entry when a truncation cuts a batch.

pub mod proposals;
pub mod ready;

pub use proposals::{Outcome, Proposals};
pub use ready::{carry_out, Answers, Bookkeeping, EntryTerms, Host, Written};
