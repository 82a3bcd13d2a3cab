//! The client subcommands as a user runs them against a real one-member
//! group: failing fast when nothing listens, no-ops and empty entries said
//! as such, `read --raw` for binary payloads, `read --follow | head` ending
//! quietly, one `--servers` flag for every subcommand, and consumer groups
//! (`read --consumer`, `offset get|commit`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dledger_replica::net::client::{Client, ClientError};
use dledger_replica::net::client_proto::RequestError;

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
    /// `serve` with `extra` flags, not waited for.
    fn spawn(data_dir: &Path, extra: &[&str]) -> Solo {
        let tcp = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let child = binary()
            .arg("serve")
            .args(["--group", "g", "--id", "solo"])
            .args(["--peers", &format!("solo={tcp}")])
            .args(["--listen", &tcp, "--http-listen", &http])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve");
        Solo { child, tcp, http }
    }

    fn start(data_dir: &Path) -> Solo {
        let solo = Solo::spawn(data_dir, &[]);
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

    /// As [`cli`](Self::cli), failing the test if it runs past `limit`.
    fn cli_within(&self, limit: Duration, args: &[&str]) -> Output {
        let mut command = binary();
        command
            .args(args)
            .args(["--servers", &self.tcp, "--group", "g"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run the CLI");
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("poll the CLI").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} still ran after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("the CLI's output")
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

/// The indexes of `read`'s text lines.
fn indexes(stdout: &[u8]) -> Vec<u64> {
    text(stdout)
        .lines()
        .map(|line| {
            line.split('\t')
                .next()
                .and_then(|index| index.parse().ok())
                .unwrap_or_else(|| panic!("not an entry line: {line:?}"))
        })
        .collect()
}

#[test]
fn read_as_a_consumer_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::start(&dir.path().join("data"));
    // Index 1 is the no-op; these are 2 to 6.
    let output = solo.cli(&["append", "a", "b", "c", "d", "e"]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let first = solo.cli(&["read", "--consumer", "c", "--count", "3"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(
        indexes(&first.stdout),
        vec![1, 2, 3],
        "{}",
        text(&first.stdout)
    );
    let output = solo.cli(&["offset", "get", "c"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "4");

    let second = solo.cli(&["read", "--consumer", "c", "--count", "3"]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(
        indexes(&second.stdout),
        vec![4, 5, 6],
        "{}",
        text(&second.stdout)
    );
    assert!(
        text(&second.stdout).ends_with("\te\n"),
        "{}",
        text(&second.stdout)
    );

    // What is left is the two commits themselves (7 and 8), shown as such;
    // reading them commits nothing more, so the read ends and the next one
    // starts at 7 again.
    for _ in 0..2 {
        let rest = solo.cli_within(Duration::from_secs(20), &["read", "--consumer", "c"]);
        assert!(rest.status.success(), "{}", text(&rest.stderr));
        let listing = text(&rest.stdout);
        assert_eq!(indexes(&rest.stdout), vec![7, 8], "{listing}");
        assert!(
            listing.contains("(offset commit: consumer group c, offset 4)"),
            "{listing}"
        );
        assert!(
            listing.contains("(offset commit: consumer group c, offset 7)"),
            "{listing}"
        );
        let output = solo.cli(&["offset", "get", "c"]);
        assert_eq!(text(&output.stdout).trim(), "7");
    }

    // A group with no offset starts at --from.
    let other = solo.cli(&["read", "--consumer", "d", "--from", "5", "--count", "1"]);
    assert!(other.status.success(), "{}", text(&other.stderr));
    assert_eq!(indexes(&other.stdout), vec![5], "{}", text(&other.stdout));
    let output = solo.cli(&["offset", "get", "d", "--local"]);
    assert_eq!(text(&output.stdout).trim(), "6", "{}", text(&output.stderr));
}

#[test]
fn read_as_a_consumer_with_follow_commits_and_then_waits() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::start(&dir.path().join("data"));
    assert!(solo.cli(&["append", "a", "b"]).status.success());
    let mut follow = binary()
        .args(["read", "--consumer", "f", "--follow"])
        .args(["--servers", &solo.tcp, "--group", "g"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // Entries 1 to 3, then its own commit of offset 4 (entry 4), which it
    // prints but does not commit past.
    let mut printed = Vec::new();
    while printed.len() < 4 {
        match seen.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => printed.push(line),
            Err(_) => break,
        }
    }
    // Idle: nothing more is printed or committed.
    let more = seen.recv_timeout(Duration::from_millis(1500));
    let offset = solo.cli(&["offset", "get", "f"]);
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(printed.len(), 4, "{printed:?}");
    assert!(
        printed[3].starts_with("4\t1\t(offset commit: consumer group f, offset 4)"),
        "{printed:?}"
    );
    assert!(more.is_err(), "printed while idle: {more:?}");
    assert_eq!(text(&offset.stdout).trim(), "4", "{}", text(&offset.stderr));
}

#[test]
fn a_lost_conditional_commit_is_a_conflict_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::start(&dir.path().join("data"));
    assert!(solo.cli(&["append", "a", "b"]).status.success());

    let output = solo.cli(&["offset", "get", "c"]);
    assert!(!output.status.success());
    let err = text(&output.stderr);
    assert!(err.contains("has no committed offset"), "{err}");

    let output = solo.cli(&["offset", "commit", "c", "2", "--expected", "0"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "2");

    let output = solo.cli(&["offset", "commit", "c", "3", "--expected", "1"]);
    assert!(!output.status.success(), "{}", text(&output.stdout));
    let err = text(&output.stderr);
    assert!(
        err.contains("conflict") && err.contains("is at offset 2"),
        "{err}"
    );
    let output = solo.cli(&["offset", "get", "c"]);
    assert_eq!(text(&output.stdout).trim(), "2");

    // Past the commit index + 1: refused, nothing changed.
    let output = solo.cli(&["offset", "commit", "c", "999"]);
    assert!(!output.status.success());
    let err = text(&output.stderr);
    assert!(err.contains("out of range"), "{err}");
    let output = solo.cli(&["offset", "get", "c"]);
    assert_eq!(text(&output.stdout).trim(), "2");

    // With the right expectation it goes through.
    let output = solo.cli(&["offset", "commit", "c", "3", "--expected", "2"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "3");
}

#[test]
fn read_help_states_the_at_least_once_window() {
    let help = binary().args(["read", "--help"]).output().unwrap();
    let help = text(&help.stdout);
    assert!(help.contains("--consumer <CONSUMER_GROUP>"), "{help}");
    assert!(help.contains("At-least-once"), "{help}");
    assert!(help.contains("printed again"), "{help}");
    let help = binary()
        .args(["offset", "commit", "--help"])
        .output()
        .unwrap();
    let help = text(&help.stdout);
    assert!(help.contains("--expected"), "{help}");
}

#[test]
fn bad_group_names_are_refused_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::start(&dir.path().join("data"));
    let long = "x".repeat(129);
    let cases: [&[&str]; 4] = [
        &["offset", "get", "a b"],
        &["offset", "commit", "a/b", "1"],
        &["read", "--consumer", "", "--count", "1"],
        &["offset", "get", &long],
    ];
    for args in cases {
        let output = solo.cli(args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            output.stdout.is_empty(),
            "{args:?}: {}",
            text(&output.stdout)
        );
        let err = text(&output.stderr);
        assert!(err.contains("bad group name"), "{args:?}: {err}");
    }
    // The server refuses them too, whatever client sends them.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::connect(vec![solo.tcp.clone()], "g").await.unwrap();
        let err = client.commit_offset("a b", 1, None).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Request(RequestError::BadGroup { reason }) if reason.contains("only A-Z")),
            "{err}"
        );
        let err = client.consumer_offset("", true).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Request(RequestError::BadGroup { reason }) if reason.contains("empty")),
            "{err}"
        );
        // And a good name round-trips through the library client.
        assert_eq!(client.consumer_offset("fresh", false).await.unwrap(), None);
        assert_eq!(client.commit_offset("fresh", 1, Some(0)).await.unwrap(), 1);
        let found = client.consumer_offset("fresh", true).await.unwrap().unwrap();
        assert_eq!((found.group.as_str(), found.offset), ("fresh", 1));
    });
    let output = solo.cli(&["offset", "get", "fresh"]);
    assert_eq!(text(&output.stdout).trim(), "1");
}

/// `--tls-*` and `--token-file` on `serve`; the client commands' `--ca`,
/// `--cert`, `--key` and `--token`.
#[test]
fn a_tls_group_takes_a_certificate_or_a_token_with_its_right() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The files come from `certs` (a CA read back from its files signs).
    let certs = dir.path().join("certs");
    let certs_dir = certs.display().to_string();
    let output = binary()
        .args(["certs", "ca", "--group", "g", "--dir", &certs_dir])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let again = binary()
        .args(["certs", "ca", "--group", "g", "--dir", &certs_dir])
        .output()
        .unwrap();
    assert!(
        !again.status.success() && text(&again.stderr).contains("exists"),
        "a second CA overwrote the first"
    );
    let write = |file: &str, names: &[&str]| {
        let mut command = binary();
        command.args(["certs", "issue", "--dir", &certs_dir, "--out", file]);
        for name in names {
            command.args(["--name", name]);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        let path = |extension: &str| {
            certs
                .join(format!("{file}.{extension}"))
                .display()
                .to_string()
        };
        (path("crt"), path("key"))
    };
    let ca_file = certs.join("ca.crt").display().to_string();
    let (member_cert, member_key) = write("solo", &["solo", "127.0.0.1"]);
    let (app_cert, app_key) = write("app", &["billing"]);
    let (admin_cert, admin_key) = write("admin", &["dledger-operator"]);
    let tokens = dir.path().join("tokens");
    let read_token = "read-token-0123456789";
    let write_token = "write-token-0123456789";
    std::fs::write(
        &tokens,
        format!("# who may do what\nread {read_token}\nwrite {write_token}\n"),
    )
    .unwrap();

    let tokens = tokens.display().to_string();
    let solo = Solo::spawn(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &member_cert,
            "--tls-key",
            &member_key,
            "--tls-ca",
            &ca_file,
            "--token-file",
            &tokens,
        ],
    );
    let (tcp, http) = (solo.tcp.clone(), solo.http.clone());
    let run = |args: &[&str]| {
        let output = binary().args(args).output().expect("run the CLI");
        (
            output.status.success(),
            text(&output.stdout),
            text(&output.stderr),
        )
    };
    let with_app = ["--ca", &ca_file, "--cert", &app_cert, "--key", &app_key];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut args = vec!["status", "--json", "--servers", &http];
        args.extend(with_app);
        let (_, stdout, _) = run(&args);
        if stdout.contains("\"role\":\"leader\"") && !stdout.contains("\"commitIndex\":0") {
            break;
        }
        assert!(Instant::now() < deadline, "no leader over TLS");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut append = vec!["append", "--servers", &tcp, "--group", "g"];
    append.extend(with_app);
    append.push("over tls");
    let (ok, stdout, stderr) = run(&append);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("2\t"), "{stdout}");
    let (ok, _, stderr) = run(&["append", "--servers", &tcp, "--group", "g", "plain"]);
    assert!(!ok && stderr.contains("requires TLS"), "{stderr}");

    // HTTP: the CA alone proves nothing; a read token reads; a write token
    // may not transfer leadership; the admin certificate may.
    let (ok, _, stderr) = run(&["status", "--servers", &http, "--ca", &ca_file]);
    assert!(!ok && stderr.contains("401"), "{stderr}");
    let reader = ["--servers", &http, "--ca", &ca_file, "--token", read_token];
    let (ok, stdout, stderr) = run(&[&["status"][..], &reader[..]].concat());
    assert!(ok && stdout.contains("leader"), "{stderr}");
    let writer = ["--servers", &http, "--ca", &ca_file, "--token", write_token];
    let (ok, _, stderr) = run(&[&["transfer-leader"][..], &writer[..]].concat());
    assert!(!ok && stderr.contains("403"), "{stderr}");
    let admin = [
        "--servers",
        &http,
        "--ca",
        &ca_file,
        "--cert",
        &admin_cert,
        "--key",
        &admin_key,
    ];
    let (ok, stdout, stderr) = run(&[&["members", "list"][..], &admin[..]].concat());
    assert!(ok && stdout.contains("solo"), "{stderr}");
}

/// `--token-file` without TLS: on the binary port a client proves its
/// right with `Authenticate` (the CLI's `--token`) before anything else.
#[test]
fn tokens_on_the_binary_port_give_their_rights() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = dir.path().join("tokens");
    let read_token = "read-token-0123456789";
    let write_token = "write-token-0123456789";
    std::fs::write(&tokens, format!("read {read_token}\nwrite {write_token}\n")).unwrap();
    let tokens = tokens.display().to_string();
    let solo = Solo::spawn(&dir.path().join("data"), &["--token-file", &tokens]);
    let tcp = solo.tcp.clone();
    let run = |extra: &[&str]| {
        let output = binary()
            .args(extra)
            .args(["--servers", &tcp, "--group", "g"])
            .output()
            .expect("run the CLI");
        (
            output.status.success(),
            text(&output.stdout),
            text(&output.stderr),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, stdout, _) = run(&["append", "--token", write_token, "first"]);
        if ok {
            assert!(stdout.starts_with("2\t"), "{stdout}");
            break;
        }
        assert!(Instant::now() < deadline, "no append with a write token");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, _, stderr) = run(&["append", "anonymous"]);
    assert!(!ok && stderr.contains("unauthenticated"), "{stderr}");
    let (ok, _, stderr) = run(&["append", "--token", "not-a-known-token-at-all", "x"]);
    assert!(!ok && stderr.contains("token is not known"), "{stderr}");
    let (ok, _, stderr) = run(&["append", "--token", read_token, "reader"]);
    assert!(!ok && stderr.contains("forbidden"), "{stderr}");
    let (ok, stdout, stderr) = run(&["get", "--token", read_token, "2"]);
    assert!(ok && stdout.contains("first"), "{stderr}");
    // Nothing the refused ones sent was appended.
    let (ok, _, _) = run(&["get", "--token", read_token, "3"]);
    assert!(!ok, "a refused append was committed");
}
