//! Member changes (scale up and down) mixed with failures: the same properties as for a fixed
//! member list, plus that a change recorded as committed leaves every acknowledged entry on a
//! write quorum of the new list, and that the cluster settles on the desired members.

use super::failover_sim::{Event, Sim};
use super::{ack, event};
use proptest::prelude::*;
use rcluster_operator::failover::*;

/// Room for five members; the spec asks for 1 to 5.
const SLOTS: usize = 5;

fn member_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        128 => event(),
        // Re-added members keep their disks, or come back empty (a deleted PVC).
        10 => (1usize..=SLOTS, proptest::bool::weighted(0.3)).prop_map(|(k, wipe)| Event::Scale(k, wipe)),
        // A change and its commit take several reconciles that get to act.
        10 => Just(Event::Act),
        5 => Just(Event::Reconcile),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn member_changes_keep_acknowledged_entries(
        n in 2usize..=SLOTS,
        ack in ack(),
        lossy in any::<bool>(),
        events in prop::collection::vec(member_event(), 1..300),
    ) {
        let mut sim = Sim::with_slots(n, SLOTS, ack, lossy);
        for event in &events {
            sim.run(event)?;
        }
        prop_assert!(sim.settle(30)?, "did not settle: {:?}", sim.decide(None).1.actions);
        sim.check_settled()?;
    }
}

use super::run;

/// A reconcile whose actions are carried out at once.
const RECONCILE: [Event; 2] = [Event::Reconcile, Event::Act];

/// `n` members at `ack`, n1 primary in term 1 with every replica in sync.
fn bootstrapped(n: usize, ack: AckLevel) -> Sim {
    let mut sim = Sim::with_slots(n, SLOTS, ack, false);
    run(&mut sim, &RECONCILE);
    run(&mut sim, &RECONCILE);
    assert_eq!(sim.coordinator.primary.as_deref(), Some("n1"));
    for i in 1..n {
        run(&mut sim, &[Event::Replicate(i, 10)]);
    }
    sim
}

fn reconcile(sim: &mut Sim, times: usize) {
    for _ in 0..times {
        run(sim, &RECONCILE);
    }
}

fn waits(sim: &mut Sim) -> Vec<WaitReason> {
    sim.decide(None).1.waits().cloned().collect()
}

fn holds_everything(sim: &Sim, name: &str) -> bool {
    let i = sim.index(name);
    sim.acked.iter().all(|&e| sim.holds(i, e))
}

/// 3 → 4 at `quorum`: entry 2 is acknowledged by n1 and n2 (a majority of three) when n4
/// joins; both crash before the change commits. n3 and n4 are enough for the new list alone,
/// but neither holds the entry: the election must wait for a second member of the old list.
#[test]
fn losing_both_holders_during_a_scale_up_waits() {
    let mut sim = bootstrapped(3, AckLevel::Quorum);
    run(&mut sim, &[Event::Write(0), Event::Replicate(1, 5)]);
    assert!(sim.acked.contains(&(2, 1)) && !sim.holds(2, (2, 1)));
    run(&mut sim, &[Event::Scale(4, false)]);
    reconcile(&mut sim, 1);
    let co = &sim.coordinator;
    assert_eq!((co.term, co.primary.as_deref()), (2, Some("n1")));
    assert_eq!(co.members.len(), 4);
    assert_eq!(co.previous_members.as_ref().map(Vec::len), Some(3));

    run(&mut sim, &[Event::Crash(0), Event::Crash(1)]);
    reconcile(&mut sim, 1);
    run(&mut sim, &[Event::Tick(5_000)]);
    reconcile(&mut sim, 2);
    assert_eq!(sim.coordinator.primary, None);
    assert_eq!(
        waits(&mut sim),
        vec![WaitReason::TooFewResponders { have: 1, need: 2 }]
    );

    run(&mut sim, &[Event::Restart(1)]);
    reconcile(&mut sim, 2);
    assert_eq!(sim.coordinator.primary.as_deref(), Some("n2"));
    assert!(holds_everything(&sim, "n2"));
}

/// 3 → 4 at `quorum`, and the primary crashes after the new list is recorded but before it is
/// promoted with it. The record says term 2 with four members while no node heard of term 2:
/// the election hears from both lists, keeps the entry n1 and n2 acknowledged, and the change
/// then commits under the new primary.
#[test]
fn the_primary_crashing_between_the_record_and_the_promote_loses_nothing() {
    let mut sim = bootstrapped(3, AckLevel::Quorum);
    run(&mut sim, &[Event::Write(0), Event::Replicate(1, 5)]);
    run(
        &mut sim,
        &[
            Event::Scale(4, false),
            Event::Reconcile,
            Event::CrashPrimary,
            Event::Act,
        ],
    );
    let co = sim.coordinator.clone();
    assert_eq!((co.term, co.primary.as_deref()), (2, Some("n1")));
    assert_eq!(co.previous_members.as_ref().map(Vec::len), Some(3));
    assert!(sim.nodes.iter().all(|n| n.term < 2), "the promote failed");

    reconcile(&mut sim, 1);
    run(&mut sim, &[Event::Tick(5_000)]);
    reconcile(&mut sim, 2);
    assert_eq!(sim.coordinator.primary.as_deref(), Some("n2"));
    assert!(holds_everything(&sim, "n2"));
    assert!(
        sim.coordinator.previous_members.is_some(),
        "not committed yet"
    );

    run(&mut sim, &[Event::Replicate(2, 9), Event::Replicate(3, 9)]);
    reconcile(&mut sim, 1);
    assert_eq!(sim.coordinator.previous_members, None, "committed");
    assert_eq!(sim.coordinator.members.len(), 4);
    assert!(sim.settle(10).expect("properties hold"));
    sim.check_settled().expect("settled");
}

/// 3 → 2 at `quorum`: entry 2 is on n1 and n3 only when n3 is to leave, and n1 crashes before
/// it is promoted with the new list. n2 alone is enough for the two-member list but lacks the
/// entry; n3, the most advanced answer, has left: the change goes back to three members under
/// n3. Later the shrink runs again, after a switchover away from n3.
#[test]
fn a_leaving_member_holding_the_most_takes_the_old_list_back() {
    let mut sim = bootstrapped(3, AckLevel::Quorum);
    run(&mut sim, &[Event::Write(0), Event::Replicate(2, 5)]);
    assert!(sim.acked.contains(&(2, 1)) && !sim.holds(1, (2, 1)));
    run(
        &mut sim,
        &[
            Event::Scale(2, false),
            Event::Reconcile,
            Event::CrashPrimary,
            Event::Act,
        ],
    );
    assert_eq!(sim.coordinator.members, ["n1", "n2"]);
    reconcile(&mut sim, 1);
    run(&mut sim, &[Event::Tick(5_000)]);
    reconcile(&mut sim, 2);
    let co = &sim.coordinator;
    assert_eq!((co.term, co.primary.as_deref()), (3, Some("n3")));
    assert_eq!(co.members, ["n1", "n2", "n3"]);
    assert_eq!(
        co.previous_members.as_deref(),
        Some(&["n1".into(), "n2".into()][..])
    );

    assert!(sim.settle(20).expect("properties hold"));
    sim.check_settled().expect("settled");
    assert_ne!(sim.coordinator.primary.as_deref(), Some("n3"));
    assert!(!sim.nodes[2].present, "n3's pod is gone");
}

/// The kind of the first action of each reconcile until nothing is left to do, with every
/// node up and replication keeping up.
fn drive(sim: &mut Sim, rounds: usize) -> Vec<String> {
    let mut kinds = Vec::new();
    for _ in 0..rounds {
        for i in 0..sim.nodes.len() {
            sim.replicate(i, usize::MAX);
        }
        let (view, plan) = sim.decide(None);
        let Some(first) = plan.actions.first() else {
            return kinds;
        };
        let json = serde_json::to_value(first).expect("serializes");
        kinds.push(json["action"].as_str().unwrap_or_default().to_string());
        sim.apply(&view, &plan).expect("properties hold");
        sim.now += 1_000;
    }
    panic!("did not settle: {kinds:?}");
}

/// 4 → 3 while the primary is n4, the member that leaves. The core never removes the primary
/// (`plan_members` does nothing, and a record without it would start an election); the runtime
/// switches over to a member that stays first, then shrinks.
#[test]
fn a_shrink_that_removes_the_primary_switches_over_first() {
    let mut sim = bootstrapped(4, AckLevel::Quorum);
    run(&mut sim, &[Event::Switchover(3), Event::Act]);
    drive(&mut sim, 10);
    assert_eq!(sim.coordinator.primary.as_deref(), Some("n4"));
    run(&mut sim, &[Event::Write(0)]);

    run(&mut sim, &[Event::Scale(3, false)]);
    let (view, _) = sim.observe();
    assert_eq!(plan_members(&view), vec![]);
    assert_eq!(decide(&view), vec![]);
    let mut without = view.clone();
    without.coordinator.members.retain(|m| m != "n4");
    assert!(matches!(decide(&without)[0], Action::BumpTerm { .. }));

    let kinds = drive(&mut sim, 20);
    let begin = kinds.iter().position(|k| k == "begin_switchover");
    let change = kinds.iter().position(|k| k == "change_members");
    assert!(
        begin.is_some() && change.is_some() && begin < change,
        "{kinds:?}"
    );
    assert_eq!(kinds.last().map(String::as_str), Some("members_committed"));
    sim.check_settled().expect("settled");
    assert!(!sim.nodes[3].present, "n4's pod is gone");
}

/// A member removed by a scale-down comes back with an EMPTY disk (its PVC deleted; the
/// StatefulSet keeps it by default) while an old primary, cut off since before the last
/// election, still runs and reaches it. Were the empty nodes to adopt the old primary that
/// contacts them, two of them would complete its write quorum of five and it would acknowledge
/// a write the new primary never sees — before the coordinator even observes the new pods.
/// The node closes this (node/tests/membership.rs): one that never had a term adopts no
/// primary by contact, only by the coordinator's follow.
#[test]
fn an_emptied_member_rejoining_does_not_revive_a_stale_primary() {
    let mut sim = bootstrapped(5, AckLevel::Quorum);
    // n1 keeps running, reachable only by n4 and n5 from now on.
    run(&mut sim, &[Event::PartitionPrimary]);
    reconcile(&mut sim, 1);
    run(&mut sim, &[Event::Tick(5_000)]);
    reconcile(&mut sim, 2);
    assert_eq!(sim.coordinator.primary.as_deref(), Some("n2"));
    // 5 → 3 commits without n1 (n2 and n3 are a quorum of three); n4 and n5 go.
    run(&mut sim, &[Event::Scale(3, true)]);
    reconcile(&mut sim, 1);
    run(&mut sim, &[Event::Replicate(2, 9)]);
    reconcile(&mut sim, 2);
    assert_eq!(sim.coordinator.previous_members, None);
    assert!(!sim.nodes[3].present && !sim.nodes[4].present);
    // Back to five with empty disks: n1 reaches them before the coordinator's follow does.
    run(
        &mut sim,
        &[
            Event::Scale(5, true),
            Event::Reconcile,
            Event::Contact(0, 3),
            Event::Contact(0, 4),
            Event::Write(0),
            Event::Replicate(3, 9),
            Event::Replicate(4, 9),
        ],
    );
    assert_eq!(
        (sim.nodes[3].term, sim.nodes[4].term),
        (0, 0),
        "they wait to be told"
    );
    assert!(
        !sim.acked.contains(&(2, 1)),
        "the stale primary acknowledged nothing"
    );
    run(&mut sim, &[Event::Act]);
}
