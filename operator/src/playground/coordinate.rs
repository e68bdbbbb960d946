//! The coordination loop: probe every node, let the coordinator runtime decide and act (record in
//! the state file first, then the node commands), retire nodes that left the member list, and
//! report. Each cycle is level-based: a command that failed (or a crash of the playground
//! half-way) is simply decided again on the next probe.

use crate::failover::Role;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::control::Shared;
use super::probe::Prober;
use super::report::{self, Node, PlaygroundMetrics, StatusInput};
use super::state::{Folder, Saved, StateStore};
use super::supervisor::{Event, Supervisor};
use super::ui::{self, Ui};
use super::{Error, Member, ack_name, now_ms};
use crate::coordinator::{
    self, Completed, FailoverCount, Measured, Plan, Probe, Runtime, Stepped, Unsent,
};
use crate::failover::{Action, ClusterView, Coordinator, Settings};
use crate::metrics::Outcome;
use crate::nodes::{Addressed, CommandResult, MemberUrls, NodeClient};

/// Everything the loop is built from.
pub struct Setup {
    /// `members`: the desired ones (`--replicas`).
    pub settings: Settings,
    /// The nodes the playground runs: the desired ones and any the member list still holds.
    pub members: Vec<Member>,
    pub folder: Folder,
    pub saved: Saved,
    pub secret: String,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub supervisor: Arc<Mutex<Supervisor>>,
    pub shared: Arc<Mutex<Shared>>,
    pub metrics: PlaygroundMetrics,
    pub quiet: bool,
    pub control_url: String,
}

/// How long the primary may be ready while some replica is not before the cluster is announced
/// anyway.
const ANNOUNCE_AFTER_MS: u64 = 10_000;
/// How long a node that left the member list may take to stop before it is killed.
const RETIRE_GRACE: Duration = Duration::from_secs(10);

pub struct Loop {
    s: Setup,
    prober: Prober,
    commands: NodeClient,
    runtime: Runtime,
    /// The latest probe round, for the table and `/status`.
    probes: Vec<Probe>,
    ui: Ui,
    decisions: File,
    last_signature: String,
    last_actions: Vec<Action>,
    /// The last note about a switchover request, so a waiting request is told once.
    last_note: Option<String>,
    announced: bool,
    primary_ready_since: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Loop {
    pub fn new(s: Setup) -> Result<Loop, Error> {
        let prober = Prober::new(NodeClient::new(&s.secret, s.probe_timeout));
        let commands = NodeClient::new(&s.secret, Duration::from_secs(2));
        let decisions = s.folder.decision_log()?;
        // The playground starts the nodes itself: the election that resumes a cluster after
        // its start is not a failover.
        let runtime = Runtime::new(FailoverCount::SeenHealthy, s.saved.history.clone());
        Ok(Loop {
            ui: Ui::new(s.quiet),
            s,
            prober,
            commands,
            runtime,
            probes: Vec::new(),
            decisions,
            last_signature: String::new(),
            last_actions: Vec::new(),
            last_note: None,
            announced: false,
            primary_ready_since: None,
        })
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            let started = Instant::now();
            let acted = self.cycle().await;
            // After sending commands, look again at once: an election's second step and the
            // time to the first write both depend on it.
            let pause = if acted {
                Duration::from_millis(5)
            } else {
                self.s.probe_interval.saturating_sub(started.elapsed())
            };
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn cycle(&mut self) -> bool {
        let started = Instant::now();
        let events = lock(&self.s.supervisor).poll(Instant::now());
        for e in events {
            self.process_event(e);
        }
        let probes = {
            let sup = self.s.supervisor.clone();
            let restarts = move |name: &str| lock(&sup).info(name).restarts;
            self.prober.probe(&self.s.members, restarts).await
        };
        let now = now_ms();
        let (observations, measured) = self.runtime.observe(&probes, self.s.settings.ack, now);
        self.probes = probes;
        self.report_measured(measured, now);
        let record = self.s.saved.coordinator.clone();
        let view = ClusterView {
            settings: self.s.settings.clone(),
            coordinator: record.clone(),
            observations,
            now_ms: now,
        };
        let plan = coordinator::plan(&view, None, &self.probes, true);
        let (acted, ok) = self.act(&record, plan, now).await;
        self.retire_members(now);
        if self.runtime.history() != &self.s.saved.history {
            self.s.saved.history = self.runtime.history().clone();
            self.save_state(now);
        }
        self.publish(now);
        let outcome = if ok { Outcome::Ok } else { Outcome::Error };
        self.s
            .metrics
            .operator
            .record_reconcile(outcome, started.elapsed());
        acted
    }

    /// The member list promote and follow carry: the record's after `actions`, with the URLs the
    /// nodes reach each other at.
    fn peer_urls(&self, record: &Coordinator, actions: &[Action]) -> Option<MemberUrls> {
        record
            .after(actions)
            .members
            .iter()
            .map(|name| Some((name.clone(), self.url(name)?.to_string())))
            .collect()
    }

    fn url(&self, name: &str) -> Option<&str> {
        self.s
            .members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.url.as_str())
    }

    /// Let the runtime act, then log. Returns (commands were sent, everything succeeded).
    async fn act(&mut self, record: &Coordinator, plan: Plan, now: u64) -> (bool, bool) {
        let urls: BTreeMap<String, String> = self
            .s
            .members
            .iter()
            .map(|m| (m.name.clone(), m.url.clone()))
            .collect();
        let peers = self.peer_urls(record, &plan.actions);
        let nodes = Addressed {
            client: &self.commands,
            urls: &urls,
            members: peers.as_ref(),
        };
        let mut store = StateStore {
            folder: &self.s.folder,
            saved: &mut self.s.saved,
        };
        let stepped = self
            .runtime
            .step(record, &plan, &mut store, &nodes, now)
            .await;
        let (results, persist_error) = match stepped {
            Ok(Stepped {
                results,
                clear_errors,
                completed,
                ..
            }) => {
                for (node, e) in clear_errors {
                    let text = format!("cannot clear the switchover request on {node}: {e}");
                    self.record(now, "error", &text, json!({}));
                }
                self.report_completed(&completed, now);
                (results, None)
            }
            // Nothing may be sent for a term that is not on disk.
            Err(Unsent::Store(e)) => (Vec::new(), Some(e.to_string())),
            Err(Unsent::Conflict) => (Vec::new(), Some("the state changed".to_string())),
        };
        if let Some(note) = ui::request_note(&plan, record) {
            if self.last_note.as_ref() != Some(&note) {
                self.record(now, "switchover", &note, json!({}));
            }
            self.last_note = Some(note);
        } else {
            self.last_note = None;
        }
        for node in plan
            .clear
            .iter()
            .filter(|n| Some(*n) != record.primary.as_ref())
        {
            let text = format!(
                "ignored a switchover request on {node}: it is not the primary, or a switchover is in progress"
            );
            self.record(now, "switchover", &text, json!({}));
        }
        let failed = results.iter().any(|r| r.outcome.is_err());
        self.log_decision(now, &plan.actions, persist_error.as_deref(), &results);
        self.last_actions = plan.actions;
        (!results.is_empty(), !failed && persist_error.is_none())
    }

    /// Nodes that no member list holds any more stop for good.
    fn retire_members(&mut self, now: u64) {
        let running: Vec<String> = self.s.members.iter().map(|m| m.name.clone()).collect();
        let keep = coordinator::keep_running(
            &self.s.settings.members,
            &self.s.saved.coordinator,
            &running,
        );
        let leaving: Vec<String> = running
            .iter()
            .filter(|m| !keep.contains(m.as_str()))
            .cloned()
            .collect();
        for name in leaving {
            let retired = lock(&self.s.supervisor).retire(&name, RETIRE_GRACE);
            if let Err(e) = retired {
                self.record(now, "error", &format!("cannot stop {name}: {e}"), json!({}));
            }
            self.s.members.retain(|m| m.name != name);
            let text = format!("{name} left the member list; its node stops");
            self.record(now, "process", &text, json!({}));
        }
    }

    /// Writes one line to the terminal and one JSON record to the decision log.
    fn record(&mut self, now: u64, kind: &str, text: &str, extra: Value) {
        self.ui.line(&format!("{} {text}", ui::clock(now)));
        let mut rec = json!({
            "at_ms": now,
            "kind": kind,
            "term": self.s.saved.coordinator.term,
            "primary": self.s.saved.coordinator.primary,
            "text": text,
        });
        if let (Some(obj), Value::Object(more)) = (rec.as_object_mut(), extra) {
            obj.extend(more);
        }
        let _ = writeln!(self.decisions, "{rec}");
        lock(&self.s.shared).push_decision(rec);
    }

    fn process_event(&mut self, e: Event) {
        let now = now_ms();
        let text = match &e {
            Event::Started { node, pid, restart } => {
                if *restart {
                    self.s.metrics.restarts.with_label_values(&[node]).inc();
                }
                let verb = if *restart { "restarted" } else { "started" };
                format!("{node} {verb} (pid {pid})")
            }
            Event::Exited {
                node,
                how,
                restart_in,
            } => match restart_in {
                Some(d) => format!("{node} {how}; restarting in {} ms", d.as_millis()),
                None => format!("{node} {how}; kept down"),
            },
            Event::SpawnFailed { node, error } => format!("{node}: {error}"),
        };
        self.record(now, "process", &text, json!({}));
    }

    fn log_decision(
        &mut self,
        now: u64,
        actions: &[Action],
        persist_error: Option<&str>,
        results: &[CommandResult],
    ) {
        let signature = ui::signature(actions);
        let changed = signature != self.last_signature;
        let was_waiting = self
            .last_actions
            .iter()
            .any(|a| matches!(a, Action::Wait { .. }));
        self.last_signature = signature;
        let acting = actions.iter().any(|a| !matches!(a, Action::Wait { .. }));
        if actions.is_empty() {
            if changed && was_waiting {
                self.record(
                    now,
                    "decision",
                    "no action needed: the cluster is healthy",
                    json!({"actions": []}),
                );
            }
            return;
        }
        if !(acting || changed || persist_error.is_some()) {
            return;
        }
        let mut text = ui::describe(actions);
        if let Some(e) = persist_error {
            text.push_str(&format!(" -- NOT SENT: the state could not be saved: {e}"));
        }
        let failures: Vec<String> = results
            .iter()
            .filter_map(|r| {
                r.outcome
                    .as_ref()
                    .err()
                    .map(|e| format!("{} {}: {e}", r.op, r.node))
            })
            .collect();
        if !failures.is_empty() {
            text.push_str(&format!(" -- failed: {}", failures.join("; ")));
        }
        let results: Vec<Value> = results
            .iter()
            .map(|r| {
                json!({"op": r.op, "node": r.node, "ok": r.outcome.is_ok(),
                "error": r.outcome.as_ref().err()})
            })
            .collect();
        self.record(
            now,
            "decision",
            &text,
            json!({"actions": actions, "results": results}),
        );
    }

    /// A promotion that ended a switchover or a failover.
    fn report_completed(&mut self, done: &Completed, now: u64) {
        if let Some(s) = &done.switchover {
            let text = format!(
                "switchover done: {} is primary in term {} ({} ms)",
                s.to,
                s.term,
                s.duration_ms.unwrap_or(0)
            );
            self.record(now, "switchover", &text, json!({"switchover": s}));
        }
        if let Some(f) = &done.failover {
            let took = Duration::from_millis(f.duration_ms().unwrap_or(0));
            self.s.metrics.operator.record_failover(took);
            let text = format!(
                "failover: {} -> {} in term {}, {} ms after {} was last seen ready",
                f.from,
                f.to.as_deref().unwrap_or("?"),
                f.term,
                f.promotion_ms.unwrap_or(0),
                f.from
            );
            self.record(now, "failover", &text, json!({"failover": f}));
        }
    }

    /// Time to first write and discarded entries, measured from the latest probes.
    fn report_measured(&mut self, measured: Measured, now: u64) {
        let Some(f) = self.runtime.history().last_failover.clone() else {
            return;
        };
        if let Some(ms) = measured.first_write_ms {
            self.s.metrics.first_write.observe(ms as f64 / 1000.0);
            let text = format!(
                "{} acknowledges {} writes {ms} ms after {} was last seen ready",
                f.to.as_deref().unwrap_or("?"),
                ack_name(self.s.settings.ack),
                f.from
            );
            self.record(now, "failover", &text, json!({"failover": f}));
        }
        if let Some(d) = measured.discarded {
            let text = format!("{} rejoined as a replica; it discarded {d} entries", f.from);
            self.record(now, "failover", &text, json!({"failover": f}));
        }
    }

    fn save_state(&mut self, now: u64) {
        if let Err(e) = self.s.folder.save(&self.s.saved) {
            let text = format!("cannot save the state: {e}");
            self.record(now, "error", &text, json!({}));
        }
    }

    /// Updates `/status`, the table, the gauges, and announces the cluster once it is ready.
    fn publish(&mut self, now: u64) {
        let sup = lock(&self.s.supervisor);
        let memory = self.runtime.memory();
        let nodes: Vec<Node> = self
            .s
            .members
            .iter()
            .map(|m| Node {
                member: m,
                probe: self.probes.iter().find(|p| p.name == m.name),
                seen: memory.get(&m.name),
                process: sup.info(&m.name),
            })
            .collect();
        drop(sup);
        let phase = report::phase(&self.s.saved, &nodes, &self.last_actions);
        let co = &self.s.saved.coordinator;
        let primary_ok = co.primary.as_deref().is_some_and(|p| {
            self.probes.iter().any(|q| {
                q.name == p
                    && q.ready()
                    && q.status
                        .as_ref()
                        .is_some_and(|s| s.role == Role::Primary && s.term == co.term)
            })
        });
        let mut announce = false;
        if !self.announced && primary_ok {
            let since = *self.primary_ready_since.get_or_insert(now);
            announce = self.probes.iter().all(Probe::ready) || now - since >= ANNOUNCE_AFTER_MS;
        } else if !primary_ok {
            self.primary_ready_since = None;
        }
        let dir = self.s.folder.dir.display().to_string();
        let doc = report::status_json(&StatusInput {
            ready: self.announced || announce,
            phase,
            control_url: &self.s.control_url,
            dir: &dir,
            settings: &self.s.settings,
            probe_interval_ms: self.s.probe_interval.as_millis() as u64,
            saved: &self.s.saved,
            nodes: &nodes,
        });
        let header = format!(
            "rcluster playground: {} nodes, ack {}, term {}, primary {}, {} | failovers {} | {}",
            self.s.members.len(),
            ack_name(self.s.settings.ack),
            co.term,
            co.primary.as_deref().unwrap_or("-"),
            phase.as_str(),
            self.s.saved.history.failovers_total,
            self.s.control_url
        );
        let rows = report::rows(&self.s.saved, &nodes);
        let term = co.term;
        drop(nodes);
        lock(&self.s.shared).status = doc;
        let m = &self.s.metrics;
        m.term.set(term as i64);
        m.operator.set_clusters([phase]);
        if announce {
            self.announce();
        }
        self.ui.table(&header, &rows, Instant::now());
    }

    fn announce(&mut self) {
        self.announced = true;
        let co = self.s.saved.coordinator.clone();
        let lines: Vec<String> = self
            .s
            .members
            .iter()
            .map(|m| format!("{} {}", m.name, m.url))
            .collect();
        for l in lines {
            self.ui.line(&l);
        }
        let first = self.s.members[0].url.clone();
        self.ui.line(&format!(
            "control {} (GET /status, /decisions, /metrics)",
            self.s.control_url
        ));
        self.ui.line(&format!(
            "try: rcluster --endpoint {first} put greeting hello && rcluster --endpoint {first} status"
        ));
        self.ui.line(&format!(
            "playground ready: primary {} term {}",
            co.primary.as_deref().unwrap_or("-"),
            co.term
        ));
    }
}
