//! Consumer offsets on real `serve` processes over loopback: an offset
//! committed on the leader survives the leader's SIGKILL (the new leader and
//! every follower hold it), and a member's restart (it is rebuilt from the
//! log on disk), even once retention deleted the entries that committed it
//! (it is rebuilt from the consumer checkpoint); a damaged checkpoint stops
//! the member with an error naming the file.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// An HTTP answer: status code and body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One HTTP/1.1 request with `Connection: close`; `None` when nothing
/// answers (the member is down or not listening yet).
fn http(address: &str, method: &str, path: &str, body: &str) -> Option<Answer> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (headers, body) = answer.split_once("\r\n\r\n")?;
    let status = headers.split(' ').nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        headers: headers.to_string(),
        body: body.to_string(),
    })
}

/// Polls `probe` until it gives a value, or panics with `what` after 30 s.
fn wait_for<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    wait_within(what, Duration::from_secs(30), probe)
}

/// Polls `probe` until it gives a value, or panics with `what` after `limit`.
fn wait_within<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One member of a group, killed (SIGKILL) on drop.
struct Member {
    name: String,
    http: String,
    data_dir: PathBuf,
    peers: String,
    http_peers: String,
    listen: String,
    /// More `serve` flags.
    args: Vec<String>,
    /// Where its stderr goes (appended to across restarts).
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dledger-replica"));
        for (key, _) in std::env::vars() {
            if key.starts_with("DLEDGER_") {
                command.env_remove(key);
            }
        }
        let child = command
            .arg("serve")
            .args(["--group", "g", "--id", &self.name])
            .args(["--peers", &self.peers])
            .args(["--http-peers", &self.http_peers])
            .args(["--listen", &self.listen, "--http-listen", &self.http])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .expect("open the member's log"),
            )
            .spawn()
            .expect("start serve");
        self.child = Some(child);
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (a clean stop: a leader hands over first), and wait for the
    /// process to be gone.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = i32::try_from(child.id()).expect("a pid");
            // SAFETY: a signal to our own child, still unwaited for.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit on its own; its exit code and stderr.
    fn wait_exit(&mut self) -> (Option<i32>, String) {
        let child = self.child.as_mut().expect("started");
        let status = wait_for(&format!("{} to exit", self.name), || {
            child.try_wait().ok().flatten()
        });
        self.child = None;
        let stderr = std::fs::read_to_string(&self.log).unwrap_or_default();
        (status.code(), stderr)
    }

    fn status(&self) -> Option<serde_json::Value> {
        let answer = http(&self.http, "GET", "/status", "")?;
        (answer.status == 200).then(|| answer.json())
    }

    /// Whether this member leads and its term's no-op is committed.
    fn leads(&self) -> bool {
        self.status().is_some_and(|status| {
            status["role"] == "leader"
                && status["commitIndex"].as_u64() >= status["lastIndex"].as_u64()
                && status["commitIndex"].as_u64() > Some(0)
        })
    }

    /// The group's offset on this member, if it has one.
    fn offset(&self, group: &str, linearizable: bool) -> Option<u64> {
        let path = format!("/v1/consumers/{group}?linearizable={linearizable}");
        let answer = http(&self.http, "GET", &path, "")?;
        if answer.status != 200 {
            return None;
        }
        answer.json()["offset"].as_u64()
    }

    fn put_offset(&self, group: &str, body: &str) -> Answer {
        let path = format!("/v1/consumers/{group}/offset");
        http(&self.http, "PUT", &path, body).expect("the member answers")
    }

    fn append(&self, payload: &str) -> u64 {
        let answer = http(&self.http, "POST", "/v1/entries", payload).expect("append answered");
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["index"].as_u64().expect("an index")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A group of `names`, not started yet, with data under `root`.
fn group(root: &Path, names: &[&str]) -> Vec<Member> {
    let tcp: Vec<String> = names
        .iter()
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let http: Vec<String> = names
        .iter()
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let list = |addresses: &[String]| {
        names
            .iter()
            .zip(addresses)
            .map(|(name, address)| format!("{name}={address}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let peers = list(&tcp);
    let http_peers = list(&http);
    names
        .iter()
        .enumerate()
        .map(|(i, name)| Member {
            name: name.to_string(),
            http: http[i].clone(),
            data_dir: root.join(name),
            peers: peers.clone(),
            http_peers: http_peers.clone(),
            listen: tcp[i].clone(),
            args: Vec::new(),
            log: root.join(format!("{name}.stderr")),
            child: None,
        })
        .collect()
}

fn leader_of(members: &[Member]) -> usize {
    wait_for("a leader with its no-op committed", || {
        members
            .iter()
            .position(|member| member.child.is_some() && member.leads())
    })
}

#[test]
fn an_offset_committed_on_the_leader_survives_its_kill_on_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = group(dir.path(), &["a", "b", "c"]);
    for member in &mut members {
        member.start();
    }
    let old = leader_of(&members);
    for payload in ["one", "two", "three"] {
        members[old].append(payload);
    }
    let created = members[old].put_offset("orders", r#"{"offset":3,"expected":0}"#);
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(
        created.json(),
        serde_json::json!({"group": "orders", "offset": 3})
    );
    // A second create loses: the group exists.
    let again = members[old].put_offset("orders", r#"{"offset":4,"expected":0}"#);
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.json()["currentOffset"], 3);
    // A follower redirects the commit to the leader.
    let follower = (old + 1) % members.len();
    // (Once it has heard of the leader: until then it answers 503.)
    let redirected = wait_for("a redirect from a follower", || {
        let answer = members[follower].put_offset("orders", r#"{"offset":4}"#);
        (answer.status != 503).then_some(answer)
    });
    assert_eq!(redirected.status, 307, "{}", redirected.body);
    let location = format!(
        "location: http://{}/v1/consumers/orders/offset",
        members[old].http
    );
    assert!(
        redirected.headers.to_lowercase().contains(&location),
        "{}",
        redirected.headers
    );

    members[old].kill();
    let new = leader_of(&members);
    assert_ne!(new, old);
    assert_eq!(members[new].offset("orders", true), Some(3));
    for member in members.iter().filter(|member| member.child.is_some()) {
        wait_for(&format!("offset 3 on {}", member.name), || {
            (member.offset("orders", false) == Some(3)).then_some(())
        });
    }
    // The new leader goes on from the offset the old one stored.
    let moved = members[new].put_offset("orders", r#"{"offset":4,"expected":3}"#);
    assert_eq!(moved.status, 200, "{}", moved.body);

    // The old leader comes back as a follower and holds both commits: the
    // one from its own log, rebuilt at start, and the one replicated since.
    members[old].start();
    let old_member = &members[old];
    wait_for("offset 4 on the restarted old leader", || {
        (old_member.offset("orders", false) == Some(4)).then_some(())
    });
    for member in &members {
        wait_for(&format!("offset 4 on {}", member.name), || {
            (member.offset("orders", false) == Some(4)).then_some(())
        });
    }

    // Two consumers that both read offset 4 race: exactly one wins, and
    // every member holds the winner's offset.
    let leader = &members[new];
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let racers: Vec<_> = [5, 6]
            .into_iter()
            .map(|offset| {
                let body = format!(r#"{{"offset":{offset},"expected":4}}"#);
                scope.spawn(move || leader.put_offset("orders", &body))
            })
            .collect();
        racers
            .into_iter()
            .map(|racer| racer.join().expect("a racer"))
            .collect()
    });
    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    assert!(
        statuses == [200, 409] || statuses == [409, 200],
        "{statuses:?}"
    );
    let winner = answers
        .iter()
        .find(|answer| answer.status == 200)
        .and_then(|answer| answer.json()["offset"].as_u64())
        .expect("the winner's offset");
    let loser = answers.iter().find(|answer| answer.status == 409).unwrap();
    assert_eq!(loser.json()["currentOffset"], winner, "{}", loser.body);
    for member in &members {
        wait_for(&format!("offset {winner} on {}", member.name), || {
            (member.offset("orders", false) == Some(winner)).then_some(())
        });
    }
}

#[test]
fn a_restarted_member_rebuilds_its_offsets_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = group(dir.path(), &["solo"]);
    members[0].start();
    leader_of(&members);
    members[0].append("one");
    members[0].append("two");
    let stored = members[0].put_offset("orders", r#"{"offset":2}"#);
    assert_eq!(stored.status, 200, "{}", stored.body);
    let stored = members[0].put_offset("billing", r#"{"offset":1,"expected":0}"#);
    assert_eq!(stored.status, 200, "{}", stored.body);
    let before = http(&members[0].http, "GET", "/v1/consumers", "").unwrap();
    assert_eq!(before.status, 200);

    members[0].kill();
    members[0].start();
    leader_of(&members);
    let member = &members[0];
    let after = wait_for("the offsets after the restart", || {
        let answer = http(&member.http, "GET", "/v1/consumers", "")?;
        let groups = answer.json()["groups"].as_array()?.len();
        (answer.status == 200 && groups == 2).then_some(answer)
    });
    let offsets = |answer: &Answer| -> Vec<(String, u64)> {
        answer.json()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|group| {
                (
                    group["group"].as_str().unwrap().to_string(),
                    group["offset"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(offsets(&after), offsets(&before));
    assert_eq!(
        offsets(&after),
        vec![("billing".to_string(), 1), ("orders".to_string(), 2)]
    );
    // The condition is decided against the rebuilt state.
    let again = member.put_offset("billing", r#"{"offset":2,"expected":0}"#);
    assert_eq!(again.status, 409, "{}", again.body);
    let metrics = http(&member.http, "GET", "/metrics", "").unwrap();
    assert!(
        metrics
            .body
            .contains("dledger_consumer_lag{group=\"orders\"}"),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("dledger_consumer_groups 2"));
}

/// Small segments and a size bound, so a few hundred entries make retention
/// delete segments (it looks every 10 s).
fn with_retention(members: &mut [Member]) {
    for member in members {
        member.args = [
            "--segment-bytes",
            "4096",
            "--max-entry-bytes",
            "1024",
            "--retention-max-bytes",
            "8192",
        ]
        .map(String::from)
        .to_vec();
    }
}

/// Every group and its offset on `member`, in name order, once it answers.
fn all_offsets(member: &Member) -> Option<Vec<(String, u64)>> {
    let answer = http(&member.http, "GET", "/v1/consumers", "")?;
    if answer.status != 200 {
        return None;
    }
    answer.json()["groups"]
        .as_array()?
        .iter()
        .map(|group| {
            Some((
                group["group"].as_str()?.to_string(),
                group["offset"].as_u64()?,
            ))
        })
        .collect()
}

fn status_index(member: &Member, field: &str) -> Option<u64> {
    member.status()?[field].as_u64()
}

/// Appends filler through `members[leader]` until every running member's
/// log starts above `index` (retention deleted the segments up to it).
fn append_until_deleted(members: &[Member], leader: usize, index: u64) {
    let filler = "x".repeat(200);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let deleted = members
            .iter()
            .filter(|m| m.child.is_some())
            .all(|member| status_index(member, "firstIndex").is_some_and(|first| first > index));
        if deleted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not delete up to {index} within 90 s"
        );
        // Keep the log a few segments ahead of the bound, without flooding.
        let last = status_index(&members[leader], "lastIndex").unwrap_or(0);
        if last < index + 150 {
            for _ in 0..20 {
                members[leader].append(&filler);
            }
        } else {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn expected(groups: &[(&str, u64)]) -> Vec<(String, u64)> {
    groups
        .iter()
        .map(|(group, offset)| (group.to_string(), *offset))
        .collect()
}

#[test]
fn offsets_committed_in_deleted_segments_survive_restarts_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = group(dir.path(), &["a", "b", "c"]);
    with_retention(&mut members);
    for member in &mut members {
        member.start();
    }
    let leader = leader_of(&members);
    for payload in ["one", "two", "three"] {
        members[leader].append(payload);
    }
    for (group, body) in [
        ("orders", r#"{"offset":2,"expected":0}"#),
        ("billing", r#"{"offset":3}"#),
        ("audit.v1", r#"{"offset":1}"#),
        ("audit.v1", r#"{"offset":4,"expected":1}"#),
    ] {
        let answer = members[leader].put_offset(group, body);
        assert_eq!(answer.status, 200, "{group}: {}", answer.body);
    }
    let want = expected(&[("audit.v1", 4), ("billing", 3), ("orders", 2)]);
    // Every commit is at or below the commit index now.
    let committed = status_index(&members[leader], "commitIndex").expect("a commit index");
    append_until_deleted(&members, leader, committed);
    for member in &members {
        assert!(
            member.data_dir.join("consumer-offsets").is_file(),
            "no checkpoint in {}",
            member.data_dir.display()
        );
        wait_for(&format!("the offsets on {}", member.name), || {
            (all_offsets(member)? == want).then_some(())
        });
    }

    // A SIGKILL'd member (the leader) comes back with the same offsets: the
    // entries that committed them are gone from every log, so they come
    // from its checkpoint.
    members[leader].kill();
    members[leader].start();
    let restarted = &members[leader];
    let first = wait_for("the restarted member's status", || {
        status_index(restarted, "firstIndex")
    });
    assert!(
        first > committed,
        "first index {first}, commits up to {committed}"
    );
    wait_for("the offsets on the SIGKILL'd member", || {
        (all_offsets(restarted)? == want).then_some(())
    });

    // Every member stopped, then started again.
    for member in &mut members {
        member.stop();
    }
    for member in &mut members {
        member.start();
    }
    let leader = leader_of(&members);
    for member in &members {
        let first = wait_for("a status", || status_index(member, "firstIndex"));
        assert!(first > committed, "{}: first index {first}", member.name);
        wait_for(&format!("the offsets on restarted {}", member.name), || {
            (all_offsets(member)? == want).then_some(())
        });
    }
    // Conditions are decided against the restored state.
    let commit = status_index(&members[leader], "commitIndex").unwrap();
    let moved =
        members[leader].put_offset("orders", &format!(r#"{{"offset":{commit},"expected":2}}"#));
    assert_eq!(moved.status, 200, "{}", moved.body);
    // (An offset within the retained log, so the range check passes.)
    let again =
        members[leader].put_offset("billing", &format!(r#"{{"offset":{commit},"expected":0}}"#));
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.json()["currentOffset"], 3, "{}", again.body);
}

#[test]
fn a_damaged_checkpoint_stops_the_member_with_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = group(dir.path(), &["solo"]);
    with_retention(&mut members);
    members[0].start();
    leader_of(&members);
    members[0].append("one");
    let stored = members[0].put_offset("orders", r#"{"offset":2}"#);
    assert_eq!(stored.status, 200, "{}", stored.body);
    let committed = status_index(&members[0], "commitIndex").unwrap();
    append_until_deleted(&members, 0, committed);
    members[0].kill();

    let checkpoint = members[0].data_dir.join("consumer-offsets");
    let good = std::fs::read(&checkpoint).expect("a checkpoint");
    let verify = |data_dir: &Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_dledger-replica"))
            .args(["log", "verify", "--data-dir"])
            .arg(data_dir)
            .env_remove("DLEDGER_DATA_DIR")
            .env_remove("DLEDGER_PEERS")
            .output()
            .expect("run log verify");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, out) = verify(&members[0].data_dir);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("consumer checkpoint: 1 groups"), "{out}");

    // A flipped byte: refused at start, and by log verify.
    let mut damaged = good.clone();
    let in_body = damaged.len() - 5; // a byte of the last offset
    damaged[in_body] ^= 0x01;
    std::fs::write(&checkpoint, &damaged).unwrap();
    members[0].start();
    let (code, stderr) = members[0].wait_exit();
    assert_ne!(code, Some(0), "{stderr}");
    let named = checkpoint.display().to_string();
    assert!(
        stderr.contains(&named) && stderr.contains("CRC mismatch"),
        "{stderr}"
    );
    let (code, out) = verify(&members[0].data_dir);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&named) && out.contains("DAMAGE"), "{out}");

    // A whole checkpoint that does not reach the log's start: refused too,
    // rather than serving offsets that miss commits.
    let mut stale = dledger_replica::consumers::ConsumerState::default();
    stale.skip_to(1);
    std::fs::write(&checkpoint, stale.encode_checkpoint(1)).unwrap();
    members[0].start();
    let (code, stderr) = members[0].wait_exit();
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&named) && stderr.contains("are lost"),
        "{stderr}"
    );

    // The good one back: the member starts with its offset.
    std::fs::write(&checkpoint, &good).unwrap();
    members[0].start();
    leader_of(&members);
    let member = &members[0];
    wait_for("the offset from the checkpoint", || {
        (all_offsets(member)? == expected(&[("orders", 2)])).then_some(())
    });
}
