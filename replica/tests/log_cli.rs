//! `dledger-replica log verify|dump`, run as the built binary.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use dledger_replica::entry::Entry;
use dledger_replica::entry::HardState;
use dledger_replica::store::{Log, LogOptions, MetaStore};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dledger-replica"))
        .args(args)
        .env_remove("DLEDGER_DATA_DIR")
        .env_remove("DLEDGER_PEERS")
        .output()
        .expect("run dledger-replica")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A data directory with 300 entries over several segments and a hard state.
fn data_dir(dir: &Path) {
    let options = LogOptions {
        segment_bytes: 8192,
        read_only: false,
        start_writeback: false,
    };
    let log = Log::open(&dir.join("log"), options).expect("open");
    let entries: Vec<Entry> = (1..=300)
        .map(|i| {
            Entry::normal(
                i,
                1 + i / 100,
                Bytes::from(format!("payload-{i:04}-{}", "x".repeat(60))),
            )
        })
        .collect();
    log.append(&entries).expect("append");
    log.sync().expect("sync");
    MetaStore::open(&dir.join("meta"))
        .expect("meta")
        .save(HardState {
            term: 4,
            vote: Some(2),
        })
        .expect("save");
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir.join("log"))
        .expect("read dir")
        .map(|item| item.expect("item").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn verify_accepts_a_good_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    data_dir(dir.path());
    let output = run(&[
        "log",
        "verify",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("first index 1  last index 300  last term 4"),
        "{text}"
    );
    assert!(
        text.contains("00000000000000000001.seg  entries 1..="),
        "{text}"
    );
    assert!(text.contains("index ok"), "{text}");
    assert!(
        text.contains("hard state: term 4  vote #2 (give --peers"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("ok"), "{text}");
}

#[test]
fn verify_names_the_vote_from_the_member_list() {
    let dir = tempfile::tempdir().expect("temp dir");
    data_dir(dir.path());
    let vote = dledger_replica::server::members::node_id_of("node-1");
    MetaStore::open(&dir.path().join("meta"))
        .expect("meta")
        .save(HardState {
            term: 5,
            vote: Some(vote),
        })
        .expect("save");
    let data = dir.path().to_str().expect("utf-8");
    let peers = "node-0=127.0.0.1:1,node-1=127.0.0.1:2,node-2=127.0.0.1:3";
    let output = run(&["log", "verify", "--data-dir", data, "--peers", peers]);
    let text = stdout(&output);
    assert!(text.contains("hard state: term 5  vote node-1\n"), "{text}");
    let output = run(&[
        "log",
        "verify",
        "--data-dir",
        data,
        "--peers",
        "node-0,node-2",
    ]);
    let text = stdout(&output);
    assert!(
        text.contains(&format!("vote #{vote} (none of --peers)")),
        "{text}"
    );
}

#[test]
fn verify_reports_damage_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    data_dir(dir.path());
    let files = segments(dir.path());
    let mut bytes = fs::read(&files[1]).expect("read");
    bytes[200] ^= 0x40;
    fs::write(&files[1], bytes).expect("write");
    let output = run(&[
        "log",
        "verify",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let name = files[1].to_str().expect("utf-8");
    assert!(
        text.contains(&format!("DAMAGE: {name} at offset")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("damaged"), "{text}");
}

#[test]
fn verify_notes_a_torn_tail_without_failing() {
    let dir = tempfile::tempdir().expect("temp dir");
    data_dir(dir.path());
    let last = segments(dir.path()).pop().expect("segment");
    // The end of the data (a pre-written segment has zeros after it; the
    // last payload ends in 'x').
    let bytes = fs::read(&last).expect("read");
    let len = bytes.iter().rposition(|byte| *byte != 0).expect("data") as u64 + 1;
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open");
    file.set_len(len - 10).expect("cut");
    let output = run(&[
        "log",
        "verify",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("torn tail"), "{text}");
    assert!(text.contains("last index 299"), "{text}");
    // Read-only: the tail is still there.
    assert_eq!(fs::metadata(&last).expect("stat").len(), len - 10);
}

#[test]
fn dump_lists_the_asked_range() {
    let dir = tempfile::tempdir().expect("temp dir");
    data_dir(dir.path());
    let path = dir.path().to_str().expect("utf-8");
    let output = run(&[
        "log",
        "dump",
        "--data-dir",
        path,
        "--from",
        "99",
        "--count",
        "3",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&fields[..4], &["99", "1", "normal", "73"], "{text}");
    assert!(fields[4].starts_with("payload-0099-xxx"), "{text}");
    assert!(fields[4].ends_with("..."), "{text}");
    assert!(lines[2].trim_start().starts_with("100 "), "{text}");
    assert_eq!(lines[3].split_whitespace().nth(1), Some("2"), "{text}");
}

#[test]
fn dump_and_verify_fail_clearly_on_a_missing_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope");
    let path = missing.to_str().expect("utf-8");
    let output = run(&["log", "dump", "--data-dir", path]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot open"));
    let output = run(&["log", "verify", "--data-dir", path]);
    assert_eq!(output.status.code(), Some(2));
    assert!(!missing.exists(), "the tools create nothing");
}

#[test]
fn dump_of_a_damaged_entry_exits_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    data_dir(dir.path());
    let files = segments(dir.path());
    let mut bytes = fs::read(&files[0]).expect("read");
    bytes[100] ^= 1;
    fs::write(&files[0], bytes).expect("write");
    let output = run(&[
        "log",
        "dump",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--count",
        "5",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("corrupt data in"));
}
