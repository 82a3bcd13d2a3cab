//! The client protocol: requests, responses and the errors a server answers.
//!
//! A client sends `Request` frames with a `request_id` of its choice (unique
//! among its requests in flight) and the server answers each with one
//! `Response` frame carrying the same id, in any order: many requests may be
//! in flight on one connection.
//!
//! # Encoding (a contract)
//!
//! Bodies are [`ClientRequest`] and [`ClientResponse`] in the postcard
//! format described in [`body`](super::body). Enum variants are encoded by
//! their index in declaration order, so variants are only ever *added at the
//! end*, never reordered or removed:
//!
//! - `ClientRequest`: 0 `Append`, 1 `Get`, 2 `Read`, 3 `CommitOffset`,
//!   4 `ConsumerOffset`, 5 `Authenticate`.
//! - `ClientResponse`: 0 `Appended`, 1 `Entry`, 2 `Entries`, 3 `Error`,
//!   4 `OffsetCommitted`, 5 `ConsumerOffset`, 6 `Authenticated`.
//! - `RequestError`: 0 `NotLeader`, 1 `Transferring`, 2 `Unavailable`,
//!   3 `TooLarge`, 4 `BadRequest`, 5 `NotFound`, 6 `Compacted`,
//!   7 `Indeterminate`, 8 `Busy`, 9 `DiskFull`, 10 `Conflict`,
//!   11 `OutOfRange`, 12 `UnknownGroup`, 13 `BadGroup`,
//!   14 `Unauthenticated`, 15 `Forbidden`.
//!
//! Adding variants needs no new protocol version: a server that predates
//! a request answers it with `BadRequest` (an undecodable body), and a
//! server only answers with the new responses to the new requests.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::body::{decode_body, encode_body, BodyError};
use crate::entry::{Index, Term};

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Append these payloads as consecutive entries; answered once all are
    /// committed with [`ClientResponse::Appended`].
    Append {
        /// One entry per payload, in order. Must not be empty.
        payloads: Vec<Bytes>,
    },
    /// The committed entry at `index`: [`ClientResponse::Entry`], or
    /// [`RequestError::NotFound`] past the commit index, or
    /// [`RequestError::Compacted`] when retention deleted it.
    Get {
        /// The entry's index.
        index: Index,
    },
    /// Committed entries from `from` on, answered with
    /// [`ClientResponse::Entries`]. When none is committed yet at `from`,
    /// the server waits up to `wait_ms` for one (long polling), then answers
    /// with what it has, possibly nothing.
    Read {
        /// First index wanted.
        from: Index,
        /// Stop adding entries past this many payload bytes; at least one
        /// entry is returned when one is available, however large.
        max_bytes: u64,
        /// Longest wait for a first entry, in milliseconds.
        wait_ms: u64,
    },
    /// Commits a consumer group's offset (the index it reads next) through
    /// the log, on the leader: [`ClientResponse::OffsetCommitted`] once
    /// committed and applied, or [`RequestError::Conflict`],
    /// [`RequestError::OutOfRange`], [`RequestError::BadGroup`], or what an
    /// append is refused with.
    CommitOffset {
        /// The consumer group (1 to 128 characters of `[A-Za-z0-9._-]`).
        group: String,
        /// The index the group reads next.
        offset: Index,
        /// Only if the stored offset is this one (`Some(0)`: only if the
        /// group has none yet); `None`: unconditionally.
        expected: Option<Index>,
    },
    /// A consumer group's committed offset: [`ClientResponse::ConsumerOffset`]
    /// or [`RequestError::UnknownGroup`].
    ConsumerOffset {
        /// The consumer group.
        group: String,
        /// `false`: as the member asked has applied it (possibly behind the
        /// leader); `true`: the leader first confirms its leadership
        /// (ReadIndex), so the answer holds every commit acknowledged before
        /// the request (a follower answers `NotLeader`).
        linearizable: bool,
    },
    /// Proves the connection's right with a bearer token from the member's
    /// token file: [`ClientResponse::Authenticated`] with the right, or
    /// [`RequestError::Unauthenticated`]. Needed before other requests when
    /// the member requires credentials and the connection has no client
    /// certificate.
    Authenticate {
        /// The token.
        token: String,
    },
}

/// One committed entry as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientEntry {
    /// Its position in the log.
    pub index: Index,
    /// The term it was appended in.
    pub term: Term,
    /// What the client appended.
    pub payload: Bytes,
}

/// What a server answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The payloads of an `Append` are committed at
    /// `first_index..first_index + payloads.len()`.
    Appended {
        /// Index of the first payload.
        first_index: Index,
        /// The term they were appended in.
        term: Term,
    },
    /// The entry a `Get` asked for.
    Entry(ClientEntry),
    /// The answer to a `Read`.
    Entries {
        /// Consecutive committed entries from the requested index.
        entries: Vec<ClientEntry>,
        /// The server's commit index when it answered.
        commit_index: Index,
    },
    /// The request failed.
    Error(RequestError),
    /// The answer to a `CommitOffset`: the group's offset is now `offset`.
    OffsetCommitted {
        /// The group.
        group: String,
        /// Its offset now.
        offset: Index,
    },
    /// The answer to a `ConsumerOffset`.
    ConsumerOffset {
        /// The group.
        group: String,
        /// Its committed offset: the index it reads next.
        offset: Index,
        /// Committed entries it has not read yet (commit index + 1 -
        /// offset, 0 when not behind), as the member answering sees them.
        lag: u64,
    },
    /// The answer to an `Authenticate`: the connection now has `right`
    /// (`read`, `write` or `admin`).
    Authenticated {
        /// The right the token gives.
        right: String,
    },
}

/// Why a request failed on the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    /// This member is not the leader; retry on the leader when known.
    #[error("not the leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader's member id, when known.
        leader_id: Option<String>,
        /// The leader's client address (`host:port`), when known.
        leader_addr: Option<String>,
    },
    /// Leadership is being handed over; retry shortly. Nothing was appended.
    #[error("leadership transfer in progress, retry")]
    Transferring,
    /// The request was not performed (no quorum, shutting down, overloaded,
    /// ...). Nothing was appended; retry later.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The request or an answer would exceed a limit.
    #[error("too large: {bytes} bytes, at most {max_bytes}")]
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// The request makes no sense (e.g. an empty append, index 0).
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong.
        reason: String,
    },
    /// The index is past the commit index.
    #[error("entry {index} not found: the commit index is {commit_index}")]
    NotFound {
        /// The index asked for.
        index: Index,
        /// The commit index when the server answered.
        commit_index: Index,
    },
    /// The entry was deleted by retention.
    #[error("entry {index} was compacted: the first index is {first_index}")]
    Compacted {
        /// The index asked for.
        index: Index,
        /// The first index still kept.
        first_index: Index,
    },
    /// An append was accepted into the leader's log, but its commit could
    /// not be confirmed (leadership lost, timeout): it may or may not be
    /// committed. Retrying may append it twice.
    #[error("outcome unknown: {reason}")]
    Indeterminate {
        /// Why.
        reason: String,
    },
    /// The server is overloaded (a write queue is full). Nothing was
    /// appended; retry after a short pause.
    #[error("busy: {reason}; retry after {retry_after_ms} ms")]
    Busy {
        /// What limit was hit.
        reason: String,
        /// A suggested pause before retrying.
        retry_after_ms: u64,
    },
    /// The server's disk is full. Nothing was appended; reads still work
    /// and writes resume once space is freed.
    #[error("disk full: {reason}")]
    DiskFull {
        /// What is full.
        reason: String,
    },
    /// An offset commit's `expected` did not hold (another consumer of the
    /// group committed first). Nothing changed.
    #[error("conflict: {reason}")]
    Conflict {
        /// The group.
        group: String,
        /// Its stored offset when the commit was applied; `None`: it has none.
        current: Option<Index>,
        /// The server's explanation.
        reason: String,
    },
    /// An offset commit's offset is outside what can be read next. Nothing
    /// changed.
    #[error(
        "offset {offset} is out of range: it must be within the first retained index \
         {first_index} and the commit index + 1 ({next_index})"
    )]
    OutOfRange {
        /// The offset asked for.
        offset: Index,
        /// The first index still in the log.
        first_index: Index,
        /// One past the commit index.
        next_index: Index,
    },
    /// The consumer group has no committed offset on the member asked.
    #[error("consumer group {group:?} has no committed offset")]
    UnknownGroup {
        /// The group asked for.
        group: String,
    },
    /// The group name breaks the naming rule (1 to 128 characters of
    /// `[A-Za-z0-9._-]`). Nothing was done.
    #[error("bad group name: {reason}")]
    BadGroup {
        /// What is wrong.
        reason: String,
    },
    /// The member requires credentials and the connection proved none (no
    /// client certificate, no `Authenticate`, or an unknown token).
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// What is missing.
        reason: String,
    },
    /// The connection's credential lacks the right this request needs.
    #[error("forbidden: {reason}")]
    Forbidden {
        /// The right held and the one needed.
        reason: String,
    },
}

impl RequestError {
    /// Whether the same request may simply be sent again, to this or
    /// another member (redirects included): nothing was performed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RequestError::NotLeader { .. }
                | RequestError::Transferring
                | RequestError::Unavailable { .. }
                | RequestError::Busy { .. }
                | RequestError::DiskFull { .. }
        )
    }
}

impl ClientRequest {
    /// The body of a `Request` frame.
    pub fn encode(&self) -> Result<Bytes, BodyError> {
        encode_body("client request", self)
    }

    /// The request in a `Request` frame body.
    pub fn decode(body: &[u8]) -> Result<ClientRequest, BodyError> {
        decode_body("client request", body)
    }

    /// Bytes of payload the request carries (its size as far as limits go).
    pub fn payload_bytes(&self) -> u64 {
        match self {
            ClientRequest::Append { payloads } => payloads.iter().map(|p| p.len() as u64).sum(),
            ClientRequest::Get { .. }
            | ClientRequest::Read { .. }
            | ClientRequest::CommitOffset { .. }
            | ClientRequest::ConsumerOffset { .. }
            | ClientRequest::Authenticate { .. } => 0,
        }
    }

    /// The right the request needs (`None`: `Authenticate`, always allowed).
    pub fn needed_right(&self) -> Option<crate::auth::Right> {
        use crate::auth::Right;
        match self {
            ClientRequest::Append { .. } | ClientRequest::CommitOffset { .. } => Some(Right::Write),
            ClientRequest::Get { .. }
            | ClientRequest::Read { .. }
            | ClientRequest::ConsumerOffset { .. } => Some(Right::Read),
            ClientRequest::Authenticate { .. } => None,
        }
    }
}

impl ClientResponse {
    /// The body of a `Response` frame.
    pub fn encode(&self) -> Result<Bytes, BodyError> {
        encode_body("client response", self)
    }

    /// The response in a `Response` frame body.
    pub fn decode(body: &[u8]) -> Result<ClientResponse, BodyError> {
        decode_body("client response", body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    fn arb_text() -> impl Strategy<Value = String> {
        ".{0,20}"
    }

    fn arb_request() -> impl Strategy<Value = ClientRequest> {
        prop_oneof![
            proptest::collection::vec(arb_bytes(), 0..5)
                .prop_map(|payloads| ClientRequest::Append { payloads }),
            any::<u64>().prop_map(|index| ClientRequest::Get { index }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(from, max_bytes, wait_ms)| {
                ClientRequest::Read {
                    from,
                    max_bytes,
                    wait_ms,
                }
            }),
            (arb_text(), any::<u64>(), proptest::option::of(any::<u64>())).prop_map(
                |(group, offset, expected)| ClientRequest::CommitOffset {
                    group,
                    offset,
                    expected
                }
            ),
            (arb_text(), any::<bool>()).prop_map(|(group, linearizable)| {
                ClientRequest::ConsumerOffset {
                    group,
                    linearizable,
                }
            }),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = ClientEntry> {
        (any::<u64>(), any::<u64>(), arb_bytes()).prop_map(|(index, term, payload)| ClientEntry {
            index,
            term,
            payload,
        })
    }

    fn arb_error() -> impl Strategy<Value = RequestError> {
        prop_oneof![
            (
                proptest::option::of(arb_text()),
                proptest::option::of(arb_text())
            )
                .prop_map(|(leader_id, leader_addr)| RequestError::NotLeader {
                    leader_id,
                    leader_addr
                }),
            Just(RequestError::Transferring),
            arb_text().prop_map(|reason| RequestError::Unavailable { reason }),
            (arb_text(), any::<u64>()).prop_map(|(reason, retry_after_ms)| RequestError::Busy {
                reason,
                retry_after_ms
            }),
            arb_text().prop_map(|reason| RequestError::DiskFull { reason }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(bytes, max_bytes)| RequestError::TooLarge { bytes, max_bytes }),
            arb_text().prop_map(|reason| RequestError::BadRequest { reason }),
            (any::<u64>(), any::<u64>()).prop_map(|(index, commit_index)| RequestError::NotFound {
                index,
                commit_index
            }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(index, first_index)| RequestError::Compacted { index, first_index }),
            arb_text().prop_map(|reason| RequestError::Indeterminate { reason }),
            (arb_text(), proptest::option::of(any::<u64>()), arb_text()).prop_map(
                |(group, current, reason)| RequestError::Conflict {
                    group,
                    current,
                    reason
                }
            ),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(offset, first_index, next_index)| RequestError::OutOfRange {
                    offset,
                    first_index,
                    next_index
                }
            ),
            arb_text().prop_map(|group| RequestError::UnknownGroup { group }),
            arb_text().prop_map(|reason| RequestError::BadGroup { reason }),
        ]
    }

    fn arb_response() -> impl Strategy<Value = ClientResponse> {
        prop_oneof![
            (any::<u64>(), any::<u64>())
                .prop_map(|(first_index, term)| ClientResponse::Appended { first_index, term }),
            arb_entry().prop_map(ClientResponse::Entry),
            (proptest::collection::vec(arb_entry(), 0..4), any::<u64>()).prop_map(
                |(entries, commit_index)| ClientResponse::Entries {
                    entries,
                    commit_index
                }
            ),
            arb_error().prop_map(ClientResponse::Error),
            (arb_text(), any::<u64>())
                .prop_map(|(group, offset)| ClientResponse::OffsetCommitted { group, offset }),
            (arb_text(), any::<u64>(), any::<u64>()).prop_map(|(group, offset, lag)| {
                ClientResponse::ConsumerOffset { group, offset, lag }
            }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in arb_request()) {
            prop_assert_eq!(ClientRequest::decode(&request.encode().unwrap()).unwrap(), request);
        }

        #[test]
        fn responses_round_trip(response in arb_response()) {
            prop_assert_eq!(ClientResponse::decode(&response.encode().unwrap()).unwrap(), response);
        }

        #[test]
        fn garbage_bodies_give_typed_errors(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Err(error) = ClientRequest::decode(&body) {
                prop_assert!(error.to_string().contains("client request"));
            }
            if let Err(error) = ClientResponse::decode(&body) {
                prop_assert!(error.to_string().contains("client response"));
            }
        }
    }

    #[test]
    fn variant_indices_are_the_documented_ones() {
        assert_eq!(
            ClientRequest::Get { index: 5 }.encode().unwrap().as_ref(),
            &[1, 5]
        );
        assert_eq!(
            ClientRequest::Read {
                from: 1,
                max_bytes: 2,
                wait_ms: 3
            }
            .encode()
            .unwrap()
            .as_ref(),
            &[2, 1, 2, 3]
        );
        assert_eq!(
            ClientResponse::Error(RequestError::Indeterminate {
                reason: String::new()
            })
            .encode()
            .unwrap()
            .as_ref(),
            &[3, 7, 0]
        );
        assert_eq!(
            ClientResponse::Error(RequestError::Busy {
                reason: String::new(),
                retry_after_ms: 5
            })
            .encode()
            .unwrap()
            .as_ref(),
            &[3, 8, 0, 5]
        );
        assert_eq!(
            ClientResponse::Error(RequestError::DiskFull {
                reason: String::new()
            })
            .encode()
            .unwrap()
            .as_ref(),
            &[3, 9, 0]
        );
        assert_eq!(
            ClientRequest::Append {
                payloads: vec![Bytes::from_static(b"ab")]
            }
            .encode()
            .unwrap()
            .as_ref(),
            &[0, 1, 2, b'a', b'b']
        );
    }

    #[test]
    fn consumer_messages_have_the_documented_layout() {
        assert_eq!(
            ClientRequest::CommitOffset {
                group: "g".into(),
                offset: 5,
                expected: Some(3)
            }
            .encode()
            .unwrap()
            .as_ref(),
            &[3, 1, b'g', 5, 1, 3]
        );
        assert_eq!(
            ClientRequest::CommitOffset {
                group: "g".into(),
                offset: 300,
                expected: None
            }
            .encode()
            .unwrap()
            .as_ref(),
            &[3, 1, b'g', 0xAC, 0x02, 0]
        );
        assert_eq!(
            ClientRequest::ConsumerOffset {
                group: "ab".into(),
                linearizable: true
            }
            .encode()
            .unwrap()
            .as_ref(),
            &[4, 2, b'a', b'b', 1]
        );
        assert_eq!(
            ClientResponse::OffsetCommitted {
                group: "g".into(),
                offset: 7
            }
            .encode()
            .unwrap()
            .as_ref(),
            &[4, 1, b'g', 7]
        );
        assert_eq!(
            ClientResponse::ConsumerOffset {
                group: "g".into(),
                offset: 7,
                lag: 2
            }
            .encode()
            .unwrap()
            .as_ref(),
            &[5, 1, b'g', 7, 2]
        );
        let errors = [
            (
                RequestError::Conflict {
                    group: "g".into(),
                    current: None,
                    reason: String::new(),
                },
                vec![3, 10, 1, b'g', 0, 0],
            ),
            (
                RequestError::OutOfRange {
                    offset: 9,
                    first_index: 1,
                    next_index: 4,
                },
                vec![3, 11, 9, 1, 4],
            ),
            (
                RequestError::UnknownGroup { group: "g".into() },
                vec![3, 12, 1, b'g'],
            ),
            (
                RequestError::BadGroup {
                    reason: String::new(),
                },
                vec![3, 13, 0],
            ),
        ];
        for (error, bytes) in errors {
            let encoded = ClientResponse::Error(error.clone()).encode().unwrap();
            assert_eq!(encoded.as_ref(), &bytes[..], "{error:?}");
            assert!(!error.is_retryable(), "{error:?}");
        }
    }

    /// Every defect of a consumer request body is a typed error naming the
    /// body, never a panic; the server answers it with `BadRequest`.
    #[test]
    fn malformed_consumer_bodies_are_typed_errors() {
        let cases: [(&str, &[u8]); 8] = [
            ("commit: truncated name", &[3, 5, b'g']),
            ("commit: no offset", &[3, 1, b'g']),
            ("commit: no option tag", &[3, 1, b'g', 5]),
            ("commit: bad option tag", &[3, 1, b'g', 5, 2, 3]),
            ("commit: name not UTF-8", &[3, 1, 0xFF, 5, 0]),
            (
                "commit: huge name length",
                &[3, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
            ),
            ("get: bad bool", &[4, 1, b'g', 2]),
            ("get: trailing bytes", &[4, 1, b'g', 0, 0]),
        ];
        for (case, body) in cases {
            let err = ClientRequest::decode(body).unwrap_err();
            assert!(
                err.to_string().contains("malformed client request body"),
                "{case}: {err}"
            );
        }
        // A varint offset past u64 is refused, not wrapped.
        let mut body = vec![3, 1, b'g'];
        body.extend([0xFF; 10]);
        body.push(0);
        assert!(ClientRequest::decode(&body).is_err());
        // Malformed answers are typed errors too.
        for body in [&[4, 1, b'g'][..], &[5, 1, b'g', 7], &[3, 10, 1, b'g', 2]] {
            let err = ClientResponse::decode(body).unwrap_err();
            assert!(
                err.to_string().contains("malformed client response body"),
                "{body:?}: {err}"
            );
        }
    }

    #[test]
    fn unknown_variant_is_malformed() {
        let err = ClientRequest::decode(&[9]).unwrap_err();
        assert!(
            matches!(
                err,
                BodyError::Malformed {
                    what: "client request",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn only_not_performed_errors_are_retryable() {
        assert!(RequestError::Transferring.is_retryable());
        assert!(RequestError::NotLeader {
            leader_id: None,
            leader_addr: None
        }
        .is_retryable());
        assert!(!RequestError::Indeterminate {
            reason: String::new()
        }
        .is_retryable());
        assert!(!RequestError::NotFound {
            index: 1,
            commit_index: 0
        }
        .is_retryable());
    }
}
