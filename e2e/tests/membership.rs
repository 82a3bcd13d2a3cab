//! Tier 3: membership changes between real `dledger-replica serve` processes
//! on loopback, under continuous load: 3 → 4 → 5 voters by adding learners
//! and promoting them, then back to 3 by removing members, the leader
//! among them. Every acknowledged entry must be on every member at the end,
//! and each step prints the longest gap between acknowledged writes.
//!
//! The figures test (ignored by default) measures how fast a new learner
//! catches up over a large log: `cargo test --release -p dledger-e2e --test
//! membership -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use dledger_e2e::cluster::Cluster;
use dledger_e2e::http::{AppendOutcome, Client, Members, OffsetCommitOutcome};
use dledger_e2e::load::{Ack, Load, LoadConfig};
use dledger_e2e::scenario::{
    assert_verified, serial, FIRST_LEADER_WAIT, NEW_LEADER_WAIT, PROGRESS_WAIT,
};
use dledger_e2e::wait::wait_until;

const VOTERS: usize = 3;
const SPARES: usize = 2;
const WRITERS: usize = 3;
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

fn client(cluster: &Cluster, index: usize) -> Client {
    Client::new(cluster.member(index).http_address, CHANGE_TIMEOUT)
}

/// The longest time between two acknowledgements in `[from, to]` (the step's
/// edges count as acknowledgements).
fn longest_gap(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = acks
        .iter()
        .map(|ack| ack.at)
        .filter(|at| *at >= from && *at <= to)
        .collect();
    times.push(from);
    times.push(to);
    times.sort();
    times
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default()
}

/// Waits until member `index` reports `role` and holds the leader's commit.
fn wait_for_role(cluster: &Cluster, index: usize, role: &str) {
    let id = cluster.member(index).id.clone();
    wait_until(
        &format!("{id} to be a caught-up {role}"),
        PROGRESS_WAIT,
        || {
            let status = cluster.status(index).ok()?;
            let (leader, _) = cluster.wait_for_leader(Duration::from_millis(100)).ok()?;
            let commit = cluster.status(leader).ok()?.commit_index;
            (status.role == role && status.last_index + 100 >= commit).then_some(())
        },
    )
    .unwrap_or_else(|error| panic!("{error}"));
}

fn members_of(cluster: &Cluster, index: usize) -> Members {
    client(cluster, index)
        .members()
        .unwrap_or_else(|error| panic!("GET /admin/members: {error}"))
}

/// One step: `change` is sent to member `via` (a redirect takes it to the
/// leader); prints and returns the longest gap between acknowledged
/// writes while it ran.
fn step(
    name: &str,
    cluster: &Cluster,
    load: &Load,
    change: impl FnOnce() -> dledger_e2e::error::Result<Members>,
) -> Members {
    let started = Instant::now();
    let members = change().unwrap_or_else(|error| panic!("{name}: {error}"));
    load.wait_for_more(20, PROGRESS_WAIT)
        .unwrap_or_else(|error| panic!("writes after {name}: {error}"));
    let gap = longest_gap(&load.acks(), started, Instant::now());
    eprintln!(
        "e2e: membership step {name:<22} answered in {:>5} ms; longest write gap {:>4} ms; voters {:?} learners {:?}",
        started.elapsed().as_millis(),
        gap.as_millis(),
        members.voter_ids(),
        members.learner_ids(),
    );
    let _ = cluster;
    members
}

#[test]
fn grow_to_five_and_shrink_to_three_under_load() {
    let _serial = serial();
    let mut cluster = Cluster::loopback_with_spares(VOTERS, SPARES)
        .unwrap_or_else(|error| panic!("starting the group: {error}"));
    let (leader, _) = cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    // The spares know no configuration: they neither lead nor vote.
    for spare in VOTERS..VOTERS + SPARES {
        let status = cluster.status(spare).expect("spare status");
        assert!(!status.is_leader(), "{status:?}");
    }
    let initial = members_of(&cluster, leader);
    assert_eq!(initial.voters.len(), VOTERS, "{initial:?}");
    let voter_http: Vec<_> = (0..VOTERS)
        .map(|index| cluster.member(index).http_address)
        .collect();
    let load = Load::start(&LoadConfig::new("membership", WRITERS, voter_http));
    load.wait_for_more(100, PROGRESS_WAIT)
        .expect("writes before any change");

    // Grow: each spare joins as a learner, catches up, and is promoted.
    for spare in VOTERS..VOTERS + SPARES {
        let id = cluster.member(spare).id.clone();
        let peer = cluster.member(spare).peer_address.to_string();
        let http = cluster.member(spare).http_address.to_string();
        // Sent to a follower on purpose: it redirects to the leader.
        let via = (leader + 1) % VOTERS;
        let added = step(&format!("add {id}"), &cluster, &load, || {
            client(&cluster, via).add_member(&id, &peer, &http)
        });
        assert!(added.learner_ids().contains(&id), "{added:?}");
        wait_for_role(&cluster, spare, "learner");
        let promoted = step(&format!("promote {id}"), &cluster, &load, || {
            client(&cluster, via).promote_member(&id)
        });
        assert!(promoted.voter_ids().contains(&id), "{promoted:?}");
        wait_for_role(&cluster, spare, "follower");
    }
    let (leader, _) = cluster.wait_for_leader(NEW_LEADER_WAIT).expect("leader");
    assert_eq!(members_of(&cluster, leader).voters.len(), VOTERS + SPARES);

    // Shrink: the leader first (it hands over), then one more member.
    let old_leader_id = cluster.member(leader).id.clone();
    let via = (leader + 1) % (VOTERS + SPARES);
    let after = step(
        &format!("remove {old_leader_id} (leader)"),
        &cluster,
        &load,
        || client(&cluster, via).remove_member(&old_leader_id),
    );
    assert!(!after.voter_ids().contains(&old_leader_id), "{after:?}");
    let (new_leader, _) = cluster
        .wait_for_new_leader(leader, NEW_LEADER_WAIT)
        .expect("a new leader after the leader's removal");
    assert_ne!(new_leader, leader);
    let second = (0..VOTERS + SPARES)
        .find(|index| *index != leader && *index != new_leader)
        .expect("another member");
    let second_id = cluster.member(second).id.clone();
    let after = step(&format!("remove {second_id}"), &cluster, &load, || {
        client(&cluster, new_leader).remove_member(&second_id)
    });
    assert_eq!(after.voters.len(), VOTERS + SPARES - 2, "{after:?}");

    // The removed members stay quiet: no election is won by them, and the
    // group keeps its term while they run on.
    let term = cluster.status(new_leader).expect("leader status").term;
    load.wait_for_more(50, PROGRESS_WAIT)
        .expect("writes after the shrink");
    let later = cluster.status(new_leader).expect("leader status");
    assert!(later.is_leader() && later.term == term, "{later:?}");
    for removed in [leader, second] {
        let status = cluster.status(removed).expect("removed member's status");
        assert!(!status.is_leader(), "a removed member leads: {status:?}");
    }

    let acks = load.stop().expect("load");
    cluster.kill(leader).expect("stop the removed leader");
    cluster.kill(second).expect("stop the removed member");
    let verified = assert_verified(&cluster, &acks);
    assert_eq!(
        verified.members, VOTERS,
        "the three remaining members were compared"
    );
}

#[test]
fn a_change_on_a_member_that_is_not_a_learner_is_refused_with_a_reason() {
    let _serial = serial();
    let cluster = Cluster::loopback_with_spares(VOTERS, 1)
        .unwrap_or_else(|error| panic!("starting the group: {error}"));
    let (leader, _) = cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let leader_client = client(&cluster, leader);
    let voter = cluster.member((leader + 1) % VOTERS).id.clone();
    let refused = leader_client
        .promote_member(&voter)
        .expect_err("a voter is promoted");
    assert!(refused.to_string().contains("409"), "{refused}");
    let unknown = leader_client
        .remove_member("nobody")
        .expect_err("nobody removed");
    assert!(unknown.to_string().contains("404"), "{unknown}");
    let bad = leader_client
        .add_member("x", "no-port", "127.0.0.1:1")
        .expect_err("an address without a port");
    assert!(bad.to_string().contains("400"), "{bad}");
    // A member to be added must say its incarnation, or be named with it.
    let silent = leader_client
        .add_member("ghost", "127.0.0.1:9", "127.0.0.1:9")
        .expect_err("a member nobody runs is added without its incarnation");
    assert!(silent.to_string().contains("incarnation"), "{silent}");
    // A learner that never answered is not promoted.
    let spare = cluster.member(VOTERS).id.clone();
    leader_client
        .add_member_incarnation(&spare, "127.0.0.1:9", "127.0.0.1:9", 7)
        .expect("add a learner at an address nobody serves");
    let early = leader_client
        .promote_member(&spare)
        .expect_err("a learner that never caught up is promoted");
    assert!(early.to_string().contains("409"), "{early}");
    let members = leader_client.members().expect("members");
    assert_eq!(members.voters.len(), VOTERS, "{members:?}");
    assert_eq!(members.learner_ids(), vec![spare]);
}

/// Adds member `spare` as a learner, through `leader`.
fn add_learner(cluster: &Cluster, leader: usize, spare: usize) {
    let member = cluster.member(spare);
    client(cluster, leader)
        .add_member(
            &member.id,
            &member.peer_address.to_string(),
            &member.http_address.to_string(),
        )
        .expect("add the learner");
}

/// `VOTERS` members and `spares`, with segments of 64 KiB and retention
/// down to 256 KiB, so a few hundred writes of 4 KB make it delete.
fn retention_cluster(spares: usize) -> Cluster {
    let flags = [
        "--segment-bytes",
        "65536",
        "--max-entry-bytes",
        "16384",
        "--retention-max-bytes",
        "262144",
    ];
    Cluster::loopback_with_spares_and_flags(VOTERS, spares, &flags)
        .unwrap_or_else(|error| panic!("starting the group: {error}"))
}

/// A learner added once retention deleted the start of the log: the
/// leader cannot send the entries it needs, so it installs its log start
/// (the entry before its first, the configuration there and its consumer
/// checkpoint). Without it the learner was stranded for good.
#[test]
fn a_learner_added_after_retention_takes_up_the_leaders_log_start() {
    let _serial = serial();
    let cluster = retention_cluster(1);
    let (leader, _) = cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    // An offset committed in an entry that retention will delete.
    let early = client(&cluster, leader).commit_offset("early-readers", 1, None);
    assert!(
        matches!(early, OffsetCommitOutcome::Committed { offset: 1, .. }),
        "{early:?}"
    );
    let voter_http: Vec<_> = (0..VOTERS)
        .map(|index| cluster.member(index).http_address)
        .collect();
    let load =
        Load::start(&LoadConfig::new("retention", WRITERS, voter_http).with_payload_bytes(4096));
    wait_until(
        "retention to delete the first segments",
        Duration::from_secs(60),
        || {
            let status = cluster.status(leader).ok()?;
            (status.first_index > 100).then_some(())
        },
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let acks = load.stop().expect("load");
    let leader_status = cluster.status(leader).expect("leader status");
    let spare = VOTERS;
    add_learner(&cluster, leader, spare);
    let status = wait_until("the learner to catch up", PROGRESS_WAIT, || {
        let status = cluster.status(spare).ok()?;
        (status.last_index >= leader_status.commit_index).then_some(status)
    })
    .unwrap_or_else(|error| {
        cluster.dump_logs();
        panic!("{error}")
    });
    eprintln!(
        "e2e: the learner took up the log start: its log starts at {} (the leader's at {}), {} acknowledged writes",
        status.first_index,
        leader_status.first_index,
        acks.len()
    );
    assert!(status.first_index > 1, "{status:?}");
    // The offsets came with the start, and the entries after it with the log.
    let learner = client(&cluster, spare);
    let offset = learner
        .consumer_offset("early-readers", false)
        .expect("consumer offset on the learner");
    assert_eq!(offset.map(|o| o.offset), Some(1));
    let leader_client = client(&cluster, leader);
    for ack in acks.iter().filter(|ack| ack.index >= status.first_index) {
        let theirs = learner.entry(ack.index).expect("read on the learner");
        let ours = leader_client.entry(ack.index).expect("read on the leader");
        assert!(theirs.is_some(), "entry {} missing", ack.index);
        assert_eq!(theirs, ours, "entry {}", ack.index);
    }
}

/// Appends `count` entries of `payload_bytes` through member `leader`, one
/// at a time, each acknowledged.
fn append_exactly(
    cluster: &Cluster,
    leader: usize,
    label: &str,
    count: usize,
    payload_bytes: usize,
) {
    let client = client(cluster, leader);
    for sequence in 0..count {
        let mut payload = format!("{label}-{sequence}").into_bytes();
        payload.resize(payload_bytes, b'.');
        let outcome = client.append(&payload);
        assert!(
            matches!(outcome, AppendOutcome::Acknowledged { .. }),
            "append {sequence} of {label}: {outcome:?}"
        );
    }
}

/// Followers keep what the leader says a member still needs: with one
/// follower stopped, the other deletes no more than the leader does, so
/// whichever leads next can still send the stopped one its entries (the
/// stopped one then catches up by appends, keeping its whole log).
#[test]
fn followers_keep_what_a_lagging_member_needs_as_the_leader_does() {
    let _serial = serial();
    let mut cluster = retention_cluster(0);
    let (leader, _) = cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let stopped = (leader + 1) % VOTERS;
    let other = (leader + 2) % VOTERS;
    // Exact counts, not a load stopped after so many: the bytes written
    // must stay under twice the retention bound (the most a leader holds
    // for a lagging member), and a load overshoots by whatever it writes
    // while it is being stopped (29 entries, 116 KiB, once, enough to pass
    // the bound).
    append_exactly(&cluster, leader, "floor", 20, 4000);
    let commit = cluster.status(leader).expect("leader").commit_index;
    let stopped_last = wait_until("the follower to hold every entry", PROGRESS_WAIT, || {
        let status = cluster.status(stopped).ok()?;
        (status.last_index >= commit).then_some(status.last_index)
    })
    .expect("the follower's log");
    cluster.pause(stopped).expect("stop a follower");
    // 110 entries of 4 KB in all, about 1.7 times the retention bound:
    // past it, so retention deletes, and under twice it.
    append_exactly(&cluster, leader, "floor-2", 90, 4000);
    // Retention runs every 10 s: give it two rounds.
    std::thread::sleep(Duration::from_secs(22));
    let leader_first = cluster.status(leader).expect("leader").first_index;
    let other_status = cluster.status(other).expect("the other follower");
    eprintln!(
        "e2e: stopped member at {stopped_last}; first index: leader {leader_first}, other follower {}, its last {}",
        other_status.first_index, other_status.last_index
    );
    assert!(
        other_status.first_index <= stopped_last + 1,
        "the other follower deleted entries the stopped member needs: {other_status:?}"
    );
    assert!(leader_first <= stopped_last + 1, "the leader too");
    assert!(
        leader_first > 1,
        "retention deleted nothing, so nothing was held back for the stopped member"
    );
    cluster.resume(stopped).expect("resume");
    wait_until("the stopped member to catch up", PROGRESS_WAIT, || {
        let status = cluster.status(stopped).ok()?;
        (status.last_index >= other_status.last_index).then_some(())
    })
    .expect("catch up");
    let log = std::fs::read_to_string(cluster.log_path(stopped)).expect("its log");
    assert!(
        !log.contains("took up the leader's log start"),
        "it caught up by appends, not a log start"
    );
}

/// Payload bytes the catch-up figure writes before adding the learner.
const CATCH_UP_BYTES: u64 = 256 << 20;

/// Bytes per entry in the catch-up figure.
const CATCH_UP_ENTRY_BYTES: usize = 64 << 10;

#[test]
#[ignore = "measures and prints the catch-up speed; run with --ignored --nocapture"]
fn catch_up_figures() {
    let _serial = serial();
    let cluster = Cluster::loopback_with_spares(VOTERS, 1)
        .unwrap_or_else(|error| panic!("starting the group: {error}"));
    let (leader, _) = cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let voter_http: Vec<_> = (0..VOTERS)
        .map(|index| cluster.member(index).http_address)
        .collect();
    let entries = (CATCH_UP_BYTES / CATCH_UP_ENTRY_BYTES as u64) as usize;
    let load = Load::start(
        &LoadConfig::new("catch-up", 8, voter_http).with_payload_bytes(CATCH_UP_ENTRY_BYTES),
    );
    load.wait_for_more(entries, Duration::from_secs(600))
        .expect("the log to fill");
    let acks = load.stop().expect("load");
    let commit = cluster.status(leader).expect("leader status").commit_index;
    let spare = VOTERS;
    let started = Instant::now();
    add_learner(&cluster, leader, spare);
    wait_until("the learner to catch up", Duration::from_secs(600), || {
        let status = cluster.status(spare).ok()?;
        (status.last_index >= commit).then_some(())
    })
    .expect("catch up");
    let took = started.elapsed();
    let bytes = acks.len() as u64 * CATCH_UP_ENTRY_BYTES as u64;
    eprintln!(
        "e2e: a new learner copied {} entries ({} MiB of payload) in {:.1} s: {:.0} MiB/s, {:.0} entries/s",
        commit,
        bytes >> 20,
        took.as_secs_f64(),
        (bytes >> 20) as f64 / took.as_secs_f64(),
        commit as f64 / took.as_secs_f64(),
    );
}
