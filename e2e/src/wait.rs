//! Waiting on a condition instead of sleeping a fixed time.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Polls `probe` every [`POLL_INTERVAL`] until it returns `Some`, for at most `timeout`.
///
/// # Errors
/// [`Error::Timeout`] naming `what` when `timeout` passes first.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if started.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what.to_owned(),
                waited_ms: started.elapsed().as_millis(),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
