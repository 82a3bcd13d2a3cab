//! The deterministic simulation harness: a group, its network, disks and
//! clients, run from one seed.

pub mod checker;
pub mod storage;
pub mod world;

use dledger_replica::core::rng::Rng;
use dledger_replica::entry::NodeId;
use dledger_replica::membership::Membership;

use checker::ChangeCounts;
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
    /// Configuration changes committed, by kind.
    pub changes: ChangeCounts,
    /// Leaders that handed over because their own removal committed.
    pub removed_leader_handovers: u64,
    /// Retention deletions, and log starts followers took up.
    pub retention_deletions: u64,
    pub log_starts_installed: u64,
    /// Members that lost their disk, voters among them.
    pub wipes: u64,
    pub voter_wipes: u64,
}

/// How the operator changes the membership during a run (half the seeds
/// have no operator, no spares and no change).
#[derive(Clone, Copy, Debug)]
struct Operator {
    /// Chance per tick of an action on the leader.
    rate: f64,
    /// Chance that an action proposes a second change right after the
    /// first, before it can commit (the core must refuse it).
    burst: f64,
    /// Chance that a spare is replaced by a fresh one (wiped) before it is
    /// added.
    replace: f64,
    /// Chance that a voter removal removes the leader itself.
    remove_leader: f64,
}

/// Run one seed; `Err` names the broken property (the trace, if enabled,
/// is appended).
pub fn run_seed(seed: u64, trace: bool) -> Result<RunStats, String> {
    let mut plan = Rng::new(seed);
    // Membership changes draw from their own stream: the other draws of a
    // seed are the same whether it has them or not.
    let mut members_plan = Rng::new(seed ^ 0x6D65_6D62_6572_7321);
    let operator = members_plan.chance(0.5).then(|| Operator {
        rate: [0.005, 0.02, 0.05][members_plan.below(3) as usize],
        burst: [0.0, 0.3, 0.8][members_plan.below(3) as usize],
        replace: [0.0, 0.5][members_plan.below(2) as usize],
        remove_leader: [0.1, 0.5][members_plan.below(2) as usize],
    });
    let spares = match operator {
        Some(_) => [0, 1, 2, 2][members_plan.below(4) as usize],
        None => 0,
    };
    let promote_max_lag_entries = [0, 4, 32][members_plan.below(3) as usize];
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
        crash_after_truncation_probability: 0.0,
    };
    let tuning = Tuning {
        max_batch_entries: [1, 2, 4, 16, 64][plan.below(5) as usize],
        max_inflight_appends: [4, 8, 64][plan.below(3) as usize],
        preferred_leader: plan
            .chance(0.2)
            .then(|| plan.range(1, size as u64 + 1) as NodeId),
        promote_max_lag_entries,
    };
    let mut world = World::with_spares(seed, size, spares, faults, tuning, trace);
    // Client batches of several entries, so truncations cut through them.
    world.max_batch_payloads = [1, 2, 4, 16][plan.below(4) as usize];
    // Swarm testing: each seed its own mix of crashes timed around
    // elections and replication (most seeds none, a few a lot).
    world.faults.crash_new_leader_probability = [0.0, 0.0, 0.1, 0.3][plan.below(4) as usize];
    world.faults.crash_leader_after_append_probability =
        [0.0, 0.0, 0.01, 0.05][plan.below(4) as usize];
    // A leader dying right after it counted a commit is where Figure 8
    // lives (an earlier term's entry counted, the new term's no-op not
    // out yet): three seeds in four, one in four often.
    world.faults.crash_leader_on_commit_probability = [0.0, 0.05, 0.2, 0.5][plan.below(4) as usize];
    // Consumers commit offsets through the log: how often, how many groups.
    world.offset_commit_probability = [0.05, 0.2, 0.5][plan.below(3) as usize];
    world.consumer_groups = [1, 2, 4][plan.below(3) as usize];
    // Crashes before a truncation is durable, where configuration records
    // and the log can disagree (membership seeds only).
    if operator.is_some() {
        world.faults.crash_after_truncation_probability =
            [0.0, 0.1, 0.5][members_plan.below(3) as usize];
    }
    // Lost disks, from a stream of their own: half the membership
    // seeds wipe members, voters included, which come back as new
    // incarnations for the operator to replace.
    let mut wipe_plan = Rng::new(seed ^ 0x7769_7065_645f_6469);
    let wipes = operator
        .is_some()
        .then(|| [0.0, 0.0, 0.003, 0.01][wipe_plan.below(4) as usize])
        .filter(|rate| *rate > 0.0)
        .map(|rate| (rate, wipe_plan));
    let operator = operator.map(|operator| (operator, members_plan));
    // Retention, from a stream of its own too: a quarter of the seeds
    // delete often (a member's log then starts after its commit index), so
    // lagging, restarted and new members need the leader's log start.
    let mut retention_plan = Rng::new(seed ^ 0x7265_7465_6e74_696f);
    let retention_rate = [0.0, 0.0, 0.0, 0.05][retention_plan.below(4) as usize];
    let retention = (retention_rate > 0.0).then_some((retention_rate, retention_plan));
    if retention.is_some() {
        world.enable_retention()?;
    }
    let result = drive(&mut world, &mut plan, operator, retention, wipes);
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

fn drive(
    world: &mut World,
    plan: &mut Rng,
    mut operator: Option<(Operator, Rng)>,
    mut retention: Option<(f64, Rng)>,
    mut wipes: Option<(f64, Rng)>,
) -> Result<RunStats, String> {
    let mut stats = RunStats::default();
    // Crash, partition and restart storms for a quarter of the seeds:
    // long catch-ups by leaders of later terms, with old-term entries.
    let fault_rate = [0.005, 0.02, 0.05, 0.1][plan.below(4) as usize];
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
        if let Some((operator, members_plan)) = operator.as_mut() {
            if members_plan.chance(operator.rate) {
                reconfigure(world, members_plan, operator)?;
            }
        }
        if let Some((rate, retention_plan)) = retention.as_mut() {
            if retention_plan.chance(*rate) {
                let node = retention_plan.below(world.size() as u64) as usize;
                world.retain(node)?;
            }
        }
        if let Some((rate, wipe_plan)) = wipes.as_mut() {
            if wipe_plan.chance(*rate) {
                wipe(world, wipe_plan)?;
            }
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
    world.faults.crash_after_truncation_probability = 0.0;
    // A healed network is a LAN: short delays, so little reordering.
    world.faults.delay_ms_max = world.faults.delay_ms_max.min(10);
    for node in 0..world.size() {
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
    stats.changes = world.checker.changes;
    stats.removed_leader_handovers = world.removed_leader_handovers;
    stats.retention_deletions = world.retention_deletions;
    stats.log_starts_installed = world.log_starts_installed;
    stats.wipes = world.wipes;
    stats.voter_wipes = world.voter_wipes;
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

/// A member loses its disk. A voter only while the group can still make
/// progress without its old id for good: retired voters stay a minority
/// of every configuration a member may be in (more is a lost group, not a
/// safety question).
fn wipe(world: &mut World, plan: &mut Rng) -> Result<(), String> {
    let index = plan.below(world.size() as u64) as usize;
    let id = world.id_of(index);
    let configurations = world.configurations_in_force();
    let tolerable = configurations.iter().all(|configuration| {
        let retired = configuration
            .voters
            .iter()
            .filter(|voter| world.is_retired(**voter))
            .count();
        !configuration.is_voter(id) || retired < (configuration.voters.len() - 1) / 2
    });
    if !tolerable {
        return Ok(());
    }
    if configurations.iter().any(|c| c.is_voter(id)) {
        world.voter_wipes += 1;
    }
    world.wipe_member(index)
}

/// One operator action on the leader: write the bootstrap configuration
/// into the log (as the server's first leader does), else one change:
/// add a spare as a learner, promote a learner, remove a voter (at times
/// the leader itself; never the last one) or a learner. Refusals (change
/// in progress, leader not settled, learner not caught up, transfer) are
/// left for a later action to retry.
fn reconfigure(world: &mut World, plan: &mut Rng, operator: &Operator) -> Result<(), String> {
    let Some(leader) = world.leader() else {
        return Ok(());
    };
    let attempts = if plan.chance(operator.burst) { 2 } else { 1 };
    for _ in 0..attempts {
        let Some(node) = world.node(leader) else {
            return Ok(());
        };
        let current = node.membership().clone();
        let records = node.configurations();
        let bootstrap_only = records.last().is_some_and(|record| record.index == 0);
        // The newest configuration is committed: nodes outside it are in
        // no configuration that can still be in force anywhere.
        let settled = records
            .last()
            .is_some_and(|record| record.index <= node.commit_index());
        let next = if bootstrap_only {
            current
        } else {
            let Some(next) = next_membership(world, plan, operator, leader, &current, settled)?
            else {
                return Ok(());
            };
            next
        };
        world.propose_configuration(leader, &next)?;
    }
    Ok(())
}

/// A membership one change from `current`, if any change can be made.
fn next_membership(
    world: &mut World,
    plan: &mut Rng,
    operator: &Operator,
    leader: usize,
    current: &Membership,
    settled: bool,
) -> Result<Option<Membership>, String> {
    let leader_id = world.id_of(leader);
    let spares: Vec<NodeId> = (0..world.size())
        .map(|index| world.id_of(index))
        .filter(|id| !current.contains(*id))
        .collect();
    let voters: Vec<NodeId> = current.voters.iter().copied().collect();
    // A retired learner never catches up: not promoted, removed.
    let learners: Vec<NodeId> = current
        .learners
        .iter()
        .copied()
        .filter(|id| !world.is_retired(*id))
        .collect();
    // Retired members (voters or learners): the operator's replacement
    // removes them first, as it removes `orders-0` once `orders-0#<hex>`
    // came back.
    let retired: Vec<NodeId> = current
        .voters
        .iter()
        .chain(&current.learners)
        .copied()
        .filter(|id| world.is_retired(*id))
        .collect();
    let pick = |plan: &mut Rng, ids: &[NodeId]| ids[plan.below(ids.len() as u64) as usize];
    // Weighted choice among the changes possible now.
    let mut choices: Vec<u8> = Vec::new();
    if !spares.is_empty() {
        choices.extend([0, 0]);
    }
    if !learners.is_empty() {
        choices.extend([1, 1, 1, 3]);
    }
    if voters.len() > 1 {
        choices.extend([2, 2]);
    }
    // The operator re-aligns first: a retired member is removed before any
    // other change (removing a live voter first could leave the retired
    // ones a majority).
    if !retired.is_empty() {
        choices = vec![4];
    }
    if choices.is_empty() {
        return Ok(None);
    }
    let mut next = current.clone();
    match choices[plan.below(choices.len() as u64) as usize] {
        0 => {
            let spare = pick(plan, &spares);
            let index = world
                .slot_of(spare)
                .ok_or_else(|| format!("spare {spare} has no slot"))?;
            if settled && world.replaceable(index) && plan.chance(operator.replace) {
                world.replace_spare(index)?;
            }
            next.learners.insert(spare);
        }
        1 => {
            let learner = pick(plan, &learners);
            next.learners.remove(&learner);
            next.voters.insert(learner);
        }
        2 => {
            let voter = if current.is_voter(leader_id) && plan.chance(operator.remove_leader) {
                leader_id
            } else {
                pick(plan, &voters)
            };
            next.voters.remove(&voter);
        }
        3 => {
            let learner = pick(plan, &learners);
            next.learners.remove(&learner);
        }
        _ => {
            let gone = pick(plan, &retired);
            next.voters.remove(&gone);
            next.learners.remove(&gone);
        }
    }
    Ok(Some(next))
}
