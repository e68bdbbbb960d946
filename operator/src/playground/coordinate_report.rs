//! What the coordination loop reports: the terminal lines and the decision log, the status
//! document and metrics, and the state file it saves.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ANNOUNCE_AFTER_MS, Loop, lock};
use crate::coordinator::{Completed, Measured, Probe};
use crate::failover::{Action, Role};
use crate::nodes::CommandResult;
use crate::playground::report::{self, Node, StatusInput};
use crate::playground::supervisor::Event;
use crate::playground::ui;
use crate::playground::{ack_name, now_ms};

impl Loop {
    /// A record about one shard: its lines say which shard when there are several.
    pub(super) fn record_shard(
        &mut self,
        g: usize,
        now: u64,
        kind: &str,
        text: &str,
        extra: Value,
    ) {
        let shard = self.groups[g].shard;
        let record = self.s.saved.record(shard);
        let (term, primary) = (record.term, record.primary.clone());
        let text = if self.groups.len() > 1 {
            format!("shard {shard}: {text}")
        } else {
            text.to_string()
        };
        let mut extra = extra;
        if let Value::Object(o) = &mut extra {
            o.insert("shard".into(), json!(shard));
            o.insert("term".into(), json!(term));
            o.insert("primary".into(), json!(primary));
        }
        self.record(now, kind, &text, extra);
    }

    /// Writes one line to the terminal and one JSON record to the decision log.
    pub(super) fn record(&mut self, now: u64, kind: &str, text: &str, extra: Value) {
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

    pub(super) fn process_event(&mut self, e: Event) {
        let now = now_ms();
        let text = match &e {
            Event::Started { node, pid, restart } => {
                if *restart {
                    self.s.metrics.restarts.with_label_values(&[node]).inc();
                }
                // A restarted node is sent the cluster map again (it keeps it on disk, but a
                // newer one may have been recorded while it was down).
                self.pushed.remove(node);
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

    pub(super) fn log_decision(
        &mut self,
        g: usize,
        now: u64,
        actions: &[Action],
        persist_error: Option<&str>,
        results: &[CommandResult],
    ) {
        let signature = ui::signature(actions);
        let changed = signature != self.groups[g].last_signature;
        let was_waiting = self.groups[g]
            .last_actions
            .iter()
            .any(|a| matches!(a, Action::Wait { .. }));
        self.groups[g].last_signature = signature;
        let acting = actions.iter().any(|a| !matches!(a, Action::Wait { .. }));
        if actions.is_empty() {
            if changed && was_waiting {
                self.record_shard(
                    g,
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
        self.record_shard(
            g,
            now,
            "decision",
            &text,
            json!({"actions": actions, "results": results}),
        );
    }

    /// A promotion that ended a switchover or a failover.
    pub(super) fn report_completed(&mut self, g: usize, done: &Completed, now: u64) {
        if let Some(s) = &done.switchover {
            let text = format!(
                "switchover done: {} is primary in term {} ({} ms)",
                s.to,
                s.term,
                s.duration_ms.unwrap_or(0)
            );
            self.record_shard(g, now, "switchover", &text, json!({"switchover": s}));
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
            self.record_shard(g, now, "failover", &text, json!({"failover": f}));
        }
    }

    /// Time to first write and discarded entries, measured from the latest probes.
    pub(super) fn report_measured(&mut self, g: usize, measured: Measured, now: u64) {
        let Some(f) = self.groups[g].runtime.history().last_failover.clone() else {
            return;
        };
        if let Some(ms) = measured.first_write_ms {
            self.s.metrics.first_write.observe(ms as f64 / 1000.0);
            let text = format!(
                "{} acknowledges {} writes {ms} ms after {} was last seen ready",
                f.to.as_deref().unwrap_or("?"),
                ack_name(self.groups[g].settings.ack),
                f.from
            );
            self.record_shard(g, now, "failover", &text, json!({"failover": f}));
        }
        if let Some(d) = measured.discarded {
            let text = format!("{} rejoined as a replica; it discarded {d} entries", f.from);
            self.record_shard(g, now, "failover", &text, json!({"failover": f}));
        }
    }

    pub(super) fn save_state(&mut self, now: u64) {
        if let Err(e) = self.s.folder.save(&self.s.saved) {
            let text = format!("cannot save the state: {e}");
            self.record(now, "error", &text, json!({}));
        }
    }

    /// Updates `/status`, the table, the gauges, and announces the cluster once it is ready.
    pub(super) fn publish(&mut self, now: u64) {
        let sup = lock(&self.s.supervisor);
        let mut docs = Vec::new();
        let mut rows = Vec::new();
        let mut phases = Vec::new();
        let mut all_primaries_ok = true;
        let mut all_ready = true;
        let dir = self.s.folder.dir.display().to_string();
        let slots = self.s.saved.slot_map();
        for g in &self.groups {
            let memory = g.runtime.memory();
            let nodes: Vec<Node> = g
                .members
                .iter()
                .map(|m| Node {
                    member: m,
                    probe: g.probes.iter().find(|p| p.name == m.name),
                    seen: memory.get(&m.name),
                    process: sup.info(&m.name),
                })
                .collect();
            let co = self.s.saved.record(g.shard);
            let phase = report::phase(co, &nodes, &g.last_actions);
            let primary_ok = co.primary.as_deref().is_some_and(|p| {
                g.probes.iter().any(|q| {
                    q.name == p
                        && q.ready()
                        && q.status
                            .as_ref()
                            .is_some_and(|s| s.role == Role::Primary && s.term == co.term)
                })
            });
            all_primaries_ok &= primary_ok;
            all_ready &= g.probes.iter().all(Probe::ready);
            let mut doc = report::status_json(&StatusInput {
                ready: false,
                phase,
                control_url: &self.s.control_url,
                dir: &dir,
                settings: &g.settings,
                probe_interval_ms: self.s.probe_interval.as_millis() as u64,
                record: co,
                history: self.s.saved.history(g.shard),
                nodes: &nodes,
            });
            doc["shard"] = json!(g.shard);
            doc["slots"] = json!(slots.describe(g.shard as u32));
            docs.push(doc);
            rows.extend(report::rows(co, &nodes));
            phases.push(phase);
        }
        drop(sup);
        let mut announce = false;
        if !self.announced && all_primaries_ok {
            let since = *self.primary_ready_since.get_or_insert(now);
            announce = all_ready || now - since >= ANNOUNCE_AFTER_MS;
        } else if !all_primaries_ok {
            self.primary_ready_since = None;
        }
        let ready = self.announced || announce;
        // Shard 0's document is the top level, as for a cluster without shards; every shard's
        // (shard 0's too) is under `shards`, with the slot map.
        let mut doc = docs[0].clone();
        for d in docs.iter_mut() {
            d["ready"] = json!(ready);
        }
        doc["ready"] = json!(ready);
        doc["phase"] = json!(report::worst(&phases).as_str());
        doc["shards"] = json!(docs);
        doc["slot_map"] = json!(slots);
        doc["reshard"] = self.reshard_status();
        let co = &self.s.saved.coordinator;
        let header = if self.groups.len() == 1 {
            format!(
                "rcluster playground: {} nodes, ack {}, term {}, primary {}, {} | failovers {} | {}",
                self.groups[0].members.len(),
                ack_name(self.groups[0].settings.ack),
                co.term,
                co.primary.as_deref().unwrap_or("-"),
                phases[0].as_str(),
                self.s.saved.history.failovers_total,
                self.s.control_url
            )
        } else {
            let primaries: Vec<String> = self
                .groups
                .iter()
                .map(|g| {
                    let r = self.s.saved.record(g.shard);
                    format!("{}:{}", g.shard, r.primary.as_deref().unwrap_or("-"))
                })
                .collect();
            let failovers: u64 = (0..self.groups.len())
                .map(|k| self.s.saved.history(k).failovers_total)
                .sum();
            format!(
                "rcluster playground: {} shards, ack {}, primaries {}, {} | failovers {} | {}",
                self.groups.len(),
                ack_name(self.groups[0].settings.ack),
                primaries.join(" "),
                report::worst(&phases).as_str(),
                failovers,
                self.s.control_url
            )
        };
        let term = co.term;
        lock(&self.s.shared).status = doc;
        let m = &self.s.metrics;
        m.term.set(term as i64);
        m.operator.set_clusters(phases);
        if announce {
            self.announce();
        }
        self.ui.table(&header, &rows, Instant::now());
    }

    pub(super) fn announce(&mut self) {
        self.announced = true;
        let lines: Vec<String> = self
            .groups
            .iter()
            .flat_map(|g| g.members.iter())
            .map(|m| format!("{} {}", m.name, m.url))
            .collect();
        for l in lines {
            self.ui.line(&l);
        }
        let first = self.groups[0].members[0].url.clone();
        self.ui.line(&format!(
            "control {} (GET /status, /decisions, /metrics)",
            self.s.control_url
        ));
        for hint in self.s.hints.clone() {
            self.ui.line(&hint);
        }
        self.ui.line(&format!(
            "try: rcluster --endpoint {first} put greeting hello && rcluster --endpoint {first} status"
        ));
        let primaries: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                let co = self.s.saved.record(g.shard);
                format!(
                    "primary {} term {}",
                    co.primary.as_deref().unwrap_or("-"),
                    co.term
                )
            })
            .collect();
        self.ui
            .line(&format!("playground ready: {}", primaries.join(", ")));
    }
}
