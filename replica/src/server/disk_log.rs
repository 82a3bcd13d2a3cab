//! The consensus core's read-only view of the on-disk log.

use std::sync::Arc;

use crate::core::{LogRead, LogReadError};
use crate::entry::{Entry, Index, Term};
use crate::store::{Log, StoreError};

/// [`LogRead`] over the shared [`Log`]; the core only reads entries it knows
/// to be durable, while the storage thread appends past them.
pub struct DiskLog {
    log: Arc<Log>,
}

impl DiskLog {
    /// A view of `log`.
    pub fn new(log: Arc<Log>) -> DiskLog {
        DiskLog { log }
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
}
