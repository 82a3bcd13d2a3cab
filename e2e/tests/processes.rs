//! Tier 3: three real `dledger-replica serve` processes on loopback, under
//! continuous load, through kill -9, SIGSTOP, restarts, a wiped data directory
//! (replaced by a new incarnation) and leadership transfer. Each scenario ends with every acknowledged entry
//! present at its index, in order, and the same committed log on all members.
//!
//! `failover_figures` (ignored by default) measures failover and transfer
//! times and prints them: `cargo test --release -p dledger-e2e --test processes
//! -- --ignored --nocapture failover_figures`.

use std::time::{Duration, Instant};

use dledger_e2e::cluster::Cluster;
use dledger_e2e::http::Client;
use dledger_e2e::load::{Load, LoadConfig};
use dledger_e2e::monitor::Monitor;
use dledger_e2e::scenario::{
    assert_no_split_brain, assert_verified, p50_and_max, serial, ELECTION_TIMEOUT_MAX,
    FIRST_LEADER_WAIT, NEW_LEADER_WAIT, PROGRESS_WAIT,
};
use dledger_e2e::wait::wait_until;

const MEMBERS: usize = 3;
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
const WRITERS: usize = 3;

fn start() -> Cluster {
    Cluster::loopback(MEMBERS).unwrap_or_else(|error| panic!("starting the group: {error}"))
}

fn load(cluster: &Cluster, label: &str) -> Load {
    Load::start(&LoadConfig::new(label, WRITERS, cluster.http_addresses()))
}

fn a_follower(cluster: &Cluster, leader: usize) -> usize {
    (0..cluster.size())
        .find(|index| *index != leader)
        .unwrap_or_else(|| panic!("no follower in a group of {}", cluster.size()))
}

#[test]
fn killing_the_leader_five_times_loses_nothing() {
    let _serial = serial();
    let mut cluster = start();
    cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let monitor = Monitor::start(cluster.endpoints());
    let load = load(&cluster, "kill");
    load.wait_for_more(20, PROGRESS_WAIT)
        .expect("writes before the first kill");
    for round in 0..5 {
        let (leader, term) = cluster.wait_for_leader(NEW_LEADER_WAIT).expect("a leader");
        let killed_at = Instant::now();
        cluster.kill(leader).expect("kill -9");
        let ack = load
            .wait_for_ack(PROGRESS_WAIT, |ack| ack.at > killed_at && ack.term > term)
            .unwrap_or_else(|error| panic!("round {round}: no write after the kill: {error}"));
        eprintln!(
            "e2e: round {round}: killed leader {} (term {term}); first acknowledgement after {} ms in term {}",
            cluster.member(leader).id,
            ack.at.duration_since(killed_at).as_millis(),
            ack.term
        );
        cluster.start(leader).expect("restart the killed leader");
        load.wait_for_more(20, PROGRESS_WAIT)
            .expect("writes with the group whole again");
    }
    let acks = load.stop().expect("load");
    assert_no_split_brain(&monitor.stop().expect("monitor"));
    cluster.check_alive().expect("no replica died on its own");
    assert_verified(&cluster, &acks);
}

#[test]
fn a_stopped_leader_steps_down_after_sigcont_without_split_brain() {
    let _serial = serial();
    let mut cluster = start();
    let (leader, term) = cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let monitor = Monitor::start(cluster.endpoints());
    let load = load(&cluster, "stop");
    load.wait_for_more(20, PROGRESS_WAIT)
        .expect("writes before SIGSTOP");

    let stopped_at = Instant::now();
    cluster.pause(leader).expect("SIGSTOP");
    let (new_leader, new_term) = cluster
        .wait_for_new_leader(leader, NEW_LEADER_WAIT)
        .expect("the others elect a leader");
    assert!(
        new_term > term,
        "new leader in term {new_term}, old term {term}"
    );
    load.wait_for_ack(PROGRESS_WAIT, |ack| {
        ack.at > stopped_at && ack.term >= new_term
    })
    .expect("writes while the old leader is stopped");
    // Stay stopped well past an election timeout.
    let stopped_for = ELECTION_TIMEOUT_MAX * 2;
    if let Some(rest) = stopped_for.checked_sub(stopped_at.elapsed()) {
        std::thread::sleep(rest);
    }
    cluster.resume(leader).expect("SIGCONT");
    let status = wait_until(
        "the resumed leader to report follower",
        NEW_LEADER_WAIT,
        || cluster.status(leader).ok().filter(|s| s.role == "follower"),
    )
    .expect("the resumed leader steps down");
    assert!(
        status.term >= new_term,
        "resumed at term {} < {new_term}",
        status.term
    );
    let followed = status.leader_id.as_deref();
    assert!(
        followed.is_some() && followed != Some(cluster.member(leader).id.as_str()),
        "the resumed member follows {followed:?}, not another member (new leader was {})",
        cluster.member(new_leader).id
    );
    load.wait_for_more(20, PROGRESS_WAIT)
        .expect("writes after SIGCONT");

    let acks = load.stop().expect("load");
    assert_no_split_brain(&monitor.stop().expect("monitor"));
    assert_verified(&cluster, &acks);
}

#[test]
fn a_restarted_follower_catches_up() {
    let _serial = serial();
    let mut cluster = start();
    let (leader, _) = cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let follower = a_follower(&cluster, leader);
    let load = load(&cluster, "restart");
    load.wait_for_more(20, PROGRESS_WAIT)
        .expect("writes before the restart");
    assert!(
        cluster.terminate(follower).expect("SIGTERM"),
        "the follower ignored SIGTERM"
    );
    load.wait_for_more(50, PROGRESS_WAIT)
        .expect("writes with one follower down");
    cluster.start(follower).expect("start again");
    load.wait_for_more(50, PROGRESS_WAIT)
        .expect("writes after the restart");
    let acks = load.stop().expect("load");
    assert_verified(&cluster, &acks);
}

#[test]
fn the_whole_group_restarts_gracefully_and_after_kill_9_with_everything() {
    let _serial = serial();
    let mut cluster = start();
    cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let mut acks = Vec::new();
    for (round, graceful) in [(0, true), (1, false)] {
        let load = load(&cluster, &format!("whole{round}-"));
        load.wait_for_more(50, PROGRESS_WAIT)
            .expect("writes before the restart");
        if graceful {
            acks.extend(load.stop().expect("load"));
            for index in 0..MEMBERS {
                cluster.terminate(index).expect("SIGTERM");
            }
        } else {
            // Power-cut style: all at once, writes in flight.
            for index in 0..MEMBERS {
                cluster.kill(index).expect("kill -9");
            }
            acks.extend(load.stop().expect("load"));
        }
        for index in 0..MEMBERS {
            cluster.start(index).expect("start again");
        }
        cluster
            .wait_for_leader(FIRST_LEADER_WAIT)
            .expect("a leader after the restart");
    }
    let load = load(&cluster, "whole-after");
    load.wait_for_more(20, PROGRESS_WAIT)
        .expect("writes after the restarts");
    acks.extend(load.stop().expect("load"));
    assert_verified(&cluster, &acks);
}

#[test]
fn a_follower_with_a_wiped_data_dir_rejoins_as_a_new_incarnation() {
    let _serial = serial();
    let mut cluster = start();
    let (leader, _) = cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let follower = a_follower(&cluster, leader);
    let id = cluster.member(follower).id.clone();
    let load = load(&cluster, "wipe");
    load.wait_for_more(100, PROGRESS_WAIT)
        .expect("writes before the wipe");
    cluster.kill(follower).expect("kill -9");
    cluster.wipe(follower).expect("wipe");
    cluster
        .start_joining(follower)
        .expect("start empty, to join");
    // It comes back as another incarnation: the group still counts the old
    // one (now silent), and nothing of the new one, which holds no vote.
    let status = wait_until("the wiped member to answer", PROGRESS_WAIT, || {
        cluster.status(follower).ok()
    })
    .expect("status");
    assert_ne!(status.incarnation, 0, "{status:?}");
    assert!(!status.is_leader());
    let admin = Client::new(cluster.member(leader).http_address, CHANGE_TIMEOUT);
    let members = admin.members().expect("members");
    assert!(members.voter_ids().contains(&id), "{members:?}");
    // The replacement, as the operator does it: remove the old incarnation,
    // add the new one as a learner, promote it once caught up.
    let removed = admin
        .remove_member(&id)
        .expect("remove the old incarnation");
    assert_eq!(removed.voters.len(), MEMBERS - 1, "{removed:?}");
    let peer = cluster.member(follower).peer_address.to_string();
    let http = cluster.member(follower).http_address.to_string();
    let added = admin
        .add_member(&id, &peer, &http)
        .expect("add the new incarnation");
    assert_eq!(added.learner_ids(), vec![id.clone()]);
    assert_eq!(
        added.learners[0].incarnation, status.incarnation,
        "the leader asked the member for its incarnation"
    );
    let commit_at_add = cluster.status(leader).expect("leader status").commit_index;
    wait_until("the new incarnation to catch up", PROGRESS_WAIT, || {
        let status = cluster.status(follower).ok()?;
        (status.role == "learner" && status.last_index >= commit_at_add).then_some(())
    })
    .expect("catch up");
    let promoted = wait_until("the promotion", PROGRESS_WAIT, || {
        admin.promote_member(&id).ok()
    })
    .expect("promote");
    assert_eq!(promoted.voters.len(), MEMBERS, "{promoted:?}");
    load.wait_for_more(20, PROGRESS_WAIT)
        .expect("writes after the rejoin");
    let acks = load.stop().expect("load");
    let verified = assert_verified(&cluster, &acks);
    assert_eq!(
        verified.members, MEMBERS,
        "the new incarnation's log was compared too"
    );
}

#[test]
fn leadership_transfers_under_load() {
    let _serial = serial();
    let cluster = start();
    let (leader, term) = cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let target = a_follower(&cluster, leader);
    let target_id = cluster.member(target).id.clone();
    let monitor = Monitor::start(cluster.endpoints());
    let load = load(&cluster, "transfer");
    load.wait_for_more(20, PROGRESS_WAIT)
        .expect("writes before the transfer");

    let requested_at = Instant::now();
    cluster
        .with_client(leader, NEW_LEADER_WAIT, |client| {
            client.transfer_leadership(Some(&target_id))
        })
        .expect("transfer-leadership");
    let answered = requested_at.elapsed();
    let (new_leader, new_term) = cluster
        .wait_for_new_leader(leader, NEW_LEADER_WAIT)
        .expect("a new leader");
    assert_eq!(new_leader, target, "leadership went elsewhere than asked");
    assert!(new_term > term);
    let ack = load
        .wait_for_ack(PROGRESS_WAIT, |ack| {
            ack.at > requested_at && ack.term >= new_term
        })
        .expect("writes on the new leader");
    eprintln!(
        "e2e: transfer answered after {} ms; first write on the new leader {} ms after the request",
        answered.as_millis(),
        ack.at.duration_since(requested_at).as_millis()
    );
    load.wait_for_more(20, PROGRESS_WAIT)
        .expect("writes after the transfer");
    let acks = load.stop().expect("load");
    assert_no_split_brain(&monitor.stop().expect("monitor"));
    assert_verified(&cluster, &acks);
}

/// Figures, not a pass/fail on time: failover (SIGKILL of the leader to the
/// first acknowledged append in a newer term) over 20 kills, and leadership
/// transfer (request to first acknowledged append on the new leader) over 10.
/// Entries appended while a follower is frozen: several times the default
/// `--ready-max-lag` (1000).
const FROZEN_APPENDS: usize = 4_000;
const FROZEN_ENTRY_BYTES: usize = 8 * 1024;

#[test]
fn a_thawed_follower_is_not_ready_until_it_caught_up() {
    let _serial = serial();
    let mut cluster = start();
    let (leader, _) = cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let follower = a_follower(&cluster, leader);
    wait_until("the follower to be ready", PROGRESS_WAIT, || {
        cluster
            .with_client(follower, PROGRESS_WAIT, |client| client.ready())
            .ok()
            .filter(|ready| *ready)
    })
    .expect("ready before the freeze");
    cluster.pause(follower).expect("SIGSTOP the follower");
    let leader_http = cluster.member(leader).http_address;
    let writers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let client = dledger_e2e::http::Client::new(leader_http, PROGRESS_WAIT);
                let payload = vec![b'f'; FROZEN_ENTRY_BYTES];
                for _ in 0..FROZEN_APPENDS / 4 {
                    let outcome = client.append(&payload);
                    assert!(
                        matches!(
                            outcome,
                            dledger_e2e::http::AppendOutcome::Acknowledged { .. }
                        ),
                        "append while the follower is frozen: {outcome:?}"
                    );
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let leader_commit = cluster.status(leader).expect("leader status").commit_index;
    cluster.resume(follower).expect("SIGCONT the follower");
    let ready_at_once = cluster
        .with_client(follower, PROGRESS_WAIT, |client| client.ready())
        .expect("readyz right after the thaw");
    let thawed = cluster.status(follower).expect("follower status");
    eprintln!(
        "e2e: thawed follower: lastIndex {} commitIndex {}, leader's commit {leader_commit}, ready {ready_at_once}",
        thawed.last_index, thawed.commit_index
    );
    assert!(
        !ready_at_once,
        "ready at once although {FROZEN_APPENDS} entries behind"
    );
    let caught_up = wait_until("the thawed follower to be ready", PROGRESS_WAIT, || {
        let ready = cluster
            .with_client(follower, PROGRESS_WAIT, |client| client.ready())
            .ok()?;
        let status = cluster.status(follower).ok()?;
        // Sampled after the readyz answer: lastIndex only grows.
        ready.then_some(status.last_index)
    })
    .expect("caught up after the thaw");
    assert!(
        caught_up + 1000 >= leader_commit,
        "ready at lastIndex {caught_up}, more than the bound behind the leader's commit {leader_commit}"
    );
    cluster.check_alive().expect("no replica died");
}

#[test]
#[ignore = "measures and prints figures; run with --ignored --nocapture"]
fn failover_figures() {
    let _serial = serial();
    let mut cluster = start();
    cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let load = Load::start(&LoadConfig::new("figures", 2, cluster.http_addresses()));
    load.wait_for_more(20, PROGRESS_WAIT)
        .expect("writes before measuring");

    let mut failovers = Vec::new();
    for _ in 0..20 {
        let (leader, term) = cluster.wait_for_leader(NEW_LEADER_WAIT).expect("a leader");
        let killed_at = Instant::now();
        cluster.kill(leader).expect("kill -9");
        let ack = load
            .wait_for_ack(PROGRESS_WAIT, |ack| ack.at > killed_at && ack.term > term)
            .expect("write after the kill");
        failovers.push(ack.at.duration_since(killed_at));
        cluster.start(leader).expect("restart");
        load.wait_for_more(20, PROGRESS_WAIT)
            .expect("writes with the group whole");
    }
    let mut transfers = Vec::new();
    for _ in 0..10 {
        let (leader, term) = cluster.wait_for_leader(NEW_LEADER_WAIT).expect("a leader");
        let target_id = cluster.member(a_follower(&cluster, leader)).id.clone();
        let requested_at = Instant::now();
        cluster
            .with_client(leader, NEW_LEADER_WAIT, |client| {
                client.transfer_leadership(Some(&target_id))
            })
            .expect("transfer-leadership");
        let ack = load
            .wait_for_ack(PROGRESS_WAIT, |ack| {
                ack.at > requested_at && ack.term > term
            })
            .expect("write after the transfer");
        transfers.push(ack.at.duration_since(requested_at));
        load.wait_for_more(20, PROGRESS_WAIT)
            .expect("writes after the transfer");
    }
    let acks = load.stop().expect("load");
    assert_verified(&cluster, &acks);
    let (p50, max) = p50_and_max(&mut failovers);
    println!(
        "failover (SIGKILL leader -> first ack in a newer term), {} kills: p50 {} ms, max {} ms",
        failovers.len(),
        p50.as_millis(),
        max.as_millis()
    );
    let (p50, max) = p50_and_max(&mut transfers);
    println!(
        "leadership transfer (request -> first ack on the new leader), {} transfers: p50 {} ms, max {} ms",
        transfers.len(),
        p50.as_millis(),
        max.as_millis()
    );
}
