//! Consumer groups: named offsets (the index each group reads next),
//! committed through the Raft log as [`EntryKind::ConsumerOffset`] entries.
//!
//! Pure code, no I/O: the payload codec of an offset commit and
//! [`ConsumerState`], the map every member builds by applying the committed
//! commits in log order. A conditional commit ("only if the stored offset is
//! N", "only forward") is decided when the entry is *applied*, not when it is
//! proposed: every member applies the same entries in the same order, so
//! every member reaches the same verdict, and two consumers racing on one
//! group cannot both win.
//!
//! [`checkpoint`] is the byte format of the state saved before retention
//! deletes the entries it was built from.

pub mod checkpoint;

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::entry::{Entry, EntryKind, Index};

/// Longest group name, in bytes (characters: names are ASCII).
pub const MAX_GROUP_NAME_BYTES: usize = 128;

/// The payload format's version byte; a member refuses (as malformed) a
/// version it does not know rather than guessing.
const PAYLOAD_VERSION: u8 = 1;

const CONDITION_NONE: u8 = 0;
const CONDITION_EXPECTED: u8 = 1;
const CONDITION_FORWARD_ONLY: u8 = 2;

/// When an offset commit takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Always: the last commit wins.
    None,
    /// Only if the stored offset is this one; `0` means "the group has no
    /// offset yet" (offsets start at 1), so a group can be created once.
    Expected(Index),
    /// Only if the new offset is not below the stored one (equal is taken,
    /// so a retried commit is harmless).
    ForwardOnly,
}

/// One offset commit, as carried in a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommit {
    /// The group (valid per [`validate_group_name`]).
    pub group: String,
    /// The index the group reads next.
    pub offset: Index,
    /// When it takes effect.
    pub condition: Condition,
}

/// Why an offset commit's payload or a group name is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MalformedCommit {
    /// The group name breaks the naming rule.
    #[error("bad group name {name:?}: {reason}")]
    BadGroupName {
        /// The name (lossy if it was not UTF-8).
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The payload cannot be decoded.
    #[error("malformed offset commit payload: {0}")]
    Payload(&'static str),
}

/// Checks a group name: 1 to 128 characters of `[A-Za-z0-9._-]`, so it is
/// safe in a URL path, a metric label and a file name alike.
pub fn validate_group_name(name: &str) -> Result<(), MalformedCommit> {
    let bad = |reason| MalformedCommit::BadGroupName {
        name: name.chars().take(MAX_GROUP_NAME_BYTES + 8).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_GROUP_NAME_BYTES {
        return Err(bad("it is longer than 128 characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(allowed) {
        return Err(bad("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

impl OffsetCommit {
    /// The entry payload: version, condition tag, offset, the expected
    /// offset (tag `expected` only), then the name's length and bytes.
    /// Integers are big-endian.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(2 + 8 + 8 + 1 + self.group.len());
        out.put_u8(PAYLOAD_VERSION);
        let tag = match self.condition {
            Condition::None => CONDITION_NONE,
            Condition::Expected(_) => CONDITION_EXPECTED,
            Condition::ForwardOnly => CONDITION_FORWARD_ONLY,
        };
        out.put_u8(tag);
        out.put_u64(self.offset);
        if let Condition::Expected(expected) = self.condition {
            out.put_u64(expected);
        }
        // Validated names fit in a byte (at most 128); a longer one is a
        // caller's bug, caught by `decode` on every member.
        out.put_u8(u8::try_from(self.group.len()).unwrap_or(u8::MAX));
        out.put_slice(self.group.as_bytes());
        out.freeze()
    }

    /// Decodes a payload read from the disk or the network: any defect is
    /// an error, never a panic.
    pub fn decode(payload: &[u8]) -> Result<OffsetCommit, MalformedCommit> {
        let mut reader = Reader(payload);
        let version = reader.u8()?;
        if version != PAYLOAD_VERSION {
            return Err(MalformedCommit::Payload("unknown payload version"));
        }
        let tag = reader.u8()?;
        let offset = reader.u64()?;
        let condition = match tag {
            CONDITION_NONE => Condition::None,
            CONDITION_EXPECTED => Condition::Expected(reader.u64()?),
            CONDITION_FORWARD_ONLY => Condition::ForwardOnly,
            _ => return Err(MalformedCommit::Payload("unknown condition tag")),
        };
        let name_bytes = usize::from(reader.u8()?);
        let name = reader.take(name_bytes)?;
        if !reader.0.is_empty() {
            return Err(MalformedCommit::Payload(
                "trailing bytes after the group name",
            ));
        }
        let group = std::str::from_utf8(name)
            .map_err(|_| MalformedCommit::Payload("the group name is not UTF-8"))?
            .to_string();
        validate_group_name(&group)?;
        if offset == 0 {
            return Err(MalformedCommit::Payload("offset 0 (indexes start at 1)"));
        }
        Ok(OffsetCommit {
            group,
            offset,
            condition,
        })
    }
}

/// A cursor over a payload whose reads fail instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], MalformedCommit> {
        if self.0.len() < count {
            return Err(MalformedCommit::Payload("truncated"));
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, MalformedCommit> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, MalformedCommit> {
        let bytes: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| MalformedCommit::Payload("truncated"))?;
        Ok(u64::from_be_bytes(bytes))
    }
}

/// Why an offset commit was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The condition did not hold against the stored offset (another
    /// consumer of the group committed first).
    #[error("group {group:?}: {reason} (current offset: {current:?})")]
    Conflict {
        /// The group.
        group: String,
        /// Its stored offset, `None` when it has none.
        current: Option<Index>,
        /// Which condition failed.
        reason: String,
    },
    /// The offset is outside what can be read next.
    #[error(
        "offset {offset} is out of range: it must be within the first retained index \
         {first_index} and the commit index + 1 ({next_index})"
    )]
    OutOfRange {
        /// The offset asked for.
        offset: Index,
        /// The first index still in the log.
        first_index: Index,
        /// One past the commit index (or the commit entry's own index at
        /// apply time).
        next_index: Index,
    },
}

/// What applying one committed offset commit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The group's offset is now `offset`.
    Stored {
        /// The group.
        group: String,
        /// Its offset now.
        offset: Index,
    },
    /// Refused; the state is unchanged.
    Refused(Refusal),
}

/// Every group's committed offset, built by applying committed
/// [`EntryKind::ConsumerOffset`] entries in index order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerState {
    offsets: BTreeMap<String, Index>,
    /// The last entry index applied (of any kind): entries are applied once
    /// each and in order.
    /// Invariant: never decreases; at most the member's commit index.
    applied_index: Index,
}

impl ConsumerState {
    /// A group's offset, if it has one.
    pub fn offset(&self, group: &str) -> Option<Index> {
        self.offsets.get(group).copied()
    }

    /// Every group and its offset, in name order.
    pub fn groups(&self) -> impl Iterator<Item = (&str, Index)> {
        self.offsets
            .iter()
            .map(|(group, offset)| (group.as_str(), *offset))
    }

    /// How many groups there are.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether there is no group yet.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The last index applied.
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// Checks a commit before it is proposed: the offset must lie within
    /// `[first_index, commit_index + 1]`, and a condition that already fails
    /// is refused at once. Advisory only: the verdict that counts is
    /// [`apply`](Self::apply)'s, since other commits may land in between.
    pub fn check(
        &self,
        commit: &OffsetCommit,
        first_index: Index,
        commit_index: Index,
    ) -> Result<(), Refusal> {
        let next_index = commit_index.saturating_add(1);
        if commit.offset < first_index || commit.offset > next_index {
            return Err(Refusal::OutOfRange {
                offset: commit.offset,
                first_index,
                next_index,
            });
        }
        match self.condition_refusal(commit) {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Applies committed entry `entry` (the next one in index order; other
    /// kinds only move the applied index). Deterministic: the verdict
    /// depends on the state and the entry alone. A malformed payload is
    /// skipped (every member skips it alike) and reported as an error.
    pub fn apply(&mut self, entry: &Entry) -> Result<Option<Applied>, MalformedCommit> {
        debug_assert!(
            entry.index > self.applied_index,
            "entry {} applied after {}",
            entry.index,
            self.applied_index
        );
        self.applied_index = self.applied_index.max(entry.index);
        if entry.kind != EntryKind::ConsumerOffset {
            return Ok(None);
        }
        let commit = OffsetCommit::decode(&entry.payload)?;
        Ok(Some(self.decide(entry.index, commit)))
    }

    /// Applies the offset commit decoded from committed entry `index` (the
    /// next one in index order, as [`apply`](Self::apply) does for a whole
    /// entry).
    pub fn apply_commit(&mut self, index: Index, commit: OffsetCommit) -> Applied {
        debug_assert!(
            index > self.applied_index,
            "entry {index} applied after {}",
            self.applied_index
        );
        self.applied_index = self.applied_index.max(index);
        self.decide(index, commit)
    }

    fn decide(&mut self, index: Index, commit: OffsetCommit) -> Applied {
        // The proposer checked offset <= its commit index + 1, and its
        // commit index was below this entry's index; the first retained
        // index differs between members, so it is not checked here.
        if commit.offset > index {
            return Applied::Refused(Refusal::OutOfRange {
                offset: commit.offset,
                first_index: 1,
                next_index: index,
            });
        }
        if let Some(refusal) = self.condition_refusal(&commit) {
            return Applied::Refused(refusal);
        }
        self.offsets.insert(commit.group.clone(), commit.offset);
        Applied::Stored {
            group: commit.group,
            offset: commit.offset,
        }
    }

    /// Skips entries up to `index` without applying them: their effect is
    /// lost (the log below the first retained index is gone).
    pub fn skip_to(&mut self, index: Index) {
        self.applied_index = self.applied_index.max(index);
    }

    fn condition_refusal(&self, commit: &OffsetCommit) -> Option<Refusal> {
        let current = self.offset(&commit.group);
        let conflict = |reason: String| Refusal::Conflict {
            group: commit.group.clone(),
            current,
            reason,
        };
        match commit.condition {
            Condition::None => None,
            Condition::Expected(0) if current.is_none() => None,
            Condition::Expected(0) => Some(conflict(
                "expected the group to have no offset yet".to_string(),
            )),
            Condition::Expected(expected) if current == Some(expected) => None,
            Condition::Expected(expected) => {
                Some(conflict(format!("expected the stored offset {expected}")))
            }
            Condition::ForwardOnly => match current {
                Some(current) if commit.offset < current => Some(conflict(format!(
                    "forward only: {} is below the stored offset",
                    commit.offset
                ))),
                _ => None,
            },
        }
    }
}

/// The offset commits a member has appended to its log and not yet seen
/// committed, by index: decoded once, when the entries are appended (a
/// leader's proposals, a follower's entries from the leader, or the log
/// found on disk at start), so that applying them at commit reads nothing
/// back from the disk. A commit is small (a name of at most 128 bytes and
/// two integers), and
/// entries beyond the commit index are bounded by the leader's window of
/// uncommitted proposals, except at start, when every offset commit of the
/// retained log waits here until the leader tells the commit index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingCommits {
    /// Invariant: every index is above the applied index of the state they
    /// are applied to.
    by_index: BTreeMap<Index, OffsetCommit>,
}

impl PendingCommits {
    /// How many commits wait.
    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// Takes note of appended entries (consecutive, in index order): an
    /// entry at an index already held replaces it, as it replaces it in the
    /// log, so the caller cuts first ([`truncate_from`](Self::truncate_from))
    /// and may also rely on this. Entries of other kinds are ignored;
    /// offset commits whose payload does not decode are left out (every
    /// member leaves them out alike, as [`ConsumerState::apply`] skips them)
    /// and returned so the caller can say so.
    pub fn on_append(&mut self, entries: &[Entry]) -> Vec<(Index, MalformedCommit)> {
        if let Some(first) = entries.first() {
            self.truncate_from(first.index);
        }
        let mut malformed = Vec::new();
        for entry in entries {
            if entry.kind != EntryKind::ConsumerOffset {
                continue;
            }
            match OffsetCommit::decode(&entry.payload) {
                Ok(commit) => {
                    self.by_index.insert(entry.index, commit);
                }
                Err(err) => malformed.push((entry.index, err)),
            }
        }
        malformed
    }

    /// The log was cut from `from` on (a new leader's entries replace an
    /// uncommitted tail): those commits will never apply.
    pub fn truncate_from(&mut self, from: Index) {
        drop(self.by_index.split_off(&from));
    }

    /// Whether any waiting commit is at or below `commit`.
    pub fn any_committed(&self, commit: Index) -> bool {
        self.by_index
            .first_key_value()
            .is_some_and(|(index, _)| *index <= commit)
    }

    /// The commit index reached `commit`: applies the waiting commits up to
    /// it to `state` in index order, and moves its applied index to
    /// `commit` (entries of other kinds only move it). Returns each applied
    /// commit's index and verdict, in index order.
    pub fn apply_committed(
        &mut self,
        commit: Index,
        state: &mut ConsumerState,
    ) -> Vec<(Index, Applied)> {
        let later = self.by_index.split_off(&commit.saturating_add(1));
        let committed = std::mem::replace(&mut self.by_index, later);
        let mut verdicts = Vec::with_capacity(committed.len());
        for (index, offset_commit) in committed {
            // An index at or below the applied one was applied already (or
            // is below the first retained index): applying it again would
            // break the order every member applies in.
            if index <= state.applied_index() {
                continue;
            }
            verdicts.push((index, state.apply_commit(index, offset_commit)));
        }
        state.skip_to(commit);
        verdicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(group: &str, offset: Index, condition: Condition) -> OffsetCommit {
        OffsetCommit {
            group: group.into(),
            offset,
            condition,
        }
    }

    fn entry(index: Index, commit: &OffsetCommit) -> Entry {
        Entry {
            index,
            term: 1,
            kind: EntryKind::ConsumerOffset,
            payload: commit.encode(),
        }
    }

    #[test]
    fn payload_round_trips_every_condition() {
        for condition in [
            Condition::None,
            Condition::Expected(0),
            Condition::Expected(7),
            Condition::ForwardOnly,
        ] {
            let original = commit("orders.v1_x-y", 42, condition);
            let decoded = OffsetCommit::decode(&original.encode()).unwrap();
            assert_eq!(decoded, original);
        }
        let longest = "a".repeat(MAX_GROUP_NAME_BYTES);
        let original = commit(&longest, u64::MAX, Condition::None);
        assert_eq!(OffsetCommit::decode(&original.encode()).unwrap(), original);
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let good = commit("g", 5, Condition::Expected(3)).encode();
        // Every truncation, and every single-byte change of the header.
        for cut in 0..good.len() {
            assert!(OffsetCommit::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert!(OffsetCommit::decode(&trailing).is_err());
        let mut version = good.to_vec();
        version[0] = 9;
        assert!(OffsetCommit::decode(&version).is_err());
        let mut tag = good.to_vec();
        tag[1] = 7;
        assert!(OffsetCommit::decode(&tag).is_err());
        let mut name = good.to_vec();
        let last = name.len() - 1;
        name[last] = b'/';
        assert!(matches!(
            OffsetCommit::decode(&name),
            Err(MalformedCommit::BadGroupName { .. })
        ));
        let mut invalid_utf8 = good.to_vec();
        invalid_utf8[last] = 0xFF;
        assert!(OffsetCommit::decode(&invalid_utf8).is_err());
        assert!(OffsetCommit::decode(&commit("g", 0, Condition::None).encode()).is_err());
        assert!(OffsetCommit::decode(&commit("", 1, Condition::None).encode()).is_err());
        // Arbitrary bytes never panic.
        for seed in 0u8..=255 {
            let noise: Vec<u8> = (0..seed as usize % 40)
                .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
                .collect();
            let _ = OffsetCommit::decode(&noise);
        }
    }

    #[test]
    fn group_names_follow_the_rule() {
        for good in ["a", "orders", "A.b_c-9", &"x".repeat(128)] {
            assert!(validate_group_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", "a\n", &"x".repeat(129), "grp?"] {
            assert!(validate_group_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn check_bounds_the_offset_by_retention_and_commit() {
        let state = ConsumerState::default();
        let plain = |offset| commit("g", offset, Condition::None);
        assert!(state.check(&plain(5), 5, 10).is_ok());
        assert!(state.check(&plain(11), 5, 10).is_ok());
        assert!(matches!(
            state.check(&plain(4), 5, 10),
            Err(Refusal::OutOfRange {
                first_index: 5,
                next_index: 11,
                ..
            })
        ));
        assert!(matches!(
            state.check(&plain(12), 5, 10),
            Err(Refusal::OutOfRange { .. })
        ));
    }

    #[test]
    fn conditions_are_decided_at_apply_in_log_order() {
        let mut state = ConsumerState::default();
        // Two consumers both saw "no offset yet" and raced: the first in
        // the log wins, the second is refused on every member alike.
        let first = commit("g", 3, Condition::Expected(0));
        let second = commit("g", 4, Condition::Expected(0));
        assert!(state.check(&first, 1, 10).is_ok());
        assert!(state.check(&second, 1, 10).is_ok());
        assert_eq!(
            state.apply(&entry(11, &first)).unwrap(),
            Some(Applied::Stored {
                group: "g".into(),
                offset: 3
            })
        );
        assert!(matches!(
            state.apply(&entry(12, &second)).unwrap(),
            Some(Applied::Refused(Refusal::Conflict {
                current: Some(3),
                ..
            }))
        ));
        assert_eq!(state.offset("g"), Some(3));
        // Expected the right one: taken.
        let next = commit("g", 9, Condition::Expected(3));
        assert!(matches!(
            state.apply(&entry(13, &next)).unwrap(),
            Some(Applied::Stored { offset: 9, .. })
        ));
        // Forward only: equal is fine, backwards refused.
        let same = commit("g", 9, Condition::ForwardOnly);
        assert!(matches!(
            state.apply(&entry(14, &same)).unwrap(),
            Some(Applied::Stored { .. })
        ));
        let back = commit("g", 2, Condition::ForwardOnly);
        assert!(state.check(&back, 1, 20).is_err());
        assert!(matches!(
            state.apply(&entry(15, &back)).unwrap(),
            Some(Applied::Refused(Refusal::Conflict { .. }))
        ));
        // Unconditional: the last one wins, even backwards.
        let reset = commit("g", 1, Condition::None);
        assert!(matches!(
            state.apply(&entry(16, &reset)).unwrap(),
            Some(Applied::Stored { offset: 1, .. })
        ));
        assert_eq!(state.offset("g"), Some(1));
        assert_eq!(state.applied_index(), 16);
    }

    #[test]
    fn apply_skips_other_kinds_and_malformed_payloads_alike() {
        let mut state = ConsumerState::default();
        assert_eq!(state.apply(&Entry::normal(1, 1, "x")).unwrap(), None);
        let broken = Entry {
            index: 2,
            term: 1,
            kind: EntryKind::ConsumerOffset,
            payload: Bytes::from_static(&[1, 0, 0]),
        };
        assert!(state.apply(&broken).is_err());
        assert!(state.is_empty());
        assert_eq!(state.applied_index(), 2);
        // An offset past the commit entry itself cannot have been checked.
        let future = commit("g", 10, Condition::None);
        assert!(matches!(
            state.apply(&entry(3, &future)).unwrap(),
            Some(Applied::Refused(Refusal::OutOfRange { .. }))
        ));
        assert!(state.is_empty());
    }

    #[test]
    fn members_applying_the_same_log_agree() {
        let commits = [
            commit("a", 1, Condition::None),
            commit("b", 2, Condition::Expected(0)),
            commit("a", 3, Condition::Expected(1)),
            commit("a", 2, Condition::ForwardOnly),
            commit("b", 5, Condition::Expected(9)),
        ];
        let log: Vec<Entry> = commits
            .iter()
            .enumerate()
            .map(|(i, c)| entry(i as Index + 10, c))
            .collect();
        let mut one = ConsumerState::default();
        let mut two = ConsumerState::default();
        for e in &log {
            let _ = one.apply(e);
        }
        for e in &log {
            let _ = two.apply(e);
        }
        assert_eq!(one, two);
        assert_eq!(one.offset("a"), Some(3));
        assert_eq!(one.offset("b"), Some(2));
        assert_eq!(one.groups().collect::<Vec<_>>(), vec![("a", 3), ("b", 2)]);
    }

    fn normal(index: Index) -> Entry {
        Entry::normal(index, 1, "payload")
    }

    #[test]
    fn pending_commits_apply_in_index_order_at_commit_only() {
        let mut pending = PendingCommits::default();
        let mut state = ConsumerState::default();
        let log = vec![
            normal(1),
            entry(2, &commit("g", 1, Condition::Expected(0))),
            normal(3),
            entry(4, &commit("g", 3, Condition::Expected(1))),
            entry(5, &commit("h", 2, Condition::None)),
        ];
        assert!(pending.on_append(&log).is_empty());
        assert_eq!(pending.len(), 3);
        // Nothing applies before its commit.
        assert!(!pending.any_committed(1));
        assert!(pending.apply_committed(1, &mut state).is_empty());
        assert!(state.is_empty());
        assert_eq!(state.applied_index(), 1);
        // Up to 4: entries 2 then 4, in that order (4 expects what 2 stored).
        assert!(pending.any_committed(4));
        let verdicts = pending.apply_committed(4, &mut state);
        assert_eq!(
            verdicts,
            vec![
                (
                    2,
                    Applied::Stored {
                        group: "g".into(),
                        offset: 1
                    }
                ),
                (
                    4,
                    Applied::Stored {
                        group: "g".into(),
                        offset: 3
                    }
                ),
            ]
        );
        assert_eq!(state.offset("g"), Some(3));
        assert_eq!(state.offset("h"), None);
        assert_eq!(state.applied_index(), 4);
        assert_eq!(pending.len(), 1);
        // A commit index that does not move applies nothing twice.
        assert!(pending.apply_committed(4, &mut state).is_empty());
        assert_eq!(pending.apply_committed(5, &mut state).len(), 1);
        assert_eq!(state.offset("h"), Some(2));
        assert!(pending.is_empty());
    }

    #[test]
    fn a_truncated_pending_commit_never_applies() {
        let mut pending = PendingCommits::default();
        let mut state = ConsumerState::default();
        pending.on_append(&[normal(1), entry(2, &commit("g", 2, Condition::None))]);
        pending.on_append(&[entry(3, &commit("g", 3, Condition::None))]);
        // A new leader's entries replace 3 on: its commit is gone.
        pending.truncate_from(3);
        pending.on_append(&[normal(3), normal(4)]);
        assert_eq!(pending.len(), 1);
        pending.apply_committed(4, &mut state);
        assert_eq!(state.offset("g"), Some(2));
        // Appending over a held index replaces it even without a cut first.
        pending.on_append(&[entry(5, &commit("g", 5, Condition::None))]);
        pending.on_append(&[normal(5)]);
        assert!(pending.is_empty());
        pending.apply_committed(5, &mut state);
        assert_eq!(state.offset("g"), Some(2));
        assert_eq!(state.applied_index(), 5);
    }

    #[test]
    fn two_commits_with_the_same_expected_the_second_is_refused_on_every_member() {
        // Two consumers of "g" both read offset 4 and commit with
        // expected 4; the leader appends both, one member gets them in one
        // append, another in two appends after a truncated stale tail, and a
        // third rebuilds from its log at start. All reach one verdict.
        let first = commit("g", 5, Condition::Expected(4));
        let second = commit("g", 6, Condition::Expected(4));
        let mut log: Vec<Entry> = (1..=5).map(normal).collect();
        log.push(entry(6, &commit("g", 4, Condition::None)));
        log.push(entry(7, &first));
        log.push(entry(8, &second));
        log.push(normal(9));
        let mut leader = (PendingCommits::default(), ConsumerState::default());
        leader.0.on_append(&log);
        let mut follower = (PendingCommits::default(), ConsumerState::default());
        follower.0.on_append(&log[..7]);
        follower
            .0
            .on_append(&[entry(8, &commit("g", 1, Condition::None))]);
        follower.0.truncate_from(8);
        follower.0.on_append(&log[7..]);
        let mut restarted = (PendingCommits::default(), ConsumerState::default());
        restarted.0.on_append(&log);
        let mut verdicts = Vec::new();
        for (pending, state) in [&mut leader, &mut follower, &mut restarted] {
            pending.apply_committed(6, state);
            // Both consumers saw offset 4: both pass the advisory check.
            assert!(state.check(&first, 1, 6).is_ok());
            assert!(state.check(&second, 1, 6).is_ok());
            let applied = pending.apply_committed(9, state);
            assert_eq!(state.offset("g"), Some(5));
            verdicts.push(applied);
        }
        assert_eq!(
            verdicts[0][0],
            (
                7,
                Applied::Stored {
                    group: "g".into(),
                    offset: 5
                }
            )
        );
        assert!(matches!(
            verdicts[0][1],
            (
                8,
                Applied::Refused(Refusal::Conflict {
                    current: Some(5),
                    ..
                })
            )
        ));
        assert_eq!(verdicts[0], verdicts[1]);
        assert_eq!(verdicts[0], verdicts[2]);
        assert_eq!(leader.1, follower.1);
        assert_eq!(leader.1, restarted.1);
    }

    #[test]
    fn malformed_pending_commits_are_left_out_and_reported() {
        let mut pending = PendingCommits::default();
        let broken = Entry {
            index: 2,
            term: 1,
            kind: EntryKind::ConsumerOffset,
            payload: Bytes::from_static(&[1, 0]),
        };
        let malformed = pending.on_append(&[normal(1), broken]);
        assert_eq!(malformed.len(), 1);
        assert_eq!(malformed[0].0, 2);
        assert!(pending.is_empty());
    }

    #[test]
    fn commits_at_or_below_the_applied_index_are_not_applied_again() {
        // At start the state begins past the first retained index - 1; a
        // commit the scan found below it (never the case, but cheap to
        // guard) must not apply out of order.
        let mut pending = PendingCommits::default();
        let mut state = ConsumerState::default();
        state.skip_to(3);
        pending.on_append(&[
            entry(3, &commit("g", 1, Condition::None)),
            entry(4, &commit("g", 2, Condition::None)),
        ]);
        let verdicts = pending.apply_committed(4, &mut state);
        assert_eq!(verdicts.len(), 1);
        assert_eq!(state.offset("g"), Some(2));
    }
}
