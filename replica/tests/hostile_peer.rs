//! A hostile peer: a raw TCP client that completes the peer handshake under
//! the name of a member that is not running, then sends each kind of message
//! that breaks the protocol. The two running members drop and count every
//! one and go on serving; on a core that asserted on peer input, the first
//! one stopped a member.

mod common;

use std::time::{Duration, Instant};

use dledger_replica::core::{AppendResult, Message, MessageBody};
use dledger_replica::entry::Entry;
use dledger_replica::net::body::encode_peer;
use dledger_replica::net::client::{Client, ClientConfig};
use dledger_replica::net::frame::{Frame, FrameCodec, FrameType};
use dledger_replica::net::handshake::{self, Hello, Role};
use dledger_replica::server::members::node_id_of;
use dledger_replica::server::{serve, ServerConfig};
use futures_util::SinkExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use common::group::Addresses;

const GROUP: &str = "hostile";
const NAMES: [&str; 3] = ["m0", "m1", "intruder"];

fn config(index: usize, addresses: &Addresses, dir: &std::path::Path) -> ServerConfig {
    common::group::config(GROUP, "hostile-test", &NAMES, addresses, dir, index)
}

/// `GET path` over plain HTTP/1.0; the body, or `None` when the member
/// does not answer.
async fn http_get(address: &str, path: &str) -> Option<String> {
    let mut stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address))
        .await
        .ok()?
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

async fn status(address: &str) -> Option<Value> {
    serde_json::from_str(&http_get(address, "/status").await?).ok()
}

/// The running member that leads, and its term.
async fn wait_for_leader(addresses: &Addresses) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for index in 0..2 {
            if let Some(status) = status(&addresses.http[index]).await {
                if status["role"] == "leader" {
                    return (index, status["term"].as_u64().unwrap());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader among the running members");
}

/// A peer connection to member `index` that says it is the intruder.
async fn intrude(addresses: &Addresses, index: usize) -> Framed<TcpStream, FrameCodec> {
    let stream = TcpStream::connect(&addresses.peer[index]).await.unwrap();
    let mut framed = Framed::new(stream, FrameCodec::new(16 << 20));
    let hello = Hello::new(Role::Peer, GROUP, NAMES[2]);
    handshake::connect(&mut framed, &hello).await.unwrap();
    framed
}

async fn send(framed: &mut Framed<TcpStream, FrameCodec>, to: usize, term: u64, body: MessageBody) {
    let message = Message {
        from: node_id_of(NAMES[2]),
        to: node_id_of(NAMES[to]),
        term,
        body,
    };
    let body = encode_peer(&message).unwrap();
    framed
        .send(Frame::new(FrameType::Peer, 0, body))
        .await
        .unwrap();
}

fn append(prev: (u64, u64), entries: &[(u64, u64)]) -> MessageBody {
    MessageBody::Append {
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries: entries
            .iter()
            .map(|(index, term)| Entry::normal(*index, *term, &b"evil"[..]))
            .collect(),
        leader_commit: 0,
    }
}

/// The violation counters member `index` reports, by reason.
async fn violations(addresses: &Addresses, index: usize, reason: &str) -> u64 {
    let metrics = http_get(&addresses.http[index], "/metrics")
        .await
        .unwrap_or_else(|| panic!("member {index} stopped answering"));
    let prefix = format!("dledger_peer_protocol_violations_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_for_violation(addresses: &Addresses, index: usize, reason: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while violations(addresses, index, reason).await == 0 {
        assert!(
            Instant::now() < deadline,
            "member {index} never counted a {reason} violation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn append_one(addresses: &Addresses, payload: &'static [u8]) {
    let mut config = ClientConfig::new(GROUP);
    config.retry_deadline_ms = 15_000;
    let client = Client::connect_with(addresses.peer[..2].to_vec(), config)
        .await
        .unwrap();
    client.append(payload).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_does_not_stop_a_running_member() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = Addresses::loopback(NAMES.len());
    // Each member on its own runtime, as the binary runs it.
    let servers: Vec<_> = (0..2)
        .map(|index| {
            let config = config(index, &addresses, dir.path());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime.block_on(serve(config, std::future::pending()))
            })
        })
        .collect();
    let (leader, term) = wait_for_leader(&addresses).await;
    let follower = 1 - leader;
    append_one(&addresses, b"before").await;

    // To the leader, in its own term: a second leader, acknowledgements
    // past its log, a read round it never started.
    let mut to_leader = intrude(&addresses, leader).await;
    send(&mut to_leader, leader, term, append((0, 0), &[])).await;
    let huge_ack = AppendResult::Success {
        match_index: 1 << 40,
    };
    send(
        &mut to_leader,
        leader,
        term,
        MessageBody::AppendResponse { result: huge_ack },
    )
    .await;
    send(
        &mut to_leader,
        leader,
        term,
        MessageBody::HeartbeatResponse {
            read_context: Some(1 << 40),
            commit_index: 0,
        },
    )
    .await;
    for reason in [
        "second_leader",
        "ack_past_last_index",
        "unknown_read_context",
    ] {
        wait_for_violation(&addresses, leader, reason).await;
    }

    // To the follower, in its leader's term: another leader's append.
    let mut to_follower = intrude(&addresses, follower).await;
    send(&mut to_follower, follower, term, append((0, 0), &[])).await;
    wait_for_violation(&addresses, follower, "second_leader").await;
    // In a newer term (any member may start one): malformed entries.
    let newer = term + 100;
    send(
        &mut to_follower,
        follower,
        newer,
        append((0, 0), &[(1, newer), (3, newer)]),
    )
    .await;
    send(
        &mut to_follower,
        follower,
        newer,
        append((0, 0), &[(1, newer + 1)]),
    )
    .await;
    wait_for_violation(&addresses, follower, "non_contiguous_entries").await;
    wait_for_violation(&addresses, follower, "bad_entry_term").await;
    drop((to_leader, to_follower));

    // Both members still run and the group still commits.
    for (index, server) in servers.iter().enumerate() {
        assert!(
            status(&addresses.http[index]).await.is_some(),
            "member {index} stopped"
        );
        assert!(!server.is_finished(), "member {index} exited");
    }
    append_one(&addresses, b"after").await;
    for (index, server) in servers.iter().enumerate() {
        assert!(!server.is_finished(), "member {index} exited");
    }
    // The servers run until the test process exits.
}
