//! `dledger-replica serve` as a user runs it: bad flags and data
//! directories are refused with a sentence, a second replica on a running
//! one's directory is refused with the holder's PID, and the log tells the
//! effective configuration and the election.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// `serve` of a one-member group `solo` with the given extra flags.
fn serve(data_dir: &Path, tcp_port: u16, http_port: u16, extra: &[&str]) -> Command {
    serve_in(&["--group", "g"], data_dir, tcp_port, http_port, extra)
}

/// As [`serve`], with the group flag given.
fn serve_in(
    group: &[&str],
    data_dir: &Path,
    tcp_port: u16,
    http_port: u16,
    extra: &[&str],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dledger-replica"));
    command
        .arg("serve")
        .args(group)
        .args(["--id", "solo"])
        .args(["--peers", &format!("solo=127.0.0.1:{tcp_port}")])
        .args(["--listen", &format!("127.0.0.1:{tcp_port}")])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("DLEDGER_") {
            command.env_remove(key);
        }
    }
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bad_flags_are_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cases: [(&[&str], &[&str], &str); 2] = [
        (
            &["--group", "g"],
            &["--heartbeat-ms", "0"],
            "--heartbeat-ms is 0",
        ),
        (&["--group", ""], &[], "--group is empty"),
    ];
    for (group, flags, expected) in cases {
        let output = serve_in(group, &data, free_port(), free_port(), flags)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        assert!(
            stderr(&output).contains(expected),
            "{flags:?}: {}",
            stderr(&output)
        );
    }
    assert!(
        !data.exists(),
        "a refused start must not create the data dir"
    );
}

#[test]
fn a_data_dir_that_is_a_file_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"keep me").unwrap();
    let output = serve(&file, free_port(), free_port(), &[])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("not a directory"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn a_second_replica_on_a_locked_dir_is_refused_and_the_first_logs_its_election() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_path = dir.path().join("first.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let first = serve(&data, free_port(), free_port(), &[])
        .stderr(log_file)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id();
    let _first = Running(first);

    // Wait until the first one has claimed the directory and won.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    // A one-member group elects itself before its first soft state is
    // seen, so its first role line already says leader.
    while Instant::now() < deadline && !log.contains("leader at term") {
        std::thread::sleep(Duration::from_millis(100));
        log.clear();
        std::fs::File::open(&log_path)
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
    }
    assert!(log.contains("started as leader at term 1"), "{log}");
    assert!(log.contains("effective configuration"), "{log}");
    assert!(log.contains("heartbeat_ms=100"), "{log}");
    assert!(log.contains("peers=solo=127.0.0.1:"), "{log}");

    let output = serve(&data, free_port(), free_port(), &[])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains(&format!("PID {pid}")), "{err}");
}

/// The PID `serve` wrote into its data directory's lock file.
fn lock_pid(data_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("LOCK"))
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

#[test]
fn local_cluster_says_how_a_member_died_and_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cluster");
    let mut command = Command::new(env!("CARGO_BIN_EXE_dledger-replica"));
    command
        .arg("local-cluster")
        .args(["--replicas", "1"])
        .args(["--base-port", &free_port().to_string()])
        .args(["--http-base-port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut cluster = command.spawn().unwrap();
    let stdout = cluster.stdout.take().unwrap();
    let cluster = Running(cluster);
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str, timeout: Duration| -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut all = String::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match seen.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(line) => all.push_str(&(line + "\n")),
                Err(_) => break,
            }
        }
        Err(format!("no line with {needle:?} in:\n{all}"))
    };
    wait_for("leader", Duration::from_secs(30)).unwrap();
    // Past the crash-loop guard, so the member is restarted.
    std::thread::sleep(Duration::from_secs(6));
    let member_dir = data.join("node-0");
    let pid = lock_pid(&member_dir).expect("serve wrote its PID");
    // SAFETY: kill(2) on the serve process this test's cluster started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let line = wait_for(
        "node-0 killed by signal 9 (SIGKILL)",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(line.contains("restarted it"), "{line}");
    // The new process takes the lock again under another PID (it may not
    // have written it yet when the restart line shows).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut new_pid = None;
    while new_pid.is_none() && Instant::now() < deadline {
        new_pid = lock_pid(&member_dir).filter(|&now| now != pid);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(new_pid.is_some(), "the restarted serve wrote no new PID");
    // Stop the cluster the way Ctrl-C does, so it stops its member too.
    let cluster_pid = i32::try_from(cluster.0.id()).unwrap();
    // SAFETY: kill(2) on the child this test spawned.
    unsafe {
        libc::kill(cluster_pid, libc::SIGTERM);
    }
    wait_for("stopped; data kept", Duration::from_secs(15)).unwrap();
}
