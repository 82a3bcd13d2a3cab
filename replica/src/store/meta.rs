//! The durable hard state (current term and vote), in its own file apart
//! from the log: etcd's regret was one storage interface doing both jobs.
//!
//! Format (36 bytes, little endian):
//! `magic "DLGMETA\x01" (8) | term u64 | has vote u8 | reserved [u8; 7] | vote u64 | crc32c u32`.
//! Each save replaces the whole file atomically (temporary file, fsync,
//! rename, fsync of the directory), so a crash leaves the old state or the new.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::frame::{read_u32, read_u64};
use super::vfs::{write_atomically, RealVfs, Vfs};
use super::{Result, StoreError};
use crate::entry::HardState;

const META_MAGIC: [u8; 8] = *b"DLGMETA\x01";
const META_BYTES: usize = 36;

/// The hard-state file of one member.
pub struct MetaStore {
    path: PathBuf,
    vfs: Arc<dyn Vfs>,
    current: HardState,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore")
            .field("path", &self.path)
            .field("current", &self.current)
            .finish()
    }
}

impl MetaStore {
    /// Opens the hard state at `path` (the default state when the file does
    /// not exist yet). A damaged file is an error, never a silent reset: a
    /// forgotten vote could elect two leaders in one term.
    pub fn open(path: &Path) -> Result<MetaStore> {
        MetaStore::open_with_vfs(path, Arc::new(RealVfs))
    }

    /// Opens the hard state at `path` through `vfs`.
    pub fn open_with_vfs(path: &Path, vfs: Arc<dyn Vfs>) -> Result<MetaStore> {
        let current = load(vfs.as_ref(), path)?;
        Ok(MetaStore {
            path: path.to_owned(),
            vfs,
            current,
        })
    }

    /// The last saved hard state.
    pub fn hard_state(&self) -> HardState {
        self.current
    }

    /// Saves `state` durably; returns once it is on disk.
    pub fn save(&mut self, state: HardState) -> Result<()> {
        write_atomically(self.vfs.as_ref(), &self.path, &encode(state))
            .map_err(|error| StoreError::io(&self.path, error))?;
        self.current = state;
        Ok(())
    }
}

fn encode(state: HardState) -> [u8; META_BYTES] {
    let mut bytes = [0u8; META_BYTES];
    bytes[0..8].copy_from_slice(&META_MAGIC);
    bytes[8..16].copy_from_slice(&state.term.to_le_bytes());
    bytes[16] = u8::from(state.vote.is_some());
    bytes[24..32].copy_from_slice(&state.vote.unwrap_or(0).to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..32]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn load(vfs: &dyn Vfs, path: &Path) -> Result<HardState> {
    let file = match vfs.open_read_only(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(HardState::default())
        }
        Err(error) => return Err(StoreError::io(path, error)),
    };
    let len = file
        .len_bytes()
        .map_err(|error| StoreError::io(path, error))?;
    if len != META_BYTES as u64 {
        return Err(StoreError::corrupt(
            path,
            0,
            format!("hard state file is {len} bytes, not {META_BYTES}"),
        ));
    }
    let mut bytes = [0u8; META_BYTES];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|error| StoreError::io(path, error))?;
    if bytes[0..8] != META_MAGIC {
        return Err(StoreError::corrupt(path, 0, "bad hard state magic"));
    }
    if crc32c::crc32c(&bytes[0..32]) != read_u32(&bytes, 32) {
        return Err(StoreError::corrupt(path, 32, "hard state CRC mismatch"));
    }
    let vote = match bytes[16] {
        0 => None,
        1 => Some(read_u64(&bytes, 24)),
        _ => return Err(StoreError::corrupt(path, 16, "bad vote flag")),
    };
    Ok(HardState {
        term: read_u64(&bytes, 8),
        vote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::vfs::FaultyVfs;

    #[test]
    fn saves_survive_reopen_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("meta");
        let mut meta = MetaStore::open(&path).expect("open new");
        assert_eq!(meta.hard_state(), HardState::default());
        let state = HardState {
            term: 7,
            vote: Some(3),
        };
        meta.save(state).expect("save");
        assert_eq!(MetaStore::open(&path).expect("reopen").hard_state(), state);
        let no_vote = HardState {
            term: 8,
            vote: None,
        };
        meta.save(no_vote).expect("save");
        assert_eq!(
            MetaStore::open(&path).expect("reopen").hard_state(),
            no_vote
        );

        let mut bytes = std::fs::read(&path).expect("read");
        bytes[9] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        let error = MetaStore::open(&path).expect_err("damaged");
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn failed_fsync_keeps_the_old_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("meta");
        let vfs = FaultyVfs::new();
        let mut meta = MetaStore::open_with_vfs(&path, Arc::new(vfs.clone())).expect("open");
        let first = HardState {
            term: 2,
            vote: Some(1),
        };
        meta.save(first).expect("save");
        vfs.fail_next_sync();
        assert!(meta
            .save(HardState {
                term: 3,
                vote: None
            })
            .is_err());
        assert_eq!(meta.hard_state(), first);
        assert_eq!(MetaStore::open(&path).expect("reopen").hard_state(), first);
    }
}
