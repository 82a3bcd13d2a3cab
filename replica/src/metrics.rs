//! Prometheus metrics of one replica, rendered in the text exposition format
//! for `GET /metrics`.
//!
//! Hand-rolled on atomics: the set is small and fixed, and the hot paths
//! (append and fsync latency) only do a relaxed increment.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::api::{PeerStatus, Role, Status};

/// Upper bounds (seconds) of the latency histogram buckets: 100 µs to 10 s.
const LATENCY_BUCKETS_S: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS_S
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (slot, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
            cumulative += self.buckets[slot].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS_S.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum_s = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum_s}");
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// All metrics of one replica.
#[derive(Debug, Default)]
pub struct Metrics {
    /// From a client's append request to its commit (leader only).
    pub append_latency: Histogram,
    /// One write plus fdatasync of a batch by the storage thread.
    pub fsync_latency: Histogram,
    /// Elections this member started (as a candidate, not pre-votes).
    pub elections_total: AtomicU64,
    /// Times the known leader changed.
    pub leader_changes_total: AtomicU64,
    /// Entries appended on behalf of clients and committed.
    pub appends_total: AtomicU64,
    /// Bytes the log takes on disk.
    pub log_bytes: AtomicU64,
    /// Peer messages dropped because a peer's outbound queue was full.
    pub peer_messages_dropped_total: AtomicU64,
    /// Client appends answered "busy, retry" because the log's write queue
    /// (or the loop's input queue) was full.
    pub appends_refused_busy_total: AtomicU64,
    /// Client appends refused because the disk is full.
    pub appends_refused_disk_full_total: AtomicU64,
    /// Appends from the leader dropped unacknowledged (write queue full or
    /// disk full); the leader sends them again.
    pub peer_appends_refused_total: AtomicU64,
    /// Peer messages dropped on arrival because the consensus loop was far behind.
    pub inbound_peer_messages_dropped_total: AtomicU64,
    /// The latest status snapshot, for the gauges.
    status: Mutex<Option<Status>>,
}

impl Metrics {
    /// Replaces the status snapshot the gauges are rendered from.
    pub fn set_status(&self, status: Status) {
        if let Ok(mut slot) = self.status.lock() {
            *slot = Some(status);
        }
    }

    /// The whole exposition, ready to serve.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let status = self.status.lock().ok().and_then(|slot| slot.clone());
        if let Some(status) = &status {
            render_status(&mut out, status);
        }
        let counters = [
            (
                "dledger_elections_total",
                "Elections this member started as a candidate.",
                &self.elections_total,
            ),
            (
                "dledger_leader_changes_total",
                "Times the known leader changed.",
                &self.leader_changes_total,
            ),
            (
                "dledger_appends_total",
                "Client entries committed through this member as leader.",
                &self.appends_total,
            ),
            (
                "dledger_peer_messages_dropped_total",
                "Peer messages dropped because an outbound queue was full.",
                &self.peer_messages_dropped_total,
            ),
            (
                "dledger_appends_refused_busy_total",
                "Client appends answered busy (retry) because a write queue was full.",
                &self.appends_refused_busy_total,
            ),
            (
                "dledger_appends_refused_disk_full_total",
                "Client appends refused because the disk is full.",
                &self.appends_refused_disk_full_total,
            ),
            (
                "dledger_peer_appends_refused_total",
                "Appends from the leader dropped unacknowledged (queue or disk full).",
                &self.peer_appends_refused_total,
            ),
            (
                "dledger_inbound_peer_messages_dropped_total",
                "Peer messages dropped on arrival because the consensus loop was far behind.",
                &self.inbound_peer_messages_dropped_total,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP dledger_log_bytes Bytes the log takes on disk.");
        let _ = writeln!(out, "# TYPE dledger_log_bytes gauge");
        let _ = writeln!(
            out,
            "dledger_log_bytes {}",
            self.log_bytes.load(Ordering::Relaxed)
        );
        self.append_latency.render(
            &mut out,
            "dledger_append_latency_seconds",
            "From a client's append to its commit, on the leader.",
        );
        self.fsync_latency.render(
            &mut out,
            "dledger_fsync_latency_seconds",
            "Write and fdatasync of one batch.",
        );
        out
    }
}

/// A per-follower gauge: name, help, and how to read it from the status.
type PeerGauge = (&'static str, &'static str, fn(&PeerStatus) -> u64);

fn render_status(out: &mut String, status: &Status) {
    let _ = writeln!(out, "# HELP dledger_role 1 for this member's current role.");
    let _ = writeln!(out, "# TYPE dledger_role gauge");
    for role in [Role::Leader, Role::Follower, Role::Candidate, Role::Learner] {
        let value = u8::from(role == status.role);
        let _ = writeln!(out, "dledger_role{{role=\"{}\"}} {value}", role.as_str());
    }
    let gauges = [
        ("dledger_term", "The current term.", status.term),
        (
            "dledger_first_index",
            "First index in the log.",
            status.first_index,
        ),
        (
            "dledger_last_index",
            "Last index in the log.",
            status.last_index,
        ),
        (
            "dledger_commit_index",
            "Highest committed index.",
            status.commit_index,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    }
    let per_peer: [PeerGauge; 2] = [
        (
            "dledger_peer_match_index",
            "Highest index known on a follower (leader only).",
            |peer| peer.match_index,
        ),
        (
            "dledger_peer_lag_entries",
            "Entries a follower is behind (leader only).",
            |peer| peer.lag,
        ),
    ];
    for (name, help, value) in per_peer {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for peer in &status.peers {
            let _ = writeln!(out, "{name}{{peer=\"{}\"}} {}", peer.id, value(peer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let mut out = String::new();
        histogram.render(&mut out, "h", "help");
        assert!(out.contains("h_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("h_count 3\n"), "{out}");
    }

    #[test]
    fn status_gauges_and_peers_are_rendered() {
        let metrics = Metrics::default();
        metrics.set_status(Status {
            group: "g".into(),
            id: "a".into(),
            version: "0".into(),
            role: Role::Leader,
            term: 4,
            leader_id: Some("a".into()),
            first_index: 1,
            last_index: 9,
            last_term: 4,
            commit_index: 8,
            peers: vec![PeerStatus {
                id: "b".into(),
                match_index: 7,
                lag: 2,
                last_contact_ms: 5,
            }],
        });
        metrics.elections_total.fetch_add(2, Ordering::Relaxed);
        let out = metrics.render();
        assert!(out.contains("dledger_role{role=\"leader\"} 1\n"));
        assert!(out.contains("dledger_role{role=\"follower\"} 0\n"));
        assert!(out.contains("dledger_term 4\n"));
        assert!(out.contains("dledger_commit_index 8\n"));
        assert!(out.contains("dledger_peer_match_index{peer=\"b\"} 7\n"));
        assert!(out.contains("dledger_peer_lag_entries{peer=\"b\"} 2\n"));
        assert!(out.contains("dledger_elections_total 2\n"));
    }
}
