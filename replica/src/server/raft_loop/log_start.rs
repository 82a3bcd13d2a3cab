//! Taking up the leader's log start: a follower that needs entries the
//! leader's retention deleted drops its log, continues after the leader's
//! first index, and takes the leader's consumer checkpoint as its offsets.

use crate::consumers::ConsumerState;
use crate::core::LogStart;

use super::RaftLoop;

impl RaftLoop {
    /// Carries out `Ready::log_start`, after the configuration records
    /// (which then hold the new start's record) and before any entry; the
    /// executor then answers the proposals waiting.
    ///
    /// The checkpoint is written before the log is reset: a crash between
    /// the two leaves the old log with a checkpoint ahead of it, which a
    /// restart reads as it reads any (the leader then installs again); the
    /// other order could leave a log that starts past its checkpoint, which
    /// a restart refuses.
    pub(super) fn install_log_start(&mut self, start: LogStart) -> Result<(), String> {
        let LogStart {
            prev_log_index,
            prev_log_term,
            state,
        } = start;
        let consumers = self.installed_consumers(prev_log_index, &state);
        let applied = consumers.applied_index();
        let bytes = consumers.encode_checkpoint(applied);
        crate::datadir::save_consumer_checkpoint(&self.checkpoint_path, &bytes)
            .map_err(|err| format!("writing the consumer checkpoint of the log start: {err}"))?;
        self.storage
            .restart_after(prev_log_index, prev_log_term)
            .map_err(|err| format!("resetting the log to start after {prev_log_index}: {err}"))?;
        self.consumers_applied_through = applied;
        self.checkpoint_saved = Some(applied);
        self.installed_start = Some(applied);
        *self
            .consumers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = consumers;
        tracing::info!(
            log_start = prev_log_index + 1,
            term = prev_log_term,
            consumer_groups = self.consumers_len(),
            consumer_applied_index = applied,
            "took up the leader's log start: the entries before it were deleted by its retention"
        );
        Ok(())
    }

    /// The consumer state the leader sent, applied up to `prev_log_index`
    /// at least. One that does not decode, or stops short of the start, is
    /// replaced by an empty state at the start with an error: the member
    /// must take the start either way (the core already did), and only
    /// the offsets committed before it are then unknown here.
    fn installed_consumers(&self, prev_log_index: u64, state: &[u8]) -> ConsumerState {
        let decoded = if state.is_empty() {
            Err("the leader keeps no consumer checkpoint".to_string())
        } else {
            ConsumerState::decode_checkpoint(state)
                .map_err(|defect| format!("it does not decode: {}", defect.reason))
                .and_then(|decoded| {
                    if decoded.applied_index() < prev_log_index {
                        Err(format!(
                            "it is applied up to {} only",
                            decoded.applied_index()
                        ))
                    } else {
                        Ok(decoded)
                    }
                })
        };
        decoded.unwrap_or_else(|reason| {
            tracing::error!(
                log_start = prev_log_index + 1,
                %reason,
                "the leader's consumer state cannot be taken; offsets committed before the \
                 log start are not known on this member"
            );
            let mut empty = ConsumerState::default();
            empty.skip_to(prev_log_index);
            empty
        })
    }

    fn consumers_len(&self) -> usize {
        self.consumers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}
