use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::*;
use crate::crd::{Phase, condition};
use crate::resources::test_support::cluster;

fn cond(type_: &str, status: &str, message: &str, second: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: format!("{type_}{status}"),
        message: message.into(),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap()),
        observed_generation: Some(1),
    }
}

fn shard_status(term: i64, primary: &str, phase: Phase) -> ReplicatedClusterStatus {
    ReplicatedClusterStatus {
        phase: Some(phase),
        term,
        primary: Some(primary.into()),
        replicas: 3,
        ready_replicas: if phase == Phase::Running { 3 } else { 2 },
        member_list: vec![primary.into()],
        ..ReplicatedClusterStatus::default()
    }
}

#[test]
fn the_recorded_shard_count_wins_over_the_spec() {
    // New: the spec's.
    assert_eq!(count(&cluster("{shards: 3}")), 3);
    // Created before shards (a term, no slot map): one shard, whatever the spec says now (a
    // resharding grows the recorded map first).
    let mut old = cluster("{shards: 2}");
    old.status = Some(ReplicatedClusterStatus {
        term: 4,
        ..ReplicatedClusterStatus::default()
    });
    assert_eq!(count(&old), 1);
    // Recorded with 2: 2 run while a spec of 4 reshards.
    let mut c = cluster("{shards: 4}");
    c.status = Some(ReplicatedClusterStatus {
        slot_map: Some(SlotMapStatus::from(&SlotMap::even(4096, 2).unwrap())),
        ..ReplicatedClusterStatus::default()
    });
    assert_eq!(count(&c), 2);
    assert_eq!(slot_map(&c, 2).unwrap(), SlotMap::even(4096, 2).unwrap());
    // A recorded map someone broke is never routed by.
    c.status.as_mut().unwrap().slot_map.as_mut().unwrap().ranges[0].end = 10;
    assert!(slot_map(&c, 2).is_err());
}

#[test]
fn the_resharding_condition_is_there_once_a_resharding_began() {
    let now = Time(k8s_openapi::jiff::Timestamp::from_second(50).unwrap());
    let mut c = cluster("{shards: 3}");
    assert_eq!(resharding_condition(&c, None, &now), None);
    let map = SlotMap::even(4096, 2).unwrap().with_shards(3).unwrap();
    let record =
        crate::crd::ReshardStatus::new(&crate::reshard::Resharding::new(2, 3), &map, None, None);
    let on = resharding_condition(&c, Some(&record), &now).unwrap();
    assert_eq!(
        (on.status.as_str(), on.message.as_str()),
        ("True", record.message.as_str())
    );
    let slots = SlotMap::even(4096, 2).unwrap();
    let s0 = shard_status(3, "demo-0", Phase::Running);
    let s1 = shard_status(2, "demo-s1-0", Phase::Running);
    let mut status = combine(vec![s0, s1], &slots, Some(record), Some(on));
    status
        .conditions
        .push(cond("ShardsChangeRefused", "True", "old", 1));
    c.status = Some(status);
    let later = Time(k8s_openapi::jiff::Timestamp::from_second(90).unwrap());
    let off = resharding_condition(&c, None, &later).unwrap();
    assert_eq!(
        (off.status.as_str(), off.last_transition_time.clone()),
        ("False", later.clone())
    );
    let full = combine(
        vec![shard_status(3, "demo-0", Phase::Running)],
        &SlotMap::even(4096, 1).unwrap(),
        None,
        Some(off),
    );
    assert!(full.reshard.is_none());
    let types: Vec<&str> = full.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, [condition::RESHARDING], "the old refusal is dropped");
}

#[test]
fn a_status_from_before_shards_is_shard_zero() {
    let old = shard_status(7, "demo-1", Phase::Running);
    assert_eq!(view(&old, 0).unwrap().term, 7);
    assert_eq!(view(&old, 0).unwrap().primary.as_deref(), Some("demo-1"));
    assert_eq!(view(&old, 1), None);
}

#[test]
fn each_shard_keeps_its_own_record_and_shard_zero_stays_at_the_top() {
    let slots = SlotMap::even(4096, 2).unwrap();
    let s0 = shard_status(3, "demo-0", Phase::Running);
    let s1 = shard_status(9, "demo-s1-2", Phase::Running);
    let full = combine(vec![s0, s1.clone()], &slots, None, None);
    assert_eq!((full.term, full.primary.as_deref()), (3, Some("demo-0")));
    assert_eq!(full.shards.len(), 2);
    assert_eq!(full.shards[1].term, 9);
    assert_eq!(full.shards[1].slots, slots.describe(1));
    assert_eq!(full.replicas, 6);
    assert_eq!(full.slot_map, Some(SlotMapStatus::from(&slots)));
    let back = view(&full, 1).unwrap();
    assert_eq!((back.term, back.primary), (9, s1.primary.clone()));
    assert_eq!(back.member_list, s1.member_list);

    // Shard 1 records a new term: shard 0's record, top level included, is untouched.
    let mut next1 = s1;
    next1.term = 10;
    next1.primary = None;
    let after = merge(&full, 1, next1, &slots);
    assert_eq!((after.term, after.primary.as_deref()), (3, Some("demo-0")));
    assert_eq!(after.shards[0], full.shards[0]);
    assert_eq!(
        (after.shards[1].term, after.shards[1].primary.clone()),
        (10, None)
    );

    // Shard 0's new term reaches the top level too.
    let mut next0 = view(&after, 0).unwrap();
    next0.term = 4;
    let after = merge(&after, 0, next0, &slots);
    assert_eq!(
        (after.term, after.shards[0].term, after.shards[1].term),
        (4, 4, 10)
    );
}

#[test]
fn the_worst_shard_decides_phase_and_conditions() {
    let slots = SlotMap::even(4096, 2).unwrap();
    let mut s0 = shard_status(3, "demo-0", Phase::Running);
    s0.conditions = vec![
        cond(condition::AVAILABLE, "True", "demo-0 accepts writes", 10),
        cond(condition::FAILING_OVER, "False", "no failover", 10),
    ];
    let mut s1 = shard_status(9, "demo-s1-0", Phase::FailingOver);
    s1.primary = None;
    s1.conditions = vec![
        cond(condition::AVAILABLE, "False", "electing", 20),
        cond(condition::FAILING_OVER, "True", "electing", 20),
    ];
    let resharding = cond(condition::RESHARDING, "True", "2 -> 3", 30);
    let full = combine(vec![s0, s1], &slots, None, Some(resharding));
    assert_eq!(full.phase, Some(Phase::FailingOver));
    let get = |t: &str| full.conditions.iter().find(|c| c.type_ == t).unwrap();
    assert_eq!(get(condition::AVAILABLE).status, "False");
    assert_eq!(get(condition::AVAILABLE).message, "shard 1: electing");
    assert_eq!(get(condition::FAILING_OVER).status, "True");
    assert_eq!(get(condition::RESHARDING).status, "True");
}

#[test]
fn one_shard_keeps_the_status_it_always_had() {
    let slots = SlotMap::even(4096, 1).unwrap();
    let mut s0 = shard_status(3, "demo-0", Phase::Running);
    s0.conditions = vec![cond(condition::READY, "True", "3 of 3", 10)];
    let full = combine(vec![s0.clone()], &slots, None, None);
    assert_eq!(
        full.conditions, s0.conditions,
        "no shard prefix with one shard"
    );
    assert_eq!(
        ReplicatedClusterStatus {
            shards: Vec::new(),
            slot_map: None,
            ..full.clone()
        },
        s0
    );
    assert_eq!(full.shards.len(), 1);
}

#[test]
fn the_cluster_map_lists_every_shard_or_nothing() {
    let slots = SlotMap::even(4096, 2).unwrap();
    let records = [
        Coordinator {
            term: 3,
            primary: Some("demo-0".into()),
            members: vec!["demo-0".into(), "demo-1".into()],
            ..Coordinator::default()
        },
        Coordinator {
            term: 5,
            primary: None,
            members: vec!["demo-s1-0".into()],
            ..Coordinator::default()
        },
    ];
    let map = cluster_map(&slots, &records, |m| Some(format!("http://{m}:7000"))).unwrap();
    assert_eq!(map.slots, slots);
    assert_eq!(map.shards[1].shard, 1);
    assert_eq!(map.shards[1].term, 5);
    assert_eq!(map.shards[0].primary_url(), Some("http://demo-0:7000"));
    let unknown = cluster_map(&slots, &records, |m| {
        (m != "demo-s1-0").then(|| format!("http://{m}:7000"))
    });
    assert_eq!(unknown, None);
}
