//! Property tests of the failover decision against simulated cluster histories
//! (see `failover_sim`). Properties:
//! - every promoted node holds every acknowledged entry (unless the promotion was lossy);
//! - at most one node is promoted per term;
//! - a term change comes first and exceeds every observed term;
//! - with too few responders an election waits instead of promoting (for both member lists
//!   while a member change is uncommitted);
//! - no two nodes act as primary in one term;
//! - commands never name a node outside the member list they carry (the node would refuse);
//! - a member change recorded as committed leaves every acknowledged entry on a write quorum
//!   of the new list;
//! - once everything is healed, the cluster converges to one primary that everyone follows,
//!   with the desired member list (`members`: the same with scale events).

mod failover_sim;

use failover_sim::{Event, Sim, check_shape, check_waits_with_too_few};
use proptest::prelude::*;
use rcluster_operator::failover::*;

#[path = "failover_props/members.rs"]
mod members;

/// Runs `events`, checking the properties after each.
fn run(sim: &mut Sim, events: &[Event]) {
    for event in events {
        if let Err(e) = sim.run(event) {
            panic!("{e} after {event:?}");
        }
    }
}

/// Three members at `ack`, n1 elected primary of term 1 (its first entry on n1 only).
fn elected(ack: AckLevel) -> Sim {
    let mut sim = Sim::new(3, ack, false);
    run(
        &mut sim,
        &[Event::Reconcile, Event::Act, Event::Reconcile, Event::Act],
    );
    sim
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        30 => any::<usize>().prop_map(Event::Write),
        30 => (any::<usize>(), 1usize..4).prop_map(|(s, k)| Event::Replicate(s, k)),
        5 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Event::Contact(a, b)),
        3 => any::<usize>().prop_map(Event::Crash),
        3 => any::<usize>().prop_map(Event::Delete),
        5 => any::<usize>().prop_map(Event::Restart),
        3 => any::<usize>().prop_map(Event::Partition),
        4 => Just(Event::PartitionPrimary),
        2 => Just(Event::CrashPrimary),
        6 => any::<usize>().prop_map(Event::Heal),
        10 => (0u64..3_000).prop_map(Event::Tick),
        15 => Just(Event::Reconcile),
        6 => Just(Event::Act),
        4 => any::<usize>().prop_map(Event::Switchover),
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
    #![proptest_config(ProptestConfig::with_cases(2_000))]

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
        prop_assert!(sim.settle(12)?, "did not settle: {:?}", sim.decide(None).1.actions);
        sim.check_settled()?;
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
            (any::<bool>(), 0u8..5, 0u64..7, 0u64..4, 0u64..8, prop::option::of(0usize..5), prop::option::of(0u64..3_000), prop::bool::weighted(0.2)),
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
            .map(|(i, &(reachable, role, t, last_term, index, following, since, gone))| Observation {
                name: names[i].clone(),
                reachable,
                role: roles[role as usize],
                term: t,
                last_log_term: last_term.min(t),
                last_log_index: index,
                applied_index: index,
                following: following.filter(|&f| f < n).map(|f| names[f].clone()),
                unhealthy_since_ms: since,
                gone,
                members: Vec::new(),
                term_start: 0,
                commit_by_ack: None,
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
                ..Coordinator::default()
            },
            observations,
            now_ms: now,
        };
        let actions = decide(&view);
        check_shape(&view, &actions)?;
        check_waits_with_too_few(&view, &actions)?;
        // Whoever is promoted is at least as advanced as every member answering in the term
        // (or already acts as primary in it, and only needs recording again); members going
        // away do not count unless one of them is chosen (the others were too few).
        for action in &actions {
            if let Action::Promote { node, .. } = action {
                let chosen = view.observations.iter().find(|o| &o.name == node).expect("observed");
                let in_term = view.observations.iter().filter(|o| {
                    o.reachable
                        && o.term == view.coordinator.term
                        && (chosen.gone || !o.gone)
                });
                for o in in_term {
                    prop_assert!(
                        chosen.role == Role::Primary || chosen.log_position() >= o.log_position(),
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
    // Bootstrap: n1 primary in term 1, both replicas in sync.
    let mut sim = elected(AckLevel::Quorum);
    let mut run = |events: &[Event]| run(&mut sim, events);
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
        // The old primary commits entry 3 with n3 before the coordinator acts.
        Event::Write(0),
        Event::Replicate(2, 5),
        Event::Act,
        Event::Reconcile,
        Event::Act,
    ]);
    assert_eq!(sim.acked.len(), 3, "entry 3 was acknowledged");
    let primary = sim.coordinator.primary.clone().expect("a new primary");
    assert_ne!(primary, "n1");
    assert!(sim.holds(sim.index(&primary), (3, 1)));
}

/// `kubectl delete pod` of the primary: it is replaced at once, without waiting out the
/// detection window (no clock tick here), by a member that stays, and nothing is lost.
#[test]
fn a_primary_whose_pod_is_deleted_is_replaced_without_waiting() {
    let mut sim = elected(AckLevel::Quorum);
    run(
        &mut sim,
        &[
            Event::Write(0),
            Event::Replicate(1, 5),
            Event::Replicate(2, 5),
            Event::Write(0),
            Event::Replicate(2, 5),
            Event::Delete(0),
        ],
    );
    let acked = sim.acked.len();
    assert_eq!(acked, 3, "no-op and two writes");
    run(
        &mut sim,
        &[Event::Reconcile, Event::Act, Event::Reconcile, Event::Act],
    );
    let primary = sim
        .coordinator
        .primary
        .clone()
        .expect("a new primary, no window waited");
    assert_ne!(primary, "n1", "the member going away is passed over");
    let p = sim.index(&primary);
    for &(index, term) in &sim.acked {
        assert!(
            sim.holds(p, (index, term)),
            "{primary} lacks ({index}, {term})"
        );
    }
    assert_eq!(sim.acked.len(), acked);
}

/// A planned switchover at `quorum` while the primary takes writes: the old primary holds an
/// entry the target lacks when it is fenced, but that entry was never acknowledged, so the
/// target is promoted and nothing acknowledged is lost.
#[test]
fn switchover_under_load_at_quorum_promotes_the_target() {
    let mut sim = elected(AckLevel::Quorum);
    run(
        &mut sim,
        &[
            Event::Write(0),
            Event::Replicate(1, 5),
            Event::Replicate(2, 5),
            // Decided now, carried out after one more write reached only n3.
            Event::Switchover(1),
            Event::Write(0),
            Event::Replicate(2, 5),
            Event::Act,
            // Fenced: this write is refused.
            Event::Write(0),
        ],
    );
    assert_eq!(
        sim.acked.len(),
        3,
        "no-op, first write, and the one n3 acknowledged"
    );
    run(&mut sim, &[Event::Reconcile, Event::Act]);
    // n3 holds an acknowledged entry n2 lacks: the switchover waits, then gives up.
    assert_eq!(sim.coordinator.primary, None);
    run(
        &mut sim,
        &[Event::Tick(10_000), Event::Reconcile, Event::Act],
    );
    run(&mut sim, &[Event::Reconcile, Event::Act]);
    let primary = sim.coordinator.primary.clone().expect("an election ran");
    assert_ne!(primary, "n2", "n2 lacks an acknowledged entry");

    // Same again, but the last write reaches nobody: it is not acknowledged, n2 takes over.
    let mut sim = elected(AckLevel::Quorum);
    run(
        &mut sim,
        &[
            Event::Write(0),
            Event::Replicate(1, 5),
            Event::Replicate(2, 5),
            Event::Switchover(1),
            Event::Write(0),
            Event::Act,
            // n3 is fenced first: n1 could still drain the entry to it.
            Event::Reconcile,
            Event::Act,
            Event::Reconcile,
            Event::Act,
        ],
    );
    assert_eq!(sim.coordinator.primary.as_deref(), Some("n2"));
    assert_eq!(sim.nodes[0].role, Role::Replica, "the old primary follows");
    run(&mut sim, &[Event::Replicate(0, 5)]);
    assert_eq!(
        sim.nodes[0].log, sim.nodes[1].log,
        "its unacknowledged entry is gone"
    );
}

/// At `async` every write the primary accepted is acknowledged: a target one entry behind can
/// never qualify without it. Nothing drains it to the target here (the old primary's shipper
/// never gets to run), so the switchover times out and the election keeps the old primary, with
/// everything it acknowledged.
#[test]
fn switchover_at_async_never_drops_an_acknowledged_write() {
    let mut sim = elected(AckLevel::Async);
    run(
        &mut sim,
        &[
            Event::Replicate(1, 5),
            Event::Replicate(2, 5),
            Event::Switchover(1),
            Event::Write(0),
            Event::Act,
            Event::Reconcile,
            Event::Act,
        ],
    );
    assert_eq!(sim.coordinator.primary, None, "waiting for n2");
    run(
        &mut sim,
        &[Event::Tick(10_000), Event::Reconcile, Event::Act],
    );
    run(&mut sim, &[Event::Reconcile, Event::Act]);
    assert_eq!(sim.coordinator.primary.as_deref(), Some("n1"));
    assert!(sim.acked.iter().all(|&e| sim.holds(0, e)));
}

/// A fenced primary keeps draining its log to the replicas of its term, and a write waiting
/// there is acknowledged when that completes a write quorum. Found by the member-change
/// properties: a switchover promoted a target lacking an entry that the old primary drained to
/// the other replica between the probe and the promotion.
#[test]
fn switchover_waits_until_the_old_primary_can_no_longer_acknowledge() {
    // n1 primary in term 1; its first entry is on n1 only.
    let mut sim = elected(AckLevel::One);
    run(
        &mut sim,
        &[
            Event::Switchover(1),
            Event::Act,
            Event::Reconcile,
            // Drained to n3 after the probe: acknowledged at `one`.
            Event::Replicate(2, 5),
            Event::Act,
        ],
    );
    assert!(sim.acked.contains(&(1, 1)));
    assert_eq!(sim.coordinator.primary, None, "n2 lacks entry 1");
    run(
        &mut sim,
        &[
            Event::Reconcile,
            Event::Act,
            // n2 catches up from the draining n1.
            Event::Replicate(1, 5),
            Event::Reconcile,
            Event::Act,
        ],
    );
    assert_eq!(sim.coordinator.primary.as_deref(), Some("n2"));
    assert!(sim.holds(1, (1, 1)));
}
