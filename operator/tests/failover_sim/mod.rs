//! A simulated cluster for the failover property tests: real logs (one term per entry) on N
//! nodes. Primaries append, replicas fetch from the node they follow (truncating a divergent
//! suffix first), a primary acknowledges entries once `write_quorum` nodes hold an entry of its
//! own term (Raft's commit rule), nodes crash, restart and get cut off from the coordinator while
//! still talking to each other. The runtime probes, decides, and carries the actions out at a
//! later `Act` event, so the cluster can move in between (as it does between a probe and the
//! commands). Every action list is checked when it is carried out.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use rcluster_operator::failover::*;

#[derive(Clone, Debug)]
pub struct Node {
    /// Term of entry `i + 1`.
    pub log: Vec<u64>,
    pub term: u64,
    pub role: Role,
    pub following: Option<usize>,
    /// The process runs (a crashed node keeps its disk).
    pub alive: bool,
    /// The coordinator can reach it.
    pub visible: bool,
}

#[derive(Clone, Debug)]
pub enum Event {
    Write(usize),
    Replicate(usize, usize),
    Crash(usize),
    Restart(usize),
    Partition(usize),
    /// Cut the node that acts as primary off from the coordinator (it keeps its replicas).
    PartitionPrimary,
    CrashPrimary,
    Heal(usize),
    Tick(u64),
    /// Probe and decide; the actions run at the next `Act`, so the cluster may move meanwhile.
    Reconcile,
    Act,
    Switchover(usize),
}

pub struct Sim {
    pub nodes: Vec<Node>,
    pub names: Vec<String>,
    pub settings: Settings,
    pub coordinator: Coordinator,
    pub now: u64,
    pub unhealthy_since: Vec<Option<u64>>,
    pub last_seen: Vec<Option<Observation>>,
    /// (index, term) of every acknowledged entry.
    pub acked: BTreeSet<(u64, u64)>,
    pub promoted: HashMap<u64, usize>,
    /// A lossy promotion happened: acknowledged entries may be gone from then on.
    pub lossy_happened: bool,
    /// Decided but not yet carried out.
    pub pending: Option<(ClusterView, Vec<Action>)>,
}

impl Sim {
    pub fn new(n: usize, ack: AckLevel, lossy: bool) -> Self {
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let node = Node {
            log: Vec::new(),
            term: 0,
            role: Role::Unknown,
            following: None,
            alive: true,
            visible: true,
        };
        Sim {
            nodes: vec![node; n],
            settings: Settings {
                members: names.clone(),
                ack,
                detection_window_ms: 1_000,
                allow_lossy_promotion: lossy,
                switchover_timeout_ms: 5_000,
            },
            names,
            coordinator: Coordinator::default(),
            now: 0,
            unhealthy_since: vec![None; n],
            last_seen: vec![None; n],
            acked: BTreeSet::new(),
            promoted: HashMap::new(),
            lossy_happened: false,
            pending: None,
        }
    }

    pub fn index(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).expect("member")
    }

    pub fn holds(&self, node: usize, (index, term): (u64, u64)) -> bool {
        self.nodes[node].log.get(index as usize - 1) == Some(&term)
    }

    pub fn run(&mut self, event: &Event) -> Result<(), TestCaseError> {
        let n = self.nodes.len();
        match *event {
            Event::Write(sel) => {
                let primaries: Vec<usize> = (0..n)
                    .filter(|&i| self.nodes[i].alive && self.nodes[i].role == Role::Primary)
                    .collect();
                if let Some(&p) = primaries.get(sel % primaries.len().max(1)) {
                    let term = self.nodes[p].term;
                    self.nodes[p].log.push(term);
                    self.update_acks(p);
                }
            }
            Event::Replicate(sel, max) => self.replicate(sel % n, max),
            Event::Crash(sel) => {
                self.nodes[sel % n].alive = false;
                self.nodes[sel % n].visible = false;
            }
            Event::Restart(sel) => {
                self.nodes[sel % n].alive = true;
                self.nodes[sel % n].visible = true;
            }
            Event::Partition(sel) => self.nodes[sel % n].visible = false,
            Event::PartitionPrimary | Event::CrashPrimary => {
                let crash = matches!(event, Event::CrashPrimary);
                for node in &mut self.nodes {
                    if node.role == Role::Primary {
                        node.visible = false;
                        node.alive &= !crash;
                    }
                }
            }
            Event::Heal(sel) => self.nodes[sel % n].visible = self.nodes[sel % n].alive,
            Event::Tick(ms) => self.now += ms,
            Event::Reconcile => {
                let view = self.observe();
                let actions = decide(&view);
                self.pending = Some((view, actions));
            }
            Event::Act => {
                if let Some((view, actions)) = self.pending.take() {
                    self.apply(&view, &actions)?;
                }
            }
            Event::Switchover(sel) => {
                let view = self.observe();
                let target = self.names[sel % n].clone();
                if let SwitchoverStep::Proceed { actions }
                | SwitchoverStep::Abandoned { actions, .. } =
                    plan_switchover(&view, Some(&target))
                {
                    self.pending = Some((view, actions));
                }
            }
        }
        Ok(())
    }

    /// Node `r` fetches up to `max` entries from the node it follows.
    pub fn replicate(&mut self, r: usize, max: usize) {
        let Some(p) = self.nodes[r].following else {
            return;
        };
        let (src, dst) = (&self.nodes[p], &self.nodes[r]);
        // Like the node: only a primary ships its log, and only to replicas of its term.
        let serves = src.role == Role::Primary && src.term == dst.term;
        if !(src.alive && dst.alive && dst.role == Role::Replica && serves) {
            return;
        }
        let common = src
            .log
            .iter()
            .zip(&dst.log)
            .take_while(|(a, b)| a == b)
            .count();
        let end = (common + max).min(src.log.len());
        let fetched = src.log[common..end].to_vec();
        let dst = &mut self.nodes[r];
        dst.log.truncate(common);
        dst.log.extend(fetched);
        self.update_acks(p);
    }

    /// The primary acknowledges up to the last entry of its own term held by a write quorum.
    pub fn update_acks(&mut self, p: usize) {
        let q = self.settings.ack.write_quorum(self.nodes.len());
        let (log, term) = (self.nodes[p].log.clone(), self.nodes[p].term);
        for index in (1..=log.len() as u64).rev() {
            if log[index as usize - 1] != term {
                break;
            }
            let holders = (0..self.nodes.len())
                .filter(|&i| self.holds(i, (index, term)))
                .count();
            if holders >= q {
                for i in 1..=index {
                    self.acked.insert((i, log[i as usize - 1]));
                }
                return;
            }
        }
    }

    pub fn observe(&mut self) -> ClusterView {
        let mut observations = Vec::new();
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if node.alive && node.visible {
                self.unhealthy_since[i] = None;
                let o = Observation {
                    name: self.names[i].clone(),
                    reachable: true,
                    role: node.role,
                    term: node.term,
                    last_log_term: node.log.last().copied().unwrap_or(0),
                    last_log_index: node.log.len() as u64,
                    applied_index: node.log.len() as u64,
                    following: node.following.map(|f| self.names[f].clone()),
                    unhealthy_since_ms: None,
                    members: Vec::new(),
                    term_start: 0,
                    commit_by_ack: None,
                };
                self.last_seen[i] = Some(o.clone());
                observations.push(o);
            } else {
                let since = *self.unhealthy_since[i].get_or_insert(self.now);
                if let Some(seen) = &self.last_seen[i] {
                    let mut o = seen.clone();
                    o.reachable = false;
                    o.unhealthy_since_ms = Some(since);
                    observations.push(o);
                }
            }
        }
        ClusterView {
            settings: self.settings.clone(),
            coordinator: self.coordinator.clone(),
            observations,
            now_ms: self.now,
        }
    }

    pub fn apply(&mut self, view: &ClusterView, actions: &[Action]) -> Result<(), TestCaseError> {
        check_shape(view, actions)?;
        check_waits_with_too_few(view, actions)?;
        if self.coordinator != view.coordinator {
            // Optimistic concurrency: the record changed since the probe, so nothing runs.
            return Ok(());
        }
        let lossy = actions
            .iter()
            .any(|a| matches!(a, Action::ReportPossibleLoss { .. }));
        self.coordinator = self.coordinator.after(actions);
        for action in actions {
            match action {
                Action::Fence { nodes, term } => {
                    for name in nodes {
                        let i = self.index(name);
                        let node = &mut self.nodes[i];
                        if node.alive && node.visible && node.term < *term {
                            node.term = *term;
                            node.role = Role::Fenced;
                            node.following = None;
                        }
                    }
                }
                Action::Promote { node, term } => {
                    let i = self.index(node);
                    if let Some(&other) = self.promoted.get(term) {
                        prop_assert_eq!(other, i, "two nodes promoted in term {}", term);
                    }
                    self.promoted.insert(*term, i);
                    if lossy {
                        self.lossy_happened = true;
                    }
                    if !self.lossy_happened {
                        for &entry in &self.acked {
                            prop_assert!(
                                self.holds(i, entry),
                                "promoted {} lacks acknowledged entry {:?}; log {:?}",
                                node,
                                entry,
                                self.nodes[i].log
                            );
                        }
                    }
                    let n = &mut self.nodes[i];
                    if n.alive && n.visible && n.term <= *term {
                        // Like the node: a new primary opens its term with an empty entry.
                        n.term = *term;
                        n.role = Role::Primary;
                        n.following = None;
                        n.log.push(*term);
                        self.update_acks(i);
                    }
                }
                Action::Follow {
                    node,
                    primary,
                    term,
                } => {
                    let (i, p) = (self.index(node), self.index(primary));
                    let n = &mut self.nodes[i];
                    if n.alive && n.visible && n.term <= *term {
                        n.term = *term;
                        n.role = Role::Replica;
                        n.following = Some(p);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn heal_everything(&mut self) {
        for node in &mut self.nodes {
            node.alive = true;
            node.visible = true;
        }
    }
}

/// Invariants of any action list, whatever the view.
pub fn check_shape(view: &ClusterView, actions: &[Action]) -> Result<(), TestCaseError> {
    let changes: Vec<usize> = (0..actions.len())
        .filter(|&i| actions[i].new_term().is_some())
        .collect();
    prop_assert!(
        changes.is_empty() || changes == [0],
        "term change not first: {:?}",
        actions
    );
    let observed_max = view.observations.iter().map(|o| o.term).max().unwrap_or(0);
    if let Some(to) = actions.first().and_then(Action::new_term) {
        prop_assert!(
            to > observed_max && to > view.coordinator.term,
            "{:?}",
            actions
        );
    }
    let term = view.coordinator.after(actions).term;
    let reachable = |name: &str| {
        view.observations
            .iter()
            .any(|o| o.name == name && o.reachable)
    };
    for action in actions {
        match action {
            Action::Fence { nodes, term: t } => {
                prop_assert_eq!(*t, term);
                prop_assert!(nodes.iter().all(|n| reachable(n)), "{:?}", actions);
            }
            Action::Promote { node, term: t } => {
                prop_assert_eq!(*t, term);
                prop_assert!(
                    reachable(node),
                    "promoted an unreachable node: {:?}",
                    actions
                );
            }
            Action::Follow {
                node,
                primary,
                term: t,
            } => {
                prop_assert_eq!(*t, term);
                prop_assert!(node != primary && reachable(node), "{:?}", actions);
                let next = view.coordinator.after(actions);
                prop_assert_eq!(Some(primary), next.primary.as_ref(), "{:?}", actions);
            }
            _ => {}
        }
    }
    Ok(())
}

/// An election with fewer answers in the term than the failover quorum waits.
pub fn check_waits_with_too_few(
    view: &ClusterView,
    actions: &[Action],
) -> Result<(), TestCaseError> {
    let c = &view.coordinator;
    if c.primary.is_some() || c.switchover.is_some() || c.term == 0 {
        return Ok(());
    }
    let in_term: Vec<&Observation> = view
        .observations
        .iter()
        .filter(|o| o.reachable && o.term == c.term)
        .collect();
    if in_term.iter().any(|o| o.role == Role::Primary) {
        // Already promoted in this term (the record was lost): recording it again is fine.
        return Ok(());
    }
    let need = view
        .settings
        .ack
        .failover_quorum(view.settings.members.len());
    let lossy = view.settings.allow_lossy_promotion && view.settings.ack.may_lose_writes();
    if in_term.len() < need && !lossy {
        prop_assert!(
            !actions.iter().any(|a| matches!(a, Action::Promote { .. })),
            "promoted with {} of {} responders: {:?}",
            in_term.len(),
            need,
            actions
        );
    }
    Ok(())
}
