//! The consensus core's read-only view of the on-disk log.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::core::{LogRead, LogReadError};
use crate::entry::{Entry, Index, Term};
use crate::store::{Log, StoreError};

/// [`LogRead`] over the shared [`Log`]; the core only reads entries it knows
/// to be durable, while the storage thread appends past them.
pub struct DiskLog {
    log: Arc<Log>,
    /// The consumer checkpoint, sent with the log start to a follower that
    /// needs deleted entries (retention deletes only below it).
    checkpoint_path: PathBuf,
}

impl DiskLog {
    /// A view of `log`, whose consumer checkpoint is at `checkpoint_path`.
    pub fn new(log: Arc<Log>, checkpoint_path: PathBuf) -> DiskLog {
        DiskLog {
            log,
            checkpoint_path,
        }
    }
}

fn read_error(err: StoreError) -> LogReadError {
    LogReadError {
        reason: err.to_string(),
    }
}

impl LogRead for DiskLog {
    fn first_index(&self) -> Index {
        // Only fails once the store failed, which stops the loop anyway;
        // 1 is the answer of an empty log.
        self.log.first_index().unwrap_or(1)
    }

    fn last_index(&self) -> Index {
        self.log.last_index().unwrap_or(0)
    }

    fn term(&self, index: Index) -> Result<Option<Term>, LogReadError> {
        match self.log.term(index) {
            Ok(term) => Ok(Some(term)),
            Err(StoreError::Compacted { .. } | StoreError::Unavailable { .. }) => Ok(None),
            Err(err) => Err(read_error(err)),
        }
    }

    fn entries(
        &self,
        from: Index,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogReadError> {
        self.log
            .entries(from, max_count, max_bytes as u64)
            .map_err(read_error)
    }

    /// The checkpoint file as it is on disk: written atomically, so whole,
    /// and applied at least up to the first index (retention deletes only
    /// what it covers).
    fn state_image(&self) -> Result<Bytes, LogReadError> {
        match std::fs::read(&self.checkpoint_path) {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Bytes::new()),
            Err(err) => Err(LogReadError {
                reason: format!("reading {}: {err}", self.checkpoint_path.display()),
            }),
        }
    }
}
