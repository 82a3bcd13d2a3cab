//! Admission: whether a client's proposal or a peer's append is let in
//! now, or refused at once because storage has no room for it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::core::{Message, MessageBody};
use crate::engine::AppendError;

use super::RaftLoop;

/// Client payload bytes proposed and not yet answered, at most: past it new
/// appends are answered "busy, retry". Bounds the leader's log beyond the
/// commit index, so a flood of large appends waits at the client, not in
/// memory and queues here (where it would time out unanswered).
const MAX_UNCOMMITTED_BYTES: u64 = 64 << 20;

impl RaftLoop {
    /// Whether storage can take `payload_bytes` more now: the log's write
    /// queue is bounded, and what the loop lets in is what it will write.
    fn storage_has_room(&self, payload_bytes: u64) -> bool {
        !self
            .storage
            .would_refuse(self.admitted_bytes.saturating_add(payload_bytes))
    }

    /// Lets a client's entries in, or says why not: "busy, retry" when the
    /// write queue is full, "disk full" while storage waits for space. The
    /// client is answered at once, so load slows clients and never piles up.
    pub(super) fn admit_proposal(&mut self, payloads: &[Bytes]) -> Result<u64, AppendError> {
        let payload_bytes: u64 = payloads.iter().map(|payload| payload.len() as u64).sum();
        if self.disk_full() {
            self.metrics.appends_refused_disk_full_total.inc();
            return Err(AppendError::DiskFull {
                reason: "this member cannot write its log until space is freed".into(),
            });
        }
        let uncommitted_bytes = self.uncommitted_bytes.load(Ordering::Relaxed);
        let refused = if uncommitted_bytes > 0
            && uncommitted_bytes + payload_bytes > MAX_UNCOMMITTED_BYTES
        {
            Some(format!(
                "{uncommitted_bytes} bytes of appends wait for commit ({MAX_UNCOMMITTED_BYTES} at most)"
            ))
        } else if !self.storage_has_room(payload_bytes) {
            Some(format!(
                "the log's write queue is full ({} bytes at most)",
                self.storage.options().max_pending_bytes
            ))
        } else {
            None
        };
        if let Some(reason) = refused {
            self.metrics.appends_refused_busy_total.inc();
            return Err(AppendError::Overloaded { reason });
        }
        self.admitted_bytes += payload_bytes;
        Ok(payload_bytes)
    }

    /// Counts `payload_bytes` as uncommitted until `reply` is answered (or
    /// dropped), without touching the proposal bookkeeping.
    pub(super) fn count_uncommitted<T: 'static>(
        &self,
        payload_bytes: u64,
        reply: Box<dyn FnOnce(T) + Send>,
    ) -> Box<dyn FnOnce(T) + Send> {
        struct Uncounted(Arc<std::sync::atomic::AtomicU64>, u64);
        impl Drop for Uncounted {
            fn drop(&mut self) {
                self.0.fetch_sub(self.1, Ordering::Relaxed);
            }
        }
        self.uncommitted_bytes
            .fetch_add(payload_bytes, Ordering::Relaxed);
        let counted = Uncounted(self.uncommitted_bytes.clone(), payload_bytes);
        Box::new(move |result| {
            drop(counted);
            reply(result);
        })
    }

    /// Whether a peer message may be stepped. An append carrying entries
    /// that storage cannot queue now (queue full, disk full) is dropped
    /// unanswered: the leader sends it again, and heartbeats, votes and
    /// everything else still go through, so the member stays in the group.
    pub(super) fn admit_peer_append(&mut self, message: &Message) -> bool {
        let MessageBody::Append { entries, .. } = &message.body else {
            return true;
        };
        if entries.is_empty() {
            return true;
        }
        let payload_bytes = entries.iter().map(|entry| entry.payload.len() as u64).sum();
        if self.disk_full() || !self.storage_has_room(payload_bytes) {
            self.metrics.peer_appends_refused_total.inc();
            return false;
        }
        self.admitted_bytes += payload_bytes;
        true
    }
}
