//! The `ServerConfig` of a member of a group run in process, on loopback
//! ports, plaintext and open unless a test sets `security`.

use std::net::TcpListener as StdListener;
use std::path::Path;

use dledger_replica::server::members::{node_id_of, Member};
use dledger_replica::server::retention::RetentionPolicy;
use dledger_replica::server::{InitialState, ServerConfig};
use dledger_replica::store::FlushMode;

/// A port free now on 127.0.0.1 (another process may take it before the
/// member binds it; rare enough for tests).
fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Where each member listens, by index.
pub struct Addresses {
    /// Binary protocol (peers and clients).
    pub peer: Vec<String>,
    /// HTTP (or HTTPS).
    pub http: Vec<String>,
}

impl Addresses {
    /// Free loopback ports for `members` members.
    pub fn loopback(members: usize) -> Addresses {
        Addresses {
            peer: (0..members)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            http: (0..members)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
        }
    }
}

/// The configuration of member `index` of the group `group` (id
/// `group_id`) of the members `names`, bootstrapped together, at
/// `addresses`, with their data directories under `dir`: fast ticks and
/// elections, page-cache flushes, no TLS and no credentials.
pub fn config(
    group: &str,
    group_id: &str,
    names: &[&str],
    addresses: &Addresses,
    dir: &Path,
    index: usize,
) -> ServerConfig {
    let members = names
        .iter()
        .enumerate()
        .map(|(i, name)| Member {
            name: name.to_string(),
            peer_name: name.to_string(),
            id: node_id_of(name),
            tcp_address: addresses.peer[i].clone(),
            http_address: addresses.http[i].clone(),
        })
        .collect();
    ServerConfig {
        group: group.into(),
        group_id: group_id.into(),
        id: names[index].into(),
        members,
        initial_state: InitialState::New,
        data_dir: dir.join(names[index]),
        listen: addresses.peer[index].clone(),
        http_listen: addresses.http[index].clone(),
        tick_ms: 10,
        heartbeat_ms: 50,
        election_timeout_ms: 300,
        flush_mode: FlushMode::PageCache,
        segment_bytes: 1 << 20,
        max_entry_bytes: 1 << 16,
        preferred_leader: None,
        ready_max_lag: 1000,
        shutdown_transfer_timeout_ms: 0,
        retention: RetentionPolicy::default(),
        security: Default::default(),
    }
}
