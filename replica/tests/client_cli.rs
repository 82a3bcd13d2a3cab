//! The client subcommands as a user runs them against a real one-member
//! group: failing fast when nothing listens, no-ops and empty entries said
//! as such, `read --raw` for binary payloads, `read --follow | head` ending
//! quietly, and one `--servers` flag for every subcommand.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dledger-replica"));
    for (key, _) in std::env::vars() {
        if key.starts_with("DLEDGER_") {
            command.env_remove(key);
        }
    }
    command.stdin(Stdio::null());
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running one-member group `g`, stopped on drop.
struct Solo {
    child: Child,
    tcp: String,
    http: String,
}

impl Drop for Solo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Solo {
    fn start(data_dir: &Path) -> Solo {
        let tcp = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let child = binary()
            .arg("serve")
            .args(["--group", "g", "--id", "solo"])
            .args(["--peers", &format!("solo={tcp}")])
            .args(["--listen", &tcp, "--http-listen", &http])
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve");
        let solo = Solo { child, tcp, http };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // Led, and the leader's no-op committed.
            let output = solo.cli(&["status", "--json"]);
            let json = text(&output.stdout);
            if json.contains("\"role\":\"leader\"") && !json.contains("\"commitIndex\":0") {
                return solo;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the one-member group did not elect itself");
    }

    /// A client subcommand against this group; `status` and
    /// `transfer-leader` get the HTTP address, the others the binary one.
    fn cli(&self, args: &[&str]) -> Output {
        let mut command = binary();
        command.args(args);
        match args[0] {
            "status" | "transfer-leader" => command.args(["--servers", &self.http]),
            _ => command.args(["--servers", &self.tcp, "--group", "g"]),
        };
        command.output().expect("run the CLI")
    }

    /// `POST /v1/entries` with `body`, by hand (binary payloads).
    fn post(&self, body: &[u8]) -> String {
        let mut stream = TcpStream::connect(&self.http).expect("connect HTTP");
        let head = format!(
            "POST /v1/entries HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }
}

#[test]
fn nothing_listening_fails_fast_and_names_the_addresses() {
    let address = format!("127.0.0.1:{}", free_port());
    for command in ["append", "get", "read"] {
        let started = Instant::now();
        let mut args = vec![command];
        match command {
            "append" => args.push("x"),
            "get" => args.push("1"),
            _ => {}
        }
        let output = binary()
            .args(&args)
            .args(["--servers", &address])
            .output()
            .unwrap();
        let took = started.elapsed();
        assert!(!output.status.success(), "{command}");
        let err = text(&output.stderr);
        assert!(
            err.contains(&format!("no member reachable at {address}")),
            "{command}: {err}"
        );
        assert!(took < Duration::from_secs(5), "{command} took {took:?}");
    }
}

#[test]
fn no_ops_empty_entries_and_binary_payloads_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::start(&dir.path().join("data"));
    // Index 1 is the leader's no-op of term 1.
    let output = solo.cli(&["get", "1"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("no-op"),
        "{}",
        text(&output.stdout)
    );

    let output = solo.cli(&["append", ""]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).starts_with("2\t"),
        "{}",
        text(&output.stdout)
    );
    let output = solo.cli(&["get", "2"]);
    let shown = text(&output.stdout);
    assert!(
        shown.contains("empty entry") && !shown.contains("no-op"),
        "{shown}"
    );

    let binary_payload: Vec<u8> = (0..=255u8).collect();
    let answer = solo.post(&binary_payload);
    assert!(answer.contains("\"index\":3"), "{answer}");
    let output = solo.cli(&["read", "--from", "3", "--raw"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(output.stdout, binary_payload);
    let output = solo.cli(&["get", "3", "--raw"]);
    assert_eq!(output.stdout, binary_payload);

    // The text form marks each kind in a listing.
    let output = solo.cli(&["read", "--from", "1", "--count", "2"]);
    let listing = text(&output.stdout);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert!(lines[0].ends_with("(no-op)"), "{listing}");
    assert!(lines[1].ends_with("(empty entry)"), "{listing}");
}

#[test]
fn read_follow_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::start(&dir.path().join("data"));
    assert!(solo.cli(&["append", "one", "two"]).status.success());
    let mut follow = binary()
        .args(["read", "--follow", "--servers", &solo.tcp, "--group", "g"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(follow.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("1\t"), "{first}");
    drop(stdout); // what `head -1` does after its line
    assert!(solo.cli(&["append", "three"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = follow.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "read --follow kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    follow
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn status_takes_servers_and_the_old_http_flag() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::start(&dir.path().join("data"));
    let output = solo.cli(&["status"]);
    assert!(
        text(&output.stdout).contains("leader"),
        "{}",
        text(&output.stderr)
    );
    let output = binary()
        .args(["status", "--http", &solo.http])
        .output()
        .unwrap();
    assert!(
        text(&output.stdout).contains("leader"),
        "{}",
        text(&output.stderr)
    );
    let help = binary().args(["status", "--help"]).output().unwrap();
    let help = text(&help.stdout);
    assert!(help.contains("--servers"), "{help}");
    assert!(!help.contains("--http "), "{help}");
}

#[test]
fn a_wait_longer_than_a_second_says_what_it_waits_for() {
    // Accepts connections but never answers the handshake, like a member
    // that is up but not serving yet.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let mut append = binary()
        .args(["append", "x", "--servers", &address])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = append.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let line = seen.recv_timeout(Duration::from_secs(10));
    let _ = append.kill();
    let _ = append.wait();
    drop(silent);
    let line = line.expect("a progress line");
    assert!(
        line.contains(&format!("waiting for a leader among {address}")),
        "{line}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900), "{line}");
}
