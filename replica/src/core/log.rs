//! The core's view of the log: durable entries read through [`LogRead`],
//! plus the "unstable" tail the core appended but the caller has not yet
//! reported durable.

use crate::entry::{Entry, Index, Term};

/// A failure to read the durable log. Fatal for the node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("reading the log: {reason}")]
pub struct LogReadError {
    /// What went wrong, for the operator.
    pub reason: String,
}

/// Read-only access to the durable log. The server implements it on the disk
/// store, the simulation on memory. The core never reads an index it has not
/// seen reported durable (through `on_persisted` or as present at start).
pub trait LogRead {
    /// The first index still in the log (1 unless retention removed a prefix).
    fn first_index(&self) -> Index;
    /// The last durable index (`first_index() - 1` when empty).
    fn last_index(&self) -> Index;
    /// The term of the entry at `index`; `Ok(None)` outside the log. Must
    /// also answer for `first_index() - 1` (the last entry retention removed)
    /// when `first_index() > 1`: the core needs it as the term before the log.
    fn term(&self, index: Index) -> Result<Option<Term>, LogReadError>;
    /// Up to `max_count` entries from `from`, stopping before `max_bytes` of
    /// payload is passed, but always at least one entry when `from` is in the log.
    fn entries(
        &self,
        from: Index,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogReadError>;
    /// The state the caller keeps beside the log (the server's consumer
    /// checkpoint), applied up to at least `first_index() - 1`, for a
    /// follower that needs entries before `first_index()`. Empty when the
    /// caller keeps none.
    fn state_image(&self) -> Result<bytes::Bytes, LogReadError> {
        Ok(bytes::Bytes::new())
    }
}

/// Durable log plus unstable tail.
pub(crate) struct RaftLog<L> {
    store: L,
    /// Entries from `unstable_offset` on, contiguous. Everything below
    /// `unstable_offset` is durable and read from `store`.
    unstable: Vec<Entry>,
    unstable_offset: Index,
    /// Last index handed to the caller through a Ready.
    /// Invariant: `unstable_offset - 1 <= handed_out <= last_index()`.
    handed_out: Index,
    /// Invariant: `committed <= last_index()`; never decreases.
    committed: Index,
    /// Set by [`install_start`](Self::install_start): the log continues
    /// after this (index, term), whatever the store still holds until the
    /// caller has reset it.
    start: Option<(Index, Term)>,
}

impl<L: LogRead> RaftLog<L> {
    pub(crate) fn new(store: L) -> RaftLog<L> {
        let last = store.last_index();
        let first = store.first_index();
        assert!(
            first >= 1 && first <= last + 1,
            "store reports first {first} last {last}"
        );
        RaftLog {
            store,
            unstable: Vec::new(),
            unstable_offset: last + 1,
            handed_out: last,
            // Retention only removes committed entries.
            committed: first - 1,
            start: None,
        }
    }

    pub(crate) fn first_index(&self) -> Index {
        let first = self.store.first_index();
        self.start.map_or(first, |(index, _)| first.max(index + 1))
    }

    /// The leader's log start: drop every entry and continue after
    /// (`index`, `term`), all of it committed. The caller resets its store
    /// the same way (`Ready::log_start`); until then the store's old
    /// entries are hidden.
    pub(crate) fn install_start(&mut self, index: Index, term: Term) {
        assert!(
            index > self.committed,
            "installing a log start at {index} below the commit index {}",
            self.committed
        );
        self.unstable.clear();
        self.unstable_offset = index + 1;
        self.handed_out = index;
        self.committed = index;
        self.start = Some((index, term));
    }

    pub(crate) fn store(&self) -> &L {
        &self.store
    }

    pub(crate) fn last_index(&self) -> Index {
        self.unstable_offset + self.unstable.len() as Index - 1
    }

    /// The highest index known durable in this log.
    pub(crate) fn persisted_index(&self) -> Index {
        self.unstable_offset - 1
    }

    pub(crate) fn committed(&self) -> Index {
        self.committed
    }

    pub(crate) fn term(&self, index: Index) -> Result<Option<Term>, LogReadError> {
        if index == 0 {
            return Ok(Some(0));
        }
        if let Some((start, term)) = self.start {
            if index == start {
                return Ok(Some(term));
            }
            if index < start {
                return Ok(None);
            }
        }
        if index >= self.unstable_offset {
            let offset = (index - self.unstable_offset) as usize;
            return Ok(self.unstable.get(offset).map(|entry| entry.term));
        }
        self.store.term(index)
    }

    pub(crate) fn last_term(&self) -> Result<Term, LogReadError> {
        let last = self.last_index();
        self.term(last)?.ok_or_else(|| LogReadError {
            reason: format!("the store has no term for its last index {last}"),
        })
    }

    /// Entries from `from` (at most `max_count`, about `max_bytes`); empty
    /// when `from` is past the end.
    pub(crate) fn entries(
        &self,
        from: Index,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogReadError> {
        assert!(
            from >= self.first_index(),
            "entries({from}) below the first index"
        );
        let mut out = Vec::new();
        if from > self.last_index() {
            return Ok(out);
        }
        let mut bytes = 0usize;
        if from < self.unstable_offset {
            let count = max_count.min((self.unstable_offset - from) as usize);
            out = self.store.entries(from, count, max_bytes)?;
            bytes = out.iter().map(|entry| entry.payload.len()).sum();
            let expected_next = from + out.len() as Index;
            if out.is_empty() || expected_next < self.unstable_offset {
                return Ok(out);
            }
        }
        let start = from.max(self.unstable_offset);
        for entry in &self.unstable[(start - self.unstable_offset) as usize..] {
            if out.len() >= max_count
                || (!out.is_empty() && bytes + entry.payload.len() > max_bytes)
            {
                break;
            }
            bytes += entry.payload.len();
            out.push(entry.clone());
        }
        Ok(out)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up
    /// to date as this one.
    pub(crate) fn is_up_to_date(
        &self,
        last_index: Index,
        last_term: Term,
    ) -> Result<bool, LogReadError> {
        let our_term = self.last_term()?;
        Ok(last_term > our_term || (last_term == our_term && last_index >= self.last_index()))
    }

    /// Append entries (they may start before our end: the suffix from there
    /// is replaced).
    ///
    /// # Panics
    /// If that would truncate a committed entry or leave a gap.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let first = first.index;
        assert!(
            first > self.committed,
            "truncating committed entry {first} (commit {})",
            self.committed
        );
        assert!(
            first <= self.last_index() + 1,
            "append at {first} leaves a gap after {}",
            self.last_index()
        );
        if first >= self.unstable_offset {
            self.unstable
                .truncate((first - self.unstable_offset) as usize);
        } else {
            self.unstable.clear();
            self.unstable_offset = first;
        }
        self.handed_out = self.handed_out.min(first - 1);
        for (offset, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                first + offset as Index,
                "appended entries are contiguous"
            );
        }
        self.unstable.extend_from_slice(entries);
    }

    /// A follower's append: Some(last new index) when `prev` matches. The
    /// caller has checked the entries are contiguous after `prev_index` and
    /// replace nothing committed.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        leader_commit: Index,
        entries: &[Entry],
    ) -> Result<Option<Index>, LogReadError> {
        if self.term(prev_index)? != Some(prev_term) {
            return Ok(None);
        }
        let last_new = prev_index + entries.len() as Index;
        let mut conflict = None;
        for (position, entry) in entries.iter().enumerate() {
            // The caller checked the entries follow `prev_index` one by one.
            if self.term(entry.index)? != Some(entry.term) {
                conflict = Some(position);
                break;
            }
        }
        if let Some(position) = conflict {
            self.append(&entries[position..]);
        }
        self.commit_to(leader_commit.min(last_new));
        Ok(Some(last_new))
    }

    /// The largest index at or below `index` whose term is at most `term`,
    /// with its term (fast back-off). Stops at the first unknown term.
    pub(crate) fn find_conflict_by_term(
        &self,
        index: Index,
        term: Term,
    ) -> Result<(Index, Term), LogReadError> {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index)? {
                Some(found) if found > term => index -= 1,
                Some(found) => return Ok((index, found)),
                None => return Ok((index, 0)),
            }
        }
    }

    pub(crate) fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} past the last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Entries not yet handed to the caller; marks them handed out.
    pub(crate) fn take_unhanded(&mut self) -> Vec<Entry> {
        let start = (self.handed_out + 1 - self.unstable_offset) as usize;
        let out = self.unstable[start..].to_vec();
        self.handed_out = self.last_index();
        out
    }

    pub(crate) fn has_unhanded(&self) -> bool {
        self.handed_out < self.last_index()
    }

    /// The caller reports entries up to `index` with `term` durable. Returns
    /// whether the persisted index advanced (false for a stale report).
    pub(crate) fn stable_to(&mut self, index: Index, term: Term) -> bool {
        if index < self.unstable_offset || index > self.handed_out {
            return false;
        }
        let offset = (index - self.unstable_offset) as usize;
        if self.unstable[offset].term != term {
            return false;
        }
        self.unstable.drain(..=offset);
        self.unstable_offset = index + 1;
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::entry::EntryKind;

    /// A memory store for unit tests.
    #[derive(Default)]
    pub(crate) struct MemoryLog {
        pub(crate) entries: Vec<Entry>,
    }

    impl LogRead for MemoryLog {
        fn first_index(&self) -> Index {
            1
        }
        fn last_index(&self) -> Index {
            self.entries.len() as Index
        }
        fn term(&self, index: Index) -> Result<Option<Term>, LogReadError> {
            Ok(match index {
                0 => Some(0),
                i => self.entries.get(i as usize - 1).map(|entry| entry.term),
            })
        }
        fn entries(
            &self,
            from: Index,
            max_count: usize,
            max_bytes: usize,
        ) -> Result<Vec<Entry>, LogReadError> {
            let mut out: Vec<Entry> = Vec::new();
            let mut bytes = 0;
            for entry in self.entries.iter().skip(from as usize - 1).take(max_count) {
                if !out.is_empty() && bytes + entry.payload.len() > max_bytes {
                    break;
                }
                bytes += entry.payload.len();
                out.push(entry.clone());
            }
            Ok(out)
        }
    }

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            payload: bytes::Bytes::from(vec![index as u8]),
        }
    }

    fn log_with_terms(terms: &[Term]) -> RaftLog<MemoryLog> {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| entry(i as Index + 1, *t))
            .collect();
        RaftLog::new(MemoryLog { entries })
    }

    #[test]
    fn unstable_tail_then_stable_to() {
        let mut log = log_with_terms(&[1, 1]);
        assert_eq!(log.persisted_index(), 2);
        log.append(&[entry(3, 2), entry(4, 2)]);
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.persisted_index(), 2);
        let handed = log.take_unhanded();
        assert_eq!(handed.len(), 2);
        assert!(!log.has_unhanded());
        assert!(!log.stable_to(4, 1), "wrong term is stale");
        assert!(log.stable_to(3, 2));
        assert_eq!(log.persisted_index(), 3);
        assert_eq!(log.term(4).unwrap(), Some(2));
    }

    #[test]
    fn follower_append_truncates_conflicting_suffix() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        let got = log.maybe_append(2, 1, 2, &[entry(3, 3)]).unwrap();
        assert_eq!(got, Some(3));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3).unwrap(), Some(3));
        assert_eq!(log.committed(), 2);
        assert_eq!(log.take_unhanded(), vec![entry(3, 3)]);
        // A report about the replaced entry at the old term is stale.
        assert!(!log.stable_to(3, 2));
    }

    #[test]
    fn duplicate_append_changes_nothing() {
        let mut log = log_with_terms(&[1, 1, 2]);
        assert_eq!(log.maybe_append(1, 1, 0, &[entry(2, 1)]).unwrap(), Some(2));
        assert_eq!(log.last_index(), 3, "a matching prefix never truncates");
        assert!(!log.has_unhanded());
        assert_eq!(log.maybe_append(3, 9, 0, &[]).unwrap(), None);
    }

    #[test]
    #[should_panic(expected = "truncating committed")]
    fn never_truncates_committed() {
        let mut log = log_with_terms(&[1, 1, 1]);
        log.commit_to(3);
        let _ = log.maybe_append(1, 1, 3, &[entry(2, 2)]);
    }

    #[test]
    fn conflict_by_term_walks_back() {
        let log = log_with_terms(&[1, 1, 2, 2, 4, 4]);
        assert_eq!(log.find_conflict_by_term(6, 3).unwrap(), (4, 2));
        assert_eq!(log.find_conflict_by_term(6, 4).unwrap(), (6, 4));
        assert_eq!(log.find_conflict_by_term(9, 1).unwrap(), (2, 1));
        assert_eq!(log.find_conflict_by_term(6, 0).unwrap(), (0, 0));
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let log = log_with_terms(&[1, 2, 2]);
        assert!(log.is_up_to_date(3, 2).unwrap());
        assert!(log.is_up_to_date(1, 3).unwrap());
        assert!(!log.is_up_to_date(2, 2).unwrap());
        assert!(!log.is_up_to_date(9, 1).unwrap());
    }

    #[test]
    fn entries_span_store_and_unstable() {
        let mut log = log_with_terms(&[1, 1]);
        log.append(&[entry(3, 2), entry(4, 2)]);
        let got = log.entries(2, 10, 1 << 20).unwrap();
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(log.entries(2, 2, 1 << 20).unwrap().len(), 2);
        assert_eq!(
            log.entries(1, 10, 1).unwrap().len(),
            1,
            "at least one entry"
        );
        assert!(log.entries(5, 10, 100).unwrap().is_empty());
    }
}
