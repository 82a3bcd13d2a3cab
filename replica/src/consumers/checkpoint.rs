//! The byte format of the consumer checkpoint: [`ConsumerState`] as of an
//! applied index, saved in the data directory (see
//! [`crate::datadir::save_consumer_checkpoint`]) before retention deletes
//! the segments that held the offset commits, so a restarted member
//! rebuilds the same offsets from it and the log above it. Pure code, no
//! I/O.
//!
//! Format (little endian, like the store's files):
//! `magic "DLGCONS\0" (8) | version u32 | applied index u64 | groups u64 |
//! body bytes u64 | body | crc32c u32` over everything before it; the body
//! is each group in name order as `name length u8 | name | offset u64`.
//! The body's length is in the header, so a cut file is told apart from a
//! damaged one.

use std::collections::BTreeMap;

use super::{validate_group_name, ConsumerState};
use crate::entry::Index;

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: [u8; 8] = *b"DLGCONS\0";
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8;
const CRC_BYTES: usize = 4;
/// Where the version and the body length start.
const VERSION_AT: usize = 8;
const BODY_BYTES_AT: usize = 28;

/// What is wrong with checkpoint bytes, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (at byte {offset})")]
pub struct CheckpointDefect {
    /// The byte offset of the defect in the file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

fn defect(offset: usize, reason: impl Into<String>) -> CheckpointDefect {
    CheckpointDefect {
        offset: offset as u64,
        reason: reason.into(),
    }
}

impl ConsumerState {
    /// The checkpoint bytes of this state, recorded as applied up to
    /// `applied_index` (the caller knows every offset commit up to it is
    /// applied, while the state's own applied index moves only when one
    /// applies). Names in the state passed [`validate_group_name`].
    pub fn encode_checkpoint(&self, applied_index: Index) -> Vec<u8> {
        let applied_index = applied_index.max(self.applied_index);
        let body_bytes: usize = self.offsets.keys().map(|name| 1 + name.len() + 8).sum();
        let mut out = Vec::with_capacity(HEADER_BYTES + body_bytes + CRC_BYTES);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&applied_index.to_le_bytes());
        out.extend_from_slice(&(self.offsets.len() as u64).to_le_bytes());
        out.extend_from_slice(&(body_bytes as u64).to_le_bytes());
        for (name, offset) in &self.offsets {
            // At most 128 bytes: validated names only enter the state.
            out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes checkpoint bytes read from the disk: any defect is an error
    /// saying what is wrong and where, never a panic.
    pub fn decode_checkpoint(bytes: &[u8]) -> Result<ConsumerState, CheckpointDefect> {
        if bytes.len() < HEADER_BYTES + CRC_BYTES {
            return Err(defect(
                bytes.len(),
                format!(
                    "truncated: {} bytes, less than the {} of the header and the CRC",
                    bytes.len(),
                    HEADER_BYTES + CRC_BYTES
                ),
            ));
        }
        let mut header = Cursor::new(&bytes[..HEADER_BYTES]);
        if header.take(8)? != MAGIC {
            return Err(defect(0, "not a consumer checkpoint (bad magic)"));
        }
        let version = u32::from_le_bytes(header.array()?);
        if version != FORMAT_VERSION {
            return Err(defect(
                VERSION_AT,
                format!(
                    "format version {version} is not known (this build reads version \
                     {FORMAT_VERSION})"
                ),
            ));
        }
        let applied_index = header.u64()?;
        let group_count = header.u64()?;
        let body_bytes = header.u64()?;
        let expected_bytes = usize::try_from(body_bytes)
            .ok()
            .and_then(|body| body.checked_add(HEADER_BYTES + CRC_BYTES));
        match expected_bytes {
            Some(expected) if bytes.len() > expected => {
                return Err(defect(
                    expected,
                    format!(
                        "{} trailing bytes after the CRC (the header announces {expected} bytes)",
                        bytes.len() - expected
                    ),
                ))
            }
            Some(expected) if bytes.len() == expected => {}
            _ => {
                return Err(defect(
                    BODY_BYTES_AT,
                    format!(
                        "truncated: {} bytes, while the header announces a body of \
                         {body_bytes} bytes",
                        bytes.len()
                    ),
                ))
            }
        }
        let crc_at = bytes.len() - CRC_BYTES;
        let stored_crc = u32::from_le_bytes(Cursor::new(&bytes[crc_at..]).array()?);
        let computed_crc = crc32c::crc32c(&bytes[..crc_at]);
        if stored_crc != computed_crc {
            return Err(defect(
                crc_at,
                format!("CRC mismatch (stored {stored_crc:#010x}, computed {computed_crc:#010x})"),
            ));
        }
        let offsets = decode_body(&bytes[..crc_at], group_count, applied_index)?;
        Ok(ConsumerState {
            offsets,
            applied_index,
        })
    }
}

/// The groups of a body whose CRC matched (`sealed` is the whole file but
/// its CRC): what a bug could still have written wrong is checked all the
/// same, since wrong offsets would be served as if committed.
fn decode_body(
    sealed: &[u8],
    group_count: u64,
    applied_index: Index,
) -> Result<BTreeMap<String, Index>, CheckpointDefect> {
    let mut cursor = Cursor::new(sealed);
    cursor.take(HEADER_BYTES)?;
    let mut offsets = BTreeMap::new();
    let mut previous: Option<String> = None;
    for number in 0..group_count {
        let at = cursor.position;
        let in_group =
            |err: CheckpointDefect| defect(at, format!("group #{number}: {}", err.reason));
        let name_bytes = usize::from(cursor.u8().map_err(in_group)?);
        let name = std::str::from_utf8(cursor.take(name_bytes).map_err(in_group)?)
            .map_err(|_| defect(at, format!("group #{number}: the name is not UTF-8")))?
            .to_string();
        validate_group_name(&name).map_err(|err| defect(at, format!("group #{number}: {err}")))?;
        let offset = cursor.u64().map_err(in_group)?;
        if offset == 0 || offset > applied_index {
            return Err(defect(
                at,
                format!(
                    "group #{number}: offset {offset} of {name:?} is outside \
                     1..={applied_index} (the applied index)"
                ),
            ));
        }
        if previous.as_ref().is_some_and(|previous| *previous >= name) {
            return Err(defect(
                at,
                format!("group #{number}: {name:?} is out of name order or repeated"),
            ));
        }
        previous = Some(name.clone());
        offsets.insert(name, offset);
    }
    if cursor.position != sealed.len() {
        return Err(defect(
            cursor.position,
            format!(
                "{} bytes left in the body after its {group_count} groups",
                sealed.len() - cursor.position
            ),
        ));
    }
    Ok(offsets)
}

/// A cursor whose reads fail with "truncated" instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, position: 0 }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], CheckpointDefect> {
        let left = self.bytes.len() - self.position;
        if left < count {
            return Err(defect(
                self.position,
                format!("truncated: {count} bytes wanted, {left} left"),
            ));
        }
        let head = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CheckpointDefect> {
        let at = self.position;
        self.take(N)?
            .try_into()
            .map_err(|_| defect(at, "truncated"))
    }

    fn u8(&mut self) -> Result<u8, CheckpointDefect> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, CheckpointDefect> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::consumers::{Condition, OffsetCommit};
    use crate::datadir::{
        consumer_checkpoint_path, load_consumer_checkpoint, save_consumer_checkpoint,
    };

    fn state_of(groups: &[(&str, Index)], applied_index: Index) -> ConsumerState {
        let mut state = ConsumerState::default();
        for (group, offset) in groups {
            let commit = OffsetCommit {
                group: group.to_string(),
                offset: *offset,
                condition: Condition::None,
            };
            assert!(validate_group_name(&commit.group).is_ok());
            state.offsets.insert(commit.group, commit.offset);
        }
        state.skip_to(applied_index);
        state
    }

    /// Re-seals `bytes` with a CRC over the (altered) content, so the check
    /// behind the CRC is what is tested.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        let crc_at = bytes.len() - CRC_BYTES;
        let crc = crc32c::crc32c(&bytes[..crc_at]);
        bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// What loading `bytes` from a file says; the message must name it.
    fn load_error(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = consumer_checkpoint_path(dir.path());
        std::fs::write(&path, bytes).unwrap();
        let err = load_consumer_checkpoint(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("consumer checkpoint"), "{err}");
        err
    }

    #[test]
    fn a_state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = consumer_checkpoint_path(dir.path());
        assert!(load_consumer_checkpoint(&path).unwrap().is_none());
        let longest = "z".repeat(128);
        let state = state_of(&[("orders", 7), ("billing", 101), (&longest, 1)], 102);
        // Recorded as applied further than the state's own applied index.
        save_consumer_checkpoint(&path, &state.encode_checkpoint(250)).unwrap();
        let loaded = load_consumer_checkpoint(&path).unwrap().unwrap();
        assert_eq!(loaded.applied_index(), 250);
        assert_eq!(
            loaded.groups().collect::<Vec<_>>(),
            state.groups().collect::<Vec<_>>()
        );
        assert_eq!(loaded.offset("billing"), Some(101));
        // Never recorded below the state's own applied index.
        let bytes = state.encode_checkpoint(1);
        assert_eq!(ConsumerState::decode_checkpoint(&bytes).unwrap(), state);
        // An empty state too (retention before any group exists).
        let empty = state_of(&[], 40);
        let decoded = ConsumerState::decode_checkpoint(&empty.encode_checkpoint(40)).unwrap();
        assert_eq!(decoded, empty);
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused() {
        let good = state_of(&[("a", 3), ("b", 4)], 9).encode_checkpoint(9);
        for at in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[at] ^= 1 << bit;
                assert!(
                    ConsumerState::decode_checkpoint(&bad).is_err(),
                    "bit {bit} flipped at {at}"
                );
            }
        }
        let mut body_bit = good.clone();
        body_bit[HEADER_BYTES + 1] ^= 0x01;
        assert!(load_error(&body_bit).contains("CRC mismatch"));
        let mut crc_bit = good.clone();
        let last = crc_bit.len() - 1;
        crc_bit[last] ^= 0x80;
        assert!(load_error(&crc_bit).contains("CRC mismatch"));
    }

    #[test]
    fn every_cut_and_trailing_bytes_are_refused_by_name() {
        let good = state_of(&[("orders", 3), ("billing", 4)], 9).encode_checkpoint(9);
        for cut in 0..good.len() {
            let err = ConsumerState::decode_checkpoint(&good[..cut]).unwrap_err();
            assert!(err.reason.contains("truncated"), "cut at {cut}: {err}");
        }
        assert!(load_error(&good[..good.len() - 1]).contains("truncated"));
        assert!(load_error(&[]).contains("truncated"));
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"xx");
        assert!(load_error(&trailing).contains("2 trailing bytes"));
    }

    #[test]
    fn bad_magic_and_unknown_versions_are_refused() {
        let good = state_of(&[("a", 1)], 1).encode_checkpoint(1);
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(load_error(&magic).contains("bad magic"));
        let mut version = good.clone();
        version[VERSION_AT..VERSION_AT + 4].copy_from_slice(&2u32.to_le_bytes());
        let err = load_error(&reseal(version));
        assert!(err.contains("format version 2 is not known"), "{err}");
    }

    #[test]
    fn sealed_but_wrong_bodies_are_refused() {
        let good = state_of(&[("ab", 3), ("cd", 4)], 9).encode_checkpoint(9);
        let name_at = HEADER_BYTES + 1;
        let mut bad_name = good.clone();
        bad_name[name_at] = b'/';
        let err = load_error(&reseal(bad_name));
        assert!(
            err.contains("group #0") && err.contains("bad group name"),
            "{err}"
        );
        let mut not_utf8 = good.clone();
        not_utf8[name_at] = 0xFF;
        assert!(load_error(&reseal(not_utf8)).contains("not UTF-8"));
        let mut order = good.clone();
        order[name_at] = b'x';
        assert!(load_error(&reseal(order)).contains("out of name order"));
        let offset_at = name_at + 2;
        let mut zero = good.clone();
        zero[offset_at..offset_at + 8].copy_from_slice(&0u64.to_le_bytes());
        let err = load_error(&reseal(zero));
        assert!(err.contains("outside 1..=9"), "{err}");
        let mut beyond = good.clone();
        beyond[offset_at..offset_at + 8].copy_from_slice(&10u64.to_le_bytes());
        let err = load_error(&reseal(beyond));
        assert!(err.contains("outside 1..=9"), "{err}");
        // A group count that disagrees with the body, either way.
        let mut more = good.clone();
        more[20..28].copy_from_slice(&3u64.to_le_bytes());
        assert!(load_error(&reseal(more)).contains("group #2: truncated"));
        let mut fewer = good.clone();
        fewer[20..28].copy_from_slice(&1u64.to_le_bytes());
        assert!(load_error(&reseal(fewer)).contains("bytes left in the body"));
        // A name length running past the body.
        let mut long_name = good.clone();
        long_name[HEADER_BYTES] = 200;
        assert!(load_error(&reseal(long_name)).contains("truncated"));
    }

    #[test]
    fn noise_never_panics() {
        let good = state_of(&[("a", 1), ("b", 2)], 5).encode_checkpoint(5);
        for seed in 0u32..2000 {
            let mut noise = good.clone();
            let at = (seed as usize * 7919) % noise.len();
            noise[at] = noise[at].wrapping_add(seed as u8 | 1);
            let _ = ConsumerState::decode_checkpoint(&reseal(noise));
            let length = seed as usize % (good.len() + 8);
            let random: Vec<u8> = (0..length)
                .map(|i| (seed.wrapping_mul(2_654_435_761) >> (i % 24)) as u8)
                .collect();
            let _ = ConsumerState::decode_checkpoint(&random);
        }
    }

    /// The cost of a checkpoint: `cargo test --release -p dledger-replica
    /// --lib checkpoint_figures -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints figures; run by hand"]
    fn checkpoint_figures() {
        let dir = tempfile::tempdir().unwrap();
        let path = consumer_checkpoint_path(dir.path());
        for (groups, name_bytes) in [(1_000, 12), (100_000, 12), (100_000, 128)] {
            let mut state = ConsumerState::default();
            for i in 0..groups {
                let name = format!("{i:0>name_bytes$}");
                state.offsets.insert(name, 1 + i as Index);
            }
            state.applied_index = 10 * groups as Index;
            let started = Instant::now();
            let copy = state.clone();
            let clone_us = started.elapsed().as_micros();
            let started = Instant::now();
            let bytes = copy.encode_checkpoint(copy.applied_index());
            let encode_us = started.elapsed().as_micros();
            let started = Instant::now();
            save_consumer_checkpoint(&path, &bytes).unwrap();
            let save_us = started.elapsed().as_micros();
            let started = Instant::now();
            let loaded = load_consumer_checkpoint(&path).unwrap().unwrap();
            let load_us = started.elapsed().as_micros();
            assert_eq!(loaded, state);
            println!(
                "{groups} groups, {name_bytes}-byte names: {} bytes; clone {clone_us} us, \
                 encode {encode_us} us, write+fsync+rename+dir fsync {save_us} us, \
                 read+decode {load_us} us",
                bytes.len()
            );
        }
    }
}
