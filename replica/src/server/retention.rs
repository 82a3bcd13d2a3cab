//! Retention: which whole segments may be deleted, decided by age and total
//! size, never past the commit index, and not past what the slowest
//! follower still needs unless the log has grown past the hold bound.
//!
//! A pure function of the segment list and the group's progress, so every
//! rule is tested without files; the raft loop applies the answer (it runs
//! there so no consensus read races a deletion).

use std::time::{Duration, SystemTime};

use crate::entry::Index;
use crate::store::SegmentInfo;

/// What to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete sealed segments last written longer ago than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub max_bytes: Option<u64>,
}

impl RetentionPolicy {
    /// Whether any rule is set.
    pub fn is_enabled(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }

    /// Past this size, entries a lagging follower still needs are deleted
    /// anyway (the follower then takes up the leader's log start instead):
    /// twice `max_bytes`, so one slow member cannot fill the disk.
    pub fn hold_max_bytes(&self) -> Option<u64> {
        self.max_bytes.map(|bytes| bytes.saturating_mul(2))
    }
}

/// The group's progress that bounds deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Nothing above the commit index is ever deleted.
    pub commit_index: Index,
    /// On the leader: the lowest match index among followers.
    pub slowest_follower_match: Option<Index>,
}

/// The index to delete below (the first segment kept starts there), or
/// `None` when nothing may go. Only a prefix of sealed segments is deleted.
pub fn delete_below(
    policy: &RetentionPolicy,
    segments: &[SegmentInfo],
    progress: Progress,
    now: SystemTime,
) -> Option<Index> {
    if !policy.is_enabled() {
        return None;
    }
    let mut remaining_bytes: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let mut keep_from = None;
    for segment in segments {
        if segment.active || segment.last_index > progress.commit_index {
            break;
        }
        let too_old = policy.max_age.is_some_and(|max_age| {
            now.duration_since(segment.modified)
                .is_ok_and(|age| age > max_age)
        });
        let too_big = policy
            .max_bytes
            .is_some_and(|max_bytes| remaining_bytes > max_bytes);
        if !(too_old || too_big) {
            break;
        }
        let needed_by_follower = progress
            .slowest_follower_match
            .is_some_and(|matched| segment.last_index > matched);
        let over_hold = policy
            .hold_max_bytes()
            .is_some_and(|hold| remaining_bytes > hold);
        if needed_by_follower && !over_hold {
            break;
        }
        remaining_bytes -= segment.size_bytes;
        keep_from = Some(segment.last_index + 1);
    }
    keep_from
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const MIB: u64 = 1 << 20;

    /// Segments of 100 entries and 1 MiB each; the last is active; segment
    /// `i` was last written `ages_s[i]` seconds before `now`.
    fn segments(now: SystemTime, ages_s: &[u64]) -> Vec<SegmentInfo> {
        ages_s
            .iter()
            .enumerate()
            .map(|(i, age_s)| SegmentInfo {
                path: PathBuf::from(format!("{i}.seg")),
                base_index: i as u64 * 100 + 1,
                last_index: i as u64 * 100 + 100,
                size_bytes: MIB,
                modified: now - Duration::from_secs(*age_s),
                active: i + 1 == ages_s.len(),
            })
            .collect()
    }

    fn progress(commit_index: Index) -> Progress {
        Progress {
            commit_index,
            slowest_follower_match: None,
        }
    }

    #[test]
    fn nothing_goes_without_a_policy() {
        let now = SystemTime::now();
        let list = segments(now, &[1000, 1000, 0]);
        assert_eq!(
            delete_below(&RetentionPolicy::default(), &list, progress(300), now),
            None
        );
    }

    #[test]
    fn old_sealed_segments_go_but_never_the_active_one() {
        let now = SystemTime::now();
        let list = segments(now, &[1000, 1000, 10, 1000]);
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_secs(100)),
            max_bytes: None,
        };
        // Only the prefix of old segments: the young third stops it.
        assert_eq!(delete_below(&policy, &list, progress(400), now), Some(201));
        let all_old = segments(now, &[1000, 1000, 1000]);
        assert_eq!(
            delete_below(&policy, &all_old, progress(300), now),
            Some(201)
        );
    }

    #[test]
    fn never_past_the_commit_index() {
        let now = SystemTime::now();
        let list = segments(now, &[1000, 1000, 1000, 0]);
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_secs(1)),
            max_bytes: None,
        };
        assert_eq!(delete_below(&policy, &list, progress(150), now), Some(101));
        assert_eq!(delete_below(&policy, &list, progress(99), now), None);
    }

    #[test]
    fn size_deletes_oldest_until_under_the_bound() {
        let now = SystemTime::now();
        let list = segments(now, &[0, 0, 0, 0, 0]);
        let policy = RetentionPolicy {
            max_age: None,
            max_bytes: Some(3 * MIB),
        };
        assert_eq!(delete_below(&policy, &list, progress(500), now), Some(201));
    }

    #[test]
    fn a_lagging_follower_is_waited_for_until_the_hold_bound() {
        let now = SystemTime::now();
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_secs(1)),
            max_bytes: Some(3 * MIB),
        };
        let lagging = Progress {
            commit_index: 500,
            slowest_follower_match: Some(150),
        };
        // Under twice the size bound: only what the follower has goes.
        let list = segments(now, &[1000, 1000, 1000, 1000, 1000, 0]);
        assert_eq!(delete_below(&policy, &list, lagging, now), Some(101));
        // Past it: what the follower needs goes too, down to the hold bound.
        let big = segments(now, &[1000; 8]);
        assert_eq!(delete_below(&policy, &big, lagging, now), Some(201));
    }
}
