//! Linearizable reads (ReadIndex): the reads the core has yet to confirm,
//! and what their callers are told.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::core::{self, ReadState};
use crate::engine::AppendError;
use crate::entry::Index;

use super::RaftLoop;

/// How long a linearizable read waits for its answer in all: the core
/// answers or times a read out well before (two election timeouts).
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A read the core has not answered yet.
pub(super) struct AskedRead {
    pub(super) reply: oneshot::Sender<Result<Index, AppendError>>,
    pub(super) deadline: Instant,
}

impl RaftLoop {
    /// Reads the core has not answered by their deadline get a timeout.
    pub(super) fn expire_reads(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .reads_asked
            .iter()
            .filter(|(_, read)| read.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(read) = self.reads_asked.remove(&id) {
                let _ = read.reply.send(Err(AppendError::Unavailable {
                    reason: format!(
                        "the read was not confirmed within {} s",
                        READ_TIMEOUT.as_secs()
                    ),
                }));
            }
        }
    }

    pub(super) fn on_read_state(&mut self, read: ReadState) {
        let Some(AskedRead { reply, .. }) = self.reads_asked.remove(&read.request_id) else {
            return;
        };
        match read.result {
            Ok(index) if index <= self.node.commit_index() => {
                let _ = reply.send(Ok(index));
            }
            Ok(index) => self.reads_waiting.entry(index).or_default().push(reply),
            Err(err @ core::ReadError::NotLeader { .. }) => {
                let _ = reply.send(Err(AppendError::NoLeader {
                    reason: err.to_string(),
                }));
            }
            Err(err) => {
                let _ = reply.send(Err(AppendError::Unavailable {
                    reason: err.to_string(),
                }));
            }
        }
    }
}
