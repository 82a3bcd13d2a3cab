//! Group commit: many concurrent appenders share one write and one
//! fdatasync per batch, and each learns when its entries are durable.
//!
//! Shape: a queue and one flusher thread that owns all log writes. Submitters
//! push a request and return at once (safe from async code: the callback runs
//! on the flusher thread and must not block). While the flusher is inside
//! fdatasync, new requests pile up; the next round takes them all (up to
//! `max_batch_bytes`) and writes them with one write and one fdatasync. This
//! gives LevelDB's writer-queue batching without ever making a submitter,
//! which may be an async task, do the blocking flush itself.
//!
//! A full disk is not an error of the store: the flusher keeps the batch
//! that did not fit, reports [`GroupCommit::is_disk_full`], and writes it
//! again every [`DISK_FULL_RETRY`] until space is freed, so nothing queued
//! is lost and the owner can refuse new writes meanwhile.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;

use super::log::{FlushMode, Log};
use super::{Result, StoreError};
use crate::entry::{Entry, EntryKind, Index, Term};

/// How often a batch that met a full disk is written again.
pub const DISK_FULL_RETRY: Duration = Duration::from_millis(200);

/// Called once with the indices written, when they are durable (or written,
/// in [`FlushMode::PageCache`]), or with the error. Runs on the flusher
/// thread: hand the result off (a channel, a oneshot), do not block.
pub type SubmitCallback = Box<dyn FnOnce(Result<RangeInclusive<Index>>) + Send>;

/// Tuning of the group-commit front end.
#[derive(Clone, Copy, Debug)]
pub struct GroupCommitOptions {
    /// When a completion is reported. Default: [`FlushMode::Durable`].
    pub flush_mode: FlushMode,
    /// Most bytes of payload one batch writes (at least one request is taken).
    pub max_batch_bytes: u64,
    /// Most bytes of payload waiting in the queue; beyond it submits fail
    /// with [`StoreError::Busy`] rather than queue without bound.
    pub max_pending_bytes: u64,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        GroupCommitOptions {
            flush_mode: FlushMode::Durable,
            max_batch_bytes: 8 << 20,
            max_pending_bytes: 256 << 20,
        }
    }
}

/// Counters of what the flusher did, for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Batches written (each one write call, plus one per segment roll).
    pub batches: u64,
    /// Entries written.
    pub entries: u64,
    /// Bytes of payload written.
    pub payload_bytes: u64,
    /// fdatasync calls made.
    pub syncs: u64,
}

enum Work {
    /// Entries whose indices the caller assigned.
    Entries(Vec<Entry>),
    /// Payloads the flusher numbers from the log's end, in `term`.
    Payloads { term: Term, payloads: Vec<Bytes> },
}

enum Op {
    Append {
        work: Work,
        payload_bytes: u64,
        callback: SubmitCallback,
    },
    /// Cuts the log after everything queued before it is written.
    Truncate {
        cut: Cut,
        callback: Box<dyn FnOnce(Result<()>) + Send>,
    },
}

/// What a [`Op::Truncate`] removes.
enum Cut {
    /// Entries from this index on.
    Suffix(Index),
    /// Every entry; the log continues after (index, term).
    All(Index, Term),
}

struct Queue {
    ops: VecDeque<Op>,
    pending_bytes: u64,
    shutdown: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    batches: AtomicU64,
    entries: AtomicU64,
    payload_bytes: AtomicU64,
    syncs: AtomicU64,
    /// Set while a batch waits for disk space.
    disk_full: std::sync::atomic::AtomicBool,
}

/// The front end concurrent appenders share. Reads go to [`GroupCommit::log`]
/// directly from any thread.
pub struct GroupCommit {
    log: Arc<Log>,
    shared: Arc<Shared>,
    options: GroupCommitOptions,
    flusher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("log", &self.log)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts the flusher thread over `log`. From now on all appends and
    /// suffix truncations must go through this front end.
    pub fn start(log: Arc<Log>, options: GroupCommitOptions) -> Result<GroupCommit> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                ops: VecDeque::new(),
                pending_bytes: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            batches: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            payload_bytes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            disk_full: std::sync::atomic::AtomicBool::new(false),
        });
        let flusher = {
            let (flusher_log, flusher_shared) = (log.clone(), shared.clone());
            std::thread::Builder::new()
                .name("log-flusher".into())
                .spawn(move || run_flusher(&flusher_log, &flusher_shared, options))
                .map_err(|error| StoreError::io(log.dir(), error))?
        };
        Ok(GroupCommit {
            log,
            shared,
            options,
            flusher: Some(flusher),
        })
    }

    /// The log, for reads (and for `delete_below`, which does not race appends).
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Queues `entries` (indices set by the caller, continuing the log) and
    /// returns at once; `callback` runs when they are durable. When this
    /// returns an error the callback is dropped without being called.
    pub fn submit(&self, entries: Vec<Entry>, callback: SubmitCallback) -> Result<()> {
        let payload_bytes = entries.iter().map(|entry| entry.payload.len() as u64).sum();
        self.push(
            Op::Append {
                work: Work::Entries(entries),
                payload_bytes,
                callback,
            },
            true,
        )
    }

    /// Like [`GroupCommit::submit`], for a caller that already checked
    /// [`GroupCommit::would_refuse`] for these bytes (together with all it
    /// let in since): never refused as busy, so the caller, not the queue,
    /// keeps the bound and never has to undo entries it already accepted.
    pub fn submit_admitted(&self, entries: Vec<Entry>, callback: SubmitCallback) -> Result<()> {
        let payload_bytes = entries.iter().map(|entry| entry.payload.len() as u64).sum();
        self.push(
            Op::Append {
                work: Work::Entries(entries),
                payload_bytes,
                callback,
            },
            false,
        )
    }

    /// Queues `payloads` as normal entries of `term`; the flusher gives them
    /// the next indices in queue order, and `callback` gets the range.
    pub fn submit_payloads(
        &self,
        term: Term,
        payloads: Vec<Bytes>,
        callback: SubmitCallback,
    ) -> Result<()> {
        let payload_bytes = payloads.iter().map(|payload| payload.len() as u64).sum();
        self.push(
            Op::Append {
                work: Work::Payloads { term, payloads },
                payload_bytes,
                callback,
            },
            true,
        )
    }

    /// Appends `entries` and blocks until they are durable.
    pub fn append_durable(&self, entries: Vec<Entry>) -> Result<RangeInclusive<Index>> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.submit(entries, Box::new(move |result| drop(sender.send(result))))?;
        receiver.recv().map_err(|_| StoreError::Closed)?
    }

    /// Appends `payloads` in `term` and blocks until they are durable.
    pub fn append_payloads_durable(
        &self,
        term: Term,
        payloads: Vec<Bytes>,
    ) -> Result<RangeInclusive<Index>> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.submit_payloads(
            term,
            payloads,
            Box::new(move |result| drop(sender.send(result))),
        )?;
        receiver.recv().map_err(|_| StoreError::Closed)?
    }

    /// Removes entries from `from` on, after everything queued before it is
    /// written; blocks until done (durably).
    pub fn truncate_suffix(&self, from: Index) -> Result<()> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.push(
            Op::Truncate {
                cut: Cut::Suffix(from),
                callback: Box::new(move |result| drop(sender.send(result))),
            },
            false,
        )?;
        receiver.recv().map_err(|_| StoreError::Closed)?
    }

    /// Drops every entry and continues after (`prev_index`, `prev_term`)
    /// ([`Log::restart_after`]), after everything queued before it is
    /// written; blocks until done (durably).
    pub fn restart_after(&self, prev_index: Index, prev_term: Term) -> Result<()> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.push(
            Op::Truncate {
                cut: Cut::All(prev_index, prev_term),
                callback: Box::new(move |result| drop(sender.send(result))),
            },
            false,
        )?;
        receiver.recv().map_err(|_| StoreError::Closed)?
    }

    /// Payload bytes queued and not yet taken by the flusher.
    pub fn pending_bytes(&self) -> u64 {
        self.shared
            .queue
            .lock()
            .map_or(0, |queue| queue.pending_bytes)
    }

    /// Whether a submit of `payload_bytes` would be refused as busy now.
    pub fn would_refuse(&self, payload_bytes: u64) -> bool {
        let pending = self.pending_bytes();
        pending > 0 && pending + payload_bytes > self.options.max_pending_bytes
    }

    /// Whether the flusher is waiting for disk space (writes are stuck
    /// until it is freed; reads go on).
    pub fn is_disk_full(&self) -> bool {
        self.shared.disk_full.load(Ordering::Relaxed)
    }

    /// The options this front end runs with.
    pub fn options(&self) -> GroupCommitOptions {
        self.options
    }

    /// What the flusher has done so far.
    pub fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            batches: self.shared.batches.load(Ordering::Relaxed),
            entries: self.shared.entries.load(Ordering::Relaxed),
            payload_bytes: self.shared.payload_bytes.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
    }

    fn push(&self, op: Op, bounded: bool) -> Result<()> {
        let bytes = match &op {
            Op::Append { payload_bytes, .. } => *payload_bytes,
            Op::Truncate { .. } => 0,
        };
        let mut queue = self.shared.queue.lock().map_err(|_| StoreError::Closed)?;
        if queue.shutdown {
            return Err(StoreError::Closed);
        }
        if bounded
            && queue.pending_bytes > 0
            && queue.pending_bytes + bytes > self.options.max_pending_bytes
        {
            return Err(StoreError::Busy {
                pending_bytes: queue.pending_bytes,
            });
        }
        queue.pending_bytes += bytes;
        queue.ops.push_back(op);
        drop(queue);
        self.shared.wake.notify_one();
        Ok(())
    }
}

impl Drop for GroupCommit {
    /// Finishes what is queued, then stops the flusher.
    fn drop(&mut self) {
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.shutdown = true;
        }
        self.shared.wake.notify_all();
        if let Some(flusher) = self.flusher.take() {
            if flusher.join().is_err() {
                tracing::error!("the log flusher thread panicked");
            }
        }
    }
}

/// The flusher: takes batches off the queue until shut down and drained.
fn run_flusher(log: &Log, shared: &Shared, options: GroupCommitOptions) {
    loop {
        let batch = {
            let Ok(mut queue) = shared.queue.lock() else {
                return;
            };
            while queue.ops.is_empty() && !queue.shutdown {
                queue = match shared.wake.wait(queue) {
                    Ok(queue) => queue,
                    Err(_) => return,
                };
            }
            if queue.ops.is_empty() {
                break;
            }
            take_batch(&mut queue, options.max_batch_bytes)
        };
        process(log, shared, options.flush_mode, batch);
    }
    if options.flush_mode == FlushMode::PageCache && !log.is_failed() {
        if let Err(error) = log.sync() {
            tracing::error!(%error, "final sync of the log failed");
        }
    }
}

/// Takes ops from the front: appends up to `max_batch_bytes` (at least one),
/// or a single truncation.
fn take_batch(queue: &mut Queue, max_batch_bytes: u64) -> Vec<Op> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(op) = queue.ops.front() {
        let op_bytes = match op {
            Op::Truncate { .. } if batch.is_empty() => {
                batch.extend(queue.ops.pop_front());
                break;
            }
            Op::Truncate { .. } => break,
            Op::Append { payload_bytes, .. } => *payload_bytes,
        };
        if !batch.is_empty() && bytes + op_bytes > max_batch_bytes {
            break;
        }
        bytes += op_bytes;
        queue.pending_bytes -= op_bytes;
        batch.extend(queue.ops.pop_front());
    }
    batch
}

fn process(log: &Log, shared: &Shared, flush_mode: FlushMode, batch: Vec<Op>) {
    let mut entries: Vec<Entry> = Vec::new();
    let mut waiting: Vec<(RangeInclusive<Index>, SubmitCallback)> = Vec::new();
    let (mut next_index, mut last_term) = match (log.last_index(), log.last_term()) {
        (Ok(index), Ok(term)) => (index + 1, term),
        (Err(error), _) | (_, Err(error)) => {
            fail_all(batch, &error);
            return;
        }
    };
    for op in batch {
        match op {
            Op::Truncate { cut, callback } => {
                callback(match cut {
                    Cut::Suffix(from) => log.truncate_suffix(from),
                    Cut::All(prev_index, prev_term) => log.restart_after(prev_index, prev_term),
                });
                return;
            }
            Op::Append { work, callback, .. } => {
                let start = entries.len();
                let max_payload_bytes = log.max_payload_bytes();
                let too_large = match &work {
                    Work::Entries(list) => list
                        .iter()
                        .any(|entry| entry.payload.len() > max_payload_bytes),
                    Work::Payloads { payloads, .. } => payloads
                        .iter()
                        .any(|payload| payload.len() > max_payload_bytes),
                };
                let checked = match work {
                    _ if too_large => Err(StoreError::Invalid(format!(
                        "an entry is larger than the {max_payload_bytes} bytes a segment holds"
                    ))),
                    Work::Entries(list) => check_entries(&list, next_index, last_term).map(|()| {
                        entries.extend(list);
                    }),
                    Work::Payloads { term, payloads } => check_term(term, last_term).map(|()| {
                        entries.extend(payloads.into_iter().enumerate().map(
                            |(offset, payload)| Entry {
                                index: next_index + offset as u64,
                                term,
                                kind: EntryKind::Normal,
                                payload,
                            },
                        ));
                    }),
                };
                match checked {
                    Err(error) => complete(callback, Err(error)),
                    Ok(()) if entries.len() == start => complete(
                        callback,
                        Err(StoreError::Invalid(
                            "an append needs at least one entry".into(),
                        )),
                    ),
                    Ok(()) => {
                        let last = &entries[entries.len() - 1];
                        waiting.push((next_index..=last.index, callback));
                        next_index = last.index + 1;
                        last_term = last.term;
                    }
                }
            }
        }
    }
    if entries.is_empty() {
        return;
    }
    let mut result = append_waiting_for_space(log, shared, &entries);
    shared.batches.fetch_add(1, Ordering::Relaxed);
    if result.is_ok() && flush_mode == FlushMode::Durable {
        result = log.sync();
        shared.syncs.fetch_add(1, Ordering::Relaxed);
    }
    match result {
        Ok(()) => {
            shared
                .entries
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            let bytes: u64 = entries.iter().map(|entry| entry.payload.len() as u64).sum();
            shared.payload_bytes.fetch_add(bytes, Ordering::Relaxed);
            for (range, callback) in waiting {
                complete(callback, Ok(range));
            }
        }
        Err(error) => {
            for (_, callback) in waiting {
                complete(callback, Err(duplicate(&error)));
            }
        }
    }
}

/// Appends `entries`; on a full disk, waits and writes what is still
/// missing again until it fits or the front end shuts down.
fn append_waiting_for_space(log: &Log, shared: &Shared, entries: &[Entry]) -> Result<()> {
    let mut result = log.append(entries);
    while let Err(StoreError::NoSpace { path }) = &result {
        if !shared.disk_full.swap(true, Ordering::Relaxed) {
            tracing::error!(path = %path.display(), "the disk is full; writes wait until space is freed");
        }
        if !wait_for_retry(shared) {
            break;
        }
        // An append crossing a segment boundary may have written its first
        // part; write only what is still missing.
        result = log.last_index().and_then(|last_index| {
            let missing = entries.partition_point(|entry| entry.index <= last_index);
            log.append(&entries[missing..])
        });
    }
    if result.is_ok() && shared.disk_full.swap(false, Ordering::Relaxed) {
        tracing::info!("disk space is back; writes resume");
    }
    result
}

/// Sleeps [`DISK_FULL_RETRY`]; false when the front end is shutting down.
fn wait_for_retry(shared: &Shared) -> bool {
    let Ok(queue) = shared.queue.lock() else {
        return false;
    };
    if queue.shutdown {
        return false;
    }
    match shared.wake.wait_timeout(queue, DISK_FULL_RETRY) {
        Ok((queue, _)) => !queue.shutdown,
        Err(_) => false,
    }
}

/// Runs a submitter's callback; a panic in it is logged and contained, so
/// one bad callback cannot stop the flusher and strand every other waiter.
fn complete(callback: SubmitCallback, result: Result<RangeInclusive<Index>>) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || callback(result)));
    if outcome.is_err() {
        tracing::error!("a group-commit completion callback panicked");
    }
}

fn check_entries(entries: &[Entry], mut expected: Index, mut last_term: Term) -> Result<()> {
    for entry in entries {
        if entry.index != expected {
            return Err(StoreError::NotContiguous {
                got: entry.index,
                expected,
            });
        }
        check_term(entry.term, last_term)?;
        expected += 1;
        last_term = entry.term;
    }
    Ok(())
}

fn check_term(term: Term, last_term: Term) -> Result<()> {
    if term < last_term {
        return Err(StoreError::TermRegression {
            got: term,
            last_term,
        });
    }
    Ok(())
}

fn fail_all(batch: Vec<Op>, error: &StoreError) {
    for op in batch {
        match op {
            Op::Append { callback, .. } => complete(callback, Err(duplicate(error))),
            Op::Truncate { callback, .. } => callback(Err(duplicate(error))),
        }
    }
}

/// The same error for another waiter (`io::Error` is not `Clone`).
fn duplicate(error: &StoreError) -> StoreError {
    match error {
        StoreError::Io { path, source } => StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        StoreError::NoSpace { path } => StoreError::NoSpace { path: path.clone() },
        StoreError::Corrupt {
            path,
            offset,
            reason,
        } => StoreError::Corrupt {
            path: path.clone(),
            offset: *offset,
            reason: reason.clone(),
        },
        StoreError::Failed { cause } => StoreError::Failed {
            cause: cause.clone(),
        },
        StoreError::Compacted { index, first_index } => StoreError::Compacted {
            index: *index,
            first_index: *first_index,
        },
        StoreError::Unavailable { index, last_index } => StoreError::Unavailable {
            index: *index,
            last_index: *last_index,
        },
        StoreError::NotContiguous { got, expected } => StoreError::NotContiguous {
            got: *got,
            expected: *expected,
        },
        StoreError::TermRegression { got, last_term } => StoreError::TermRegression {
            got: *got,
            last_term: *last_term,
        },
        StoreError::Invalid(reason) => StoreError::Invalid(reason.clone()),
        StoreError::Busy { pending_bytes } => StoreError::Busy {
            pending_bytes: *pending_bytes,
        },
        StoreError::Closed => StoreError::Closed,
    }
}
