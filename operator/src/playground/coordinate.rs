//! The coordination loop: probe every node, let each shard's coordinator runtime decide and act
//! (record in the state file first, then the node commands), retire nodes that left a member
//! list, push the cluster map to every node, and report. Each cycle is level-based: a command that
//! failed (or a crash of the playground half-way) is simply decided again on the next probe. One
//! shard's election never waits for another's: every shard decides from its own probes in every
//! cycle, and the commands of one shard do not depend on another's.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;

use super::control::Shared;
use super::probe::Prober;
use super::report::PlaygroundMetrics;
use super::state::{Folder, Saved, StateStore};
use super::supervisor::Supervisor;
use super::ui::{self, Ui};
use super::{Error, Member, now_ms};
use crate::coordinator::{self, FailoverCount, Plan, Probe, Runtime, Stepped, Unsent};
use crate::failover::{Action, ClusterView, Coordinator, Settings};
use crate::metrics::Outcome;
use crate::nodes::{Addressed, MemberUrls, NodeClient};
use rcluster_proto::{ClusterMap, ShardInfo};

#[path = "coordinate_report.rs"]
mod reporting;
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
}
