//! The segmented log against an in-memory model, crash recovery, and
//! injected file-layer faults.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dledger_replica::entry::{Entry, EntryKind, Index, Term};
use dledger_replica::store::verify::{verify_log, IndexFileStatus};
use dledger_replica::store::vfs::FaultyVfs;
use dledger_replica::store::{
    FlushMode, GroupCommit, GroupCommitOptions, Log, LogOptions, StoreError, FRAME_HEADER_BYTES,
};
use proptest::prelude::*;

const SMALL_SEGMENT_BYTES: u64 = 4096;

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: SMALL_SEGMENT_BYTES,
        read_only: false,
        start_writeback: false,
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, options()).expect("open log")
}

fn entry(index: Index, term: Term, size: usize) -> Entry {
    let payload: Vec<u8> = (0..size).map(|i| (index as usize * 31 + i) as u8).collect();
    Entry {
        index,
        term,
        kind: if index % 7 == 0 {
            EntryKind::NoOp
        } else {
            EntryKind::Normal
        },
        payload: Bytes::from(payload),
    }
}

/// Appends entries `from..from+count` of `term`, `size` bytes each, and syncs.
fn fill(log: &Log, from: Index, count: u64, term: Term, size: usize) {
    let entries: Vec<Entry> = (from..from + count).map(|i| entry(i, term, size)).collect();
    log.append(&entries).expect("append");
    log.sync().expect("sync");
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|item| item.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut bytes = fs::read(path).expect("read segment");
    bytes[offset as usize] ^= 1 << bit;
    fs::write(path, bytes).expect("write segment");
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").len()
}

// ---------------------------------------------------------------- the model

#[derive(Clone, Debug)]
enum Op {
    Append {
        count: u64,
        term_step: u64,
        size: usize,
    },
    Truncate {
        back: u64,
    },
    DeleteBelow {
        ahead: u64,
    },
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1u64..12, 0u64..2, 0usize..700).prop_map(|(count, term_step, size)| Op::Append { count, term_step, size }),
        2 => (0u64..15).prop_map(|back| Op::Truncate { back }),
        1 => (0u64..40).prop_map(|ahead| Op::DeleteBelow { ahead }),
        1 => Just(Op::Reopen),
    ]
}

/// What the log must hold: entries from `first`, and the term before them.
struct Model {
    first: Index,
    prev_term: Term,
    entries: Vec<Entry>,
}

impl Model {
    fn last_index(&self) -> Index {
        self.first + self.entries.len() as u64 - 1
    }
    fn last_term(&self) -> Term {
        self.entries
            .last()
            .map_or(self.prev_term, |entry| entry.term)
    }
}

fn check(log: &Log, model: &Model) {
    assert_eq!(log.first_index().expect("first"), model.first);
    assert_eq!(log.last_index().expect("last"), model.last_index());
    assert_eq!(log.last_term().expect("last term"), model.last_term());
    assert_eq!(
        log.term(model.first - 1).expect("term before first"),
        model.prev_term
    );
    for entry in &model.entries {
        assert_eq!(log.term(entry.index).expect("term"), entry.term);
    }
    if !model.entries.is_empty() {
        let all = log
            .entries(model.first, usize::MAX, u64::MAX)
            .expect("entries");
        assert_eq!(all, model.entries);
        // A small byte budget returns a non-empty prefix.
        let some = log.entries(model.first, usize::MAX, 1500).expect("entries");
        assert!(!some.is_empty());
        assert_eq!(some[..], model.entries[..some.len()]);
        let bytes: usize = some
            .iter()
            .map(|e| e.payload.len() + FRAME_HEADER_BYTES)
            .sum();
        assert!(
            some.len() == 1 || bytes <= 1500,
            "{bytes} bytes over the budget"
        );
        let middle = model.first + model.entries.len() as u64 / 2;
        let two = log.entries(middle, 2, u64::MAX).expect("entries");
        assert_eq!(
            two[..],
            model.entries[(middle - model.first) as usize..][..two.len()]
        );
        assert!(matches!(
            log.entry(model.last_index() + 1),
            Err(StoreError::Unavailable { .. })
        ));
    }
    if model.first > 1 {
        assert!(matches!(
            log.entry(model.first - 1),
            Err(StoreError::Compacted { .. })
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = open(dir.path());
        let mut model = Model { first: 1, prev_term: 0, entries: Vec::new() };
        for op in ops {
            match op {
                Op::Append { count, term_step, size } => {
                    let term = model.last_term().max(1) + term_step;
                    let from = model.last_index() + 1;
                    let new: Vec<Entry> = (from..from + count).map(|i| entry(i, term, size)).collect();
                    log.append(&new).expect("append");
                    model.entries.extend(new);
                }
                Op::Truncate { back } => {
                    let from = (model.last_index() + 1).saturating_sub(back).max(model.first);
                    log.truncate_suffix(from).expect("truncate");
                    model.entries.truncate((from - model.first) as usize);
                }
                Op::DeleteBelow { ahead } => {
                    let index = model.first + ahead;
                    log.delete_below(index).expect("delete below");
                    let first = log.first_index().expect("first");
                    prop_assert!(first >= model.first);
                    prop_assert!(first <= model.first.max(index.min(model.last_index() + 1)));
                    let dropped = (first - model.first) as usize;
                    if dropped > 0 {
                        model.prev_term = model.entries[dropped - 1].term;
                        model.entries.drain(..dropped);
                        model.first = first;
                    }
                }
                Op::Reopen => {
                    log.sync().expect("sync");
                    drop(log);
                    log = open(dir.path());
                }
            }
            check(&log, &model);
        }
        let report = verify_log(dir.path()).expect("verify");
        prop_assert!(report.is_healthy());
        prop_assert_eq!(report.last_index, model.last_index());
    }
}

#[test]
fn appends_must_continue_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path());
    fill(&log, 1, 3, 2, 10);
    assert!(matches!(
        log.append(&[entry(5, 2, 1)]),
        Err(StoreError::NotContiguous {
            got: 5,
            expected: 4
        })
    ));
    assert!(matches!(
        log.append(&[entry(4, 1, 1)]),
        Err(StoreError::TermRegression {
            got: 1,
            last_term: 2
        })
    ));
    assert!(matches!(
        log.append(&[entry(4, 2, SMALL_SEGMENT_BYTES as usize)]),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(log.last_index().expect("last"), 3);
}

// ---------------------------------------------------------------- crashes

/// Builds a log of `count` entries in one segment and returns the length of
/// the active segment before and after the last entry.
fn one_segment_log(dir: &Path, count: u64) -> (PathBuf, u64, u64) {
    let log = open(dir);
    fill(&log, 1, count - 1, 1, 40);
    let path = segment_files(dir).pop().expect("a segment");
    let before = file_len(&path);
    fill(&log, count, 1, 1, 40);
    let after = file_len(&path);
    (path, before, after)
}

#[test]
fn a_last_entry_torn_at_any_byte_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, before, after) = one_segment_log(dir.path(), 10);
    let good = fs::read(&path).expect("read");
    for cut in before..after {
        fs::write(&path, &good[..cut as usize]).expect("write");
        let log = open(dir.path());
        assert_eq!(log.last_index().expect("last"), 9, "cut at {cut}");
        assert_eq!(file_len(&path), before, "torn bytes cut at {cut}");
        fill(&log, 10, 1, 1, 40);
        drop(log);
        assert_eq!(fs::read(&path).expect("read"), good, "re-append at {cut}");
    }
}

#[test]
fn a_zero_filled_tail_is_the_clean_end_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _, after) = one_segment_log(dir.path(), 5);
    let mut bytes = fs::read(&path).expect("read");
    bytes.extend_from_slice(&[0u8; 300]);
    fs::write(&path, &bytes).expect("write");
    let report = verify_log(dir.path()).expect("verify");
    assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail);
    assert!(report.is_healthy());
    assert_eq!(report.last_index, 5);
    let log = open(dir.path());
    assert_eq!(log.last_index().expect("last"), 5);
    assert_eq!(file_len(&path), after + 300, "nothing to cut");
    // Appends go over the zeros.
    fill(&log, 6, 1, 1, 40);
    drop(log);
    assert_eq!(open(dir.path()).last_index().expect("last"), 6);
}

/// `good` (a one-segment log's file) cut at `cut` and padded with zeros to
/// the segment size, as a torn write into a pre-written segment leaves it.
fn pre_written(good: &[u8], cut: u64) -> Vec<u8> {
    let mut bytes = good[..cut as usize].to_vec();
    bytes.resize(SMALL_SEGMENT_BYTES as usize, 0);
    bytes
}

#[test]
fn a_torn_last_entry_followed_by_zeros_is_cleared_and_the_length_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, before, after) = one_segment_log(dir.path(), 10);
    let good = fs::read(&path).expect("read");
    for cut in before + 1..after {
        fs::write(&path, pre_written(&good, cut)).expect("write");
        let report = verify_log(dir.path()).expect("verify");
        // A torn tail unless what reached the disk of the frame was zeros
        // only up to the cut (then it is the clean end).
        let torn = good[before as usize..cut as usize].iter().any(|b| *b != 0);
        assert_eq!(report.torn_tail.is_some(), torn, "cut at {cut}");
        let log = open(dir.path());
        assert_eq!(log.last_index().expect("last"), 9, "cut at {cut}");
        let bytes = fs::read(&path).expect("read");
        assert_eq!(bytes.len() as u64, SMALL_SEGMENT_BYTES, "length kept");
        assert!(
            bytes[before as usize..].iter().all(|b| *b == 0),
            "torn bytes zeroed at {cut}"
        );
        fill(&log, 10, 1, 1, 40);
        drop(log);
        assert_eq!(
            fs::read(&path).expect("read"),
            pre_written(&good, after),
            "re-append at {cut}"
        );
    }
}

#[test]
fn damage_followed_by_a_valid_frame_and_zeros_is_still_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _, after) = one_segment_log(dir.path(), 10);
    let good = fs::read(&path).expect("read");
    let mut bytes = pre_written(&good, after);
    let fourth = 32 + 3 * (FRAME_HEADER_BYTES + 40);
    bytes[fourth + 30] ^= 1;
    fs::write(&path, &bytes).expect("write");
    assert!(matches!(
        Log::open(dir.path(), options()),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn a_flipped_bit_in_the_last_entry_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, before, after) = one_segment_log(dir.path(), 10);
    let good = fs::read(&path).expect("read");
    for offset in (before..after).step_by(7) {
        fs::write(&path, &good).expect("write");
        flip_bit(&path, offset, (offset % 8) as u8);
        let log = open(dir.path());
        assert_eq!(log.last_index().expect("last"), 9, "flip at {offset}");
        assert_eq!(file_len(&path), before);
    }
}

#[test]
fn a_flipped_bit_followed_by_valid_entries_refuses_to_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _, _) = one_segment_log(dir.path(), 10);
    let good = fs::read(&path).expect("read");
    let frame_bytes = (FRAME_HEADER_BYTES + 40) as u64;
    // Every byte of the fourth entry: header fields (length included) and payload.
    let start = 32 + 3 * frame_bytes;
    for offset in start..start + frame_bytes {
        fs::write(&path, &good).expect("write");
        flip_bit(&path, offset, 3);
        match Log::open(dir.path(), options()) {
            Err(StoreError::Corrupt {
                path: bad,
                offset: at,
                ..
            }) => {
                assert_eq!(bad, path);
                assert_eq!(at, start, "flip at {offset}");
            }
            other => panic!("flip at {offset}: expected corruption, got {other:?}"),
        }
        assert_eq!(
            fs::read(&path).expect("read"),
            {
                let mut damaged = good.clone();
                damaged[offset as usize] ^= 1 << 3;
                damaged
            },
            "refusing to open changes nothing"
        );
    }
}

/// A log of several sealed segments of 100-byte entries, synced.
fn multi_segment_log(dir: &Path) -> Vec<PathBuf> {
    let log = open(dir);
    fill(&log, 1, 200, 1, 100);
    fill(&log, 201, 100, 2, 100);
    let files = segment_files(dir);
    assert!(files.len() >= 5, "{} segments", files.len());
    files
}

#[test]
fn damage_in_a_sealed_segment_is_found_by_reads_and_by_a_full_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = multi_segment_log(dir.path());
    flip_bit(&files[1], 500, 0);
    // The index file is trusted at open (fast path); the read verifies the CRC.
    let log = open(dir.path());
    let base: Index = files[1]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base");
    let damaged = log.entries(base, usize::MAX, u64::MAX);
    assert!(
        matches!(damaged, Err(StoreError::Corrupt { .. })),
        "{damaged:?}"
    );
    drop(log);
    let report = verify_log(dir.path()).expect("verify");
    assert!(!report.is_healthy());
    assert_eq!(report.damage[0].path, files[1]);
    // Without the index file the segment is scanned and the open refused.
    fs::remove_file(files[1].with_extension("idx")).expect("remove idx");
    match Log::open(dir.path(), options()) {
        Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, files[1]),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_missing_or_stale_index_is_rebuilt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = multi_segment_log(dir.path());
    let expected = open(dir.path())
        .entries(1, usize::MAX, u64::MAX)
        .expect("entries");
    let good_index = fs::read(files[0].with_extension("idx")).expect("read idx");
    // Missing.
    fs::remove_file(files[0].with_extension("idx")).expect("remove");
    assert_eq!(
        open(dir.path())
            .entries(1, usize::MAX, u64::MAX)
            .expect("entries"),
        expected
    );
    assert_eq!(
        fs::read(files[0].with_extension("idx")).expect("rebuilt"),
        good_index
    );
    // Damaged.
    flip_bit(&files[0].with_extension("idx"), 50, 1);
    assert_eq!(
        open(dir.path())
            .entries(1, usize::MAX, u64::MAX)
            .expect("entries"),
        expected
    );
    assert_eq!(
        fs::read(files[0].with_extension("idx")).expect("rebuilt"),
        good_index
    );
    // Stale: an index of another segment put in its place.
    fs::copy(
        files[1].with_extension("idx"),
        files[0].with_extension("idx"),
    )
    .expect("copy");
    assert_eq!(
        open(dir.path())
            .entries(1, usize::MAX, u64::MAX)
            .expect("entries"),
        expected
    );
    assert_eq!(
        fs::read(files[0].with_extension("idx")).expect("rebuilt"),
        good_index
    );
    // A leftover index of the active segment is dropped, not trusted.
    let active = files.last().expect("active");
    fs::copy(files[0].with_extension("idx"), active.with_extension("idx")).expect("copy");
    assert_eq!(
        open(dir.path())
            .entries(1, usize::MAX, u64::MAX)
            .expect("entries"),
        expected
    );
    assert!(!active.with_extension("idx").exists());
}

#[test]
fn a_missing_middle_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = multi_segment_log(dir.path());
    fs::remove_file(&files[2]).expect("remove");
    match Log::open(dir.path(), options()) {
        Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, files[3]),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn truncation_into_a_sealed_segment_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = multi_segment_log(dir.path());
    let log = open(dir.path());
    log.truncate_suffix(50).expect("truncate");
    assert!(segment_files(dir.path()).len() < files.len());
    fill(&log, 50, 30, 3, 10);
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.last_index().expect("last"), 79);
    assert_eq!(log.term(49).expect("term"), 1);
    assert_eq!(log.term(50).expect("term"), 3);
    assert_eq!(log.entry(60).expect("entry"), entry(60, 3, 10));
}

#[test]
fn delete_below_keeps_the_term_before_the_first_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    multi_segment_log(dir.path());
    let log = open(dir.path());
    let removed = log.delete_below(250).expect("delete");
    assert!(removed > 0);
    let first = log.first_index().expect("first");
    assert!(first > 1 && first <= 250);
    assert_eq!(
        log.term(first - 1).expect("term"),
        if first - 1 > 200 { 2 } else { 1 }
    );
    assert!(log
        .segments()
        .expect("segments")
        .iter()
        .all(|s| s.base_index >= first));
    drop(log);
    assert_eq!(open(dir.path()).first_index().expect("first"), first);
}

#[test]
fn a_log_restarted_after_the_leaders_start_continues_there_after_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    multi_segment_log(dir.path());
    let group = GroupCommit::start(Arc::new(open(dir.path())), GroupCommitOptions::default())
        .expect("start");
    // Queued appends are written before the restart, which drops them too.
    let last = group.log().last_index().expect("last");
    group
        .append_durable(vec![entry(last + 1, 2, 10)])
        .expect("append");
    group.restart_after(1_000, 5).expect("restart");
    let log = group.log().clone();
    assert_eq!(log.first_index().expect("first"), 1_001);
    assert_eq!(log.last_index().expect("last"), 1_000);
    assert_eq!(log.last_term().expect("last term"), 5);
    assert_eq!(log.term(1_000).expect("term"), 5);
    assert!(matches!(
        log.entry(999),
        Err(StoreError::Compacted { index: 999, .. })
    ));
    assert_eq!(segment_files(dir.path()).len(), 1);
    group
        .append_durable(vec![entry(1_001, 5, 10), entry(1_002, 6, 10)])
        .expect("append after the start");
    drop(group);
    drop(log);
    let reopened = open(dir.path());
    assert_eq!(reopened.first_index().expect("first"), 1_001);
    assert_eq!(reopened.last_index().expect("last"), 1_002);
    assert_eq!(reopened.term(1_000).expect("term"), 5);
    assert_eq!(reopened.entry(1_002).expect("entry"), entry(1_002, 6, 10));
}

// ---------------------------------------------------------------- faults

fn faulty_log(dir: &Path) -> (Log, FaultyVfs) {
    let vfs = FaultyVfs::new();
    let log = Log::open_with_vfs(dir, options(), Arc::new(vfs.clone())).expect("open");
    (log, vfs)
}

#[test]
fn an_fsync_failure_fails_the_store_for_good() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, vfs) = faulty_log(dir.path());
    fill(&log, 1, 3, 1, 10);
    log.append(&[entry(4, 1, 10)]).expect("append");
    vfs.fail_next_sync();
    assert!(matches!(log.sync(), Err(StoreError::Failed { .. })));
    // Never retried and trusted: every later call fails.
    assert!(matches!(log.sync(), Err(StoreError::Failed { .. })));
    assert!(matches!(
        log.append(&[entry(5, 1, 1)]),
        Err(StoreError::Failed { .. })
    ));
    assert!(matches!(
        log.entries(1, 10, 1000),
        Err(StoreError::Failed { .. })
    ));
    assert!(matches!(
        log.truncate_suffix(2),
        Err(StoreError::Failed { .. })
    ));
    assert!(log.is_failed());
    drop(log);
    // A restart recovers from what is on disk.
    assert!(open(dir.path()).last_index().expect("last") >= 3);
}

#[test]
fn a_short_write_is_cut_back_and_fails_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, vfs) = faulty_log(dir.path());
    fill(&log, 1, 3, 1, 10);
    let path = segment_files(dir.path()).pop().expect("segment");
    let before = file_len(&path);
    vfs.short_write_next();
    let batch: Vec<Entry> = (4..10).map(|i| entry(i, 1, 100)).collect();
    assert!(log.append(&batch).is_err());
    assert_eq!(file_len(&path), before, "partial write cut back");
    assert!(matches!(log.append(&batch), Err(StoreError::Failed { .. })));
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.last_index().expect("last"), 3);
}

#[test]
fn a_full_disk_is_a_clear_error_and_corrupts_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, vfs) = faulty_log(dir.path());
    fill(&log, 1, 3, 1, 10);
    let path = segment_files(dir.path()).pop().expect("segment");
    let before = file_len(&path);
    vfs.set_space_left(150);
    let batch: Vec<Entry> = (4..10).map(|i| entry(i, 1, 100)).collect();
    assert!(matches!(
        log.append(&batch),
        Err(StoreError::NoSpace { .. })
    ));
    assert_eq!(file_len(&path), before, "partial write cut back");
    assert!(!log.is_failed());
    assert_eq!(log.last_index().expect("last"), 3);
    // Space freed: the store carries on.
    vfs.set_space_left(u64::MAX);
    log.append(&batch).expect("append after space was freed");
    log.sync().expect("sync");
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.entries(1, 100, u64::MAX).expect("entries").len(), 9);
}

// ---------------------------------------------------------------- group commit

#[test]
fn concurrent_appenders_get_disjoint_durable_ranges() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(open(dir.path()));
    let group = Arc::new(GroupCommit::start(log, GroupCommitOptions::default()).expect("start"));
    let threads: Vec<_> = (0..8u8)
        .map(|thread| {
            let group = group.clone();
            std::thread::spawn(move || {
                let mut ranges = Vec::new();
                for round in 0..50u8 {
                    let payloads = vec![
                        Bytes::from(vec![thread, round]),
                        Bytes::from(vec![thread, round, 1]),
                    ];
                    let range = group.append_payloads_durable(1, payloads).expect("append");
                    ranges.push((range, thread, round));
                }
                ranges
            })
        })
        .collect();
    let mut ranges: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    ranges.sort_by_key(|(range, _, _)| *range.start());
    let mut next = 1;
    for (range, thread, round) in &ranges {
        assert_eq!(*range.start(), next);
        assert_eq!(*range.end(), next + 1);
        let entries = group.log().entries(next, 2, u64::MAX).expect("entries");
        assert_eq!(entries[0].payload, Bytes::from(vec![*thread, *round]));
        assert_eq!(entries[1].payload, Bytes::from(vec![*thread, *round, 1]));
        next += 2;
    }
    let stats = group.stats();
    assert_eq!(stats.entries, 800);
    assert_eq!(stats.syncs, stats.batches);
    drop(group);
    assert_eq!(open(dir.path()).last_index().expect("last"), 800);
}

#[test]
fn a_bad_request_fails_alone_and_callbacks_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let group = GroupCommit::start(Arc::new(open(dir.path())), GroupCommitOptions::default())
        .expect("start");
    assert_eq!(
        group
            .append_durable(vec![entry(1, 1, 5), entry(2, 1, 5)])
            .expect("append"),
        1..=2
    );
    let error = group.append_durable(vec![entry(5, 1, 5)]).expect_err("gap");
    assert!(matches!(
        error,
        StoreError::NotContiguous {
            got: 5,
            expected: 3
        }
    ));
    let (sender, receiver) = std::sync::mpsc::channel();
    group
        .submit(
            vec![entry(3, 2, 5)],
            Box::new(move |result| sender.send(result).expect("send")),
        )
        .expect("submit");
    assert_eq!(receiver.recv().expect("callback").expect("durable"), 3..=3);
    group.truncate_suffix(2).expect("truncate");
    assert_eq!(
        group
            .append_payloads_durable(3, vec![Bytes::from_static(b"x")])
            .expect("append"),
        2..=2
    );
    assert_eq!(group.log().term(2).expect("term"), 3);
}

#[test]
fn group_commit_waits_out_a_full_disk_and_reports_an_fsync_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, vfs) = faulty_log(dir.path());
    let group = GroupCommit::start(Arc::new(log), GroupCommitOptions::default()).expect("start");
    group
        .append_payloads_durable(1, vec![Bytes::from_static(b"a")])
        .expect("append");
    vfs.set_space_left(10);
    let (sender, receiver) = std::sync::mpsc::channel();
    group
        .submit_payloads(
            1,
            vec![Bytes::from(vec![7u8; 100])],
            Box::new(move |result| drop(sender.send(result))),
        )
        .expect("submit");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !group.is_disk_full() {
        assert!(
            std::time::Instant::now() < deadline,
            "disk full never reported"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        receiver.recv_timeout(Duration::from_millis(300)).is_err(),
        "a write that does not fit waits for space instead of failing"
    );
    assert!(!group.log().is_failed());
    assert_eq!(
        group
            .log()
            .entries(1, 10, u64::MAX)
            .expect("reads go on")
            .len(),
        1
    );
    vfs.set_space_left(u64::MAX);
    let written = receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("completed once space was freed")
        .expect("written");
    assert_eq!(written, 2..=2);
    assert!(!group.is_disk_full());
    assert_eq!(
        group.log().entries(2, 1, u64::MAX).expect("entry")[0]
            .payload
            .len(),
        100
    );
    assert_eq!(
        group
            .append_payloads_durable(1, vec![Bytes::from_static(b"b")])
            .expect("append"),
        3..=3
    );
    vfs.fail_next_sync();
    let error = group
        .append_payloads_durable(1, vec![Bytes::from_static(b"c")])
        .expect_err("sync");
    assert!(matches!(error, StoreError::Failed { .. }), "{error}");
    let error = group
        .append_payloads_durable(1, vec![Bytes::from_static(b"d")])
        .expect_err("failed");
    assert!(matches!(error, StoreError::Failed { .. }), "{error}");
}

#[test]
fn page_cache_mode_is_opt_in_and_still_persists_on_shutdown() {
    assert_eq!(GroupCommitOptions::default().flush_mode, FlushMode::Durable);
    let dir = tempfile::tempdir().expect("temp dir");
    let options = GroupCommitOptions {
        flush_mode: FlushMode::PageCache,
        ..GroupCommitOptions::default()
    };
    let group = GroupCommit::start(Arc::new(open(dir.path())), options).expect("start");
    for _ in 0..10 {
        group
            .append_payloads_durable(1, vec![Bytes::from_static(b"p")])
            .expect("append");
    }
    assert_eq!(group.stats().syncs, 0);
    drop(group);
    assert_eq!(open(dir.path()).last_index().expect("last"), 10);
}

#[test]
fn readers_run_while_the_flusher_appends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let group = Arc::new(
        GroupCommit::start(Arc::new(open(dir.path())), GroupCommitOptions::default())
            .expect("start"),
    );
    let reader = {
        let log = group.log().clone();
        std::thread::spawn(move || {
            let mut checked = 0u64;
            while checked < 400 {
                let last = log.last_index().expect("last");
                if last == 0 {
                    continue;
                }
                // Every entry readable at any moment is whole and in place.
                for entry in log.entries(1, usize::MAX, u64::MAX).expect("entries") {
                    assert_eq!(
                        entry.payload,
                        Bytes::from(entry.index.to_le_bytes().to_vec())
                    );
                    checked = checked.max(entry.index);
                }
            }
            checked
        })
    };
    for index in 1..=400u64 {
        let payload = Bytes::from(index.to_le_bytes().to_vec());
        let range = group
            .append_payloads_durable(1, vec![payload])
            .expect("append");
        assert_eq!(range, index..=index);
    }
    assert_eq!(reader.join().expect("reader"), 400);
}

#[test]
fn a_panicking_callback_does_not_stop_the_flusher() {
    let dir = tempfile::tempdir().expect("temp dir");
    let group = GroupCommit::start(Arc::new(open(dir.path())), GroupCommitOptions::default())
        .expect("start");
    group
        .submit_payloads(
            1,
            vec![Bytes::from_static(b"a")],
            Box::new(|_| panic!("callback bug")),
        )
        .expect("submit");
    let range = group
        .append_payloads_durable(1, vec![Bytes::from_static(b"b")])
        .expect("append");
    assert_eq!(range, 2..=2);
}

#[test]
fn early_writeback_changes_nothing_that_is_read_or_reopened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = LogOptions {
        start_writeback: true,
        ..options()
    };
    let log = Log::open(dir.path(), options).expect("open");
    let batch: Vec<Entry> = (1..=50).map(|i| entry(i, 1, 300)).collect();
    log.append(&batch)
        .expect("append across segments with writeback started");
    assert!(
        segment_files(dir.path()).len() > 1,
        "the batch rolled segments"
    );
    assert_eq!(log.entries(1, 100, u64::MAX).expect("read").len(), 50);
    log.sync().expect("sync");
    drop(log);
    assert_eq!(open(dir.path()).last_index().expect("last"), 50);
}

// ---------------------------------------------------------------- pre-written segments

fn wait_for_spare(log: &Log) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !log.spare_is_ready() {
        assert!(std::time::Instant::now() < deadline, "no spare made");
        std::thread::sleep(Duration::from_millis(5));
    }
}

const ENTRY_BYTES: u64 = (FRAME_HEADER_BYTES + 100) as u64;
/// 100-byte entries per 4 KiB segment.
const PER_SEGMENT: u64 = (SMALL_SEGMENT_BYTES - 32) / ENTRY_BYTES;
/// 100-byte entries after which a segment is a quarter full and a spare wanted.
const SPARE_AFTER: u64 = (SMALL_SEGMENT_BYTES / 4 - 32).div_ceil(ENTRY_BYTES);

/// A log whose active (second) segment is a pre-written one holding
/// `count` entries of term 2 from `PER_SEGMENT + 1` on; returns its path.
fn pre_written_log(dir: &Path, count: u64) -> (Log, PathBuf) {
    let log = open(dir);
    // The first segment grows; a quarter into it the spare is made.
    fill(&log, 1, PER_SEGMENT, 1, 100);
    wait_for_spare(&log);
    fill(&log, PER_SEGMENT + 1, count, 2, 100);
    let files = segment_files(dir);
    assert_eq!(files.len(), 2);
    (log, files[1].clone())
}

#[test]
fn pre_writing_is_for_small_syncs_not_for_large_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(
        dir.path(),
        LogOptions {
            segment_bytes: 64 << 20,
            ..options()
        },
    )
    .expect("open log");
    assert!(log.prewriting_pays().expect("writer"), "a new log");
    // 16 entries of 16 KiB per fdatasync: the disk's bandwidth is the limit.
    let mut next = 1;
    for _ in 0..12 {
        fill(&log, next, 16, 1, 16 << 10);
        next += 16;
    }
    assert!(!log.prewriting_pays().expect("writer"), "256 KiB per sync");
    // 8 entries of 1 KiB per fdatasync: the syncs' own cost is the limit.
    for _ in 0..40 {
        fill(&log, next, 8, 1, 1 << 10);
        next += 8;
    }
    assert!(log.prewriting_pays().expect("writer"), "8 KiB per sync");
}

#[test]
fn the_spare_becomes_the_next_segment_at_a_roll() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, active) = pre_written_log(dir.path(), 3);
    assert!(!log.spare_is_ready(), "the spare was taken");
    assert!(!dir.path().join("spare-segment.tmp").exists());
    assert_eq!(file_len(&active), SMALL_SEGMENT_BYTES, "pre-written");
    let sealed = &segment_files(dir.path())[0];
    assert_eq!(
        file_len(sealed),
        32 + PER_SEGMENT * ENTRY_BYTES,
        "a sealed segment is its data"
    );
    drop(log);
    let report = verify_log(dir.path()).expect("verify");
    assert!(
        report.is_healthy() && report.torn_tail.is_none(),
        "{report:?}"
    );
    let log = open(dir.path());
    assert_eq!(log.last_index().expect("last"), PER_SEGMENT + 3);
    assert_eq!(file_len(&active), SMALL_SEGMENT_BYTES, "the zeros stay");
    let entries = log.entries(1, 1000, u64::MAX).expect("read");
    assert_eq!(entries.len() as u64, PER_SEGMENT + 3);
    for (got, index) in entries.iter().zip(1..) {
        assert_eq!(
            *got,
            entry(index, if index > PER_SEGMENT { 2 } else { 1 }, 100)
        );
    }
    // Filling the pre-written segment exactly and rolling on works too.
    let last = PER_SEGMENT + 3;
    fill(&log, last + 1, 2 * PER_SEGMENT, 2, 100);
    drop(log);
    // The pre-written segment, sealed, was trimmed to its data.
    assert_eq!(file_len(&active), 32 + PER_SEGMENT * ENTRY_BYTES);
    let report = verify_log(dir.path()).expect("verify");
    assert!(report.is_healthy());
    let sealed_count = report.segments.len() - 1;
    for segment in &report.segments[..sealed_count] {
        assert_eq!(segment.index_file, IndexFileStatus::Matches, "{segment:?}");
    }
    let log = open(dir.path());
    assert_eq!(log.last_index().expect("last"), last + 2 * PER_SEGMENT);
}

#[test]
fn truncated_entries_of_a_pre_written_segment_do_not_come_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, active) = pre_written_log(dir.path(), 10);
    let first = PER_SEGMENT + 1;
    log.truncate_suffix(first + 4).expect("truncate");
    assert_eq!(file_len(&active), SMALL_SEGMENT_BYTES, "length kept");
    // A crash right after: the truncation was synced.
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.last_index().expect("last"), first + 3);
    let bytes = fs::read(&active).expect("read");
    assert!(bytes[(32 + 4 * ENTRY_BYTES) as usize..]
        .iter()
        .all(|b| *b == 0));
    // A shorter entry of a later term in their place, then a crash: the
    // old frames after it must not reappear either.
    log.append(&[entry(first + 4, 3, 10)]).expect("append");
    log.sync().expect("sync");
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.last_index().expect("last"), first + 4);
    assert_eq!(log.last_term().expect("term"), 3);
    // Truncating into the sealed segment makes it active again.
    log.truncate_suffix(5)
        .expect("truncate into the sealed segment");
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.last_index().expect("last"), 4);
    fill(&log, 5, 2 * PER_SEGMENT, 4, 100);
    drop(log);
    assert_eq!(
        open(dir.path()).last_index().expect("last"),
        4 + 2 * PER_SEGMENT
    );
}

#[test]
fn a_log_restarted_after_the_leaders_start_uses_the_spare() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path());
    fill(&log, 1, SPARE_AFTER, 1, 100);
    wait_for_spare(&log);
    log.restart_after(1000, 7).expect("restart");
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    assert_eq!(file_len(&files[0]), SMALL_SEGMENT_BYTES);
    fill(&log, 1001, 3, 7, 100);
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.first_index().expect("first"), 1001);
    assert_eq!(log.last_index().expect("last"), 1003);
    assert_eq!(log.term(1000).expect("term"), 7);
}

#[test]
fn a_spare_that_runs_out_of_space_leaves_the_log_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, vfs) = faulty_log(dir.path());
    fill(&log, 1, SPARE_AFTER - 2, 1, 100);
    // Room for the appends after which a spare is wanted, none for the spare.
    vfs.set_space_left(2 * ENTRY_BYTES);
    fill(&log, SPARE_AFTER - 1, 2, 1, 100);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while log.spare_failures() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the spare did not fail"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!log.spare_is_ready());
    assert!(!dir.path().join("spare-segment.tmp").exists(), "removed");
    assert!(!log.is_failed());
    // The disk is full for the appends too: refused, not failed.
    assert!(matches!(
        log.append(&[entry(SPARE_AFTER + 1, 1, 100)]),
        Err(StoreError::NoSpace { .. })
    ));
    vfs.set_space_left(u64::MAX);
    // The roll makes a growing segment instead (no retry of the spare yet).
    fill(&log, SPARE_AFTER + 1, PER_SEGMENT, 1, 100);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2);
    assert!(
        file_len(&files[1]) < SMALL_SEGMENT_BYTES,
        "a growing segment"
    );
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.last_index().expect("last"), SPARE_AFTER + PER_SEGMENT);
}
