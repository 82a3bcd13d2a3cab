//! The harness's process control (start, SIGSTOP, SIGCONT, SIGTERM, kill -9,
//! restart, wipe, exit detection) and the `serve` command line it passes,
//! checked with a shell stand-in that logs its arguments and sleeps.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dledger_e2e::cluster::{process_state as state, Cluster, GROUP};

fn stand_in(dir: &Path, script: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("stand-in.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dledger-e2e-{name}-{}", std::process::id()))
}

#[test]
fn members_are_started_signalled_restarted_and_wiped() {
    let dir = temp("control");
    let binary = stand_in(&dir, r#"echo "args: $*"; exec sleep 120"#);
    let mut cluster = Cluster::loopback_with_binary(3, binary).expect("start stand-ins");

    let peers = cluster.peers_flag();
    assert_eq!(peers.split(',').count(), 3);
    let member = cluster.member(1);
    let http_peers: Vec<String> = (0..cluster.size())
        .map(|index| {
            let member = cluster.member(index);
            format!("{}={}", member.id, member.http_address)
        })
        .collect();
    let expected = format!(
        "args: serve --group {GROUP} --group-id {} --id {} --peers {peers} --initial-state new \
         --http-peers {} --data-dir {} --listen {} --http-listen {}",
        cluster.group_id(),
        member.id,
        http_peers.join(","),
        cluster.data_dir(1).display(),
        member.peer_address,
        member.http_address
    );
    let logged = dledger_e2e::wait::wait_until(
        "the stand-in to log",
        std::time::Duration::from_secs(5),
        || {
            let log = std::fs::read_to_string(cluster.log_path(1)).ok()?;
            log.contains("args:").then_some(log)
        },
    )
    .expect("log");
    assert!(
        logged.contains(&expected),
        "logged {logged:?}, expected {expected:?}"
    );

    let pid = cluster.pid(0).expect("running");
    cluster.pause(0).expect("SIGSTOP");
    assert_eq!(state(pid).as_deref(), Some("T"), "stopped");
    cluster.resume(0).expect("SIGCONT");
    assert_ne!(state(pid).as_deref(), Some("T"), "resumed");

    assert!(
        cluster.terminate(0).expect("SIGTERM"),
        "sleep exits on SIGTERM"
    );
    assert!(!cluster.is_running(0));
    assert_eq!(state(pid), None, "terminated and reaped");

    let pid = cluster.pid(1).expect("running");
    cluster.kill(1).expect("kill -9");
    assert_eq!(state(pid), None, "killed and reaped");
    std::fs::write(cluster.data_dir(1).join("log"), b"x").expect("data");
    cluster.wipe(1).expect("wipe");
    assert!(!cluster.data_dir(1).exists(), "wiped");
    cluster.start(1).expect("start again");
    assert!(cluster.data_dir(1).is_dir(), "data dir made again");

    cluster.restart(2).expect("restart");
    assert!(cluster.is_running(2));
    assert_eq!(cluster.first_exited(), None);
    cluster.check_alive().expect("all alive");
    let run_dir = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(!run_dir.exists(), "a passing test removes its directory");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_member_that_exits_is_noticed_at_once() {
    let dir = temp("exit");
    let binary = stand_in(&dir, "exit 3");
    let cluster = Cluster::loopback_with_binary(3, binary).expect("start stand-ins");
    let started = std::time::Instant::now();
    let error = cluster
        .wait_for_leader(std::time::Duration::from_secs(20))
        .expect_err("no leader from processes that exit");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?} to notice",
        started.elapsed()
    );
    assert!(
        error.to_string().contains("exited while waiting"),
        "{error}"
    );
    drop(cluster);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
