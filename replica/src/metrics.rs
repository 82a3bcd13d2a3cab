//! Prometheus metrics of one replica, kept in a `prometheus` crate registry
//! and exposed in the text format for `GET /metrics`.
//!
//! Convention shared with the operator: units in names, counters end in
//! `_total`, latencies are `_seconds` histograms. Recording on the hot paths
//! (append and fsync latency) is a lock-free atomic update in the library.

use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder as _, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::api::{Role, Status};
use crate::core::ViolationKind;

/// Upper bounds (seconds) of the latency histogram buckets: 100 µs to 10 s.
const LATENCY_BUCKETS_S: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Consumer groups exported with a lag gauge at most (the first ones in
/// name order): a label value per group, so their number is bounded to keep
/// the exposition and the scraper's series in check.
/// `dledger_consumer_groups` counts them all.
pub const MAX_EXPORTED_CONSUMER_GROUPS: usize = 1_000;

/// A latency histogram in seconds, recorded from a [`Duration`].
#[derive(Debug, Clone)]
pub struct Histogram(prometheus::Histogram);

impl Histogram {
    fn new(name: &str, help: &str) -> prometheus::Result<Self> {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_S.to_vec());
        Ok(Histogram(prometheus::Histogram::with_opts(opts)?))
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.0.get_sample_count()
    }
}

/// All metrics of one replica.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// From a client's append request to its commit (leader only).
    pub append_latency: Histogram,
    /// One write plus fdatasync of a batch by the storage thread.
    pub fsync_latency: Histogram,
    /// Elections this member started (as a candidate, not pre-votes).
    pub elections_total: IntCounter,
    /// Times the known leader changed.
    pub leader_changes_total: IntCounter,
    /// Entries appended on behalf of clients and committed.
    pub appends_total: IntCounter,
    /// Bytes the log takes on disk ([`Metrics::set_log_bytes`]).
    log_bytes: IntGauge,
    /// Peer messages dropped because a peer's outbound queue was full.
    pub peer_messages_dropped_total: IntCounter,
    /// Client appends answered "busy, retry" because the log's write queue
    /// (or the loop's input queue) was full.
    pub appends_refused_busy_total: IntCounter,
    /// Client appends refused because the disk is full.
    pub appends_refused_disk_full_total: IntCounter,
    /// Appends from the leader dropped unacknowledged (write queue full or
    /// disk full); the leader sends them again.
    pub peer_appends_refused_total: IntCounter,
    /// Peer messages dropped on arrival because the consensus loop was far behind.
    pub inbound_peer_messages_dropped_total: IntCounter,
    /// Peer messages the core dropped for breaking the protocol, by reason.
    peer_violations_total: IntCounterVec,
    /// Connections to the binary port refused for their credentials.
    pub connections_unauthenticated_total: IntCounter,
    /// The status gauges, refreshed from a snapshot at each scrape.
    gauges: StatusGauges,
    /// The latest status snapshot; the lock also keeps one scrape's
    /// refresh-and-gather from interleaving with another's.
    status: Mutex<Option<Status>>,
    /// Each consumer group's lag, refreshed at each scrape.
    consumer_lag: IntGaugeVec,
    /// How many consumer groups there are (exported or not).
    consumer_groups: IntGauge,
    /// The latest groups and lags, and the number of groups in all
    /// ([`Metrics::set_consumer_lags`]).
    consumer_lags: Mutex<(Vec<(String, u64)>, usize)>,
}

/// Gauges that mirror `/status`.
#[derive(Debug)]
struct StatusGauges {
    role: IntGaugeVec,
    term: IntGauge,
    first_index: IntGauge,
    last_index: IntGauge,
    commit_index: IntGauge,
    peer_match_index: IntGaugeVec,
    peer_lag_entries: IntGaugeVec,
}

/// Gauges are `i64` in the library; our indices are `u64` and never near
/// the limit, but saturate rather than wrap if one ever were.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl StatusGauges {
    fn new() -> prometheus::Result<Self> {
        Ok(StatusGauges {
            role: IntGaugeVec::new(
                Opts::new("dledger_role", "1 for this member's current role."),
                &["role"],
            )?,
            term: IntGauge::new("dledger_term", "The current term.")?,
            first_index: IntGauge::new("dledger_first_index", "First index in the log.")?,
            last_index: IntGauge::new("dledger_last_index", "Last index in the log.")?,
            commit_index: IntGauge::new("dledger_commit_index", "Highest committed index.")?,
            peer_match_index: IntGaugeVec::new(
                Opts::new(
                    "dledger_peer_match_index",
                    "Highest index known on a follower (leader only).",
                ),
                &["peer"],
            )?,
            peer_lag_entries: IntGaugeVec::new(
                Opts::new(
                    "dledger_peer_lag_entries",
                    "Entries a follower is behind (leader only).",
                ),
                &["peer"],
            )?,
        })
    }

    fn apply(&self, status: &Status) {
        for role in [Role::Leader, Role::Follower, Role::Candidate, Role::Learner] {
            self.role
                .with_label_values(&[role.as_str()])
                .set(i64::from(role == status.role));
        }
        self.term.set(gauge_value(status.term));
        self.first_index.set(gauge_value(status.first_index));
        self.last_index.set(gauge_value(status.last_index));
        self.commit_index.set(gauge_value(status.commit_index));
        // Peers that left the status (or a leader that became a follower)
        // must vanish from the exposition, not keep their last value.
        self.peer_match_index.reset();
        self.peer_lag_entries.reset();
        for peer in &status.peers {
            self.peer_match_index
                .with_label_values(&[peer.id.as_str()])
                .set(gauge_value(peer.match_index));
            self.peer_lag_entries
                .with_label_values(&[peer.id.as_str()])
                .set(gauge_value(peer.lag));
        }
    }
}

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let metrics = Metrics {
            append_latency: Histogram::new(
                "dledger_append_latency_seconds",
                "From a client's append to its commit, on the leader.",
            )?,
            fsync_latency: Histogram::new(
                "dledger_fsync_latency_seconds",
                "Write and fdatasync of one batch.",
            )?,
            elections_total: IntCounter::new(
                "dledger_elections_total",
                "Elections this member started as a candidate.",
            )?,
            leader_changes_total: IntCounter::new(
                "dledger_leader_changes_total",
                "Times the known leader changed.",
            )?,
            appends_total: IntCounter::new(
                "dledger_appends_total",
                "Client entries committed through this member as leader.",
            )?,
            log_bytes: IntGauge::new("dledger_log_bytes", "Bytes the log takes on disk.")?,
            peer_messages_dropped_total: IntCounter::new(
                "dledger_peer_messages_dropped_total",
                "Peer messages dropped because an outbound queue was full.",
            )?,
            appends_refused_busy_total: IntCounter::new(
                "dledger_appends_refused_busy_total",
                "Client appends answered busy (retry) because a write queue was full.",
            )?,
            appends_refused_disk_full_total: IntCounter::new(
                "dledger_appends_refused_disk_full_total",
                "Client appends refused because the disk is full.",
            )?,
            peer_appends_refused_total: IntCounter::new(
                "dledger_peer_appends_refused_total",
                "Appends from the leader dropped unacknowledged (queue or disk full).",
            )?,
            inbound_peer_messages_dropped_total: IntCounter::new(
                "dledger_inbound_peer_messages_dropped_total",
                "Peer messages dropped on arrival because the consensus loop was far behind.",
            )?,
            peer_violations_total: IntCounterVec::new(
                Opts::new(
                    "dledger_peer_protocol_violations_total",
                    "Peer messages dropped for breaking the protocol, by reason.",
                ),
                &["reason"],
            )?,
            connections_unauthenticated_total: IntCounter::new(
                "dledger_connections_unauthenticated_total",
                "Connections to the binary port refused for their credentials: a failed TLS \
                 handshake, a peer certificate that does not name the member, a client without \
                 a certificate.",
            )?,
            gauges: StatusGauges::new()?,
            status: Mutex::new(None),
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "dledger_consumer_lag",
                    "Committed entries a consumer group has not read yet (commit index + 1 - \
                     its offset); the first 1000 groups by name.",
                ),
                &["group"],
            )?,
            consumer_groups: IntGauge::new(
                "dledger_consumer_groups",
                "Consumer groups with a committed offset.",
            )?,
            consumer_lags: Mutex::new((Vec::new(), 0)),
            registry,
        };
        metrics.register_all()?;
        // Every reason shows from the start (as 0), so a rate() over it
        // works before the first violation.
        for kind in ViolationKind::ALL {
            metrics
                .peer_violations_total
                .with_label_values(&[kind.as_str()]);
        }
        Ok(metrics)
    }

    fn register_all(&self) -> prometheus::Result<()> {
        let registry = &self.registry;
        registry.register(Box::new(self.append_latency.0.clone()))?;
        registry.register(Box::new(self.fsync_latency.0.clone()))?;
        registry.register(Box::new(self.elections_total.clone()))?;
        registry.register(Box::new(self.leader_changes_total.clone()))?;
        registry.register(Box::new(self.appends_total.clone()))?;
        registry.register(Box::new(self.log_bytes.clone()))?;
        registry.register(Box::new(self.peer_messages_dropped_total.clone()))?;
        registry.register(Box::new(self.appends_refused_busy_total.clone()))?;
        registry.register(Box::new(self.appends_refused_disk_full_total.clone()))?;
        registry.register(Box::new(self.peer_appends_refused_total.clone()))?;
        registry.register(Box::new(self.inbound_peer_messages_dropped_total.clone()))?;
        registry.register(Box::new(self.peer_violations_total.clone()))?;
        registry.register(Box::new(self.connections_unauthenticated_total.clone()))?;
        registry.register(Box::new(self.consumer_lag.clone()))?;
        registry.register(Box::new(self.consumer_groups.clone()))?;
        let gauges = &self.gauges;
        registry.register(Box::new(gauges.role.clone()))?;
        registry.register(Box::new(gauges.term.clone()))?;
        registry.register(Box::new(gauges.first_index.clone()))?;
        registry.register(Box::new(gauges.last_index.clone()))?;
        registry.register(Box::new(gauges.commit_index.clone()))?;
        registry.register(Box::new(gauges.peer_match_index.clone()))?;
        registry.register(Box::new(gauges.peer_lag_entries.clone()))?;
        Ok(())
    }

    /// Counts one peer message dropped for breaking the protocol.
    pub fn count_violation(&self, kind: ViolationKind) {
        self.peer_violations_total
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Records how many bytes the log takes on disk.
    pub fn set_log_bytes(&self, bytes: u64) {
        self.log_bytes.set(gauge_value(bytes));
    }

    /// Replaces the status snapshot the gauges are rendered from.
    pub fn set_status(&self, status: Status) {
        if let Ok(mut slot) = self.status.lock() {
            *slot = Some(status);
        }
    }

    /// Replaces the consumer groups and their lags (in name order; only
    /// the first [`MAX_EXPORTED_CONSUMER_GROUPS`] are exported) the lag
    /// gauges are rendered from, and the number of groups in all.
    pub fn set_consumer_lags(&self, lags: Vec<(String, u64)>, groups_total: usize) {
        if let Ok(mut slot) = self.consumer_lags.lock() {
            *slot = (lags, groups_total);
        }
    }

    fn apply_consumer_lags(&self) {
        let Ok(slot) = self.consumer_lags.lock() else {
            return;
        };
        let (lags, groups_total) = &*slot;
        // Groups gone since the last scrape must vanish, not keep a value.
        self.consumer_lag.reset();
        self.consumer_groups.set(gauge_value(*groups_total as u64));
        for (group, lag) in lags.iter().take(MAX_EXPORTED_CONSUMER_GROUPS) {
            self.consumer_lag
                .with_label_values(&[group.as_str()])
                .set(gauge_value(*lag));
        }
    }

    /// The whole exposition, ready to serve.
    pub fn render(&self) -> String {
        let families = match self.status.lock() {
            Ok(slot) => {
                if let Some(status) = slot.as_ref() {
                    self.gauges.apply(status);
                }
                self.apply_consumer_lags();
                self.registry.gather()
            }
            Err(_) => self.registry.gather(),
        };
        let mut out = Vec::with_capacity(4096);
        if let Err(err) = TextEncoder::new().encode(&families, &mut out) {
            // Only an invalid metric definition can fail here; serve what
            // was encoded and say why the rest is missing.
            tracing::warn!("encoding metrics: {err}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        // The definitions are fixed in this file (names, help texts,
        // buckets), so building them fails only on a programming error,
        // which the unit tests below would catch.
        match Metrics::new() {
            Ok(metrics) => metrics,
            Err(err) => panic!("metric definitions are invalid: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PeerStatus;

    fn status(role: Role, peers: Vec<PeerStatus>) -> Status {
        Status {
            group: "g".into(),
            id: "a".into(),
            version: "0".into(),
            role,
            term: 4,
            leader_id: Some("a".into()),
            first_index: 1,
            last_index: 9,
            last_term: 4,
            commit_index: 8,
            peers,
            leader_commit_index: Some(8),
            lag: 1,
            configuration: None,
            incarnation: 0,
            group_id: String::new(),
            certificate_not_after_s: None,
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_in_seconds() {
        let metrics = Metrics::default();
        let histogram = &metrics.fsync_latency;
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        assert_eq!(histogram.count(), 3);
        let out = metrics.render();
        let name = "dledger_fsync_latency_seconds";
        assert!(out.contains(&format!("# TYPE {name} histogram\n")), "{out}");
        assert!(
            out.contains(&format!("{name}_bucket{{le=\"0.0001\"}} 1\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{name}_bucket{{le=\"0.005\"}} 2\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{name}_bucket{{le=\"10\"}} 2\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 3\n")),
            "{out}"
        );
        assert!(out.contains(&format!("{name}_count 3\n")), "{out}");
        assert!(out.contains(&format!("{name}_sum 60.00305\n")), "{out}");
    }

    #[test]
    fn status_gauges_counters_and_peers_are_rendered() {
        let metrics = Metrics::default();
        let peer = PeerStatus {
            id: "b".into(),
            match_index: 7,
            lag: 2,
            last_contact_ms: 5,
        };
        metrics.set_status(status(Role::Leader, vec![peer]));
        metrics.elections_total.inc_by(2);
        metrics.set_log_bytes(4096);
        let out = metrics.render();
        for line in [
            "dledger_role{role=\"leader\"} 1\n",
            "dledger_role{role=\"follower\"} 0\n",
            "dledger_term 4\n",
            "dledger_first_index 1\n",
            "dledger_last_index 9\n",
            "dledger_commit_index 8\n",
            "dledger_peer_match_index{peer=\"b\"} 7\n",
            "dledger_peer_lag_entries{peer=\"b\"} 2\n",
            "# TYPE dledger_elections_total counter\n",
            "dledger_elections_total 2\n",
            "dledger_leader_changes_total 0\n",
            "dledger_appends_total 0\n",
            "dledger_peer_messages_dropped_total 0\n",
            "# TYPE dledger_log_bytes gauge\n",
            "dledger_log_bytes 4096\n",
            "dledger_append_latency_seconds_count 0\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn peers_gone_from_the_status_leave_the_exposition() {
        let metrics = Metrics::default();
        let peer = PeerStatus {
            id: "b".into(),
            match_index: 7,
            lag: 2,
            last_contact_ms: 5,
        };
        metrics.set_status(status(Role::Leader, vec![peer]));
        assert!(metrics.render().contains("peer=\"b\""));
        metrics.set_status(status(Role::Follower, Vec::new()));
        let out = metrics.render();
        assert!(!out.contains("peer=\"b\""), "{out}");
        assert!(out.contains("dledger_role{role=\"follower\"} 1\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped_by_the_library() {
        let metrics = Metrics::default();
        let peer = PeerStatus {
            id: "we\"ird\\id".into(),
            match_index: 1,
            lag: 0,
            last_contact_ms: 0,
        };
        metrics.set_status(status(Role::Leader, vec![peer]));
        let out = metrics.render();
        assert!(
            out.contains("dledger_peer_lag_entries{peer=\"we\\\"ird\\\\id\"} 0\n"),
            "{out}"
        );
    }

    #[test]
    fn consumer_lags_are_gauges_bounded_in_number() {
        let metrics = Metrics::default();
        metrics.set_consumer_lags(vec![("a".into(), 3), ("b".into(), 0)], 2);
        let out = metrics.render();
        assert!(
            out.contains("dledger_consumer_lag{group=\"a\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("dledger_consumer_lag{group=\"b\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("dledger_consumer_groups 2\n"), "{out}");
        // A group gone leaves the exposition.
        metrics.set_consumer_lags(vec![("b".into(), 1)], 1);
        let out = metrics.render();
        assert!(!out.contains("group=\"a\""), "{out}");
        // Past the bound: the first groups by name only, all counted.
        let many: Vec<(String, u64)> = (0..MAX_EXPORTED_CONSUMER_GROUPS + 5)
            .map(|i| (format!("g{i:05}"), 1))
            .collect();
        let total = many.len();
        metrics.set_consumer_lags(many, total);
        let out = metrics.render();
        let series = out
            .lines()
            .filter(|line| line.starts_with("dledger_consumer_lag{"))
            .count();
        assert_eq!(series, MAX_EXPORTED_CONSUMER_GROUPS);
        assert!(out.contains("group=\"g00000\""), "{out}");
        assert!(!out.contains(&format!("group=\"g{:05}\"", MAX_EXPORTED_CONSUMER_GROUPS)));
        assert!(out.contains(&format!(
            "dledger_consumer_groups {}\n",
            MAX_EXPORTED_CONSUMER_GROUPS + 5
        )));
    }
}
