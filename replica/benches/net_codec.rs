//! Encode/decode throughput of a peer message carrying 64 entries of 1 KiB,
//! through the postcard body and the frame codec, as the network layer does.
//!
//! Run: `cargo bench -p dledger-replica --bench net_codec`

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use dledger_replica::entry::Entry;
use dledger_replica::net::body::{decode_peer, encode_peer};
use dledger_replica::net::frame::{Frame, FrameCodec, FrameType};
use serde::{Deserialize, Serialize};
use tokio_util::codec::Decoder;

/// Shaped like a Raft append request.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct AppendEntries {
    term: u64,
    leader: u64,
    prev_log_index: u64,
    prev_log_term: u64,
    leader_commit: u64,
    entries: Vec<Entry>,
}

const ENTRIES: usize = 64;
const ENTRY_BYTES: usize = 1024;
const ROUNDS: usize = 20_000;

fn main() {
    let message = AppendEntries {
        term: 7,
        leader: 3,
        prev_log_index: 1_000_000,
        prev_log_term: 7,
        leader_commit: 999_990,
        entries: (0..ENTRIES as u64)
            .map(|i| Entry::normal(1_000_001 + i, 7, vec![(i % 251) as u8; ENTRY_BYTES]))
            .collect(),
    };
    let codec = FrameCodec::default();
    let body = encode_peer(&message).expect("encodes");
    let frame_bytes = codec
        .encode_to_bytes(&Frame::new(FrameType::Peer, 0, body.clone()))
        .expect("fits a frame");
    let payload_mb = (ENTRIES * ENTRY_BYTES * ROUNDS) as f64 / 1e6;
    println!(
        "message: {ENTRIES} entries x {ENTRY_BYTES} B, body {} B, frame {} B (overhead {} B)",
        body.len(),
        frame_bytes.len(),
        frame_bytes.len() - ENTRIES * ENTRY_BYTES
    );

    let started = Instant::now();
    for _ in 0..ROUNDS {
        let body = encode_peer(black_box(&message)).expect("encodes");
        let frame = codec
            .encode_to_bytes(&Frame::new(FrameType::Peer, 0, body))
            .expect("fits");
        black_box(frame);
    }
    report("encode (body + frame)", started, payload_mb);

    let started = Instant::now();
    for _ in 0..ROUNDS {
        let mut src = BytesMut::from(&frame_bytes[..]);
        let frame = FrameCodec::default()
            .decode(&mut src)
            .expect("valid")
            .expect("whole");
        let decoded: AppendEntries = decode_peer(&frame.body).expect("decodes");
        black_box(decoded);
    }
    report("decode (frame + body)", started, payload_mb);

    let decoded: AppendEntries = decode_peer(&body).expect("decodes");
    assert_eq!(decoded, message, "round trip");
}

fn report(what: &str, started: Instant, payload_mb: f64) {
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{what}: {:.0} MB/s of payload, {:.0} messages/s",
        payload_mb / seconds,
        ROUNDS as f64 / seconds
    );
}
