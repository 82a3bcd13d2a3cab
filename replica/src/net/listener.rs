//! The accepting side: a TCP listener that shakes hands with every
//! connection and hands the server a stream of typed [`Inbound`] items.
//!
//! The listener knows nothing of what the server does with them: peer
//! messages arrive as `Inbound::Peer`, client requests as `Inbound::Client`
//! with a [`Responder`] that sends the answer back on the right connection
//! with the right request id. A connection that misbehaves gets an `Error`
//! frame and is closed; every other connection carries on.
//!
//! # How the server uses it
//!
//! ```no_run
//! use dledger_replica::net::client_proto::{ClientRequest, ClientResponse, RequestError};
//! use dledger_replica::net::listener::{Inbound, Listener, ListenerConfig};
//!
//! # #[derive(serde::Deserialize)] struct Message;
//! # async fn run() -> std::io::Result<()> {
//! let mut config = ListenerConfig::new("orders", "orders-0");
//! config.known_peers = dledger_replica::net::handshake::KnownPeers::only(["orders-1", "orders-2"]);
//! let (listener, mut inbound) = Listener::bind::<Message>("0.0.0.0:20911", config).await?;
//! while let Some(item) = inbound.recv().await {
//!     match item {
//!         // Step the consensus core with `message` from member `from`.
//!         Inbound::Peer { from, message } => {}
//!         // Keep `call.responder` until the entry commits, then answer;
//!         // answering is non-blocking and works from any task.
//!         Inbound::Client(call) => match call.request {
//!             ClientRequest::Append { payloads } => {
//!                 call.responder.respond(ClientResponse::Error(RequestError::NotLeader {
//!                     leader_id: Some("orders-1".into()),
//!                     leader_addr: Some("orders-1.orders-peers.default.svc:20911".into()),
//!                 }));
//!             }
//!             _ => {}
//!         },
//!         // Its process most likely exited: stop waiting on it.
//!         Inbound::PeerClosed { from } => {}
//!     }
//! }
//! listener.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::body::decode_peer;
use super::budget::ClientBytes;
use super::client_proto::{ClientRequest, ClientResponse, RequestError};
use super::frame::{Frame, FrameCodec, FrameError, FrameType, DEFAULT_MAX_FRAME_BYTES};
use super::handshake::{self, AcceptPolicy, Credentials, ErrorBody, ErrorCode, KnownPeers, Role};
use super::stream::Stream;
use crate::auth::Right;

/// What one read of an accepted connection may take in. The default 8 KiB
/// held at most 7 pipelined 1 KiB appends per `recvfrom` on a busy leader
/// (bench/profile.md); 64 KiB takes a client's whole window of 64 in one
/// read. Bounded per connection, and connections are bounded in number.
const READ_BUFFER_BYTES: usize = 64 << 10;

pub use super::budget::DEFAULT_MAX_CLIENT_BYTES_IN_FLIGHT;

/// How the listener treats connections.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// This group's name; connections naming another are refused.
    pub group: String,
    /// This member's id.
    pub member_id: String,
    /// This group's id, told to members that connect (empty: none).
    pub group_id: String,
    /// Member ids allowed to connect as peers.
    pub known_peers: KnownPeers,
    /// Largest frame body accepted, in bytes.
    pub max_frame_bytes: u32,
    /// Time a new connection has to complete its handshake.
    pub handshake_timeout_ms: u64,
    /// Requests one client connection may have unanswered; past it the
    /// listener stops reading from that connection (backpressure).
    pub max_in_flight_requests: usize,
    /// Request bytes read and not yet answered, over every client
    /// connection of this listener; past it the listener stops reading
    /// from clients until answers free room. Reading a flood of large
    /// appends only to answer "busy" would take the network thread from
    /// the peers' heartbeats; left in the clients' sockets, it slows the
    /// clients instead.
    pub max_client_bytes_in_flight: usize,
    /// Capacity of the channel to the server, in items.
    pub inbound_capacity: usize,
    /// Connections open at once, peers past their handshake not counted;
    /// past it new connections are closed at once (peers stay reachable:
    /// a handshake that names a peer frees its slot).
    pub max_connections: usize,
    /// TLS for every connection; `None`: plaintext.
    pub tls: Option<super::tls::Tls>,
    /// Who may do what; with TLS, a peer's certificate must name it.
    pub auth: crate::auth::Auth,
    /// Also counts the connections refused for their credentials
    /// (`ListenerStats::unauthenticated`), for the member's metrics.
    pub unauthenticated_counter: Option<prometheus::IntCounter>,
}

impl ListenerConfig {
    /// Defaults for `member_id` of `group`.
    pub fn new(group: impl Into<String>, member_id: impl Into<String>) -> ListenerConfig {
        ListenerConfig {
            group: group.into(),
            member_id: member_id.into(),
            group_id: String::new(),
            known_peers: KnownPeers::any(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout_ms: 5_000,
            max_in_flight_requests: 1024,
            max_client_bytes_in_flight: DEFAULT_MAX_CLIENT_BYTES_IN_FLIGHT,
            inbound_capacity: 4096,
            max_connections: 1024,
            tls: None,
            auth: crate::auth::Auth::open(),
            unauthenticated_counter: None,
        }
    }
}

/// Something that arrived for the server.
#[derive(Debug)]
pub enum Inbound<T> {
    /// A consensus message from another member.
    Peer {
        /// The sender's member id, as it gave it in the handshake.
        from: String,
        /// The message.
        message: T,
    },
    /// A client request, to be answered through its responder.
    Client(ClientCall),
    /// The peer closed its connection or it was reset: its process most
    /// likely exited (a network partition closes nothing).
    PeerClosed {
        /// The peer's member id, as it gave it in the handshake.
        from: String,
    },
}

/// One client request and the way to answer it.
#[derive(Debug)]
pub struct ClientCall {
    /// What the client asks.
    pub request: ClientRequest,
    /// Where the answer goes.
    pub responder: Responder,
}

/// Sends the answer to one client request. Dropping it unanswered answers
/// for it, so a client never waits forever on a lost request: `Unavailable`
/// (retry) for reads, `Indeterminate` for appends, since the server may
/// have appended the entry before losing track of the request.
#[derive(Debug)]
pub struct Responder {
    request_id: u64,
    on_drop: Option<RequestError>,
    client: Arc<str>,
    sender: Option<mpsc::Sender<Outgoing>>,
    permit: Option<OwnedSemaphorePermit>,
    /// The request's share of `max_client_bytes_in_flight`, given back
    /// when it is answered.
    bytes: Option<OwnedSemaphorePermit>,
}

impl Responder {
    /// The id the client gave the request.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// The name the client gave in its handshake.
    pub fn client_name(&self) -> &str {
        &self.client
    }

    /// Whether the client's connection is gone (answering is then useless).
    pub fn is_closed(&self) -> bool {
        self.sender.as_ref().is_none_or(|sender| sender.is_closed())
    }

    /// Sends `response`; false when the connection is already closed.
    /// Never blocks: the connection reserved room for this answer when it
    /// read the request.
    pub fn respond(mut self, response: ClientResponse) -> bool {
        self.send(response)
    }

    fn send(&mut self, response: ClientResponse) -> bool {
        drop(self.bytes.take());
        let (Some(sender), Some(permit)) = (self.sender.take(), self.permit.take()) else {
            return false;
        };
        let outgoing = Outgoing::Response {
            request_id: self.request_id,
            response,
            _permit: permit,
        };
        // Room is guaranteed: the channel holds one slot per permit, plus
        // one for the final error.
        sender.try_send(outgoing).is_ok()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(error) = self.on_drop.take() {
            self.send(ClientResponse::Error(error));
        }
    }
}

#[derive(Debug)]
enum Outgoing {
    Response {
        request_id: u64,
        response: ClientResponse,
        _permit: OwnedSemaphorePermit,
    },
    Fatal(ErrorBody),
}

/// Counters of a listener, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// Connections whose handshake failed (refused, timed out, garbage).
    pub handshakes_failed: u64,
    /// Connections closed after an error past the handshake.
    pub connections_failed: u64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: u64,
    /// Peer messages handed to the server.
    pub peer_messages: u64,
    /// Client requests handed to the server.
    pub client_requests: u64,
    /// Connections refused for their credentials: a failed TLS handshake
    /// (no certificate from the CA), or a peer certificate that does not
    /// name the member, or a client without one (counted in
    /// `handshakes_failed` too).
    pub unauthenticated: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections_accepted: AtomicU64,
    handshakes_failed: AtomicU64,
    connections_failed: AtomicU64,
    connections_refused: AtomicU64,
    peer_messages: AtomicU64,
    client_requests: AtomicU64,
    unauthenticated: AtomicU64,
}

/// A running listener. Dropping it (or [`Listener::shutdown`]) stops
/// accepting and closes every connection it accepted.
#[derive(Debug)]
pub struct Listener {
    local_addr: SocketAddr,
    cancel: CancellationToken,
    accept_task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    client_bytes: ClientBytes,
}

impl Listener {
    /// Binds `addr` and starts accepting; items for the server arrive on the
    /// returned receiver. `T` is the peer message type.
    pub async fn bind<T>(
        addr: &str,
        config: ListenerConfig,
    ) -> std::io::Result<(Listener, mpsc::Receiver<Inbound<T>>)>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let socket = TcpListener::bind(addr).await?;
        Listener::start(socket, config)
    }

    /// Starts accepting on an already bound socket.
    pub fn start<T>(
        socket: TcpListener,
        config: ListenerConfig,
    ) -> std::io::Result<(Listener, mpsc::Receiver<Inbound<T>>)>
    where
        T: DeserializeOwned + Send + 'static,
    {
        assert!(
            config.max_in_flight_requests > 0,
            "max_in_flight_requests must be positive"
        );
        assert!(
            config.inbound_capacity > 0,
            "inbound_capacity must be positive"
        );
        assert!(
            config.max_connections > 0,
            "max_connections must be positive"
        );
        let local_addr = socket.local_addr()?;
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_capacity);
        let cancel = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
        let client_bytes = ClientBytes::new(config.max_client_bytes_in_flight);
        let context = Arc::new(Context {
            client_bytes: client_bytes.clone(),
            config,
            connections,
            inbound: inbound_tx,
            cancel: cancel.clone(),
            counters: counters.clone(),
        });
        let accept_task = tokio::spawn(accept_loop(socket, context));
        let listener = Listener {
            local_addr,
            cancel,
            accept_task: Some(accept_task),
            counters,
            client_bytes,
        };
        Ok((listener, inbound_rx))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The client bytes budget its client connections read within, for
    /// the other front end (HTTP) to share.
    pub fn client_bytes(&self) -> ClientBytes {
        self.client_bytes.clone()
    }

    /// Its counters so far.
    pub fn stats(&self) -> ListenerStats {
        let c = &self.counters;
        ListenerStats {
            connections_accepted: c.connections_accepted.load(Ordering::Relaxed),
            handshakes_failed: c.handshakes_failed.load(Ordering::Relaxed),
            connections_failed: c.connections_failed.load(Ordering::Relaxed),
            connections_refused: c.connections_refused.load(Ordering::Relaxed),
            peer_messages: c.peer_messages.load(Ordering::Relaxed),
            client_requests: c.client_requests.load(Ordering::Relaxed),
            unauthenticated: c.unauthenticated.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, closes every connection, and waits until the port
    /// is released.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.accept_task.take() {
            if let Err(error) = task.await {
                tracing::warn!(%error, "listener accept task failed");
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Context<T> {
    config: ListenerConfig,
    /// `max_client_bytes_in_flight`, shared with the HTTP front end.
    client_bytes: ClientBytes,
    /// One permit per open connection (see `max_connections`).
    connections: Arc<tokio::sync::Semaphore>,
    inbound: mpsc::Sender<Inbound<T>>,
    cancel: CancellationToken,
    counters: Arc<Counters>,
}

impl<T> Context<T> {
    fn count_unauthenticated(&self) {
        self.counters
            .unauthenticated
            .fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = &self.config.unauthenticated_counter {
            counter.inc();
        }
    }
}

async fn accept_loop<T>(socket: TcpListener, context: Arc<Context<T>>)
where
    T: DeserializeOwned + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = context.cancel.cancelled() => return,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                let Ok(permit) = context.connections.clone().try_acquire_owned() else {
                    context
                        .counters
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, "too many connections; closed at once");
                    drop(stream);
                    continue;
                };
                context
                    .counters
                    .connections_accepted
                    .fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_connection(stream, remote, context.clone(), permit));
            }
            Err(error) => {
                // Usually out of file descriptors: pause rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection<T>(
    stream: TcpStream,
    remote: SocketAddr,
    context: Arc<Context<T>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    T: DeserializeOwned + Send + 'static,
{
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%remote, %error, "could not set TCP_NODELAY");
    }
    let config = &context.config;
    let timeout = Duration::from_millis(config.handshake_timeout_ms);
    let stream = match &config.tls {
        None => Stream::Plain(stream),
        Some(_) if speaks_plaintext(&stream, timeout).await => {
            // One of our own clients without TLS: tell it in its own
            // protocol, so it stops at once with the reason instead of
            // retrying a connection that closes.
            context.count_unauthenticated();
            tracing::info!(%remote, "a plaintext connection to a TLS port; refused");
            let mut framed = Framed::new(stream, FrameCodec::new(config.max_frame_bytes));
            handshake::send_error(
                &mut framed,
                ErrorCode::Unauthenticated,
                "this member requires TLS: give the group's CA and a client certificate".into(),
            )
            .await;
            return;
        }
        Some(tls) => match tokio::time::timeout(timeout, tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            outcome => {
                let error = match outcome {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no TLS handshake within {} ms", config.handshake_timeout_ms),
                };
                context
                    .counters
                    .handshakes_failed
                    .fetch_add(1, Ordering::Relaxed);
                context.count_unauthenticated();
                tracing::info!(%remote, %error, "TLS handshake failed; connection closed");
                return;
            }
        },
    };
    let credentials = match (&config.tls, config.auth.is_open()) {
        (Some(_), _) => Credentials::Tls(stream.peer_certificate().cloned()),
        (None, true) => Credentials::NotRequired,
        (None, false) => Credentials::Plaintext,
    };
    // What a client connection may do before any `Authenticate`.
    let client_right = match &credentials {
        Credentials::NotRequired => Some(Right::Admin),
        Credentials::Tls(Some(certificate)) => Some(config.auth.right_of_certificate(certificate)),
        Credentials::Tls(None) | Credentials::Plaintext => None,
    };
    let mut framed = Framed::with_capacity(
        stream,
        FrameCodec::new(config.max_frame_bytes),
        READ_BUFFER_BYTES,
    );
    let policy = AcceptPolicy {
        group: config.group.clone(),
        member_id: config.member_id.clone(),
        group_id: config.group_id.clone(),
        known_peers: config.known_peers.clone(),
        credentials,
        clients_may_use_tokens: config.auth.has_token_file(),
    };
    let hello = match tokio::time::timeout(timeout, handshake::accept(&mut framed, &policy)).await {
        Ok(Ok((hello, _version))) => hello,
        Ok(Err(error)) => {
            context
                .counters
                .handshakes_failed
                .fetch_add(1, Ordering::Relaxed);
            if matches!(
                error,
                handshake::HandshakeError::Rejected {
                    code: ErrorCode::Unauthenticated,
                    ..
                }
            ) {
                context.count_unauthenticated();
            }
            tracing::info!(%remote, %error, "handshake failed; connection closed");
            return;
        }
        Err(_) => {
            context
                .counters
                .handshakes_failed
                .fetch_add(1, Ordering::Relaxed);
            let message = format!("no handshake within {} ms", config.handshake_timeout_ms);
            tracing::info!(%remote, "{message}; connection closed");
            handshake::send_error(&mut framed, ErrorCode::Protocol, message).await;
            return;
        }
    };
    let outcome = match hello.role {
        Role::Peer => {
            // Known peers passed the handshake's checks: never crowded out.
            drop(permit);
            serve_peer(framed, hello.member_id, &context).await
        }
        Role::Client => {
            let outcome =
                serve_client(framed, hello.member_id.into(), client_right, &context).await;
            drop(permit);
            outcome
        }
    };
    if let Err(error) = outcome {
        context
            .counters
            .connections_failed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(%remote, %error, "connection closed");
    }
}

/// Whether the connection's first bytes are a plaintext frame (our magic)
/// rather than a TLS record; waits at most `timeout` for them.
async fn speaks_plaintext(stream: &TcpStream, timeout: Duration) -> bool {
    let mut first = [0u8; 4];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(read)) if read >= first.len() => return first == super::frame::MAGIC,
            // Closed, or no more than a few bytes yet: a TLS client hello
            // would have begun otherwise; let the TLS handshake decide.
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(read)) if first[..read] != super::frame::MAGIC[..read] => return false,
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// Why a connection was closed past its handshake.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{message}")]
    Protocol { code: ErrorCode, message: String },
}

impl ConnectionError {
    fn error_body(&self) -> Option<ErrorBody> {
        match self {
            ConnectionError::Frame(FrameError::Io(_))
            | ConnectionError::Frame(FrameError::Truncated { .. }) => None,
            ConnectionError::Frame(error @ FrameError::TooLarge { .. }) => Some(ErrorBody {
                code: ErrorCode::TooLarge,
                message: error.to_string(),
            }),
            ConnectionError::Frame(error) => Some(ErrorBody {
                code: ErrorCode::Protocol,
                message: error.to_string(),
            }),
            ConnectionError::Protocol { code, message } => Some(ErrorBody {
                code: *code,
                message: message.clone(),
            }),
        }
    }
}

fn unexpected(frame: &Frame, role: &str) -> ConnectionError {
    ConnectionError::Protocol {
        code: ErrorCode::Protocol,
        message: format!(
            "unexpected {:?} frame on a {role} connection",
            frame.frame_type
        ),
    }
}

async fn serve_peer<T>(
    mut framed: Framed<Stream, FrameCodec>,
    from: String,
    context: &Context<T>,
) -> Result<(), ConnectionError>
where
    T: DeserializeOwned,
{
    let outcome = loop {
        let next = tokio::select! {
            _ = context.cancel.cancelled() => {
                handshake::send_error(&mut framed, ErrorCode::ShuttingDown, "the member is shutting down".into()).await;
                return Ok(());
            }
            next = framed.next() => next,
        };
        let frame = match next {
            None | Some(Err(FrameError::Io(_) | FrameError::Truncated { .. })) => {
                // Closed or reset by the other side: tell the server at once,
                // it may be a dead leader.
                let _ = context
                    .inbound
                    .send(Inbound::PeerClosed { from: from.clone() })
                    .await;
                match next {
                    Some(Err(error)) => break Err(ConnectionError::from(error)),
                    _ => break Ok(()),
                }
            }
            Some(Err(error)) => break Err(ConnectionError::from(error)),
            Some(Ok(frame)) => frame,
        };
        if frame.frame_type != FrameType::Peer {
            break Err(unexpected(&frame, "peer"));
        }
        let message = match decode_peer::<T>(&frame.body) {
            Ok(message) => message,
            Err(error) => {
                break Err(ConnectionError::Protocol {
                    code: ErrorCode::Protocol,
                    message: error.to_string(),
                })
            }
        };
        context
            .counters
            .peer_messages
            .fetch_add(1, Ordering::Relaxed);
        let item = Inbound::Peer {
            from: from.clone(),
            message,
        };
        // Awaiting here is the backpressure: a slow server slows the peer.
        if context.inbound.send(item).await.is_err() {
            handshake::send_error(
                &mut framed,
                ErrorCode::ShuttingDown,
                "the member is shutting down".into(),
            )
            .await;
            return Ok(());
        }
    };
    if let Err(error) = &outcome {
        if let Some(body) = error.error_body() {
            handshake::send_error(&mut framed, body.code, body.message).await;
        }
    }
    outcome
}

async fn serve_client<T>(
    framed: Framed<Stream, FrameCodec>,
    client: Arc<str>,
    mut right: Option<Right>,
    context: &Context<T>,
) -> Result<(), ConnectionError> {
    let max_in_flight = context.config.max_in_flight_requests;
    let codec = *framed.codec();
    let (sink, mut stream) = framed.split();
    // One slot per in-flight permit plus one for the closing error frame, so
    // `Responder::respond` never finds the channel full.
    let (out_tx, out_rx) = mpsc::channel(max_in_flight + 1);
    let writer = tokio::spawn(write_responses(sink, out_rx, codec, context.cancel.clone()));
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let outcome = loop {
        let permit = tokio::select! {
            _ = context.cancel.cancelled() => break Ok(()),
            permit = permits.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else {
            break Ok(());
        };
        let next = tokio::select! {
            _ = context.cancel.cancelled() => break Ok(()),
            next = stream.next() => next,
        };
        let frame = match next {
            None => break Ok(()),
            Some(Err(error)) => break Err(ConnectionError::from(error)),
            Some(Ok(frame)) => frame,
        };
        if frame.frame_type != FrameType::Request {
            break Err(unexpected(&frame, "client"));
        }
        // Read one request past the budget at most: the next read waits
        // for answers to give bytes back. A request larger than the whole
        // budget takes all of it.
        let bytes = tokio::select! {
            _ = context.cancel.cancelled() => break Ok(()),
            bytes = context.client_bytes.acquire(frame.body.len()) => bytes,
        };
        let Some(bytes) = bytes else {
            break Ok(());
        };
        let mut responder = Responder {
            request_id: frame.request_id,
            on_drop: Some(RequestError::Unavailable {
                reason: "the server dropped the request without answering".to_string(),
            }),
            client: client.clone(),
            sender: Some(out_tx.clone()),
            permit: Some(permit),
            bytes: Some(bytes),
        };
        let request = match ClientRequest::decode(&frame.body) {
            Ok(request) => request,
            Err(error) => {
                // A bad body spoils one request, not the connection: the
                // framing is intact.
                responder.send(ClientResponse::Error(RequestError::BadRequest {
                    reason: error.to_string(),
                }));
                continue;
            }
        };
        match (&request, request.needed_right(), right) {
            (ClientRequest::Authenticate { token }, _, _) => {
                let answer = match context.config.auth.right_of_token(token.as_bytes()) {
                    Some(given) => {
                        right = Some(given);
                        ClientResponse::Authenticated {
                            right: given.name().to_string(),
                        }
                    }
                    None => {
                        context.count_unauthenticated();
                        ClientResponse::Error(RequestError::Unauthenticated {
                            reason: "the token is not known".into(),
                        })
                    }
                };
                responder.send(answer);
                continue;
            }
            (_, Some(_), None) => {
                responder.send(ClientResponse::Error(RequestError::Unauthenticated {
                    reason: "send Authenticate with a token first, or connect with a client \
                             certificate from the group's CA"
                        .into(),
                }));
                continue;
            }
            (_, Some(needed), Some(held)) if held < needed => {
                responder.send(ClientResponse::Error(RequestError::Forbidden {
                    reason: format!(
                        "this credential has the {} right; this needs {}",
                        held.name(),
                        needed.name()
                    ),
                }));
                continue;
            }
            _ => {}
        }
        if let ClientRequest::Append { .. } = request {
            responder.on_drop = Some(RequestError::Indeterminate {
                reason: "the server dropped the append without answering".to_string(),
            });
        }
        context
            .counters
            .client_requests
            .fetch_add(1, Ordering::Relaxed);
        let call = ClientCall { request, responder };
        if let Err(mpsc::error::SendError(Inbound::Client(call))) =
            context.inbound.send(Inbound::Client(call)).await
        {
            call.responder
                .respond(ClientResponse::Error(RequestError::Unavailable {
                    reason: "the member is shutting down".to_string(),
                }));
        }
    };
    if context.cancel.is_cancelled() {
        let body = ErrorBody {
            code: ErrorCode::ShuttingDown,
            message: "the member is shutting down".to_string(),
        };
        let _ = out_tx.try_send(Outgoing::Fatal(body));
    } else if let Err(error) = &outcome {
        if let Some(body) = error.error_body() {
            let _ = out_tx.try_send(Outgoing::Fatal(body));
        }
    }
    // The writer ends once every responder has answered or been dropped.
    drop(out_tx);
    if let Err(error) = writer.await {
        tracing::warn!(%error, "response writer failed");
    }
    outcome
}

async fn write_responses(
    mut sink: futures_util::stream::SplitSink<Framed<Stream, FrameCodec>, Frame>,
    mut out_rx: mpsc::Receiver<Outgoing>,
    codec: FrameCodec,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            // On shutdown, keep writing only what is already queued.
            _ = cancel.cancelled(), if out_rx.is_empty() => None,
            first = out_rx.recv() => first,
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        // Coalesce what is queued into one flush.
        while let Some(outgoing) = next {
            let (frame, fatal) = response_frame(outgoing, &codec);
            if let Err(error) = sink.feed(frame).await {
                tracing::debug!(%error, "writing responses failed");
                return;
            }
            if fatal {
                let _ = sink.close().await;
                return;
            }
            next = out_rx.try_recv().ok();
        }
        if let Err(error) = sink.flush().await {
            tracing::debug!(%error, "flushing responses failed");
            return;
        }
    }
    let _ = sink.close().await;
}

/// The frame for `outgoing`, and whether the connection closes after it.
fn response_frame(outgoing: Outgoing, codec: &FrameCodec) -> (Frame, bool) {
    match outgoing {
        Outgoing::Fatal(body) => (body.to_frame(), true),
        Outgoing::Response {
            request_id,
            response,
            ..
        } => {
            let body = match response.encode() {
                Ok(body) if body.len() <= codec.max_frame_bytes() as usize => body,
                Ok(body) => error_response(RequestError::TooLarge {
                    bytes: body.len() as u64,
                    max_bytes: u64::from(codec.max_frame_bytes()),
                }),
                Err(error) => error_response(RequestError::Unavailable {
                    reason: error.to_string(),
                }),
            };
            (Frame::new(FrameType::Response, request_id, body), false)
        }
    }
}

fn error_response(error: RequestError) -> bytes::Bytes {
    match ClientResponse::Error(error).encode() {
        Ok(body) => body,
        // Plain enums of strings and integers always serialize.
        Err(error) => panic!("an error response failed to encode: {error}"),
    }
}
