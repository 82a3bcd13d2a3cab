//! One simulated member as the host of the server's Ready executor
//! (`executor::carry_out`): the executor decides the order of a Ready's
//! steps and what clients are told, as in the server; here each step's I/O
//! goes to the simulated disk and network, with the checkers and the crash
//! points that belong to that step around it.

use dledger_replica::consumers::{Applied, ConsumerState, MalformedCommit};
use dledger_replica::core::{
    LogStart, Message, ReadState, Role, SoftState, TransferOutcome, Violation,
};
use dledger_replica::entry::{Entry, EntryKind, HardState, Index};
use dledger_replica::executor::{Answers, Bookkeeping, EntryTerms, Host, Written};
use dledger_replica::membership::ConfigRecord;

use super::{bootstrap_in, entry_membership, ClientBatch, Event, WaitingForSync, World};

/// Member `index` of `world`, while it carries out one Ready.
pub(super) struct Member<'w> {
    pub(super) world: &'w mut World,
    pub(super) index: usize,
}

impl Member<'_> {
    fn id(&self) -> u64 {
        self.world.nodes[self.index].id
    }

    fn leads(&self) -> bool {
        self.world.nodes[self.index]
            .node
            .as_ref()
            .is_some_and(|node| node.role() == Role::Leader)
    }
}

impl Host for Member<'_> {
    type Waiter = ClientBatch;

    fn parts(&mut self) -> (&mut Bookkeeping<ClientBatch>, &dyn EntryTerms) {
        let slot = &mut self.world.nodes[self.index];
        let node = slot
            .node
            .as_ref()
            .expect("a member carrying out a Ready is up");
        (&mut slot.books, node)
    }

    fn violation(&mut self, violation: Violation) {
        let id = self.id();
        self.world
            .note(|| format!("node {id} drops a message that breaks the protocol: {violation:?}"));
    }

    fn save_configurations(&mut self, records: Vec<ConfigRecord>) -> Result<(), String> {
        // Durable before this Ready's entries, as the server saves them.
        let (id, index) = (self.id(), self.index);
        self.world.nodes[index]
            .storage
            .borrow_mut()
            .save_configurations(&records);
        self.world.note(|| {
            let summary: Vec<_> = records
                .iter()
                .map(|r| {
                    (
                        r.index,
                        r.term,
                        &r.membership.voters,
                        &r.membership.learners,
                    )
                })
                .collect();
            format!("node {id} saves configurations (index, term, voters, learners) {summary:?}")
        });
        Ok(())
    }

    /// As the server's `install_log_start`: the checkpoint and the new
    /// start at once (durable). The start must be committed: the checker's
    /// committed log reaches it with the same term there.
    fn install_log_start(&mut self, start: LogStart) -> Result<(), String> {
        let (id, index) = (self.id(), self.index);
        let world = &mut *self.world;
        let at = start.prev_log_index;
        let committed = world.checker.committed_prefix(at).ok_or_else(|| {
            format!("node {id} took up a log start at {at}, past the committed log")
        })?;
        if committed.last().map(|entry| entry.term) != Some(start.prev_log_term) {
            return Err(format!(
                "node {id} took up a log start at {at} of term {}, but the committed entry there is {:?}",
                start.prev_log_term,
                committed.last()
            ));
        }
        let consumers = ConsumerState::decode_checkpoint(&start.state)
            .map_err(|defect| format!("node {id}: the leader's checkpoint: {}", defect.reason))?;
        if consumers.applied_index() < at {
            return Err(format!(
                "node {id}: the leader's checkpoint is applied to {} only, the start is {at}",
                consumers.applied_index()
            ));
        }
        world.nodes[index]
            .storage
            .borrow_mut()
            .install_start(&committed, start.state.clone());
        world.nodes[index].consumers = consumers;
        world.log_starts_installed += 1;
        world.note(|| format!("node {id} takes up the log start after {at}"));
        Ok(())
    }

    fn soft_state(&mut self, soft: SoftState) -> Result<(), String> {
        let (id, index) = (self.id(), self.index);
        let world = &mut *self.world;
        world.note(|| format!("node {id} now {soft:?}"));
        if soft.role != Role::Leader {
            return Ok(());
        }
        if world.rng.chance(world.faults.crash_new_leader_probability) {
            let delay = world.rng.range(0, 3 * world.faults.delay_ms_max + 1);
            world.crash_later(index, delay);
        }
        world.checker.leader_elected(soft.term, id)?;
        let slot = &mut world.nodes[index];
        if slot.storage.borrow().synced_hard_state.term < soft.term {
            slot.unsynced_leadership = Some(soft.term);
        }
        let node = world.nodes[index].node.as_ref().expect("up");
        world
            .checker
            .check_leader_log(id, node.first_index(), |at| {
                node.entry_term(at).expect("memory log reads")
            })?;
        world
            .checker
            .election_quorum(soft.term, id, node.membership())?;
        // This Ready's entries are the new term's no-op alone: the written
        // log is the log it won with.
        let storage = world.nodes[index].storage.borrow();
        world.checker.configuration_in_force(
            id,
            "as it wins",
            node.membership(),
            &storage.current,
            &bootstrap_in(&storage, node, world.bootstrap_voters),
        )?;
        world
            .checker
            .changes_in_flight(id, node.commit_index(), &storage.current)
    }

    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.world.send(message);
        }
    }

    fn truncate_log(&mut self, _from: Index) -> Result<(), String> {
        // The simulated disk cuts the tail with the write that follows.
        // Drawn only when set, so other seeds keep their course.
        let world = &mut *self.world;
        let p = world.faults.crash_after_truncation_probability;
        if p > 0.0 && world.rng.chance(p) {
            let delay = world.rng.range(0, world.faults.sync_ms_max + 1);
            world.crash_later(self.index, delay);
        }
        Ok(())
    }

    /// Held until the next sync: the server's `truncate_suffix` syncs
    /// before it answers; here a crash before the sync brings the entries
    /// back.
    fn answer_truncated(&mut self, answers: Answers<ClientBatch>) -> Result<(), String> {
        self.world.nodes[self.index].truncated.extend(answers);
        Ok(())
    }

    fn malformed_offset_commit(
        &mut self,
        index: Index,
        defect: MalformedCommit,
    ) -> Result<(), String> {
        Err(format!(
            "node {}: malformed offset commit at {index}: {defect}",
            self.id()
        ))
    }

    fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
        sequence: u64,
    ) -> Result<Written, String> {
        let (id, index) = (self.id(), self.index);
        let leads = self.leads();
        let world = &mut *self.world;
        world.note(|| {
            let range = entries.first().map(|first| (first.index, entries.len()));
            format!("node {id} writes {hard_state:?} entries (first, count) {range:?}")
        });
        let slot = &mut world.nodes[index];
        slot.storage.borrow_mut().write(hard_state, &entries);
        let written = slot.storage.borrow().current.len() as Index;
        if written != slot.books.written_last() {
            return Err(format!(
                "node {id}: the executor's last written index {} is not the log's {written}",
                slot.books.written_last()
            ));
        }
        let mut writes_configuration = false;
        for entry in &entries {
            if entry.kind == EntryKind::Configuration {
                writes_configuration = true;
                for voter in entry_membership(entry)?.voters {
                    if let Some(index) = world.slot_of(voter) {
                        world.nodes[index].ever_voter = true;
                    }
                }
            }
        }
        world.seen_configuration |= writes_configuration;
        if let Some(node) = world.nodes[index].node.as_ref() {
            let storage = world.nodes[index].storage.borrow();
            if writes_configuration && node.role() == Role::Leader {
                world
                    .checker
                    .changes_in_flight(id, node.commit_index(), &storage.current)?;
                world.check_promotions(id, node, &storage.current, &entries)?;
            }
        }
        let slot = &mut world.nodes[index];
        let answers = std::mem::take(&mut slot.truncated);
        slot.waiting_for_sync.push(WaitingForSync {
            sequence,
            last: entries.last().map(|entry| (entry.index, entry.term)),
            answers,
        });
        let incarnation = slot.incarnation;
        if !slot.sync_scheduled {
            slot.sync_scheduled = true;
            let delay = world.rng.range(0, world.faults.sync_ms_max + 1);
            world.schedule(
                delay,
                Event::SyncDone {
                    node: index,
                    incarnation,
                },
            );
        }
        if leads
            && !entries.is_empty()
            && world
                .rng
                .chance(world.faults.crash_leader_after_append_probability)
        {
            let delay = world.rng.range(0, world.faults.sync_ms_max + 1);
            world.crash_later(index, delay);
        }
        if hard_state.is_some()
            && world
                .rng
                .chance(world.faults.crash_on_hard_state_probability)
        {
            // Same time as a zero-delay sync or the earliest later one: the
            // event order decides whether the write survives.
            let delay = world.rng.range(0, world.faults.sync_ms_max + 1);
            world.crash_later(index, delay);
        }
        Ok(Written::Later)
    }

    fn apply_offsets(&mut self, commit: Index) -> Result<Vec<(Index, Applied)>, String> {
        let (id, index) = (self.id(), self.index);
        let world = &mut *self.world;
        let from = world.nodes[index].observed_commit;
        assert!(commit > from, "commit advances");
        {
            let storage = world.nodes[index].storage.borrow();
            if storage.current.len() < commit as usize {
                return Err(format!(
                    "node {id} committed {commit} past its written log {}",
                    storage.current.len()
                ));
            }
            world
                .checker
                .node_committed(id, &storage.current[from as usize..commit as usize])?;
        }
        world.nodes[index].observed_commit = commit;
        world.note(|| format!("node {id} commit {commit}"));
        let slot = &mut world.nodes[index];
        let verdicts = slot
            .books
            .consumer_pending
            .apply_committed(commit, &mut slot.consumers);
        world
            .checker
            .consumer_state(id, commit, &world.nodes[index].consumers)?;
        Ok(verdicts)
    }

    fn answer(
        &mut self,
        answers: Answers<ClientBatch>,
        verdicts: &[(Index, Applied)],
    ) -> Result<(), String> {
        self.world.answer_proposals(answers, verdicts)
    }

    fn committed(&mut self, commit: Index) -> Result<(), String> {
        let (id, index) = (self.id(), self.index);
        let leads = self.leads();
        let world = &mut *self.world;
        // Its own commit if it leads, or led this term until this Ready (a
        // leader whose removal committed steps down in this Ready).
        let node = world.nodes[index].node.as_ref().expect("up");
        if leads || world.nodes[index].led_term == Some(node.term()) {
            world
                .checker
                .leader_commit(id, commit, node.membership(), |node, at| {
                    world.synced_term(node, at)
                })?;
            if !leads && !node.membership().is_voter(id) {
                world.removed_leader_handovers += 1;
                world.note(|| format!("node {id} removed: hands over and steps down"));
            }
        }
        if leads
            && world
                .rng
                .chance(world.faults.crash_leader_on_commit_probability)
        {
            let delay = world.rng.range(0, 3);
            world.crash_later(index, delay);
        }
        Ok(())
    }

    fn read_state(&mut self, read: ReadState) -> Result<(), String> {
        self.world
            .read_answered(self.index, read.request_id, read.result.ok())
    }

    fn transfer_outcome(&mut self, outcome: TransferOutcome) {
        let id = self.id();
        self.world
            .note(|| format!("node {id} transfer ends: {outcome:?}"));
    }
}
