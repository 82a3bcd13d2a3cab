//! Continuous writers: each appends unique payloads one after another and
//! records every acknowledgement (index, term, payload, when). A write that
//! fails or times out is never retried with the same payload, so each payload
//! can legitimately appear at most once in the log.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::http::{AppendOutcome, Client};
use crate::netns::enter;
use crate::wait::wait_until;

/// Writers stop by themselves after this long, whatever the test does.
pub const LOAD_DURATION_MAX: Duration = Duration::from_secs(180);
/// Default time limit of one append.
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause after a failed append before trying the next target.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// One acknowledged append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The label of the load it belongs to (writers are numbered per load).
    pub label: String,
    /// Which writer of that load sent it.
    pub writer: usize,
    /// Its place in that writer's sequence (acknowledged or not).
    pub sequence: u64,
    /// The index the server acknowledged.
    pub index: u64,
    /// The term the server acknowledged.
    pub term: u64,
    /// The bytes sent.
    pub payload: Vec<u8>,
    /// The HTTP address that acknowledged.
    pub leader: String,
    /// When the acknowledgement arrived.
    pub at: Instant,
}

/// What a load should do.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Distinguishes payloads of several loads in one test.
    pub label: String,
    /// Number of writer threads.
    pub writers: usize,
    /// HTTP addresses to write to; a writer moves to the next after a failure
    /// (and follows `307`s to the leader).
    pub targets: Vec<SocketAddr>,
    /// Network namespace the writers run in (`None`: this one).
    pub namespace: Option<String>,
    /// Pause between two appends of one writer.
    pub pause: Duration,
    /// Time limit of one append; the write then counts as failed (it may
    /// still be committed later, it is just not acknowledged).
    pub append_timeout: Duration,
    /// Each payload padded to this many bytes (0: just its unique label).
    pub payload_bytes: usize,
}

impl LoadConfig {
    /// `writers` writers over `targets`, no pause, in this namespace.
    pub fn new(label: &str, writers: usize, targets: Vec<SocketAddr>) -> Self {
        Self {
            label: label.to_owned(),
            writers,
            targets,
            namespace: None,
            pause: Duration::ZERO,
            append_timeout: APPEND_TIMEOUT,
            payload_bytes: 0,
        }
    }

    /// The same, each payload padded to `bytes` (large entries).
    pub fn with_payload_bytes(mut self, bytes: usize) -> Self {
        self.payload_bytes = bytes;
        self
    }

    /// The same, giving up on each append after `timeout`.
    pub fn with_append_timeout(mut self, timeout: Duration) -> Self {
        self.append_timeout = timeout;
        self
    }

    /// The same, with writers inside namespace `namespace`.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }
}

/// Counters of a running load.
#[derive(Debug, Default)]
pub struct Counters {
    /// Appends sent.
    pub attempts: AtomicU64,
    /// `503` answers.
    pub no_leader: AtomicU64,
    /// Errors, timeouts and unexpected answers.
    pub failed: AtomicU64,
}

/// A running load; [`Load::stop`] ends it and returns every acknowledgement.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl Load {
    /// Starts the writers.
    ///
    /// # Panics
    /// When `config` has no writers or no targets (a broken test).
    pub fn start(config: &LoadConfig) -> Self {
        assert!(config.writers > 0, "a load needs writers");
        assert!(!config.targets.is_empty(), "a load needs targets");
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(Counters::default());
        let threads = (0..config.writers)
            .map(|writer| {
                let config = config.clone();
                let stop = Arc::clone(&stop);
                let acks = Arc::clone(&acks);
                let counters = Arc::clone(&counters);
                std::thread::spawn(move || write_loop(writer, &config, &stop, &acks, &counters))
            })
            .collect();
        Self {
            stop,
            acks,
            counters,
            threads,
        }
    }

    /// A copy of the acknowledgements so far.
    pub fn acks(&self) -> Vec<Ack> {
        lock(&self.acks).clone()
    }

    /// The number of acknowledgements so far.
    pub fn ack_count(&self) -> usize {
        lock(&self.acks).len()
    }

    /// The live counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Waits for the first acknowledgement matching `wanted`, and returns it.
    ///
    /// # Errors
    /// [`crate::Error::Timeout`] when none comes within `timeout`.
    pub fn wait_for_ack(&self, timeout: Duration, wanted: impl Fn(&Ack) -> bool) -> Result<Ack> {
        wait_until("a matching acknowledgement", timeout, || {
            lock(&self.acks).iter().find(|ack| wanted(ack)).cloned()
        })
    }

    /// Waits until `count` more acknowledgements than now have arrived.
    ///
    /// # Errors
    /// [`crate::Error::Timeout`] when they do not come within `timeout`.
    pub fn wait_for_more(&self, count: usize, timeout: Duration) -> Result<()> {
        let target = self.ack_count() + count;
        wait_until(&format!("{count} more acknowledgements"), timeout, || {
            (self.ack_count() >= target).then_some(())
        })
    }

    /// Stops the writers, waits for them, and returns every acknowledgement.
    ///
    /// # Errors
    /// When a writer could not enter its namespace.
    ///
    /// # Panics
    /// When a writer thread panicked (passed on).
    pub fn stop(mut self) -> Result<Vec<Ack>> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(result) => result?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(self.acks())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // A test that panicked mid-load must not leave writers running.
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn write_loop(
    writer: usize,
    config: &LoadConfig,
    stop: &AtomicBool,
    acks: &Mutex<Vec<Ack>>,
    counters: &Counters,
) -> Result<()> {
    if let Some(namespace) = &config.namespace {
        enter(namespace)?;
    }
    let clients: Vec<Client> = config
        .targets
        .iter()
        .map(|target| Client::new(*target, config.append_timeout))
        .collect();
    let started = Instant::now();
    let mut target = writer % clients.len();
    let mut sequence = 0_u64;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < LOAD_DURATION_MAX {
        let mut payload = format!("{}-w{writer}-{sequence}", config.label).into_bytes();
        // Padding that differs per payload, so a mixed-up body is caught.
        let fill = (payload.len()..config.payload_bytes).map(|at| (at as u64 ^ sequence) as u8);
        payload.extend(fill);
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        match clients[target].append(&payload) {
            AppendOutcome::Acknowledged {
                index,
                term,
                leader,
            } => {
                lock(acks).push(Ack {
                    label: config.label.clone(),
                    writer,
                    sequence,
                    index,
                    term,
                    payload,
                    leader,
                    at: Instant::now(),
                });
                if !config.pause.is_zero() {
                    std::thread::sleep(config.pause);
                }
            }
            AppendOutcome::NoLeader(_) => {
                counters.no_leader.fetch_add(1, Ordering::Relaxed);
                target = (target + 1) % clients.len();
                std::thread::sleep(RETRY_PAUSE);
            }
            AppendOutcome::Failed(_) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                target = (target + 1) % clients.len();
                std::thread::sleep(RETRY_PAUSE);
            }
        }
        sequence += 1;
    }
    Ok(())
}

fn lock(acks: &Mutex<Vec<Ack>>) -> MutexGuard<'_, Vec<Ack>> {
    // A writer that panicked holding the lock left a valid Vec: keep reading it.
    acks.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Acknowledgements from `acks` that arrived after `since` in a term above `term`.
pub fn acks_after(acks: &[Ack], since: Instant, term: u64) -> impl Iterator<Item = &Ack> {
    acks.iter()
        .filter(move |ack| ack.at >= since && ack.term > term)
}
