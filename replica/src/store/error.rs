//! The store's one error type.

use std::io;
use std::path::PathBuf;

use crate::entry::{Index, Term};

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on `path` (other than a full disk).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The disk is full. Nothing already written was damaged (the partial
    /// write was cut back); the store stays usable once space is freed.
    #[error("no space left on the device holding {path}; the partial write was cut back")]
    NoSpace {
        /// The file being written.
        path: PathBuf,
    },
    /// Damage found where a crash cannot explain it. The store refuses to
    /// open rather than guess; an operator must look (`dledger-replica log verify`).
    #[error("corrupt data in {path} at byte offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier fsync or unrecoverable write error put the store in a
    /// failed state; every later call fails. Restart the process to recover
    /// from what is on disk (an fsync is never retried and trusted).
    #[error("the store has failed after an earlier I/O error and accepts no more calls: {cause}")]
    Failed {
        /// The error that made it fail.
        cause: String,
    },
    /// The entry was deleted by retention (below the first index).
    #[error("entry {index} is compacted; the log starts at {first_index}")]
    Compacted {
        /// What was asked for.
        index: Index,
        /// The first index still present.
        first_index: Index,
    },
    /// The entry is past the end of the log.
    #[error("entry {index} is past the end of the log (last index {last_index})")]
    Unavailable {
        /// What was asked for.
        index: Index,
        /// The last index present.
        last_index: Index,
    },
    /// An append whose first index does not follow the log's last index.
    #[error("append out of order: got index {got}, expected {expected}")]
    NotContiguous {
        /// The index the append started with.
        got: Index,
        /// The index it had to start with.
        expected: Index,
    },
    /// An append whose term is below the log's last term.
    #[error("append with term {got} below the last term {last_term}")]
    TermRegression {
        /// The term of the offending entry.
        got: Term,
        /// The log's last term at that point.
        last_term: Term,
    },
    /// A request the store cannot honour as given (bad option, bad range).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The group-commit queue is full; try again later.
    #[error("the group-commit queue is full ({pending_bytes} bytes pending)")]
    Busy {
        /// Bytes waiting to be written.
        pending_bytes: u64,
    },
    /// The group-commit front end has shut down.
    #[error("the group-commit writer has shut down")]
    Closed,
}

impl StoreError {
    /// An I/O error on `path`, with a full disk mapped to [`StoreError::NoSpace`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        let path = path.into();
        if is_no_space(&source) {
            StoreError::NoSpace { path }
        } else {
            StoreError::Io { path, source }
        }
    }

    /// Damage in `path` at `offset`.
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> StoreError {
        StoreError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Whether `error` says the device is full.
pub(crate) fn is_no_space(error: &io::Error) -> bool {
    // ENOSPC is 28 on Linux; the ErrorKind covers other platforms.
    error.kind() == io::ErrorKind::StorageFull || error.raw_os_error() == Some(28)
}
