//! Carrying out a core [`Ready`]: the one order of its steps, and the
//! bookkeeping that decides what clients are told, for the server's raft
//! loop and the deterministic simulation alike. The host does the I/O (the
//! disk, the network, the answers) through [`Host`]; everything that
//! decides (when a tail is cut, which batches that fails, which offset
//! commits are pending, which messages wait for which write) is here, so
//! the simulation's checkers judge the code the server runs.

use std::collections::VecDeque;

use crate::consumers::{Applied, MalformedCommit, PendingCommits};
use crate::core::{
    LogRead, LogStart, Message, Node, ReadState, Ready, SoftState, TransferOutcome, Violation,
};
use crate::entry::{Entry, HardState, Index, Term};
use crate::membership::ConfigRecord;

use super::{Outcome, Proposals};

/// Answers the executor hands to its host: a waiter and its batch's fate.
pub type Answers<W> = Vec<(W, Outcome)>;

/// What the executor keeps between Readies: the proposals waiting for their
/// outcome, the offset commits written and not yet committed, the last
/// index written (to tell a truncation) and the messages that wait for a
/// write to be durable.
pub struct Bookkeeping<W> {
    /// Proposals waiting for their outcome, in index order.
    pub proposals: Proposals<W>,
    /// Offset commits written and not yet committed.
    pub consumer_pending: PendingCommits,
    written_last: Index,
    /// Writes handed to the host that complete later, and those it
    /// reported durable (every one up to it, in order).
    submitted: u64,
    persisted: u64,
    /// Messages to send once write `.0` is durable.
    parked: VecDeque<(u64, Vec<Message>)>,
}

impl<W> Bookkeeping<W> {
    /// For a log whose last entry is `written_last`, with the offset
    /// commits found in it not known committed.
    pub fn new(written_last: Index, consumer_pending: PendingCommits) -> Self {
        Bookkeeping {
            proposals: Proposals::default(),
            consumer_pending,
            written_last,
            submitted: 0,
            persisted: 0,
            parked: VecDeque::new(),
        }
    }

    /// The last index written (durable or not).
    pub fn written_last(&self) -> Index {
        self.written_last
    }

    /// Whether every write handed to the host is durable.
    pub fn all_durable(&self) -> bool {
        self.persisted == self.submitted
    }

    /// The host made write `sequence` durable, and every one before it: the
    /// messages that waited for them, in order. A completion out of order
    /// is refused (the messages it would free could announce entries that
    /// are not durable).
    pub fn persisted(&mut self, sequence: u64) -> Result<Vec<Message>, String> {
        if sequence <= self.persisted || sequence > self.submitted {
            return Err(format!(
                "write {sequence} reported durable out of order ({} durable, {} submitted)",
                self.persisted, self.submitted
            ));
        }
        self.persisted = sequence;
        let mut free = Vec::new();
        while self
            .parked
            .front()
            .is_some_and(|(waits_for, _)| *waits_for <= sequence)
        {
            if let Some((_, messages)) = self.parked.pop_front() {
                free.extend(messages);
            }
        }
        Ok(free)
    }

    /// Messages that may go only once every write so far is durable: given
    /// back to send now if it is, else held for [`Bookkeeping::persisted`].
    fn hold_until_durable(&mut self, messages: Vec<Message>) -> Vec<Message> {
        if self.all_durable() {
            return messages;
        }
        self.parked.push_back((self.submitted, messages));
        Vec::new()
    }

    /// The log now starts after `start`: every batch waiting is answered
    /// `LogDropped` (it may have committed, this member cannot tell), and
    /// the offset commits written are gone with the log.
    fn log_start_taken(&mut self, start: Index) -> Answers<W> {
        self.written_last = start;
        self.consumer_pending = PendingCommits::default();
        self.proposals.on_log_start()
    }
}

/// When a write the host was handed is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Already (written synchronously).
    Durable,
    /// Later: the host calls [`Bookkeeping::persisted`] with the write's
    /// sequence once it is, in sequence order.
    Later,
}

/// The term of the entry at an index of the log the core reads.
pub trait EntryTerms {
    /// `None` past the log's end.
    fn entry_term(&self, index: Index) -> Result<Option<Term>, String>;
}

impl<L: LogRead> EntryTerms for Node<L> {
    fn entry_term(&self, index: Index) -> Result<Option<Term>, String> {
        Node::entry_term(self, index).map_err(|err| err.to_string())
    }
}

/// What carrying out a Ready needs from the one that runs the member. Each
/// step is called in the order [`carry_out`] documents; an error stops the
/// member.
pub trait Host {
    /// Who waits for a proposal's outcome.
    type Waiter;

    /// The executor's bookkeeping, and the core's log.
    fn parts(&mut self) -> (&mut Bookkeeping<Self::Waiter>, &dyn EntryTerms);

    /// A peer broke the protocol; the core dropped its message.
    fn violation(&mut self, violation: Violation);

    /// Saves the configuration records durably (before any entry is
    /// written) and brings the links to the members in line with the last.
    fn save_configurations(&mut self, records: Vec<ConfigRecord>) -> Result<(), String>;

    /// Resets the log to start after `start.prev_log_index` and takes its
    /// state image. The executor then answers the waiting batches.
    fn install_log_start(&mut self, start: LogStart) -> Result<(), String>;

    /// Role, leader or term changed.
    fn soft_state(&mut self, soft: SoftState) -> Result<(), String>;

    /// Sends messages now.
    fn send(&mut self, messages: Vec<Message>);

    /// Cuts the log from `from` on: another leader's entries replace that
    /// tail.
    fn truncate_log(&mut self, from: Index) -> Result<(), String>;

    /// The batches a truncation cut, with their outcome. "Not appended" is
    /// true only once the cut is durable. (`Proposals::on_truncate`
    /// answers none today: a cut batch waits for the commit index.)
    fn answer_truncated(&mut self, answers: Answers<Self::Waiter>) -> Result<(), String>;

    /// An offset commit entry that does not decode: every member skips it
    /// alike when it commits.
    fn malformed_offset_commit(
        &mut self,
        index: Index,
        defect: MalformedCommit,
    ) -> Result<(), String>;

    /// Writes term and vote (if set) and entries; `sequence` names the
    /// write if it completes [`Written::Later`].
    fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
        sequence: u64,
    ) -> Result<Written, String>;

    /// Applies the offset commits the commit index now covers (from
    /// `Bookkeeping::consumer_pending`); their verdicts, by index.
    fn apply_offsets(&mut self, commit: Index) -> Result<Vec<(Index, Applied)>, String>;

    /// Tells the waiters their batches' outcome; `verdicts` are those of
    /// the offset commits applied with it.
    fn answer(
        &mut self,
        answers: Answers<Self::Waiter>,
        verdicts: &[(Index, Applied)],
    ) -> Result<(), String>;

    /// The commit index moved to `commit` and its proposals are answered:
    /// reads that waited for it may be served.
    fn committed(&mut self, commit: Index) -> Result<(), String>;

    /// An answer to `read_index`.
    fn read_state(&mut self, read: ReadState) -> Result<(), String>;

    /// A leadership transfer ended.
    fn transfer_outcome(&mut self, outcome: TransferOutcome);

    /// The bookkeeping alone.
    fn books(&mut self) -> &mut Bookkeeping<Self::Waiter> {
        self.parts().0
    }
}

/// Carries out one Ready, in the order `core::Ready` documents:
///
/// 1. violations are reported;
/// 2. configuration records are saved, before anything is sent or written
///    (the file must never miss a configuration entry the log has, and
///    answers go to the members now in force);
/// 3. a log start is taken up, and the batches waiting answered;
/// 4. the new role is taken in;
/// 5. messages that do not wait for the disk go;
/// 6. the write: a conflicting tail cut first (its batches answered),
///    offset commits noted, then term, vote and entries;
/// 7. messages that wait for every write so far to be durable go, or wait;
/// 8. the commit: offset commits applied, then proposals answered, then
///    reads served;
/// 9. read and transfer answers.
pub fn carry_out<H: Host>(host: &mut H, ready: Ready) -> Result<(), String> {
    let Ready {
        hard_state,
        entries,
        messages,
        persisted_messages,
        commit_index,
        read_states,
        soft_state,
        transfer_outcomes,
        violations,
        configurations,
        log_start,
    } = ready;
    for violation in violations {
        host.violation(violation);
    }
    if let Some(records) = configurations {
        host.save_configurations(records)?;
    }
    if let Some(start) = log_start {
        let at = start.prev_log_index;
        host.install_log_start(start)?;
        let answers = host.books().log_start_taken(at);
        host.answer(answers, &[])?;
    }
    if let Some(soft) = soft_state {
        host.soft_state(soft)?;
    }
    host.send(messages);
    write(host, hard_state, entries)?;
    if !persisted_messages.is_empty() {
        let free = host.books().hold_until_durable(persisted_messages);
        if !free.is_empty() {
            host.send(free);
        }
    }
    if let Some(commit) = commit_index {
        self::commit(host, commit)?;
    }
    for read in read_states {
        host.read_state(read)?;
    }
    for outcome in transfer_outcomes {
        host.transfer_outcome(outcome);
    }
    Ok(())
}

fn write<H: Host>(
    host: &mut H,
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
) -> Result<(), String> {
    if hard_state.is_none() && entries.is_empty() {
        return Ok(());
    }
    if let Some(first) = entries
        .first()
        .map(|entry| entry.index)
        .filter(|first| *first <= host.books().written_last)
    {
        // A follower's conflicting tail: cut it before writing ours. Its
        // entries were not committed (committed entries are never
        // replaced), so neither were its offset commits.
        host.truncate_log(first)?;
        let books = host.books();
        books.consumer_pending.truncate_from(first);
        let answers = books.proposals.on_truncate(first);
        host.answer_truncated(answers)?;
    }
    for (index, defect) in host.books().consumer_pending.on_append(&entries) {
        host.malformed_offset_commit(index, defect)?;
    }
    let books = host.books();
    if let Some(last) = entries.last() {
        books.written_last = last.index;
    }
    let sequence = books.submitted + 1;
    if host.write(hard_state, entries, sequence)? == Written::Later {
        host.books().submitted = sequence;
    }
    Ok(())
}

fn commit<H: Host>(host: &mut H, commit: Index) -> Result<(), String> {
    // Apply first: an offset commit is answered with its verdict, and a
    // read served after must see what committed before it.
    let verdicts = host.apply_offsets(commit)?;
    let (books, log) = host.parts();
    let answers = books
        .proposals
        .on_commit(commit, |index| log.entry_term(index))?;
    host.answer(answers, &verdicts)?;
    host.committed(commit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::MessageBody;

    fn heartbeat(to: u64) -> Message {
        Message {
            from: 1,
            to,
            term: 1,
            body: MessageBody::Heartbeat {
                leader_commit: 0,
                read_context: None,
            },
        }
    }

    #[test]
    fn messages_wait_for_every_earlier_write() {
        let mut books: Bookkeeping<()> = Bookkeeping::new(0, PendingCommits::default());
        assert_eq!(books.hold_until_durable(vec![heartbeat(2)]).len(), 1);
        books.submitted = 2;
        assert!(books.hold_until_durable(vec![heartbeat(2)]).is_empty());
        books.submitted = 3;
        assert!(books.hold_until_durable(vec![heartbeat(3)]).is_empty());
        assert!(books.persisted(1).expect("in order").is_empty());
        assert_eq!(books.persisted(2).expect("in order").len(), 1);
        assert!(!books.all_durable());
        assert_eq!(books.persisted(3).expect("in order").len(), 1);
        assert!(books.all_durable());
    }

    #[test]
    fn a_completion_out_of_order_is_refused() {
        let mut books: Bookkeeping<()> = Bookkeeping::new(0, PendingCommits::default());
        books.submitted = 2;
        assert!(books.persisted(3).is_err(), "never submitted");
        assert!(books.persisted(2).is_ok());
        assert!(books.persisted(1).is_err(), "already durable");
    }
}
