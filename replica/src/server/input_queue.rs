//! The raft loop's input queue, bounded in items and payload bytes.
//!
//! One channel carries everything the loop is fed. Inputs from outside
//! (client proposals and reads, peer messages) are *offered*: refused when
//! the loop is too far behind, so a flood of requests is answered "busy"
//! at once instead of queueing without bound. Inputs from inside (storage
//! completions, shutdown, transfers asked by the operator) are always
//! taken: they are few, and losing one would stall the loop.
//!
//! Peer messages get twice the room of client inputs, so client load alone
//! never crowds out the heartbeats and votes that keep the group together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use crate::core::MessageBody;

use super::raft_loop::Input;

/// Bounds of the queue for client inputs; peer messages get twice these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputLimits {
    /// Inputs queued at most.
    pub max_items: u64,
    /// Payload bytes queued at most (one input is always let in when the
    /// queue holds no bytes, however large).
    pub max_bytes: u64,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_items: 8192,
            max_bytes: 64 << 20,
        }
    }
}

/// Why an offered input was not queued; it comes back to be answered.
pub enum Refused {
    /// The queue is full: answer "busy, retry".
    Full(Input),
    /// The loop has stopped.
    Closed(Input),
}

#[derive(Debug, Default)]
struct Counts {
    items: AtomicU64,
    bytes: AtomicU64,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct InputSender {
    sender: Sender<Input>,
    counts: Arc<Counts>,
    limits: InputLimits,
}

/// The loop's receiving side.
pub struct InputReceiver {
    receiver: Receiver<Input>,
    counts: Arc<Counts>,
}

/// A queue with `limits`.
pub fn input_queue(limits: InputLimits) -> (InputSender, InputReceiver) {
    let (sender, receiver) = std::sync::mpsc::channel();
    let counts = Arc::new(Counts::default());
    (
        InputSender {
            sender,
            counts: counts.clone(),
            limits,
        },
        InputReceiver { receiver, counts },
    )
}

/// Payload bytes an input carries, and whether it is a peer message.
fn weigh(input: &Input) -> (u64, bool) {
    match input {
        Input::Propose { payloads, .. } => (payloads.iter().map(|p| p.len() as u64).sum(), false),
        Input::Peer(message) => match &message.body {
            MessageBody::Append { entries, .. } => (
                entries.iter().map(|entry| entry.payload.len() as u64).sum(),
                true,
            ),
            _ => (0, true),
        },
        _ => (0, false),
    }
}

impl InputSender {
    /// Queues an input from outside unless the queue is over its bounds.
    pub fn offer(&self, input: Input) -> Result<(), Refused> {
        let (bytes, is_peer) = weigh(&input);
        let scale = if is_peer { 2 } else { 1 };
        let items = self.counts.items.load(Ordering::Relaxed);
        let queued_bytes = self.counts.bytes.load(Ordering::Relaxed);
        if items >= self.limits.max_items * scale
            || (queued_bytes > 0 && queued_bytes + bytes > self.limits.max_bytes * scale)
        {
            return Err(Refused::Full(input));
        }
        self.send(input).map_err(Refused::Closed)
    }

    /// Queues an input from inside the server, whatever the queue holds.
    pub fn send(&self, input: Input) -> Result<(), Input> {
        let (bytes, _) = weigh(&input);
        self.counts.items.fetch_add(1, Ordering::Relaxed);
        self.counts.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.sender.send(input).map_err(|error| {
            self.counts.items.fetch_sub(1, Ordering::Relaxed);
            self.counts.bytes.fetch_sub(bytes, Ordering::Relaxed);
            error.0
        })
    }
}

impl InputReceiver {
    /// The next input, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Input, RecvTimeoutError> {
        self.receiver
            .recv_timeout(timeout)
            .map(|input| self.took(input))
    }

    /// The next input if one is queued.
    pub fn try_recv(&self) -> Result<Input, TryRecvError> {
        self.receiver.try_recv().map(|input| self.took(input))
    }

    fn took(&self, input: Input) -> Input {
        let (bytes, _) = weigh(&input);
        self.counts.items.fetch_sub(1, Ordering::Relaxed);
        self.counts.bytes.fetch_sub(bytes, Ordering::Relaxed);
        input
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn proposal(bytes: usize) -> Input {
        Input::Propose {
            payloads: vec![Bytes::from(vec![0u8; bytes])],
            reply: Box::new(|_| {}),
        }
    }

    #[test]
    fn offers_are_refused_past_the_bounds_and_inside_inputs_are_not() {
        let (sender, receiver) = input_queue(InputLimits {
            max_items: 3,
            max_bytes: 100,
        });
        assert!(sender.offer(proposal(60)).is_ok());
        assert!(matches!(sender.offer(proposal(60)), Err(Refused::Full(_))));
        assert!(sender.offer(proposal(40)).is_ok());
        assert!(sender.offer(proposal(0)).is_ok());
        assert!(matches!(sender.offer(proposal(0)), Err(Refused::Full(_))));
        assert!(
            sender.send(Input::Shutdown).is_ok(),
            "inside inputs always go"
        );
        for _ in 0..4 {
            assert!(receiver.try_recv().is_ok());
        }
        assert!(sender.offer(proposal(100)).is_ok(), "room again once taken");
        assert!(receiver.try_recv().is_ok());
        assert!(receiver.try_recv().is_err());
        drop(receiver);
        assert!(matches!(sender.offer(proposal(1)), Err(Refused::Closed(_))));
    }
}
