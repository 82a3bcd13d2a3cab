//! A group with mutual TLS: members accept only peers whose certificate
//! chains to the group's CA and names them, clients need a certificate
//! from the CA, and a rotated certificate is used without a restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use dledger_replica::certs::Ca;
use dledger_replica::core::{Message, MessageBody};
use dledger_replica::entry::Entry;
use dledger_replica::net::body::encode_peer;
use dledger_replica::net::client::{Client, ClientConfig};
use dledger_replica::net::frame::{Frame, FrameCodec, FrameType};
use dledger_replica::net::handshake::{self, ErrorCode, HandshakeError, Hello, Role};
use dledger_replica::net::stream::Stream;
use dledger_replica::net::tls::{Tls, TlsFiles};
use dledger_replica::server::members::node_id_of;
use dledger_replica::server::{serve, Security, ServerConfig};
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use common::group::Addresses;

const GROUP: &str = "secure";
const NAMES: [&str; 3] = ["s0", "s1", "s2"];

/// Writes a certificate for `names` signed by `ca` into `dir/<file>.*`.
fn write_credential(dir: &Path, file: &str, ca: &Ca, names: &[&str]) -> TlsFiles {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let (cert, key) = ca.issue(&names, 30).unwrap().write(dir, file).unwrap();
    let files = TlsFiles {
        cert,
        key,
        ca: dir.join(format!("{file}.ca")),
    };
    std::fs::write(&files.ca, ca.cert_pem()).unwrap();
    files
}

struct Group {
    addresses: Addresses,
    files: Vec<TlsFiles>,
    ca: Ca,
    dir: tempfile::TempDir,
}

fn config(group: &Group, index: usize) -> ServerConfig {
    let plaintext = common::group::config(
        GROUP,
        "tls-test",
        &NAMES,
        &group.addresses,
        group.dir.path(),
        index,
    );
    ServerConfig {
        security: Security {
            tls: Some(group.files[index].clone()),
            tls_reload_ms: 100,
            token_file: None,
            admin_names: vec!["dledger-operator".into()],
            metrics_open: true,
        },
        ..plaintext
    }
}

/// Three members with TLS, each on its own runtime as the binary runs it.
fn start_group() -> Group {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = Ca::new(GROUP, 30).unwrap();
    let files = NAMES
        .iter()
        .map(|name| write_credential(dir.path(), name, &ca, &[name, "127.0.0.1", "localhost"]))
        .collect();
    let group = Group {
        addresses: Addresses::loopback(NAMES.len()),
        files,
        ca,
        dir,
    };
    for index in 0..3 {
        let config = config(&group, index);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(serve(config, std::future::pending()))
        });
    }
    group
}

fn client_config(tls: Option<Tls>) -> ClientConfig {
    let mut config = ClientConfig::new(GROUP);
    config.retry_deadline_ms = 3_000;
    config.tls = tls;
    config
}

fn load(files: TlsFiles) -> Tls {
    Tls::load(files).unwrap()
}

/// An application's credential (a certificate from the group's CA that
/// names `billing`) and a client of the group that presents it.
async fn application(group: &Group) -> (Tls, Client) {
    let app = load(write_credential(
        group.dir.path(),
        "billing",
        &group.ca,
        &["billing"],
    ));
    let client = Client::connect_with(
        group.addresses.peer.clone(),
        client_config(Some(app.clone())),
    )
    .await
    .expect("a client with a certificate from the CA connects");
    (app, client)
}

/// The answer of member `index` to `GET path` over HTTPS with the
/// credential `tls`, head and body.
async fn https_get(group: &Group, index: usize, tls: &Tls, path: &str) -> String {
    let tcp = TcpStream::connect(&group.addresses.http[index])
        .await
        .unwrap();
    let mut stream = tls.connect(tcp, "127.0.0.1").await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
}

/// The `/metrics` text of member `index` over HTTPS, as the operator
/// would read it (its certificate names `dledger-operator`).
async fn metrics(group: &Group, index: usize, operator: &Tls) -> String {
    https_get(group, index, operator, "/metrics").await
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

async fn refused_total(group: &Group, operator: &Tls) -> u64 {
    let mut total = 0;
    for index in 0..3 {
        let text = metrics(group, index, operator).await;
        total += counter(&text, "dledger_connections_unauthenticated_total");
    }
    total
}

/// A peer handshake to member 0 as member `s2` over `stream`.
async fn claim_to_be_s2(stream: Stream) -> Result<Framed<Stream, FrameCodec>, HandshakeError> {
    let mut framed = Framed::new(stream, FrameCodec::new(16 << 20));
    let hello = Hello::new(Role::Peer, GROUP, NAMES[2]);
    handshake::connect(&mut framed, &hello).await?;
    Ok(framed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_talk_over_mutual_tls_and_refuse_whoever_the_ca_did_not_name() {
    let group = start_group();
    let (app, client) = application(&group).await;
    let operator = load(write_credential(
        group.dir.path(),
        "operator",
        &group.ca,
        &["dledger-operator"],
    ));

    // The group elects a leader and commits over TLS links.
    let deadline = Instant::now() + Duration::from_secs(20);
    let appended = loop {
        match client.append(&b"over tls"[..]).await {
            Ok(appended) => break appended,
            Err(error) => {
                assert!(Instant::now() < deadline, "no append over TLS: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let read = client.get(appended.0).await.unwrap();
    assert_eq!(&read.payload[..], b"over tls");
    let before = refused_total(&group, &operator).await;

    // A client without TLS, or with a certificate from another CA.
    // Our own client without TLS is told why, and does not retry.
    let Err(error) = Client::connect_with(group.addresses.peer.clone(), client_config(None)).await
    else {
        panic!("a plaintext client connected to a TLS group");
    };
    let error = error.to_string();
    assert!(error.contains("requires TLS"), "{error}");
    let (other_ca, _) = Ca::new("other", 30).unwrap();
    let stranger = load(write_credential(
        group.dir.path(),
        "stranger",
        &other_ca,
        &["s2", "127.0.0.1"],
    ));
    assert!(Client::connect_with(
        group.addresses.peer.clone(),
        client_config(Some(stranger.clone()))
    )
    .await
    .is_err());

    // A peer without a certificate: a plaintext hello is no TLS handshake.
    let plain = TcpStream::connect(&group.addresses.peer[0]).await.unwrap();
    assert!(claim_to_be_s2(Stream::Plain(plain)).await.is_err());
    // A peer with a certificate from another CA that names s2.
    let tcp = TcpStream::connect(&group.addresses.peer[0]).await.unwrap();
    let refused = match stranger.connect(tcp, "127.0.0.1").await {
        Err(_) => true,
        Ok(stream) => claim_to_be_s2(stream).await.is_err(),
    };
    assert!(refused, "a certificate from another CA was accepted");
    // A certificate from the group's CA for an application, claiming to be
    // member s2: refused at the handshake, so no Append can follow.
    let tcp = TcpStream::connect(&group.addresses.peer[0]).await.unwrap();
    let stream = app.connect(tcp, "127.0.0.1").await.unwrap();
    match claim_to_be_s2(stream).await {
        Err(HandshakeError::Refused {
            code: ErrorCode::Unauthenticated,
            message,
        }) => assert!(message.contains("does not name"), "{message}"),
        Ok(mut framed) => {
            // Were it accepted, this Append at a high term would be
            // taken by member 0.
            let message = Message {
                from: node_id_of(NAMES[2]),
                to: node_id_of(NAMES[0]),
                term: 1_000,
                body: MessageBody::Append {
                    prev_log_index: 0,
                    prev_log_term: 0,
                    entries: vec![Entry::normal(1, 1_000, &b"forged"[..])],
                    leader_commit: 1,
                },
            };
            let body = encode_peer(&message).unwrap();
            let _ = framed.send(Frame::new(FrameType::Peer, 0, body)).await;
            panic!("an application certificate was accepted as member s2");
        }
        Err(other) => panic!("refused for another reason: {other}"),
    }
    // Each refusal is counted (two clients and three peers; a client
    // retries, so at least once each).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let refused = refused_total(&group, &operator).await - before;
        if refused >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "only {refused} refusals counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The group still commits, and its term did not move.
    let again = client.append(&b"still here"[..]).await.unwrap();
    assert_eq!(again.0, appended.0 + 1);
    assert_eq!(again.1, appended.1);

    // A follower sends a client on to the leader over HTTPS.
    let path = "/v1/entries?from=1&linearizable=true";
    let mut redirects = 0;
    for index in 0..3 {
        let answer = https_get(&group, index, &app, path)
            .await
            .to_ascii_lowercase();
        if answer.starts_with("http/1.0 307") || answer.starts_with("http/1.1 307") {
            redirects += 1;
            assert!(answer.contains("\r\nlocation: https://"), "{answer}");
        }
    }
    assert!(redirects > 0, "no follower redirected {path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_member_certificate_is_used_without_a_restart_and_loses_no_write() {
    let group = start_group();
    let (app, client) = application(&group).await;
    let certificate_of = |index: usize| {
        let app = app.clone();
        let address = group.addresses.peer[index].clone();
        async move {
            // The members start on threads of their own: on a loaded
            // machine one may not listen yet when the first call comes.
            let deadline = Instant::now() + Duration::from_secs(10);
            let tcp = loop {
                match TcpStream::connect(&address).await {
                    Ok(tcp) => break tcp,
                    Err(error) => {
                        assert!(Instant::now() < deadline, "member {address}: {error}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            };
            let stream = app.connect(tcp, "127.0.0.1").await.unwrap();
            stream.peer_certificate().unwrap().clone()
        }
    };
    let old = certificate_of(1).await;

    // Appends run while every member's certificate is replaced.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(4);
            while Instant::now() < deadline {
                let payload = format!("write {}", acknowledged.len());
                if let Ok(appended) = client.append(payload.clone().into_bytes()).await {
                    acknowledged.push((appended.0, payload));
                }
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (index, name) in NAMES.iter().enumerate() {
        let fresh = group
            .ca
            .issue(&[name.to_string(), "127.0.0.1".into()], 30)
            .unwrap();
        let files = &group.files[index];
        // Key first, then certificate: in between, the pair does not
        // match, and the member keeps the old one.
        std::fs::write(&files.key, fresh.key_pem).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        std::fs::write(&files.cert, fresh.cert_pem).unwrap();
    }
    let acknowledged = writer.await.unwrap();
    assert!(acknowledged.len() > 10, "{} writes", acknowledged.len());

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if certificate_of(1).await != old {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate is not used");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every acknowledged write is there, and the members still replicate
    // (new links use the new certificates).
    for (index, payload) in &acknowledged {
        let read = client.get(*index).await.unwrap();
        assert_eq!(&read.payload[..], payload.as_bytes(), "entry {index}");
    }
    client.append(&b"after rotation"[..]).await.unwrap();
}
