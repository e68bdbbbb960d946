//! What the playground reports: the `/status` document, the status table rows, the cluster
//! phase and the metrics (the operator's families plus a few of the playground's own).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts};
use serde_json::{Value, json};

use super::probe::Health;
use super::state::Saved;
use super::supervisor::ProcessInfo;
use super::ui::Row;
use crate::crd::Phase;
use crate::failover::{Action, Settings, WaitReason};
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct PlaygroundMetrics {
    /// The operator's registry; the playground's own families are registered in it too.
    pub operator: Metrics,
    pub term: IntGauge,
    pub restarts: IntCounterVec,
    pub first_write: Histogram,
}

impl PlaygroundMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let operator = Metrics::new()?;
        let term = IntGauge::new(
            "rcluster_playground_term",
            "Highest term the playground handed out",
        )?;
        let restarts = IntCounterVec::new(
            Opts::new(
                "rcluster_playground_node_restarts_total",
                "Node processes the playground restarted after they exited",
            ),
            &["member"],
        )?;
        let first_write = Histogram::with_opts(
            HistogramOpts::new(
                "rcluster_playground_failover_first_write_seconds",
                "From the last good probe of a failed primary until its successor acknowledged \
                 the first entry of its term",
            )
            .buckets(vec![0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0]),
        )?;
        let r = &operator.registry;
        r.register(Box::new(term.clone()))?;
        r.register(Box::new(restarts.clone()))?;
        r.register(Box::new(first_write.clone()))?;
        Ok(PlaygroundMetrics {
            operator,
            term,
            restarts,
            first_write,
        })
    }
}

/// The phase of the cluster in the CRD's vocabulary, so dashboards read the same for both.
pub fn phase(saved: &Saved, health: &[Health], last_actions: &[Action]) -> Phase {
    let co = &saved.coordinator;
    let stuck = last_actions.iter().any(|a| {
        matches!(
            a,
            Action::Wait {
                reason: WaitReason::TooFewResponders { .. } | WaitReason::OnlyEmptyLogs { .. }
            }
        )
    });
    match &co.primary {
        None if co.term == 0 => Phase::Pending,
        None if stuck => Phase::Unavailable,
        None => Phase::FailingOver,
        Some(p) => {
            let primary_ok = health.iter().any(|h| &h.name == p && h.ready());
            if !primary_ok {
                Phase::FailingOver
            } else if health.iter().all(Health::ready) {
                Phase::Running
            } else {
                Phase::Degraded
            }
        }
    }
}

/// Replication lag of `name` in entries, from the primary's view (or log positions).
fn lag(health: &[Health], primary: Option<&str>, name: &str) -> Option<u64> {
    let p = health.iter().find(|h| Some(h.name.as_str()) == primary)?;
    let ps = p.status.as_ref()?;
    if p.name == name {
        return Some(0);
    }
    let from_primary = ps
        .members
        .iter()
        .find(|m| m.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|m| m.get("lag_entries"))
        .and_then(Value::as_u64);
    from_primary.or_else(|| {
        let s = health.iter().find(|h| h.name == name)?.status.as_ref()?;
        Some(ps.last_log_index.saturating_sub(s.last_log_index))
    })
}

pub fn rows(saved: &Saved, health: &[Health], procs: &[ProcessInfo]) -> Vec<Row> {
    let primary = saved.coordinator.primary.as_deref();
    health
        .iter()
        .zip(procs)
        .map(|(h, p)| {
            let s = h.status.as_ref();
            let role = match (s, p.held, p.pid) {
                (Some(s), _, _) => s.role.clone(),
                (None, true, _) => "stopped".into(),
                (None, _, None) => "down".into(),
                (None, _, Some(_)) => "no answer".into(),
            };
            Row {
                name: h.name.clone(),
                url: h.url.clone(),
                pid: p.pid,
                role,
                term: s.map(|s| s.term),
                applied: s.map(|s| s.applied_index),
                lag: s.and_then(|_| lag(health, primary, &h.name)),
                ready: h.ready(),
                restarts: p.restarts,
            }
        })
        .collect()
}

pub struct StatusInput<'a> {
    pub ready: bool,
    pub phase: Phase,
    pub control_url: &'a str,
    pub dir: &'a str,
    pub settings: &'a Settings,
    pub probe_interval_ms: u64,
    pub saved: &'a Saved,
    pub health: &'a [Health],
    pub procs: &'a [ProcessInfo],
}

/// The `GET /status` document.
pub fn status_json(i: &StatusInput) -> Value {
    let primary = i.saved.coordinator.primary.as_deref();
    let members: Vec<Value> = i
        .health
        .iter()
        .zip(i.procs)
        .map(|(h, p)| {
            let s = h.status.as_ref();
            json!({
                "name": h.name,
                "url": h.url,
                "pid": p.pid,
                "restarts": p.restarts,
                "held": p.held,
                "reachable": h.reachable(),
                "ready": h.ready(),
                "role": s.map(|s| s.role.clone()),
                "term": s.map(|s| s.term),
                "last_log_index": s.map(|s| s.last_log_index),
                "applied_index": s.map(|s| s.applied_index),
                "commit_index": s.map(|s| s.commit_index),
                "lag_entries": s.and_then(|_| lag(i.health, primary, &h.name)),
                "entries_discarded": s.map(|s| s.entries_discarded),
                "unhealthy_since_ms": h.unhealthy_since_ms,
                "last_ok_ms": h.last_ok_ms,
                "error": h.error,
            })
        })
        .collect();
    let primary_url = i
        .health
        .iter()
        .find(|h| Some(h.name.as_str()) == primary)
        .map(|h| h.url.clone());
    json!({
        "ready": i.ready,
        "phase": i.phase.as_str(),
        "control_url": i.control_url,
        "dir": i.dir,
        "settings": {
            "members": i.settings.members,
            "ack": i.settings.ack,
            "detection_window_ms": i.settings.detection_window_ms,
            "probe_interval_ms": i.probe_interval_ms,
            "allow_lossy_promotion": i.settings.allow_lossy_promotion,
        },
        "coordinator": i.saved.coordinator,
        "primary_url": primary_url,
        "members": members,
        "failovers_total": i.saved.failovers_total,
        "last_failover": i.saved.last_failover,
        "switchovers_total": i.saved.switchovers_total,
        "last_switchover": i.saved.last_switchover,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::AckLevel;
    use crate::nodes::NodeStatus;

    fn health(name: &str, role: &str, index: u64, ready: bool) -> Health {
        Health {
            name: name.into(),
            url: format!("http://127.0.0.1:700{}", &name[1..]),
            status: Some(NodeStatus {
                node: name.into(),
                role: role.into(),
                term: 1,
                last_log_index: index,
                applied_index: index,
                ready,
                ..NodeStatus::default()
            }),
            ..Health::default()
        }
    }

    #[test]
    fn phase_and_lag_follow_the_members() {
        let mut saved = Saved::new(3, 7000, AckLevel::Quorum);
        let hs = vec![
            health("n1", "primary", 10, true),
            health("n2", "replica", 7, true),
            health("n3", "replica", 10, false),
        ];
        assert_eq!(phase(&saved, &hs, &[]), Phase::Pending);
        saved.coordinator.term = 1;
        assert_eq!(phase(&saved, &hs, &[]), Phase::FailingOver);
        saved.coordinator.primary = Some("n1".into());
        assert_eq!(phase(&saved, &hs, &[]), Phase::Degraded);
        let procs = vec![ProcessInfo::default(); 3];
        let rows = rows(&saved, &hs, &procs);
        assert_eq!(
            rows.iter().map(|r| r.lag).collect::<Vec<_>>(),
            [Some(0), Some(3), Some(0)]
        );
        let settings = Settings {
            members: vec!["n1".into(), "n2".into(), "n3".into()],
            ack: AckLevel::Quorum,
            detection_window_ms: 1000,
            allow_lossy_promotion: false,
            switchover_timeout_ms: 10_000,
        };
        let doc = status_json(&StatusInput {
            ready: true,
            phase: Phase::Degraded,
            control_url: "http://127.0.0.1:7000",
            dir: "/tmp/x",
            settings: &settings,
            probe_interval_ms: 100,
            saved: &saved,
            health: &hs,
            procs: &procs,
        });
        assert_eq!(doc["primary_url"], "http://127.0.0.1:7001");
        assert_eq!(doc["members"][1]["lag_entries"], 3);
        assert_eq!(doc["coordinator"]["term"], 1);
        assert_eq!(doc["settings"]["ack"], "quorum");
    }

    #[test]
    fn metrics_include_the_operator_families() {
        let m = PlaygroundMetrics::new().unwrap();
        m.restarts.with_label_values(&["n1"]).inc();
        let text = m.operator.encode().unwrap();
        assert!(text.contains("rcluster_operator_failovers_total 0"));
        assert!(text.contains("rcluster_playground_node_restarts_total{member=\"n1\"} 1"));
    }
}
