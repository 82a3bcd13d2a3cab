//! The sending side towards one peer: a connection that keeps itself up.
//!
//! A [`PeerLink`] owns one TCP connection to one peer, re-resolving the
//! peer's host name at every attempt (pods move) and reconnecting with
//! capped exponential back-off and jitter. Messages go through a bounded
//! queue: when it is full, or when the peer cannot be reached, messages are
//! dropped and counted rather than piling up, since Raft retransmits what
//! matters. Queued frames are coalesced into one write, flushed when the
//! queue drains. While a plaintext connection has nothing queued, the
//! sending thread (the raft loop) writes a frame to the socket itself,
//! saving the hand-off to the runtime's thread (see [`Writer`]). Messages
//! from the peer come on *its* link to our listener.

use std::future::Future;
use std::io::Write;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    /// Of those, written whole by the sending thread itself.
    pub written_directly: u64,
    /// Frames the sending thread found the socket full for: the link's task
    /// wrote them, or what the socket did not take of them.
    pub handed_to_task: u64,
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
    written_directly: AtomicU64,
    handed_to_task: AtomicU64,
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
    /// Who writes to the connection now; every push into the queue is
    /// made holding it (see [`Writer`]).
    writer: Mutex<Writer>,
}

impl Shared {
    fn set_error(&self, error: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error);
        }
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // Every change of the state is a single assignment: never half made.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Who may write to the connection. The invariant: bytes reach a
/// connection from one writer at a time, whole frames only, in the order
/// `send` was called.
///
/// - `Idle`: a plaintext connection is up, the queue is empty, and the
///   link's task has nothing buffered and is not writing. A sender writes
///   its frame to the socket itself, nonblocking, holding the lock. If the
///   socket takes only part of it (or none), the sender queues the rest,
///   which is then first in the queue, and sets `Busy` before it lets go.
/// - `Busy`: the task owns writing. Senders queue, holding the lock, so the
///   task cannot find the queue empty and go idle between a sender's look
///   at the state and its push. The task sets `Idle` again only holding the
///   lock, after a flush, when the queue is empty.
/// - `Queue`: no connection, or a TLS one (rustls' state belongs to the
///   task): senders queue and the task writes, as without a direct path.
///
/// When a connection ends the state goes back to `Queue` (`WriterGuard`)
/// and the descriptor of the old connection is closed with it.
#[derive(Debug, Default)]
enum Writer {
    #[default]
    Queue,
    Busy(Direct),
    Idle(Direct),
}

/// The task's socket as a second descriptor of the same connection, for
/// senders to write to while the link is idle.
#[derive(Debug)]
struct Direct {
    /// Nonblocking, like the task's: a full socket never stalls the sender.
    tcp: std::net::TcpStream,
    /// Which connection it is (the count of connections established).
    connection: u64,
}

/// What the queue carries.
#[derive(Debug)]
enum Queued {
    /// A whole frame.
    Frame(Bytes),
    /// The part of a frame the socket did not take from a sender. Written
    /// on the connection it was cut on only: on another it would begin
    /// mid-frame.
    Rest { connection: u64, bytes: Bytes },
}

impl Queued {
    fn len(&self) -> usize {
        match self {
            Queued::Frame(bytes) | Queued::Rest { bytes, .. } => bytes.len(),
        }
    }
}

/// Whether a peer that speaks protocol version `speaks` (0: no handshake
/// yet) reads `frame`: the version in its header (byte 4, `net::frame`)
/// is one it speaks.
fn peer_reads(frame: &[u8], speaks: u8) -> bool {
    frame.get(4).is_some_and(|version| *version <= speaks)
}

/// Writes as much of `frame` as the socket takes without waiting: the
/// bytes written, all of them unless the socket is full.
fn write_nonblocking(tcp: &std::net::TcpStream, frame: &[u8]) -> std::io::Result<usize> {
    let mut tcp = tcp;
    let mut written = 0;
    while written < frame.len() {
        match tcp.write(&frame[written..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(error) => return Err(error),
        }
    }
    Ok(written)
}

/// Puts the link back to `Queue` when a connection ends, however it ends.
struct WriterGuard(Arc<Shared>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        *self.0.writer() = Writer::Queue;
    }
}

/// A self-healing connection to one peer, carrying messages of type `T`.
/// Dropping it stops the connection.
#[derive(Debug)]
pub struct PeerLink<T> {
    peer_id: String,
    queue: mpsc::Sender<Queued>,
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
        let mut writer = self.shared.writer();
        // A frame the link's task would drop (for a peer of an older build)
        // goes its way, to be dropped and counted there.
        let speaks = self.shared.peer_version.load(Ordering::Relaxed);
        match std::mem::take(&mut *writer) {
            Writer::Idle(direct) if peer_reads(&frame, speaks) => {
                return self.write_directly(&mut writer, direct, frame);
            }
            other => *writer = other,
        }
        let queued = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if queued + len > self.max_queued_bytes {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(self.dropped());
        }
        self.push(Queued::Frame(frame))
    }

    /// Writes `frame` to the idle connection; what the socket does not take
    /// goes to the link's task, which owns writing from then on. `writer`
    /// is `Queue` on entry (`direct` was taken out of it) and set here.
    fn write_directly(
        &self,
        writer: &mut Writer,
        direct: Direct,
        frame: Bytes,
    ) -> Result<(), SendError> {
        match write_nonblocking(&direct.tcp, &frame) {
            Ok(written) if written == frame.len() => {
                *writer = Writer::Idle(direct);
                self.shared.messages_sent.fetch_add(1, Ordering::Relaxed);
                self.shared.written_directly.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(written) => {
                // The queue is empty (the link was idle), so the rest is
                // first in it. Not subject to the byte limit: once begun,
                // a frame must be finished or the connection is corrupt.
                let rest = if written == 0 {
                    Queued::Frame(frame)
                } else {
                    Queued::Rest {
                        connection: direct.connection,
                        bytes: frame.slice(written..),
                    }
                };
                self.shared.handed_to_task.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .queued_bytes
                    .fetch_add(rest.len(), Ordering::AcqRel);
                let pushed = self.push(rest);
                if pushed.is_err() {
                    // Cannot happen while the task runs (it owns the
                    // receiver); if it did, end the half-written frame's
                    // connection rather than leave it to be written after.
                    let _ = direct.tcp.shutdown(std::net::Shutdown::Both);
                } else {
                    *writer = Writer::Busy(direct);
                }
                pushed
            }
            Err(error) => {
                // As when the task's write fails: the connection is closed
                // (the task sees it and connects anew) and the frame is lost
                // with it. `Queue` until then: nothing to write to.
                tracing::debug!(peer = %self.peer_id, %error, "writing to the peer failed");
                let _ = direct.tcp.shutdown(std::net::Shutdown::Both);
                Ok(())
            }
        }
    }

    /// Queues `item`, whose bytes are already counted in `queued_bytes`.
    /// Called holding the writer lock.
    fn push(&self, item: Queued) -> Result<(), SendError> {
        let len = item.len();
        match self.queue.try_send(item) {
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
            written_directly: s.written_directly.load(Ordering::Relaxed),
            handed_to_task: s.handed_to_task.load(Ordering::Relaxed),
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
    queue: mpsc::Receiver<Queued>,
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
                    let connection = self
                        .shared
                        .connections_established
                        .fetch_add(1, Ordering::Relaxed)
                        + 1;
                    self.shared.connected.store(true, Ordering::Relaxed);
                    self.backoff.reset();
                    let outcome = self.pump(framed, connection).await;
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
        while let Ok(item) = self.queue.try_recv() {
            self.dequeued(&item);
            self.shared
                .dropped_unreachable
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn dequeued(&self, item: &Queued) {
        self.shared
            .queued_bytes
            .fetch_sub(item.len(), Ordering::AcqRel);
    }

    /// The next queued item; with none, writing goes back to senders (on a
    /// connection that has a direct path). Holding the writer lock, so no
    /// sender can queue in between (see [`Writer`]).
    fn next_or_idle(&mut self) -> Option<Queued> {
        let mut writer = self.shared.writer();
        if let Ok(item) = self.queue.try_recv() {
            return Some(item);
        }
        if let Writer::Busy(direct) = std::mem::take(&mut *writer) {
            *writer = Writer::Idle(direct);
        }
        None
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
    async fn pump(
        &mut self,
        mut framed: Framed<Stream, FrameCodec>,
        connection: u64,
    ) -> Result<(), LinkError> {
        let _writer = WriterGuard(self.shared.clone());
        let direct = match framed.get_ref() {
            Stream::Plain(tcp) => match Self::second_descriptor(tcp) {
                Ok(tcp) => Some(Direct { tcp, connection }),
                Err(error) => {
                    tracing::debug!(addr = %self.addr, %error, "no direct writes on this connection");
                    None
                }
            },
            Stream::Tls(_) => None,
        };
        if let Some(direct) = direct {
            *self.shared.writer() = Writer::Busy(direct);
        }
        // What was queued while connecting goes first.
        if let Some(first) = self.next_or_idle() {
            self.write_batch(&mut framed, first, connection).await?;
        }
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    // No sender writes past the close.
                    *self.shared.writer() = Writer::Queue;
                    let _ = SinkExt::<Bytes>::close(&mut framed).await;
                    return Ok(());
                }
                first = self.queue.recv() => {
                    // The link owns the sender half, so the queue never closes
                    // while we run; treat it as a shutdown regardless.
                    let Some(first) = first else { return Ok(()) };
                    self.write_batch(&mut framed, first, connection).await?;
                }
                inbound = framed.next() => return Err(Self::inbound_error(inbound)),
            }
        }
    }

    /// A nonblocking descriptor of `tcp`'s connection for senders to write
    /// to. Sound beside tokio's: the task clears its write readiness only
    /// after a write of its own would block, and the socket signals when it
    /// has room again whoever filled it.
    fn second_descriptor(tcp: &TcpStream) -> std::io::Result<std::net::TcpStream> {
        let tcp = std::net::TcpStream::from(tcp.as_fd().try_clone_to_owned()?);
        tcp.set_nonblocking(true)?;
        Ok(tcp)
    }

    /// Feeds `first` and whatever else is queued, flushes, and goes on until
    /// the queue is empty; then writing goes back to senders.
    async fn write_batch(
        &mut self,
        framed: &mut Framed<Stream, FrameCodec>,
        first: Queued,
        connection: u64,
    ) -> Result<(), LinkError> {
        let speaks = self.shared.peer_version.load(Ordering::Relaxed);
        let mut next = Some(first);
        loop {
            let mut count = 0u64;
            while let Some(item) = next {
                self.dequeued(&item);
                match item {
                    // Queued before this connection's handshake, for a peer
                    // that turned out to be of an older build.
                    Queued::Frame(frame) if !peer_reads(&frame, speaks) => {
                        self.shared.dropped_old_peer.fetch_add(1, Ordering::Relaxed);
                    }
                    Queued::Frame(bytes) => {
                        framed.feed(bytes).await?;
                        count += 1;
                    }
                    Queued::Rest {
                        connection: cut_on,
                        bytes,
                    } if cut_on == connection => {
                        framed.feed(bytes).await?;
                        count += 1;
                    }
                    // Its frame began on a connection that has ended.
                    Queued::Rest { .. } => {}
                }
                next = self.queue.try_recv().ok();
            }
            SinkExt::<Bytes>::flush(framed).await?;
            self.shared
                .messages_sent
                .fetch_add(count, Ordering::Relaxed);
            next = self.next_or_idle();
            if next.is_none() {
                return Ok(());
            }
        }
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde::Deserialize;

    use super::*;

    /// Says which it is, and its payload shows whether it arrived whole.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Numbered {
        n: u64,
        payload: Bytes,
    }

    impl WireVersion for Numbered {}

    /// Larger than any other `n` sent: the last message of a test.
    const END: u64 = 1_000_000;

    fn numbered(n: u64) -> Numbered {
        // Sizes vary, so a full socket cuts frames at different places.
        let len = 1 + (n % 10_007) as usize * 7_919 % 24_000;
        Numbered {
            n,
            payload: Bytes::from(vec![(n % 251) as u8; len]),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A listener whose connections take little before the link's socket
    /// is full.
    fn small_listener(runtime: &tokio::runtime::Runtime) -> tokio::net::TcpListener {
        let _entered = runtime.enter();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket.listen(8).unwrap()
    }

    fn spawn_link(
        runtime: &tokio::runtime::Runtime,
        listener: &tokio::net::TcpListener,
    ) -> PeerLink<Numbered> {
        let mut config = PeerLinkConfig::new("g", "me");
        config.backoff_initial_ms = 10;
        config.backoff_max_ms = 50;
        // The tests accept when they are ready to.
        config.handshake_timeout_ms = 60_000;
        let _entered = runtime.enter();
        PeerLink::spawn("peer", listener.local_addr().unwrap().to_string(), config)
    }

    /// Accepts the link's next connection and answers its handshake.
    async fn accept(listener: &tokio::net::TcpListener) -> Framed<TcpStream, FrameCodec> {
        let (stream, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(stream, FrameCodec::default());
        let hello = framed.next().await.unwrap().unwrap();
        assert_eq!(hello.frame_type, FrameType::Hello);
        let ok = handshake::HelloOk {
            version: PROTOCOL_VERSION,
            member_id: "peer".into(),
            group_id: String::new(),
        };
        framed
            .send(Frame::new(FrameType::HelloOk, 0, ok.encode().unwrap()))
            .await
            .unwrap();
        framed
    }

    /// The next message from the link, checked to be whole.
    async fn next_message(framed: &mut Framed<TcpStream, FrameCodec>) -> u64 {
        // A guard against a hang, not a measure.
        let frame = tokio::time::timeout(Duration::from_secs(60), framed.next())
            .await
            .expect("a frame within a minute")
            .expect("the connection is open")
            .expect("a whole frame");
        assert_eq!(frame.frame_type, FrameType::Peer);
        let message: Numbered = super::super::body::decode_peer(&frame.body).unwrap();
        assert_eq!(message, numbered(message.n), "arrived whole");
        message.n
    }

    /// Polls until `done`; a generous deadline turns a hang into a failure.
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn is_idle(link: &PeerLink<Numbered>) -> bool {
        matches!(*link.shared.writer(), Writer::Idle(_))
    }

    /// Sends until a frame is cut by the full socket (the peer reads
    /// nothing meanwhile) and handed to the task; returns the next `n`.
    fn send_until_cut(link: &PeerLink<Numbered>, sent: &mut Vec<u64>) -> u64 {
        let mut n = 0;
        while link.stats().handed_to_task == 0 {
            assert!(n < 100_000, "the socket never filled: {:?}", link.stats());
            link.send(&numbered(n)).unwrap();
            sent.push(n);
            n += 1;
        }
        n
    }

    /// The raft loop's case: a plain thread sends while the peer first
    /// reads nothing, then reads slowly, so direct writes are cut by a full
    /// socket; every frame arrives whole and in the order sent.
    #[test]
    fn frames_cut_by_a_full_socket_arrive_whole_and_in_order() {
        let runtime = runtime();
        let listener = small_listener(&runtime);
        let link = spawn_link(&runtime, &listener);
        let mut framed = runtime.block_on(accept(&listener));
        wait_until("the link is idle", || is_idle(&link));
        let (cut_tx, cut_rx) = std::sync::mpsc::channel();
        let link = &link;
        let (sent, received) = std::thread::scope(|scope| {
            let sender = scope.spawn(move || {
                let mut sent = Vec::new();
                let first = send_until_cut(link, &mut sent);
                cut_tx.send(()).unwrap();
                // On while the peer reads; a full queue may drop some.
                for n in first..first + 3_000 {
                    if link.send(&numbered(n)).is_ok() {
                        sent.push(n);
                    }
                }
                wait_until("the last message is queued", || {
                    link.send(&numbered(END)).is_ok()
                });
                sent.push(END);
                sent
            });
            cut_rx.recv().unwrap();
            let received = runtime.block_on(async {
                let mut received = Vec::new();
                loop {
                    let n = next_message(&mut framed).await;
                    received.push(n);
                    if n == END {
                        return received;
                    }
                    tokio::task::yield_now().await;
                }
            });
            (sender.join().unwrap(), received)
        });
        assert_eq!(received, sent);
        let stats = link.stats();
        assert!(stats.written_directly > 0, "{stats:?}");
        wait_until("all are counted", || {
            link.stats().messages_sent == sent.len() as u64
        });
    }

    /// The rest of a frame cut on a connection that has been lost since
    /// would begin mid-frame on the next one: it is never written there.
    #[test]
    fn the_rest_of_a_frame_cut_on_a_lost_connection_is_not_written_on_the_next() {
        let runtime = runtime();
        let listener = small_listener(&runtime);
        let link = spawn_link(&runtime, &listener);
        let first = runtime.block_on(accept(&listener));
        wait_until("the link is idle", || is_idle(&link));
        drop(first);
        wait_until("the link sees the loss", || !link.stats().connected);
        // As a sender leaves it when the socket takes part of frame 1.
        let body = super::super::body::encode_peer_after(&numbered(1), vec![0; HEADER_BYTES]);
        let frame = FrameCodec::default()
            .seal(FrameType::Peer, PROTOCOL_VERSION, 0, body.unwrap())
            .unwrap();
        let rest = Queued::Rest {
            connection: 1,
            bytes: frame.slice(HEADER_BYTES + 3..),
        };
        {
            let _writer = link.shared.writer();
            link.shared
                .queued_bytes
                .fetch_add(rest.len(), Ordering::AcqRel);
            link.queue.try_send(rest).unwrap();
        }
        link.send(&numbered(2)).unwrap();
        let mut second = runtime.block_on(accept(&listener));
        assert_eq!(runtime.block_on(next_message(&mut second)), 2);
        assert_eq!(link.stats().connections_established, 2);
    }

    /// A connection lost while a cut frame's rest waits: the next one
    /// carries whole frames only, in order, and all of those sent on it.
    #[test]
    fn a_link_that_reconnects_mid_stream_delivers_whole_frames_only() {
        let runtime = runtime();
        let listener = small_listener(&runtime);
        let link = spawn_link(&runtime, &listener);
        let first = runtime.block_on(accept(&listener));
        wait_until("the link is idle", || is_idle(&link));
        let mut sent = Vec::new();
        let mut n = send_until_cut(&link, &mut sent);
        for _ in 0..20 {
            link.send(&numbered(n)).unwrap();
            n += 1;
        }
        // Unread data: the peer resets the connection.
        drop(first);
        let mut second = runtime.block_on(accept(&listener));
        let after: Vec<u64> = (n..n + 200).chain([END]).collect();
        for &n in &after {
            link.send(&numbered(n)).unwrap();
        }
        let received = runtime.block_on(async {
            let mut received = Vec::new();
            while received.last() != Some(&END) {
                received.push(next_message(&mut second).await);
            }
            received
        });
        assert!(received.windows(2).all(|w| w[0] < w[1]), "{received:?}");
        assert!(received.ends_with(&after), "{received:?}");
        assert_eq!(link.stats().connections_established, 2);
    }
}
