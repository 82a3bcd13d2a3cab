//! Carrying out retention: deleting the old log segments the policy
//! allows, once the consumer checkpoint that deletion waits for is on disk.

use std::time::Instant;

use crate::core;
use crate::entry::Index;
use crate::server::retention;

use super::{Input, RaftLoop};

impl RaftLoop {
    /// Deletes the segments retention allows. Runs on this thread so the
    /// core never reads an entry while it is being deleted.
    ///
    /// Deleting below index X loses the offset commits of the entries
    /// below X, so it waits until the consumer checkpoint on disk holds the
    /// state applied up to at least X - 1: when it does not, a checkpoint is
    /// written (off this thread) and the deletion is done once it is on disk
    /// (the next round is brought forward).
    pub(super) fn apply_retention(&mut self) -> Result<(), String> {
        if !self.retention.is_enabled() {
            return Ok(());
        }
        let log = self.storage.log().clone();
        let segments = log
            .segments()
            .map_err(|err| format!("listing log segments: {err}"))?;
        let self_id = self.node.id();
        // A leader knows its followers' progress; a follower keeps what
        // the leader last said some member may still need, so that it can
        // send it should it lead next.
        let slowest_follower_match = if self.node.role() == core::Role::Leader {
            self.node
                .peer_status()
                .iter()
                .filter(|peer| peer.id != self_id)
                .map(|peer| peer.match_index)
                .min()
        } else {
            self.node
                .retention_keep_from()
                .map(|keep_from| keep_from.saturating_sub(1))
        };
        let progress = retention::Progress {
            // Never past what the consumer state is applied up to either:
            // the core's commit index may be a Ready ahead of it.
            commit_index: self
                .node
                .commit_index()
                .min(self.node.persisted_index())
                .min(self.consumers_applied_through),
            slowest_follower_match,
        };
        let now = std::time::SystemTime::now();
        if let Some(index) = retention::delete_below(&self.retention, &segments, progress, now) {
            let needed = index.saturating_sub(1);
            if self.checkpoint_saved.is_some_and(|saved| saved >= needed) {
                let deleted = log
                    .delete_below(index)
                    .map_err(|err| format!("deleting log segments below {index}: {err}"))?;
                tracing::info!(
                    below = index,
                    segments = deleted,
                    checkpoint_applied_index = self.checkpoint_saved.unwrap_or(0),
                    "retention deleted log segments"
                );
            } else {
                self.start_checkpoint(needed);
            }
        }
        let bytes = log
            .segments()
            .map(|segments| segments.iter().map(|s| s.size_bytes).sum())
            .unwrap_or(0);
        self.metrics.set_log_bytes(bytes);
        Ok(())
    }

    /// Starts writing the consumer checkpoint, for a deletion that needs the
    /// state applied up to `needed`. Encoding and writing run on a thread of
    /// their own, which reports with [`Input::CheckpointSaved`]: for 100,000
    /// groups the encoding alone takes 9 to 47 ms (12- to 128-byte names) and
    /// the fsync'd write 20 to 90 ms (`checkpoint_figures`), too long for
    /// this thread. The writer holds the state's read lock while it encodes,
    /// so this thread waits only if an offset commit applies meanwhile.
    fn start_checkpoint(&mut self, needed: Index) {
        if let Some(writing) = self.checkpoint_writing {
            tracing::debug!(writing, needed, "a consumer checkpoint is being written");
            return;
        }
        // Every offset commit up to here is applied, so the state is (at
        // least) the state at this index.
        let applied_through = self.consumers_applied_through;
        if applied_through < needed {
            tracing::warn!(
                applied_through,
                needed,
                "the consumer state is not applied as far as retention would delete; \
                 no deletion this round"
            );
            return;
        }
        let consumers = self.consumers.clone();
        let path = self.checkpoint_path.clone();
        let loopback = self.loopback.clone();
        let spawned = std::thread::Builder::new()
            .name("consumer-checkpoint".into())
            .spawn(move || {
                let started = Instant::now();
                let (bytes, applied_index, groups) = {
                    let state = consumers
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    // Offset commits applied since only move it further: the
                    // state's own applied index is then the commit index
                    // they were applied at.
                    let applied_index = applied_through.max(state.applied_index());
                    (
                        state.encode_checkpoint(applied_index),
                        applied_index,
                        state.len(),
                    )
                };
                let encode_us = started.elapsed().as_micros() as u64;
                let outcome = crate::datadir::save_consumer_checkpoint(&path, &bytes)
                    .map_err(|err| err.to_string());
                if outcome.is_ok() {
                    tracing::info!(
                        applied_index,
                        groups,
                        bytes = bytes.len(),
                        encode_us,
                        total_us = started.elapsed().as_micros() as u64,
                        "wrote the consumer checkpoint"
                    );
                }
                let _ = loopback.send(Input::CheckpointSaved {
                    applied_index,
                    outcome,
                });
            });
        match spawned {
            Ok(_) => self.checkpoint_writing = Some(applied_through),
            Err(err) => tracing::error!(
                %err,
                "cannot start the consumer checkpoint writer; retention deletes nothing this round"
            ),
        }
    }

    /// The checkpoint writer is done: on success, retention runs again at
    /// the next tick to delete what it now may.
    pub(super) fn on_checkpoint_saved(
        &mut self,
        applied_index: Index,
        outcome: Result<(), String>,
    ) {
        self.checkpoint_writing = None;
        match outcome {
            // Encoded before the log start was taken up, written after it:
            // the file must hold the state the new log starts from.
            Ok(())
                if self
                    .installed_start
                    .is_some_and(|start| applied_index < start) =>
            {
                let bytes = self
                    .consumers
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .encode_checkpoint(self.consumers_applied_through);
                if let Err(err) =
                    crate::datadir::save_consumer_checkpoint(&self.checkpoint_path, &bytes)
                {
                    tracing::error!(
                        %err,
                        path = %self.checkpoint_path.display(),
                        "writing the consumer checkpoint again after the log start failed"
                    );
                }
            }
            Ok(()) => {
                self.checkpoint_saved = Some(
                    self.checkpoint_saved
                        .map_or(applied_index, |saved| saved.max(applied_index)),
                );
                self.next_retention = Instant::now();
            }
            // The old checkpoint is intact (the new one replaces it by a
            // rename), and nothing is deleted past it; tried again next round.
            Err(reason) => tracing::error!(
                %reason,
                path = %self.checkpoint_path.display(),
                "writing the consumer checkpoint failed; retention deletes nothing until it is written"
            ),
        }
    }
}
