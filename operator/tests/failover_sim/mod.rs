//! A simulated cluster for the failover property tests: real logs (one term per entry) on up to
//! five node slots. Primaries append, replicas fetch from the node they follow (truncating a
//! divergent suffix first), a primary's shipper makes members of an older term adopt it, a
//! fenced former primary drains its log to its old term's replicas, and a primary acknowledges
//! entries once a write quorum of ITS member list holds an entry of its own term (the node's
//! commit rule). Nodes crash, restart and get cut off from the coordinator while still talking
//! to each other; the spec's member count changes, and pods come and go as the controller's
//! StatefulSet would have them (a re-created pod keeps its disk or starts empty). The runtime
//! probes, decides, and carries the actions out at a later `Act` event, so the cluster can move
//! in between (as it does between a probe and the commands). Every action list is checked when
//! it is carried out.
//!
//! The coordinator is the real coordinator runtime (`rcluster_operator::coordinator`), the one the
//! controller and the playground run: its memory of the members, its request selection, and its
//! step (record first, then the node commands). Only the record store and the nodes it commands
//! are simulated (in `store`), and the simulated nodes answer probes with the node's own status
//! report, so the conversion into observations is the real one too.

mod checks;
mod node;
pub mod runtime;
mod store;

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use rcluster_operator::coordinator::{self, FailoverCount, History, Plan, Probe, Request, Source};
use rcluster_operator::failover::*;
use rcluster_operator::nodes::NodeStatus;
use rcluster_proto::MemberReport;

pub use checks::{check_shape, check_waits_with_too_few};
pub use node::{Led, Node};

#[derive(Clone, Debug)]
pub enum Event {
    Write(usize),
    Replicate(usize, usize),
    /// The first node's shipper reaches the second (a member of its list).
    Contact(usize, usize),
    Crash(usize),
    /// `kubectl delete pod`: it goes on running (and answering) until a `Crash` ends it or a
    /// `Restart` brings it back in a new pod.
    Delete(usize),
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
    /// The spec asks for this many members (the first ordinals). A pod created again on a
    /// removed ordinal starts with an empty disk when the flag is set (its PVC was deleted).
    Scale(usize, bool),
}

pub struct Sim {
    pub nodes: Vec<Node>,
    /// One name per slot, in ordinal order.
    pub names: Vec<String>,
    pub settings: Settings,
    pub coordinator: Coordinator,
    pub now: u64,
    /// The coordinator runtime, as the controller runs it (`None` only while it acts).
    pub runtime: Option<coordinator::Runtime>,
    /// (index, term) of every acknowledged entry.
    pub acked: BTreeSet<(u64, u64)>,
    pub promoted: HashMap<u64, usize>,
    /// A lossy promotion happened: acknowledged entries may be gone from then on.
    pub lossy_happened: bool,
    /// Decided but not yet carried out.
    pub pending: Option<(ClusterView, Plan)>,
    /// Whether pods created again from now on start with an empty disk.
    pub wipe: bool,
    /// The first property a node command found broken (commands report to the runtime in
    /// plain text; the test fails with this).
    pub violation: Option<TestCaseError>,
}

impl Sim {
    pub fn new(n: usize, ack: AckLevel, lossy: bool) -> Self {
        Sim::with_slots(n, n, ack, lossy)
    }

    /// `n` members running, room for `slots` (scale events go up to it).
    pub fn with_slots(n: usize, slots: usize, ack: AckLevel, lossy: bool) -> Self {
        let names: Vec<String> = (1..=slots).map(|i| format!("n{i}")).collect();
        let members = names[..n].to_vec();
        let nodes = (0..slots)
            .map(|i| match i < n {
                true => Node::fresh(members.clone()),
                false => Node::absent(),
            })
            .collect();
        Sim {
            nodes,
            settings: Settings {
                members: members.clone(),
                ack,
                detection_window_ms: 1_000,
                allow_lossy_promotion: lossy,
                switchover_timeout_ms: 5_000,
            },
            names,
            // Like the controller's first record: the list the nodes were started with.
            coordinator: Coordinator {
                members,
                ..Coordinator::default()
            },
            now: 0,
            runtime: Some(coordinator::Runtime::new(
                FailoverCount::Always,
                History::default(),
            )),
            acked: BTreeSet::new(),
            promoted: HashMap::new(),
            lossy_happened: false,
            pending: None,
            wipe: false,
            violation: None,
        }
    }

    pub fn index(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).expect("a slot")
    }

    pub fn holds(&self, node: usize, (index, term): (u64, u64)) -> bool {
        self.nodes[node].log.get(index as usize - 1) == Some(&term)
    }

    pub fn run(&mut self, event: &Event) -> Result<(), TestCaseError> {
        let n = self.nodes.len();
        match *event {
            Event::Write(sel) => {
                let primaries: Vec<usize> = (0..n)
                    .filter(|&i| self.nodes[i].up() && self.nodes[i].role == Role::Primary)
                    .collect();
                if let Some(&p) = primaries.get(sel % primaries.len().max(1)) {
                    let term = self.nodes[p].term;
                    self.nodes[p].log.push(term);
                    self.update_acks(p);
                }
            }
            Event::Replicate(sel, max) => self.replicate(sel % n, max),
            Event::Contact(from, to) => self.contact(from % n, to % n),
            Event::Crash(sel) => {
                self.nodes[sel % n].alive = false;
                self.nodes[sel % n].visible = false;
            }
            Event::Delete(sel) => {
                let node = &mut self.nodes[sel % n];
                node.going_away = node.present;
            }
            Event::Restart(sel) => {
                let node = &mut self.nodes[sel % n];
                if node.present && (!node.alive || node.going_away) {
                    node.restart();
                }
                node.visible = true;
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
            Event::Reconcile => self.pending = Some(self.decide(None)),
            Event::Act => {
                if let Some((view, plan)) = self.pending.take() {
                    self.apply(&view, &plan)?;
                }
            }
            Event::Switchover(sel) => {
                // Someone asks for it (on Kubernetes: the annotation).
                let desired = &self.settings.members;
                let asked = Request {
                    target: Some(desired[sel % desired.len()].clone()),
                    source: Source::Annotation,
                };
                self.pending = Some(self.decide(Some(asked)));
            }
            Event::Scale(k, wipe) => {
                self.settings.members = self.names[..k.clamp(1, n)].to_vec();
                self.wipe = wipe;
            }
        }
        self.check_one_primary_per_term()
    }

    /// Node `r` fetches up to `max` entries from the node it follows.
    pub fn replicate(&mut self, r: usize, max: usize) {
        let Some(p) = self.nodes[r].following else {
            return;
        };
        let (src, dst) = (&self.nodes[p], &self.nodes[r]);
        // Like the node: a shipper serves the replicas of its term that are in its list.
        let serves = src.ships().is_some_and(|led| led.term == dst.term)
            && src.members.contains(&self.names[r]);
        if !(src.up() && dst.up() && dst.role == Role::Replica && serves) {
            return;
        }
        let common = src
            .log
            .iter()
            .zip(&dst.log)
            .take_while(|(a, b)| a == b)
            .count();
        let end = common.saturating_add(max).min(src.log.len());
        let fetched = src.log[common..end].to_vec();
        let dst = &mut self.nodes[r];
        dst.log.truncate(common);
        dst.log.extend(fetched);
        self.update_acks(p);
    }

    /// A shipper reaching a node of an older term (or one without a primary in its own term)
    /// makes it a replica: the node adopts a newer primary that contacts it by itself, unless
    /// it never had a term (new or emptied: it follows only when told). A node
    /// that knows a newer term answers with it, and the shipper's node steps down (fenced).
    pub fn contact(&mut self, p: usize, r: usize) {
        let Some(led) = self.nodes[p].ships() else {
            return;
        };
        let listed = self.nodes[p].members.contains(&self.names[r]);
        if p == r || !listed || !self.nodes[p].up() || !self.nodes[r].up() {
            return;
        }
        let their_term = self.nodes[r].term;
        if their_term > self.nodes[p].term {
            self.nodes[p].fence(their_term);
            return;
        }
        let dst = &mut self.nodes[r];
        // Like the node: one that never had a term waits for the coordinator's follow.
        if dst.term == 0 {
            return;
        }
        let newer = led.term > dst.term
            || (led.term == dst.term && dst.following.is_none() && dst.role != Role::Primary);
        if newer {
            dst.term = led.term;
            dst.role = Role::Replica;
            dst.following = Some(p);
            dst.led = None;
        }
    }

    /// The highest index of `p`'s led term (from its first entry on) that a write quorum of
    /// `p`'s member list holds at `ack`: the node's commit rule. 0 when there is none.
    pub fn commit_index(&self, p: usize, led: Led, ack: AckLevel) -> u64 {
        let node = &self.nodes[p];
        let q = ack.write_quorum(node.members.len());
        for index in (led.start.max(1)..=node.log.len() as u64).rev() {
            if node.log[index as usize - 1] != led.term {
                break;
            }
            let holders = node
                .members
                .iter()
                .filter(|m| self.holds(self.index(m), (index, led.term)))
                .count();
            if holders >= q {
                return index;
            }
        }
        0
    }

    /// Everything up to the cluster-level commit index of `p` is acknowledged (a fenced
    /// former primary keeps counting while it drains: a waiting write then succeeds).
    pub fn update_acks(&mut self, p: usize) {
        let Some(led) = self.nodes[p].ships() else {
            return;
        };
        let index = self.commit_index(p, led, self.settings.ack);
        for i in 1..=index {
            self.acked.insert((i, self.nodes[p].log[i as usize - 1]));
        }
    }

    /// The controller's StatefulSet: create and remove pods (the first ordinals).
    pub fn sync_pods(&mut self) {
        let existing = self
            .nodes
            .iter()
            .rposition(|n| n.present)
            .map_or(0, |i| i + 1);
        let count = runtime::pods(
            &self.names,
            self.settings.members.len(),
            &self.coordinator,
            existing,
        );
        let flags = self.names[..count.min(self.names.len())].to_vec();
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if i < count && !node.present {
                if self.wipe || node.members.is_empty() {
                    *node = Node::fresh(flags.clone());
                } else {
                    node.present = true;
                    node.restart();
                }
            } else if i >= count && node.present {
                // The runtime forgets members it no longer probes.
                node.present = false;
                node.alive = false;
                node.visible = false;
            }
        }
    }

    /// What a node's `/v1/status` says (the fields the coordinator reads).
    pub fn status_of(&self, i: usize) -> NodeStatus {
        let node = &self.nodes[i];
        let led = node.led.filter(|_| node.role == Role::Primary);
        let commit = |ack| led.map_or(0, |led| self.commit_index(i, led, ack));
        NodeStatus {
            node: self.names[i].clone(),
            role: node.role,
            term: node.term,
            following: node.following.map(|f| self.names[f].clone()),
            last_log_index: node.log.len() as u64,
            last_log_term: node.log.last().copied().unwrap_or(0),
            applied_index: node.log.len() as u64,
            ready: true,
            commit_by_ack: led.map(|_| CommitByAck {
                async_: commit(AckLevel::Async),
                one: commit(AckLevel::One),
                quorum: commit(AckLevel::Quorum),
                all: commit(AckLevel::All),
            }),
            members: node
                .members
                .iter()
                .map(|m| MemberReport {
                    name: m.clone(),
                    ..MemberReport::default()
                })
                .collect(),
            term_start: led.map_or(0, |l| l.start),
            ..NodeStatus::default()
        }
    }

    /// A probe round over every pod, taken in by the runtime: the view it decides on, and the
    /// probes (for the requests recorded on nodes).
    pub fn observe(&mut self) -> (ClusterView, Vec<Probe>) {
        self.sync_pods();
        let probes: Vec<Probe> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].present)
            .map(|i| {
                let status = self.nodes[i].reachable().then(|| self.status_of(i));
                Probe {
                    name: self.names[i].clone(),
                    healthy: status.is_some() && !self.nodes[i].going_away,
                    gone: self.nodes[i].going_away,
                    status,
                    sent_ms: self.now,
                    answered_ms: self.now,
                    ..Probe::default()
                }
            })
            .collect();
        let runtime = self.runtime.as_mut().expect("the runtime");
        let (observations, _) = runtime.observe(&probes, self.settings.ack, self.now);
        let view = ClusterView {
            settings: self.settings.clone(),
            coordinator: self.coordinator.clone(),
            observations,
            now_ms: self.now,
        };
        (view, probes)
    }

    /// One reconcile's decision, as the controller makes it (a scale-down that would remove the
    /// primary hands over first); `asked`: a switchover someone asked for.
    pub fn decide(&mut self, asked: Option<Request>) -> (ClusterView, Plan) {
        let (view, probes) = self.observe();
        let plan = coordinator::plan(&view, asked, &probes, true);
        (view, plan)
    }

    /// Carries `plan` out through the runtime's step, after checking its shape.
    pub fn apply(&mut self, view: &ClusterView, plan: &Plan) -> Result<(), TestCaseError> {
        check_shape(view, &plan.actions)?;
        check_waits_with_too_few(view, &plan.actions)?;
        store::step(self, view, plan)?;
        if plan.actions.contains(&Action::MembersCommitted)
            && self.coordinator == view.coordinator.after(&plan.actions)
        {
            self.check_committed_list()?;
        }
        Ok(())
    }

    pub fn check_holds_acked(&self, i: usize, what: &str) -> Result<(), TestCaseError> {
        if self.lossy_happened {
            return Ok(());
        }
        for &entry in &self.acked {
            prop_assert!(
                self.holds(i, entry),
                "{} {} lacks acknowledged entry {:?}; log {:?}",
                what,
                self.names[i],
                entry,
                self.nodes[i].log
            );
        }
        Ok(())
    }

    /// Once a change is recorded as committed only the new list counts in elections, so every
    /// acknowledged entry must be on a write quorum of it.
    fn check_committed_list(&self) -> Result<(), TestCaseError> {
        if self.lossy_happened {
            return Ok(());
        }
        let list = &self.coordinator.members;
        let q = self.settings.ack.write_quorum(list.len());
        for &entry in &self.acked {
            let holders = list
                .iter()
                .filter(|m| self.holds(self.index(m), entry))
                .count();
            prop_assert!(
                holders >= q,
                "committed list {:?}: acknowledged {:?} on {} of {} needed",
                list,
                entry,
                holders,
                q
            );
        }
        Ok(())
    }

    fn check_one_primary_per_term(&self) -> Result<(), TestCaseError> {
        let mut terms = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.role == Role::Primary
                && let Some(other) = terms.insert(node.term, i)
            {
                prop_assert!(
                    false,
                    "{} and {} both primary in term {}",
                    self.names[other],
                    self.names[i],
                    node.term
                );
            }
        }
        Ok(())
    }

    pub fn heal_everything(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| n.present) {
            if !node.alive || node.going_away {
                node.restart();
            }
            node.visible = true;
        }
    }

    /// Liveness: with every pod up and reachable and replication keeping up, the runtime
    /// settles within `rounds` reconciles (nothing left to do).
    pub fn settle(&mut self, rounds: usize) -> Result<bool, TestCaseError> {
        for _ in 0..rounds {
            self.heal_everything();
            for i in 0..self.nodes.len() {
                self.replicate(i, usize::MAX);
            }
            let (view, plan) = self.decide(None);
            if plan.actions.is_empty() {
                return Ok(true);
            }
            self.apply(&view, &plan)?;
            self.now += 1_000;
        }
        Ok(false)
    }

    /// After `settle`: one primary, every other pod follows it in the coordinator's term with
    /// the desired member list, and only desired members have pods.
    pub fn check_settled(&self) -> Result<(), TestCaseError> {
        let co = &self.coordinator;
        let primary = co.primary.as_deref().expect("a primary after settling");
        let p = self.index(primary);
        prop_assert!(node::same(&co.members, &self.settings.members), "{:?}", co);
        prop_assert_eq!(&co.previous_members, &None);
        for (i, node) in self.nodes.iter().enumerate() {
            let listed = co.members.contains(&self.names[i]);
            prop_assert_eq!(node.present, listed, "pod of {}", self.names[i]);
            if !listed {
                continue;
            }
            if i == p {
                prop_assert_eq!(node.role, Role::Primary);
            } else {
                prop_assert_eq!(node.role, Role::Replica);
                prop_assert_eq!(node.following, Some(p));
            }
            prop_assert_eq!(node.term, co.term);
            prop_assert!(node::same(&node.members, &co.members), "{:?}", node);
        }
        Ok(())
    }
}
