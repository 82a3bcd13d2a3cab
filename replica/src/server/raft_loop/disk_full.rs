//! A full disk: telling when the log's file system has no room left, and
//! handing leadership over while it stays so.

use std::time::{Duration, Instant};

use crate::core;

use super::RaftLoop;

/// Writes are refused while less than this is free on the log's file
/// system: room for the hard state and a segment roll, so a full disk is
/// met by refusing writes rather than by a failed one.
const DISK_RESERVE_BYTES: u64 = 8 << 20;

/// A leader that cannot write this long hands leadership to a follower,
/// so the rest of the group goes on writing.
const DISK_FULL_STEP_ASIDE: Duration = Duration::from_secs(2);

impl RaftLoop {
    /// Whether writes must wait for disk space: the file system is nearly
    /// full, or the flusher met a full disk.
    pub(super) fn disk_full(&self) -> bool {
        self.disk_full_since.is_some() || self.storage.is_disk_full()
    }

    /// Looks at the room left; a leader that stays unable to write hands
    /// leadership over. Writes resume by themselves once space is freed.
    pub(super) fn check_disk(&mut self, now: Instant) {
        let low = match crate::store::space::free_bytes(self.storage.log().dir()) {
            Ok(free_bytes) => free_bytes < DISK_RESERVE_BYTES,
            Err(err) => {
                tracing::warn!(%err, "cannot tell the room left on the log's file system");
                false
            }
        };
        let full = low || self.storage.is_disk_full();
        match (full, self.disk_full_since) {
            (true, None) => {
                tracing::error!(
                    reserve_bytes = DISK_RESERVE_BYTES,
                    "the log's disk is full; writes are refused until space is freed"
                );
                self.disk_full_since = Some(now);
            }
            (false, Some(_)) => {
                tracing::info!("disk space is back; writes are taken again");
                self.disk_full_since = None;
            }
            _ => {}
        }
        let stuck = self
            .disk_full_since
            .is_some_and(|since| now.duration_since(since) >= DISK_FULL_STEP_ASIDE);
        if stuck && self.node.role() == core::Role::Leader && self.transfer.is_none() {
            match self.node.transfer_leadership(None) {
                Ok(()) => tracing::warn!("the disk is full; handing leadership to a follower"),
                Err(err) => tracing::debug!(%err, "no leadership hand-over on a full disk"),
            }
        }
    }
}
