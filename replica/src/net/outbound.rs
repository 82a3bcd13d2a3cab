//! The sending side towards one peer: a connection that keeps itself up.
//!
//! A [`PeerLink`] owns one TCP connection to one peer, re-resolving the
//! peer's host name at every attempt (pods move) and reconnecting with
//! capped exponential back-off and jitter. Messages go through a bounded
//! queue: when it is full, or when the peer cannot be reached, messages are
//! dropped and counted rather than piling up, since Raft retransmits what
//! matters. Queued frames are coalesced into one write, flushed when the
//! queue drains. Messages from the peer come on *its* link to our listener.

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::backoff::{jitter_seed, Backoff};
use super::body::{encode_peer_after, BodyError};
use super::frame::HEADER_BYTES;
use super::frame::{
    Frame, FrameCodec, FrameError, FrameType, WireVersion, DEFAULT_MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
use super::handshake::{self, ErrorBody, HandshakeError, Hello, Role};
use super::stream::Stream;

/// The most room a frame's buffer starts with (see `PeerLink::send`).
const MAX_CAPACITY_HINT_BYTES: usize = 1 << 20;

/// Turns a `host:port` into socket addresses, at every connection attempt.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses `addr` stands for now.
    fn resolve<'a>(
        &'a self,
        addr: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The system resolver (`tokio::net::lookup_host`).
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsResolver;

impl Resolver for DnsResolver {
    fn resolve<'a>(
        &'a self,
        addr: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host(addr).await?.collect()) })
    }
}

/// How a link connects and queues.
#[derive(Clone, Debug)]
pub struct PeerLinkConfig {
    /// The group both members belong to.
    pub group: String,
    /// This member's id, sent in the handshake.
    pub member_id: String,
    /// This group's id: a peer whose `HelloOk` names another is not
    /// connected to (empty: not checked).
    pub group_id: String,
    /// Largest frame body sent, in bytes.
    pub max_frame_bytes: u32,
    /// Messages queued at most; further ones are dropped.
    pub queue_capacity: usize,
    /// Bytes queued at most; further messages are dropped.
    pub max_queued_bytes: usize,
    /// Time allowed for the TCP connect, per address.
    pub connect_timeout_ms: u64,
    /// Time allowed for the handshake.
    pub handshake_timeout_ms: u64,
    /// First reconnect delay.
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay.
    pub backoff_max_ms: u64,
    /// Bytes buffered before a write is forced, while coalescing.
    pub write_buffer_bytes: usize,
    /// TLS to the peer (whose certificate must name it); `None`: plaintext.
    pub tls: Option<super::tls::Tls>,
}

impl PeerLinkConfig {
    /// Defaults for member `member_id` of `group`.
    pub fn new(group: impl Into<String>, member_id: impl Into<String>) -> PeerLinkConfig {
        PeerLinkConfig {
            group: group.into(),
            member_id: member_id.into(),
            group_id: String::new(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            queue_capacity: 4096,
            max_queued_bytes: 64 * 1024 * 1024,
            connect_timeout_ms: 1_000,
            handshake_timeout_ms: 2_000,
            backoff_initial_ms: 50,
            backoff_max_ms: 2_000,
            write_buffer_bytes: 256 * 1024,
            tls: None,
        }
    }
}

/// Why a message was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The queue is full (counted in [`PeerLinkStats::dropped_queue_full`]).
    #[error("queue to peer {peer_id} is full; message dropped")]
    QueueFull {
        /// The peer.
        peer_id: String,
    },
    /// The message does not serialize.
    #[error(transparent)]
    Encode(#[from] BodyError),
    /// The message is larger than a frame may be.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The link was shut down.
    #[error("link to peer {peer_id} is shut down")]
    Closed {
        /// The peer.
        peer_id: String,
    },
    /// The peer runs an older build that cannot decode this message
    /// (counted in [`PeerLinkStats::dropped_old_peer`]).
    #[error("peer {peer_id} speaks protocol version {speaks}; this message needs {needs}")]
    PeerTooOld {
        /// The peer.
        peer_id: String,
        /// The version the message needs.
        needs: u8,
        /// The version the peer speaks.
        speaks: u8,
    },
}

/// Counters and state of a link, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerLinkStats {
    /// Whether a handshaken connection is up.
    pub connected: bool,
    /// Connection attempts so far (each resolves the name anew).
    pub connect_attempts: u64,
    /// Attempts that ended with a handshaken connection.
    pub connections_established: u64,
    /// Messages written to a connection.
    pub messages_sent: u64,
    /// Messages dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because the peer could not be reached.
    pub dropped_unreachable: u64,
    /// Messages not sent because the peer speaks an older protocol version
    /// than they need.
    pub dropped_old_peer: u64,
    /// The protocol version of the last handshake (0: none yet).
    pub peer_version: u8,
    /// The last reconnect delay, in milliseconds.
    pub last_backoff_ms: u64,
    /// Why the last attempt or connection failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    connected: AtomicBool,
    connect_attempts: AtomicU64,
    connections_established: AtomicU64,
    messages_sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_unreachable: AtomicU64,
    dropped_old_peer: AtomicU64,
    /// The version the last handshake agreed on; 0 before any.
    peer_version: AtomicU8,
    last_backoff_ms: AtomicU64,
    queued_bytes: AtomicUsize,
    /// How much room the next frame's buffer starts with.
    last_frame_bytes: AtomicUsize,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn set_error(&self, error: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error);
        }
    }
}

/// A self-healing connection to one peer, carrying messages of type `T`.
/// Dropping it stops the connection.
#[derive(Debug)]
pub struct PeerLink<T> {
    peer_id: String,
    queue: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    codec: FrameCodec,
    max_queued_bytes: usize,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    _message: PhantomData<fn(&T)>,
}

impl<T: Serialize + WireVersion> PeerLink<T> {
    /// Starts a link to `peer_id` at `addr` (`host:port`), resolved by the
    /// system resolver. Must be called inside a tokio runtime.
    pub fn spawn(
        peer_id: impl Into<String>,
        addr: impl Into<String>,
        config: PeerLinkConfig,
    ) -> PeerLink<T> {
        PeerLink::spawn_with_resolver(peer_id, addr, config, Arc::new(DnsResolver))
    }

    /// Starts a link using `resolver` for names.
    ///
    /// # Panics
    /// If the configuration has a zero queue or an invalid back-off.
    pub fn spawn_with_resolver(
        peer_id: impl Into<String>,
        addr: impl Into<String>,
        config: PeerLinkConfig,
        resolver: Arc<dyn Resolver>,
    ) -> PeerLink<T> {
        assert!(config.queue_capacity > 0, "queue_capacity must be positive");
        let peer_id = peer_id.into();
        let (queue, queue_rx) = mpsc::channel(config.queue_capacity);
        let shared = Arc::new(Shared::default());
        let cancel = CancellationToken::new();
        let codec = FrameCodec::new(config.max_frame_bytes);
        let max_queued_bytes = config.max_queued_bytes;
        let backoff = Backoff::new(
            config.backoff_initial_ms,
            config.backoff_max_ms,
            jitter_seed(),
        );
        let driver = Driver {
            peer_id: peer_id.clone(),
            addr: addr.into(),
            config,
            resolver,
            shared: shared.clone(),
            queue: queue_rx,
            cancel: cancel.clone(),
            backoff,
        };
        PeerLink {
            peer_id,
            queue,
            shared,
            codec,
            max_queued_bytes,
            cancel,
            task: Some(tokio::spawn(driver.run())),
            _message: PhantomData,
        }
    }

    /// Queues `message` for the peer without waiting. A full queue drops it
    /// (and counts it); delivery is never guaranteed.
    pub fn send(&self, message: &T) -> Result<(), SendError> {
        let needs = message.wire_version().max(PROTOCOL_VERSION);
        let speaks = self.shared.peer_version.load(Ordering::Relaxed);
        if needs > PROTOCOL_VERSION && speaks != 0 && speaks < needs {
            self.shared.dropped_old_peer.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::PeerTooOld {
                peer_id: self.peer_id.clone(),
                needs,
                speaks,
            });
        }
        // Serialized once, into a buffer that has the frame header's room
        // and, mostly, the size the last frame to this peer needed.
        let capacity_bytes = self.shared.last_frame_bytes.load(Ordering::Relaxed);
        let mut buf = Vec::with_capacity(capacity_bytes.max(HEADER_BYTES + 64));
        buf.resize(HEADER_BYTES, 0);
        let buf = encode_peer_after(message, buf)?;
        // The header says what the body needs: the link checks it again
        // against the peer of the connection it is written to.
        let frame = self.codec.seal(FrameType::Peer, needs, 0, buf)?;
        let len = frame.len();
        // The hint follows the largest recent frame down slowly (an Append
        // between two heartbeats keeps its size), capped so that one huge
        // Append does not make every later heartbeat allocate as much.
        let hint_bytes = len.max(capacity_bytes - capacity_bytes / 8);
        self.shared
            .last_frame_bytes
            .store(hint_bytes.min(MAX_CAPACITY_HINT_BYTES), Ordering::Relaxed);
        let queued = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if queued + len > self.max_queued_bytes {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(self.dropped());
        }
        match self.queue.try_send(frame) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                match error {
                    mpsc::error::TrySendError::Full(_) => Err(self.dropped()),
                    mpsc::error::TrySendError::Closed(_) => Err(SendError::Closed {
                        peer_id: self.peer_id.clone(),
                    }),
                }
            }
        }
    }

    fn dropped(&self) -> SendError {
        self.shared
            .dropped_queue_full
            .fetch_add(1, Ordering::Relaxed);
        SendError::QueueFull {
            peer_id: self.peer_id.clone(),
        }
    }
}

impl<T> PeerLink<T> {
    /// The peer's member id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Its counters and state now.
    pub fn stats(&self) -> PeerLinkStats {
        let s = &self.shared;
        PeerLinkStats {
            connected: s.connected.load(Ordering::Relaxed),
            connect_attempts: s.connect_attempts.load(Ordering::Relaxed),
            connections_established: s.connections_established.load(Ordering::Relaxed),
            messages_sent: s.messages_sent.load(Ordering::Relaxed),
            dropped_queue_full: s.dropped_queue_full.load(Ordering::Relaxed),
            dropped_unreachable: s.dropped_unreachable.load(Ordering::Relaxed),
            dropped_old_peer: s.dropped_old_peer.load(Ordering::Relaxed),
            peer_version: s.peer_version.load(Ordering::Relaxed),
            last_backoff_ms: s.last_backoff_ms.load(Ordering::Relaxed),
            last_error: s.last_error.lock().ok().and_then(|last| last.clone()),
        }
    }

    /// Closes the connection and waits for the link's task to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::warn!(%error, "peer link task failed");
            }
        }
    }
}

impl<T> Drop for PeerLink<T> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Why a connection attempt or a connection failed.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} resolves to no address")]
    NoAddress { addr: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {timeout_ms} ms")]
    ConnectTimeout { addr: SocketAddr, timeout_ms: u64 },
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: HandshakeError,
    },
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}'s certificate does not name member {expected:?}")]
    WrongCertificate { addr: SocketAddr, expected: String },
    #[error("handshake with {addr} timed out after {timeout_ms} ms")]
    HandshakeTimeout { addr: SocketAddr, timeout_ms: u64 },
    #[error("{addr} is member {got:?}, not {expected:?}")]
    WrongMember {
        addr: SocketAddr,
        expected: String,
        got: String,
    },
    #[error(
        "{addr} is member {peer:?} of group id {got:?}, not of this group's id {expected:?}: \
         another group of the same name (recreated, or a stale volume); not connecting"
    )]
    WrongGroupId {
        addr: SocketAddr,
        peer: String,
        expected: String,
        got: String,
    },
    #[error("connection failed: {0}")]
    Frame(#[from] FrameError),
    #[error("peer closed the connection")]
    ClosedByPeer,
    #[error("peer closed the connection: {0}")]
    Refused(String),
    #[error("peer sent an unexpected {0:?} frame")]
    Unexpected(FrameType),
}

struct Driver {
    peer_id: String,
    addr: String,
    config: PeerLinkConfig,
    resolver: Arc<dyn Resolver>,
    shared: Arc<Shared>,
    queue: mpsc::Receiver<Bytes>,
    cancel: CancellationToken,
    backoff: Backoff,
}

impl Driver {
    async fn run(mut self) {
        loop {
            self.shared.connect_attempts.fetch_add(1, Ordering::Relaxed);
            let attempt = tokio::select! {
                _ = self.cancel.cancelled() => return,
                attempt = self.connect() => attempt,
            };
            match attempt {
                Ok(framed) => {
                    self.shared
                        .connections_established
                        .fetch_add(1, Ordering::Relaxed);
                    self.shared.connected.store(true, Ordering::Relaxed);
                    self.backoff.reset();
                    let outcome = self.pump(framed).await;
                    self.shared.connected.store(false, Ordering::Relaxed);
                    match outcome {
                        Ok(()) => return,
                        Err(error) => {
                            tracing::info!(addr = %self.addr, %error, "peer connection lost");
                            self.shared.set_error(error.to_string());
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(addr = %self.addr, %error, "peer connection attempt failed");
                    self.shared.set_error(error.to_string());
                    self.drop_queued();
                }
            }
            let delay_ms = self.backoff.next_delay_ms();
            self.shared
                .last_backoff_ms
                .store(delay_ms, Ordering::Relaxed);
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            }
        }
    }

    /// Drops what was queued for a peer we cannot reach: by the time it
    /// answers, the consensus core will have sent fresher messages.
    fn drop_queued(&mut self) {
        while let Ok(frame) = self.queue.try_recv() {
            self.dequeued(&frame);
            self.shared
                .dropped_unreachable
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn dequeued(&self, frame: &Bytes) {
        self.shared
            .queued_bytes
            .fetch_sub(frame.len(), Ordering::AcqRel);
    }

    async fn connect(&self) -> Result<Framed<Stream, FrameCodec>, LinkError> {
        let addrs =
            self.resolver
                .resolve(&self.addr)
                .await
                .map_err(|source| LinkError::Resolve {
                    addr: self.addr.clone(),
                    source,
                })?;
        let mut last_error = LinkError::NoAddress {
            addr: self.addr.clone(),
        };
        for addr in addrs {
            match self.connect_to(addr).await {
                Ok(framed) => return Ok(framed),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    async fn connect_to(&self, addr: SocketAddr) -> Result<Framed<Stream, FrameCodec>, LinkError> {
        let timeout_ms = self.config.connect_timeout_ms;
        let stream =
            match tokio::time::timeout(Duration::from_millis(timeout_ms), TcpStream::connect(addr))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => return Err(LinkError::Connect { addr, source }),
                Err(_) => return Err(LinkError::ConnectTimeout { addr, timeout_ms }),
            };
        stream
            .set_nodelay(true)
            .map_err(|source| LinkError::Connect { addr, source })?;
        let stream = match &self.config.tls {
            None => Stream::Plain(stream),
            Some(tls) => self.tls_connect(tls, stream, addr).await?,
        };
        let mut framed = Framed::new(stream, FrameCodec::new(self.config.max_frame_bytes));
        framed.set_backpressure_boundary(self.config.write_buffer_bytes);
        let hello = Hello::new(
            Role::Peer,
            self.config.group.clone(),
            self.config.member_id.clone(),
        );
        let timeout_ms = self.config.handshake_timeout_ms;
        match tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            handshake::connect(&mut framed, &hello),
        )
        .await
        {
            // An address can be reused by another member after pods move:
            // never deliver one member's messages to another.
            Ok(Ok(ok)) if ok.member_id != self.peer_id => Err(LinkError::WrongMember {
                addr,
                expected: self.peer_id.clone(),
                got: ok.member_id,
            }),
            // A member of another group of the same name (one recreated,
            // or a stale volume): never exchange a message with it.
            Ok(Ok(ok)) if !ok.same_group_id(&self.config.group_id) => {
                Err(LinkError::WrongGroupId {
                    addr,
                    peer: ok.member_id,
                    expected: self.config.group_id.clone(),
                    got: ok.group_id,
                })
            }
            Ok(Ok(ok)) => {
                self.shared
                    .peer_version
                    .store(ok.version, Ordering::Relaxed);
                Ok(framed)
            }
            Ok(Err(source)) => Err(LinkError::Handshake { addr, source }),
            Err(_) => Err(LinkError::HandshakeTimeout { addr, timeout_ms }),
        }
    }

    /// TLS on `tcp`: the peer's certificate must chain to the CA, carry
    /// the host name it is reached at, and name the member meant.
    async fn tls_connect(
        &self,
        tls: &super::tls::Tls,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> Result<Stream, LinkError> {
        let timeout_ms = self.config.handshake_timeout_ms;
        let host = super::tls::host_of(&self.addr);
        let stream =
            match tokio::time::timeout(Duration::from_millis(timeout_ms), tls.connect(tcp, host))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => return Err(LinkError::Tls { addr, source }),
                Err(_) => return Err(LinkError::HandshakeTimeout { addr, timeout_ms }),
            };
        let expected = super::tls::member_name(&self.peer_id);
        match stream.peer_certificate() {
            Some(cert) if super::tls::certificate_names(cert, expected) => Ok(stream),
            _ => Err(LinkError::WrongCertificate {
                addr,
                expected: expected.to_string(),
            }),
        }
    }

    /// Writes queued frames until the connection fails; Ok when cancelled.
    async fn pump(&mut self, mut framed: Framed<Stream, FrameCodec>) -> Result<(), LinkError> {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    let _ = SinkExt::<Bytes>::close(&mut framed).await;
                    return Ok(());
                }
                first = self.queue.recv() => {
                    // The link owns the sender half, so the queue never closes
                    // while we run; treat it as a shutdown regardless.
                    let Some(first) = first else { return Ok(()) };
                    self.write_batch(&mut framed, first).await?;
                }
                inbound = framed.next() => return Err(Self::inbound_error(inbound)),
            }
        }
    }

    /// Feeds `first` and whatever else is queued, then flushes once.
    async fn write_batch(
        &mut self,
        framed: &mut Framed<Stream, FrameCodec>,
        first: Bytes,
    ) -> Result<(), LinkError> {
        let mut next = Some(first);
        let mut count = 0u64;
        let speaks = self.shared.peer_version.load(Ordering::Relaxed);
        while let Some(frame) = next {
            self.dequeued(&frame);
            // Queued before this connection's handshake, for a peer that
            // turned out to be of an older build.
            if frame.get(4).is_some_and(|version| *version > speaks) {
                self.shared.dropped_old_peer.fetch_add(1, Ordering::Relaxed);
            } else {
                framed.feed(frame).await?;
                count += 1;
            }
            next = self.queue.try_recv().ok();
        }
        SinkExt::<Bytes>::flush(framed).await?;
        self.shared
            .messages_sent
            .fetch_add(count, Ordering::Relaxed);
        Ok(())
    }

    fn inbound_error(inbound: Option<Result<Frame, FrameError>>) -> LinkError {
        match inbound {
            None => LinkError::ClosedByPeer,
            Some(Err(error)) => LinkError::Frame(error),
            Some(Ok(frame)) if frame.frame_type == FrameType::Error => {
                match ErrorBody::decode(&frame.body) {
                    Ok(body) => LinkError::Refused(body.message),
                    Err(error) => LinkError::Refused(error.to_string()),
                }
            }
            Some(Ok(frame)) => LinkError::Unexpected(frame.frame_type),
        }
    }
}
