//! The operator's Prometheus registry.
//!
//! Every label value is initialised when the registry is built, so each family is present (at 0)
//! from the first scrape: dashboards and alerts never query a series that does not exist yet, and
//! `rcluster-operator metrics` can print the complete list of names for a CI check.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::crd::Phase;

/// Outcome label of `rcluster_operator_reconciles_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 2] = [Outcome::Ok, Outcome::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        }
    }
}

/// Reconciles take from milliseconds (nothing to do) to seconds (node probes time out).
const RECONCILE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Failovers include the detection window, so they are measured in seconds to minutes.
const FAILOVER_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// Handles to every operator metric, registered in `registry`.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub failovers: IntCounter,
    pub failover_duration: Histogram,
    pub clusters: IntGaugeVec,
    /// Per cluster: 1 while a resharding is under way, and when its last step was recorded (an
    /// alert fires when a resharding stops moving).
    pub resharding: IntGaugeVec,
    pub reshard_last_step: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "rcluster_operator_reconciles_total",
                "Reconciles of ReplicatedClusters by outcome",
            ),
            &["outcome"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "rcluster_operator_reconcile_duration_seconds",
                "Time one reconcile of a ReplicatedCluster took",
            )
            .buckets(RECONCILE_BUCKETS.to_vec()),
        )?;
        let failovers = IntCounter::new(
            "rcluster_operator_failovers_total",
            "Failovers carried out (a replica was promoted)",
        )?;
        let failover_duration = Histogram::with_opts(
            HistogramOpts::new(
                "rcluster_operator_failover_duration_seconds",
                "Time from detecting a failed primary to promoting a replica",
            )
            .buckets(FAILOVER_BUCKETS.to_vec()),
        )?;
        let clusters = IntGaugeVec::new(
            Opts::new(
                "rcluster_operator_clusters",
                "ReplicatedClusters by status phase",
            ),
            &["phase"],
        )?;
        let resharding = IntGaugeVec::new(
            Opts::new(
                "rcluster_operator_resharding",
                "1 while slots move between the shards of a ReplicatedCluster (status.reshard)",
            ),
            &["namespace", "rcluster"],
        )?;
        let reshard_last_step = IntGaugeVec::new(
            Opts::new(
                "rcluster_operator_reshard_last_step_timestamp_seconds",
                "When the resharding of a ReplicatedCluster last recorded a step",
            ),
            &["namespace", "rcluster"],
        )?;
        registry.register(Box::new(resharding.clone()))?;
        registry.register(Box::new(reshard_last_step.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(failovers.clone()))?;
        registry.register(Box::new(failover_duration.clone()))?;
        registry.register(Box::new(clusters.clone()))?;
        for outcome in Outcome::ALL {
            reconciles.with_label_values(&[outcome.as_str()]);
        }
        for phase in Phase::ALL {
            clusters.with_label_values(&[phase.as_str()]);
        }
        Ok(Metrics {
            registry,
            reconciles,
            reconcile_duration,
            failovers,
            failover_duration,
            clusters,
            resharding,
            reshard_last_step,
        })
    }

    /// A cluster's resharding: under way since its last step at `last_step` (Unix seconds), or
    /// not (its series go).
    pub fn set_resharding(&self, namespace: &str, cluster: &str, last_step: Option<i64>) {
        let labels = [namespace, cluster];
        match last_step {
            Some(t) => {
                self.resharding.with_label_values(&labels).set(1);
                self.reshard_last_step.with_label_values(&labels).set(t);
            }
            None => {
                let _ = self.resharding.remove_label_values(&labels);
                let _ = self.reshard_last_step.remove_label_values(&labels);
            }
        }
    }

    pub fn record_reconcile(&self, outcome: Outcome, took: Duration) {
        self.reconciles.with_label_values(&[outcome.as_str()]).inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn record_failover(&self, took: Duration) {
        self.failovers.inc();
        self.failover_duration.observe(took.as_secs_f64());
    }

    /// Sets the gauge of every phase, so a phase no cluster is in any more drops back to 0.
    pub fn set_clusters<I>(&self, phases: I)
    where
        I: IntoIterator<Item = Phase>,
    {
        let mut counts = [0i64; Phase::ALL.len()];
        for phase in phases {
            if let Some(i) = Phase::ALL.iter().position(|p| *p == phase) {
                counts[i] += 1;
            }
        }
        for (phase, count) in Phase::ALL.iter().zip(counts) {
            self.clusters
                .with_label_values(&[phase.as_str()])
                .set(count);
        }
    }

    /// With one series (empty labels, at zero) of each per-cluster family, which has none until a
    /// cluster sets it: what `rcluster-operator metrics` prints, so every family is listed.
    pub fn every_family(self) -> Self {
        self.resharding.with_label_values(&["", ""]);
        self.reshard_last_step.with_label_values(&["", ""]);
        self
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

/// Every metric family name the operator exports.
pub const FAMILY_NAMES: [&str; 5] = [
    "rcluster_operator_reconciles_total",
    "rcluster_operator_reconcile_duration_seconds",
    "rcluster_operator_failovers_total",
    "rcluster_operator_failover_duration_seconds",
    "rcluster_operator_clusters",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_registry_lists_every_family_and_label_value() {
        let text = Metrics::new().unwrap().encode().unwrap();
        for name in FAMILY_NAMES {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("rcluster_operator_reconciles_total{outcome=\"ok\"} 0"));
        assert!(text.contains("rcluster_operator_reconciles_total{outcome=\"error\"} 0"));
        for phase in Phase::ALL {
            let line = format!(
                "rcluster_operator_clusters{{phase=\"{}\"}} 0",
                phase.as_str()
            );
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
        assert!(text.contains("rcluster_operator_failover_duration_seconds_count 0"));
    }

    #[test]
    fn records_reconciles_failovers_and_phases() {
        let m = Metrics::new().unwrap();
        m.record_reconcile(Outcome::Ok, Duration::from_millis(20));
        m.record_reconcile(Outcome::Error, Duration::from_millis(3));
        m.record_reconcile(Outcome::Ok, Duration::from_millis(7));
        m.record_failover(Duration::from_secs(12));
        m.set_clusters([Phase::Running, Phase::Running, Phase::Degraded]);
        let text = m.encode().unwrap();
        assert!(text.contains("rcluster_operator_reconciles_total{outcome=\"ok\"} 2"));
        assert!(text.contains("rcluster_operator_reconciles_total{outcome=\"error\"} 1"));
        assert!(text.contains("rcluster_operator_reconcile_duration_seconds_count 3"));
        assert!(text.contains("rcluster_operator_failovers_total 1"));
        assert!(text.contains("rcluster_operator_failover_duration_seconds_sum 12"));
        assert!(text.contains("rcluster_operator_clusters{phase=\"Running\"} 2"));
        assert!(text.contains("rcluster_operator_clusters{phase=\"Degraded\"} 1"));

        m.set_clusters([Phase::Pending]);
        let text = m.encode().unwrap();
        assert!(text.contains("rcluster_operator_clusters{phase=\"Running\"} 0"));
        assert!(text.contains("rcluster_operator_clusters{phase=\"Pending\"} 1"));
    }
}
