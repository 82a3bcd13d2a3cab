//! One segment file: its in-memory offset index, the scan that rebuilds it
//! (verifying every CRC), and the `.idx` file a sealed segment keeps so that
//! opening a large log does not rescan it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::frame::{self, FrameHeader, SegmentHeader, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::vfs::{Vfs, VfsFile};
use super::StoreError;
use crate::entry::{Index, Term};

/// How many bytes the scan reads per system call.
const SCAN_CHUNK_BYTES: usize = 4 << 20;

const INDEX_MAGIC: [u8; 8] = *b"DLGIDX\0\x01";

/// `(first index, term)` of each run of entries with equal terms.
pub(crate) type TermRuns = Vec<(Index, Term)>;

/// A segment as the log holds it in memory.
pub(crate) struct Segment {
    pub path: PathBuf,
    pub file: Arc<dyn VfsFile>,
    pub base_index: Index,
    /// Term of entry `base_index - 1` (from the header).
    pub prev_term: Term,
    /// Byte offset of entry `base_index + i` at position `i`.
    /// Invariant: strictly increasing, first is `SEGMENT_HEADER_BYTES`, all `< end_bytes`.
    pub offsets: Vec<u32>,
    /// `(first index, term)` of each run of equal terms, in index order.
    pub term_runs: Vec<(Index, Term)>,
    /// Length of the valid data. The file may be longer: a pre-written
    /// segment holds zeros from here to `segment_bytes`.
    pub end_bytes: u64,
}

impl Segment {
    /// A segment that holds its header and no entry yet.
    pub fn empty(
        path: PathBuf,
        file: Arc<dyn VfsFile>,
        base_index: Index,
        prev_term: Term,
    ) -> Self {
        Segment {
            path,
            file,
            base_index,
            prev_term,
            offsets: Vec::new(),
            term_runs: Vec::new(),
            end_bytes: SEGMENT_HEADER_BYTES as u64,
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// The last index held, `base_index - 1` when empty.
    pub fn last_index(&self) -> Index {
        self.base_index + self.entry_count() - 1
    }

    pub fn last_term(&self) -> Term {
        self.term_runs.last().map_or(self.prev_term, |run| run.1)
    }

    pub fn contains(&self, index: Index) -> bool {
        index >= self.base_index && index <= self.last_index()
    }

    /// The term of `index`, which must be in this segment.
    pub fn term_of(&self, index: Index) -> Term {
        debug_assert!(self.contains(index), "index {index} not in segment");
        let run = self.term_runs.partition_point(|run| run.0 <= index);
        self.term_runs[run - 1].1
    }

    /// Byte range `[start, end)` of the frame of `index`, which must be here.
    pub fn frame_range(&self, index: Index) -> (u64, u64) {
        let position = (index - self.base_index) as usize;
        let start = u64::from(self.offsets[position]);
        let end = self
            .offsets
            .get(position + 1)
            .map_or(self.end_bytes, |next| u64::from(*next));
        (start, end)
    }

    /// Records a frame of `index` and `term` written at `offset`, `bytes` long.
    pub fn push(&mut self, index: Index, term: Term, offset: u64, bytes: u64) {
        assert_eq!(index, self.last_index() + 1, "segment index continuity");
        assert_eq!(
            offset, self.end_bytes,
            "frame must start at the segment end"
        );
        assert!(term >= self.last_term(), "term regression inside a segment");
        let offset = u32::try_from(offset).expect("segment offsets fit u32 (checked by options)");
        if self.term_runs.last().is_none_or(|run| run.1 != term) {
            self.term_runs.push((index, term));
        }
        self.offsets.push(offset);
        self.end_bytes += bytes;
    }

    /// Forgets entries from `index` on (in memory only).
    pub fn truncate_from(&mut self, index: Index) {
        assert!(index >= self.base_index && index <= self.last_index() + 1);
        if index <= self.last_index() {
            self.end_bytes = self.frame_range(index).0;
        }
        self.offsets.truncate((index - self.base_index) as usize);
        self.term_runs.retain(|run| run.0 < index);
    }
}

/// The path of the segment whose first index is `base_index`.
pub(crate) fn segment_path(dir: &Path, base_index: Index) -> PathBuf {
    dir.join(format!("{base_index:020}.seg"))
}

/// The path of the index file of the segment at `segment_path`.
pub(crate) fn index_path(segment_path: &Path) -> PathBuf {
    segment_path.with_extension("idx")
}

/// Reads the segment header of `file`.
pub(crate) fn read_header(
    file: &dyn VfsFile,
    path: &Path,
    len_bytes: u64,
) -> Result<SegmentHeader, StoreError> {
    if len_bytes < SEGMENT_HEADER_BYTES as u64 {
        return Err(StoreError::corrupt(
            path,
            0,
            "segment shorter than its header",
        ));
    }
    let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|error| StoreError::io(path, error))?;
    SegmentHeader::decode(&bytes).map_err(|reason| StoreError::corrupt(path, 0, reason))
}

/// Damage a scan met.
#[derive(Clone, Debug)]
pub(crate) struct Damage {
    pub offset: u64,
    pub reason: &'static str,
    /// A valid frame of a later entry starts after the damage, so the damage
    /// cannot be a torn tail.
    pub followed_by_valid_frame: bool,
    /// Where the non-zero bytes from the damage on end: only zeros follow,
    /// up to the end of the file (the file's length when it ends in non-zero
    /// bytes). Cutting the damage means clearing `offset..dirty_end`.
    pub dirty_end: u64,
}

/// What a scan found: the valid prefix, and the damage that ended it, if any.
/// No damage with `valid_end_bytes` below the file's length means the rest
/// is zeros: the unwritten part of a pre-written segment, the clean end.
pub(crate) struct Scan {
    pub offsets: Vec<u32>,
    pub term_runs: Vec<(Index, Term)>,
    pub valid_end_bytes: u64,
    pub damage: Option<Damage>,
}

/// A window over a file for sequential scanning with few system calls.
struct Window<'a> {
    file: &'a dyn VfsFile,
    len_bytes: u64,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> Window<'a> {
    /// `count` bytes at `offset`, or `None` when the file ends first.
    fn get(&mut self, offset: u64, count: usize) -> std::io::Result<Option<&[u8]>> {
        if offset + count as u64 > self.len_bytes {
            return Ok(None);
        }
        let covered =
            offset >= self.start && offset + count as u64 <= self.start + self.buf.len() as u64;
        if !covered {
            let want = count.max(SCAN_CHUNK_BYTES) as u64;
            let read = want.min(self.len_bytes - offset) as usize;
            self.buf.resize(read, 0);
            self.file.read_exact_at(&mut self.buf, offset)?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(Some(&self.buf[at..at + count]))
    }

    /// The end of the last non-zero byte at or after `from` (`from` when
    /// everything from there to the end of the file is zero).
    fn nonzero_end(&mut self, from: u64) -> std::io::Result<u64> {
        let mut end = from;
        let mut offset = from;
        while offset < self.len_bytes {
            let count = (self.len_bytes - offset).min(SCAN_CHUNK_BYTES as u64) as usize;
            let Some(bytes) = self.get(offset, count)? else {
                break;
            };
            if let Some(last) = bytes.iter().rposition(|byte| *byte != 0) {
                end = offset + last as u64 + 1;
            }
            offset += count as u64;
        }
        Ok(end)
    }

    /// The verified frame header at `offset` if a whole valid frame is there.
    fn valid_frame(&mut self, offset: u64) -> std::io::Result<Result<FrameHeader, &'static str>> {
        let header = match self.get(offset, FRAME_HEADER_BYTES)? {
            None => return Ok(Err("truncated frame header")),
            Some(bytes) => match frame::decode_header(bytes) {
                Ok(header) => header,
                Err(reason) => return Ok(Err(reason)),
            },
        };
        match self.get(offset, header.frame_bytes())? {
            None => Ok(Err("frame runs past the end of the file")),
            Some(bytes) => {
                let (head, payload) = bytes.split_at(FRAME_HEADER_BYTES);
                if frame::crc_matches(&header, head, payload) {
                    Ok(Ok(header))
                } else {
                    Ok(Err("frame CRC mismatch"))
                }
            }
        }
    }
}

/// Scans `file` frame by frame from after the header, verifying every CRC and
/// index continuity, up to the first damage.
pub(crate) fn scan(
    file: &dyn VfsFile,
    path: &Path,
    header: SegmentHeader,
    len_bytes: u64,
) -> Result<Scan, StoreError> {
    let io_error = |error| StoreError::io(path, error);
    let mut window = Window {
        file,
        len_bytes,
        buf: Vec::new(),
        start: 0,
    };
    let mut offsets = Vec::new();
    let mut term_runs: Vec<(Index, Term)> = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    let mut last_term = header.prev_term;
    let mut damage = None;
    while offset < len_bytes {
        let expected_index = header.base_index + offsets.len() as u64;
        if u32::try_from(offset).is_err() {
            // Offsets are kept as u32; the options cap segments at 2 GiB.
            return Err(StoreError::corrupt(
                path,
                offset,
                "segment larger than 4 GiB",
            ));
        }
        let reason = match window.valid_frame(offset).map_err(io_error)? {
            Ok(frame) if frame.index != expected_index => "entry index out of sequence",
            Ok(frame) if frame.term < last_term => "entry term below the previous entry's",
            Ok(frame) => {
                if frame.term != last_term || term_runs.is_empty() {
                    term_runs.push((frame.index, frame.term));
                }
                last_term = frame.term;
                offsets.push(offset as u32);
                offset += frame.frame_bytes() as u64;
                continue;
            }
            Err(reason) => reason,
        };
        let dirty_end = window.nonzero_end(offset).map_err(io_error)?;
        if dirty_end == offset {
            // Zeros to the end: never written since the file was pre-written
            // (or grown), so the clean end of the data. A frame never starts
            // with a zero byte (version 0 is invalid).
            break;
        }
        let followed = valid_frame_after(&mut window, offset, dirty_end, expected_index, last_term)
            .map_err(io_error)?;
        damage = Some(Damage {
            offset,
            reason,
            followed_by_valid_frame: followed,
            dirty_end,
        });
        break;
    }
    Ok(Scan {
        offsets,
        term_runs,
        valid_end_bytes: offset,
        damage,
    })
}

/// Whether a valid frame of an entry at or after `expected_index` starts
/// anywhere after the damage at `damage_offset` and before `dirty_end` (a
/// frame starts with a non-zero byte, and only zeros follow). Tries the frame boundary the
/// damaged header claims first, then every byte (the length field itself may
/// be what is damaged). A random match needs a CRC32C collision (2^-32) on
/// top of plausible version, kind, index and term fields.
fn valid_frame_after(
    window: &mut Window<'_>,
    damage_offset: u64,
    dirty_end: u64,
    expected_index: Index,
    last_term: Term,
) -> std::io::Result<bool> {
    let plausible =
        |header: &FrameHeader| header.index >= expected_index && header.term >= last_term;
    if let Some(bytes) = window.get(damage_offset, FRAME_HEADER_BYTES)? {
        if let Ok(header) = frame::decode_header(bytes) {
            let next = damage_offset + header.frame_bytes() as u64;
            if let Ok(found) = window.valid_frame(next)? {
                if plausible(&found) {
                    return Ok(true);
                }
            }
        }
    }
    let mut offset = damage_offset + 1;
    while offset < dirty_end && offset + FRAME_HEADER_BYTES as u64 <= window.len_bytes {
        let cheap_reject = match window.get(offset, 2)? {
            Some(bytes) => bytes[0] != frame::FRAME_VERSION || bytes[1] > 2,
            None => true,
        };
        if !cheap_reject {
            if let Ok(found) = window.valid_frame(offset)? {
                if plausible(&found) {
                    return Ok(true);
                }
            }
        }
        offset += 1;
    }
    Ok(false)
}

/// Writes the index file of a sealed segment (atomically).
pub(crate) fn write_index(vfs: &dyn Vfs, segment: &Segment) -> std::io::Result<()> {
    let mut bytes =
        Vec::with_capacity(48 + segment.offsets.len() * 4 + segment.term_runs.len() * 16);
    bytes.extend_from_slice(&INDEX_MAGIC);
    bytes.extend_from_slice(&segment.base_index.to_le_bytes());
    bytes.extend_from_slice(&segment.prev_term.to_le_bytes());
    bytes.extend_from_slice(&segment.end_bytes.to_le_bytes());
    bytes.extend_from_slice(&(segment.offsets.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(segment.term_runs.len() as u32).to_le_bytes());
    for offset in &segment.offsets {
        bytes.extend_from_slice(&offset.to_le_bytes());
    }
    for (index, term) in &segment.term_runs {
        bytes.extend_from_slice(&index.to_le_bytes());
        bytes.extend_from_slice(&term.to_le_bytes());
    }
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    super::vfs::write_atomically(vfs, &index_path(&segment.path), &bytes)
}

/// The offsets and term runs from the index file of the segment at `path`,
/// or why it cannot be trusted (missing, damaged, or stale: it must describe
/// exactly this header and this data length, and be self-consistent).
pub(crate) fn load_index(
    vfs: &dyn Vfs,
    path: &Path,
    header: SegmentHeader,
    data_len_bytes: u64,
) -> Result<(Vec<u32>, TermRuns), String> {
    let index_file = vfs
        .open_read_only(&index_path(path))
        .map_err(|error| format!("cannot open: {error}"))?;
    let len = index_file
        .len_bytes()
        .map_err(|error| format!("cannot stat: {error}"))? as usize;
    if len < 44 {
        return Err("too short".into());
    }
    let mut bytes = vec![0u8; len];
    index_file
        .read_exact_at(&mut bytes, 0)
        .map_err(|error| format!("cannot read: {error}"))?;
    let (body, crc) = bytes.split_at(len - 4);
    if bytes[0..8] != INDEX_MAGIC {
        return Err("bad magic".into());
    }
    if crc32c::crc32c(body) != frame::read_u32(crc, 0) {
        return Err("CRC mismatch".into());
    }
    let base_index = frame::read_u64(body, 8);
    let prev_term = frame::read_u64(body, 16);
    let end_bytes = frame::read_u64(body, 24);
    let count = frame::read_u32(body, 32) as usize;
    let run_count = frame::read_u32(body, 36) as usize;
    if base_index != header.base_index || prev_term != header.prev_term {
        return Err("describes another segment".into());
    }
    if end_bytes != data_len_bytes {
        return Err(format!(
            "stale: covers {end_bytes} bytes, the segment has {data_len_bytes}"
        ));
    }
    if body.len() != 40 + count * 4 + run_count * 16 {
        return Err("length does not match its counts".into());
    }
    let offsets: Vec<u32> = (0..count)
        .map(|i| frame::read_u32(body, 40 + i * 4))
        .collect();
    let runs_at = 40 + count * 4;
    let term_runs: Vec<(Index, Term)> = (0..run_count)
        .map(|i| {
            (
                frame::read_u64(body, runs_at + i * 16),
                frame::read_u64(body, runs_at + i * 16 + 8),
            )
        })
        .collect();
    let offsets_ok = offsets
        .first()
        .is_none_or(|first| *first as usize == SEGMENT_HEADER_BYTES)
        && offsets.windows(2).all(|pair| pair[0] < pair[1])
        && offsets
            .last()
            .is_none_or(|last| u64::from(*last) < end_bytes);
    let last_index = base_index + count as u64;
    let runs_ok = term_runs.first().is_none_or(|run| run.0 == base_index)
        && term_runs
            .windows(2)
            .all(|pair| pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1)
        && term_runs.last().is_none_or(|run| run.0 < last_index)
        && term_runs.first().is_none_or(|run| run.1 >= prev_term)
        && (count == 0) == term_runs.is_empty();
    if !offsets_ok || !runs_ok {
        return Err("inconsistent contents".into());
    }
    Ok((offsets, term_runs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Entry;
    use crate::store::vfs::RealVfs;

    /// A segment of `count` entries padded with `zeros` zero bytes, after
    /// `garbage` (a torn frame's bytes) when given.
    fn scan_of(count: u64, garbage: &[u8], zeros: usize) -> Scan {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.seg");
        let header = SegmentHeader {
            base_index: 1,
            prev_term: 0,
        };
        let mut bytes = header.encode().to_vec();
        for index in 1..=count {
            frame::encode_frame(&Entry::normal(index, 1, vec![7u8; 10]), &mut bytes);
        }
        bytes.extend_from_slice(garbage);
        bytes.resize(bytes.len() + zeros, 0);
        std::fs::write(&path, &bytes).expect("write");
        let file = RealVfs.open_read_only(&path).expect("open");
        scan(file.as_ref(), &path, header, bytes.len() as u64).expect("scan")
    }

    #[test]
    fn a_zero_tail_is_the_clean_end() {
        let scan = scan_of(3, &[], 5000);
        assert!(scan.damage.is_none());
        assert_eq!(scan.offsets.len(), 3);
        assert_eq!(scan.valid_end_bytes, 32 + 3 * 38);
    }

    #[test]
    fn a_torn_frame_before_zeros_is_damage_up_to_its_last_byte() {
        let scan = scan_of(3, &[1, 0, 0, 0, 10, 0, 0, 9], 5000);
        let damage = scan.damage.expect("damage");
        assert_eq!(damage.offset, 32 + 3 * 38);
        assert_eq!(damage.dirty_end, damage.offset + 8);
        assert!(!damage.followed_by_valid_frame);
    }
}
