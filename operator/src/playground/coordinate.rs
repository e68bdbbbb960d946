//! The coordination loop: probe every node, decide, persist the coordinator record, then send
//! the node commands, and report. Each cycle is level-based: a command that failed (or a crash
//! of the playground half-way) is simply decided again on the next probe.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::act::{self, Choice};
use super::control::Shared;
use super::probe::Prober;
use super::report::{self, PlaygroundMetrics, StatusInput};
use super::state::{Folder, Saved};
use super::supervisor::{Event, ProcessInfo, Supervisor};
use super::tracker::{self, FailedPrimary, Tracker};
use super::ui::{self, Ui};
use super::{Error, Member, ack_name, now_ms};
use crate::failover::{Action, ClusterView, Settings};
use crate::metrics::Outcome;
use crate::nodes::NodeClient;
use crate::nodes::{self, CommandResult};

/// Everything the loop is built from.
pub struct Setup {
    pub settings: Settings,
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

pub struct Loop {
    s: Setup,
    prober: Prober,
    commands: NodeClient,
    tracker: Tracker,
    ui: Ui,
    decisions: File,
    last_signature: String,
    last_actions: Vec<Action>,
    announced: bool,
    primary_ready_since: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Loop {
    pub fn new(s: Setup) -> Result<Loop, Error> {
        let urls: Vec<(String, String)> = s
            .members
            .iter()
            .map(|m| (m.name.clone(), m.url.clone()))
            .collect();
        let prober = Prober::new(NodeClient::new(&s.secret, s.probe_timeout), &urls);
        let commands = NodeClient::new(&s.secret, Duration::from_secs(2));
        let decisions = s.folder.decision_log()?;
        Ok(Loop {
            ui: Ui::new(s.quiet),
            s,
            prober,
            commands,
            tracker: Tracker::default(),
            decisions,
            last_signature: String::new(),
            last_actions: Vec::new(),
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
        self.prober.probe().await;
        let now = now_ms();
        let view = ClusterView {
            settings: self.s.settings.clone(),
            coordinator: self.s.saved.coordinator.clone(),
            observations: self.prober.observations(),
            now_ms: now,
        };
        self.measure(now);
        let choice = act::choose(&view, &self.prober.health, &self.s.saved.coordinator);
        let (acted, ok) = self.apply(choice, now).await;
        self.publish(now);
        let outcome = if ok { Outcome::Ok } else { Outcome::Error };
        self.s
            .metrics
            .operator
            .record_reconcile(outcome, started.elapsed());
        acted
    }

    fn procs(&self) -> Vec<ProcessInfo> {
        let sup = lock(&self.s.supervisor);
        self.s.members.iter().map(|m| sup.info(&m.name)).collect()
    }

    fn restarts(&self, name: &str) -> u64 {
        lock(&self.s.supervisor).info(name).restarts
    }

    fn url(&self, name: &str) -> Option<&str> {
        self.s
            .members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.url.as_str())
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

    /// Persist, act, log. Returns (commands were sent, everything succeeded).
    async fn apply(&mut self, choice: Choice, now: u64) -> (bool, bool) {
        let Choice {
            actions,
            note,
            clear,
        } = choice;
        let before = self.s.saved.coordinator.clone();
        let next = before.after(&actions);
        let mut persist_error = None;
        if next != before {
            let previous = self.s.saved.clone();
            self.s.saved.coordinator = next;
            self.note_term_change(&before, &actions, now);
            if let Err(e) = self.s.folder.save(&self.s.saved) {
                // Nothing may be sent for a term that is not on disk.
                self.s.saved = previous;
                persist_error = Some(e.to_string());
            }
        }
        let results = if persist_error.is_none() {
            // The playground's members never change: the nodes have the list from their flags.
            let urls = self
                .s
                .members
                .iter()
                .map(|m| (m.name.clone(), m.url.clone()))
                .collect();
            nodes::run_commands(&self.commands, &urls, &actions, None).await
        } else {
            Vec::new()
        };
        if persist_error.is_none() {
            for node in &clear {
                if let Some(url) = self.url(node).map(str::to_string)
                    && let Err(e) = self
                        .commands
                        .clear_switchover(&url, self.s.saved.coordinator.term)
                        .await
                {
                    self.record(
                        now,
                        "error",
                        &format!("cannot clear the switchover request on {node}: {e}"),
                        json!({}),
                    );
                }
            }
        }
        for r in results
            .iter()
            .filter(|r| r.op == "promote" && r.outcome.is_ok())
        {
            self.prober.forget_failures(&r.node);
        }
        let failed = results.iter().any(|r| r.outcome.is_err());
        self.log_decision(now, &actions, note, persist_error.as_deref(), &results);
        self.after_commands(&before, &actions, &results, now);
        self.last_actions = actions;
        (!results.is_empty(), !failed && persist_error.is_none())
    }

    fn log_decision(
        &mut self,
        now: u64,
        actions: &[Action],
        note: Option<String>,
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
        if let Some(n) = note {
            self.record(now, "switchover", &n, json!({}));
        }
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

    /// Bookkeeping of elections and switchovers, before the record is saved.
    fn note_term_change(
        &mut self,
        before: &crate::failover::Coordinator,
        actions: &[Action],
        now: u64,
    ) {
        for a in actions {
            match a {
                Action::BumpTerm { to } => {
                    if let Some(sw) = &before.switchover {
                        tracker::switchover_abandoned(
                            &mut self.s.saved,
                            format!("an election replaced the switchover to {}", sw.to),
                        );
                    }
                    if before.term == 0 {
                        continue;
                    }
                    let restarts = before.primary.as_deref().map_or(0, |p| self.restarts(p));
                    // A primary never seen ready by this playground did not fail under it: this
                    // is the election that resumes a cluster after a restart.
                    let failed = before.primary.as_deref().and_then(|p| {
                        let h = self.prober.get(p)?;
                        Some(FailedPrimary {
                            name: p,
                            last_seen_ms: Some(h.last_ok_ms?),
                            unhealthy_since_ms: h.unhealthy_since_ms,
                            last_status: h.last_status.as_ref(),
                            restarts,
                        })
                    });
                    self.tracker
                        .election_started(&mut self.s.saved, failed, *to, now);
                }
                Action::BeginSwitchover { from, to, term, .. } => {
                    tracker::switchover_started(&mut self.s.saved, from, to, *term, now);
                }
                _ => {}
            }
        }
    }

    /// Statistics after the node commands ran.
    fn after_commands(
        &mut self,
        before: &crate::failover::Coordinator,
        actions: &[Action],
        results: &[CommandResult],
        now: u64,
    ) {
        let mut changed = false;
        for a in actions {
            if let Action::ReportPossibleLoss { entries, .. } = a {
                self.tracker.possible_loss(&mut self.s.saved, *entries);
                changed = true;
            }
        }
        for r in results.iter().filter(|r| r.op == "promote") {
            let Ok(status) = &r.outcome else { continue };
            changed = true;
            let term = status.term;
            if before.switchover.is_some() {
                tracker::switchover_done(&mut self.s.saved, now);
                let took = self
                    .s
                    .saved
                    .last_switchover
                    .as_ref()
                    .and_then(|s| s.duration_ms);
                self.record(
                    now,
                    "switchover",
                    &format!(
                        "switchover done: {} is primary in term {term} ({} ms)",
                        r.node,
                        took.unwrap_or(0)
                    ),
                    json!({"switchover": self.s.saved.last_switchover}),
                );
            } else if let Some(took) =
                self.tracker
                    .promoted(&mut self.s.saved, &r.node, term, status, now)
            {
                self.s
                    .metrics
                    .operator
                    .record_failover(Duration::from_millis(took));
                let from = self.s.saved.last_failover.as_ref().map(|f| f.from.clone());
                self.record(
                    now,
                    "failover",
                    &format!(
                        "failover: {} -> {} in term {term}, {took} ms after {} was last seen ready",
                        from.as_deref().unwrap_or("?"),
                        r.node,
                        from.as_deref().unwrap_or("the old primary")
                    ),
                    json!({"failover": self.s.saved.last_failover}),
                );
            }
        }
        if changed {
            self.save_stats(now);
        }
    }

    /// Time to first write and discarded entries, from the latest probes.
    fn measure(&mut self, now: u64) {
        let before = self.s.saved.last_failover.clone();
        let restarts: Vec<(String, u64)> = {
            let sup = lock(&self.s.supervisor);
            self.s
                .members
                .iter()
                .map(|m| (m.name.clone(), sup.info(&m.name).restarts))
                .collect()
        };
        let prober = &self.prober;
        let measured = self.tracker.observe(
            &mut self.s.saved,
            self.s.settings.ack,
            |n| prober.get(n).and_then(|h| h.status.as_ref()),
            |n| restarts.iter().find(|(m, _)| m == n).map_or(0, |(_, r)| *r),
            now,
        );
        let after = self.s.saved.last_failover.clone();
        if after == before {
            return;
        }
        let Some(f) = after else { return };
        if let Some(ms) = measured {
            self.s.metrics.first_write.observe(ms as f64 / 1000.0);
            self.record(
                now,
                "failover",
                &format!(
                    "{} acknowledges {} writes {ms} ms after {} was last seen ready",
                    f.to.as_deref().unwrap_or("?"),
                    ack_name(self.s.settings.ack),
                    f.from
                ),
                json!({"failover": f}),
            );
        }
        if before.as_ref().and_then(|b| b.entries_discarded).is_none()
            && let Some(d) = f.entries_discarded
            && f.to.as_deref() != Some(f.from.as_str())
        {
            self.record(
                now,
                "failover",
                &format!("{} rejoined as a replica; it discarded {d} entries", f.from),
                json!({"failover": f}),
            );
        }
        self.save_stats(now);
    }

    fn save_stats(&mut self, now: u64) {
        if let Err(e) = self.s.folder.save(&self.s.saved) {
            self.record(
                now,
                "error",
                &format!("cannot save the state: {e}"),
                json!({}),
            );
        }
    }

    /// Updates `/status`, the table, the gauges, and announces the cluster once it is ready.
    fn publish(&mut self, now: u64) {
        let procs = self.procs();
        let health = &self.prober.health;
        let phase = report::phase(&self.s.saved, health, &self.last_actions);
        let co = self.s.saved.coordinator.clone();
        let primary_health = co.primary.as_deref().and_then(|p| self.prober.get(p));
        let primary_ok = primary_health.is_some_and(|h| {
            h.ready()
                && h.status
                    .as_ref()
                    .is_some_and(|s| s.role == "primary" && s.term == co.term)
        });
        if !self.announced && primary_ok {
            let since = *self.primary_ready_since.get_or_insert(now);
            if health.iter().all(|h| h.ready()) || now - since >= ANNOUNCE_AFTER_MS {
                self.announce(&co);
            }
        } else if !primary_ok {
            self.primary_ready_since = None;
        }
        let dir = self.s.folder.dir.display().to_string();
        let doc = report::status_json(&StatusInput {
            ready: self.announced,
            phase,
            control_url: &self.s.control_url,
            dir: &dir,
            settings: &self.s.settings,
            probe_interval_ms: self.s.probe_interval.as_millis() as u64,
            saved: &self.s.saved,
            health: &self.prober.health,
            procs: &procs,
        });
        lock(&self.s.shared).status = doc;
        let m = &self.s.metrics;
        m.term.set(co.term as i64);
        m.operator.set_clusters([phase]);
        let header = format!(
            "rcluster playground: {} nodes, ack {}, term {}, primary {}, {} | failovers {} | {}",
            self.s.members.len(),
            ack_name(self.s.settings.ack),
            co.term,
            co.primary.as_deref().unwrap_or("-"),
            phase.as_str(),
            self.s.saved.failovers_total,
            self.s.control_url
        );
        let rows = report::rows(&self.s.saved, &self.prober.health, &procs);
        self.ui.table(&header, &rows, Instant::now());
    }

    fn announce(&mut self, co: &crate::failover::Coordinator) {
        self.announced = true;
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
