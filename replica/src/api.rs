//! The JSON types of the HTTP contract (DESIGN.md, "Ports and the HTTP
//! contract"). The operator depends on these, so field names are a contract:
//! add fields, never rename or drop them.

use serde::{Deserialize, Serialize};

/// A member's role as `/status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes writes and replicates them.
    Leader,
    /// Follows a leader.
    Follower,
    /// Asking for votes.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
}

impl Role {
    /// The name used in `/status`, metrics and pod labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
        }
    }
}

/// `GET /status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The group name.
    pub group: String,
    /// This member's id.
    pub id: String,
    /// The replica's version.
    pub version: String,
    /// This member's role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader this member knows of, if any.
    pub leader_id: Option<String>,
    /// The first index still in the log (after retention).
    pub first_index: u64,
    /// The last index on this member's disk (not necessarily committed).
    pub last_index: u64,
    /// The term of the last entry.
    pub last_term: u64,
    /// The highest index known to be committed.
    pub commit_index: u64,
    /// The followers' progress, filled on the leader only.
    pub peers: Vec<PeerStatus>,
    /// The leader's commit index as the leader last told this member (its
    /// own on the leader); `null` until a leader spoke.
    #[serde(default)]
    pub leader_commit_index: Option<u64>,
    /// How many entries this member's disk is behind the leader's commit:
    /// `leaderCommitIndex - lastIndex`, 0 when not behind or unknown.
    #[serde(default)]
    pub lag: u64,
    /// The configuration in force on this member; `null` from builds
    /// before membership changes.
    #[serde(default)]
    pub configuration: Option<Box<Members>>,
    /// This member's incarnation: 0 for a member that bootstrapped the
    /// group, a random number for one that joined it with an empty data
    /// directory (it goes by `id#<incarnation in hex>` among peers).
    #[serde(default)]
    pub incarnation: u64,
    /// The group's id (`--group-id`); empty when it has none.
    #[serde(default)]
    pub group_id: String,
    /// When the TLS certificate this member serves expires, Unix seconds;
    /// absent without TLS. It changes when a renewed certificate is
    /// taken up (files are reloaded without a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after_s: Option<i64>,
}

/// The configuration in force: `GET /admin/members`, and `configuration`
/// in `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Members {
    /// The log index of the configuration entry; 0 for the bootstrap member
    /// list (`--peers`), before the first leader writes it to the log.
    pub index: u64,
    /// Whether this member knows that entry committed.
    pub committed: bool,
    /// Members that vote and count for commit, by name.
    pub voters: Vec<MemberAddress>,
    /// Members that receive the log only.
    pub learners: Vec<MemberAddress>,
}

/// The name a member goes by among peers (in the handshake, and as the
/// source of its numeric id): its name for the incarnation 0 that
/// bootstrapped the group, `name#<incarnation in hex>` for a member that
/// joined later, so that a wiped member coming back under the same name is
/// a different member to the core, with no vote and no log to its credit.
pub fn peer_name_of(name: &str, incarnation: u64) -> String {
    if incarnation == 0 {
        name.to_string()
    } else {
        format!("{name}#{incarnation:016x}")
    }
}

/// One member of a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberAddress {
    /// Its name.
    pub id: String,
    /// Its binary protocol address, `host:port`.
    pub address: String,
    /// Its HTTP address, `host:port`.
    pub http_address: String,
    /// Its incarnation; left out when 0 (a bootstrap member).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// `POST /admin/members`: add a learner. Unknown fields are refused, so a
/// misspelt `httpAddress` is an error rather than the default address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddMember {
    /// Its name (in Kubernetes, the pod name).
    pub id: String,
    /// Its binary protocol address, `host:port`.
    pub address: String,
    /// Its HTTP address; by default the address's host on port 8080.
    #[serde(default)]
    pub http_address: Option<String>,
    /// Its incarnation, as its `/status` reports it; when absent the
    /// leader asks the member itself, at its HTTP address.
    #[serde(default)]
    pub incarnation: Option<u64>,
}

impl Status {
    /// Role, term, indexes and leader on one line, for a person.
    pub fn summary(&self) -> String {
        format!(
            "{:<9} term {:<4} first {:<6} last {:<8} commit {:<8} leader {}",
            self.role.as_str(),
            self.term,
            self.first_index,
            self.last_index,
            self.commit_index,
            self.leader_id.as_deref().unwrap_or("-")
        )
    }
}

/// One follower's progress as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// The follower's id.
    pub id: String,
    /// The highest index known to be on the follower's disk.
    pub match_index: u64,
    /// How many entries the follower is behind the leader's last index.
    pub lag: u64,
    /// Milliseconds since the leader last heard from it.
    pub last_contact_ms: u64,
}

/// `200` answer of `POST /v1/entries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Where the entry was committed.
    pub index: u64,
    /// The term it was committed in.
    pub term: u64,
}

/// The answer of `POST /admin/transfer-leadership` when it succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transferred {
    /// The new leader.
    pub leader_id: String,
    /// Its term.
    pub term: u64,
}

/// Every error answer of the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A short machine-readable code, e.g. `not_leader`, `no_leader`, `too_large`.
    pub error: String,
    /// A sentence for a person.
    pub reason: String,
}

/// One entry of the range read `GET /v1/entries?from=N`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeEntry {
    /// Its index.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// `normal` (a client's), `noop` (a new leader's) or `configuration`.
    pub kind: String,
    /// The payload, base64 (standard alphabet, padded).
    pub payload_base64: String,
}

/// The answer of the range read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Range {
    /// Committed entries from the requested index, in order, within the byte budget.
    pub entries: Vec<RangeEntry>,
    /// The commit index when the answer was made.
    pub commit_index: u64,
}

/// One consumer group: `GET /v1/consumers/{group}`, and each item of
/// `GET /v1/consumers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    /// The group's name.
    pub group: String,
    /// Its committed offset: the index it reads next.
    pub offset: u64,
    /// Committed entries it has not read yet: `commitIndex + 1 - offset`,
    /// 0 when it is not behind.
    pub lag: u64,
}

/// `GET /v1/consumers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroups {
    /// Every group, in name order.
    pub groups: Vec<ConsumerGroup>,
}

/// The body of `PUT /v1/consumers/{group}/offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetRequest {
    /// The index the group reads next.
    pub offset: u64,
    /// Only if the stored offset is this one; `0`: only if the group has
    /// no offset yet. Absent: unconditionally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
}

/// `200` answer of `PUT /v1/consumers/{group}/offset`: committed and applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommitted {
    /// The group.
    pub group: String,
    /// Its offset now.
    pub offset: u64,
}

/// `409` answer of `PUT /v1/consumers/{group}/offset`: the condition did
/// not hold, nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetConflict {
    /// Always `conflict`.
    pub error: String,
    /// A sentence for a person.
    pub reason: String,
    /// The group.
    pub group: String,
    /// Its stored offset when the commit was refused; `null` when it has none.
    pub current_offset: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_field_names_follow_the_contract() {
        let status = Status {
            group: "orders".into(),
            id: "orders-1".into(),
            version: "0.1.0".into(),
            role: Role::Leader,
            term: 7,
            leader_id: Some("orders-1".into()),
            first_index: 1,
            last_index: 10523,
            last_term: 7,
            commit_index: 10523,
            peers: vec![PeerStatus {
                id: "orders-0".into(),
                match_index: 10523,
                lag: 0,
                last_contact_ms: 12,
            }],
            leader_commit_index: Some(10523),
            lag: 0,
            configuration: Some(Box::new(Members {
                index: 4,
                committed: true,
                voters: vec![MemberAddress {
                    id: "orders-0".into(),
                    address: "orders-0.orders-peers:20911".into(),
                    http_address: "orders-0.orders-peers:8080".into(),
                    incarnation: 0,
                }],
                learners: vec![],
            })),
            incarnation: 0,
            group_id: "uid-1".into(),
            certificate_not_after_s: None,
        };
        let json: serde_json::Value = serde_json::to_value(&status).unwrap();
        let expected = serde_json::json!({
            "group": "orders", "id": "orders-1", "version": "0.1.0",
            "role": "leader", "term": 7, "leaderId": "orders-1",
            "firstIndex": 1, "lastIndex": 10523, "lastTerm": 7, "commitIndex": 10523,
            "peers": [{"id": "orders-0", "matchIndex": 10523, "lag": 0, "lastContactMs": 12}],
            "leaderCommitIndex": 10523, "lag": 0,
            "configuration": {"index": 4, "committed": true, "learners": [], "voters": [
                {"id": "orders-0", "address": "orders-0.orders-peers:20911",
                 "httpAddress": "orders-0.orders-peers:8080"}
            ]},
            "incarnation": 0, "groupId": "uid-1"
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn unknown_leader_is_null() {
        let status = Status {
            group: "g".into(),
            id: "a".into(),
            version: "0".into(),
            role: Role::Candidate,
            term: 1,
            leader_id: None,
            first_index: 0,
            last_index: 0,
            last_term: 0,
            commit_index: 0,
            peers: vec![],
            leader_commit_index: None,
            lag: 0,
            configuration: None,
            incarnation: 0,
            group_id: String::new(),
            certificate_not_after_s: None,
        };
        let json = serde_json::to_value(&status).unwrap();
        assert!(json["leaderId"].is_null());
        assert!(json["leaderCommitIndex"].is_null());
        assert_eq!(json["role"], "candidate");
    }

    #[test]
    fn status_without_the_newer_fields_still_parses() {
        let json = serde_json::json!({
            "group": "g", "id": "a", "version": "0", "role": "follower", "term": 1,
            "leaderId": null, "firstIndex": 1, "lastIndex": 0, "lastTerm": 0,
            "commitIndex": 0, "peers": []
        });
        let status: Status = serde_json::from_value(json).unwrap();
        assert_eq!((status.leader_commit_index, status.lag), (None, 0));
    }
}
