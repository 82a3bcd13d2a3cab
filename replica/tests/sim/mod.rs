//! The deterministic simulation harness: a group, its network, disks and
//! clients, run from one seed.

pub mod checker;
pub mod storage;
pub mod world;

use dledger_replica::core::rng::Rng;
use dledger_replica::entry::NodeId;

use world::{Faults, Tuning, World, TICK_MS};

/// Simulated time of faults, load and partitions.
pub const CHAOS_MS: u64 = 15_000;
/// Liveness bound: after everything heals, a proposal commits within this.
pub const LIVENESS_BOUND_MS: u64 = 5_000;

/// What one seed did.
#[derive(Debug, Default)]
pub struct RunStats {
    pub events: u64,
    pub acked: u64,
    /// Offset commits answered stored, and refused at apply.
    pub offsets_stored: u64,
    pub offsets_refused: u64,
    pub reads: u64,
    pub crashes: u64,
    pub heal_to_commit_ms: u64,
}

/// Run one seed; `Err` names the broken property (the trace, if enabled,
/// is appended).
pub fn run_seed(seed: u64, trace: bool) -> Result<RunStats, String> {
    let mut plan = Rng::new(seed);
    let size = [1, 3, 3, 3, 5, 5, 5][plan.below(7) as usize];
    let faults = Faults {
        drop_probability: [0.0, 0.01, 0.05, 0.2][plan.below(4) as usize],
        duplicate_probability: [0.0, 0.02, 0.1][plan.below(3) as usize],
        delay_ms_max: [2, 10, 40][plan.below(3) as usize],
        sync_ms_max: [1, 5, 30][plan.below(3) as usize],
        crash_on_hard_state_probability: [0.0, 0.0, 0.02, 0.1][plan.below(4) as usize],
        crash_new_leader_probability: 0.0,
        crash_leader_after_append_probability: 0.0,
        crash_leader_on_commit_probability: 0.0,
    };
    let tuning = Tuning {
        max_batch_entries: [1, 2, 4, 16, 64][plan.below(5) as usize],
        max_inflight_appends: [4, 8, 64][plan.below(3) as usize],
        preferred_leader: plan
            .chance(0.2)
            .then(|| plan.range(1, size as u64 + 1) as NodeId),
    };
    let mut world = World::new(seed, size, faults, tuning, trace);
    // Client batches of several entries, so truncations cut through them.
    world.max_batch_payloads = [1, 2, 4, 16][plan.below(4) as usize];
    // Swarm testing: each seed its own mix of crashes timed around
    // elections and replication (most seeds none, a few a lot).
    world.faults.crash_new_leader_probability = [0.0, 0.0, 0.1, 0.3][plan.below(4) as usize];
    world.faults.crash_leader_after_append_probability =
        [0.0, 0.0, 0.01, 0.05][plan.below(4) as usize];
    world.faults.crash_leader_on_commit_probability = [0.0, 0.0, 0.05, 0.2][plan.below(4) as usize];
    // Consumers commit offsets through the log: how often, how many groups.
    world.offset_commit_probability = [0.05, 0.2, 0.5][plan.below(3) as usize];
    world.consumer_groups = [1, 2, 4][plan.below(3) as usize];
    let result = drive(&mut world, &mut plan, size);
    match result {
        Ok(stats) => Ok(stats),
        Err(error) => {
            let trace = world.dump_trace();
            Err(if trace.is_empty() {
                error
            } else {
                format!("{error}\n--- trace (last events) ---\n{trace}\n--- end trace; failure: {error}")
            })
        }
    }
}

fn pick_target(world: &World, plan: &mut Rng) -> usize {
    match world.leader() {
        Some(leader) if plan.chance(0.85) => leader,
        _ => plan.below(world.size() as u64) as usize,
    }
}

fn drive(world: &mut World, plan: &mut Rng, size: usize) -> Result<RunStats, String> {
    let mut stats = RunStats::default();
    let fault_rate = [0.005, 0.02, 0.05][plan.below(3) as usize];
    let mut now = 0;
    while now < CHAOS_MS {
        now += TICK_MS;
        world.run_until(now)?;
        if plan.chance(0.5) {
            let target = pick_target(world, plan);
            world.propose(target)?;
        }
        if plan.chance(0.15) {
            let target = pick_target(world, plan);
            world.read(target)?;
        }
        if plan.chance(fault_rate) {
            inject_fault(world, plan, &mut stats)?;
        }
    }
    // Heal everything, then demand progress within the bound.
    world.heal_partitions();
    world.faults.drop_probability = 0.0;
    world.faults.duplicate_probability = 0.0;
    world.faults.crash_on_hard_state_probability = 0.0;
    world.faults.crash_new_leader_probability = 0.0;
    world.faults.crash_leader_after_append_probability = 0.0;
    world.faults.crash_leader_on_commit_probability = 0.0;
    // A healed network is a LAN: short delays, so little reordering.
    world.faults.delay_ms_max = world.faults.delay_ms_max.min(10);
    for node in 0..size {
        world.restart(node)?;
    }
    let healed_at = world.now_ms;
    world.watch_from_ms = healed_at;
    while world.first_ack_after_watch_ms.is_none() {
        if world.now_ms > healed_at + LIVENESS_BOUND_MS {
            return Err(format!(
                "liveness: nothing committed within {LIVENESS_BOUND_MS} ms after healing (leader {:?})",
                world.leader()
            ));
        }
        now += TICK_MS;
        world.run_until(now)?;
        if let Some(leader) = world.leader() {
            world.propose(leader)?;
        }
    }
    stats.heal_to_commit_ms = world.first_ack_after_watch_ms.expect("set") - healed_at;
    stats.events = world.events_processed;
    stats.acked = world.checker.acked_count;
    stats.offsets_stored = world.checker.offsets_stored;
    stats.offsets_refused = world.checker.offsets_refused;
    stats.reads = world.reads_answered;
    if stats.acked == 0 {
        return Err("no proposal was ever acknowledged".to_string());
    }
    Ok(stats)
}

fn inject_fault(world: &mut World, plan: &mut Rng, stats: &mut RunStats) -> Result<(), String> {
    let size = world.size();
    let node = plan.below(size as u64) as usize;
    match plan.below(10) {
        0..=2 => {
            // Crash, leaders more often than their share.
            let victim = match world.leader() {
                Some(leader) if plan.chance(0.5) => leader,
                _ => node,
            };
            if world.is_up(victim) {
                stats.crashes += 1;
                world.crash(victim)?;
                let down_ms = plan.range(50, 3_000);
                world.schedule_restart(victim, down_ms);
            }
        }
        3..=5 => {
            let heal_ms = plan.range(100, 3_000);
            world.random_partition(heal_ms);
        }
        6 => world.heal_partitions(),
        7 => {
            world.faults.drop_probability = [0.0, 0.05, 0.3][plan.below(3) as usize];
        }
        8 => {
            if let Some(leader) = world.leader() {
                let target = plan
                    .chance(0.5)
                    .then(|| plan.range(1, size as u64 + 1) as NodeId);
                world.transfer(leader, target)?;
            }
        }
        _ => {
            // Restart everything that is down.
            for node in 0..size {
                world.restart(node)?;
            }
        }
    }
    Ok(())
}
