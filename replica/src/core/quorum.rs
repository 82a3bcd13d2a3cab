//! Majority counting: commit indexes and election results.

use std::collections::BTreeMap;

use crate::entry::{Index, NodeId};

/// How many of `voters` make a majority.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The highest index that a majority of `match_indexes` (one per voter) has
/// reached. Reorders the slice.
///
/// # Panics
/// If the slice is empty.
pub fn committed_index(match_indexes: &mut [Index]) -> Index {
    assert!(!match_indexes.is_empty(), "a group has at least one voter");
    match_indexes.sort_unstable_by(|a, b| b.cmp(a));
    match_indexes[majority(match_indexes.len()) - 1]
}

/// Where an election stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided yet.
    Pending,
    /// A majority granted.
    Won,
    /// A majority refused.
    Lost,
}

/// The result of an election among `voter_count` voters given the answers so
/// far (`true` = granted).
pub fn vote_result(voter_count: usize, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let granted = votes.values().filter(|granted| **granted).count();
    let refused = votes.len() - granted;
    let needed = majority(voter_count);
    if granted >= needed {
        VoteResult::Won
    } else if refused > voter_count - needed {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_sizes() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn committed_index_is_the_majority_median() {
        assert_eq!(committed_index(&mut [7]), 7);
        assert_eq!(committed_index(&mut [5, 9, 1]), 5);
        assert_eq!(committed_index(&mut [0, 0, 9]), 0);
        assert_eq!(committed_index(&mut [3, 8, 8, 1, 2]), 3);
        assert_eq!(committed_index(&mut [4, 4, 4, 4]), 4);
        assert_eq!(committed_index(&mut [1, 2, 3, 4]), 2);
    }

    #[test]
    fn vote_results() {
        let mut votes = BTreeMap::new();
        votes.insert(1, true);
        assert_eq!(vote_result(1, &votes), VoteResult::Won);
        assert_eq!(vote_result(3, &votes), VoteResult::Pending);
        votes.insert(2, false);
        assert_eq!(vote_result(3, &votes), VoteResult::Pending);
        votes.insert(3, false);
        assert_eq!(vote_result(3, &votes), VoteResult::Lost);
        votes.insert(3, true);
        assert_eq!(vote_result(3, &votes), VoteResult::Won);
        let mut five = BTreeMap::new();
        five.insert(1, true);
        five.insert(2, false);
        five.insert(3, false);
        assert_eq!(vote_result(5, &five), VoteResult::Pending);
        five.insert(4, false);
        assert_eq!(vote_result(5, &five), VoteResult::Lost);
    }
}
