//! The core's configuration and its validation.

use crate::entry::NodeId;

/// How a member runs consensus. Pre-vote and check-quorum are always on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This member.
    pub id: NodeId,
    /// The voters a brand-new group starts with, this one included; empty
    /// for a member that waits to be added to an existing group. The
    /// configuration entries of the log replace it (`Node::restore_configurations`).
    pub members: Vec<NodeId>,
    /// How long one tick is in the caller's clock. Informational: the core
    /// only counts ticks.
    pub tick_ms: u64,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: u64,
    /// Minimum election timeout in ticks; each timeout is drawn from
    /// `[election_ticks, 2 * election_ticks)`. Also the check-quorum period,
    /// the leader-stickiness lease and the leadership-transfer timeout.
    pub election_ticks: u64,
    /// Appends in flight per follower before the leader waits for answers.
    pub max_inflight_appends: usize,
    /// Payload bytes in flight per follower before the leader waits for
    /// answers (one append always goes, however large).
    pub max_inflight_bytes: u64,
    /// Entries per append message at most.
    pub max_batch_entries: usize,
    /// Payload bytes per append message at most (one larger entry still goes
    /// alone).
    pub max_batch_bytes: usize,
    /// Proposals appended but not yet committed before `propose` refuses;
    /// also bounds the reads waiting for confirmation.
    pub max_pending_proposals: usize,
    /// The member that should lead when it is caught up (and a voter).
    pub preferred_leader: Option<NodeId>,
    /// A learner is promoted only when at most this many entries behind
    /// the leader's last index.
    pub promote_max_lag_entries: u64,
    /// A leader tells its followers the retention floor
    /// ([`MessageBody::RetentionFloor`](super::MessageBody::RetentionFloor)).
    /// The server always does; the simulation does not (its retention
    /// ignores floors on purpose, and the messages would change every
    /// seed's course).
    pub retention_floor: bool,
}

/// Why a configuration is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Node id 0 is reserved for "none".
    #[error("node id 0 is not allowed")]
    ZeroId,
    /// The member list lists a member twice.
    #[error("the member list must be without duplicates: {0:?}")]
    BadMembers(Vec<NodeId>),
    /// This member is not in the member list.
    #[error("node {0} is not in the member list")]
    NotAMember(NodeId),
    /// A timing or limit setting is out of range.
    #[error("{field} is out of range: {reason}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// What range it needs.
        reason: &'static str,
    },
}

impl Config {
    /// The server's defaults for member `id` of `members`: tick 10 ms,
    /// heartbeat 10 ticks (100 ms), election timeout 50 ticks (500–1000 ms).
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Config {
        Config {
            id,
            members,
            tick_ms: 10,
            heartbeat_ticks: 10,
            election_ticks: 50,
            max_inflight_appends: 256,
            max_inflight_bytes: 8 << 20,
            max_batch_entries: 1024,
            max_batch_bytes: 1 << 20,
            max_pending_proposals: 10_000,
            preferred_leader: None,
            promote_max_lag_entries: 1_000,
            retention_floor: true,
        }
    }

    /// Check every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut sorted = self.members.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if self.id == 0 || sorted.first() == Some(&0) {
            return Err(ConfigError::ZeroId);
        }
        if sorted.len() != self.members.len() {
            return Err(ConfigError::BadMembers(self.members.clone()));
        }
        if !self.members.is_empty() && !self.members.contains(&self.id) {
            return Err(ConfigError::NotAMember(self.id));
        }
        let checks: [(bool, &'static str, &'static str); 8] = [
            (self.tick_ms > 0, "tick_ms", "must be positive"),
            (
                self.heartbeat_ticks > 0,
                "heartbeat_ticks",
                "must be positive",
            ),
            (
                self.election_ticks > self.heartbeat_ticks,
                "election_ticks",
                "must exceed heartbeat_ticks",
            ),
            (
                self.max_inflight_appends > 0,
                "max_inflight_appends",
                "must be positive",
            ),
            (
                self.max_inflight_bytes > 0,
                "max_inflight_bytes",
                "must be positive",
            ),
            (
                self.max_batch_entries > 0,
                "max_batch_entries",
                "must be positive",
            ),
            (
                self.max_batch_bytes > 0,
                "max_batch_bytes",
                "must be positive",
            ),
            (
                self.max_pending_proposals > 0,
                "max_pending_proposals",
                "must be positive",
            ),
        ];
        for (ok, field, reason) in checks {
            if !ok {
                return Err(ConfigError::OutOfRange { field, reason });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_server_timing() {
        let config = Config::new(1, vec![1, 2, 3]);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.tick_ms * config.heartbeat_ticks, 100);
        assert_eq!(config.tick_ms * config.election_ticks, 500);
    }

    #[test]
    fn bad_configs_are_refused() {
        let base = Config::new(1, vec![1, 2, 3]);
        let cases = [
            (
                Config {
                    id: 0,
                    ..base.clone()
                },
                "zero",
            ),
            (
                Config {
                    members: vec![1, 2, 2],
                    ..base.clone()
                },
                "duplicate",
            ),
            (
                Config {
                    members: vec![2, 3],
                    ..base.clone()
                },
                "not a member",
            ),
            (
                Config {
                    election_ticks: 10,
                    ..base.clone()
                },
                "election",
            ),
            (
                Config {
                    heartbeat_ticks: 0,
                    ..base.clone()
                },
                "heartbeat",
            ),
            (
                Config {
                    max_inflight_appends: 0,
                    ..base.clone()
                },
                "window",
            ),
            (
                Config {
                    max_batch_bytes: 0,
                    ..base.clone()
                },
                "bytes",
            ),
        ];
        for (config, what) in cases {
            assert!(config.validate().is_err(), "{what} should be refused");
        }
        // A member that waits to be added starts with no configuration.
        let joining = Config {
            members: vec![],
            ..base
        };
        assert_eq!(joining.validate(), Ok(()));
    }
}
