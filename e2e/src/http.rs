//! A small blocking client for the replica's HTTP API (DESIGN.md, "Ports and
//! the HTTP contract").
//!
//! Redirects are followed by hand rather than by ureq so that a `307` from a
//! follower re-sends the POST body to the leader and the caller learns who
//! answered. All knowledge of the range-read body format lives in
//! [`parse_entries_body`].

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::error::{Error, Result};

/// How many `307` hops an append follows before giving up.
pub const REDIRECTS_MAX: usize = 3;
/// The methods whose body a redirect sends again.
#[derive(Clone, Copy)]
enum Verb {
    Post,
    Put,
    Delete,
}

/// Bodies longer than this are cut in error messages.
const ERROR_BODY_CHARS_MAX: usize = 300;

/// `GET /status`, the fields the suites use (the server may add more).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The group name.
    pub group: String,
    /// This member's id.
    pub id: String,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader this member knows of, if any.
    pub leader_id: Option<String>,
    /// The first index still held.
    pub first_index: u64,
    /// The last index in the local log (committed or not).
    pub last_index: u64,
    /// The term of the last local entry.
    pub last_term: u64,
    /// The highest index known committed.
    pub commit_index: u64,
    /// 0 for a bootstrap member; drawn by a member that joined empty.
    #[serde(default)]
    pub incarnation: u64,
    /// When its TLS certificate expires, Unix seconds; absent without TLS.
    #[serde(default)]
    pub certificate_not_after_s: Option<i64>,
}

/// `GET /admin/members`: the configuration in force.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Members {
    /// The configuration entry's index (0 for the bootstrap list).
    pub index: u64,
    /// Whether the answering member knows it committed.
    pub committed: bool,
    /// Voters.
    pub voters: Vec<MemberAddress>,
    /// Learners.
    pub learners: Vec<MemberAddress>,
}

impl Members {
    /// The voters' ids, sorted.
    pub fn voter_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.voters.iter().map(|m| m.id.clone()).collect();
        ids.sort();
        ids
    }

    /// The learners' ids, sorted.
    pub fn learner_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.learners.iter().map(|m| m.id.clone()).collect();
        ids.sort();
        ids
    }
}

/// One member of a configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MemberAddress {
    /// Its id.
    pub id: String,
    /// Its peer address.
    pub address: String,
    /// Its HTTP address.
    pub http_address: String,
    /// Its incarnation (absent: 0).
    #[serde(default)]
    pub incarnation: u64,
}

impl Status {
    /// Whether this member says it is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }
}

/// One committed entry as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadEntry {
    /// Its index.
    pub index: u64,
    /// The term it was written in.
    pub term: u64,
    /// Its bytes.
    pub payload: Vec<u8>,
}

/// One page of a range read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntriesPage {
    /// Consecutive committed entries from the requested index (maybe none).
    pub entries: Vec<ReadEntry>,
    /// The member's commit index when it answered.
    pub commit_index: u64,
}

/// The outcome of one `POST /v1/entries`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// `200`: committed at `index` in `term`, answered by `leader` (host:port).
    Acknowledged {
        /// The committed entry's index.
        index: u64,
        /// The term it was committed in.
        term: u64,
        /// The HTTP address that acknowledged it.
        leader: String,
    },
    /// `503`: no leader known; the reason the server gave.
    NoLeader(String),
    /// Any other answer or a transport error: the entry may or may not have been
    /// committed; it is not acknowledged.
    Failed(String),
}

/// `GET /v1/consumers/{group}`: a consumer group's committed offset on the
/// member asked.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ConsumerOffset {
    /// The group name.
    pub group: String,
    /// The committed offset: the index the group reads next.
    pub offset: u64,
    /// Committed entries it has not read yet.
    pub lag: u64,
}

/// The outcome of one `PUT /v1/consumers/{group}/offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetCommitOutcome {
    /// `200`: committed and applied, answered by `leader` (host:port).
    Committed {
        /// The group's offset now.
        offset: u64,
        /// The HTTP address that acknowledged it.
        leader: String,
    },
    /// `409`: `expected` did not hold; the offset the group had instead
    /// (`None`: no offset yet). Nothing changed.
    Conflict {
        /// The group's offset when the commit was decided.
        current: Option<u64>,
    },
    /// `503`: no leader known or busy; nothing was committed.
    NoLeader(String),
    /// Any other answer or a transport error: the commit may or may not have
    /// been applied.
    Failed(String),
}

/// A client of one member's HTTP API.
///
/// Sockets are made in the calling thread, so a client built and used in a
/// thread that entered a network namespace talks from inside it.
#[derive(Clone, Debug)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

#[derive(Deserialize)]
struct AppendBody {
    index: u64,
    term: u64,
}

impl Client {
    /// A client of the member whose HTTP API listens on `http`, with a
    /// per-request time limit.
    pub fn new(http: SocketAddr, timeout: Duration) -> Self {
        Self::with_base(format!("http://{http}"), timeout)
    }

    fn with_base(base: String, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_global(Some(timeout))
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
            base,
        }
    }

    /// `http://host:port` of this member.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /status`.
    ///
    /// # Errors
    /// A transport failure, a non-200 answer or a body that is not the contract's JSON.
    pub fn status(&self) -> Result<Status> {
        let url = format!("{}/status", self.base);
        let (status, body) = self.get(&url)?;
        if status != 200 {
            return Err(unexpected(&url, status, &body));
        }
        serde_json::from_slice(&body).map_err(|error| Error::Http {
            url,
            reason: format!("status JSON: {error}"),
        })
    }

    /// `GET /readyz`: whether the member says it is ready.
    ///
    /// # Errors
    /// A transport failure.
    pub fn ready(&self) -> Result<bool> {
        let url = format!("{}/readyz", self.base);
        Ok(self.get(&url)?.0 == 200)
    }

    /// `GET /metrics`: the Prometheus text.
    ///
    /// # Errors
    /// A transport failure or a status other than `200`.
    pub fn metrics(&self) -> Result<String> {
        let url = format!("{}/metrics", self.base);
        match self.get(&url)? {
            (200, body) => Ok(String::from_utf8_lossy(&body).into_owned()),
            (status, body) => Err(Error::Http {
                url,
                reason: format!("{status} {}", lossy(&body)),
            }),
        }
    }

    /// `POST /v1/entries` with `payload`, following up to [`REDIRECTS_MAX`]
    /// `307`s to the leader.
    pub fn append(&self, payload: &[u8]) -> AppendOutcome {
        let (url, status, body) =
            match self.send_following_redirects(Verb::Post, "/v1/entries", payload) {
                Ok(answer) => answer,
                Err(reason) => return AppendOutcome::Failed(reason),
            };
        match status {
            200 => match serde_json::from_slice::<AppendBody>(&body) {
                Ok(ack) => AppendOutcome::Acknowledged {
                    index: ack.index,
                    term: ack.term,
                    leader: host_of(&url),
                },
                Err(error) => AppendOutcome::Failed(format!(
                    "{url}: 200 with a body that is not {{index, term}}: {error}"
                )),
            },
            503 => AppendOutcome::NoLeader(lossy(&body)),
            other => AppendOutcome::Failed(format!("{url}: {other} {}", lossy(&body))),
        }
    }

    /// `PUT /v1/consumers/{group}/offset` with `{"offset":N}` or, with
    /// `expected`, `{"offset":N,"expected":M}`; follows up to
    /// [`REDIRECTS_MAX`] `307`s to the leader.
    pub fn commit_offset(
        &self,
        group: &str,
        offset: u64,
        expected: Option<u64>,
    ) -> OffsetCommitOutcome {
        #[derive(Deserialize)]
        struct Committed {
            offset: u64,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Conflict {
            current_offset: Option<u64>,
        }
        let body = match expected {
            Some(expected) => serde_json::json!({ "offset": offset, "expected": expected }),
            None => serde_json::json!({ "offset": offset }),
        }
        .to_string();
        let path = format!("/v1/consumers/{group}/offset");
        let (url, status, answer) =
            match self.send_following_redirects(Verb::Put, &path, body.as_bytes()) {
                Ok(answer) => answer,
                Err(reason) => return OffsetCommitOutcome::Failed(reason),
            };
        match status {
            200 => match serde_json::from_slice::<Committed>(&answer) {
                Ok(committed) => OffsetCommitOutcome::Committed {
                    offset: committed.offset,
                    leader: host_of(&url),
                },
                Err(error) => OffsetCommitOutcome::Failed(format!(
                    "{url}: 200 with a body that is not {{group, offset}}: {error}"
                )),
            },
            409 => match serde_json::from_slice::<Conflict>(&answer) {
                Ok(conflict) => OffsetCommitOutcome::Conflict {
                    current: conflict.current_offset,
                },
                Err(error) => OffsetCommitOutcome::Failed(format!(
                    "{url}: 409 without a currentOffset: {error}: {}",
                    lossy(&answer)
                )),
            },
            503 => OffsetCommitOutcome::NoLeader(lossy(&answer)),
            other => OffsetCommitOutcome::Failed(format!("{url}: {other} {}", lossy(&answer))),
        }
    }

    /// Sends `body` to `path` on this member, following up to
    /// [`REDIRECTS_MAX`] `307`s to the leader with the same body: the URL
    /// that answered last, its status and its body, or why none answered.
    fn send_following_redirects(
        &self,
        verb: Verb,
        path: &str,
        body: &[u8],
    ) -> std::result::Result<(String, u16, Vec<u8>), String> {
        let mut url = format!("{}{path}", self.base);
        for _ in 0..=REDIRECTS_MAX {
            let sent = match verb {
                Verb::Post => self.agent.post(&url).send(body),
                Verb::Put => self.agent.put(&url).send(body),
                Verb::Delete => self.agent.delete(&url).call(),
            };
            let mut response = sent.map_err(|error| format!("{url}: {error}"))?;
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("location")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let answer = response.body_mut().read_to_vec().unwrap_or_default();
            if status != 307 {
                return Ok((url, status, answer));
            }
            match location {
                Some(location) => url = absolute(&url, &location),
                None => return Err(format!("{url}: 307 without Location")),
            }
        }
        Err(format!(
            "more than {REDIRECTS_MAX} redirects from {}",
            self.base
        ))
    }

    /// `GET /v1/consumers/{group}[?linearizable=true]` on this member (no
    /// redirect is followed): `None` on `404` (no offset on this member).
    ///
    /// # Errors
    /// A transport failure, another status (a `307` from a follower asked
    /// for a linearizable read included) or a body that is not the contract's JSON.
    pub fn consumer_offset(
        &self,
        group: &str,
        linearizable: bool,
    ) -> Result<Option<ConsumerOffset>> {
        let url = if linearizable {
            format!("{}/v1/consumers/{group}?linearizable=true", self.base)
        } else {
            format!("{}/v1/consumers/{group}", self.base)
        };
        let (status, body) = self.get(&url)?;
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|error| Error::Http {
                    url,
                    reason: format!("consumer JSON: {error}"),
                }),
            404 => Ok(None),
            status => Err(unexpected(&url, status, &body)),
        }
    }

    /// `GET /v1/entries/{index}`: `Some((term, bytes))`, or `None` on `404`
    /// (past the commit index).
    ///
    /// # Errors
    /// A transport failure, another status, or a missing `X-DLedger-Term`.
    pub fn entry(&self, index: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let url = format!("{}/v1/entries/{index}", self.base);
        let mut response = self.agent.get(&url).call().map_err(|error| Error::Http {
            url: url.clone(),
            reason: error.to_string(),
        })?;
        let status = response.status().as_u16();
        let term = response
            .headers()
            .get("x-dledger-term")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let body = read_body(&url, response.body_mut())?;
        match (status, term) {
            (200, Some(term)) => Ok(Some((term, body))),
            (200, None) => Err(Error::Http {
                url,
                reason: "200 without a numeric X-DLedger-Term header".to_owned(),
            }),
            (404, _) => Ok(None),
            (status, _) => Err(unexpected(&url, status, &body)),
        }
    }

    /// `GET /v1/entries?from=&max_bytes=&wait_ms=`: committed entries from `from`.
    ///
    /// # Errors
    /// A transport failure, a non-200 answer or a body [`parse_entries_body`] rejects.
    pub fn entries(&self, from: u64, max_bytes: u64, wait_ms: u64) -> Result<EntriesPage> {
        let url = format!(
            "{}/v1/entries?from={from}&max_bytes={max_bytes}&wait_ms={wait_ms}",
            self.base
        );
        let (status, body) = self.get(&url)?;
        if status != 200 {
            return Err(unexpected(&url, status, &body));
        }
        parse_entries_body(&body).map_err(|reason| Error::Http { url, reason })
    }

    /// `POST /admin/transfer-leadership[?to=<id>]` on this member (the leader).
    ///
    /// # Errors
    /// A transport failure or a non-2xx answer (with the server's reason).
    pub fn transfer_leadership(&self, to: Option<&str>) -> Result<()> {
        let url = match to {
            Some(id) => format!("{}/admin/transfer-leadership?to={id}", self.base),
            None => format!("{}/admin/transfer-leadership", self.base),
        };
        let mut response = self
            .agent
            .post(&url)
            .send_empty()
            .map_err(|error| Error::Http {
                url: url.clone(),
                reason: error.to_string(),
            })?;
        let status = response.status().as_u16();
        let body = read_body(&url, response.body_mut())?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(unexpected(&url, status, &body))
        }
    }

    /// `GET /admin/members` on this member (no redirect).
    ///
    /// # Errors
    /// A transport failure, a non-200 answer or a body that is not the contract's JSON.
    pub fn members(&self) -> Result<Members> {
        let url = format!("{}/admin/members", self.base);
        let (status, body) = self.get(&url)?;
        if status != 200 {
            return Err(unexpected(&url, status, &body));
        }
        serde_json::from_slice(&body).map_err(|error| Error::Http {
            url,
            reason: format!("members JSON: {error}"),
        })
    }

    /// `POST /admin/members` adding learner `id` at `address` (its peer
    /// address) and `http_address`, following redirects to the leader;
    /// answers once the change is committed.
    ///
    /// # Errors
    /// A transport failure or a non-200 answer (with the server's reason).
    pub fn add_member(&self, id: &str, address: &str, http_address: &str) -> Result<Members> {
        let body = serde_json::json!({ "id": id, "address": address, "httpAddress": http_address })
            .to_string();
        self.change_members(Verb::Post, "/admin/members", body.as_bytes())
    }

    /// As [`add_member`](Self::add_member), naming the incarnation (the
    /// leader then does not ask the member, which need not be running).
    ///
    /// # Errors
    /// As [`add_member`](Self::add_member).
    pub fn add_member_incarnation(
        &self,
        id: &str,
        address: &str,
        http_address: &str,
        incarnation: u64,
    ) -> Result<Members> {
        let body = serde_json::json!({
            "id": id, "address": address, "httpAddress": http_address, "incarnation": incarnation
        })
        .to_string();
        self.change_members(Verb::Post, "/admin/members", body.as_bytes())
    }

    /// `POST /admin/members/{id}/promote`, following redirects to the leader.
    ///
    /// # Errors
    /// As [`add_member`](Self::add_member).
    pub fn promote_member(&self, id: &str) -> Result<Members> {
        self.change_members(Verb::Post, &format!("/admin/members/{id}/promote"), b"")
    }

    /// `DELETE /admin/members/{id}`, following redirects to the leader.
    ///
    /// # Errors
    /// As [`add_member`](Self::add_member).
    pub fn remove_member(&self, id: &str) -> Result<Members> {
        self.change_members(Verb::Delete, &format!("/admin/members/{id}"), b"")
    }

    fn change_members(&self, verb: Verb, path: &str, body: &[u8]) -> Result<Members> {
        let (url, status, answer) =
            self.send_following_redirects(verb, path, body)
                .map_err(|reason| Error::Http {
                    url: format!("{}{path}", self.base),
                    reason,
                })?;
        if status != 200 {
            return Err(unexpected(&url, status, &answer));
        }
        serde_json::from_slice(&answer).map_err(|error| Error::Http {
            url,
            reason: format!("members JSON: {error}"),
        })
    }

    fn get(&self, url: &str) -> Result<(u16, Vec<u8>)> {
        let mut response = self.agent.get(url).call().map_err(|error| Error::Http {
            url: url.to_owned(),
            reason: error.to_string(),
        })?;
        let status = response.status().as_u16();
        let body = read_body(url, response.body_mut())?;
        Ok((status, body))
    }
}

/// Parses a range-read body. The one place that knows its format:
/// `{"entries":[{"index":N,"term":T,"payloadBase64":"..."}],"commitIndex":C}`.
///
/// # Errors
/// A description of what does not match.
pub fn parse_entries_body(body: &[u8]) -> std::result::Result<EntriesPage, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Page {
        entries: Vec<Item>,
        commit_index: u64,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Item {
        index: u64,
        term: u64,
        payload_base64: String,
    }
    let page: Page =
        serde_json::from_slice(body).map_err(|error| format!("range-read JSON: {error}"))?;
    let mut entries = Vec::with_capacity(page.entries.len());
    for item in page.entries {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(item.payload_base64.as_bytes())
            .map_err(|error| format!("entry {}: payloadBase64: {error}", item.index))?;
        entries.push(ReadEntry {
            index: item.index,
            term: item.term,
            payload,
        });
    }
    Ok(EntriesPage {
        entries,
        commit_index: page.commit_index,
    })
}

fn read_body(url: &str, body: &mut ureq::Body) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    body.with_config()
        .limit(64 * 1024 * 1024)
        .reader()
        .read_to_end(&mut bytes)
        .map_err(|error| Error::Http {
            url: url.to_owned(),
            reason: format!("reading body: {error}"),
        })?;
    Ok(bytes)
}

fn unexpected(url: &str, status: u16, body: &[u8]) -> Error {
    Error::Unexpected {
        url: url.to_owned(),
        status,
        body: lossy(body),
    }
}

fn lossy(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(ERROR_BODY_CHARS_MAX)
        .collect()
}

/// `host:port` of an `http://host:port/...` URL.
fn host_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Resolves a `Location` against the URL that answered with it.
fn absolute(current: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!("http://{}{location}", host_of(current))
    } else {
        format!("http://{location}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_read_body_decodes_payloads() {
        let body = br#"{"entries":[{"index":3,"term":2,"payloadBase64":"aGk="}],"commitIndex":9}"#;
        let page = parse_entries_body(body).expect("valid body");
        assert_eq!(page.commit_index, 9);
        assert_eq!(
            page.entries,
            vec![ReadEntry {
                index: 3,
                term: 2,
                payload: b"hi".to_vec()
            }]
        );
        assert!(parse_entries_body(
            br#"{"entries":[{"index":1,"term":1,"payloadBase64":"!"}],"commitIndex":1}"#
        )
        .is_err());
        assert!(parse_entries_body(b"[]").is_err());
    }

    #[test]
    fn locations_resolve_against_the_answering_host() {
        let here = "http://127.0.0.1:8080/v1/entries";
        assert_eq!(
            absolute(here, "http://10.0.0.1:1/v1/entries"),
            "http://10.0.0.1:1/v1/entries"
        );
        assert_eq!(
            absolute(here, "/v1/entries"),
            "http://127.0.0.1:8080/v1/entries"
        );
        assert_eq!(
            absolute(here, "127.0.0.2:9/v1/entries"),
            "http://127.0.0.2:9/v1/entries"
        );
        assert_eq!(host_of(here), "127.0.0.1:8080");
    }

    #[test]
    fn status_parses_the_design_example() {
        let body =
            br#"{"group":"orders","id":"orders-1","version":"0.1.0","role":"leader","term":7,
            "leaderId":"orders-1","firstIndex":1,"lastIndex":10523,"lastTerm":7,"commitIndex":10523,
            "peers":[{"id":"orders-0","matchIndex":10523,"lag":0,"lastContactMs":12}]}"#;
        let status: Status = serde_json::from_slice(body).expect("design example");
        assert!(status.is_leader());
        assert_eq!(status.leader_id.as_deref(), Some("orders-1"));
        assert_eq!(status.commit_index, 10523);
        let none: Status = serde_json::from_slice(
            br#"{"group":"g","id":"a","role":"follower","term":1,"leaderId":null,
                "firstIndex":1,"lastIndex":0,"lastTerm":0,"commitIndex":0}"#,
        )
        .expect("null leader");
        assert_eq!(none.leader_id, None);
    }
}
