//! The harness's HTTP side checked against a stand-in that speaks the
//! DESIGN.md contract over real sockets (no consensus: one shared log behind a
//! "leader" address and a "follower" address that redirects to it). It proves
//! the client, the redirect following, the load recorder, the range reader and
//! the checker work end to end, and that the checker catches a lost entry.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use dledger_e2e::check::{check_logs, read_range};
use dledger_e2e::cluster::Endpoint;
use dledger_e2e::http::{AppendOutcome, Client};
use dledger_e2e::load::{Load, LoadConfig};
use dledger_e2e::monitor::{split_brains, Monitor};

const TERM: u64 = 4;
const TIMEOUT: Duration = Duration::from_secs(5);

/// One shared log served at two addresses.
struct StandIn {
    log: Mutex<Vec<Vec<u8>>>,
    leader: SocketAddr,
    /// When set, the entry at this index is served with other bytes.
    corrupt_index: Mutex<Option<u64>>,
    stop: AtomicBool,
}

impl StandIn {
    fn start() -> (Arc<Self>, SocketAddr, SocketAddr) {
        let leader = TcpListener::bind("127.0.0.1:0").expect("bind");
        let follower = TcpListener::bind("127.0.0.1:0").expect("bind");
        let leader_address = leader.local_addr().expect("addr");
        let follower_address = follower.local_addr().expect("addr");
        let stand_in = Arc::new(Self {
            log: Mutex::new(Vec::new()),
            leader: leader_address,
            corrupt_index: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        for (listener, is_leader) in [(leader, true), (follower, false)] {
            let stand_in = Arc::clone(&stand_in);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stand_in.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let stand_in = Arc::clone(&stand_in);
                    if let Ok(stream) = stream {
                        std::thread::spawn(move || stand_in.serve(stream, is_leader));
                    }
                }
            });
        }
        (stand_in, leader_address, follower_address)
    }

    fn serve(&self, stream: TcpStream, is_leader: bool) {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut content_length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).expect("header");
                if header == "\r\n" || header.is_empty() {
                    break;
                }
                let lower = header.to_ascii_lowercase();
                if let Some(value) = lower.strip_prefix("content-length:") {
                    content_length = value.trim().parse().expect("length");
                }
            }
            let mut body = vec![0; content_length];
            reader.read_exact(&mut body).expect("body");
            let mut parts = request_line.split_whitespace();
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let response = self.answer(method, target, body, is_leader);
            (&stream).write_all(&response).expect("write");
        }
    }

    fn answer(&self, method: &str, target: &str, body: Vec<u8>, is_leader: bool) -> Vec<u8> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        match (method, path, is_leader) {
            ("POST", "/v1/entries", false) => response(
                "307 Temporary Redirect",
                &[("Location", format!("http://{}/v1/entries", self.leader))],
                b"",
            ),
            ("POST", "/v1/entries", true) => {
                let mut log = self.log.lock().expect("log");
                log.push(body);
                let json = format!(r#"{{"index":{},"term":{TERM}}}"#, log.len());
                response("200 OK", &[], json.as_bytes())
            }
            ("GET", "/v1/entries", _) => {
                let from: usize = query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("from="))
                    .and_then(|v| v.parse().ok())
                    .expect("from");
                let log = self.log.lock().expect("log");
                let corrupt = *self.corrupt_index.lock().expect("corrupt");
                let entries: Vec<String> = log
                    .iter()
                    .enumerate()
                    .skip(from.saturating_sub(1))
                    .take(7) // small pages, so paging is exercised
                    .map(|(offset, payload)| {
                        let index = offset as u64 + 1;
                        let payload = if corrupt == Some(index) {
                            b"other".as_slice()
                        } else {
                            payload
                        };
                        format!(
                            r#"{{"index":{index},"term":{TERM},"payloadBase64":"{}"}}"#,
                            base64::engine::general_purpose::STANDARD.encode(payload)
                        )
                    })
                    .collect();
                let json = format!(
                    r#"{{"entries":[{}],"commitIndex":{}}}"#,
                    entries.join(","),
                    log.len()
                );
                response("200 OK", &[], json.as_bytes())
            }
            ("GET", "/status", _) => {
                let commit = self.log.lock().expect("log").len();
                let (id, role) = if is_leader {
                    ("s-0", "leader")
                } else {
                    ("s-1", "follower")
                };
                let json = format!(
                    r#"{{"group":"e2e","id":"{id}","version":"0","role":"{role}","term":{TERM},
                    "leaderId":"s-0","firstIndex":1,"lastIndex":{commit},"lastTerm":{TERM},
                    "commitIndex":{commit},"peers":[]}}"#
                );
                response("200 OK", &[], json.as_bytes())
            }
            ("GET", single, _) if single.starts_with("/v1/entries/") => {
                let index: usize = single["/v1/entries/".len()..].parse().expect("index");
                let log = self.log.lock().expect("log");
                match index.checked_sub(1).and_then(|i| log.get(i)) {
                    Some(payload) => {
                        response("200 OK", &[("X-DLedger-Term", TERM.to_string())], payload)
                    }
                    None => response("404 Not Found", &[], b"past the commit index"),
                }
            }
            _ => response("404 Not Found", &[], b"no such route"),
        }
    }
}

fn response(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut text = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[test]
fn appends_follow_the_redirect_and_the_checker_sees_what_was_acknowledged() {
    let (stand_in, leader, follower) = StandIn::start();
    match Client::new(follower, TIMEOUT).append(b"first") {
        AppendOutcome::Acknowledged {
            index,
            term,
            leader: answered,
        } => {
            assert_eq!((index, term), (1, TERM));
            assert_eq!(
                answered,
                leader.to_string(),
                "the leader, reached by redirect, answered"
            );
        }
        other => panic!("append through the follower: {other:?}"),
    }

    let endpoints = [("s-0", leader), ("s-1", follower)]
        .into_iter()
        .map(|(id, http_address)| Endpoint {
            id: id.to_owned(),
            http_address,
            namespace: None,
        })
        .collect();
    let monitor = Monitor::start(endpoints);
    let load = Load::start(&LoadConfig::new("harness", 3, vec![follower, leader]));
    load.wait_for_more(60, TIMEOUT).expect("acknowledgements");
    let acks = load.stop().expect("load");
    assert!(acks.len() >= 60);
    std::thread::sleep(Duration::from_millis(100));
    let observations = monitor.stop().expect("monitor");
    assert!(observations
        .iter()
        .any(|o| o.member == "s-0" && o.role == "leader"));
    assert!(observations
        .iter()
        .any(|o| o.member == "s-1" && o.role == "follower"));
    assert!(split_brains(&observations).is_empty());

    let client = Client::new(follower, TIMEOUT);
    assert_eq!(
        client.status().expect("status").leader_id.as_deref(),
        Some("s-0")
    );
    let first = &acks[0];
    assert_eq!(
        client.entry(first.index).expect("single read"),
        Some((TERM, first.payload.clone()))
    );
    assert_eq!(client.entry(1_000_000).expect("past the end"), None);

    let commit = stand_in.log.lock().expect("log").len() as u64;
    let read = |address| read_range(&Client::new(address, TIMEOUT), 1, commit).expect("range read");
    let logs = vec![
        ("leader".to_owned(), read(leader)),
        ("follower".to_owned(), read(follower)),
    ];
    assert_eq!(logs[0].1.len() as u64, commit);
    assert_eq!(check_logs(&logs, &acks), Vec::<String>::new());

    // The same history with one acknowledged entry served wrong must fail.
    let victim = acks[acks.len() / 2].index;
    *stand_in.corrupt_index.lock().expect("corrupt") = Some(victim);
    let logs = vec![("leader".to_owned(), read(leader))];
    let problems = check_logs(&logs, &acks);
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&format!("at index {victim}"))),
        "a lost entry went unnoticed: {problems:?}"
    );
    stand_in.stop.store(true, Ordering::SeqCst);
}
