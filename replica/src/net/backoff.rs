//! Capped exponential back-off with jitter, for reconnecting and retrying.
//!
//! Pure and seeded, so its schedule is tested without clocks.

/// Delays that double from an initial value up to a cap, each drawn
/// uniformly from the upper half of the current step ("equal jitter") so
/// members that lost a peer together do not reconnect in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    step_ms: u64,
    rng_state: u64,
}

impl Backoff {
    /// A back-off from `initial_ms` to `max_ms`, jitter drawn from `seed`.
    ///
    /// # Panics
    /// If `initial_ms` is zero or larger than `max_ms` (a configuration bug
    /// the callers validate first).
    pub fn new(initial_ms: u64, max_ms: u64, seed: u64) -> Backoff {
        assert!(initial_ms > 0, "back-off must start above zero");
        assert!(
            initial_ms <= max_ms,
            "back-off initial {initial_ms} ms above its cap {max_ms} ms"
        );
        Backoff {
            initial_ms,
            max_ms,
            step_ms: initial_ms,
            // xorshift must not start at zero.
            rng_state: seed | 1,
        }
    }

    /// The next delay, in milliseconds; doubles the step for the one after.
    pub fn next_delay_ms(&mut self) -> u64 {
        let half = self.step_ms / 2;
        let delay_ms = half + self.next_random() % (self.step_ms - half + 1);
        assert!(
            delay_ms <= self.max_ms,
            "delay {delay_ms} ms above the cap {} ms",
            self.max_ms
        );
        self.step_ms = self.step_ms.saturating_mul(2).min(self.max_ms);
        delay_ms
    }

    /// Back to the initial step, after a success.
    pub fn reset(&mut self) {
        self.step_ms = self.initial_ms;
    }

    /// The step the next delay is drawn under, in milliseconds.
    pub fn step_ms(&self) -> u64 {
        self.step_ms
    }

    fn next_random(&mut self) -> u64 {
        self.rng_state ^= self.rng_state << 13;
        self.rng_state ^= self.rng_state >> 7;
        self.rng_state ^= self.rng_state << 17;
        self.rng_state
    }
}

/// A seed that differs between processes and calls, for jitter only.
pub fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_up_to_the_cap() {
        for seed in 0..200 {
            let mut backoff = Backoff::new(100, 1000, seed);
            let steps = [100, 200, 400, 800, 1000, 1000, 1000];
            for step in steps {
                assert_eq!(backoff.step_ms(), step);
                let delay = backoff.next_delay_ms();
                assert!(
                    (step / 2..=step).contains(&delay),
                    "seed {seed}: {delay} not in the upper half of {step}"
                );
            }
            backoff.reset();
            assert!(backoff.next_delay_ms() <= 100);
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let delays: std::collections::HashSet<u64> = (0..50)
            .map(|seed| Backoff::new(1000, 1000, seed).next_delay_ms())
            .collect();
        assert!(delays.len() > 10, "only {} distinct delays", delays.len());
    }

    #[test]
    fn tiny_steps_do_not_overflow_or_stall() {
        let mut backoff = Backoff::new(1, u64::MAX, 7);
        for _ in 0..100 {
            backoff.next_delay_ms();
        }
        assert_eq!(backoff.step_ms(), u64::MAX);
    }
}
