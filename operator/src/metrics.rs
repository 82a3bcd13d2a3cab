//! The operator's Prometheus metrics: reconciles, errors and durations, and
//! per group what the members last reported.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::crd::DLedgerGroupStatus;

/// Every metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `dledger_operator_reconciles_total`.
    pub reconciles: IntCounterVec,
    /// `dledger_operator_reconcile_errors_total{error}`.
    pub errors: IntCounterVec,
    /// `dledger_operator_reconcile_duration_seconds`.
    pub duration: HistogramVec,
    /// `dledger_group_leader{namespace,group,member}`: 1 on the leader.
    pub leader: IntGaugeVec,
    /// `dledger_group_term{namespace,group}`.
    pub term: IntGaugeVec,
    /// `dledger_group_commit_index{namespace,group}`.
    pub commit_index: IntGaugeVec,
    /// `dledger_group_member_lag{namespace,group,member}`.
    pub member_lag: IntGaugeVec,
    /// `dledger_group_member_answering{namespace,group,member}`.
    pub member_answering: IntGaugeVec,
}

/// Why the metrics could not be set up (a name clash: a programming error).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let group = ["namespace", "group"];
        let member = ["namespace", "group", "member"];
        let metrics = Metrics {
            reconciles: IntCounterVec::new(
                Opts::new(
                    "dledger_operator_reconciles_total",
                    "Reconciles run, by result",
                ),
                &["result"],
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "dledger_operator_reconcile_errors_total",
                    "Failed reconciles, by error",
                ),
                &["error"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "dledger_operator_reconcile_duration_seconds",
                    "Time one reconcile took",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &[],
            )?,
            leader: IntGaugeVec::new(
                Opts::new(
                    "dledger_group_leader",
                    "1 for the member the group's leader is",
                ),
                &member,
            )?,
            term: IntGaugeVec::new(
                Opts::new("dledger_group_term", "The highest term a member reported"),
                &group,
            )?,
            commit_index: IntGaugeVec::new(
                Opts::new("dledger_group_commit_index", "The leader's commit index"),
                &group,
            )?,
            member_lag: IntGaugeVec::new(
                Opts::new(
                    "dledger_group_member_lag",
                    "Entries a member is behind the leader's commit",
                ),
                &member,
            )?,
            member_answering: IntGaugeVec::new(
                Opts::new(
                    "dledger_group_member_answering",
                    "1 when the member answered /status",
                ),
                &member,
            )?,
            registry,
        };
        metrics
            .registry
            .register(Box::new(metrics.reconciles.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.errors.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.duration.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.leader.clone()))?;
        metrics.registry.register(Box::new(metrics.term.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.commit_index.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.member_lag.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.member_answering.clone()))?;
        Ok(metrics)
    }

    /// Records what a group's status says.
    pub fn observe_group(&self, namespace: &str, group: &str, status: &DLedgerGroupStatus) {
        self.term
            .with_label_values(&[namespace, group])
            .set(clamp(status.term));
        self.commit_index
            .with_label_values(&[namespace, group])
            .set(clamp(status.commit_index));
        for member in &status.members {
            let labels = [namespace, group, member.name.as_str()];
            let leads = status.leader.as_deref() == Some(member.name.as_str());
            self.leader.with_label_values(&labels).set(i64::from(leads));
            self.member_lag
                .with_label_values(&labels)
                .set(clamp(member.lag));
            self.member_answering
                .with_label_values(&labels)
                .set(i64::from(member.answering));
        }
    }

    /// Forgets a deleted group's series (`members` as its last status named them).
    pub fn forget_group(&self, namespace: &str, group: &str, members: &[String]) {
        let _ = self.term.remove_label_values(&[namespace, group]);
        let _ = self.commit_index.remove_label_values(&[namespace, group]);
        for member in members {
            for vec in [&self.leader, &self.member_lag, &self.member_answering] {
                let _ = vec.remove_label_values(&[namespace, group, member.as_str()]);
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MemberStatus;

    #[test]
    fn group_series_appear_and_go() {
        let metrics = Metrics::new().unwrap();
        let status = DLedgerGroupStatus {
            leader: Some("orders-0".into()),
            term: 4,
            commit_index: 99,
            members: vec![
                MemberStatus {
                    name: "orders-0".into(),
                    answering: true,
                    ..MemberStatus::default()
                },
                MemberStatus {
                    name: "orders-1".into(),
                    answering: false,
                    lag: 7,
                    ..MemberStatus::default()
                },
            ],
            ..DLedgerGroupStatus::default()
        };
        metrics.observe_group("shop", "orders", &status);
        metrics.reconciles.with_label_values(&["ok"]).inc();
        let text = metrics.render();
        assert!(
            text.contains(r#"dledger_group_commit_index{group="orders",namespace="shop"} 99"#),
            "{text}"
        );
        assert!(text.contains(
            r#"dledger_group_leader{group="orders",member="orders-0",namespace="shop"} 1"#
        ));
        assert!(text.contains(
            r#"dledger_group_member_lag{group="orders",member="orders-1",namespace="shop"} 7"#
        ));
        assert!(text.contains(r#"dledger_operator_reconciles_total{result="ok"} 1"#));
        metrics.forget_group(
            "shop",
            "orders",
            &["orders-0".to_string(), "orders-1".to_string()],
        );
        let text = metrics.render();
        assert!(!text.contains("orders"), "{text}");
    }
}
