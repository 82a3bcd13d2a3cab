//! The spare: a file of `segment_bytes` zeros, written and synced by a
//! background thread ahead of time, that the log turns into its next segment
//! at a roll.
//!
//! Why: appends into a file that grows make every fdatasync write the inode
//! too (size, extents); over a range already written and synced, fdatasync
//! has only the data to write (on ext4 ~150 µs instead of ~245 µs with three
//! writers, bench/profile.md). Zeroing 64 MiB takes far too long to do at
//! roll time on the flusher thread, hence the thread.
//!
//! The spare lives under a `.tmp` name, which opening deletes and every
//! reader of the directory ignores, so a crash never makes it a segment. If
//! no spare is ready at a roll (the first segment, a slow or full disk), the
//! log makes a growing segment as before.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::space;
use super::vfs::{Vfs, VfsFile};

/// The spare's name in the log directory.
pub(crate) const SPARE_FILE_NAME: &str = "spare-segment.tmp";

/// Bytes written per call while zeroing, and the most of them in flight to
/// the disk at a time: an fdatasync of the active segment queues behind at
/// most this much of the spare's I/O.
const ZERO_CHUNK_BYTES: usize = 256 << 10;

/// How long to wait before trying again after a spare could not be made
/// (full disk, I/O error): the log keeps working with growing segments.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// A spare is made only with at least this many segments' worth of room
/// left, so that it never takes the last free space the appends need.
const FREE_SEGMENTS_NEEDED: u64 = 2;

enum State {
    /// No spare, none asked for (or the last attempt failed: not before `retry_at`).
    Idle { retry_at: Option<Instant> },
    /// The thread should make one.
    Wanted,
    /// The thread is making one.
    Preparing,
    /// Ready to become the next segment.
    Ready(Arc<dyn VfsFile>),
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
    failures: AtomicU64,
}

/// The spare of one log and the thread that makes it.
pub(crate) struct Spare {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Spare {
    /// Starts the thread. Nothing is written until [`Spare::want`].
    pub fn start(dir: &Path, vfs: Arc<dyn Vfs>, segment_bytes: u64) -> Spare {
        let path = dir.join(SPARE_FILE_NAME);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Idle { retry_at: None }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        });
        let thread = {
            let (dir, path, shared) = (dir.to_owned(), path.clone(), shared.clone());
            std::thread::Builder::new()
                .name("log-spare".into())
                .spawn(move || run(&dir, &path, vfs.as_ref(), segment_bytes, &shared))
        };
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "cannot start the spare-segment thread; segments will grow as they are written");
                None
            }
        };
        Spare {
            path,
            shared,
            thread,
        }
    }

    /// Where the spare is made.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks for a spare if there is none and none is being made.
    pub fn want(&self) {
        let mut state = lock(&self.shared);
        if let State::Idle { retry_at } = &*state {
            if retry_at.is_none_or(|at| Instant::now() >= at) {
                *state = State::Wanted;
                self.shared.wake.notify_one();
            }
        }
    }

    /// The ready spare, if there is one (zeroed, synced, `segment_bytes` long).
    pub fn take(&self) -> Option<Arc<dyn VfsFile>> {
        let mut state = lock(&self.shared);
        if !matches!(&*state, State::Ready(_)) {
            return None;
        }
        match std::mem::replace(&mut *state, State::Idle { retry_at: None }) {
            State::Ready(file) => Some(file),
            _ => None,
        }
    }

    /// Whether a spare is ready for the next roll.
    pub fn is_ready(&self) -> bool {
        matches!(&*lock(&self.shared), State::Ready(_))
    }

    /// How many spares could not be made.
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::SeqCst)
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            // Under the lock, so the thread cannot miss the wake-up between
            // checking `stop` and waiting.
            let _state = lock(&self.shared);
            self.shared.wake.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The state even if a thread panicked holding the lock (it is a plain enum,
/// never left half-updated).
fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run(dir: &Path, path: &Path, vfs: &dyn Vfs, segment_bytes: u64, shared: &Shared) {
    // Said once per stretch of trouble, not at every retry: a disk that stays
    // nearly full would otherwise log a warning every RETRY_AFTER.
    let mut said = false;
    loop {
        {
            let mut state = lock(shared);
            while !shared.stop.load(Ordering::SeqCst) && !matches!(&*state, State::Wanted) {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            *state = State::Preparing;
        }
        let result = prepare(dir, path, vfs, segment_bytes, &shared.stop);
        let mut state = lock(shared);
        match result {
            Ok(Some(file)) => {
                said = false;
                *state = State::Ready(file);
            }
            // Too little room for a spare: not a failure, the log grows its
            // segments until space is freed.
            Ok(None) => {
                if !said {
                    tracing::info!(dir = %dir.display(), "too little free space to pre-write the next segment; segments grow as they are written until space is freed");
                    said = true;
                }
                *state = State::Idle {
                    retry_at: Some(Instant::now() + RETRY_AFTER),
                };
            }
            Err(error) => {
                let _ = vfs.remove_file(path);
                if !shared.stop.load(Ordering::SeqCst) {
                    shared.failures.fetch_add(1, Ordering::SeqCst);
                    if !said {
                        tracing::warn!(file = %path.display(), %error, "cannot pre-write the next segment; it will grow as it is written");
                        said = true;
                    }
                }
                *state = State::Idle {
                    retry_at: Some(Instant::now() + RETRY_AFTER),
                };
            }
        }
    }
    // Not left behind to take space: opening would delete it anyway.
    let mut state = lock(shared);
    if matches!(&*state, State::Ready(_)) {
        *state = State::Idle { retry_at: None };
        let _ = vfs.remove_file(path);
    }
}

/// Writes `segment_bytes` zeros to the spare's file and syncs them; `None`
/// when the disk has too little room left for one.
fn prepare(
    dir: &Path,
    path: &Path,
    vfs: &dyn Vfs,
    segment_bytes: u64,
    stop: &AtomicBool,
) -> io::Result<Option<Arc<dyn VfsFile>>> {
    let free_bytes = space::free_bytes(dir).map_err(io::Error::other)?;
    if free_bytes < FREE_SEGMENTS_NEEDED.saturating_mul(segment_bytes) {
        return Ok(None);
    }
    let file = vfs.open(path, true)?;
    file.set_len(0)?;
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut offset = 0;
    while offset < segment_bytes {
        if stop.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "log closed"));
        }
        let count = (segment_bytes - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..count], offset)?;
        // Written back chunk by chunk, waiting for each, rather than in one
        // burst of the whole segment (at writeback or the final sync) that
        // the active segment's fdatasyncs would queue behind.
        if let Err(error) = file.write_back(offset, count as u64) {
            tracing::debug!(%error, "writing back the spare failed; its sync will write it");
        }
        offset += count as u64;
    }
    file.sync_data()?;
    Ok(Some(file))
}
