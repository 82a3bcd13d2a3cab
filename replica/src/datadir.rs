//! Claiming a data directory for one `serve` process: the directory is
//! created if missing, refused if it is not a directory, and held with an
//! exclusive `flock` on `<data-dir>/LOCK` for as long as the process runs.
//!
//! Two replicas writing one log would corrupt it; the lock makes the second
//! one refuse at start and name the holder's PID (written into `LOCK`). The
//! kernel drops the lock when the holder exits, however it exits, so a
//! stale `LOCK` file after a crash never blocks a restart.
//!
//! The consumer checkpoint (`<data-dir>/consumer-offsets`, format in
//! [`crate::consumers::checkpoint`]) is saved and loaded here too: replaced
//! atomically as the hard state is (temporary file, fsync, rename, fsync of
//! the directory), and any damage is an error naming the file.

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::consumers::ConsumerState;
use crate::store::vfs::{write_atomically, RealVfs};
use crate::store::StoreError;

/// The lock file's name inside the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The consumer checkpoint's name inside the data directory.
pub const CONSUMER_CHECKPOINT_FILE_NAME: &str = "consumer-offsets";

/// The consumer checkpoint of the data directory `data_dir`.
pub fn consumer_checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CONSUMER_CHECKPOINT_FILE_NAME)
}

/// Replaces the checkpoint at `path` with `bytes` (from
/// [`ConsumerState::encode_checkpoint`]) durably: a crash leaves the old
/// checkpoint or the new one, whole. Returns once it is on disk.
pub fn save_consumer_checkpoint(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomically(&RealVfs, path, bytes).map_err(|error| StoreError::io(path, error))
}

/// The state saved at `path`, or `None` when there is no checkpoint. A
/// damaged one is [`StoreError::Corrupt`] naming the file and the offset,
/// never an empty state: serving offsets from nothing would move every
/// consumer back.
pub fn load_consumer_checkpoint(path: &Path) -> Result<Option<ConsumerState>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StoreError::io(path, error)),
    };
    ConsumerState::decode_checkpoint(&bytes)
        .map(Some)
        .map_err(|defect| {
            StoreError::corrupt(
                path,
                defect.offset,
                format!("consumer checkpoint: {}", defect.reason),
            )
        })
}

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The path exists and is a file (or anything but a directory).
    #[error("data directory {dir}: not a directory")]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// Another process holds the lock.
    #[error(
        "data directory {dir} is in use by another process{holder} (lock {lock}); \
         stop it first, or give this replica its own --data-dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// ", PID n" when the holder wrote its PID, else empty.
        holder: String,
    },
    /// Creating, opening or locking failed.
    #[error("data directory {dir}: {action}: {source}")]
    Io {
        /// The path.
        dir: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or exiting) releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    // Kept open: the flock lives as long as this descriptor.
    _file: File,
}

/// Creates `dir` if needed and takes its exclusive lock, writing our PID.
pub fn claim(dir: &Path) -> Result<DataDirLock, DataDirError> {
    let io = |action: &'static str| {
        let dir = dir.to_path_buf();
        move |source| DataDirError::Io {
            dir,
            action,
            source,
        }
    };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(DataDirError::NotADirectory {
                dir: dir.to_path_buf(),
            })
        }
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io("creating it"))?;
        }
        Err(err) => return Err(io("reading it")(err)),
    }
    let lock = dir.join(LOCK_FILE_NAME);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(io("opening LOCK"))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io("locking LOCK")(err));
        }
        let mut text = String::new();
        let holder = match file.read_to_string(&mut text) {
            Ok(_) if !text.trim().is_empty() => format!(", PID {}", text.trim()),
            _ => String::new(),
        };
        return Err(DataDirError::Locked {
            dir: dir.to_path_buf(),
            lock,
            holder,
        });
    }
    // One fixed-width write over the old PID, never a truncation first, so
    // a reader never sees an empty or half-written file.
    let pid = format!("{:<20}\n", std::process::id());
    file.write_all_at(pid.as_bytes(), 0)
        .map_err(io("writing LOCK"))?;
    file.set_len(pid.len() as u64).map_err(io("writing LOCK"))?;
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_with_the_holders_pid_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = claim(&data).unwrap();
        assert!(data.is_dir());
        let err = claim(&data).unwrap_err().to_string();
        let pid = format!("PID {}", std::process::id());
        assert!(err.contains(&pid) && err.contains("in use"), "{err}");
        drop(held);
        assert!(claim(&data).is_ok());
    }

    #[test]
    fn a_checkpoint_is_saved_whole_and_damage_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = consumer_checkpoint_path(dir.path());
        assert_eq!(load_consumer_checkpoint(&path).unwrap(), None);
        let mut state = ConsumerState::default();
        state.skip_to(41);
        let bytes = state.encode_checkpoint(41);
        save_consumer_checkpoint(&path, &bytes).unwrap();
        assert_eq!(load_consumer_checkpoint(&path).unwrap(), Some(state));
        assert!(!dir.path().join("consumer-offsets.tmp").exists());

        let mut damaged = bytes.clone();
        damaged[12] ^= 1; // the applied index: only the CRC tells
        std::fs::write(&path, &damaged).unwrap();
        let err = load_consumer_checkpoint(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("CRC mismatch"),
            "{text}"
        );
        std::fs::write(&path, &bytes[..5]).unwrap();
        let text = load_consumer_checkpoint(&path).unwrap_err().to_string();
        assert!(
            text.contains("consumer-offsets") && text.contains("truncated"),
            "{text}"
        );
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = claim(&file).unwrap_err().to_string();
        assert!(err.ends_with("not a directory"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
}
