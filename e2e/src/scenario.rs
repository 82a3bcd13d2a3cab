//! What every scenario shares: the timing DESIGN.md fixes, one scenario at a
//! time per test binary, and the final check with a readable failure.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::check::{verify, Verified};
use crate::cluster::Cluster;
use crate::load::Ack;
use crate::monitor::{split_brains, Observation};

/// The default election timeout's upper end (heartbeat 100 ms, election 500–1000 ms).
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1000);
/// A leader cut off from its majority must have stepped down by then: one
/// election timeout for check-quorum to notice, one more for ticks and a
/// loaded two-core machine.
pub const STEP_DOWN_BOUND: Duration = Duration::from_millis(2000);
/// Time allowed for a first leader after start (process start-up included).
pub const FIRST_LEADER_WAIT: Duration = Duration::from_secs(20);
/// Time allowed for a new leader after a fault.
pub const NEW_LEADER_WAIT: Duration = Duration::from_secs(10);
/// Time allowed for writes to be acknowledged again after a fault.
pub const PROGRESS_WAIT: Duration = Duration::from_secs(15);
/// Time allowed for all members to converge before the final check.
pub const CONVERGE_WAIT: Duration = Duration::from_secs(30);

/// Holds the one-scenario-at-a-time lock of this test binary: replicas of two
/// scenarios competing for two cores would blur elections and timings.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A scenario that failed poisoned it; the next one may still run.
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs [`verify`] and panics with every problem found; prints what was covered.
///
/// # Panics
/// When an acknowledged entry is missing or moved, or members disagree.
pub fn assert_verified(cluster: &Cluster, acks: &[Ack]) -> Verified {
    match verify(cluster, acks, CONVERGE_WAIT) {
        Ok(verified) => {
            eprintln!(
                "e2e: verified {} acknowledged entries; {} members agree through index {}",
                verified.acknowledged, verified.members, verified.commit_index
            );
            assert!(
                verified.acknowledged > 0,
                "the scenario acknowledged nothing, so it checked nothing"
            );
            verified
        }
        Err(problems) => panic!("the committed logs do not hold what was acknowledged: {problems}"),
    }
}

/// Panics when two members said they led in the same term.
///
/// # Panics
/// On a split brain, naming the term and the members.
pub fn assert_no_split_brain(observations: &[Observation]) {
    let splits = split_brains(observations);
    assert!(
        splits.is_empty(),
        "two leaders in one term (term, members): {splits:?}"
    );
    assert!(
        !observations.is_empty(),
        "the status monitor observed nothing, so it checked nothing"
    );
}

/// The p50 and the maximum of `samples` (sorted in place).
///
/// # Panics
/// When `samples` is empty.
pub fn p50_and_max(samples: &mut [Duration]) -> (Duration, Duration) {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}
