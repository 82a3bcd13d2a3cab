//! The network layer over real loopback sockets: listener, handshake, peer
//! links and the client library, against a tiny in-memory responder.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dledger_replica::entry::Entry;
use dledger_replica::net::client::{Client, ClientConfig, ClientError};
use dledger_replica::net::client_proto::{
    ClientEntry, ClientRequest, ClientResponse, RequestError,
};
use dledger_replica::net::frame::{Frame, FrameCodec, FrameType, WireVersion, HEADER_BYTES};
use dledger_replica::net::handshake::{self, ErrorBody, ErrorCode, Hello, KnownPeers, Role};
use dledger_replica::net::listener::{ClientCall, Inbound, Listener, ListenerConfig};
use dledger_replica::net::outbound::{PeerLink, PeerLinkConfig, Resolver};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::Framed;

/// A stand-in for the consensus core's message type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PeerMessage {
    term: u64,
    entries: Vec<Entry>,
}

/// Terms from 1000 on stand for a kind added in version 2.
impl WireVersion for PeerMessage {
    fn wire_version(&self) -> u8 {
        if self.term >= 1000 {
            2
        } else {
            1
        }
    }
}

const GROUP: &str = "orders";

fn listener_config() -> ListenerConfig {
    let mut config = ListenerConfig::new(GROUP, "orders-0");
    config.known_peers = KnownPeers::only(["orders-1"]);
    config
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new(GROUP);
    config.retry_deadline_ms = 3_000;
    config.request_timeout_ms = 3_000;
    config
}

/// An in-memory log that commits every append at once, in term 1.
#[derive(Default)]
struct MemoryLog {
    payloads: Mutex<Vec<Bytes>>,
    appended: Notify,
    offsets: Mutex<std::collections::HashMap<String, u64>>,
}

impl MemoryLog {
    fn answer(self: &Arc<Self>, call: ClientCall) {
        let ClientCall { request, responder } = call;
        match request {
            ClientRequest::Append { payloads } => {
                let mut log = self.payloads.lock().unwrap();
                let first_index = log.len() as u64 + 1;
                log.extend(payloads);
                drop(log);
                self.appended.notify_waiters();
                responder.respond(ClientResponse::Appended {
                    first_index,
                    term: 1,
                });
            }
            ClientRequest::Get { index } => {
                responder.respond(self.get(index));
            }
            ClientRequest::Read {
                from,
                max_bytes,
                wait_ms,
            } => {
                let log = self.clone();
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
                    loop {
                        let notified = log.appended.notified();
                        let entries = log.read(from, max_bytes);
                        if !entries.is_empty() || tokio::time::Instant::now() >= deadline {
                            let commit_index = log.payloads.lock().unwrap().len() as u64;
                            responder.respond(ClientResponse::Entries {
                                entries,
                                commit_index,
                            });
                            return;
                        }
                        let _ = tokio::time::timeout_at(deadline, notified).await;
                    }
                });
            }
            // Unconditional only: the conditions are tested against a real
            // replica (tests/client_cli.rs).
            ClientRequest::CommitOffset { group, offset, .. } => {
                self.offsets.lock().unwrap().insert(group.clone(), offset);
                responder.respond(ClientResponse::OffsetCommitted { group, offset });
            }
            ClientRequest::ConsumerOffset { group, .. } => {
                let offset = self.offsets.lock().unwrap().get(&group).copied();
                responder.respond(match offset {
                    Some(offset) => ClientResponse::ConsumerOffset {
                        group,
                        offset,
                        lag: 0,
                    },
                    None => ClientResponse::Error(RequestError::UnknownGroup { group }),
                });
            }
            // The listener answers it; it never reaches the server.
            ClientRequest::Authenticate { .. } => {
                panic!("the listener passed an Authenticate on")
            }
        }
    }

    fn get(&self, index: u64) -> ClientResponse {
        let log = self.payloads.lock().unwrap();
        match index.checked_sub(1).and_then(|i| log.get(i as usize)) {
            Some(payload) => ClientResponse::Entry(ClientEntry {
                index,
                term: 1,
                payload: payload.clone(),
            }),
            None => ClientResponse::Error(RequestError::NotFound {
                index,
                commit_index: log.len() as u64,
            }),
        }
    }

    fn read(&self, from: u64, max_bytes: u64) -> Vec<ClientEntry> {
        let log = self.payloads.lock().unwrap();
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        for index in from.max(1)..=log.len() as u64 {
            let payload = log[index as usize - 1].clone();
            if !entries.is_empty() && bytes + payload.len() as u64 > max_bytes {
                break;
            }
            bytes += payload.len() as u64;
            entries.push(ClientEntry {
                index,
                term: 1,
                payload,
            });
        }
        entries
    }
}

/// Serves clients from a memory log; peer messages go to the returned channel.
fn spawn_responder(
    mut inbound: mpsc::Receiver<Inbound<PeerMessage>>,
) -> mpsc::UnboundedReceiver<(String, PeerMessage)> {
    let (peer_tx, peer_rx) = mpsc::unbounded_channel();
    let log = Arc::new(MemoryLog::default());
    tokio::spawn(async move {
        while let Some(item) = inbound.recv().await {
            match item {
                Inbound::Peer { from, message } => {
                    let _ = peer_tx.send((from, message));
                }
                Inbound::Client(call) => log.answer(call),
                Inbound::PeerClosed { .. } => {}
            }
        }
    });
    peer_rx
}

async fn start_member(
    config: ListenerConfig,
) -> (Listener, mpsc::UnboundedReceiver<(String, PeerMessage)>) {
    let (listener, inbound) = Listener::bind::<PeerMessage>("127.0.0.1:0", config)
        .await
        .unwrap();
    (listener, spawn_responder(inbound))
}

#[tokio::test]
async fn handshake_append_get_and_read() {
    let (listener, _peers) = start_member(listener_config()).await;
    let addr = listener.local_addr().to_string();
    let client = Client::connect_with(vec![addr.clone()], client_config())
        .await
        .unwrap();
    assert_eq!(client.current_addr().await, Some(addr));
    assert_eq!(client.append(&b"first"[..]).await.unwrap(), (1, 1));
    assert_eq!(
        client
            .append_batch(vec![Bytes::from("a"), Bytes::from("b")])
            .await
            .unwrap(),
        (2, 1)
    );
    let entry = client.get(2).await.unwrap();
    assert_eq!((entry.index, entry.payload), (2, Bytes::from("a")));
    match client.get(9).await {
        Err(ClientError::Request(RequestError::NotFound {
            index: 9,
            commit_index: 3,
        })) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    let batch = client.read(1, 1 << 20, 0).await.unwrap();
    let payloads: Vec<_> = batch.entries.iter().map(|e| e.payload.clone()).collect();
    assert_eq!(
        payloads,
        vec![Bytes::from("first"), Bytes::from("a"), Bytes::from("b")]
    );
    assert_eq!(batch.commit_index, 3);
    // A long poll returns as soon as an entry is committed.
    let reader = client.clone();
    let poll = tokio::spawn(async move { reader.read(4, 1 << 20, 5_000).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.append(&b"late"[..]).await.unwrap();
    let batch = poll.await.unwrap().unwrap();
    assert_eq!(batch.entries[0].payload, Bytes::from("late"));
    assert_eq!(listener.stats().client_requests, 7);
}

#[tokio::test]
async fn wrong_group_is_refused_with_a_readable_reason() {
    let (listener, _peers) = start_member(listener_config()).await;
    let mut config = client_config();
    config.group = "payments".to_string();
    let err = Client::connect_with(vec![listener.local_addr().to_string()], config)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClientError::Refused { .. }), "{text}");
    assert!(
        text.contains("wrong group")
            && text.contains("\"payments\"")
            && text.contains("\"orders\""),
        "{text}"
    );
    assert_eq!(listener.stats().handshakes_failed, 1);
}

#[tokio::test]
async fn an_oversized_frame_closes_only_its_connection() {
    let mut config = listener_config();
    config.max_frame_bytes = 64 * 1024;
    let (listener, _peers) = start_member(config).await;
    let addr = listener.local_addr();
    let client = Client::connect_with(vec![addr.to_string()], client_config())
        .await
        .unwrap();
    client.append(&b"before"[..]).await.unwrap();

    let stream = TcpStream::connect(addr).await.unwrap();
    let mut raw = Framed::new(stream, FrameCodec::new(64 * 1024));
    handshake::connect(&mut raw, &Hello::new(Role::Client, GROUP, "rogue"))
        .await
        .unwrap();
    let mut header = FrameCodec::default()
        .encode_to_bytes(&Frame::new(FrameType::Request, 1, Bytes::new()))
        .unwrap()
        .to_vec();
    header[16..20].copy_from_slice(&(1u32 << 30).to_be_bytes());
    raw.get_mut()
        .write_all(&header[..HEADER_BYTES])
        .await
        .unwrap();
    let reply = raw.next().await.unwrap().unwrap();
    let error = ErrorBody::decode(&reply.body).unwrap();
    assert_eq!(error.code, ErrorCode::TooLarge);
    assert!(
        error.message.contains("exceeds the maximum of 65536 bytes"),
        "{}",
        error.message
    );
    assert!(
        raw.next().await.is_none(),
        "connection closed after the error"
    );

    assert_eq!(client.append(&b"after"[..]).await.unwrap(), (2, 1));
    let other = Client::connect_with(vec![addr.to_string()], client_config())
        .await
        .unwrap();
    assert_eq!(other.get(2).await.unwrap().payload, Bytes::from("after"));
    assert_eq!(listener.stats().connections_failed, 1);
}

#[tokio::test]
async fn a_garbage_request_body_fails_that_request_only() {
    let (listener, _peers) = start_member(listener_config()).await;
    let stream = TcpStream::connect(listener.local_addr()).await.unwrap();
    let mut raw = Framed::new(stream, FrameCodec::default());
    handshake::connect(&mut raw, &Hello::new(Role::Client, GROUP, "fuzzer"))
        .await
        .unwrap();
    use futures_util::SinkExt;
    raw.send(Frame::new(FrameType::Request, 7, vec![0xEE, 0xFF]))
        .await
        .unwrap();
    raw.send(Frame::new(
        FrameType::Request,
        8,
        ClientRequest::Get { index: 1 }.encode().unwrap(),
    ))
    .await
    .unwrap();
    let first = raw.next().await.unwrap().unwrap();
    assert_eq!(first.request_id, 7);
    match ClientResponse::decode(&first.body).unwrap() {
        ClientResponse::Error(RequestError::BadRequest { reason }) => {
            assert!(reason.contains("malformed client request"), "{reason}")
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    let second = raw.next().await.unwrap().unwrap();
    assert_eq!(second.request_id, 8);
    assert!(matches!(
        ClientResponse::decode(&second.body).unwrap(),
        ClientResponse::Error(RequestError::NotFound { index: 1, .. })
    ));
}

#[tokio::test]
async fn pipelined_requests_answered_out_of_order_are_matched_by_id() {
    let (listener, mut inbound) = Listener::bind::<PeerMessage>("127.0.0.1:0", listener_config())
        .await
        .unwrap();
    const COUNT: usize = 32;
    // Answers only once all requests are in flight, in reverse order.
    tokio::spawn(async move {
        let mut calls = Vec::new();
        while calls.len() < COUNT {
            match inbound.recv().await {
                Some(Inbound::Client(call)) => calls.push(call),
                Some(Inbound::Peer { .. } | Inbound::PeerClosed { .. }) => {}
                None => return,
            }
        }
        for call in calls.into_iter().rev() {
            let ClientRequest::Get { index } = call.request else {
                panic!("only gets are sent")
            };
            let payload = Bytes::from(format!("entry-{index}"));
            call.responder.respond(ClientResponse::Entry(ClientEntry {
                index,
                term: 3,
                payload,
            }));
        }
    });
    let client = Client::connect_with(vec![listener.local_addr().to_string()], client_config())
        .await
        .unwrap();
    let gets = (1..=COUNT as u64).map(|index| {
        let client = client.clone();
        async move { (index, client.get(index).await) }
    });
    for (index, answer) in futures_util::future::join_all(gets).await {
        let entry = answer.unwrap();
        assert_eq!(entry.index, index);
        assert_eq!(entry.payload, Bytes::from(format!("entry-{index}")));
    }
}

/// The next client call within 300 ms, if any.
async fn next_call(inbound: &mut mpsc::Receiver<Inbound<PeerMessage>>) -> Option<ClientCall> {
    match tokio::time::timeout(Duration::from_millis(300), inbound.recv()).await {
        Ok(Some(Inbound::Client(call))) => Some(call),
        Ok(Some(_)) => panic!("expected a client call, got a peer's input"),
        Ok(None) => panic!("the listener stopped"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn clients_are_not_read_past_the_bytes_in_flight_budget() {
    let mut config = listener_config();
    config.max_client_bytes_in_flight = 1_500;
    let (listener, mut inbound) = Listener::bind::<PeerMessage>("127.0.0.1:0", config)
        .await
        .unwrap();
    let client = Client::connect_with(vec![listener.local_addr().to_string()], client_config())
        .await
        .unwrap();
    // Three appends of 1000 bytes at once: the budget holds one.
    let appends: Vec<_> = (0..3u8)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.append(Bytes::from(vec![n; 1000])).await })
        })
        .collect();
    for answered in 0..3u64 {
        let call = next_call(&mut inbound).await.unwrap_or_else(|| {
            panic!("request {} not read after {answered} answers", answered + 1)
        });
        assert!(
            next_call(&mut inbound).await.is_none(),
            "a request read past the budget with {answered} answered"
        );
        call.responder.respond(ClientResponse::Appended {
            first_index: answered + 1,
            term: 1,
        });
    }
    for append in appends {
        append.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn append_many_keeps_order_with_many_in_flight() {
    let (listener, _peers) = start_member(listener_config()).await;
    let client = Client::connect_with(vec![listener.local_addr().to_string()], client_config())
        .await
        .unwrap();
    let payloads: Vec<Bytes> = (0..200).map(|i| Bytes::from(format!("p{i}"))).collect();
    let results = client.append_many(payloads, 64).await.unwrap();
    assert_eq!(results.len(), 200);
    let indexes: Vec<u64> = results.iter().map(|(index, _)| *index).collect();
    let mut sorted = indexes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted,
        (1..=200).collect::<Vec<_>>(),
        "every append got its own index"
    );
    for (i, (index, _)) in results.iter().enumerate().step_by(37) {
        assert_eq!(
            client.get(*index).await.unwrap().payload,
            Bytes::from(format!("p{i}"))
        );
    }
}

/// A member that is not the leader: names `leader_addr` in every answer.
async fn start_follower(leader_addr: Option<String>, transferring_first: usize) -> Listener {
    let (listener, mut inbound) = Listener::bind::<PeerMessage>("127.0.0.1:0", listener_config())
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut seen = 0;
        while let Some(item) = inbound.recv().await {
            let Inbound::Client(call) = item else {
                continue;
            };
            seen += 1;
            let error = if seen <= transferring_first {
                RequestError::Transferring
            } else {
                RequestError::NotLeader {
                    leader_id: Some("orders-2".into()),
                    leader_addr: leader_addr.clone(),
                }
            };
            call.responder.respond(ClientResponse::Error(error));
        }
    });
    listener
}

#[tokio::test]
async fn not_leader_redirects_and_transferring_is_retried() {
    let (leader, _peers) = start_member(listener_config()).await;
    let leader_addr = leader.local_addr().to_string();
    let follower = start_follower(Some(leader_addr.clone()), 2).await;
    let client = Client::connect_with(vec![follower.local_addr().to_string()], client_config())
        .await
        .unwrap();
    assert_eq!(client.append(&b"x"[..]).await.unwrap(), (1, 1));
    assert_eq!(client.current_addr().await, Some(leader_addr));
    assert_eq!(
        follower.stats().client_requests,
        3,
        "two Transferring answers, then a redirect"
    );
}

#[tokio::test]
async fn offset_commits_and_reads_follow_the_leader() {
    let (leader, _peers) = start_member(listener_config()).await;
    let leader_addr = leader.local_addr().to_string();
    let follower = start_follower(Some(leader_addr.clone()), 1).await;
    let client = Client::connect_with(vec![follower.local_addr().to_string()], client_config())
        .await
        .unwrap();
    assert_eq!(client.commit_offset("g", 5, None).await.unwrap(), 5);
    assert_eq!(client.current_addr().await, Some(leader_addr));
    assert_eq!(
        follower.stats().client_requests,
        2,
        "one Transferring answer, then a redirect"
    );
    let found = client.consumer_offset("g", true).await.unwrap().unwrap();
    assert_eq!((found.group.as_str(), found.offset), ("g", 5));
    assert_eq!(client.consumer_offset("other", false).await.unwrap(), None);
}

#[tokio::test]
async fn a_busy_offset_commit_is_retried_after_the_pause() {
    let (listener, mut inbound) = Listener::bind::<PeerMessage>("127.0.0.1:0", listener_config())
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut seen = 0;
        while let Some(item) = inbound.recv().await {
            let Inbound::Client(call) = item else {
                continue;
            };
            seen += 1;
            let ClientRequest::CommitOffset { group, offset, .. } = call.request else {
                continue;
            };
            call.responder.respond(if seen == 1 {
                ClientResponse::Error(RequestError::Busy {
                    reason: "queue full".into(),
                    retry_after_ms: 200,
                })
            } else {
                ClientResponse::OffsetCommitted { group, offset }
            });
        }
    });
    let client = Client::connect_with(vec![listener.local_addr().to_string()], client_config())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(client.commit_offset("g", 3, Some(0)).await.unwrap(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waited the hint"
    );
    assert_eq!(listener.stats().client_requests, 2);
}

#[tokio::test]
async fn no_leader_anywhere_ends_at_the_deadline() {
    let follower = start_follower(None, 0).await;
    let mut config = client_config();
    config.retry_deadline_ms = 300;
    let client = Client::connect_with(vec![follower.local_addr().to_string()], config)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = client.append(&b"x"[..]).await.unwrap_err();
    assert!(matches!(err, ClientError::DeadlineExceeded { .. }), "{err}");
    assert!(err.to_string().contains("not the leader"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        follower.stats().client_requests >= 2,
        "retried before giving up"
    );
}

#[tokio::test]
async fn an_append_lost_with_its_connection_is_indeterminate_not_resent() {
    let (listener, mut inbound) = Listener::bind::<PeerMessage>("127.0.0.1:0", listener_config())
        .await
        .unwrap();
    let addr = listener.local_addr().to_string();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Keep the request unanswered so the connection drops under it.
        while let Some(Inbound::Client(call)) = inbound.recv().await {
            let _ = seen_tx.send(call);
        }
    });
    let client = Client::connect_with(vec![addr], client_config())
        .await
        .unwrap();
    let appending = tokio::spawn({
        let client = client.clone();
        async move { client.append(&b"x"[..]).await }
    });
    let call = seen_rx.recv().await.unwrap();
    listener.shutdown().await;
    let err = appending.await.unwrap().unwrap_err();
    drop(call);
    assert!(matches!(err, ClientError::Indeterminate { .. }), "{err}");
    assert!(seen_rx.recv().await.is_none(), "the append was not resent");
}

fn link_config(backoff_max_ms: u64) -> PeerLinkConfig {
    let mut config = PeerLinkConfig::new(GROUP, "orders-1");
    config.backoff_initial_ms = 20;
    config.backoff_max_ms = backoff_max_ms;
    config
}

fn message(term: u64) -> PeerMessage {
    PeerMessage {
        term,
        entries: vec![Entry::normal(term, term, vec![term as u8; 100])],
    }
}

/// Sends `term` until it arrives (the first sends may race the connect).
async fn deliver(
    link: &PeerLink<PeerMessage>,
    peers: &mut mpsc::UnboundedReceiver<(String, PeerMessage)>,
    term: u64,
) {
    for _ in 0..400 {
        let _ = link.send(&message(term));
        if let Ok(Some((from, got))) =
            tokio::time::timeout(Duration::from_millis(25), peers.recv()).await
        {
            assert_eq!(from, "orders-1");
            if got.term == term {
                assert_eq!(got, message(term));
                return;
            }
        }
    }
    panic!("message {term} never arrived: {:?}", link.stats());
}

#[tokio::test]
async fn peer_link_reconnects_with_backoff_after_the_listener_restarts() {
    let (listener, mut peers) = start_member(listener_config()).await;
    let port = listener.local_addr().port();
    // A host name, resolved by the system resolver at each attempt.
    let link =
        PeerLink::<PeerMessage>::spawn("orders-0", format!("localhost:{port}"), link_config(200));
    deliver(&link, &mut peers, 1).await;
    assert_eq!(listener.stats().peer_messages, 1);
    listener.shutdown().await;

    tokio::time::sleep(Duration::from_millis(800)).await;
    let stats = link.stats();
    assert!(!stats.connected);
    // With no back-off at 20 ms this would be ~40 attempts; doubling to a
    // 200 ms cap (delays of 100..=200 ms) allows about ten.
    assert!((3..=14).contains(&stats.connect_attempts), "{stats:?}");
    assert!(
        stats.last_backoff_ms >= 100,
        "back-off grew to the cap: {stats:?}"
    );
    // Queued while the peer is away, dropped at the next failed attempt.
    assert!(link.send(&message(2)).is_ok());
    tokio::time::sleep(Duration::from_millis(450)).await;
    let stats = link.stats();
    assert_eq!(stats.dropped_unreachable, 1, "{stats:?}");

    let (listener, mut peers) = start_member_on(port).await;
    deliver(&link, &mut peers, 3).await;
    let stats = link.stats();
    assert!(stats.connected);
    assert_eq!(stats.connections_established, 2, "{stats:?}");
    link.shutdown().await;
    listener.shutdown().await;
}

async fn start_member_on(port: u16) -> (Listener, mpsc::UnboundedReceiver<(String, PeerMessage)>) {
    for _ in 0..50 {
        if let Ok((listener, inbound)) =
            Listener::bind::<PeerMessage>(&format!("127.0.0.1:{port}"), listener_config()).await
        {
            return (listener, spawn_responder(inbound));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("port {port} could not be bound again");
}

/// A name whose address changes, like a pod that moved.
struct MovingResolver {
    addr: Mutex<SocketAddr>,
    lookups: AtomicUsize,
}

impl Resolver for MovingResolver {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>,
    > {
        assert_eq!(name, "orders-0.orders-peers:20911");
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let addr = *self.addr.lock().unwrap();
        Box::pin(async move { Ok(vec![addr]) })
    }
}

#[tokio::test]
async fn the_peer_name_is_resolved_again_at_every_attempt() {
    let (first, mut peers) = start_member(listener_config()).await;
    let resolver = Arc::new(MovingResolver {
        addr: Mutex::new(first.local_addr()),
        lookups: AtomicUsize::new(0),
    });
    let link = PeerLink::<PeerMessage>::spawn_with_resolver(
        "orders-0",
        "orders-0.orders-peers:20911",
        link_config(100),
        resolver.clone(),
    );
    deliver(&link, &mut peers, 1).await;
    first.shutdown().await;
    // The pod moves: a new address behind the same name.
    let (second, mut peers) = start_member(listener_config()).await;
    *resolver.addr.lock().unwrap() = second.local_addr();
    deliver(&link, &mut peers, 2).await;
    let stats = link.stats();
    assert_eq!(
        resolver.lookups.load(Ordering::SeqCst) as u64,
        stats.connect_attempts,
        "{stats:?}"
    );
    assert!(stats.connect_attempts >= 2);
}

#[tokio::test]
async fn a_peer_of_another_group_is_refused_and_keeps_retrying() {
    let (listener, _peers) = start_member(listener_config()).await;
    let mut config = link_config(50);
    config.group = "payments".into();
    let link =
        PeerLink::<PeerMessage>::spawn("orders-0", listener.local_addr().to_string(), config);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = link.stats();
    assert!(
        !stats.connected && stats.connections_established == 0,
        "{stats:?}"
    );
    let last_error = stats.last_error.unwrap_or_default();
    assert!(last_error.contains("wrong group"), "{last_error}");
    assert!(listener.stats().handshakes_failed >= 2);
}

/// A group recreated under the same name has another id: a member of one
/// never delivers a message to a member of the other, while members that
/// share the id, or where one side has none (an older build, or no id
/// given), connect.
#[tokio::test]
async fn a_member_of_another_group_id_is_never_connected_to() {
    let mut member_config = listener_config();
    member_config.group_id = "uid-new".into();
    let (listener, mut peers) = start_member(member_config).await;
    let mut stale = link_config(50);
    stale.group_id = "uid-old".into();
    let link = PeerLink::<PeerMessage>::spawn("orders-0", listener.local_addr().to_string(), stale);
    assert!(link.send(&message(1)).is_ok());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = link.stats();
    assert!(
        !stats.connected && stats.connections_established == 0 && stats.messages_sent == 0,
        "{stats:?}"
    );
    let last_error = stats.last_error.unwrap_or_default();
    assert!(
        last_error.contains("\"uid-new\"") && last_error.contains("\"uid-old\""),
        "{last_error}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(50), peers.recv())
            .await
            .is_err(),
        "nothing was delivered"
    );
    drop(link);
    for group_id in ["uid-new", ""] {
        let mut config = link_config(50);
        config.group_id = group_id.into();
        let link =
            PeerLink::<PeerMessage>::spawn("orders-0", listener.local_addr().to_string(), config);
        deliver(&link, &mut peers, 2).await;
    }
}

/// A member of an older build (protocol version 1) is never sent a kind of
/// message added in version 2, which it could not decode: the link drops
/// it and counts it, and the rest goes on. A version-2 member gets it.
#[tokio::test]
async fn a_version_2_message_never_reaches_a_version_1_peer() {
    let old = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = old.local_addr().unwrap();
    let (received, mut terms) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (stream, _) = old.accept().await.unwrap();
        let mut framed = Framed::new(stream, FrameCodec::default());
        let hello = framed.next().await.unwrap().unwrap();
        assert_eq!(Hello::decode(&hello.body).unwrap().max_version, 2);
        // What a build of version 1 answers: a version-1 HelloOk.
        let ok = handshake::HelloOk {
            version: 1,
            member_id: "orders-0".into(),
            group_id: String::new(),
        };
        framed
            .send(Frame::new(FrameType::HelloOk, 0, ok.encode().unwrap()))
            .await
            .unwrap();
        while let Some(Ok(frame)) = framed.next().await {
            assert_eq!(frame.version, 1, "a version-1 peer got a version-2 frame");
            let message: PeerMessage =
                dledger_replica::net::body::decode_peer(&frame.body).unwrap();
            let _ = received.send(message.term);
        }
    });
    let link = PeerLink::<PeerMessage>::spawn("orders-0", addr.to_string(), link_config(50));
    // The first may be queued before the handshake: dropped when written.
    for term in [1, 1000, 2, 1001, 3] {
        let _ = link.send(&message(term));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got = Vec::new();
    while let Ok(Some(term)) = tokio::time::timeout(Duration::from_millis(200), terms.recv()).await
    {
        got.push(term);
    }
    assert_eq!(got, [1, 2, 3]);
    let stats = link.stats();
    assert_eq!(
        (stats.dropped_old_peer, stats.peer_version),
        (2, 1),
        "{stats:?}"
    );

    let (listener, mut peers) = start_member(listener_config()).await;
    let link = PeerLink::<PeerMessage>::spawn(
        "orders-0",
        listener.local_addr().to_string(),
        link_config(50),
    );
    deliver(&link, &mut peers, 1000).await;
    assert_eq!(link.stats().peer_version, 2);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    // Nothing listens on this port: frames stay queued between attempts.
    let mut config = link_config(5_000);
    config.backoff_initial_ms = 5_000;
    config.queue_capacity = 4;
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let link = PeerLink::<PeerMessage>::spawn("orders-0", unused.to_string(), config);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut dropped = 0;
    for term in 0..10 {
        if link.send(&message(term)).is_err() {
            dropped += 1;
        }
    }
    assert_eq!(dropped, 6);
    assert_eq!(link.stats().dropped_queue_full, 6);
}

#[tokio::test]
async fn a_peer_message_of_the_wrong_shape_closes_the_connection_with_a_reason() {
    let (listener, _peers) = start_member(listener_config()).await;
    let stream = TcpStream::connect(listener.local_addr()).await.unwrap();
    let mut raw = Framed::new(stream, FrameCodec::default());
    handshake::connect(&mut raw, &Hello::new(Role::Peer, GROUP, "orders-1"))
        .await
        .unwrap();
    use futures_util::SinkExt;
    raw.send(Frame::new(FrameType::Peer, 0, vec![0xFF; 12]))
        .await
        .unwrap();
    let reply = raw.next().await.unwrap().unwrap();
    let error = ErrorBody::decode(&reply.body).unwrap();
    assert_eq!(error.code, ErrorCode::Protocol);
    assert!(
        error.message.contains("malformed peer message"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_dropped_responder_answers_for_the_server() {
    let (listener, mut inbound) = Listener::bind::<PeerMessage>("127.0.0.1:0", listener_config())
        .await
        .unwrap();
    // A server that loses every request.
    tokio::spawn(async move { while inbound.recv().await.is_some() {} });
    let mut config = client_config();
    config.retry_deadline_ms = 200;
    let client = Client::connect_with(vec![listener.local_addr().to_string()], config)
        .await
        .unwrap();
    let err = client.append(&b"x"[..]).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Indeterminate { reason } if reason.contains("dropped the append")),
        "{err}"
    );
    // A read is safe to retry, so the client retries until its deadline.
    let err = client.get(1).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::DeadlineExceeded { last_error, .. } if last_error.contains("dropped the request")),
        "{err}"
    );
}

#[tokio::test]
async fn a_link_never_delivers_to_another_member_behind_the_address() {
    // orders-0 listens, but the link is for orders-2 (a stale address).
    let (listener, _peers) = start_member(listener_config()).await;
    let link = PeerLink::<PeerMessage>::spawn(
        "orders-2",
        listener.local_addr().to_string(),
        link_config(50),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = link.stats();
    assert_eq!(stats.connections_established, 0, "{stats:?}");
    let last_error = stats.last_error.unwrap_or_default();
    assert!(
        last_error.contains("is member \"orders-0\", not \"orders-2\""),
        "{last_error}"
    );
    assert_eq!(listener.stats().peer_messages, 0);
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_at_once() {
    let config = ListenerConfig {
        max_connections: 2,
        ..listener_config()
    };
    let (listener, _inbound) = Listener::bind::<PeerMessage>("127.0.0.1:0", config)
        .await
        .expect("bind");
    let addr = listener.local_addr();
    let _first = TcpStream::connect(addr).await.expect("connect");
    let _second = TcpStream::connect(addr).await.expect("connect");
    let mut third = TcpStream::connect(addr).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut third, &mut byte),
    )
    .await
    .expect("closed within the handshake timeout");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the third connection was served"
    );
    assert_eq!(listener.stats().connections_refused, 1);
    assert_eq!(listener.stats().connections_accepted, 2);
}
