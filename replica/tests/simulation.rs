//! Deterministic simulation of the consensus core (see `sim/`).
//!
//! `SIM_SEEDS=N cargo test --release -p dledger-replica --test simulation`
//! runs seeds `0..N` (8000 when unset); `SIM_SEED=s` reruns one seed with a
//! trace of its last events printed on failure.

mod sim;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use dledger_replica::core::Role;
use sim::checker::ChangeCounts;
use sim::world::{Faults, Tuning, World, TICK_MS};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| {
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {value:?}"))
    })
}

/// What the seeds of one thread did.
#[derive(Default)]
struct ThreadResult {
    events: u64,
    acked: u64,
    /// Offset commits answered stored, and refused at apply.
    offsets: [u64; 2],
    changes: ChangeCounts,
    removed_leader_handovers: u64,
    /// Retention deletions, and log starts followers took up.
    log_starts: [u64; 2],
    /// Members that lost their disk, voters among them.
    wipes: [u64; 2],
    /// (seed, error)
    failures: Vec<(u64, String)>,
}

#[test]
fn simulation_seeds() {
    if let Some(seed) = env_u64("SIM_SEED") {
        match sim::run_seed(seed, true) {
            Ok(stats) => println!("seed {seed}: ok {stats:?}"),
            Err(error) => panic!("seed {seed} failed: {error}"),
        }
        return;
    }
    let seeds = env_u64("SIM_SEEDS").unwrap_or(8000);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4) as u64;
    // SIM_FAIL_FAST=1 stops at the first failure (used to time the checkers).
    let fail_fast = env_u64("SIM_FAIL_FAST").unwrap_or(0) == 1;
    let stop = AtomicBool::new(false);
    let seeds_run = AtomicU64::new(0);
    let started = Instant::now();
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (stop, seeds_run) = (&stop, &seeds_run);
                scope.spawn(move || {
                    let mut result = ThreadResult::default();
                    let mut seed = thread;
                    while seed < seeds && !stop.load(Ordering::Relaxed) {
                        seeds_run.fetch_add(1, Ordering::Relaxed);
                        match sim::run_seed(seed, false) {
                            Ok(stats) => {
                                result.events += stats.events;
                                result.acked += stats.acked;
                                result.offsets[0] += stats.offsets_stored;
                                result.offsets[1] += stats.offsets_refused;
                                result.changes.add(&stats.changes);
                                result.removed_leader_handovers +=
                                    stats.removed_leader_handovers;
                                result.log_starts[0] += stats.retention_deletions;
                                result.log_starts[1] += stats.log_starts_installed;
                                result.wipes[0] += stats.wipes;
                                result.wipes[1] += stats.voter_wipes;
                            }
                            Err(error) => {
                                eprintln!("SEED {seed} FAILED: {error}\n  rerun: SIM_SEED={seed} cargo test --release -p dledger-replica --test simulation");
                                result.failures.push((seed, error));
                                if fail_fast {
                                    stop.store(true, Ordering::Relaxed);
                                    eprintln!(
                                        "first failure: seed {seed} after {} seeds, {:.1} s",
                                        seeds_run.load(Ordering::Relaxed),
                                        started.elapsed().as_secs_f64()
                                    );
                                }
                            }
                        }
                        seed += threads;
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("sim thread"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let events: u64 = results.iter().map(|r| r.events).sum();
    let acked: u64 = results.iter().map(|r| r.acked).sum();
    let mut failed: Vec<u64> = results
        .iter()
        .flat_map(|r| r.failures.iter().map(|f| f.0))
        .collect();
    failed.sort_unstable();
    let stored: u64 = results.iter().map(|r| r.offsets[0]).sum();
    let refused: u64 = results.iter().map(|r| r.offsets[1]).sum();
    let mut changes = ChangeCounts::default();
    for result in &results {
        changes.add(&result.changes);
    }
    let handovers: u64 = results.iter().map(|r| r.removed_leader_handovers).sum();
    let deletions: u64 = results.iter().map(|r| r.log_starts[0]).sum();
    let installed: u64 = results.iter().map(|r| r.log_starts[1]).sum();
    let wipes: u64 = results.iter().map(|r| r.wipes[0]).sum();
    let voter_wipes: u64 = results.iter().map(|r| r.wipes[1]).sum();
    println!(
        "simulation: {seeds} seeds in {elapsed:.1} s ({:.1} seeds/s on {threads} threads), {events} events, {acked} acknowledged proposals, offset commits answered {stored} stored and {refused} refused at apply, configuration changes committed {changes:?}, {handovers} removed leaders handed over, {deletions} retention deletions, {installed} log starts taken up, {wipes} lost disks ({voter_wipes} of voters)",
        seeds as f64 / elapsed
    );
    assert!(
        failed.is_empty(),
        "failing seeds: {failed:?} (rerun one with SIM_SEED=<seed>)"
    );
    // The offset checkers saw both verdicts (unless a run is tiny).
    assert!(
        seeds < 100 || (stored > 0 && refused > 0),
        "offset commits: {stored} stored, {refused} refused at apply"
    );
    // The membership checkers saw every kind of change committed, and
    // leaders removing themselves.
    assert!(
        seeds < 100
            || (changes.added_learners > 0
                && changes.promoted > 0
                && changes.removed_voters > 0
                && changes.removed_learners > 0
                && handovers > 0),
        "configuration changes committed: {changes:?}, {handovers} removed leaders handed over"
    );
    // Followers took up leaders' log starts after retention.
    assert!(
        seeds < 100 || installed > 0,
        "{deletions} retention deletions, {installed} log starts taken up"
    );
    // Voters lost their disks and came back as new incarnations.
    assert!(
        seeds < 100 || voter_wipes > 0,
        "{wipes} lost disks, {voter_wipes} of voters"
    );
}

/// A follower whose disk was replaced catches up from an empty log.
#[test]
fn wiped_follower_catches_up_from_scratch() {
    let mut world = World::new(7, 3, Faults::none(), Tuning::default(), false);
    let mut now = 0;
    let mut step = |world: &mut World, ms: u64| {
        now += ms;
        world.run_until(now).expect("no invariant broken");
    };
    step(&mut world, 2_000);
    let leader = world.leader().expect("a leader within 2 s");
    for _ in 0..200 {
        world.propose(leader).expect("propose");
        step(&mut world, TICK_MS);
    }
    step(&mut world, 500);
    let victim = (leader + 1) % 3;
    world.crash(victim).expect("crash");
    world.wipe(victim);
    world.restart(victim).expect("restart");
    for _ in 0..50 {
        if let Some(leader) = world.leader() {
            world.propose(leader).expect("propose");
        }
        step(&mut world, TICK_MS);
    }
    step(&mut world, 2_000);
    let leader = world.leader().expect("still a leader");
    let leader_last = world.node(leader).expect("up").last_index();
    let caught_up = world.node(victim).expect("up").last_index();
    assert!(leader_last > 200);
    assert_eq!(
        caught_up, leader_last,
        "the wiped follower has the whole log again"
    );
    assert!(world.checker.acked_count >= 200);
}

/// Leadership hands over to the configured preferred leader.
#[test]
fn preferred_leader_takes_over() {
    let mut world = World::new(
        11,
        5,
        Faults::none(),
        Tuning {
            preferred_leader: Some(4),
            ..Tuning::default()
        },
        false,
    );
    world.run_until(5_000).expect("no invariant broken");
    let leader = world.leader().expect("a leader");
    assert_eq!(world.node(leader).expect("up").id(), 4);
}

/// Simulated time from a leader crash to the next commit, over many crashes
/// with the default timing. Prints p50/p99/max. Run with
/// `cargo test --release -p dledger-replica --test simulation -- --ignored --nocapture failover`.
#[test]
#[ignore]
fn failover_latency() {
    let crashes = env_u64("FAILOVER_CRASHES").unwrap_or(1000);
    for size in [3usize, 5] {
        let mut latencies = Vec::new();
        let mut world = World::new(size as u64, size, Faults::none(), Tuning::default(), false);
        let mut now = 0;
        let run =
            |world: &mut World, until: u64| world.run_until(until).expect("no invariant broken");
        while (latencies.len() as u64) < crashes {
            // Steady state: a leader with committed proposals.
            for _ in 0..200 {
                now += TICK_MS;
                run(&mut world, now);
                if let Some(leader) = world.leader() {
                    world.propose(leader).expect("propose");
                }
            }
            let Some(leader) = world.leader() else {
                continue;
            };
            assert_eq!(world.node(leader).expect("up").role(), Role::Leader);
            world.crash(leader).expect("crash");
            let crashed_at = world.now_ms;
            world.watch_from_ms = crashed_at;
            world.first_ack_after_watch_ms = None;
            while world.first_ack_after_watch_ms.is_none() {
                assert!(
                    world.now_ms < crashed_at + 30_000,
                    "no new leader 30 s after a crash with a majority connected"
                );
                now += TICK_MS;
                run(&mut world, now);
                if let Some(leader) = world.leader() {
                    world.propose(leader).expect("propose");
                }
            }
            latencies.push(world.first_ack_after_watch_ms.expect("set") - crashed_at);
            world.restart(leader).expect("restart");
        }
        latencies.sort_unstable();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "failover ({size} nodes, {} crashes, heartbeat 100 ms, election 500-1000 ms): p50 {} ms, p99 {} ms, max {} ms",
            latencies.len(),
            at(0.50),
            at(0.99),
            latencies[latencies.len() - 1]
        );
        assert!(
            at(0.99) < 1_500,
            "p99 failover {} ms over the 1.5 s goal",
            at(0.99)
        );
    }
}
