//! Consumer offsets through leader failover (issue 14), on three real
//! `dledger-replica serve` processes on loopback under write load.
//!
//! A consumer reads committed entries batch by batch and commits its offset
//! through the leader after each batch. Right after a commit is acknowledged,
//! the member that acknowledged it is killed with SIGKILL. Then the new leader
//! (linearizable read) and every live follower (local read, once its commit
//! index covers the commit) must answer exactly that offset; a commit with
//! `expected` set to it must then win on the new leader; the killed member,
//! restarted, must answer the offset committed last once caught up. Every
//! answer that differs counts as stale, and the count must be 0.
//!
//! `consumer_offset_figures` (ignored by default) does the same over 20 kills
//! and measures offset-commit throughput: `cargo test --release -p dledger-e2e
//! --test consumer_failover -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use dledger_e2e::cluster::Cluster;
use dledger_e2e::http::{Client, OffsetCommitOutcome};
use dledger_e2e::load::{Load, LoadConfig};
use dledger_e2e::monitor::Monitor;
use dledger_e2e::scenario::{
    assert_no_split_brain, assert_verified, p50_and_max, serial, FIRST_LEADER_WAIT,
    NEW_LEADER_WAIT, PROGRESS_WAIT,
};
use dledger_e2e::wait::wait_until;

const MEMBERS: usize = 3;
const WRITERS: usize = 2;
/// The consumer group whose offset is checked across the kills.
const CONSUMER_GROUP: &str = "failover-consumer";
/// The group the failover probe commits to, so that its commits never touch
/// the checked offset.
const PROBE_GROUP: &str = "failover-probe";
/// Batches read and committed between two kills.
const BATCHES_PER_ROUND: usize = 3;
/// Small batches, so entries past the acknowledged offset are still to read.
const BATCH_BYTES_MAX: u64 = 4096;
/// Long-poll of one range read.
const BATCH_WAIT_MS: u64 = 1000;
/// Time limit of one request: a member that was just killed refuses at once,
/// one that is electing answers 503 quickly; this bounds the rest.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two attempts when no leader answers yet; small, because the
/// failover time is measured through these attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How long each throughput figure is measured.
const THROUGHPUT_MEASURED_FOR: Duration = Duration::from_secs(5);
/// Concurrent committers of the pipelined throughput figure, one group each.
const PIPELINED_COMMITTERS: usize = 16;

/// What the kill rounds saw.
#[derive(Debug, Default)]
struct Rounds {
    kills: usize,
    /// Offset answers compared with the last acknowledged offset.
    answers_checked: usize,
    /// Answers that differed (or a conditional commit that lost), described.
    stale: Vec<String>,
    /// Conditional commits across a switch that were acknowledged.
    expected_commits_acknowledged: usize,
    /// SIGKILL of the leader to the first offset commit acknowledged after it.
    failovers: Vec<Duration>,
}

impl Rounds {
    fn compare(&mut self, round: usize, what: &str, answered: Option<u64>, acknowledged: u64) {
        self.answers_checked += 1;
        if answered != Some(acknowledged) {
            self.stale.push(format!(
                "round {round}: {what} answered offset {answered:?}, the last acknowledged is {acknowledged}"
            ));
        }
    }
}

fn start() -> Cluster {
    Cluster::loopback(MEMBERS).unwrap_or_else(|error| panic!("starting the group: {error}"))
}

fn client(cluster: &Cluster, index: usize) -> Client {
    Client::new(cluster.member(index).http_address, REQUEST_TIMEOUT)
}

fn index_of_host(cluster: &Cluster, host: &str) -> usize {
    (0..cluster.size())
        .find(|index| cluster.member(*index).http_address.to_string() == host)
        .unwrap_or_else(|| panic!("{host} is not a member's HTTP address"))
}

/// Reads the next non-empty batch from `from` on member `index`: the offset
/// after its last entry.
fn next_batch_end(cluster: &Cluster, index: usize, from: u64) -> u64 {
    let client = client(cluster, index);
    wait_until("a batch to read", PROGRESS_WAIT, || {
        let page = client.entries(from, BATCH_BYTES_MAX, BATCH_WAIT_MS).ok()?;
        page.entries.last().map(|entry| entry.index + 1)
    })
    .unwrap_or_else(|error| {
        panic!(
            "reading from {from} on {}: {error}",
            cluster.member(index).id
        )
    })
}

/// Commits `offset` (under `expected`) through the live members, from
/// `first` on, until one acknowledges it or refuses it for `expected`.
/// Returns the outcome and whether an earlier attempt's fate was unknown.
fn commit_until_decided(
    cluster: &Cluster,
    first: usize,
    group: &str,
    offset: u64,
    expected: Option<u64>,
) -> (OffsetCommitOutcome, bool) {
    let mut unknown_before = false;
    let mut target = first;
    let outcome = wait_until("an offset commit to be decided", PROGRESS_WAIT, || {
        if !cluster.is_running(target) {
            target = (target + 1) % cluster.size();
            return None;
        }
        match client(cluster, target).commit_offset(group, offset, expected) {
            decided @ (OffsetCommitOutcome::Committed { .. }
            | OffsetCommitOutcome::Conflict { .. }) => Some(decided),
            OffsetCommitOutcome::NoLeader(_) => {
                target = (target + 1) % cluster.size();
                std::thread::sleep(RETRY_PAUSE);
                None
            }
            OffsetCommitOutcome::Failed(_) => {
                unknown_before = true;
                target = (target + 1) % cluster.size();
                std::thread::sleep(RETRY_PAUSE);
                None
            }
        }
    })
    .unwrap_or_else(|error| panic!("committing offset {offset} of {group}: {error}"));
    (outcome, unknown_before)
}

/// The leader's linearizable answer for the consumer group, retried until a
/// leader other than `killed` confirms its leadership: the leader's index,
/// the answer and the leader's commit index after it.
fn offset_on_leader(cluster: &Cluster, killed: Option<usize>) -> (usize, Option<u64>, u64) {
    wait_until(
        "a linearizable offset read on the leader",
        PROGRESS_WAIT,
        || {
            let (leader, _) = cluster.wait_for_leader(NEW_LEADER_WAIT).ok()?;
            if Some(leader) == killed {
                return None;
            }
            let answer = client(cluster, leader)
                .consumer_offset(CONSUMER_GROUP, true)
                .ok()?;
            // Taken after the read: it covers every commit acknowledged before.
            let commit_index = cluster.status(leader).ok()?.commit_index;
            Some((leader, answer.map(|found| found.offset), commit_index))
        },
    )
    .unwrap_or_else(|error| panic!("reading the offset on the leader: {error}"))
}

/// Member `index`'s local answer for the consumer group, once its commit
/// index reached `commit_index`. Only the wait is retried, never the answer.
fn offset_on_member(cluster: &Cluster, index: usize, commit_index: u64) -> Option<u64> {
    let id = &cluster.member(index).id;
    wait_until(
        &format!("{id} to commit {commit_index}"),
        PROGRESS_WAIT,
        || (cluster.status(index).ok()?.commit_index >= commit_index).then_some(()),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    wait_until(
        &format!("{id} to answer an offset read"),
        PROGRESS_WAIT,
        || {
            client(cluster, index)
                .consumer_offset(CONSUMER_GROUP, false)
                .ok()
        },
    )
    .unwrap_or_else(|error| panic!("{error}"))
    .map(|found| found.offset)
}

/// From the kill on, commits the probe group's offset through the live
/// members until one acknowledges it: how long offset commits were down.
fn spawn_failover_probe(
    cluster: &Cluster,
    killed: usize,
    killed_at: Instant,
) -> std::thread::JoinHandle<Duration> {
    let targets: Vec<Client> = (0..cluster.size())
        .filter(|index| *index != killed)
        .map(|index| client(cluster, index))
        .collect();
    std::thread::spawn(move || {
        let mut attempt = 0_usize;
        loop {
            let target = &targets[attempt % targets.len()];
            if let OffsetCommitOutcome::Committed { .. } =
                target.commit_offset(PROBE_GROUP, 1, None)
            {
                return killed_at.elapsed();
            }
            assert!(
                killed_at.elapsed() < PROGRESS_WAIT,
                "no offset commit acknowledged within {PROGRESS_WAIT:?} of the kill"
            );
            attempt += 1;
            std::thread::sleep(RETRY_PAUSE);
        }
    })
}

/// Kills the leader `kills` times right after an acknowledged offset commit,
/// checking every member's answer after each switch.
fn kill_rounds(cluster: &mut Cluster, load: &Load, kills: usize) -> Rounds {
    let mut rounds = Rounds::default();
    // The consumer's offset: the index it reads next, as last acknowledged.
    let mut acknowledged = 1_u64;
    for round in 0..kills {
        let (leader, _) = cluster.wait_for_leader(NEW_LEADER_WAIT).expect("a leader");
        let mut answered_by = leader;
        for _ in 0..BATCHES_PER_ROUND {
            let offset = next_batch_end(cluster, answered_by, acknowledged);
            match commit_until_decided(cluster, answered_by, CONSUMER_GROUP, offset, None).0 {
                OffsetCommitOutcome::Committed {
                    offset: committed,
                    leader,
                } => {
                    assert_eq!(
                        committed, offset,
                        "the acknowledgement names another offset"
                    );
                    acknowledged = committed;
                    answered_by = index_of_host(cluster, &leader);
                }
                other => panic!("round {round}: a plain offset commit was refused: {other:?}"),
            }
        }
        // Nothing between the acknowledgement and the kill.
        let killed = answered_by;
        let killed_at = Instant::now();
        cluster.kill(killed).expect("kill -9");
        rounds.kills += 1;
        let probe = spawn_failover_probe(cluster, killed, killed_at);

        let (new_leader, answer, commit_index) = offset_on_leader(cluster, Some(killed));
        let new_leader_id = cluster.member(new_leader).id.clone();
        rounds.compare(
            round,
            &format!("new leader {new_leader_id}"),
            answer,
            acknowledged,
        );
        for member in (0..cluster.size()).filter(|m| *m != killed && *m != new_leader) {
            let answer = offset_on_member(cluster, member, commit_index);
            let what = format!("follower {}", cluster.member(member).id);
            rounds.compare(round, &what, answer, acknowledged);
        }

        // A consumer that resumes on the new leader from what it committed:
        // its conditional commit must find exactly that offset there.
        let offset = next_batch_end(cluster, new_leader, acknowledged);
        match commit_until_decided(
            cluster,
            new_leader,
            CONSUMER_GROUP,
            offset,
            Some(acknowledged),
        ) {
            (OffsetCommitOutcome::Committed { .. }, _) => {
                rounds.expected_commits_acknowledged += 1;
                acknowledged = offset;
            }
            // An earlier attempt whose answer was lost was applied.
            (OffsetCommitOutcome::Conflict { current }, true) if current == Some(offset) => {
                rounds.expected_commits_acknowledged += 1;
                acknowledged = offset;
            }
            (OffsetCommitOutcome::Conflict { current }, _) => {
                rounds.stale.push(format!(
                    "round {round}: the commit of {offset} expecting {acknowledged} on {new_leader_id} found {current:?}"
                ));
                // Go on from what the group holds, to see the other rounds.
                acknowledged = current.unwrap_or(acknowledged);
            }
            (other, _) => panic!("round {round}: undecided conditional commit: {other:?}"),
        }
        rounds.failovers.push(probe.join().expect("failover probe"));

        cluster.start(killed).expect("restart the killed leader");
        let (leader, answer, commit_index) = offset_on_leader(cluster, None);
        let leader_id = cluster.member(leader).id.clone();
        rounds.compare(
            round,
            &format!("leader {leader_id} after the restart"),
            answer,
            acknowledged,
        );
        for member in (0..cluster.size()).filter(|m| *m != leader) {
            let answer = offset_on_member(cluster, member, commit_index);
            let restarted = if member == killed { " (restarted)" } else { "" };
            let what = format!("member {}{restarted}", cluster.member(member).id);
            rounds.compare(round, &what, answer, acknowledged);
        }
        eprintln!(
            "e2e: round {round}: killed {} after the commit of its offset; new leader {new_leader_id}; offset now {acknowledged}",
            cluster.member(killed).id
        );
        load.wait_for_more(20, PROGRESS_WAIT)
            .expect("writes with the group whole again");
    }
    rounds
}

fn assert_no_stale(rounds: &Rounds) {
    assert!(
        rounds.stale.is_empty(),
        "{} stale offset answers after leader switches:\n{}",
        rounds.stale.len(),
        rounds.stale.join("\n")
    );
    assert_eq!(
        rounds.expected_commits_acknowledged, rounds.kills,
        "every conditional commit across a switch is acknowledged"
    );
    // Per round: the new leader, one follower, then all three members.
    assert_eq!(
        rounds.answers_checked,
        rounds.kills * (1 + (MEMBERS - 2) + MEMBERS)
    );
}

/// Runs the kill rounds under write load and checks the log and the leaders
/// as the other process scenarios do.
fn rounds_under_load(kills: usize, label: &str) -> (Cluster, Rounds) {
    let mut cluster = start();
    cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .expect("first leader");
    let monitor = Monitor::start(cluster.endpoints());
    let load = Load::start(&LoadConfig::new(label, WRITERS, cluster.http_addresses()));
    load.wait_for_more(20, PROGRESS_WAIT)
        .expect("writes before the first kill");
    let rounds = kill_rounds(&mut cluster, &load, kills);
    let acks = load.stop().expect("load");
    assert_no_split_brain(&monitor.stop().expect("monitor"));
    cluster.check_alive().expect("no replica died on its own");
    assert_verified(&cluster, &acks);
    (cluster, rounds)
}

#[test]
fn consumer_offsets_survive_five_leader_kills() {
    let _serial = serial();
    let (_cluster, rounds) = rounds_under_load(5, "consumer-kill");
    eprintln!(
        "e2e: {} kills, {} offset answers checked, {} stale",
        rounds.kills,
        rounds.answers_checked,
        rounds.stale.len()
    );
    assert_no_stale(&rounds);
}

/// Offset commits acknowledged in [`THROUGHPUT_MEASURED_FOR`] by
/// `committers` threads, each committing its own group one commit at a
/// time: commits per second.
fn offset_commits_per_second(cluster: &Cluster, committers: usize) -> (f64, u64) {
    let (leader, _) = cluster.wait_for_leader(NEW_LEADER_WAIT).expect("a leader");
    let started = Instant::now();
    let commits: u64 = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..committers)
            .map(|committer| {
                let client = client(cluster, leader);
                scope.spawn(move || {
                    let group = format!("throughput-{committers}-{committer}");
                    let mut offset = 0_u64;
                    while started.elapsed() < THROUGHPUT_MEASURED_FOR {
                        // Each commit adds an entry, so the next offset is
                        // never past the commit index + 1.
                        offset += 1;
                        let outcome = client.commit_offset(&group, offset, None);
                        assert!(
                            matches!(outcome, OffsetCommitOutcome::Committed { offset: o, .. } if o == offset),
                            "commit {offset} of {group} on an unloaded group: {outcome:?}"
                        );
                    }
                    offset
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("committer"))
            .sum()
    });
    let elapsed = started.elapsed();
    assert!(commits > 0, "no offset commit was measured");
    (commits as f64 / elapsed.as_secs_f64(), commits)
}

#[test]
#[ignore = "measures and prints figures; run with --ignored --nocapture"]
fn consumer_offset_figures() {
    let _serial = serial();
    let (cluster, mut rounds) = rounds_under_load(20, "consumer-figures");
    println!(
        "e2e figures: consumer offsets across leader kills: {} kills, {} offset answers checked, stale offsets {}, conditional commits across a switch acknowledged {}/{}",
        rounds.kills,
        rounds.answers_checked,
        rounds.stale.len(),
        rounds.expected_commits_acknowledged,
        rounds.kills
    );
    assert_no_stale(&rounds);
    let (p50, max) = p50_and_max(&mut rounds.failovers);
    println!(
        "e2e figures: SIGKILL of the leader -> first offset commit acknowledged by the new leader, {} kills: p50 {} ms, max {} ms",
        rounds.failovers.len(),
        p50.as_millis(),
        max.as_millis()
    );
    // The load stopped in rounds_under_load: the group is unloaded now.
    let (single_per_s, single) = offset_commits_per_second(&cluster, 1);
    println!(
        "e2e figures: offset commits per second, single (one at a time, each answer awaited): {single_per_s:.0}/s ({single} commits in {} s)",
        THROUGHPUT_MEASURED_FOR.as_secs()
    );
    let (pipelined_per_s, pipelined) = offset_commits_per_second(&cluster, PIPELINED_COMMITTERS);
    println!(
        "e2e figures: offset commits per second, pipelined ({PIPELINED_COMMITTERS} threads, a group each): {pipelined_per_s:.0}/s ({pipelined} commits in {} s)",
        THROUGHPUT_MEASURED_FOR.as_secs()
    );
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "e2e figures: load average after measuring (/proc/loadavg): {}",
        load_average.trim()
    );
}
