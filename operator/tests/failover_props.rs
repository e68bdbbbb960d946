//! Property tests of the failover decision against simulated cluster histories.
//!
//! The simulation keeps real logs (one term per entry) on N nodes: primaries append, replicas
//! fetch from the node they follow (truncating a divergent suffix first), a primary acknowledges
//! an entry of its own term once `write_quorum` nodes hold it (Raft's commit rule), nodes crash,
//! restart and get cut off from the coordinator while still talking to each other. A runtime
//! loop probes the reachable nodes, calls `decide` and applies the actions. Properties:
//! - every promoted node holds every acknowledged entry (unless the promotion was lossy);
//! - at most one node is promoted per term;
//! - a term change comes first and exceeds every observed term;
//! - with too few responders an election waits instead of promoting;
//! - once everything is healed, the cluster converges to one primary that everyone follows.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use rcluster_operator::failover::*;

#[derive(Clone, Debug)]
struct Node {
    /// Term of entry `i + 1`.
    log: Vec<u64>,
    term: u64,
    role: Role,
    following: Option<usize>,
    /// The process runs (a crashed node keeps its disk).
    alive: bool,
    /// The coordinator can reach it.
    visible: bool,
}

#[derive(Clone, Debug)]
enum Event {
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

struct Sim {
    nodes: Vec<Node>,
    names: Vec<String>,
    settings: Settings,
    coordinator: Coordinator,
    now: u64,
    unhealthy_since: Vec<Option<u64>>,
    last_seen: Vec<Option<Observation>>,
    /// (index, term) of every acknowledged entry.
    acked: BTreeSet<(u64, u64)>,
    promoted: HashMap<u64, usize>,
    /// A lossy promotion happened: acknowledged entries may be gone from then on.
    lossy_happened: bool,
    /// Decided but not yet carried out.
    pending: Option<(ClusterView, Vec<Action>)>,
}

impl Sim {
    fn new(n: usize, ack: AckLevel, lossy: bool) -> Self {
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

    fn index(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).expect("member")
    }

    fn holds(&self, node: usize, (index, term): (u64, u64)) -> bool {
        self.nodes[node].log.get(index as usize - 1) == Some(&term)
    }

    fn run(&mut self, event: &Event) -> Result<(), TestCaseError> {
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
                if let SwitchoverStep::Proceed { actions } | SwitchoverStep::Abandoned { actions, .. } =
                    plan_switchover(&view, Some(&target))
                {
                    self.pending = Some((view, actions));
                }
            }
        }
        Ok(())
    }

    /// Node `r` fetches up to `max` entries from the node it follows.
    fn replicate(&mut self, r: usize, max: usize) {
        let Some(p) = self.nodes[r].following else {
            return;
        };
        let (src, dst) = (&self.nodes[p], &self.nodes[r]);
        // A fenced old primary still serves its frozen log (switchover catch-up).
        let serves = (src.role == Role::Primary && src.term == dst.term)
            || (src.role == Role::Fenced && src.term >= dst.term);
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
        if self.nodes[p].role == Role::Primary {
            self.update_acks(p);
        }
    }

    /// The primary acknowledges up to the last entry of its own term held by a write quorum.
    fn update_acks(&mut self, p: usize) {
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

    fn observe(&mut self) -> ClusterView {
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

    fn apply(&mut self, view: &ClusterView, actions: &[Action]) -> Result<(), TestCaseError> {
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
                        n.term = *term;
                        n.role = Role::Primary;
                        n.following = None;
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

    fn heal_everything(&mut self) {
        for node in &mut self.nodes {
            node.alive = true;
            node.visible = true;
        }
    }
}

/// Invariants of any action list, whatever the view.
fn check_shape(view: &ClusterView, actions: &[Action]) -> Result<(), TestCaseError> {
    let changes: Vec<usize> = (0..actions.len())
        .filter(|&i| actions[i].new_term().is_some())
        .collect();
    prop_assert!(changes.is_empty() || changes == [0], "term change not first: {:?}", actions);
    let observed_max = view.observations.iter().map(|o| o.term).max().unwrap_or(0);
    if let Some(to) = actions.first().and_then(Action::new_term) {
        prop_assert!(to > observed_max && to > view.coordinator.term, "{:?}", actions);
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
                prop_assert!(reachable(node), "promoted an unreachable node: {:?}", actions);
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
fn check_waits_with_too_few(view: &ClusterView, actions: &[Action]) -> Result<(), TestCaseError> {
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
        return Ok(());
    }
    let need = view.settings.ack.failover_quorum(view.settings.members.len());
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

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        30 => any::<usize>().prop_map(Event::Write),
        30 => (any::<usize>(), 1usize..4).prop_map(|(s, k)| Event::Replicate(s, k)),
        3 => any::<usize>().prop_map(Event::Crash),
        5 => any::<usize>().prop_map(Event::Restart),
        3 => any::<usize>().prop_map(Event::Partition),
        4 => Just(Event::PartitionPrimary),
        2 => Just(Event::CrashPrimary),
        6 => any::<usize>().prop_map(Event::Heal),
        10 => (0u64..3_000).prop_map(Event::Tick),
        15 => Just(Event::Reconcile),
        6 => Just(Event::Act),
        2 => any::<usize>().prop_map(Event::Switchover),
    ]
}

fn ack() -> impl Strategy<Value = AckLevel> {
    prop_oneof![
        Just(AckLevel::Async),
        Just(AckLevel::One),
        Just(AckLevel::Quorum),
        Just(AckLevel::All),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn failover_keeps_acknowledged_entries(
        n in 2usize..=5,
        ack in ack(),
        lossy in any::<bool>(),
        events in prop::collection::vec(event(), 1..250),
    ) {
        let mut sim = Sim::new(n, ack, lossy);
        for event in &events {
            sim.run(event)?;
        }
        // Liveness: with every node up and reachable the cluster settles.
        sim.heal_everything();
        let mut settled = false;
        for _ in 0..12 {
            let view = sim.observe();
            let actions = decide(&view);
            if actions.is_empty() {
                settled = true;
                break;
            }
            sim.apply(&view, &actions)?;
            sim.now += 1_000;
        }
        prop_assert!(settled, "did not settle: {:?}", decide(&sim.observe()));
        let primary = sim.coordinator.primary.clone().expect("a primary after settling");
        let p = sim.index(&primary);
        for (i, node) in sim.nodes.iter().enumerate() {
            if i == p {
                prop_assert_eq!(node.role, Role::Primary);
            } else {
                prop_assert_eq!(node.role, Role::Replica);
                prop_assert_eq!(node.following, Some(p));
            }
            prop_assert_eq!(node.term, sim.coordinator.term);
        }
    }

    /// Arbitrary (not necessarily reachable-by-history) views: shape invariants, the responder
    /// rule, and that the chosen candidate is the most advanced member answering in the term.
    #[test]
    fn any_view_gets_well_formed_actions(
        n in 1usize..=5,
        ack in ack(),
        lossy in any::<bool>(),
        term in 0u64..5,
        primary in prop::option::of(0usize..5),
        members in prop::collection::vec(
            (any::<bool>(), 0u8..5, 0u64..7, 0u64..4, 0u64..8, prop::option::of(0usize..5), prop::option::of(0u64..3_000)),
            5,
        ),
        now in 0u64..5_000,
    ) {
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let roles = [Role::Primary, Role::Replica, Role::Fenced, Role::Standalone, Role::Unknown];
        let observations: Vec<Observation> = members
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, &(reachable, role, t, last_term, index, following, since))| Observation {
                name: names[i].clone(),
                reachable,
                role: roles[role as usize],
                term: t,
                last_log_term: last_term.min(t),
                last_log_index: index,
                applied_index: index,
                following: following.filter(|&f| f < n).map(|f| names[f].clone()),
                unhealthy_since_ms: since,
            })
            .collect();
        let view = ClusterView {
            settings: Settings {
                members: names.clone(),
                ack,
                detection_window_ms: 1_000,
                allow_lossy_promotion: lossy,
                switchover_timeout_ms: 5_000,
            },
            coordinator: Coordinator {
                term,
                primary: primary.filter(|&p| p < n && term > 0).map(|p| names[p].clone()),
                switchover: None,
            },
            observations,
            now_ms: now,
        };
        let actions = decide(&view);
        check_shape(&view, &actions)?;
        check_waits_with_too_few(&view, &actions)?;
        // Whoever is promoted is at least as advanced as every member answering in the term
        // (or already acts as primary in it, and only needs recording again).
        for action in &actions {
            if let Action::Promote { node, .. } = action {
                let chosen = view.observations.iter().find(|o| &o.name == node).expect("observed");
                let in_term = view
                    .observations
                    .iter()
                    .filter(|o| o.reachable && o.term == view.coordinator.term);
                for o in in_term {
                    prop_assert!(
                        chosen.role.claims_primary() || chosen.log_position() >= o.log_position(),
                        "chose {:?} over {:?}", chosen, o
                    );
                }
            }
        }
    }
}

/// The race the two-step election exists for: the old primary, cut off from the coordinator but
/// not from its replicas, acknowledges one more entry between the probe and the promotion.
#[test]
fn entry_acknowledged_between_probe_and_promotion_survives() {
    let mut sim = Sim::new(3, AckLevel::Quorum, false);
    let mut run = |events: &[Event]| {
        for event in events {
            sim.run(event).expect("properties hold");
        }
    };
    // Bootstrap: n1 primary in term 1, both replicas in sync.
    run(&[Event::Reconcile, Event::Act, Event::Reconcile, Event::Act]);
    run(&[
        Event::Write(0),
        Event::Replicate(1, 5),
        Event::Replicate(2, 5),
    ]);
    run(&[
        Event::PartitionPrimary,
        Event::Reconcile,
        Event::Tick(5_000),
        Event::Reconcile,
        // The old primary commits entry 2 with n3 before the coordinator acts.
        Event::Write(0),
        Event::Replicate(2, 5),
        Event::Act,
        Event::Reconcile,
        Event::Act,
    ]);
    assert_eq!(sim.acked.len(), 2, "entry 2 was acknowledged");
    let primary = sim.coordinator.primary.clone().expect("a new primary");
    assert_ne!(primary, "n1");
    assert!(sim.holds(sim.index(&primary), (2, 1)));
}
