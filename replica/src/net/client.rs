//! The async client library: append, get, read and consumer offsets over
//! the binary protocol.
//!
//! A [`Client`] keeps one connection, to the leader once it has found it:
//! `NotLeader` answers redirect it to the address they name; `Transferring`,
//! `Unavailable` and connection failures are retried with back-off until a
//! deadline. Requests are pipelined: a `Client` is cheap to clone and every
//! clone shares the connection, so concurrent calls are all in flight at
//! once, answers matched by request id.
//!
//! An append is never sent twice once it may have reached a server: if the
//! connection is lost after sending it, the call fails with
//! [`ClientError::Indeterminate`] rather than risk a duplicate entry; nor is
//! a conditional offset commit (a resent one could report its own success
//! as a conflict). Reads and unconditional offset commits are retried
//! freely.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::backoff::{jitter_seed, Backoff};
use super::client_proto::{ClientEntry, ClientRequest, ClientResponse, RequestError};
use super::frame::{Frame, FrameCodec, FrameType, DEFAULT_MAX_FRAME_BYTES};
use super::handshake::{self, ErrorCode, HandshakeError, Hello, Role};
use super::stream::Stream;
use crate::entry::{Index, Term};

/// How a client connects and retries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The group to talk to.
    pub group: String,
    /// The name the client gives in its handshake (shows in server logs).
    pub client_name: String,
    /// Largest frame body, in bytes.
    pub max_frame_bytes: u32,
    /// Time allowed to connect and shake hands with one member.
    pub connect_timeout_ms: u64,
    /// Time allowed for one answer (a read adds its `wait_ms`).
    pub request_timeout_ms: u64,
    /// Time a call keeps retrying before it gives up.
    pub retry_deadline_ms: u64,
    /// First retry delay.
    pub backoff_initial_ms: u64,
    /// Longest retry delay.
    pub backoff_max_ms: u64,
    /// Requests queued for writing at most (callers wait past it).
    pub max_in_flight_requests: usize,
    /// TLS with this certificate (a client certificate from the group's
    /// CA) and trusting its CA; `None`: plaintext.
    pub tls: Option<super::tls::Tls>,
    /// A bearer token from the members' token file, sent as `Authenticate`
    /// first on every connection.
    pub token: Option<String>,
}

impl ClientConfig {
    /// Defaults for `group`.
    pub fn new(group: impl Into<String>) -> ClientConfig {
        ClientConfig {
            group: group.into(),
            client_name: format!("client-{}", std::process::id()),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            retry_deadline_ms: 15_000,
            backoff_initial_ms: 20,
            backoff_max_ms: 1_000,
            max_in_flight_requests: 4096,
            tls: None,
            token: None,
        }
    }
}

/// Sends `Authenticate` with `token` as the connection's first request and
/// reads its answer: `Err` inside when the member refused the token.
async fn authenticate(
    framed: &mut Framed<Stream, FrameCodec>,
    token: &str,
) -> Result<Result<(), RequestError>, HandshakeError> {
    let request = ClientRequest::Authenticate {
        token: token.to_string(),
    };
    let body = request
        .encode()
        .map_err(|err| HandshakeError::from_io(std::io::Error::other(err.to_string())))?;
    // Id 0: the connection's own requests start at 1.
    framed
        .send(Frame::new(FrameType::Request, 0, body))
        .await
        .map_err(|err| HandshakeError::from_io(std::io::Error::other(err.to_string())))?;
    let frame = match framed.next().await {
        None => return Err(HandshakeError::Closed),
        Some(frame) => {
            frame.map_err(|err| HandshakeError::from_io(std::io::Error::other(err.to_string())))?
        }
    };
    let response = ClientResponse::decode(&frame.body)
        .map_err(|err| HandshakeError::from_io(std::io::Error::other(err.to_string())))?;
    Ok(match response {
        ClientResponse::Authenticated { .. } => Ok(()),
        ClientResponse::Error(error) => Err(error),
        other => Err(RequestError::BadRequest {
            reason: format!("unexpected answer to Authenticate: {other:?}"),
        }),
    })
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `Client::connect` was given no address.
    #[error("no member address given")]
    NoAddresses,
    /// A member refused the handshake for a reason retrying cannot fix
    /// (wrong group, no common protocol version).
    #[error("refused by {addr}: {source}")]
    Refused {
        /// The member's address.
        addr: String,
        /// Its refusal.
        source: HandshakeError,
    },
    /// The server answered with an error retrying cannot fix.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The connection was lost (or the answer timed out) after an append or
    /// a conditional offset commit was sent, or the server said it cannot
    /// tell: it may or may not be committed. Read the log (or the offset)
    /// to find out before sending it again.
    #[error("outcome unknown (it may or may not be committed): {reason}")]
    Indeterminate {
        /// What happened.
        reason: String,
    },
    /// The request cannot fit in a frame.
    #[error("request of {bytes} bytes exceeds the frame limit of {max_bytes} bytes")]
    TooLarge {
        /// Its encoded size.
        bytes: u64,
        /// The limit.
        max_bytes: u32,
    },
    /// Retries went on past the deadline.
    #[error("gave up after {elapsed_ms} ms; last error: {last_error}")]
    DeadlineExceeded {
        /// Time spent.
        elapsed_ms: u64,
        /// The last failure seen.
        last_error: String,
    },
    /// The server answered with a response of the wrong kind.
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),
}

/// Entries returned by [`Client::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBatch {
    /// Consecutive committed entries from the index asked for.
    pub entries: Vec<ClientEntry>,
    /// The member's commit index when it answered.
    pub commit_index: Index,
}

/// A consumer group's offset, from [`Client::consumer_offset`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerOffset {
    /// The group.
    pub group: String,
    /// Its committed offset: the index it reads next.
    pub offset: Index,
    /// Committed entries it has not read yet, as the member answering sees
    /// them.
    pub lag: u64,
}

/// A client of one replica group. Clones share one connection.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    addrs: Vec<String>,
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    connection: Option<Arc<Connection>>,
    /// Where to connect next: a leader named in a redirect, if any.
    redirect: Option<String>,
    /// Which of `addrs` to try next when there is no redirect.
    next_addr: usize,
}

impl Client {
    /// A client of `group` reachable at any of `addrs` (`host:port`); connects
    /// to the first member that answers.
    pub async fn connect(
        addrs: Vec<String>,
        group: impl Into<String>,
    ) -> Result<Client, ClientError> {
        Client::connect_with(addrs, ClientConfig::new(group)).await
    }

    /// As [`Client::connect`], with a full configuration.
    pub async fn connect_with(
        addrs: Vec<String>,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::NoAddresses);
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                addrs,
                state: tokio::sync::Mutex::new(State::default()),
            }),
        };
        let deadline =
            Instant::now() + Duration::from_millis(client.inner.config.retry_deadline_ms);
        let mut backoff = client.backoff();
        loop {
            match client.connection().await {
                Ok(_) => return Ok(client),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry(reason)) => {
                    client.pause(&mut backoff, deadline, reason, 0).await?
                }
            }
        }
    }

    /// Appends `payload` as one entry; returns its index and term once
    /// committed.
    pub async fn append(&self, payload: impl Into<Bytes>) -> Result<(Index, Term), ClientError> {
        self.append_batch(vec![payload.into()]).await
    }

    /// Appends `payloads` as consecutive entries in one request; returns the
    /// first one's index and their term once all are committed.
    pub async fn append_batch(&self, payloads: Vec<Bytes>) -> Result<(Index, Term), ClientError> {
        match self
            .call(ClientRequest::Append { payloads }, false, 0)
            .await?
        {
            ClientResponse::Appended { first_index, term } => Ok((first_index, term)),
            other => Err(ClientError::UnexpectedResponse(format!("{other:?}"))),
        }
    }

    /// Appends each payload as its own entry, keeping up to `in_flight`
    /// requests on the wire at once; returns (index, term) per payload, in
    /// order. Stops at the first failure.
    pub async fn append_many(
        &self,
        payloads: Vec<Bytes>,
        in_flight: usize,
    ) -> Result<Vec<(Index, Term)>, ClientError> {
        let calls = payloads.into_iter().map(|payload| self.append(payload));
        let mut answers = futures_util::stream::iter(calls).buffered(in_flight.max(1));
        let mut results = Vec::new();
        while let Some(answer) = answers.next().await {
            results.push(answer?);
        }
        Ok(results)
    }

    /// The committed entry at `index`. Past the commit index this is
    /// `ClientError::Request(RequestError::NotFound { .. })`; deleted by
    /// retention, `RequestError::Compacted`.
    pub async fn get(&self, index: Index) -> Result<ClientEntry, ClientError> {
        match self.call(ClientRequest::Get { index }, true, 0).await? {
            ClientResponse::Entry(entry) => Ok(entry),
            other => Err(ClientError::UnexpectedResponse(format!("{other:?}"))),
        }
    }

    /// Committed entries from `from`, up to about `max_bytes` of payload,
    /// waiting up to `wait_ms` for a first one.
    pub async fn read(
        &self,
        from: Index,
        max_bytes: u64,
        wait_ms: u64,
    ) -> Result<ReadBatch, ClientError> {
        let request = ClientRequest::Read {
            from,
            max_bytes,
            wait_ms,
        };
        match self.call(request, true, wait_ms).await? {
            ClientResponse::Entries {
                entries,
                commit_index,
            } => Ok(ReadBatch {
                entries,
                commit_index,
            }),
            other => Err(ClientError::UnexpectedResponse(format!("{other:?}"))),
        }
    }

    /// Commits consumer `group`'s offset (the index it reads next) through
    /// the log, on the leader; with `expected`, only if the stored offset is
    /// that one (`Some(0)`: only if the group has none yet). Returns the
    /// offset stored. A condition that did not hold is
    /// `ClientError::Request(RequestError::Conflict { current, .. })`; an
    /// offset below the first retained index or past the commit index + 1,
    /// `RequestError::OutOfRange`; a bad name, `RequestError::BadGroup`.
    pub async fn commit_offset(
        &self,
        group: &str,
        offset: Index,
        expected: Option<Index>,
    ) -> Result<Index, ClientError> {
        let request = ClientRequest::CommitOffset {
            group: group.to_string(),
            offset,
            expected,
        };
        // An unconditional commit sent twice stores the same offset; a
        // conditional one sent twice would answer its own success with a
        // conflict.
        let idempotent = expected.is_none();
        match self.call(request, idempotent, 0).await? {
            ClientResponse::OffsetCommitted { offset, .. } => Ok(offset),
            other => Err(ClientError::UnexpectedResponse(format!("{other:?}"))),
        }
    }

    /// Consumer `group`'s committed offset; `None` when it has none. With
    /// `linearizable`, the answer comes from the leader after it confirmed
    /// its leadership, so it holds every commit acknowledged before the
    /// call; without, from the member the client is connected to, possibly
    /// behind.
    pub async fn consumer_offset(
        &self,
        group: &str,
        linearizable: bool,
    ) -> Result<Option<ConsumerOffset>, ClientError> {
        let request = ClientRequest::ConsumerOffset {
            group: group.to_string(),
            linearizable,
        };
        match self.call(request, true, 0).await {
            Ok(ClientResponse::ConsumerOffset { group, offset, lag }) => {
                Ok(Some(ConsumerOffset { group, offset, lag }))
            }
            Err(ClientError::Request(RequestError::UnknownGroup { .. })) => Ok(None),
            Ok(other) => Err(ClientError::UnexpectedResponse(format!("{other:?}"))),
            Err(error) => Err(error),
        }
    }

    /// The address of the member the client talks to now, if connected.
    pub async fn current_addr(&self) -> Option<String> {
        let state = self.inner.state.lock().await;
        state
            .connection
            .as_ref()
            .filter(|c| !c.is_closed())
            .map(|c| c.addr.clone())
    }

    fn backoff(&self) -> Backoff {
        let config = &self.inner.config;
        Backoff::new(
            config.backoff_initial_ms,
            config.backoff_max_ms.max(config.backoff_initial_ms),
            jitter_seed(),
        )
    }

    /// Sends `request` until it succeeds, fails for good, or the deadline
    /// passes. `idempotent` requests are resent after a lost connection.
    async fn call(
        &self,
        request: ClientRequest,
        idempotent: bool,
        wait_ms: u64,
    ) -> Result<ClientResponse, ClientError> {
        let config = &self.inner.config;
        let body = request
            .encode()
            .map_err(|error| ClientError::UnexpectedResponse(error.to_string()))?;
        if body.len() > config.max_frame_bytes as usize {
            return Err(ClientError::TooLarge {
                bytes: body.len() as u64,
                max_bytes: config.max_frame_bytes,
            });
        }
        let timeout = Duration::from_millis(config.request_timeout_ms.saturating_add(wait_ms));
        let deadline = Instant::now()
            + Duration::from_millis(config.retry_deadline_ms.saturating_add(wait_ms));
        let mut backoff = self.backoff();
        let mut redirects_in_a_row = 0u32;
        loop {
            // A busy server's hint: the next try waits at least this long.
            let mut pause_at_least_ms = 0;
            let connection = match self.connection().await {
                Ok(connection) => connection,
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry(reason)) => {
                    self.pause(&mut backoff, deadline, reason, 0).await?;
                    continue;
                }
            };
            let reason = match connection.call(body.clone(), timeout).await {
                Ok(ClientResponse::Error(error)) => match error {
                    RequestError::NotLeader {
                        leader_addr,
                        leader_id,
                    } => {
                        let reason = format!(
                            "{} is not the leader (leader {leader_id:?})",
                            connection.addr
                        );
                        let redirect = leader_addr.filter(|addr| *addr != connection.addr);
                        let known = redirect.is_some();
                        // Stop using this member, but let the requests already
                        // on the connection get their own answers: closing it
                        // would turn each into "outcome unknown".
                        self.forget(&connection, redirect, false).await;
                        // Follow a named leader at once, but not forever: two
                        // members naming each other must not spin.
                        if known && redirects_in_a_row < 3 {
                            redirects_in_a_row += 1;
                            continue;
                        }
                        reason
                    }
                    error @ RequestError::Busy { retry_after_ms, .. } => {
                        pause_at_least_ms = retry_after_ms.min(config.backoff_max_ms);
                        format!("{}: {error}", connection.addr)
                    }
                    error if error.is_retryable() => format!("{}: {error}", connection.addr),
                    RequestError::Indeterminate { reason } => {
                        return Err(ClientError::Indeterminate { reason })
                    }
                    error => return Err(ClientError::Request(error)),
                },
                Ok(response) => return Ok(response),
                Err(lost) => {
                    self.forget(&connection, None, true).await;
                    if !idempotent {
                        return Err(ClientError::Indeterminate { reason: lost });
                    }
                    lost
                }
            };
            redirects_in_a_row = 0;
            self.pause(&mut backoff, deadline, reason, pause_at_least_ms)
                .await?;
        }
    }

    /// Sleeps the next back-off delay (at least `at_least_ms`), or fails
    /// when it would pass `deadline`.
    async fn pause(
        &self,
        backoff: &mut Backoff,
        deadline: Instant,
        last_error: String,
        at_least_ms: u64,
    ) -> Result<(), ClientError> {
        let delay = Duration::from_millis(backoff.next_delay_ms().max(at_least_ms));
        let now = Instant::now();
        if now + delay > deadline {
            let started = deadline - Duration::from_millis(self.inner.config.retry_deadline_ms);
            return Err(ClientError::DeadlineExceeded {
                elapsed_ms: now.saturating_duration_since(started).as_millis() as u64,
                last_error,
            });
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Drops `connection` if it is still the current one; the next call
    /// connects to `redirect`, or else to the next address in the list.
    async fn forget(&self, connection: &Arc<Connection>, redirect: Option<String>, close: bool) {
        let mut state = self.inner.state.lock().await;
        if state
            .connection
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, connection))
        {
            state.connection = None;
            if redirect.is_none() {
                state.next_addr = (state.next_addr + 1) % self.inner.addrs.len();
            }
        }
        if redirect.is_some() {
            state.redirect = redirect;
        }
        if close {
            connection.close();
        }
    }

    /// The live connection, opening one if needed.
    async fn connection(&self) -> Result<Arc<Connection>, Failure> {
        let mut state = self.inner.state.lock().await;
        if let Some(connection) = state.connection.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        let addr = match state.redirect.take() {
            Some(addr) => addr,
            None => self.inner.addrs[state.next_addr].clone(),
        };
        match Connection::open(addr.clone(), &self.inner.config).await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                state.connection = Some(connection.clone());
                Ok(connection)
            }
            Err(failure) => {
                state.next_addr = (state.next_addr + 1) % self.inner.addrs.len();
                Err(failure)
            }
        }
    }
}

/// What a failed attempt means for the call.
enum Failure {
    /// Give up now.
    Fatal(ClientError),
    /// Try again (another member, later); the reason is kept for the report.
    Retry(String),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<ClientResponse>>>>;

/// One handshaken connection with a writer task and a reader task.
#[derive(Debug)]
struct Connection {
    addr: String,
    requests: mpsc::Sender<Frame>,
    pending: Pending,
    next_request_id: AtomicU64,
    cancel: CancellationToken,
    /// Why it closed, once it has.
    closed_reason: Arc<Mutex<Option<String>>>,
}

impl Connection {
    async fn open(addr: String, config: &ClientConfig) -> Result<Connection, Failure> {
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let hello = Hello::new(
            Role::Client,
            config.group.clone(),
            config.client_name.clone(),
        );
        let opening = async {
            let stream = TcpStream::connect(addr.as_str())
                .await
                .map_err(HandshakeError::from_io)?;
            stream.set_nodelay(true).map_err(HandshakeError::from_io)?;
            let stream = match &config.tls {
                None => Stream::Plain(stream),
                Some(tls) => tls
                    .connect(stream, super::tls::host_of(&addr))
                    .await
                    .map_err(HandshakeError::from_io)?,
            };
            let mut framed = Framed::new(stream, FrameCodec::new(config.max_frame_bytes));
            handshake::connect(&mut framed, &hello).await?;
            let authenticated = match &config.token {
                Some(token) => Some(authenticate(&mut framed, token).await?),
                None => None,
            };
            Ok::<_, HandshakeError>((framed, authenticated))
        };
        let framed = match tokio::time::timeout(timeout, opening).await {
            Err(_) => {
                return Err(Failure::Retry(format!(
                    "connecting to {addr} timed out after {} ms",
                    config.connect_timeout_ms
                )))
            }
            Ok(Err(
                source @ HandshakeError::Refused {
                    code:
                        ErrorCode::WrongGroup
                        | ErrorCode::UnsupportedVersion
                        | ErrorCode::Unauthenticated,
                    ..
                },
            )) => return Err(Failure::Fatal(ClientError::Refused { addr, source })),
            Ok(Err(error)) => return Err(Failure::Retry(format!("{addr}: {error}"))),
            Ok(Ok((_, Some(Err(error))))) => {
                return Err(Failure::Fatal(ClientError::Request(error)))
            }
            Ok(Ok((framed, _))) => framed,
        };
        let (sink, stream) = framed.split();
        let (requests, requests_rx) = mpsc::channel(config.max_in_flight_requests.max(1));
        let pending: Pending = Arc::default();
        let cancel = CancellationToken::new();
        let closed_reason = Arc::new(Mutex::new(None));
        tokio::spawn(write_requests(sink, requests_rx, cancel.clone()));
        tokio::spawn(read_responses(
            stream,
            pending.clone(),
            cancel.clone(),
            closed_reason.clone(),
        ));
        Ok(Connection {
            addr,
            requests,
            pending,
            next_request_id: AtomicU64::new(1),
            cancel,
            closed_reason,
        })
    }

    fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn close(&self) {
        self.cancel.cancel();
    }

    /// Sends one request body and waits for its answer; `Err` carries why
    /// the answer cannot come (the request may have been performed).
    async fn call(&self, body: Bytes, timeout: Duration) -> Result<ClientResponse, String> {
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer_rx) = oneshot::channel();
        match self.pending.lock() {
            Ok(mut pending) => pending.insert(request_id, answer_tx),
            Err(_) => return Err("connection state poisoned".to_string()),
        };
        // The reader clears `pending` after cancelling: a request registered
        // after that would wait for nothing.
        if self.is_closed() {
            if let Ok(mut pending) = self.pending.lock() {
                pending.remove(&request_id);
            }
            return Err(self.closed_reason());
        }
        let frame = Frame::new(FrameType::Request, request_id, body);
        let outcome = tokio::time::timeout(timeout, async {
            if self.requests.send(frame).await.is_err() {
                return Err(self.closed_reason());
            }
            answer_rx.await.map_err(|_| self.closed_reason())
        })
        .await;
        match outcome {
            Ok(answer) => answer,
            Err(_) => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.remove(&request_id);
                }
                // A late answer would be mismatched to nothing; but a server
                // that slow is better left for another member.
                self.close();
                Err(format!(
                    "no answer from {} within {} ms",
                    self.addr,
                    timeout.as_millis()
                ))
            }
        }
    }

    fn closed_reason(&self) -> String {
        let reason = self
            .closed_reason
            .lock()
            .ok()
            .and_then(|reason| reason.clone());
        format!(
            "connection to {} lost: {}",
            self.addr,
            reason.unwrap_or_else(|| "closed".to_string())
        )
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl HandshakeError {
    fn from_io(error: std::io::Error) -> HandshakeError {
        HandshakeError::Frame(error.into())
    }
}

async fn write_requests(
    mut sink: futures_util::stream::SplitSink<Framed<Stream, FrameCodec>, Frame>,
    mut requests: mpsc::Receiver<Frame>,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            first = requests.recv() => first,
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        // Coalesce everything queued into one flush.
        while let Some(frame) = next {
            if sink.feed(frame).await.is_err() {
                cancel.cancel();
                return;
            }
            next = requests.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            cancel.cancel();
            return;
        }
    }
    let _ = sink.close().await;
}

async fn read_responses(
    mut stream: futures_util::stream::SplitStream<Framed<Stream, FrameCodec>>,
    pending: Pending,
    cancel: CancellationToken,
    closed_reason: Arc<Mutex<Option<String>>>,
) {
    let reason = loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break "closed by the client".to_string(),
            next = stream.next() => next,
        };
        let frame = match next {
            None => break "closed by the server".to_string(),
            Some(Err(error)) => break error.to_string(),
            Some(Ok(frame)) => frame,
        };
        match frame.frame_type {
            FrameType::Response => {}
            FrameType::Error => {
                break match handshake::ErrorBody::decode(&frame.body) {
                    Ok(body) => format!(
                        "server closed the connection ({:?}): {}",
                        body.code, body.message
                    ),
                    Err(error) => error.to_string(),
                }
            }
            other => break format!("unexpected {other:?} frame from the server"),
        }
        let response = match ClientResponse::decode(&frame.body) {
            Ok(response) => response,
            Err(error) => break error.to_string(),
        };
        let waiter = pending
            .lock()
            .ok()
            .and_then(|mut pending| pending.remove(&frame.request_id));
        match waiter {
            // The caller may have timed out meanwhile; nothing to do then.
            Some(waiter) => drop(waiter.send(response)),
            None => tracing::debug!(
                request_id = frame.request_id,
                "answer to no pending request"
            ),
        }
    };
    if let Ok(mut closed) = closed_reason.lock() {
        *closed = Some(reason);
    }
    cancel.cancel();
    // Waiters learn of the loss when their sender is dropped.
    if let Ok(mut pending) = pending.lock() {
        pending.clear();
    }
}
