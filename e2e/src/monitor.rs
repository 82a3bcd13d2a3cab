//! Watches every member's `/status` from beside the test and records what
//! each said, to check afterwards that no two members ever led in one term.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster::Endpoint;
use crate::error::Result;
use crate::http::Client;
use crate::netns::enter;

/// How often each member is asked.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Time limit of one status request (a stopped process never answers).
const STATUS_TIMEOUT: Duration = Duration::from_millis(300);
/// Monitors stop by themselves after this long.
const MONITOR_DURATION_MAX: Duration = Duration::from_secs(180);

/// What one member said at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The member asked.
    pub member: String,
    /// When it answered.
    pub at: Instant,
    /// Its role.
    pub role: String,
    /// Its term.
    pub term: u64,
    /// Its commit index.
    pub commit_index: u64,
    /// Its last index.
    pub last_index: u64,
}

/// A running status monitor.
#[derive(Debug)]
pub struct Monitor {
    stop: Arc<AtomicBool>,
    observations: Arc<Mutex<Vec<Observation>>>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl Monitor {
    /// Starts one polling thread per endpoint (inside its namespace, if any).
    pub fn start(endpoints: Vec<Endpoint>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let observations = Arc::new(Mutex::new(Vec::new()));
        let threads = endpoints
            .into_iter()
            .map(|endpoint| {
                let stop = Arc::clone(&stop);
                let observations = Arc::clone(&observations);
                std::thread::spawn(move || poll(&endpoint, &stop, &observations))
            })
            .collect();
        Self {
            stop,
            observations,
            threads,
        }
    }

    /// A copy of what was observed so far, in arrival order.
    pub fn observations(&self) -> Vec<Observation> {
        self.observations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops polling and returns everything observed.
    ///
    /// # Errors
    /// When a polling thread could not enter its namespace.
    ///
    /// # Panics
    /// When a polling thread panicked (passed on).
    pub fn stop(mut self) -> Result<Vec<Observation>> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(result) => result?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(self.observations())
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn poll(
    endpoint: &Endpoint,
    stop: &AtomicBool,
    observations: &Mutex<Vec<Observation>>,
) -> Result<()> {
    if let Some(namespace) = &endpoint.namespace {
        enter(namespace)?;
    }
    let client = Client::new(endpoint.http_address, STATUS_TIMEOUT);
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) && started.elapsed() < MONITOR_DURATION_MAX {
        if let Ok(status) = client.status() {
            observations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Observation {
                    member: endpoint.id.clone(),
                    at: Instant::now(),
                    role: status.role,
                    term: status.term,
                    commit_index: status.commit_index,
                    last_index: status.last_index,
                });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(())
}

/// Terms in which more than one member said it was leader, with those members.
pub fn split_brains(observations: &[Observation]) -> Vec<(u64, Vec<String>)> {
    let mut leaders: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for observation in observations.iter().filter(|o| o.role == "leader") {
        let members = leaders.entry(observation.term).or_default();
        if !members.contains(&observation.member) {
            members.push(observation.member.clone());
        }
    }
    leaders
        .into_iter()
        .filter(|(_, members)| members.len() > 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(member: &str, role: &str, term: u64) -> Observation {
        Observation {
            member: member.to_owned(),
            at: Instant::now(),
            role: role.to_owned(),
            term,
            commit_index: 0,
            last_index: 0,
        }
    }

    #[test]
    fn two_leaders_in_one_term_are_reported() {
        let fine = [
            seen("a", "leader", 1),
            seen("b", "leader", 2),
            seen("a", "follower", 2),
        ];
        assert!(split_brains(&fine).is_empty());
        let split = [
            seen("a", "leader", 3),
            seen("b", "leader", 3),
            seen("a", "leader", 3),
        ];
        assert_eq!(
            split_brains(&split),
            vec![(3, vec!["a".to_owned(), "b".to_owned()])]
        );
    }
}
