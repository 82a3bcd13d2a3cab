//! One budget of client request bytes read and not yet answered, shared by
//! the binary listener and the HTTP front end: past it neither reads more
//! from clients, so a flood waits in the clients' sockets (TCP
//! backpressure) instead of taking the one network thread from the peers'
//! heartbeats only to be answered "busy".

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default size of the budget: as much as the raft loop lets wait for
/// commit (64 MiB), so what is read can be taken in.
pub const DEFAULT_MAX_CLIENT_BYTES_IN_FLIGHT: usize = 64 << 20;

/// A handle on the budget; clones share it.
#[derive(Clone, Debug)]
pub struct ClientBytes {
    permits: Arc<Semaphore>,
    max_bytes: usize,
}

impl ClientBytes {
    /// A budget of `max_bytes` (at least 1).
    pub fn new(max_bytes: usize) -> ClientBytes {
        let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        ClientBytes {
            permits: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
        }
    }

    /// Waits until `bytes` fit, and holds them until the returned permit
    /// is dropped (when the request is answered). A request larger than the
    /// whole budget takes all of it. `None` if the budget was closed.
    pub async fn acquire(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        // Within `max_bytes`, which fits a u32 (clamped in `new`).
        let weight = bytes.clamp(1, self.max_bytes) as u32;
        self.permits.clone().acquire_many_owned(weight).await.ok()
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

impl Default for ClientBytes {
    fn default() -> Self {
        ClientBytes::new(DEFAULT_MAX_CLIENT_BYTES_IN_FLIGHT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_waits_until_earlier_ones_are_answered() {
        let budget = ClientBytes::new(10);
        let first = budget.acquire(8).await.expect("open");
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), budget.acquire(4));
        assert!(
            waiting.await.is_err(),
            "4 more bytes do not fit in 10 with 8 held"
        );
        drop(first);
        let second = budget.acquire(4).await.expect("open");
        assert_eq!(budget.available(), 6);
        drop(second);
        let huge = budget.acquire(1 << 30).await.expect("open");
        assert_eq!(
            budget.available(),
            0,
            "a request past the budget takes all of it"
        );
        drop(huge);
        assert_eq!(budget.available(), 10);
    }
}
