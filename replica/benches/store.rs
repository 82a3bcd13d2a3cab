//! Store figures: durable group-commit throughput against raw write+fdatasync
//! bandwidth of the same disk, open time of a 1 GiB log (clean and after a
//! torn tail), and sequential read throughput.
//!
//! `cargo bench -p dledger-replica --bench store`
//! Environment: `DLEDGER_BENCH_DIR` (where to write; default a temp dir under
//! /tmp), `DLEDGER_BENCH_SECONDS` (per configuration and side, split in
//! alternating slices; default 4),
//! `DLEDGER_BENCH_OPEN_GIB` (size of the open-time log; default 1),
//! `DLEDGER_BENCH_KEEP=1` (keep the 1 GiB log, e.g. to time a cold open with
//! `dledger-replica log verify` after evicting it from the page cache).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dledger_replica::entry::Entry;
use dledger_replica::store::vfs::{RealVfs, Vfs};
use dledger_replica::store::{
    GroupCommit, GroupCommitOptions, Log, LogOptions, FRAME_HEADER_BYTES,
};

const MIB: f64 = 1024.0 * 1024.0;
/// Alternating store/raw slices per configuration.
const ROUNDS: u32 = 4;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let base = std::env::var("DLEDGER_BENCH_DIR").unwrap_or_else(|_| "/tmp".into());
    std::fs::create_dir_all(&base).expect("create bench dir");
    let mut root = tempfile::Builder::new()
        .prefix("dledger-store-bench-")
        .tempdir_in(&base)
        .expect("temp dir");
    if std::env::var("DLEDGER_BENCH_KEEP").is_ok_and(|keep| keep == "1") {
        root.disable_cleanup(true);
    }
    let seconds: f64 = env_or("DLEDGER_BENCH_SECONDS", 4.0);
    println!(
        "store benchmark in {} ({seconds} s per run)",
        root.path().display()
    );
    throughput(root.path(), Duration::from_secs_f64(seconds));
    open_and_read(root.path(), env_or("DLEDGER_BENCH_OPEN_GIB", 1.0));
}

fn throughput(root: &Path, run_for: Duration) {
    println!();
    println!("durable append (group commit, one entry per call) vs raw write+fdatasync of the same batch size");
    println!(
        "{:>7} {:>7} {:>12} {:>10} {:>10} {:>11} {:>10} {:>9}",
        "entry",
        "threads",
        "entries/s",
        "MB/s pay",
        "MB/s disk",
        "batch KiB",
        "raw MB/s",
        "disk/raw"
    );
    for size in [128usize, 1024, 16384] {
        for threads in [1usize, 16, 64] {
            // The disk is shared with other work and its fsync latency drifts:
            // alternate short store and raw slices so both see the same disk,
            // the raw slices using the batch size the store just produced.
            let dir = root.join(format!("tp-{size}-{threads}"));
            let (mut entries, mut elapsed, mut batches_bytes, mut raw_bytes, mut raw_seconds) =
                (0u64, 0f64, Vec::new(), 0f64, 0f64);
            for _ in 0..ROUNDS {
                let slice = run_for / ROUNDS;
                let (round_entries, round_elapsed, batch_bytes) =
                    group_commit_run(&dir, size, threads, slice);
                entries += round_entries;
                elapsed += round_elapsed;
                batches_bytes.push(batch_bytes);
                let (bytes, seconds) = raw_write(root, batch_bytes.max(1), slice);
                raw_bytes += bytes;
                raw_seconds += seconds;
            }
            std::fs::remove_dir_all(&dir).expect("clean up");
            let batch_bytes = batches_bytes.iter().sum::<u64>() / ROUNDS as u64;
            let raw = raw_bytes / raw_seconds / MIB;
            let per_second = entries as f64 / elapsed;
            let payload = per_second * size as f64 / MIB;
            let disk = per_second * (size + FRAME_HEADER_BYTES) as f64 / MIB;
            println!(
                "{:>7} {:>7} {:>12.0} {:>10.1} {:>10.1} {:>11.1} {:>10.1} {:>8.0}%",
                size,
                threads,
                per_second,
                payload,
                disk,
                batch_bytes as f64 / 1024.0,
                raw,
                100.0 * disk / raw
            );
        }
    }
}

/// Runs `threads` appenders for `run_for`; returns entries, seconds, and
/// the mean bytes one batch wrote.
fn group_commit_run(dir: &Path, size: usize, threads: usize, run_for: Duration) -> (u64, f64, u64) {
    let log = Arc::new(Log::open(dir, LogOptions::default()).expect("open"));
    let group = Arc::new(GroupCommit::start(log, GroupCommitOptions::default()).expect("start"));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let payload = Bytes::from(vec![0x5au8; size]);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (group, stop, done, payload) =
                (group.clone(), stop.clone(), done.clone(), payload.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    group
                        .append_payloads_durable(1, vec![payload.clone()])
                        .expect("append");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("worker");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = group.stats();
    let batch_bytes =
        (stats.payload_bytes + stats.entries * FRAME_HEADER_BYTES as u64) / stats.batches.max(1);
    (done.load(Ordering::Relaxed), elapsed, batch_bytes)
}

/// Bytes written and seconds taken by sequential `batch_bytes` writes,
/// each followed by fdatasync, for `run_for`.
fn raw_write(root: &Path, batch_bytes: u64, run_for: Duration) -> (f64, f64) {
    let path = root.join("raw");
    let file = RealVfs.open(&path, true).expect("open raw");
    let buf = vec![0xa5u8; batch_bytes as usize];
    let start = Instant::now();
    let mut offset = 0u64;
    while start.elapsed() < run_for {
        file.write_all_at(&buf, offset).expect("write");
        file.sync_data().expect("fdatasync");
        offset += batch_bytes;
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).expect("remove raw");
    (offset as f64, elapsed)
}

fn open_and_read(root: &Path, gib: f64) {
    let dir = root.join("open");
    let target_bytes = (gib * 1024.0 * MIB) as u64;
    let entry_bytes = 1024usize;
    let build = Instant::now();
    let log = Log::open(&dir, LogOptions::default()).expect("open");
    let payload = Bytes::from(vec![0x33u8; entry_bytes]);
    let mut next = 1u64;
    let mut written = 0u64;
    // Fill to the target, then on until the last segment is nearly full:
    // the worst case for recovery, which rescans the last segment.
    loop {
        let batch: Vec<Entry> = (next..next + 4096)
            .map(|i| Entry::normal(i, 1, payload.clone()))
            .collect();
        log.append(&batch).expect("append");
        next += 4096;
        written += 4096 * (entry_bytes + FRAME_HEADER_BYTES) as u64;
        if written >= target_bytes {
            let active = log.segments().expect("segments").pop().expect("active");
            if active.size_bytes > LogOptions::default().segment_bytes * 9 / 10 {
                break;
            }
        }
    }
    log.sync().expect("sync");
    let segments = log.segments().expect("segments");
    let total: u64 = segments.iter().map(|segment| segment.size_bytes).sum();
    let last_segment_bytes = segments.last().map_or(0, |segment| segment.size_bytes);
    drop(log);
    println!();
    println!(
        "open: {:.2} GiB in {} segments, {} entries of {entry_bytes} B, last segment {:.1} MiB (built in {:.1} s)",
        total as f64 / 1024.0 / MIB,
        segments.len(),
        next - 1,
        last_segment_bytes as f64 / MIB,
        build.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let log = Log::open(&dir, LogOptions::default()).expect("open");
    println!(
        "  after a clean stop: {:.0} ms (page cache warm)",
        start.elapsed().as_secs_f64() * 1000.0
    );
    let last_index = log.last_index().expect("last");
    drop(log);
    // A crash in the middle of a write: half a frame at the end.
    let active = segments.last().expect("active").path.clone();
    let file = RealVfs.open(&active, false).expect("open active");
    let len = file.len_bytes().expect("len");
    file.write_all_at(&[1u8; 600], len)
        .expect("write torn tail");
    drop(file);
    let start = Instant::now();
    let log = Log::open(&dir, LogOptions::default()).expect("open");
    println!(
        "  after a crash (torn tail cut): {:.0} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(log.last_index().expect("last"), last_index);
    // Without index files every sealed segment is rescanned.
    drop(log);
    for segment in &segments {
        let _ = std::fs::remove_file(segment.path.with_extension("idx"));
    }
    let start = Instant::now();
    let log = Log::open(&dir, LogOptions::default()).expect("open");
    println!(
        "  with every index file missing (full CRC scan, rebuild): {:.0} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    let start = Instant::now();
    let mut index = log.first_index().expect("first");
    let mut bytes = 0u64;
    while index <= last_index {
        let batch = log.entries(index, 100_000, 4 << 20).expect("read");
        bytes += batch
            .iter()
            .map(|entry| entry.payload.len() as u64)
            .sum::<u64>();
        index += batch.len() as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "sequential read (4 MiB batches, CRC verified, page cache warm): {:.0} MB/s payload, {:.0} entries/s",
        bytes as f64 / elapsed / MIB,
        last_index as f64 / elapsed
    );
}
