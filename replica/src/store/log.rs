//! The segmented log: append, sync, read, truncate a suffix, delete old
//! segments, and recovery on open.
//!
//! # Recovery: what is a torn tail, what is corruption
//!
//! Writes only ever go to the end of the last segment, and a segment is
//! fdatasync'd before the log rolls to a new one. So every byte of a non-last
//! segment was durable before anything after it was written: damage there is
//! never a crash artefact and is a hard error. Within the last segment, the
//! writer appends and fdatasyncs in order, so a crash can only leave an
//! incomplete (or zero-filled) run of bytes at the very end. Hence:
//!
//! - zeros from after the last valid frame to the end of the file are the
//!   clean end of the data, not damage: a segment is pre-written with zeros
//!   to its full size (see below), so most of an active segment is zeros;
//! - damage in the last segment with no valid later frame after it is a torn
//!   tail: it is cut off (logged with file and offset);
//! - damage followed by a valid frame of a later entry, damage in a sealed
//!   segment, or a gap in index continuity is corruption: the log refuses to
//!   open and names the file and offset.
//!
//! The limits of this rule, stated plainly: (1) a bit flip inside the very
//! last frame of the log looks exactly like a torn write and is cut; if that
//! frame was acknowledged, Raft restores it from the leader, which is why a
//! member never acknowledges an entry alone. (2) If the disk wrote the pages
//! of the last, unsynced batch out of order and the machine crashed, a valid
//! frame may follow a hole; the log refuses to open although only
//! unacknowledged data is affected. We prefer refusing to guessing.
//!
//! # Pre-written segments
//!
//! A new segment is, when possible, a file already `segment_bytes` long,
//! written with zeros and synced by a background thread ([`super::spare`]):
//! appends then overwrite allocated blocks and fdatasync has no inode to
//! write. Otherwise (the first segment, no spare ready in time, a nearly full
//! disk, or syncs so large that writing every block twice would cost more
//! than the inode writes it saves) it grows as it is written. Either way the invariant is the same:
//! after the valid data come only zeros or the end of the file. Whatever
//! removes data (a failed write, a torn tail, `truncate_suffix`) writes zeros
//! over it in a pre-written file, or cuts the file there, and syncs before
//! returning, so a frame removed can never come back at a later open. A
//! sealed segment is trimmed to its data, so its `.idx` records its length.
//!
//! # Open time: what is verified when
//!
//! Opening verifies every CRC of the last segment only. A sealed segment
//! comes with an `.idx` file written (atomically) when it was sealed; if it
//! matches the segment's header and length, its offsets are trusted without
//! reading the data. This keeps opening a 1 GiB log well under a second, at
//! the price that bit rot in sealed segments is found when the entry is read
//! (every read verifies the CRC) or by `dledger-replica log verify`, not at
//! open. A missing, damaged or stale `.idx` is rebuilt by a full scan.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use bytes::Bytes;

use super::frame::{self, SegmentHeader, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::segment::{self, Segment};
use super::spare::Spare;
use super::vfs::{write_atomically, RealVfs, Vfs, VfsFile};
use super::{Result, StoreError};
use crate::entry::{Entry, Index, Term};

/// Default segment size: 64 MiB. Opening rescans the last segment, so its
/// size bounds recovery time (64 MiB of CRC32C takes tens of milliseconds);
/// retention deletes whole segments, so it is also the granularity of space
/// reclaimed; and 1 TiB of log is still only 16k files. DLedger's 1 GiB
/// would make every restart rescan up to a gigabyte.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// When an append counts as done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlushMode {
    /// After fdatasync: the entry survives a power loss. The default.
    #[default]
    Durable,
    /// WEAKER: after the write reached the page cache. A machine crash (not a
    /// process crash) can lose acknowledged entries. DLedger's behaviour; off
    /// by default.
    PageCache,
}

/// How to open a log.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// A segment is sealed once it would grow past this (an entry larger
    /// than this gets a segment of its own). Between 4 KiB and 2 GiB.
    pub segment_bytes: u64,
    /// Open without changing anything on disk: a torn tail is reported and
    /// ignored rather than cut, index files are not written. For tools.
    pub read_only: bool,
    /// Start writing each append back to the disk at once (without waiting
    /// for it). For the page-cache flush mode: otherwise a whole segment of
    /// dirty pages waits for the fdatasync that seals it, and that one call
    /// stalls every append for as long as the disk takes to write 64 MiB.
    pub start_writeback: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            read_only: false,
            start_writeback: false,
        }
    }
}

/// What retention needs to know about a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// Its first index.
    pub base_index: Index,
    /// Its last index (`base_index - 1` when empty).
    pub last_index: Index,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// When it was last written.
    pub modified: SystemTime,
    /// Whether it is the active (last) segment, which is never deleted.
    pub active: bool,
}

/// The segments. Invariants: never empty; consecutive segments are
/// contiguous in index (`next.base == prev.last + 1`) and term
/// (`next.prev_term == prev.last_term`); only the last may be written.
struct Segments {
    list: Vec<Segment>,
}

impl Segments {
    fn first_index(&self) -> Index {
        self.list[0].base_index
    }
    fn active(&self) -> &Segment {
        self.list.last().expect("segments are never empty")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.list.last_mut().expect("segments are never empty")
    }
    fn last_index(&self) -> Index {
        self.active().last_index()
    }
    fn last_term(&self) -> Term {
        self.active().last_term()
    }
    /// Position of the segment holding `index`; `index` must be in the log.
    fn position_of(&self, index: Index) -> usize {
        self.list
            .partition_point(|segment| segment.base_index <= index)
            - 1
    }
    fn check_present(&self, index: Index) -> Result<()> {
        if index < self.first_index() {
            return Err(StoreError::Compacted {
                index,
                first_index: self.first_index(),
            });
        }
        if index > self.last_index() {
            return Err(StoreError::Unavailable {
                index,
                last_index: self.last_index(),
            });
        }
        Ok(())
    }
}

/// What only the writer touches.
struct Writer {
    encode_buf: Vec<u8>,
    /// Bytes written since the last fdatasync.
    unsynced_bytes: u64,
    /// Moving average of the bytes each fdatasync made durable (1/8 weight
    /// to the newest): whether pre-writing the next segment pays.
    bytes_per_sync: u64,
}

impl Writer {
    fn prewriting_pays(&self) -> bool {
        self.bytes_per_sync < PREWRITE_BELOW_BYTES_PER_SYNC
    }
}

/// Pre-writing a segment saves each fdatasync the inode write that a growing
/// file needs, and costs a second write of every block. It pays while syncs
/// are many and small (measured: 1 KiB entries at 16 and 64 in flight,
/// +25-30 %), and loses where the disk's bandwidth is the limit (256 in flight,
/// 16 KiB entries: -10-15 %, p99 doubled), where batches are large.
const PREWRITE_BELOW_BYTES_PER_SYNC: u64 = 64 << 10;

/// A segmented, append-only log of entries.
///
/// All methods take `&self`: writers (append, sync, truncate, delete) are
/// serialised by an internal mutex; readers run concurrently with them and
/// with each other, holding a read lock only for the positional reads they do.
/// Share it as `Arc<Log>`. Entries are visible to readers as soon as they are
/// written, before they are durable; only a successful [`Log::sync`] (or a
/// durable group-commit completion) says they are on disk.
pub struct Log {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    options: LogOptions,
    segments: RwLock<Segments>,
    writer: Mutex<Writer>,
    failed: OnceLock<String>,
    /// The pre-written file for the next segment (none when read-only).
    spare: Option<Spare>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens (or creates) the log in `dir` on the real file system,
    /// recovering from a crash as the module docs say.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Log> {
        Log::open_with_vfs(dir, options, Arc::new(RealVfs))
    }

    /// Opens the log in `dir` through `vfs`.
    pub fn open_with_vfs(dir: &Path, options: LogOptions, vfs: Arc<dyn Vfs>) -> Result<Log> {
        if !(4096..=(2u64 << 30)).contains(&options.segment_bytes) {
            return Err(StoreError::Invalid(format!(
                "segment size {} bytes is outside 4 KiB..2 GiB",
                options.segment_bytes
            )));
        }
        let segments = recover(dir, &options, vfs.as_ref())?;
        let spare =
            (!options.read_only).then(|| Spare::start(dir, vfs.clone(), options.segment_bytes));
        Ok(Log {
            dir: dir.to_owned(),
            vfs,
            spare,
            options,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                encode_buf: Vec::new(),
                unsynced_bytes: 0,
                bytes_per_sync: 0,
            }),
            failed: OnceLock::new(),
        })
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first index present (the last index + 1 when the log is empty).
    pub fn first_index(&self) -> Result<Index> {
        Ok(self.read()?.first_index())
    }

    /// The last index present (0 for a new log).
    pub fn last_index(&self) -> Result<Index> {
        Ok(self.read()?.last_index())
    }

    /// The term of the last entry (that of `first_index - 1` when empty).
    pub fn last_term(&self) -> Result<Term> {
        Ok(self.read()?.last_term())
    }

    /// The term of `index`. `first_index - 1` is answered too (from the
    /// first segment's header), as Raft needs it to check the entry before
    /// the first one it sends.
    pub fn term(&self, index: Index) -> Result<Term> {
        let segments = self.read()?;
        let first = &segments.list[0];
        if index + 1 == first.base_index {
            return Ok(first.prev_term);
        }
        segments.check_present(index)?;
        Ok(segments.list[segments.position_of(index)].term_of(index))
    }

    /// The entry at `index`, its CRC verified.
    pub fn entry(&self, index: Index) -> Result<Entry> {
        let mut entries = self.entries(index, 1, 0)?;
        Ok(entries
            .pop()
            .expect("entries returns at least one present entry"))
    }

    /// Entries from `from` on: at most `max_count`, and no more than
    /// `max_bytes` of frames except that the first entry is always returned.
    /// Every CRC is verified.
    pub fn entries(&self, from: Index, max_count: usize, max_bytes: u64) -> Result<Vec<Entry>> {
        let segments = self.read()?;
        segments.check_present(from)?;
        let mut result = Vec::new();
        let mut budget_bytes = max_bytes;
        let mut index = from;
        let mut position = segments.position_of(from);
        while result.len() < max_count.max(1) && index <= segments.last_index() {
            let segment = &segments.list[position];
            let start = segment.frame_range(index).0;
            let mut end = start;
            let mut next = index;
            while next <= segment.last_index()
                && result.len() + ((next - index) as usize) < max_count.max(1)
            {
                let frame_end = segment.frame_range(next).1;
                let size = frame_end - start;
                if size > budget_bytes && !(result.is_empty() && next == index) {
                    break;
                }
                end = frame_end;
                next += 1;
            }
            if next == index {
                break;
            }
            self.read_frames(segment, index, next, start, end, &mut result)?;
            budget_bytes = budget_bytes.saturating_sub(end - start);
            // Stopped inside this segment (count or byte budget reached).
            if next <= segment.last_index() {
                break;
            }
            index = next;
            position += 1;
            if position == segments.list.len() {
                break;
            }
        }
        Ok(result)
    }

    fn read_frames(
        &self,
        segment: &Segment,
        from: Index,
        to: Index,
        start: u64,
        end: u64,
        out: &mut Vec<Entry>,
    ) -> Result<()> {
        let mut buf = vec![0u8; (end - start) as usize];
        segment
            .file
            .read_exact_at(&mut buf, start)
            .map_err(|error| StoreError::io(&segment.path, error))?;
        let buf = Bytes::from(buf);
        for index in from..to {
            let (frame_start, frame_end) = segment.frame_range(index);
            let at = (frame_start - start) as usize;
            let frame_bytes = buf.slice(at..(frame_end - start) as usize);
            let (entry, _) = frame::decode_frame(&frame_bytes)
                .map_err(|reason| StoreError::corrupt(&segment.path, frame_start, reason))?;
            if entry.index != index || entry.term != segment.term_of(index) {
                return Err(StoreError::corrupt(
                    &segment.path,
                    frame_start,
                    format!(
                        "frame holds index {} term {}, the index says {} term {}",
                        entry.index,
                        entry.term,
                        index,
                        segment.term_of(index)
                    ),
                ));
            }
            out.push(entry);
        }
        Ok(())
    }

    /// Writes `entries` at the end of the log without waiting for the disk.
    /// Indices must continue the log (`first == last_index + 1`, consecutive)
    /// and terms must not go down. Call [`Log::sync`] to make them durable.
    ///
    /// On a full disk the partial write is cut back and [`StoreError::NoSpace`]
    /// returned; the log stays usable. Other write errors fail the store.
    /// An append that crosses a segment boundary is written in one write per
    /// segment; if a later one fails, the earlier part stays (unsynced), so an
    /// error means "not durable", not "absent" — like any unacknowledged write.
    pub fn append(&self, entries: &[Entry]) -> Result<()> {
        self.check_failed()?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut writer = self.lock_writer()?;
        self.check_append(entries)?;
        let mut start = 0;
        while start < entries.len() {
            let (end_bytes, has_entries) = {
                let segments = self.read()?;
                (
                    segments.active().end_bytes,
                    segments.active().entry_count() > 0,
                )
            };
            let mut end = start;
            let mut bytes = end_bytes;
            while end < entries.len() {
                let size = frame::frame_bytes(&entries[end]) as u64;
                if bytes + size > self.options.segment_bytes && (end > start || has_entries) {
                    break;
                }
                bytes += size;
                end += 1;
            }
            if end == start {
                self.roll(&mut writer)?;
                continue;
            }
            self.write_chunk(&mut writer, &entries[start..end], end_bytes)?;
            start = end;
        }
        Ok(())
    }

    /// The largest payload one entry may carry (a frame must fit a segment).
    pub fn max_payload_bytes(&self) -> usize {
        let room = self.options.segment_bytes - (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES) as u64;
        (room as usize).min(frame::MAX_PAYLOAD_BYTES)
    }

    fn check_append(&self, entries: &[Entry]) -> Result<()> {
        let segments = self.read()?;
        let mut last_term = segments.last_term();
        for (expected, entry) in (segments.last_index() + 1..).zip(entries) {
            if entry.index != expected {
                return Err(StoreError::NotContiguous {
                    got: entry.index,
                    expected,
                });
            }
            if entry.term < last_term {
                return Err(StoreError::TermRegression {
                    got: entry.term,
                    last_term,
                });
            }
            if entry.payload.len() > self.max_payload_bytes() {
                return Err(StoreError::Invalid(format!(
                    "entry {} has {} bytes, more than a segment holds",
                    entry.index,
                    entry.payload.len()
                )));
            }
            last_term = entry.term;
        }
        Ok(())
    }

    /// One write of `entries` at `end_bytes` of the active segment.
    fn write_chunk(&self, writer: &mut Writer, entries: &[Entry], end_bytes: u64) -> Result<()> {
        writer.encode_buf.clear();
        for entry in entries {
            frame::encode_frame(entry, &mut writer.encode_buf);
        }
        let (file, path) = {
            let segments = self.read()?;
            (
                segments.active().file.clone(),
                segments.active().path.clone(),
            )
        };
        if let Err(error) = file.write_all_at(&writer.encode_buf, end_bytes) {
            let error = StoreError::io(&path, error);
            // Clear whatever part reached the file, so nothing half written
            // (or whole frames of this batch) stays behind a later append.
            let dirty_end = end_bytes + writer.encode_buf.len() as u64;
            if let Err(cut) = self.clear_after(file.as_ref(), end_bytes, dirty_end) {
                return Err(self.fail(format!(
                    "cutting back a failed write to {} at {end_bytes}: {cut} (after: {error})",
                    path.display()
                )));
            }
            if matches!(error, StoreError::NoSpace { .. }) {
                return Err(error);
            }
            return Err(self.fail(error.to_string()));
        }
        if self.options.start_writeback {
            let len_bytes = writer.encode_buf.len() as u64;
            if let Err(error) = file.start_writeback(end_bytes, len_bytes) {
                tracing::debug!(%error, "starting writeback failed; the seal's fdatasync will write it");
            }
        }
        let mut segments = self.write()?;
        let active = segments.active_mut();
        let mut offset = end_bytes;
        for entry in entries {
            let size = frame::frame_bytes(entry) as u64;
            active.push(entry.index, entry.term, offset, size);
            offset += size;
        }
        drop(segments);
        writer.unsynced_bytes += writer.encode_buf.len() as u64;
        // A quarter into a segment: time to pre-write the next one (late
        // enough that small logs never make one, early enough that zeroing
        // a whole segment is done before this one is full), if it pays.
        if offset >= self.options.segment_bytes / 4 && writer.prewriting_pays() {
            if let Some(spare) = &self.spare {
                spare.want();
            }
        }
        Ok(())
    }

    /// Makes the bytes of `file` from `end_bytes` on read as zeros (or end
    /// there), not synced. `dirty_end`: where the bytes that may be non-zero
    /// end. A pre-written file keeps its length (its blocks stay allocated,
    /// so later fdatasyncs stay cheap); a growing one is cut.
    fn clear_after(
        &self,
        file: &dyn VfsFile,
        end_bytes: u64,
        dirty_end: u64,
    ) -> std::io::Result<()> {
        let len_bytes = file.len_bytes()?;
        if len_bytes != self.options.segment_bytes || dirty_end > len_bytes {
            return file.set_len(end_bytes);
        }
        let zeros = vec![0u8; (dirty_end.saturating_sub(end_bytes)).min(1 << 20) as usize];
        let mut offset = end_bytes;
        while offset < dirty_end {
            let count = (dirty_end - offset).min(zeros.len() as u64) as usize;
            if let Err(error) = file.write_all_at(&zeros[..count], offset) {
                // Cutting is always correct, only slower later.
                tracing::debug!(%error, "zeroing failed; cutting the file instead");
                return file.set_len(end_bytes);
            }
            offset += count as u64;
        }
        Ok(())
    }

    /// Whether the syncs so far are small enough for a pre-written next
    /// segment to pay (see `PREWRITE_BELOW_BYTES_PER_SYNC`).
    pub fn prewriting_pays(&self) -> Result<bool> {
        Ok(self.lock_writer()?.prewriting_pays())
    }

    /// Whether a pre-written segment is ready for the next roll (made in the
    /// background once the active segment is a quarter full).
    pub fn spare_is_ready(&self) -> bool {
        self.spare.as_ref().is_some_and(Spare::is_ready)
    }

    /// How many times making a pre-written segment failed (an I/O error, the
    /// disk filling while zeroing); the log then grows its segments as it
    /// writes them. Too little free space to start one is not counted.
    pub fn spare_failures(&self) -> u64 {
        self.spare.as_ref().map_or(0, Spare::failures)
    }

    /// Makes everything appended so far durable (fdatasync). A failure fails
    /// the store for good: an fsync is never retried and then trusted.
    pub fn sync(&self) -> Result<()> {
        self.check_failed()?;
        let mut writer = self.lock_writer()?;
        let synced_bytes = std::mem::take(&mut writer.unsynced_bytes);
        writer.bytes_per_sync =
            writer.bytes_per_sync - writer.bytes_per_sync / 8 + synced_bytes / 8;
        let (file, path) = {
            let segments = self.read()?;
            (
                segments.active().file.clone(),
                segments.active().path.clone(),
            )
        };
        file.sync_data()
            .map_err(|error| self.fail(format!("fdatasync of {}: {error}", path.display())))
    }

    /// Seals the active segment (synced, index file written) and starts a new one.
    fn roll(&self, _writer: &mut Writer) -> Result<()> {
        let (file, path, base_index, prev_term) = {
            let segments = self.read()?;
            let active = segments.active();
            (
                active.file.clone(),
                active.path.clone(),
                active.last_index() + 1,
                active.last_term(),
            )
        };
        let end_bytes = self.read()?.active().end_bytes;
        // A sealed segment keeps no zero tail: its length is its data, which
        // its index file records and is checked against.
        let trimmed = file.len_bytes().and_then(|len_bytes| {
            if len_bytes > end_bytes {
                file.set_len(end_bytes)
            } else {
                Ok(())
            }
        });
        trimmed
            .and_then(|()| file.sync_data())
            .map_err(|error| self.fail(format!("sealing {}: {error}", path.display())))?;
        {
            let segments = self.read()?;
            segment::write_index(self.vfs.as_ref(), segments.active())
                .map_err(|error| self.io_or_fail(&path, error))?;
        }
        let segment = self
            .new_segment(base_index, prev_term)
            .map_err(|error| match error {
                StoreError::NoSpace { .. } => error,
                other => self.fail(other.to_string()),
            })?;
        self.write()?.list.push(segment);
        Ok(())
    }

    /// A new, empty segment: the spare if one is ready, else a growing one.
    fn new_segment(&self, base_index: Index, prev_term: Term) -> Result<Segment> {
        if let Some(file) = self.spare.as_ref().and_then(Spare::take) {
            if let Some(segment) = self.segment_from_spare(file, base_index, prev_term)? {
                return Ok(segment);
            }
        }
        create_segment(&self.dir, self.vfs.as_ref(), base_index, prev_term)
    }

    /// Turns the spare into the segment at `base_index`: header written and
    /// synced under the spare's name, then renamed, so a segment never has a
    /// torn header. `None` (spare dropped) when that fails before the rename.
    fn segment_from_spare(
        &self,
        file: Arc<dyn VfsFile>,
        base_index: Index,
        prev_term: Term,
    ) -> Result<Option<Segment>> {
        let Some(spare) = &self.spare else {
            return Ok(None);
        };
        let path = segment::segment_path(&self.dir, base_index);
        let header = SegmentHeader {
            base_index,
            prev_term,
        };
        let prepared = file
            .write_all_at(&header.encode(), 0)
            .and_then(|()| file.sync_data())
            .and_then(|()| self.vfs.rename(spare.path(), &path));
        if let Err(error) = prepared {
            tracing::warn!(file = %spare.path().display(), %error, "cannot use the pre-written segment; making a growing one");
            let _ = self.vfs.remove_file(spare.path());
            return Ok(None);
        }
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|error| StoreError::io(&self.dir, error))?;
        Ok(Some(Segment::empty(path, file, base_index, prev_term)))
    }

    /// Removes entries from `from` on (a follower's conflicting tail), durably.
    /// `from` past the last index is a no-op; below the first index an error.
    /// Any I/O failure here fails the store (memory and disk could disagree).
    pub fn truncate_suffix(&self, from: Index) -> Result<()> {
        self.check_failed()?;
        let _writer = self.lock_writer()?;
        let mut segments = self.write()?;
        if from > segments.last_index() {
            return Ok(());
        }
        if from < segments.first_index() {
            return Err(StoreError::Compacted {
                index: from,
                first_index: segments.first_index(),
            });
        }
        let keep = segments.position_of(from);
        let was_sealed = keep + 1 < segments.list.len();
        // Newest first, so a crash part way leaves a contiguous prefix.
        while segments.list.len() > keep + 1 {
            let segment = segments.list.pop().expect("more than keep + 1 segments");
            self.remove_segment_files(&segment)?;
        }
        if was_sealed {
            let index_file = segment::index_path(&segments.list[keep].path);
            self.vfs
                .remove_file(&index_file)
                .or_else(ignore_not_found)
                .map_err(|error| {
                    self.fail(format!("removing {}: {error}", index_file.display()))
                })?;
        }
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|error| self.fail(format!("fsync of {}: {error}", self.dir.display())))?;
        let active = segments.active_mut();
        let old_end = active.end_bytes;
        active.truncate_from(from);
        let (file, path, end) = (active.file.clone(), active.path.clone(), active.end_bytes);
        // Zeros (or the end of the file) after the new end, durably: stale
        // frames there would come back at the next open.
        self.clear_after(file.as_ref(), end, old_end)
            .and_then(|()| file.sync_data())
            .map_err(|error| self.fail(format!("truncating {} to {end}: {error}", path.display())))
    }

    /// Drops every entry and continues after (`prev_index`, `prev_term`): a
    /// follower taking up the leader's log start. The segments go newest
    /// first, so a crash part way leaves a prefix of the old log (which
    /// the leader then installs over again); the new, empty segment is
    /// created last. Any I/O failure fails the store.
    pub fn restart_after(&self, prev_index: Index, prev_term: Term) -> Result<()> {
        self.check_failed()?;
        let _writer = self.lock_writer()?;
        let mut segments = self.write()?;
        while let Some(segment) = segments.list.pop() {
            if let Err(error) = self.remove_segment_files(&segment) {
                segments.list.push(segment);
                return Err(error);
            }
        }
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|error| self.fail(format!("fsync of {}: {error}", self.dir.display())))?;
        let segment = self
            .new_segment(prev_index + 1, prev_term)
            .map_err(|error| {
                self.fail(format!(
                    "creating the segment after the log start {prev_index}: {error}"
                ))
            })?;
        segments.list.push(segment);
        Ok(())
    }

    /// Deletes whole segments all of whose entries are below `index`, oldest
    /// first; the active segment is never deleted. Returns how many went.
    pub fn delete_below(&self, index: Index) -> Result<usize> {
        self.check_failed()?;
        let _writer = self.lock_writer()?;
        let mut segments = self.write()?;
        let mut removed = 0;
        while segments.list.len() > 1 && segments.list[0].last_index() < index {
            let segment = segments.list.remove(0);
            self.vfs
                .remove_file(&segment.path)
                .map_err(|error| StoreError::io(&segment.path, error))?;
            let index_file = segment::index_path(&segment.path);
            self.vfs
                .remove_file(&index_file)
                .or_else(ignore_not_found)
                .map_err(|error| StoreError::io(&index_file, error))?;
            removed += 1;
        }
        if removed > 0 {
            self.vfs
                .sync_dir(&self.dir)
                .map_err(|error| StoreError::io(&self.dir, error))?;
        }
        Ok(removed)
    }

    /// The segments, oldest first, for retention decisions.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>> {
        let segments = self.read()?;
        let count = segments.list.len();
        let mut infos = Vec::with_capacity(count);
        for (position, segment) in segments.list.iter().enumerate() {
            let modified = segment
                .file
                .modified()
                .map_err(|error| StoreError::io(&segment.path, error))?;
            infos.push(SegmentInfo {
                path: segment.path.clone(),
                base_index: segment.base_index,
                last_index: segment.last_index(),
                size_bytes: segment.end_bytes,
                modified,
                active: position + 1 == count,
            });
        }
        Ok(infos)
    }

    fn remove_segment_files(&self, segment: &Segment) -> Result<()> {
        let index_file = segment::index_path(&segment.path);
        self.vfs
            .remove_file(&index_file)
            .or_else(ignore_not_found)
            .and_then(|()| self.vfs.remove_file(&segment.path))
            .map_err(|error| self.fail(format!("removing {}: {error}", segment.path.display())))
    }

    /// Puts the store in the failed state and returns the error saying so.
    fn fail(&self, cause: String) -> StoreError {
        tracing::error!(dir = %self.dir.display(), %cause, "log store failed; restart to recover");
        let cause = self.failed.get_or_init(|| cause).clone();
        StoreError::Failed { cause }
    }

    fn io_or_fail(&self, path: &Path, error: std::io::Error) -> StoreError {
        match StoreError::io(path, error) {
            no_space @ StoreError::NoSpace { .. } => no_space,
            other => self.fail(other.to_string()),
        }
    }

    /// Whether the store has failed.
    pub fn is_failed(&self) -> bool {
        self.failed.get().is_some()
    }

    fn check_failed(&self) -> Result<()> {
        match self.failed.get() {
            Some(cause) => Err(StoreError::Failed {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, Segments>> {
        self.check_failed()?;
        self.segments.read().map_err(|_| self.poisoned())
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, Segments>> {
        self.segments.write().map_err(|_| self.poisoned())
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        self.writer.lock().map_err(|_| self.poisoned())
    }

    fn poisoned(&self) -> StoreError {
        self.fail("a thread panicked while holding the log's lock".into())
    }
}

/// Removes a torn tail (not synced): zeros over it when zeros follow it in a
/// pre-written segment, which keeps the file's length and allocated blocks,
/// else the file is cut there. Either way nothing but zeros follows the data.
fn cut_torn_tail(
    file: &dyn VfsFile,
    damage: &segment::Damage,
    len_bytes: u64,
    segment_bytes: u64,
) -> std::io::Result<()> {
    if len_bytes != segment_bytes || damage.dirty_end >= len_bytes {
        return file.set_len(damage.offset);
    }
    let zeros = vec![0u8; (damage.dirty_end - damage.offset) as usize];
    file.write_all_at(&zeros, damage.offset)
        .or_else(|_| file.set_len(damage.offset))
}

fn ignore_not_found(error: std::io::Error) -> std::io::Result<()> {
    if error.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(error)
    }
}

/// Creates a segment file atomically (header written and synced under a
/// temporary name, then renamed), so a segment never has a torn header.
fn create_segment(
    dir: &Path,
    vfs: &dyn Vfs,
    base_index: Index,
    prev_term: Term,
) -> Result<Segment> {
    let path = segment::segment_path(dir, base_index);
    let header = SegmentHeader {
        base_index,
        prev_term,
    };
    write_atomically(vfs, &path, &header.encode()).map_err(|error| StoreError::io(&path, error))?;
    let file = vfs
        .open(&path, false)
        .map_err(|error| StoreError::io(&path, error))?;
    Ok(Segment::empty(path, file, base_index, prev_term))
}

/// Finds the segments in `dir` and brings them to a consistent state.
fn recover(dir: &Path, options: &LogOptions, vfs: &dyn Vfs) -> Result<Segments> {
    if !options.read_only {
        vfs.create_dir_all(dir)
            .map_err(|error| StoreError::io(dir, error))?;
    }
    let names = vfs.list(dir).map_err(|error| StoreError::io(dir, error))?;
    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    for name in names {
        if let Some(stem) = name.strip_suffix(".seg") {
            match stem.parse::<Index>() {
                Ok(base) if stem.len() == 20 => bases.push(base),
                _ => {
                    tracing::warn!(file = %dir.join(&name).display(), "ignoring a file that is not a segment")
                }
            }
        } else if let Some(stem) = name.strip_suffix(".idx") {
            index_files.push(stem.to_owned());
        } else if name.ends_with(".tmp") && !options.read_only {
            // A temporary file of an interrupted atomic write: never renamed,
            // so never part of the log.
            let path = dir.join(&name);
            vfs.remove_file(&path)
                .map_err(|error| StoreError::io(&path, error))?;
        }
    }
    bases.sort_unstable();
    let mut list: Vec<Segment> = Vec::with_capacity(bases.len());
    for (position, base) in bases.iter().enumerate() {
        let last = position + 1 == bases.len();
        let segment = recover_segment(dir, *base, last, options, vfs)?;
        if let Some(previous) = list.last() {
            if segment.base_index != previous.last_index() + 1 {
                return Err(StoreError::corrupt(
                    &segment.path,
                    0,
                    format!(
                        "segment starts at index {}, the previous one ends at {}",
                        segment.base_index,
                        previous.last_index()
                    ),
                ));
            }
            if segment.prev_term != previous.last_term() {
                return Err(StoreError::corrupt(
                    &segment.path,
                    0,
                    format!(
                        "segment says the previous term is {}, the previous segment ends in term {}",
                        segment.prev_term,
                        previous.last_term()
                    ),
                ));
            }
        }
        list.push(segment);
    }
    if !options.read_only {
        let live: Vec<String> = bases.iter().map(|base| format!("{base:020}")).collect();
        for stem in index_files {
            if !live.contains(&stem) {
                // Left by a deletion interrupted between the two files.
                let path = dir.join(format!("{stem}.idx"));
                vfs.remove_file(&path)
                    .map_err(|error| StoreError::io(&path, error))?;
            }
        }
    }
    if list.is_empty() {
        if options.read_only {
            return Err(StoreError::Invalid(format!(
                "no log segments in {}",
                dir.display()
            )));
        }
        list.push(create_segment(dir, vfs, 1, 0)?);
    }
    Ok(Segments { list })
}

fn recover_segment(
    dir: &Path,
    base: Index,
    last: bool,
    options: &LogOptions,
    vfs: &dyn Vfs,
) -> Result<Segment> {
    let path = segment::segment_path(dir, base);
    let file = if options.read_only {
        vfs.open_read_only(&path)
    } else {
        vfs.open(&path, false)
    }
    .map_err(|error| StoreError::io(&path, error))?;
    let len_bytes = file
        .len_bytes()
        .map_err(|error| StoreError::io(&path, error))?;
    let header = segment::read_header(file.as_ref(), &path, len_bytes)?;
    if header.base_index != base {
        return Err(StoreError::corrupt(
            &path,
            0,
            format!(
                "header says base index {}, the name says {base}",
                header.base_index
            ),
        ));
    }
    let mut segment = Segment {
        path: path.clone(),
        file,
        base_index: base,
        prev_term: header.prev_term,
        offsets: Vec::new(),
        term_runs: Vec::new(),
        end_bytes: len_bytes,
    };
    if !last {
        match segment::load_index(vfs, &path, header, len_bytes) {
            Ok((offsets, term_runs)) => {
                segment.offsets = offsets;
                segment.term_runs = term_runs;
                return Ok(segment);
            }
            Err(reason) => {
                tracing::info!(file = %path.display(), %reason, "rebuilding the segment index from the data");
            }
        }
    }
    let scan = segment::scan(segment.file.as_ref(), &path, header, len_bytes)?;
    segment.offsets = scan.offsets;
    segment.term_runs = scan.term_runs;
    segment.end_bytes = scan.valid_end_bytes;
    let zero_tail = scan.damage.is_none() && scan.valid_end_bytes < len_bytes;
    if zero_tail && !last && !options.read_only {
        // Sealed segments keep no zero tail (a roll trims it), so that their
        // index file, which records the data length, matches the file.
        segment
            .file
            .set_len(scan.valid_end_bytes)
            .and_then(|()| segment.file.sync_data())
            .map_err(|error| StoreError::io(&path, error))?;
    }
    if let Some(damage) = scan.damage {
        if !last || damage.followed_by_valid_frame {
            let place = if last {
                "followed by valid entries"
            } else {
                "in a sealed segment"
            };
            return Err(StoreError::corrupt(
                &path,
                damage.offset,
                format!("{} ({place}, so not a torn write)", damage.reason),
            ));
        }
        tracing::warn!(
            file = %path.display(),
            offset = damage.offset,
            cut_bytes = damage.dirty_end - damage.offset,
            reason = damage.reason,
            "cutting a torn tail left by a crash in the middle of a write"
        );
        if !options.read_only {
            cut_torn_tail(
                segment.file.as_ref(),
                &damage,
                len_bytes,
                options.segment_bytes,
            )
            .and_then(|()| segment.file.sync_data())
            .map_err(|error| StoreError::io(&path, error))?;
        }
    }
    if !options.read_only {
        let index_file = segment::index_path(&path);
        if last {
            // The active segment is written again: an index file would go stale.
            vfs.remove_file(&index_file)
                .or_else(ignore_not_found)
                .map_err(|error| StoreError::io(&index_file, error))?;
        } else {
            segment::write_index(vfs, &segment)
                .map_err(|error| StoreError::io(&index_file, error))?;
        }
    }
    Ok(segment)
}
