//! The HTTP API on port 8080 (DESIGN.md, "Ports and the HTTP contract"):
//! status, health, metrics, admin, and the client API. Handlers only
//! translate between HTTP and an [`Engine`]; every error answer is JSON
//! ([`ErrorBody`]) with a code and a sentence.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use base64::Engine as _;

use crate::api::{AddMember, ErrorBody, OffsetConflict, OffsetRequest, Range, RangeEntry};
use crate::consumers::{validate_group_name, Refusal};
use crate::engine::{
    AppendError, Engine, MemberChange, MembershipError, OffsetError, ReadError, TransferError,
};
use crate::net::budget::ClientBytes;

/// Upper bound on `wait_ms` of the long-polling read: a client that wants
/// to wait longer polls again.
pub const MAX_WAIT_MS: u64 = 30_000;

/// Default and upper bound of `max_bytes` of the range read.
pub const DEFAULT_RANGE_BYTES: usize = 1 << 20;
/// See [`DEFAULT_RANGE_BYTES`].
pub const MAX_RANGE_BYTES: usize = 16 << 20;

/// Largest body of `PUT /v1/consumers/{group}/offset`: `{"offset":N,
/// "expected":M}` takes well under this.
pub const MAX_OFFSET_BODY_BYTES: usize = 4096;

/// Largest body of `POST /admin/members`: a name and two `host:port`
/// addresses take well under this.
pub const MAX_MEMBER_BODY_BYTES: usize = 4096;

/// Client and admin requests served at once at most; more are answered
/// "busy, retry" (the probes and `/status` are never limited, so load does
/// not make Kubernetes restart a member).
pub const MAX_REQUESTS_IN_FLIGHT: usize = 512;

/// Longest a client or admin request may take: a long poll's wait plus an
/// append's commit timeout, with room to spare.
pub const MAX_REQUEST_MS: u64 = MAX_WAIT_MS + 20_000;

/// What the client and admin requests are held within.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests served at once; more are answered "busy, retry".
    pub max_requests_in_flight: usize,
    /// Longest a request may take before it is answered with a timeout.
    pub max_request_ms: u64,
    /// Append bytes read and not yet answered, shared with the binary
    /// listener (`Listener::client_bytes`): past it, append bodies wait
    /// unread in the clients' sockets.
    pub client_bytes: ClientBytes,
    /// Who may do what (`Auth::open()`: everyone everything).
    pub auth: crate::auth::Auth,
    /// This member serves the API over HTTPS (`http_serve::serve` with
    /// TLS), and so does the leader a redirect names.
    pub serves_https: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_requests_in_flight: MAX_REQUESTS_IN_FLIGHT,
            max_request_ms: MAX_REQUEST_MS,
            client_bytes: ClientBytes::default(),
            auth: crate::auth::Auth::open(),
            serves_https: false,
        }
    }
}

/// The scheme of a redirect to the leader. Members serve HTTP or HTTPS all
/// alike, so the leader serves what this member does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The router's state: the engine, and the scheme its redirects name
/// (handlers take the part they need, `State<Arc<E>>` or `State<Scheme>`).
struct Api<E> {
    engine: Arc<E>,
    scheme: Scheme,
}

// Not derived: that would ask for `E: Clone`.
impl<E> Clone for Api<E> {
    fn clone(&self) -> Self {
        Api {
            engine: self.engine.clone(),
            scheme: self.scheme,
        }
    }
}

impl<E> FromRef<Api<E>> for Arc<E> {
    fn from_ref(api: &Api<E>) -> Arc<E> {
        api.engine.clone()
    }
}

impl<E> FromRef<Api<E>> for Scheme {
    fn from_ref(api: &Api<E>) -> Scheme {
        api.scheme
    }
}

/// The router serving the whole API for `engine`, with the default
/// [`Limits`] and a client bytes budget of its own.
pub fn router<E: Engine>(engine: Arc<E>) -> Router {
    router_with_limits(engine, Limits::default())
}

/// [`router`] within `limits`.
pub fn router_with_limits<E: Engine>(engine: Arc<E>, limits: Limits) -> Router {
    let Limits {
        max_requests_in_flight,
        max_request_ms,
        client_bytes,
        auth,
        serves_https,
    } = limits;
    let scheme = if serves_https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let in_flight = Arc::new(tokio::sync::Semaphore::new(max_requests_in_flight));
    let limited = Router::new()
        .route("/admin/transfer-leadership", post(transfer::<E>))
        .route("/admin/members", get(members::<E>).post(add_member::<E>))
        .route("/admin/members/{id}", delete(remove_member::<E>))
        .route("/admin/members/{id}/promote", post(promote_member::<E>))
        .route(
            "/v1/entries",
            post(
                move |State(engine): State<Arc<E>>,
                      State(scheme): State<Scheme>,
                      headers: HeaderMap,
                      body: Body| {
                    append(engine, scheme, client_bytes.clone(), headers, body)
                },
            )
            .get(range::<E>),
        )
        .route("/v1/entries/{index}", get(entry::<E>))
        .route("/v1/consumers", get(consumer_groups::<E>))
        .route("/v1/consumers/{group}", get(consumer_group::<E>))
        .route("/v1/consumers/{group}/offset", put(commit_offset::<E>))
        .route_layer(axum::middleware::from_fn(move |request, next| {
            bounded(in_flight.clone(), max_request_ms, request, next)
        }));
    let router = Router::new()
        .route("/status", get(status::<E>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<E>))
        .route("/metrics", get(metrics::<E>))
        .merge(limited)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Api { engine, scheme });
    if auth.is_open() {
        return router;
    }
    // Outermost, around every route and the fallback: a request without
    // the right is answered before its body is read or a slot is taken.
    router.layer(axum::middleware::from_fn(move |request, next| {
        crate::http_auth::require(auth.clone(), request, next)
    }))
}

/// Runs a request within the limits: a free slot or "busy, retry", and an
/// answer within `max_request_ms` or a timeout.
async fn bounded(
    in_flight: Arc<tokio::sync::Semaphore>,
    max_request_ms: u64,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_slot) = in_flight.try_acquire() else {
        return busy(AppendError::Overloaded {
            reason: "too many requests in flight".into(),
        });
    };
    let limit = std::time::Duration::from_millis(max_request_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("no answer within {max_request_ms} ms; a write may still commit"),
        ),
    }
}

/// An error answer: `status` with the JSON [`ErrorBody`] `{error: code,
/// reason}`.
pub(crate) fn error(status: StatusCode, code: &str, reason: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: code.to_string(),
        reason: reason.into(),
    };
    (status, Json(body)).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path; see /status, /v1/entries, /v1/consumers, /admin/transfer-leadership, \
         /admin/members",
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

/// The query of a request, or why it is unreadable (answered as a 400).
fn query_or_reason(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, String> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| format!("unreadable query string: {}", rejection.body_text()))
}

async fn status<E: Engine>(State(engine): State<Arc<E>>) -> Response {
    Json(engine.status()).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz<E: Engine>(State(engine): State<Arc<E>>) -> Response {
    match engine.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason),
    }
}

async fn metrics<E: Engine>(State(engine): State<Arc<E>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        engine.metrics(),
    )
        .into_response()
}

async fn append<E: Engine>(
    engine: Arc<E>,
    scheme: Scheme,
    client_bytes: ClientBytes,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let max_bytes = engine.max_entry_bytes();
    let declared_bytes = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    // Held until the append is answered; a body of unknown length counts
    // as the largest allowed, an oversized one as what is read of it
    // before the 413 (answering before reading would leave most clients
    // with a broken pipe instead). Waiting here leaves the body in the
    // socket.
    let Some(_held) = client_bytes
        .acquire(declared_bytes.unwrap_or(max_bytes).min(max_bytes + 1))
        .await
    else {
        return append_error(
            AppendError::Unavailable {
                reason: "the server is stopping".into(),
            },
            scheme,
        );
    };
    let payload = match read_entry_body(body, max_bytes).await {
        Ok(payload) => payload,
        Err(EntryBody::TooLarge { read_bytes }) => {
            return append_error(
                AppendError::TooLarge {
                    size_bytes: read_bytes,
                    max_bytes,
                },
                scheme,
            )
        }
        Err(EntryBody::Unreadable(reason)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("request body unreadable: {reason}"),
            )
        }
    };
    match engine.append(payload).await {
        Ok(appended) => Json(appended).into_response(),
        Err(err) => append_error(err, scheme),
    }
}

/// Bytes of an oversized body read on and dropped before its 413. A client
/// that sends its whole body before reading the answer (most do) gets a
/// broken pipe instead of the 413 when the server closes with the body
/// still coming; past this much, it gets the broken pipe.
pub const OVERSIZED_DRAIN_BYTES: usize = 64 << 20;

enum EntryBody {
    TooLarge { read_bytes: usize },
    Unreadable(String),
}

/// The body of an append, at most `max_bytes`. An oversized body is read
/// to its end (or `OVERSIZED_DRAIN_BYTES` past the limit) without being
/// kept, so the client is there to read the 413.
async fn read_entry_body(body: Body, max_bytes: usize) -> Result<Bytes, EntryBody> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    // A body that comes in one chunk (most small ones) is kept as it came.
    let mut first: Option<Bytes> = None;
    let mut rest = Vec::new();
    let mut read_bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(_) if read_bytes > max_bytes => break,
            Err(err) => return Err(EntryBody::Unreadable(err.to_string())),
        };
        read_bytes = read_bytes.saturating_add(chunk.len());
        if read_bytes > max_bytes {
            first = None;
            rest = Vec::new();
            if read_bytes - max_bytes > OVERSIZED_DRAIN_BYTES {
                break;
            }
        } else if first.is_none() && rest.is_empty() {
            first = Some(chunk);
        } else {
            if let Some(first) = first.take() {
                rest.extend_from_slice(&first);
            }
            rest.extend_from_slice(&chunk);
        }
    }
    if read_bytes > max_bytes {
        return Err(EntryBody::TooLarge { read_bytes });
    }
    Ok(first.unwrap_or_else(|| Bytes::from(rest)))
}

/// Seconds a busy client is told to wait before retrying.
const RETRY_AFTER_S: &str = "1";

fn append_error(err: AppendError, scheme: Scheme) -> Response {
    write_error(err, scheme, "/v1/entries")
}

/// The answer to a write (or a linearizable read) that failed with `err`;
/// a follower redirects to the same `path_and_query` on the leader.
fn write_error(err: AppendError, scheme: Scheme, path_and_query: &str) -> Response {
    let code = err.code();
    let reason = err.to_string();
    match &err {
        AppendError::NotLeader {
            leader_http: Some(address),
            ..
        } => redirect_to_leader(scheme, address, path_and_query, code, reason),
        AppendError::Overloaded { .. } => busy(err),
        AppendError::DiskFull { .. } => error(StatusCode::INSUFFICIENT_STORAGE, code, reason),
        AppendError::NotLeader { .. }
        | AppendError::NoLeader { .. }
        | AppendError::Transferring
        | AppendError::Unavailable { .. } => error(StatusCode::SERVICE_UNAVAILABLE, code, reason),
        AppendError::TooLarge { .. } => error(StatusCode::PAYLOAD_TOO_LARGE, code, reason),
        // 504: the request was taken but its fate is not known, like a
        // gateway timeout; distinct from 503 so clients do not blindly retry.
        AppendError::Unknown { .. } => error(StatusCode::GATEWAY_TIMEOUT, code, reason),
    }
}

/// A `503` with `Retry-After` for `err`: nothing was done; the client
/// backs off and retries.
fn busy(err: AppendError) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, err.code(), err.to_string());
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
    response
}

/// A `307` to the same `path_and_query` on the leader's HTTP `address`,
/// with the usual JSON error body for clients that do not follow it.
fn redirect_to_leader(
    scheme: Scheme,
    address: &str,
    path_and_query: &str,
    code: &str,
    reason: String,
) -> Response {
    let location = format!("{}://{address}{path_and_query}", scheme.as_str());
    let mut response = error(StatusCode::TEMPORARY_REDIRECT, code, reason);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn read_error(err: ReadError) -> Response {
    let reason = err.to_string();
    match err {
        ReadError::NotCommitted { .. } => error(StatusCode::NOT_FOUND, "not_committed", reason),
        ReadError::Compacted { .. } => error(StatusCode::GONE, "compacted", reason),
        ReadError::BadRequest { .. } => error(StatusCode::BAD_REQUEST, "bad_request", reason),
        ReadError::Storage { .. } => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "storage_error", reason)
        }
    }
}

/// Parses an entry index the way both `/v1/entries/{index}` and `?from=`
/// take it: indexes start at 1, so 0 is refused by both alike.
fn parse_index(name: &str, text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(index) if index > 0 => Ok(index),
        _ => Err(format!(
            "{name} must be a positive integer (the first index is 1), got {text:?}"
        )),
    }
}

async fn entry<E: Engine>(
    State(engine): State<Arc<E>>,
    index: Result<Path<String>, PathRejection>,
) -> Response {
    let index = match index {
        Ok(Path(index)) => parse_index("index", &index),
        Err(rejection) => Err(format!("unreadable index: {}", rejection.body_text())),
    };
    let index = match index {
        Ok(index) => index,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "bad_request", reason),
    };
    match engine.entry(index).await {
        Ok(entry) => {
            let mut response = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )],
                entry.payload,
            )
                .into_response();
            response
                .headers_mut()
                .insert("x-dledger-term", HeaderValue::from(entry.term));
            response
                .headers_mut()
                .insert("x-dledger-index", HeaderValue::from(entry.index));
            response.headers_mut().insert(
                "x-dledger-kind",
                HeaderValue::from_static(entry.kind.name()),
            );
            response
        }
        Err(err) => read_error(err),
    }
}

/// Parses an optional unsigned query parameter; the error names it.
fn query_u64(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, String> {
    match query.get(name) {
        None => Ok(None),
        Some(text) => text.parse::<u64>().map(Some).map_err(|_| {
            format!("query parameter {name} must be an unsigned integer, got {text:?}")
        }),
    }
}

/// Parses an optional boolean query parameter: only `true` and `false`, so
/// a typo never silently picks the weaker behaviour.
fn query_bool(query: &HashMap<String, String>, name: &str) -> Result<bool, String> {
    match query.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(text) => Err(format!(
            "query parameter {name} must be true or false, got {text:?}"
        )),
    }
}

/// What the range read was asked for, defaulted and bounded.
struct RangeQuery {
    from: u64,
    max_bytes: usize,
    wait_ms: u64,
    linearizable: bool,
}

/// Parses the range read's query, refusing what it cannot honour exactly.
fn range_query(query: &HashMap<String, String>) -> Result<RangeQuery, String> {
    let from = match query.get("from") {
        None => 1,
        Some(text) => parse_index("query parameter from", text)?,
    };
    let max_bytes = query_u64(query, "max_bytes")?
        .map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX))
        .unwrap_or(DEFAULT_RANGE_BYTES)
        .clamp(1, MAX_RANGE_BYTES);
    let wait_ms = query_u64(query, "wait_ms")?.unwrap_or(0).min(MAX_WAIT_MS);
    let linearizable = query_bool(query, "linearizable")?;
    Ok(RangeQuery {
        from,
        max_bytes,
        wait_ms,
        linearizable,
    })
}

async fn range<E: Engine>(
    State(engine): State<Arc<E>>,
    State(scheme): State<Scheme>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = match query_or_reason(query) {
        Ok(query) => query,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "bad_request", reason),
    };
    let RangeQuery {
        from,
        max_bytes,
        wait_ms,
        linearizable,
    } = match range_query(&query) {
        Ok(parsed) => parsed,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "bad_request", reason),
    };
    // `linearizable=true`: first confirm leadership with a quorum (ReadIndex),
    // so the answer holds every append acknowledged before the request.
    if linearizable {
        if let Err(err) = engine.read_index().await {
            let mut response = append_error(err, scheme);
            if let Some(location) = response.headers_mut().get_mut(header::LOCATION) {
                let redirected = format!(
                    "{}?{}",
                    location.to_str().unwrap_or_default(),
                    query_string(&query)
                );
                if let Ok(value) = HeaderValue::from_str(&redirected) {
                    *location = value;
                }
            }
            return response;
        }
    }
    match engine.range(from, max_bytes, wait_ms).await {
        Ok(committed) => {
            let entries = committed
                .entries
                .into_iter()
                .map(|entry| RangeEntry {
                    index: entry.index,
                    term: entry.term,
                    kind: entry.kind.name().to_string(),
                    payload_base64: base64::engine::general_purpose::STANDARD
                        .encode(&entry.payload),
                })
                .collect();
            Json(Range {
                entries,
                commit_index: committed.commit_index,
            })
            .into_response()
        }
        Err(err) => read_error(err),
    }
}

/// The query string again, for a redirect (our parameters need no escaping).
fn query_string(query: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = query
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    pairs.sort();
    pairs.join("&")
}

/// With `linearizable=true`, confirms leadership with a quorum first
/// (ReadIndex, as the range read does): the raft loop applies offset
/// commits before it answers a read point, so what is read next holds
/// every commit acknowledged before the request. A follower redirects to
/// `path` on the leader with the same query.
async fn consumer_read_point<E: Engine>(
    engine: &E,
    scheme: Scheme,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    path: &str,
) -> Result<(), Response> {
    let query = query_or_reason(query)
        .map_err(|reason| error(StatusCode::BAD_REQUEST, "bad_request", reason))?;
    let linearizable = query_bool(&query, "linearizable")
        .map_err(|reason| error(StatusCode::BAD_REQUEST, "bad_request", reason))?;
    if linearizable {
        if let Err(err) = engine.read_index().await {
            return Err(write_error(
                err,
                scheme,
                &format!("{path}?{}", query_string(&query)),
            ));
        }
    }
    Ok(())
}

/// A group name from the path, or the code and reason of a 400 naming the
/// rule.
fn group_from_path(
    group: Result<Path<String>, PathRejection>,
) -> Result<String, (&'static str, String)> {
    let group = match group {
        Ok(Path(group)) => group,
        Err(rejection) => {
            return Err((
                "bad_request",
                format!("unreadable group name: {}", rejection.body_text()),
            ))
        }
    };
    match validate_group_name(&group) {
        Ok(()) => Ok(group),
        Err(err) => Err(("bad_group", err.to_string())),
    }
}

async fn consumer_groups<E: Engine>(
    State(engine): State<Arc<E>>,
    State(scheme): State<Scheme>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if let Err(response) =
        consumer_read_point(engine.as_ref(), scheme, query, "/v1/consumers").await
    {
        return response;
    }
    Json(engine.consumer_groups()).into_response()
}

async fn consumer_group<E: Engine>(
    State(engine): State<Arc<E>>,
    State(scheme): State<Scheme>,
    group: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let group = match group_from_path(group) {
        Ok(group) => group,
        Err((code, reason)) => return error(StatusCode::BAD_REQUEST, code, reason),
    };
    let path = format!("/v1/consumers/{group}");
    if let Err(response) = consumer_read_point(engine.as_ref(), scheme, query, &path).await {
        return response;
    }
    match engine.consumer_group(&group) {
        Some(found) => Json(found).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_group",
            format!("consumer group {group:?} has no committed offset on this member"),
        ),
    }
}

async fn commit_offset<E: Engine>(
    State(engine): State<Arc<E>>,
    State(scheme): State<Scheme>,
    group: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let group = match group_from_path(group) {
        Ok(group) => group,
        Err((code, reason)) => return error(StatusCode::BAD_REQUEST, code, reason),
    };
    let request: OffsetRequest = match axum::body::to_bytes(body, MAX_OFFSET_BODY_BYTES).await {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(request) => request,
            Err(err) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "the body must be {{\"offset\":N}} or {{\"offset\":N,\"expected\":M}} \
                         with unsigned integers: {err}"
                    ),
                )
            }
        },
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("request body over {MAX_OFFSET_BODY_BYTES} bytes or unreadable: {err}"),
            )
        }
    };
    let path = format!("/v1/consumers/{group}/offset");
    match engine
        .commit_offset(group, request.offset, request.expected)
        .await
    {
        Ok(committed) => Json(committed).into_response(),
        Err(err) => offset_error(err, scheme, &path),
    }
}

/// `409` for a condition that did not hold (the body names the current
/// offset), `422` for an offset out of range, `400` for a bad request, and
/// what an append answers for the rest (redirect, busy, unknown, ...).
fn offset_error(err: OffsetError, scheme: Scheme, path: &str) -> Response {
    match err {
        OffsetError::BadRequest { reason } => error(StatusCode::BAD_REQUEST, "bad_group", reason),
        OffsetError::Refused(refusal) => {
            let reason = refusal.to_string();
            match refusal {
                Refusal::Conflict { group, current, .. } => {
                    let body = OffsetConflict {
                        error: "conflict".into(),
                        reason,
                        group,
                        current_offset: current,
                    };
                    (StatusCode::CONFLICT, Json(body)).into_response()
                }
                Refusal::OutOfRange { .. } => {
                    error(StatusCode::UNPROCESSABLE_ENTITY, "out_of_range", reason)
                }
            }
        }
        OffsetError::Write(err) => write_error(err, scheme, path),
    }
}

async fn transfer<E: Engine>(
    State(engine): State<Arc<E>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = match query_or_reason(query) {
        Ok(query) => query,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "bad_request", reason),
    };
    let to = query.get("to").filter(|to| !to.is_empty()).cloned();
    match engine.transfer_leadership(to).await {
        Ok(transferred) => Json(transferred).into_response(),
        Err(err) => {
            let reason = err.to_string();
            match err {
                TransferError::NotLeader { .. } => {
                    error(StatusCode::CONFLICT, "not_leader", reason)
                }
                TransferError::BadTarget { .. } => {
                    error(StatusCode::BAD_REQUEST, "bad_target", reason)
                }
                TransferError::Failed { .. } => {
                    error(StatusCode::SERVICE_UNAVAILABLE, "transfer_failed", reason)
                }
            }
        }
    }
}

/// The path (and query) a request came in on, for a redirect to the same
/// place on the leader; kept as received, so an escaped member name stays
/// escaped.
fn request_target(uri: &Uri) -> &str {
    uri.path_and_query()
        .map_or_else(|| uri.path(), |target| target.as_str())
}

/// `GET /admin/members`: the configuration in force on this member (the
/// leader's is the newest; `committed` says whether this one is settled).
async fn members<E: Engine>(State(engine): State<Arc<E>>) -> Response {
    Json(engine.members()).into_response()
}

async fn add_member<E: Engine>(
    State(engine): State<Arc<E>>,
    State(scheme): State<Scheme>,
    uri: Uri,
    body: Body,
) -> Response {
    let add: AddMember = match axum::body::to_bytes(body, MAX_MEMBER_BODY_BYTES).await {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(add) => add,
            Err(err) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "the body must be {{\"id\":\"NAME\",\"address\":\"HOST:PORT\"}} with an \
                         optional \"httpAddress\":\"HOST:PORT\": {err}"
                    ),
                )
            }
        },
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("request body over {MAX_MEMBER_BODY_BYTES} bytes or unreadable: {err}"),
            )
        }
    };
    change_members(engine.as_ref(), scheme, MemberChange::Add(add), &uri).await
}

async fn promote_member<E: Engine>(
    State(engine): State<Arc<E>>,
    State(scheme): State<Scheme>,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    change_named(engine.as_ref(), scheme, id, MemberChange::Promote, &uri).await
}

async fn remove_member<E: Engine>(
    State(engine): State<Arc<E>>,
    State(scheme): State<Scheme>,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    change_named(engine.as_ref(), scheme, id, MemberChange::Remove, &uri).await
}

/// Makes the change `make` builds for the member named in the path (a
/// 400 when the name is unreadable).
async fn change_named<E: Engine>(
    engine: &E,
    scheme: Scheme,
    id: Result<Path<String>, PathRejection>,
    make: fn(String) -> MemberChange,
    uri: &Uri,
) -> Response {
    match id {
        Ok(Path(id)) => change_members(engine, scheme, make(id), uri).await,
        Err(rejection) => error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("unreadable member name: {}", rejection.body_text()),
        ),
    }
}

/// Makes `change` and answers the new configuration once it is committed.
async fn change_members<E: Engine>(
    engine: &E,
    scheme: Scheme,
    change: MemberChange,
    uri: &Uri,
) -> Response {
    match engine.change_members(change).await {
        Ok(members) => Json(members).into_response(),
        Err(err) => membership_error(err, scheme, request_target(uri)),
    }
}

/// `307` to the leader (or `503` when its address is unknown), `404` for
/// an unknown member, `400` for a malformed request, `409` for a change
/// refused as it stands, and what an append answers for the rest (busy,
/// no leader, outcome unknown, ...).
fn membership_error(err: MembershipError, scheme: Scheme, path_and_query: &str) -> Response {
    match err {
        MembershipError::NotLeader {
            leader_id,
            leader_http,
        } => {
            // The error's own text prints the Option; say it in words.
            let reason = match &leader_id {
                Some(leader) => format!("not the leader; the leader is {leader}"),
                None => "not the leader, and no leader is known; retry shortly".to_string(),
            };
            match leader_http {
                Some(address) => {
                    redirect_to_leader(scheme, &address, path_and_query, "not_leader", reason)
                }
                None => error(StatusCode::SERVICE_UNAVAILABLE, "not_leader", reason),
            }
        }
        MembershipError::UnknownMember { reason } => {
            error(StatusCode::NOT_FOUND, "unknown_member", reason)
        }
        MembershipError::BadRequest { reason } => {
            error(StatusCode::BAD_REQUEST, "bad_request", reason)
        }
        MembershipError::Refused { reason } => error(StatusCode::CONFLICT, "refused", reason),
        MembershipError::Append(err) => write_error(err, scheme, path_and_query),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::api::{
        Appended, ConsumerGroup, ConsumerGroups, MemberAddress, Members, OffsetCommitted, Role,
        Status, Transferred,
    };
    use crate::consumers::{Applied, Condition, ConsumerState, OffsetCommit};
    use crate::engine::CommittedRange;
    use crate::entry::{Entry, EntryKind};

    /// An engine over an in-memory log that commits at once, or a follower
    /// that knows its leader.
    pub(crate) struct FakeEngine {
        leader_http: Option<String>,
        log: Mutex<Vec<Entry>>,
        first_index: u64,
        consumers: Mutex<ConsumerState>,
        /// Voters a (this member), b and c at first; changed at once by
        /// `change_members`, one member at a time, as the real one would.
        configuration: Mutex<Members>,
    }

    impl FakeEngine {
        fn three_voters() -> Members {
            Members {
                index: 1,
                committed: true,
                voters: ["a", "b", "c"].map(FakeEngine::member).to_vec(),
                learners: vec![],
            }
        }

        fn member(id: &str) -> MemberAddress {
            MemberAddress {
                id: id.into(),
                address: format!("{id}:20911"),
                http_address: format!("{id}:8080"),
                incarnation: 0,
            }
        }

        /// The change made to `members`, with the real one's refusals (by
        /// name; a member named `busy` or `lost` stands for a change that
        /// could not be proposed or whose fate is unknown).
        fn changed(members: &Members, change: MemberChange) -> Result<Members, MembershipError> {
            let mut next = members.clone();
            let position = |list: &[MemberAddress], id: &str| list.iter().position(|m| m.id == id);
            let name = match &change {
                MemberChange::Add(add) => add.id.clone(),
                MemberChange::Promote(id) | MemberChange::Remove(id) => id.clone(),
            };
            match name.as_str() {
                "busy" => {
                    return Err(MembershipError::Append(AppendError::Overloaded {
                        reason: "queue full".into(),
                    }))
                }
                "lost" => {
                    return Err(MembershipError::Append(AppendError::Unknown {
                        reason: "leadership lost".into(),
                    }))
                }
                _ => {}
            }
            let known = position(&next.voters, &name).is_some()
                || position(&next.learners, &name).is_some();
            match change {
                MemberChange::Add(add) => {
                    if add.id.is_empty() || !add.address.contains(':') {
                        return Err(MembershipError::BadRequest {
                            reason: format!("bad member {:?} at {:?}", add.id, add.address),
                        });
                    }
                    if known {
                        return Err(MembershipError::Refused {
                            reason: format!("{} is a member already", add.id),
                        });
                    }
                    let http_address = add.http_address.unwrap_or_else(|| {
                        let host = add.address.rsplit_once(':').map_or("", |(host, _)| host);
                        format!("{host}:8080")
                    });
                    next.learners.push(MemberAddress {
                        id: add.id,
                        address: add.address,
                        http_address,
                        incarnation: add.incarnation.unwrap_or(0),
                    });
                }
                MemberChange::Promote(id) => match position(&next.learners, &id) {
                    Some(at) => {
                        let learner = next.learners.remove(at);
                        next.voters.push(learner);
                    }
                    None if known => {
                        return Err(MembershipError::Refused {
                            reason: format!("{id} is a voter already"),
                        })
                    }
                    None => {
                        return Err(MembershipError::UnknownMember {
                            reason: format!("{id} is not a member"),
                        })
                    }
                },
                MemberChange::Remove(id) => {
                    if let Some(at) = position(&next.learners, &id) {
                        next.learners.remove(at);
                    } else if let Some(at) = position(&next.voters, &id) {
                        if next.voters.len() == 1 {
                            return Err(MembershipError::Refused {
                                reason: format!("{id} is the last voter and cannot be removed"),
                            });
                        }
                        next.voters.remove(at);
                    } else {
                        return Err(MembershipError::UnknownMember {
                            reason: format!("{id} is not a member"),
                        });
                    }
                }
            }
            next.index = members.index + 1;
            next.committed = true;
            Ok(next)
        }

        pub(crate) fn leader() -> Arc<FakeEngine> {
            Arc::new(FakeEngine {
                leader_http: None,
                log: Mutex::new(Vec::new()),
                first_index: 1,
                consumers: Mutex::default(),
                configuration: Mutex::new(FakeEngine::three_voters()),
            })
        }

        pub(crate) fn follower() -> Arc<FakeEngine> {
            Arc::new(FakeEngine {
                leader_http: Some("10.0.0.2:8080".into()),
                log: Mutex::new(Vec::new()),
                first_index: 1,
                consumers: Mutex::default(),
                configuration: Mutex::new(FakeEngine::three_voters()),
            })
        }
    }

    impl Engine for FakeEngine {
        fn status(&self) -> Status {
            let last_index = self.log.lock().unwrap().len() as u64;
            Status {
                group: "g".into(),
                id: "a".into(),
                version: "0".into(),
                role: Role::Leader,
                term: 1,
                leader_id: Some("a".into()),
                first_index: self.first_index,
                last_index,
                last_term: 1,
                commit_index: last_index,
                peers: vec![],
                leader_commit_index: Some(last_index),
                lag: 0,
                configuration: None,
                incarnation: 0,
                group_id: String::new(),
                certificate_not_after_s: None,
            }
        }
        fn members(&self) -> Members {
            self.configuration.lock().unwrap().clone()
        }
        async fn change_members(&self, change: MemberChange) -> Result<Members, MembershipError> {
            if let Some(address) = &self.leader_http {
                return Err(MembershipError::NotLeader {
                    leader_id: Some("b".into()),
                    leader_http: Some(address.clone()),
                });
            }
            let mut configuration = self.configuration.lock().unwrap();
            let next = FakeEngine::changed(&configuration, change)?;
            *configuration = next.clone();
            Ok(next)
        }
        fn readiness(&self) -> Result<(), String> {
            match self.leader_http {
                None => Ok(()),
                Some(_) => Err("catching up".into()),
            }
        }
        fn metrics(&self) -> String {
            "dledger_term 1\n".into()
        }
        fn max_entry_bytes(&self) -> usize {
            16
        }
        async fn append(&self, payload: Bytes) -> Result<Appended, AppendError> {
            if let Some(address) = &self.leader_http {
                return Err(AppendError::NotLeader {
                    leader_id: "b".into(),
                    leader_http: Some(address.clone()),
                    leader_tcp: None,
                });
            }
            let mut log = self.log.lock().unwrap();
            let index = log.len() as u64 + 1;
            log.push(Entry::normal(index, 1, payload));
            Ok(Appended { index, term: 1 })
        }
        async fn entry(&self, index: u64) -> Result<Entry, ReadError> {
            if index < self.first_index {
                return Err(ReadError::Compacted {
                    index,
                    first_index: self.first_index,
                });
            }
            let log = self.log.lock().unwrap();
            log.get(index as usize - 1)
                .cloned()
                .ok_or(ReadError::NotCommitted {
                    index,
                    commit_index: log.len() as u64,
                })
        }
        async fn read_index(&self) -> Result<u64, AppendError> {
            match &self.leader_http {
                None => Ok(self.log.lock().unwrap().len() as u64),
                Some(address) => Err(AppendError::NotLeader {
                    leader_id: "b".into(),
                    leader_http: Some(address.clone()),
                    leader_tcp: None,
                }),
            }
        }
        async fn range(
            &self,
            from: u64,
            _max_bytes: usize,
            wait_ms: u64,
        ) -> Result<CommittedRange, ReadError> {
            let (entries, commit_index): (Vec<Entry>, u64) = {
                let log = self.log.lock().unwrap();
                let entries = log.iter().filter(|e| e.index >= from).cloned().collect();
                (entries, log.len() as u64)
            };
            if entries.is_empty() {
                // Nothing commits in this fake: a long poll waits it out.
                tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
            }
            Ok(CommittedRange {
                entries,
                commit_index,
            })
        }
        async fn transfer_leadership(
            &self,
            to: Option<String>,
        ) -> Result<Transferred, TransferError> {
            match to.as_deref() {
                Some("a") => Err(TransferError::BadTarget {
                    reason: "already the leader".into(),
                }),
                Some(id) => Ok(Transferred {
                    leader_id: id.into(),
                    term: 2,
                }),
                None => Ok(Transferred {
                    leader_id: "b".into(),
                    term: 2,
                }),
            }
        }
        fn consumer_groups(&self) -> ConsumerGroups {
            let commit_index = self.log.lock().unwrap().len() as u64;
            let state = self.consumers.lock().unwrap();
            ConsumerGroups {
                groups: state
                    .groups()
                    .map(|(group, offset)| ConsumerGroup {
                        group: group.into(),
                        offset,
                        lag: (commit_index + 1).saturating_sub(offset),
                    })
                    .collect(),
            }
        }
        fn consumer_group(&self, group: &str) -> Option<ConsumerGroup> {
            self.consumer_groups()
                .groups
                .into_iter()
                .find(|found| found.group == group)
        }
        /// Checks, appends and applies at once, as one member would.
        async fn commit_offset(
            &self,
            group: String,
            offset: u64,
            expected: Option<u64>,
        ) -> Result<OffsetCommitted, OffsetError> {
            if let Some(address) = &self.leader_http {
                return Err(OffsetError::Write(AppendError::NotLeader {
                    leader_id: "b".into(),
                    leader_http: Some(address.clone()),
                    leader_tcp: None,
                }));
            }
            let commit = OffsetCommit {
                group,
                offset,
                condition: expected.map_or(Condition::None, Condition::Expected),
            };
            let mut log = self.log.lock().unwrap();
            let mut state = self.consumers.lock().unwrap();
            state
                .check(&commit, self.first_index, log.len() as u64)
                .map_err(OffsetError::Refused)?;
            let index = log.len() as u64 + 1;
            log.push(Entry {
                index,
                term: 1,
                kind: EntryKind::ConsumerOffset,
                payload: commit.encode(),
            });
            match state.apply_commit(index, commit) {
                Applied::Stored { group, offset } => Ok(OffsetCommitted { group, offset }),
                Applied::Refused(refusal) => Err(OffsetError::Refused(refusal)),
            }
        }
    }

    async fn call(
        engine: Arc<FakeEngine>,
        method: &str,
        uri: &str,
        body: &[u8],
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body.to_vec()))
            .unwrap();
        let response = router(engine).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    fn json(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).unwrap()
    }

    #[tokio::test]
    async fn append_then_read_back() {
        let engine = FakeEngine::leader();
        let (status, _, body) = call(engine.clone(), "POST", "/v1/entries", b"hello").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body), serde_json::json!({"index": 1, "term": 1}));

        let (status, headers, body) = call(engine.clone(), "GET", "/v1/entries/1", b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"hello");
        assert_eq!(headers["x-dledger-term"], "1");

        let (status, _, body) = call(engine, "GET", "/v1/entries?from=1&wait_ms=5", b"").await;
        assert_eq!(status, StatusCode::OK);
        let range = json(&body);
        assert_eq!(range["commitIndex"], 1);
        assert_eq!(range["entries"][0]["payloadBase64"], "aGVsbG8=");
        assert_eq!(range["entries"][0]["kind"], "normal");
    }

    #[tokio::test]
    async fn oversized_body_is_refused_and_nothing_is_appended() {
        let engine = FakeEngine::leader();
        let (status, _, body) = call(engine.clone(), "POST", "/v1/entries", &[7u8; 17]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json(&body)["error"], "too_large");
        assert!(engine.log.lock().unwrap().is_empty());
        // Exactly the limit is fine.
        let (status, _, _) = call(engine, "POST", "/v1/entries", &[7u8; 16]).await;
        assert_eq!(status, StatusCode::OK);
    }

    /// Over a real socket: a client that writes its whole oversized body
    /// before reading reads the 413, not a broken pipe.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_body_sent_in_full_is_answered_413() {
        use std::io::{Read, Write};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let engine = FakeEngine::leader();
        let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
            listener,
            router(engine.clone()),
        )));
        let answer = tokio::task::spawn_blocking(move || {
            let body = vec![7u8; 8 << 20];
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            write!(
                stream,
                "POST /v1/entries HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            stream.write_all(&body).expect("the whole body sent");
            let mut answer = vec![0u8; 4096];
            let read = stream.read(&mut answer).unwrap();
            String::from_utf8_lossy(&answer[..read]).into_owned()
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(engine.log.lock().unwrap().is_empty());
        server.abort();
    }

    #[tokio::test]
    async fn follower_redirects_writes_to_the_leader() {
        let engine = Arc::new(FakeEngine {
            leader_http: Some("10.0.0.2:8080".into()),
            log: Mutex::new(Vec::new()),
            first_index: 1,
            consumers: Mutex::default(),
            configuration: Mutex::new(FakeEngine::three_voters()),
        });
        let (status, headers, body) = call(engine.clone(), "POST", "/v1/entries", b"x").await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(headers["location"], "http://10.0.0.2:8080/v1/entries");
        assert_eq!(json(&body)["error"], "not_leader");
        // A linearizable read is redirected with its query.
        let (status, headers, _) = call(
            engine.clone(),
            "GET",
            "/v1/entries?from=3&linearizable=true",
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            headers["location"],
            "http://10.0.0.2:8080/v1/entries?from=3&linearizable=true"
        );
        // A plain read is served locally, possibly stale.
        let (status, _, _) = call(engine.clone(), "GET", "/v1/entries?from=1", b"").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = call(engine, "GET", "/readyz", b"").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_redirect_names_the_scheme_this_member_serves() {
        let add = br#"{"id":"d","address":"d:20911"}"#;
        // Every kind of request a follower sends on to the leader.
        let requests: [(&str, &str, &[u8]); 8] = [
            ("POST", "/v1/entries", b"x"),
            ("GET", "/v1/entries?from=3&linearizable=true", b""),
            ("PUT", "/v1/consumers/g/offset", br#"{"offset":1}"#),
            ("GET", "/v1/consumers?linearizable=true", b""),
            ("GET", "/v1/consumers/g?linearizable=true", b""),
            ("POST", "/admin/members", add),
            ("POST", "/admin/members/d/promote", b""),
            ("DELETE", "/admin/members/d", b""),
        ];
        for (serves_https, scheme) in [(false, "http"), (true, "https")] {
            let router = router_with_limits(
                FakeEngine::follower(),
                Limits {
                    serves_https,
                    ..Limits::default()
                },
            );
            for (method, uri, body) in requests {
                let request = Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::from(body))
                    .unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::TEMPORARY_REDIRECT,
                    "{method} {uri}"
                );
                assert_eq!(
                    response.headers()[header::LOCATION],
                    format!("{scheme}://10.0.0.2:8080{uri}"),
                    "{method} {uri}"
                );
            }
        }
    }

    #[tokio::test]
    async fn reads_past_commit_and_below_retention_are_told_apart() {
        let engine = Arc::new(FakeEngine {
            leader_http: None,
            log: Mutex::new(vec![Entry::normal(1, 1, "a"), Entry::normal(2, 1, "b")]),
            first_index: 2,
            consumers: Mutex::default(),
            configuration: Mutex::new(FakeEngine::three_voters()),
        });
        let (status, _, body) = call(engine.clone(), "GET", "/v1/entries/3", b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json(&body)["error"], "not_committed");
        let (status, _, body) = call(engine.clone(), "GET", "/v1/entries/1", b"").await;
        assert_eq!(status, StatusCode::GONE);
        assert_eq!(json(&body)["error"], "compacted");
        for bad in ["/v1/entries/0", "/v1/entries/-1", "/v1/entries/abc"] {
            let (status, _, body) = call(engine.clone(), "GET", bad, b"").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(json(&body)["error"], "bad_request");
        }
        let (status, _, body) = call(engine, "GET", "/v1/entries?from=x", b"").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(json(&body)["reason"].as_str().unwrap().contains("from"));
    }

    #[tokio::test]
    async fn from_zero_and_entry_zero_are_refused_alike() {
        let engine = FakeEngine::leader();
        let (status, _, body) = call(engine.clone(), "GET", "/v1/entries?from=0", b"").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let from_reason = json(&body)["reason"].as_str().unwrap().to_string();
        let (status, _, body) = call(engine, "GET", "/v1/entries/0", b"").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let entry_reason = json(&body)["reason"].as_str().unwrap().to_string();
        for reason in [&from_reason, &entry_reason] {
            assert!(reason.contains("the first index is 1"), "{reason}");
        }
    }

    #[tokio::test]
    async fn linearizable_takes_only_true_or_false() {
        let engine = FakeEngine::leader();
        for bad in ["yes", "1", "TRUE", "", "True"] {
            let uri = format!("/v1/entries?from=1&linearizable={bad}");
            let (status, _, body) = call(engine.clone(), "GET", &uri, b"").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            let body = json(&body);
            assert_eq!(body["error"], "bad_request");
            assert!(body["reason"].as_str().unwrap().contains("linearizable"));
        }
        for good in ["true", "false"] {
            let uri = format!("/v1/entries?from=1&linearizable={good}");
            let (status, _, _) = call(engine.clone(), "GET", &uri, b"").await;
            assert_eq!(status, StatusCode::OK, "{uri}");
        }
    }

    #[tokio::test]
    async fn every_error_has_a_json_body() {
        let engine = FakeEngine::leader();
        let cases = [
            ("DELETE", "/v1/entries", StatusCode::METHOD_NOT_ALLOWED),
            ("PUT", "/status", StatusCode::METHOD_NOT_ALLOWED),
            (
                "GET",
                "/admin/transfer-leadership",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            ("POST", "/v1/entries/1", StatusCode::METHOD_NOT_ALLOWED),
            ("GET", "/v1/entries?from=%FF", StatusCode::BAD_REQUEST),
            ("GET", "/v1/entries/%FF", StatusCode::BAD_REQUEST),
            ("GET", "/nope", StatusCode::NOT_FOUND),
        ];
        for (method, uri, expected) in cases {
            let (status, headers, body) = call(engine.clone(), method, uri, b"").await;
            assert_eq!(status, expected, "{method} {uri}");
            assert_eq!(
                headers["content-type"], "application/json",
                "{method} {uri}"
            );
            let body = json(&body);
            assert!(body["error"].is_string(), "{method} {uri}: {body}");
            assert!(body["reason"].is_string(), "{method} {uri}: {body}");
        }
    }

    #[tokio::test]
    async fn unknown_paths_get_a_json_404_and_status_follows_the_contract() {
        let engine = FakeEngine::leader();
        let (status, _, body) = call(engine.clone(), "GET", "/nope/../etc", b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json(&body)["error"], "not_found");
        let (status, _, body) = call(engine.clone(), "GET", "/status", b"").await;
        assert_eq!(status, StatusCode::OK);
        let status_json = json(&body);
        assert_eq!(status_json["role"], "leader");
        assert_eq!(status_json["leaderId"], "a");
        let (status, _, body) = call(engine.clone(), "GET", "/metrics", b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"dledger_term 1\n");
        let (status, _, _) = call(engine, "GET", "/healthz", b"").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn transfer_answers_with_the_new_leader_or_a_reason() {
        let engine = FakeEngine::leader();
        let (status, _, body) = call(
            engine.clone(),
            "POST",
            "/admin/transfer-leadership?to=c",
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body), serde_json::json!({"leaderId": "c", "term": 2}));
        let (status, _, body) = call(engine, "POST", "/admin/transfer-leadership?to=a", b"").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json(&body)["error"], "bad_target");
    }

    #[test]
    fn busy_is_503_with_retry_after_and_disk_full_is_507() {
        let busy = append_error(
            AppendError::Overloaded {
                reason: "queue full".into(),
            },
            Scheme::Http,
        );
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            busy.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static(RETRY_AFTER_S))
        );
        let full = append_error(
            AppendError::DiskFull {
                reason: "no space".into(),
            },
            Scheme::Http,
        );
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(full.headers().get(header::RETRY_AFTER).is_none());
    }

    async fn send_limited(
        router: Router,
        method: &str,
        uri: &str,
    ) -> (StatusCode, axum::http::HeaderMap) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        (response.status(), response.headers().clone())
    }

    fn limits(max_requests_in_flight: usize, max_request_ms: u64) -> Limits {
        Limits {
            max_requests_in_flight,
            max_request_ms,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn appends_are_not_read_past_the_client_bytes_budget() {
        let engine = FakeEngine::leader();
        let budget = ClientBytes::new(8);
        let router = router_with_limits(
            engine.clone(),
            Limits {
                client_bytes: budget.clone(),
                ..Limits::default()
            },
        );
        let post = |body: &'static [u8]| {
            let router = router.clone();
            async move {
                let request = Request::builder()
                    .method("POST")
                    .uri("/v1/entries")
                    .header(header::CONTENT_LENGTH, body.len())
                    .body(Body::from(body))
                    .unwrap();
                router.oneshot(request).await.unwrap().status()
            }
        };
        // Other requests hold the whole budget: this one waits, unread.
        let held = budget.acquire(8).await.unwrap();
        let waiting = tokio::spawn(post(b"hello"));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "read past the budget");
        assert!(engine.log.lock().unwrap().is_empty());
        drop(held);
        assert_eq!(waiting.await.unwrap(), StatusCode::OK);
        assert_eq!(engine.log.lock().unwrap().len(), 1);
        assert_eq!(budget.available(), 8, "given back once answered");
    }

    #[tokio::test]
    async fn requests_past_the_limits_are_busy_or_time_out_and_probes_never_are() {
        let full = router_with_limits(FakeEngine::leader(), limits(0, 1_000));
        let (status, headers) = send_limited(full.clone(), "GET", "/v1/entries/1").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(headers.get(header::RETRY_AFTER).is_some());
        for probe in ["/healthz", "/readyz", "/status", "/metrics"] {
            let (status, _) = send_limited(full.clone(), "GET", probe).await;
            assert_eq!(status, StatusCode::OK, "{probe} was limited");
        }
        let slow = router_with_limits(FakeEngine::leader(), limits(4, 50));
        let started = std::time::Instant::now();
        let (status, _) = send_limited(slow, "GET", "/v1/entries?from=5&wait_ms=5000").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(started.elapsed() < std::time::Duration::from_secs(4));
    }

    fn put_offset(
        engine: &Arc<FakeEngine>,
        group: &str,
        body: &str,
    ) -> impl std::future::Future<Output = (StatusCode, axum::http::HeaderMap, Vec<u8>)> {
        let uri = format!("/v1/consumers/{group}/offset");
        let engine = engine.clone();
        let body = body.as_bytes().to_vec();
        async move { call(engine, "PUT", &uri, &body).await }
    }

    #[tokio::test]
    async fn an_offset_is_committed_then_read_back_with_its_lag() {
        let engine = FakeEngine::leader();
        for payload in ["a", "b", "c"] {
            call(engine.clone(), "POST", "/v1/entries", payload.as_bytes()).await;
        }
        // Create the group (expected 0: it must not exist yet).
        let (status, _, body) = put_offset(&engine, "orders", r#"{"offset":2,"expected":0}"#).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            json(&body),
            serde_json::json!({"group": "orders", "offset": 2})
        );
        // The commit is entry 4: lag = 4 + 1 - 2.
        let (status, _, body) = call(engine.clone(), "GET", "/v1/consumers/orders", b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            json(&body),
            serde_json::json!({"group": "orders", "offset": 2, "lag": 3})
        );
        let (status, _, body) = put_offset(&engine, "billing", r#"{"offset":5}"#).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let (status, _, body) = call(engine.clone(), "GET", "/v1/consumers", b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            json(&body),
            serde_json::json!({"groups": [
                {"group": "billing", "offset": 5, "lag": 1},
                {"group": "orders", "offset": 2, "lag": 4},
            ]})
        );
        // A linearizable read on the leader is served too.
        let (status, _, body) = call(
            engine.clone(),
            "GET",
            "/v1/consumers/orders?linearizable=true",
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["offset"], 2);
        let (status, _, _) = call(engine, "GET", "/v1/consumers?linearizable=true", b"").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn an_unknown_group_is_404_and_a_bad_name_400() {
        let engine = FakeEngine::leader();
        let (status, _, body) = call(engine.clone(), "GET", "/v1/consumers/nobody", b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let body = json(&body);
        assert_eq!(body["error"], "unknown_group");
        assert!(
            body["reason"].as_str().unwrap().contains("nobody"),
            "{body}"
        );
        for bad in [
            "/v1/consumers/a%20b",
            "/v1/consumers/%C3%A9",
            "/v1/consumers/a%2Fb",
        ] {
            let (status, _, body) = call(engine.clone(), "GET", bad, b"").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(json(&body)["error"], "bad_group", "{bad}");
        }
        let long = "x".repeat(129);
        let (status, _, body) = put_offset(&engine, &long, r#"{"offset":1}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json(&body)["error"], "bad_group");
        let (status, _, body) = call(engine, "GET", "/v1/consumers?linearizable=yes", b"").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(json(&body)["reason"]
            .as_str()
            .unwrap()
            .contains("linearizable"));
    }

    #[tokio::test]
    async fn a_conflict_is_409_naming_the_current_offset() {
        let engine = FakeEngine::leader();
        call(engine.clone(), "POST", "/v1/entries", b"a").await;
        let (status, _, _) = put_offset(&engine, "g", r#"{"offset":1,"expected":0}"#).await;
        assert_eq!(status, StatusCode::OK);
        // A second create, and a stale expected, both conflict.
        for body in [
            r#"{"offset":2,"expected":0}"#,
            r#"{"offset":2,"expected":7}"#,
        ] {
            let (status, headers, answer) = put_offset(&engine, "g", body).await;
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
            assert_eq!(headers["content-type"], "application/json");
            let answer = json(&answer);
            assert_eq!(answer["error"], "conflict");
            assert_eq!(answer["group"], "g");
            assert_eq!(answer["currentOffset"], 1);
            assert!(answer["reason"].is_string());
        }
        // The right expected is taken.
        let (status, _, _) = put_offset(&engine, "g", r#"{"offset":2,"expected":1}"#).await;
        assert_eq!(status, StatusCode::OK);
        // Expecting an offset of a group that has none names null.
        let (status, _, answer) = put_offset(&engine, "new", r#"{"offset":1,"expected":1}"#).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(json(&answer)["currentOffset"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn an_offset_out_of_range_is_422_and_a_malformed_body_400() {
        let engine = Arc::new(FakeEngine {
            leader_http: None,
            log: Mutex::new(vec![Entry::normal(1, 1, "a"), Entry::normal(2, 1, "b")]),
            first_index: 2,
            consumers: Mutex::default(),
            configuration: Mutex::new(FakeEngine::three_voters()),
        });
        // Below the first retained index, past the commit index + 1, zero.
        for offset in [1, 4, 0] {
            let body = format!(r#"{{"offset":{offset}}}"#);
            let (status, _, answer) = put_offset(&engine, "g", &body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(json(&answer)["error"], "out_of_range");
        }
        // The commit index + 1 is the highest offset taken.
        let (status, _, _) = put_offset(&engine, "g", r#"{"offset":3}"#).await;
        assert_eq!(status, StatusCode::OK);
        for body in [
            "",
            "{}",
            "not json",
            r#"{"offset":-1}"#,
            r#"{"offset":"3"}"#,
            r#"{"offset":3,"expected":null,"extra":1}"#,
            r#"{"offset":3.5}"#,
        ] {
            let (status, _, answer) = put_offset(&engine, "g", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(json(&answer)["error"], "bad_request", "{body}");
        }
        let huge = format!(
            r#"{{"offset":3,"pad":"{}"}}"#,
            "x".repeat(MAX_OFFSET_BODY_BYTES)
        );
        let (status, _, _) = put_offset(&engine, "g", &huge).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Nothing of the refused ones was stored.
        assert_eq!(engine.consumers.lock().unwrap().offset("g"), Some(3));
    }

    #[tokio::test]
    async fn a_follower_redirects_offset_commits_and_linearizable_reads() {
        let engine = FakeEngine::follower();
        let (status, headers, body) = put_offset(&engine, "g", r#"{"offset":1}"#).await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            headers["location"],
            "http://10.0.0.2:8080/v1/consumers/g/offset"
        );
        assert_eq!(json(&body)["error"], "not_leader");
        let (status, headers, _) = call(
            engine.clone(),
            "GET",
            "/v1/consumers/g?linearizable=true",
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            headers["location"],
            "http://10.0.0.2:8080/v1/consumers/g?linearizable=true"
        );
        let (status, headers, _) = call(
            engine.clone(),
            "GET",
            "/v1/consumers?linearizable=true",
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            headers["location"],
            "http://10.0.0.2:8080/v1/consumers?linearizable=true"
        );
        // Plain reads are served locally.
        let (status, _, body) = call(engine.clone(), "GET", "/v1/consumers", b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body), serde_json::json!({"groups": []}));
        let (status, _, _) = call(engine.clone(), "GET", "/v1/consumers/g", b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Wrong methods are JSON 405s.
        for (method, uri) in [
            ("POST", "/v1/consumers"),
            ("GET", "/v1/consumers/g/offset"),
            ("DELETE", "/v1/consumers/g"),
        ] {
            let (status, _, body) = call(engine.clone(), method, uri, b"").await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert!(json(&body)["error"].is_string());
        }
    }

    #[test]
    fn offset_write_failures_are_answered_like_appends() {
        let busy = offset_error(
            OffsetError::Write(AppendError::Overloaded {
                reason: "queue full".into(),
            }),
            Scheme::Http,
            "/v1/consumers/g/offset",
        );
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(busy.headers().get(header::RETRY_AFTER).is_some());
        let unknown = offset_error(
            OffsetError::Write(AppendError::Unknown {
                reason: "leadership lost".into(),
            }),
            Scheme::Http,
            "/v1/consumers/g/offset",
        );
        assert_eq!(unknown.status(), StatusCode::GATEWAY_TIMEOUT);
        let no_leader = offset_error(
            OffsetError::Write(AppendError::NoLeader {
                reason: "election".into(),
            }),
            Scheme::Http,
            "/v1/consumers/g/offset",
        );
        assert_eq!(no_leader.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(no_leader.headers().get(header::LOCATION).is_none());
    }

    fn body_text(body: &[u8]) -> String {
        String::from_utf8_lossy(body).into_owned()
    }

    #[tokio::test]
    async fn members_are_listed_then_changed_one_at_a_time() {
        let engine = FakeEngine::leader();
        let (status, headers, body) = call(engine.clone(), "GET", "/admin/members", b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/json");
        let voter = |id: &str| {
            serde_json::json!({"id": id, "address": format!("{id}:20911"),
                               "httpAddress": format!("{id}:8080")})
        };
        assert_eq!(
            json(&body),
            serde_json::json!({"index": 1, "committed": true,
                               "voters": [voter("a"), voter("b"), voter("c")], "learners": []})
        );
        // A learner with its HTTP address, and one with the default.
        let (status, _, body) = call(
            engine.clone(),
            "POST",
            "/admin/members",
            br#"{"id":"d","address":"d.peers:20911","httpAddress":"d.peers:9090"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", body_text(&body));
        let answer = json(&body);
        assert_eq!(answer["index"], 2);
        assert_eq!(
            answer["learners"],
            serde_json::json!([{"id": "d", "address": "d.peers:20911",
                                "httpAddress": "d.peers:9090"}])
        );
        let (status, _, body) = call(
            engine.clone(),
            "POST",
            "/admin/members",
            br#"{"id":"e","address":"e.peers:20911"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", body_text(&body));
        assert_eq!(json(&body)["learners"][1]["httpAddress"], "e.peers:8080");
        // d becomes a voter; e goes.
        let (status, _, body) = call(engine.clone(), "POST", "/admin/members/d/promote", b"").await;
        assert_eq!(status, StatusCode::OK, "{}", body_text(&body));
        let answer = json(&body);
        assert_eq!(answer["index"], 4);
        assert_eq!(answer["voters"][3]["id"], "d");
        assert_eq!(answer["learners"].as_array().map(Vec::len), Some(1));
        let (status, _, body) = call(engine.clone(), "DELETE", "/admin/members/e", b"").await;
        assert_eq!(status, StatusCode::OK, "{}", body_text(&body));
        let removed = json(&body);
        assert_eq!(removed["index"], 5);
        assert_eq!(removed["learners"], serde_json::json!([]));
        // What the change answered is what a read gives.
        let (status, _, body) = call(engine, "GET", "/admin/members", b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body), removed);
    }

    /// Sends `method uri` with `body` and checks the status and error code,
    /// and that the configuration did not change.
    async fn refused(
        engine: &Arc<FakeEngine>,
        method: &str,
        uri: &str,
        body: &[u8],
        expected: (StatusCode, &str),
    ) -> serde_json::Value {
        let before = engine.members();
        let (status, headers, answer) = call(engine.clone(), method, uri, body).await;
        let shown = format!("{method} {uri} {}: {}", body_text(body), body_text(&answer));
        assert_eq!(status, expected.0, "{shown}");
        assert_eq!(headers["content-type"], "application/json", "{shown}");
        let answer = json(&answer);
        assert_eq!(answer["error"], expected.1, "{shown}");
        assert!(
            answer["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{shown}"
        );
        assert_eq!(engine.members(), before, "{shown}");
        answer
    }

    #[tokio::test]
    async fn member_changes_that_cannot_be_made_are_404_409_or_400() {
        let engine = FakeEngine::leader();
        let unknown = (StatusCode::NOT_FOUND, "unknown_member");
        let conflict = (StatusCode::CONFLICT, "refused");
        let bad = (StatusCode::BAD_REQUEST, "bad_request");
        let answer = refused(&engine, "POST", "/admin/members/z/promote", b"", unknown).await;
        assert_eq!(answer["reason"], "z is not a member");
        refused(&engine, "DELETE", "/admin/members/z", b"", unknown).await;
        let answer = refused(&engine, "POST", "/admin/members/a/promote", b"", conflict).await;
        assert_eq!(answer["reason"], "a is a voter already");
        let add_a = br#"{"id":"a","address":"a:20911"}"#;
        refused(&engine, "POST", "/admin/members", add_a, conflict).await;
        // The engine's own validation is a 400 too.
        let no_port = br#"{"id":"d","address":"no-port"}"#;
        refused(&engine, "POST", "/admin/members", no_port, bad).await;
        // Bodies that are not an add request never reach the engine.
        let bodies: [&[u8]; 7] = [
            b"",
            b"not json",
            b"{}",
            br#"{"id":"d"}"#,
            br#"{"address":"d:20911"}"#,
            br#"{"id":7,"address":"d:20911"}"#,
            br#"{"id":"d","address":"d:20911","http_address":"d:9090"}"#,
        ];
        for body in bodies {
            let answer = refused(&engine, "POST", "/admin/members", body, bad).await;
            let reason = answer["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("httpAddress"), "{reason}");
        }
        let huge = format!(
            r#"{{"id":"d","address":"d:20911","pad":"{}"}}"#,
            "x".repeat(MAX_MEMBER_BODY_BYTES)
        );
        let answer = refused(&engine, "POST", "/admin/members", huge.as_bytes(), bad).await;
        assert!(answer["reason"].as_str().unwrap().contains("4096 bytes"));
        // The last voter stays.
        for id in ["b", "c"] {
            let (status, _, _) = call(
                engine.clone(),
                "DELETE",
                &format!("/admin/members/{id}"),
                b"",
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
        let answer = refused(&engine, "DELETE", "/admin/members/a", b"", conflict).await;
        assert!(answer["reason"].as_str().unwrap().contains("last voter"));
    }

    #[tokio::test]
    async fn member_changes_not_proposed_are_answered_like_appends() {
        let engine = FakeEngine::leader();
        let busy = (StatusCode::SERVICE_UNAVAILABLE, "overloaded");
        refused(&engine, "POST", "/admin/members/busy/promote", b"", busy).await;
        let (_, headers, _) = call(engine.clone(), "DELETE", "/admin/members/busy", b"").await;
        assert_eq!(headers[header::RETRY_AFTER], RETRY_AFTER_S);
        let lost = (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown");
        let add_lost = br#"{"id":"lost","address":"lost:20911"}"#;
        refused(&engine, "POST", "/admin/members", add_lost, lost).await;
        // The rest of the mapping is the append's, through the same function.
        let cases = [
            (
                AppendError::NoLeader {
                    reason: "election".into(),
                },
                StatusCode::SERVICE_UNAVAILABLE,
                "no_leader",
            ),
            (
                AppendError::DiskFull {
                    reason: "no space".into(),
                },
                StatusCode::INSUFFICIENT_STORAGE,
                "disk_full",
            ),
            (
                AppendError::Transferring,
                StatusCode::SERVICE_UNAVAILABLE,
                "transferring",
            ),
        ];
        for (err, status, code) in cases {
            let response =
                membership_error(MembershipError::Append(err), Scheme::Http, "/admin/members");
            assert_eq!(response.status(), status, "{code}");
            assert!(response.headers().get(header::LOCATION).is_none());
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(json(&body)["error"], code);
        }
    }

    #[tokio::test]
    async fn a_follower_redirects_member_changes_and_lists_its_own() {
        let engine = FakeEngine::follower();
        let add = br#"{"id":"d","address":"d:20911"}"#;
        let cases: [(&str, &str, &[u8], &str); 4] = [
            ("POST", "/admin/members", add, "/admin/members"),
            (
                "POST",
                "/admin/members/d/promote",
                b"",
                "/admin/members/d/promote",
            ),
            ("DELETE", "/admin/members/d", b"", "/admin/members/d"),
            // An escaped name is sent on as it came.
            (
                "DELETE",
                "/admin/members/x%2Fy",
                b"",
                "/admin/members/x%2Fy",
            ),
        ];
        for (method, uri, body, path) in cases {
            let (status, headers, answer) = call(engine.clone(), method, uri, body).await;
            assert_eq!(status, StatusCode::TEMPORARY_REDIRECT, "{method} {uri}");
            assert_eq!(
                headers[header::LOCATION],
                format!("http://10.0.0.2:8080{path}"),
                "{method} {uri}"
            );
            let answer = json(&answer);
            assert_eq!(answer["error"], "not_leader");
            assert_eq!(answer["reason"], "not the leader; the leader is b");
        }
        // A malformed body is told at once, wherever it is sent.
        let (status, _, _) = call(engine.clone(), "POST", "/admin/members", b"{").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // The configuration is read from the member asked.
        let (status, _, body) = call(engine, "GET", "/admin/members", b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["voters"][0]["id"], "a");
    }

    #[tokio::test]
    async fn not_leader_without_an_address_is_503_with_a_reason() {
        for (leader_id, said) in [
            (Some("b".to_string()), "the leader is b"),
            (None, "no leader is known"),
        ] {
            let response = membership_error(
                MembershipError::NotLeader {
                    leader_id,
                    leader_http: None,
                },
                Scheme::Http,
                "/admin/members",
            );
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(response.headers().get(header::LOCATION).is_none());
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body = json(&body);
            assert_eq!(body["error"], "not_leader");
            assert!(body["reason"].as_str().unwrap().contains(said), "{body}");
        }
    }

    #[tokio::test]
    async fn member_paths_take_only_their_methods_and_share_the_request_limits() {
        let engine = FakeEngine::leader();
        for (method, uri) in [
            ("PUT", "/admin/members"),
            ("DELETE", "/admin/members"),
            ("GET", "/admin/members/a"),
            ("GET", "/admin/members/a/promote"),
            ("DELETE", "/admin/members/a/promote"),
        ] {
            let (status, _, body) = call(engine.clone(), method, uri, b"").await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert_eq!(json(&body)["error"], "method_not_allowed", "{method} {uri}");
        }
        // A name that is not UTF-8 once unescaped is unreadable.
        for (method, uri) in [
            ("POST", "/admin/members/%FF/promote"),
            ("DELETE", "/admin/members/%FF"),
        ] {
            refused(
                &engine,
                method,
                uri,
                b"",
                (StatusCode::BAD_REQUEST, "bad_request"),
            )
            .await;
        }
        let (status, _, body) = call(engine.clone(), "GET", "/admin/member", b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(json(&body)["reason"]
            .as_str()
            .unwrap()
            .contains("/admin/members"));
        let full = router_with_limits(engine, limits(0, 1_000));
        for (method, uri) in [
            ("GET", "/admin/members"),
            ("POST", "/admin/members/d/promote"),
            ("DELETE", "/admin/members/d"),
        ] {
            let (status, headers) = send_limited(full.clone(), method, uri).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {uri}");
            assert!(headers.get(header::RETRY_AFTER).is_some(), "{method} {uri}");
        }
    }
}
