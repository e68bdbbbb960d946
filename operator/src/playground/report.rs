//! What the playground reports: the `/status` document, the status table rows, the cluster
//! phase and the metrics (the operator's families plus a few of the playground's own).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts};
use serde_json::{Value, json};

use super::Member;
use super::supervisor::ProcessInfo;
use super::ui::Row;
use crate::coordinator::{History, Probe, Seen};
use crate::crd::Phase;
use crate::failover::{Action, Coordinator, Settings, WaitReason};
use crate::metrics::Metrics;
use crate::nodes::NodeStatus;

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

/// One running node as reported: its latest probe, what the coordinator remembers of it, and
/// its process.
pub struct Node<'a> {
    pub member: &'a Member,
    pub probe: Option<&'a Probe>,
    pub seen: Option<&'a Seen>,
    pub process: ProcessInfo,
}

impl Node<'_> {
    fn name(&self) -> &str {
        &self.member.name
    }

    fn status(&self) -> Option<&NodeStatus> {
        self.probe.and_then(|p| p.status.as_ref())
    }

    fn ready(&self) -> bool {
        self.probe.is_some_and(Probe::ready)
    }
}

/// The phase of one shard in the CRD's vocabulary, so dashboards read the same for both.
pub fn phase(co: &Coordinator, nodes: &[Node], last_actions: &[Action]) -> Phase {
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
            let primary_ok = nodes.iter().any(|n| n.name() == p && n.ready());
            if !primary_ok {
                Phase::FailingOver
            } else if nodes.iter().all(Node::ready) {
                Phase::Running
            } else {
                Phase::Degraded
            }
        }
    }
}

/// Replication lag of `name` in entries, from the primary's view (or log positions).
fn lag(nodes: &[Node], primary: Option<&str>, name: &str) -> Option<u64> {
    let p = nodes.iter().find(|n| Some(n.name()) == primary)?;
    let ps = p.status()?;
    if p.name() == name {
        return Some(0);
    }
    let from_primary = ps
        .members
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.lag_entries);
    from_primary.or_else(|| {
        let s = nodes.iter().find(|n| n.name() == name)?.status()?;
        Some(ps.last_log_index.saturating_sub(s.last_log_index))
    })
}

/// The worst of the shards' phases: the cluster is as well as its least well shard.
pub fn worst(phases: &[Phase]) -> Phase {
    let rank = |p: &Phase| match p {
        Phase::Running => 0,
        Phase::Degraded => 1,
        Phase::Pending => 2,
        Phase::FailingOver => 3,
        _ => 4,
    };
    phases
        .iter()
        .copied()
        .max_by_key(rank)
        .unwrap_or(Phase::Pending)
}

pub fn rows(co: &Coordinator, nodes: &[Node]) -> Vec<Row> {
    let primary = co.primary.as_deref();
    nodes
        .iter()
        .map(|n| {
            let s = n.status();
            let p = &n.process;
            let role = match (s, p.held, p.pid) {
                (Some(s), _, _) => s.role.to_string(),
                (None, true, _) => "stopped".into(),
                (None, _, None) => "down".into(),
                (None, _, Some(_)) => "no answer".into(),
            };
            Row {
                name: n.name().to_string(),
                url: n.member.url.clone(),
                pid: p.pid,
                role,
                term: s.map(|s| s.term),
                applied: s.map(|s| s.applied_index),
                lag: s.and_then(|_| lag(nodes, primary, n.name())),
                ready: n.ready(),
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
    pub record: &'a Coordinator,
    pub history: &'a History,
    pub nodes: &'a [Node<'a>],
}

/// The `GET /status` document.
pub fn status_json(i: &StatusInput) -> Value {
    let primary = i.record.primary.as_deref();
    let members: Vec<Value> = i
        .nodes
        .iter()
        .map(|n| {
            let s = n.status();
            let p = &n.process;
            json!({
                "name": n.name(),
                "url": n.member.url,
                "pid": p.pid,
                "restarts": p.restarts,
                "held": p.held,
                "reachable": s.is_some(),
                "ready": n.ready(),
                "role": s.map(|s| s.role),
                "term": s.map(|s| s.term),
                "last_log_index": s.map(|s| s.last_log_index),
                "applied_index": s.map(|s| s.applied_index),
                "commit_index": s.map(|s| s.commit_index),
                "lag_entries": s.and_then(|_| lag(i.nodes, primary, n.name())),
                "entries_discarded": s.map(|s| s.entries_discarded),
                "unhealthy_since_ms": n.seen.and_then(|s| s.unhealthy_since_ms),
                "last_ok_ms": n.seen.and_then(|s| s.healthy_at_ms),
                "error": n.probe.and_then(|p| p.error.clone()),
            })
        })
        .collect();
    let primary_url = i
        .nodes
        .iter()
        .find(|n| Some(n.name()) == primary)
        .map(|n| n.member.url.clone());
    let h = i.history;
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
        "coordinator": i.record,
        "primary_url": primary_url,
        "members": members,
        "failovers_total": h.failovers_total,
        "last_failover": h.last_failover,
        "switchovers_total": h.switchovers_total,
        "last_switchover": h.last_switchover,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::AckLevel;

    fn member(name: &str) -> Member {
        let port = 7000 + name[1..].parse::<u16>().unwrap();
        Member {
            name: name.into(),
            url: format!("http://127.0.0.1:{port}"),
            port,
            shard: 0,
        }
    }

    fn probe(name: &str, role: &str, index: u64, ready: bool) -> Probe {
        Probe {
            name: name.into(),
            status: Some(NodeStatus {
                node: name.into(),
                role: role.into(),
                term: 1,
                last_log_index: index,
                applied_index: index,
                ready,
                ..NodeStatus::default()
            }),
            healthy: ready,
            ..Probe::default()
        }
    }

    #[test]
    fn phase_and_lag_follow_the_members() {
        let mut saved = super::super::state::Saved::new(3, 7000, AckLevel::Quorum, Vec::new());
        let members = [member("n1"), member("n2"), member("n3")];
        let probes = [
            probe("n1", "primary", 10, true),
            probe("n2", "replica", 7, true),
            probe("n3", "replica", 10, false),
        ];
        let nodes: Vec<Node> = members
            .iter()
            .zip(&probes)
            .map(|(m, p)| Node {
                member: m,
                probe: Some(p),
                seen: None,
                process: ProcessInfo::default(),
            })
            .collect();
        assert_eq!(phase(&saved.coordinator, &nodes, &[]), Phase::Pending);
        saved.coordinator.term = 1;
        assert_eq!(phase(&saved.coordinator, &nodes, &[]), Phase::FailingOver);
        saved.coordinator.primary = Some("n1".into());
        assert_eq!(phase(&saved.coordinator, &nodes, &[]), Phase::Degraded);
        let rows = rows(&saved.coordinator, &nodes);
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
            record: &saved.coordinator,
            history: &saved.history,
            nodes: &nodes,
        });
        assert_eq!(doc["primary_url"], "http://127.0.0.1:7001");
        assert_eq!(doc["members"][1]["lag_entries"], 3);
        assert_eq!(doc["coordinator"]["term"], 1);
        assert_eq!(doc["settings"]["ack"], "quorum");
        assert_eq!(doc["failovers_total"], 0);
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
