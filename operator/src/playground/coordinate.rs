//! The coordination loop: probe every node, let each shard's coordinator runtime decide and act
//! (record in the state file first, then the node commands), retire nodes that left a member
//! list, push the cluster map to every node, and report. Each cycle is level-based: a command that
//! failed (or a crash of the playground half-way) is simply decided again on the next probe. One
//! shard's election never waits for another's: every shard decides from its own probes in every
//! cycle, and the commands of one shard do not depend on another's.

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
use rcluster_proto::{ClusterMap, ShardInfo};

#[path = "resharding.rs"]
mod resharding;

/// A migration step running beside the loop (`resharding.rs`); it hands the mover back.
type Moving = tokio::task::JoinHandle<(
    crate::reshard::Mover,
    Result<crate::reshard::Step, crate::reshard::MoveError>,
)>;

/// One shard as the loop is built with it.
pub struct GroupSetup {
    /// `members`: the desired ones (`--replicas`).
    pub settings: Settings,
    /// The nodes the playground runs for the shard: the desired ones and any its member list
    /// still holds.
    pub members: Vec<Member>,
}

/// Everything the loop is built from.
pub struct Setup {
    /// One per shard, in shard order.
    pub groups: Vec<GroupSetup>,
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
    /// Which certificates the nodes' `https://` URLs must have (`--tls`: the folder's CA).
    pub trust: rcluster_client::tls::Trust,
    /// How to connect (`--tls`, `--auth`), printed with the member list.
    pub hints: Vec<String>,
    /// How to start the nodes of a shard added while running (`POST /reshard`).
    pub launch: super::launch::Launch,
}

/// How long the primary may be ready while some replica is not before the cluster is announced
/// anyway.
const ANNOUNCE_AFTER_MS: u64 = 10_000;
/// How long a node that left the member list may take to stop before it is killed.
const RETIRE_GRACE: Duration = Duration::from_secs(10);

/// One shard's coordination: its settings, nodes, runtime and what was last decided.
struct Group {
    shard: usize,
    settings: Settings,
    members: Vec<Member>,
    runtime: Runtime,
    /// The latest probe round, for the table and `/status`.
    probes: Vec<Probe>,
    last_signature: String,
    last_actions: Vec<Action>,
    /// The last note about a switchover request, so a waiting request is told once.
    last_note: Option<String>,
}

impl Group {
    fn new(shard: usize, g: GroupSetup, history: crate::coordinator::History) -> Group {
        Group {
            shard,
            settings: g.settings,
            members: g.members,
            // The playground starts the nodes itself: the election that resumes a cluster after
            // its start (or brings up a shard added by a resharding) is not a failover.
            runtime: Runtime::new(FailoverCount::SeenHealthy, history),
            probes: Vec::new(),
            last_signature: String::new(),
            last_actions: Vec::new(),
            last_note: None,
        }
    }
}

pub struct Loop {
    s: Setup,
    groups: Vec<Group>,
    prober: Prober,
    /// A connection to every node: a node that comes up or goes away is looked at at once.
    links: super::links::Links,
    commands: NodeClient,
    ui: Ui,
    decisions: File,
    /// The cluster map each node last accepted; a node that restarts is sent it again.
    pushed: BTreeMap<String, ClusterMap>,
    announced: bool,
    primary_ready_since: Option<u64>,
    /// The migration step running now, and the mover between steps.
    moving: Option<Moving>,
    mover: Option<crate::reshard::Mover>,
    /// Migration steps failed in a row (the first of a streak is reported).
    reshard_failures: u32,
    /// Woken when a migration task ends, so its result is recorded (and the next phase started)
    /// at once: the write pause of a move spans two such hand-overs.
    step_done: Arc<tokio::sync::Notify>,
    /// `POST /reshard` requests from the control endpoint.
    asks: tokio::sync::mpsc::UnboundedReceiver<super::control::ReshardAsk>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Loop {
    pub fn new(s: Setup) -> Result<Loop, Error> {
        let prober = Prober::new(NodeClient::with_trust(
            &s.secret,
            s.probe_timeout,
            s.trust.clone(),
        ));
        let commands = NodeClient::with_trust(&s.secret, Duration::from_secs(2), s.trust.clone());
        let links = super::links::Links::new(NodeClient::with_trust(
            &s.secret,
            s.probe_timeout,
            s.trust.clone(),
        ));
        let decisions = s.folder.decision_log()?;
        let (ask, asks) = tokio::sync::mpsc::unbounded_channel();
        lock(&s.shared).reshard = Some(ask);
        let mut s = s;
        let groups = std::mem::take(&mut s.groups)
            .into_iter()
            .enumerate()
            .map(|(shard, g)| Group::new(shard, g, s.saved.history(shard).clone()))
            .collect();
        Ok(Loop {
            ui: Ui::new(s.quiet),
            s,
            groups,
            prober,
            links,
            commands,
            decisions,
            pushed: BTreeMap::new(),
            announced: false,
            primary_ready_since: None,
            moving: None,
            mover: None,
            reshard_failures: 0,
            step_done: Arc::new(tokio::sync::Notify::new()),
            asks,
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
            let step_done = self.step_done.clone();
            let urls = self.groups.iter().flat_map(|g| g.members.iter());
            self.links.keep(urls.map(|m| m.url.clone()).collect());
            let link = self.links.wake();
            let ask = tokio::select! {
                _ = stop.changed() => None,
                _ = tokio::time::sleep(pause) => None,
                _ = step_done.notified() => None,
                // A node came up or went away: look now, not at the next probe.
                _ = link.notified() => None,
                Some(ask) = self.asks.recv() => Some(ask),
            };
            if let Some(ask) = ask {
                self.reshard_asked(ask, now_ms());
            }
        }
    }

    async fn cycle(&mut self) -> bool {
        let started = Instant::now();
        let events = lock(&self.s.supervisor).poll(Instant::now());
        for e in events {
            self.process_event(e);
        }
        let all: Vec<Member> = self
            .groups
            .iter()
            .flat_map(|g| g.members.iter().cloned())
            .collect();
        // A node whose process the supervisor saw end is certainly down, and is not probed. The
        // playground keeps each node's listening socket, so its port accepts and never answers
        // instead of refusing: a probe would wait its whole timeout, and without this the
        // failover would wait out the detection window.
        let down: Vec<(String, u64)> = {
            let sup = lock(&self.s.supervisor);
            all.iter()
                .map(|m| (m.name.clone(), sup.info(&m.name)))
                .filter(|(_, info)| info.pid.is_none())
                .map(|(name, info)| (name, info.restarts))
                .collect()
        };
        let alive: Vec<Member> = all
            .iter()
            .filter(|m| !down.iter().any(|(name, _)| *name == m.name))
            .cloned()
            .collect();
        let mut answered = {
            let sup = self.s.supervisor.clone();
            let restarts = move |name: &str| lock(&sup).info(name).restarts;
            self.prober.probe(&alive, restarts).await
        };
        let at = now_ms();
        let mut probes: Vec<Probe> = all
            .iter()
            .map(|m| match answered.iter().position(|p| p.name == m.name) {
                Some(i) => answered.swap_remove(i),
                None => Probe {
                    name: m.name.clone(),
                    error: Some("its process is not running".into()),
                    gone: true,
                    sent_ms: at,
                    answered_ms: at,
                    restarts: down
                        .iter()
                        .find(|(name, _)| *name == m.name)
                        .map_or(0, |(_, r)| *r),
                    ..Probe::default()
                },
            })
            .collect();
        let now = now_ms();
        let (mut acted, mut ok) = (false, true);
        for g in 0..self.groups.len() {
            let mine: Vec<Probe> = {
                let names: Vec<&str> = self.groups[g]
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect();
                let (mine, rest) = probes
                    .drain(..)
                    .partition(|p| names.contains(&p.name.as_str()));
                probes = rest;
                mine
            };
            let (a, o) = self.step_group(g, mine, now).await;
            acted |= a;
            ok &= o;
            self.retire_members(g, now);
        }
        self.push_cluster_map(now).await;
        self.reshard_tick(now).await;
        self.publish(now);
        let outcome = if ok { Outcome::Ok } else { Outcome::Error };
        self.s
            .metrics
            .operator
            .record_reconcile(outcome, started.elapsed());
        acted
    }

    /// One shard: observe its probes, plan, act, keep its statistics.
    async fn step_group(&mut self, g: usize, probes: Vec<Probe>, now: u64) -> (bool, bool) {
        let shard = self.groups[g].shard;
        let group = &mut self.groups[g];
        let (observations, measured) = group.runtime.observe(&probes, group.settings.ack, now);
        group.probes = probes;
        self.report_measured(g, measured, now);
        let record = self.s.saved.record(shard).clone();
        let group = &self.groups[g];
        let view = ClusterView {
            settings: group.settings.clone(),
            coordinator: record.clone(),
            observations,
            now_ms: now,
        };
        let plan = coordinator::plan(&view, None, &group.probes, true);
        let result = self.act(g, &record, plan, now).await;
        let history = self.groups[g].runtime.history().clone();
        if &history != self.s.saved.history(shard) {
            *self.s.saved.history_mut(shard) = history;
            self.save_state(now);
        }
        result
    }

    /// The cluster map as the state file records it: the slot map, and per shard its members,
    /// the primary and the term.
    fn cluster_map(&self) -> ClusterMap {
        ClusterMap {
            slots: self.s.saved.slot_map(),
            shards: self
                .groups
                .iter()
                .map(|g| {
                    let record = self.s.saved.record(g.shard);
                    ShardInfo {
                        shard: g.shard as u32,
                        members: g
                            .members
                            .iter()
                            .map(|m| (m.name.clone(), m.url.clone()))
                            .collect(),
                        primary: record.primary.clone(),
                        term: record.term,
                    }
                })
                .collect(),
        }
    }

    /// Sends every node the cluster map, when it changed since the node last took it (or the
    /// node restarted). The map is built from the state file, which is saved before any node
    /// hears of what it records, so no node routes by something the playground could forget.
    async fn push_cluster_map(&mut self, now: u64) {
        let map = self.cluster_map();
        // Only members that answered this cycle's probe: a call to one that did not would hold
        // up the loop for its whole timeout (a killed node's socket, which the playground keeps,
        // accepts and never answers), and with it the next step of an election.
        let due: Vec<Member> = self
            .groups
            .iter()
            .flat_map(|g| {
                g.members.iter().filter(|m| {
                    g.probes
                        .iter()
                        .any(|p| p.name == m.name && p.status.is_some())
                })
            })
            .filter(|m| self.pushed.get(&m.name) != Some(&map))
            .cloned()
            .collect();
        if due.is_empty() {
            return;
        }
        let client = &self.commands;
        let sent = futures_util::future::join_all(
            due.iter().map(|m| client.push_cluster_map(&m.url, &map)),
        )
        .await;
        for (m, r) in due.iter().zip(sent) {
            match r {
                Ok(()) => {
                    self.pushed.insert(m.name.clone(), map.clone());
                }
                // A node that is down gets it when it answers again.
                Err(e) if self.pushed.contains_key(&m.name) => {
                    let text = format!("cannot send the cluster map to {}: {e}", m.name);
                    self.record(now, "error", &text, json!({}));
                    self.pushed.remove(&m.name);
                }
                Err(_) => {}
            }
        }
    }

    /// The member list promote and follow carry: the record's after `actions`, with the URLs the
    /// nodes reach each other at.
    fn peer_urls(&self, g: usize, record: &Coordinator, actions: &[Action]) -> Option<MemberUrls> {
        record
            .after(actions)
            .members
            .iter()
            .map(|name| Some((name.clone(), self.url(g, name)?.to_string())))
            .collect()
    }

    fn url(&self, g: usize, name: &str) -> Option<&str> {
        self.groups[g]
            .members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.url.as_str())
    }

    /// Let the shard's runtime act, then log. Returns (commands were sent, everything
    /// succeeded).
    async fn act(&mut self, g: usize, record: &Coordinator, plan: Plan, now: u64) -> (bool, bool) {
        let shard = self.groups[g].shard;
        let urls: BTreeMap<String, String> = self.groups[g]
            .members
            .iter()
            .map(|m| (m.name.clone(), m.url.clone()))
            .collect();
        let peers = self.peer_urls(g, record, &plan.actions);
        let nodes = Addressed {
            client: &self.commands,
            urls: &urls,
            members: peers.as_ref(),
        };
        let mut store = StateStore {
            folder: &self.s.folder,
            saved: &mut self.s.saved,
            shard,
        };
        let stepped = self.groups[g]
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
                self.report_completed(g, &completed, now);
                (results, None)
            }
            // Nothing may be sent for a term that is not on disk.
            Err(Unsent::Store(e)) => (Vec::new(), Some(e.to_string())),
            Err(Unsent::Conflict) => (Vec::new(), Some("the state changed".to_string())),
        };
        if let Some(note) = ui::request_note(&plan, record) {
            if self.groups[g].last_note.as_ref() != Some(&note) {
                self.record_shard(g, now, "switchover", &note, json!({}));
            }
            self.groups[g].last_note = Some(note);
        } else {
            self.groups[g].last_note = None;
        }
        for node in plan
            .clear
            .iter()
            .filter(|n| Some(*n) != record.primary.as_ref())
        {
            let text = format!(
                "ignored a switchover request on {node}: it is not the primary, or a switchover is in progress"
            );
            self.record_shard(g, now, "switchover", &text, json!({}));
        }
        let failed = results.iter().any(|r| r.outcome.is_err());
        self.log_decision(g, now, &plan.actions, persist_error.as_deref(), &results);
        self.groups[g].last_actions = plan.actions;
        (!results.is_empty(), !failed && persist_error.is_none())
    }

    /// Nodes that no member list holds any more stop for good.
    fn retire_members(&mut self, g: usize, now: u64) {
        let group = &self.groups[g];
        let running: Vec<String> = group.members.iter().map(|m| m.name.clone()).collect();
        let keep = coordinator::keep_running(
            &group.settings.members,
            self.s.saved.record(group.shard),
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
            self.groups[g].members.retain(|m| m.name != name);
            self.pushed.remove(&name);
            let text = format!("{name} left the member list; its node stops");
            self.record(now, "process", &text, json!({}));
        }
    }

    /// A record about one shard: its lines say which shard when there are several.
    fn record_shard(&mut self, g: usize, now: u64, kind: &str, text: &str, extra: Value) {
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

    fn log_decision(
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
    fn report_completed(&mut self, g: usize, done: &Completed, now: u64) {
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
    fn report_measured(&mut self, g: usize, measured: Measured, now: u64) {
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

    fn save_state(&mut self, now: u64) {
        if let Err(e) = self.s.folder.save(&self.s.saved) {
            let text = format!("cannot save the state: {e}");
            self.record(now, "error", &text, json!({}));
        }
    }

    /// Updates `/status`, the table, the gauges, and announces the cluster once it is ready.
    fn publish(&mut self, now: u64) {
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

    fn announce(&mut self) {
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
