//! Answers binary-protocol client requests through the replica handle.

use std::sync::Arc;

use crate::consumers::{validate_group_name, Refusal};
use crate::engine::{AppendError, Engine, OffsetError, ReadError};
use crate::entry::Entry;
use crate::net::client_proto::{ClientEntry, ClientRequest, ClientResponse, RequestError};
use crate::net::listener::{ClientCall, Responder};

use super::handle::ReplicaHandle;

/// Answers one call. Appends go straight to the raft loop, which answers
/// the responder when they commit (no task or channel per append: that is
/// the hot path); gets and long-polling reads run as tasks of their own
/// that read the disk on the blocking pool. The listener already bounded
/// how many calls a connection has in flight.
pub fn answer(handle: &Arc<ReplicaHandle>, call: ClientCall) {
    let ClientCall { request, responder } = call;
    match request {
        ClientRequest::Append { payloads } if payloads.is_empty() => {
            responder.respond(ClientResponse::Error(RequestError::BadRequest {
                reason: "an append needs at least one payload".into(),
            }));
        }
        ClientRequest::Append { payloads } => handle.propose(
            payloads,
            Box::new(move |result| {
                let response = match result {
                    Ok((first_index, term)) => ClientResponse::Appended { first_index, term },
                    Err(err) => ClientResponse::Error(append_error(err)),
                };
                responder.respond(response);
            }),
        ),
        ClientRequest::Get { index } => {
            // Its own task: the entry is read on the blocking pool, never on
            // this thread, which also carries the peers' heartbeats.
            let handle = handle.clone();
            tokio::spawn(async move {
                let response = match handle.entry(index).await {
                    Ok(entry) => ClientResponse::Entry(client_entry(entry)),
                    Err(err) => ClientResponse::Error(read_error(err)),
                };
                responder.respond(response);
            });
        }
        ClientRequest::Read {
            from,
            max_bytes,
            wait_ms,
        } => {
            // Long polling: its own task, so the dispatcher goes on.
            tokio::spawn(answer_range(
                handle.clone(),
                from,
                max_bytes,
                wait_ms,
                responder,
            ));
        }
        ClientRequest::CommitOffset {
            group,
            offset,
            expected,
        } => {
            // Its own task: it waits for the commit to be applied.
            let handle = handle.clone();
            tokio::spawn(async move {
                let response = match handle.commit_offset(group, offset, expected).await {
                    Ok(committed) => ClientResponse::OffsetCommitted {
                        group: committed.group,
                        offset: committed.offset,
                    },
                    Err(err) => ClientResponse::Error(offset_error(err)),
                };
                responder.respond(response);
            });
        }
        ClientRequest::ConsumerOffset {
            group,
            linearizable,
        } => {
            // Its own task: a linearizable read waits for a quorum.
            let handle = handle.clone();
            tokio::spawn(async move {
                let response = consumer_offset(handle.as_ref(), group, linearizable).await;
                responder.respond(response);
            });
        }
        // The listener answers these itself; one that got here proves
        // nothing more than a request it did not check.
        ClientRequest::Authenticate { .. } => {
            responder.respond(ClientResponse::Error(RequestError::BadRequest {
                reason: "Authenticate is answered by the listener".into(),
            }));
        }
    }
}

/// The answer to a `ConsumerOffset` request, as `GET /v1/consumers/{group}`
/// gives it: with `linearizable`, leadership is confirmed first (ReadIndex),
/// and the raft loop applies offset commits before it answers a read
/// point, so the offset read next holds every acknowledged commit.
async fn consumer_offset<E: Engine>(
    engine: &E,
    group: String,
    linearizable: bool,
) -> ClientResponse {
    if let Err(err) = validate_group_name(&group) {
        return ClientResponse::Error(RequestError::BadGroup {
            reason: err.to_string(),
        });
    }
    if linearizable {
        if let Err(err) = engine.read_index().await {
            return ClientResponse::Error(append_error(err));
        }
    }
    match engine.consumer_group(&group) {
        Some(found) => ClientResponse::ConsumerOffset {
            group: found.group,
            offset: found.offset,
            lag: found.lag,
        },
        None => ClientResponse::Error(RequestError::UnknownGroup { group }),
    }
}

/// The binary protocol's form of an offset commit failure: the refusals
/// have their own errors, the rest is answered as for an append.
fn offset_error(err: OffsetError) -> RequestError {
    match err {
        OffsetError::BadRequest { reason } => RequestError::BadGroup { reason },
        OffsetError::Refused(refusal) => {
            let reason = refusal.to_string();
            match refusal {
                Refusal::Conflict { group, current, .. } => RequestError::Conflict {
                    group,
                    current,
                    reason,
                },
                Refusal::OutOfRange {
                    offset,
                    first_index,
                    next_index,
                } => RequestError::OutOfRange {
                    offset,
                    first_index,
                    next_index,
                },
            }
        }
        OffsetError::Write(err) => append_error(err),
    }
}

fn client_entry(entry: Entry) -> ClientEntry {
    ClientEntry {
        index: entry.index,
        term: entry.term,
        payload: entry.payload,
    }
}

async fn answer_range(
    handle: Arc<ReplicaHandle>,
    from: u64,
    max_bytes: u64,
    wait_ms: u64,
    responder: Responder,
) {
    let max_bytes = usize::try_from(max_bytes)
        .unwrap_or(usize::MAX)
        .min(crate::http::MAX_RANGE_BYTES);
    let wait_ms = wait_ms.min(crate::http::MAX_WAIT_MS);
    let response = match handle.range(from, max_bytes, wait_ms).await {
        Ok(range) => ClientResponse::Entries {
            entries: range.entries.into_iter().map(client_entry).collect(),
            commit_index: range.commit_index,
        },
        Err(err) => ClientResponse::Error(read_error(err)),
    };
    responder.respond(response);
}

/// The binary protocol's form of an append failure.
pub fn append_error(err: AppendError) -> RequestError {
    match err {
        AppendError::NotLeader {
            leader_id,
            leader_tcp,
            ..
        } => RequestError::NotLeader {
            leader_id: Some(leader_id),
            leader_addr: leader_tcp,
        },
        AppendError::Transferring => RequestError::Transferring,
        AppendError::TooLarge {
            size_bytes,
            max_bytes,
        } => RequestError::TooLarge {
            bytes: size_bytes as u64,
            max_bytes: max_bytes as u64,
        },
        AppendError::Unknown { reason } => RequestError::Indeterminate { reason },
        AppendError::Overloaded { reason } => RequestError::Busy {
            reason,
            retry_after_ms: BUSY_RETRY_AFTER_MS,
        },
        AppendError::DiskFull { reason } => RequestError::DiskFull { reason },
        err @ (AppendError::NoLeader { .. } | AppendError::Unavailable { .. }) => {
            RequestError::Unavailable {
                reason: err.to_string(),
            }
        }
    }
}

/// The pause a busy client is told to take before retrying.
const BUSY_RETRY_AFTER_MS: u64 = 250;

fn read_error(err: ReadError) -> RequestError {
    match err {
        ReadError::NotCommitted {
            index,
            commit_index,
        } => RequestError::NotFound {
            index,
            commit_index,
        },
        ReadError::Compacted { index, first_index } => {
            RequestError::Compacted { index, first_index }
        }
        ReadError::BadRequest { reason } => RequestError::BadRequest { reason },
        ReadError::Storage { reason } => RequestError::Unavailable { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_refusals_keep_their_details() {
        let conflict = offset_error(OffsetError::Refused(Refusal::Conflict {
            group: "g".into(),
            current: Some(4),
            reason: "expected 3".into(),
        }));
        match conflict {
            RequestError::Conflict {
                group,
                current,
                reason,
            } => {
                assert_eq!((group.as_str(), current), ("g", Some(4)));
                assert!(reason.contains("expected 3"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            offset_error(OffsetError::Refused(Refusal::OutOfRange {
                offset: 9,
                first_index: 1,
                next_index: 5
            })),
            RequestError::OutOfRange {
                offset: 9,
                first_index: 1,
                next_index: 5
            }
        );
        assert!(matches!(
            offset_error(OffsetError::BadRequest {
                reason: "bad group name".into()
            }),
            RequestError::BadGroup { .. }
        ));
    }

    #[test]
    fn offset_write_failures_are_answered_as_for_an_append() {
        let not_leader = offset_error(OffsetError::Write(AppendError::NotLeader {
            leader_id: "b".into(),
            leader_http: None,
            leader_tcp: Some("10.0.0.2:20911".into()),
        }));
        assert_eq!(
            not_leader,
            RequestError::NotLeader {
                leader_id: Some("b".into()),
                leader_addr: Some("10.0.0.2:20911".into())
            }
        );
        assert!(matches!(
            offset_error(OffsetError::Write(AppendError::Overloaded {
                reason: String::new()
            })),
            RequestError::Busy {
                retry_after_ms: BUSY_RETRY_AFTER_MS,
                ..
            }
        ));
        assert!(matches!(
            offset_error(OffsetError::Write(AppendError::DiskFull {
                reason: String::new()
            })),
            RequestError::DiskFull { .. }
        ));
        assert!(matches!(
            offset_error(OffsetError::Write(AppendError::Unknown {
                reason: String::new()
            })),
            RequestError::Indeterminate { .. }
        ));
    }
}
