use super::*;
use crate::log::{Op, Retention};
use crate::state::entry;

fn put(key: &str, value: &str) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: value.into(),
        ttl_ms: None,
    }
}

fn incr(key: &str, delta: i64, min: Option<i64>) -> TxnOp {
    TxnOp::Incr {
        key: key.into(),
        delta,
        min,
        max: None,
    }
}

fn cmp(key: &str) -> Compare {
    Compare {
        key: key.into(),
        exists: None,
        version: None,
        value: None,
        min: None,
        max: None,
    }
}

fn txn(compare: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Op {
    Op::Txn {
        compare,
        success,
        failure,
    }
}

/// Applies like the primary does and returns the result and the events.
fn run(s: &mut State, index: u64, ts: u64, op: Op) -> Result<(OpResult, Vec<KvEvent>), ApplyError> {
    let e = entry(index, ts, op);
    let a = s.apply_op(&e)?;
    if a.changed {
        s.finish(&e, &a.result);
    }
    Ok((a.result, a.events))
}

fn stocked() -> State {
    let mut s = State::default();
    run(
        &mut s,
        1,
        100,
        txn(vec![], vec![put("{p}/stock", "2")], vec![]),
    )
    .unwrap();
    let topic = Op::CreateTopic {
        topic: "{p}orders".into(),
        retention: Retention::default(),
    };
    run(&mut s, 2, 100, topic).unwrap();
    s
}

fn buy(order: &str) -> Op {
    let mut enough = cmp("{p}/stock");
    enough.min = Some(1);
    txn(
        vec![enough],
        vec![
            incr("{p}/stock", -1, Some(0)),
            put(&format!("{{p}}/orders/{order}"), "\"paid\""),
            TxnOp::Publish {
                topic: "{p}orders".into(),
                value: format!("\"{order}\"").into(),
            },
        ],
        vec![put(&format!("{{p}}/refused/{order}"), "true")],
    )
}

#[test]
fn the_success_branch_applies_every_operation_in_one_entry() {
    let mut s = stocked();
    let (r, events) = run(&mut s, 3, 200, buy("o1")).unwrap();
    let OpResult::Txn {
        succeeded,
        failed_compare,
        results,
    } = r
    else {
        panic!("{r:?}")
    };
    assert!(succeeded);
    assert_eq!(failed_compare, None);
    assert_eq!(
        results,
        vec![
            TxnResult::Incr {
                value: 1,
                version: 3
            },
            TxnResult::Put {
                version: 3,
                expires_at_ms: None
            },
            TxnResult::Publish { offset: 0 },
        ]
    );
    assert_eq!(events.len(), 2, "two record changes");
    assert!(
        events
            .iter()
            .all(|e| e.index == 3 && e.modified_ms() == 200)
    );
    assert_eq!(s.topics["{p}orders"].messages[0].index, 3);
    assert_eq!(s.applied_index, 3);
}

#[test]
fn a_failed_comparison_runs_the_failure_branch() {
    let mut s = stocked();
    run(&mut s, 3, 200, buy("o1")).unwrap();
    run(&mut s, 4, 200, buy("o2")).unwrap();
    let (r, _) = run(&mut s, 5, 200, buy("o3")).unwrap();
    assert!(
        matches!(
            r,
            OpResult::Txn {
                succeeded: false,
                failed_compare: Some(0),
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(s.get("{p}/stock", 0).unwrap().value(), "0");
    assert!(s.get("{p}/orders/o3", 0).is_none());
    assert!(s.get("{p}/refused/o3", 0).is_some());
    assert_eq!(
        s.topics["{p}orders"].next_offset(),
        2,
        "two orders published"
    );
}

#[test]
fn a_failing_operation_changes_nothing() {
    let mut s = stocked();
    let before = s.digest();
    let op = txn(
        vec![],
        vec![
            put("{p}/a", "1"),
            incr("{p}/stock", -5, Some(0)),
            put("{p}/b", "1"),
        ],
        vec![],
    );
    let err = run(&mut s, 3, 200, op).unwrap_err();
    let ApplyError::InTxn { op, what, source } = err else {
        panic!("{err:?}")
    };
    assert_eq!((op, what.as_str()), (1, "incr {p}/stock"));
    assert_eq!(*source, ApplyError::OutOfBounds);
    assert_eq!(s.digest(), before, "the put before it was taken back");
    let missing = txn(
        vec![],
        vec![
            put("{p}/a", "1"),
            TxnOp::Publish {
                topic: "nope".into(),
                value: "1".into(),
            },
        ],
        vec![],
    );
    let err = run(&mut s, 3, 200, missing).unwrap_err();
    assert!(matches!(err, ApplyError::InTxn { op: 1, .. }), "{err:?}");
    assert_eq!(s.digest(), before);
    // A key written twice (once with a TTL) and then deleted comes back as it was.
    let stock = s.get("{p}/stock", 200).cloned();
    let twice = txn(
        vec![],
        vec![
            TxnOp::Put {
                key: "{p}/stock".into(),
                value: "7".into(),
                ttl_ms: Some(1000),
            },
            put("{p}/stock", "8"),
            TxnOp::Delete {
                key: "{p}/stock".into(),
            },
            incr("{p}/stock", -50, Some(0)),
        ],
        vec![],
    );
    let err = run(&mut s, 3, 200, twice).unwrap_err();
    assert!(matches!(err, ApplyError::InTxn { op: 3, .. }), "{err:?}");
    assert_eq!(s.digest(), before);
    assert_eq!(s.get("{p}/stock", 200).cloned(), stock);
    assert!(s.expiring.is_empty(), "the TTL's entry is taken back too");
}

#[test]
fn comparisons_test_existence_versions_values_and_bounds() {
    let mut s = stocked();
    run(
        &mut s,
        3,
        200,
        txn(vec![], vec![put("v", "{\"a\": [1, 2]}")], vec![]),
    )
    .unwrap();
    let holds = |s: &mut State, c: Compare| {
        let op = txn(vec![c], vec![], vec![]);
        match run(s, 99, 300, op).unwrap().0 {
            OpResult::Txn { succeeded, .. } => succeeded,
            r => panic!("{r:?}"),
        }
    };
    let with = |f: &dyn Fn(&mut Compare)| {
        let mut c = cmp("v");
        f(&mut c);
        c
    };
    assert!(holds(&mut s, with(&|c| c.exists = Some(true))));
    assert!(!holds(&mut s, with(&|c| c.exists = Some(false))));
    assert!(holds(&mut s, with(&|c| c.version = Some(3))));
    assert!(!holds(&mut s, with(&|c| c.version = Some(0))));
    assert!(holds(
        &mut s,
        with(&|c| c.value = Some("{\"a\":[1,2]}".into()))
    ));
    assert!(!holds(
        &mut s,
        with(&|c| c.value = Some("{\"a\":[2,1]}".into()))
    ));
    assert!(!holds(&mut s, with(&|c| c.min = Some(0))), "not a number");
    let mut absent = cmp("nothing");
    absent.version = Some(0);
    absent.exists = Some(false);
    assert!(holds(&mut s, absent));
    let mut bounded = cmp("{p}/stock");
    bounded.min = Some(2);
    bounded.max = Some(2);
    assert!(holds(&mut s, bounded.clone()));
    bounded.min = Some(3);
    assert!(!holds(&mut s, bounded));
    assert_eq!(s.applied_index, 3, "comparisons alone log nothing");
}

#[test]
fn deleting_a_missing_record_is_no_change() {
    let mut s = stocked();
    let op = txn(vec![], vec![TxnOp::Delete { key: "x".into() }], vec![]);
    let e = entry(3, 200, op);
    let a = s.apply_op(&e).unwrap();
    assert!(!a.changed);
    assert_eq!(
        a.result,
        OpResult::Txn {
            succeeded: true,
            failed_compare: None,
            results: vec![TxnResult::Delete { deleted: false }]
        }
    );
}

#[test]
fn replicas_reach_the_same_state() {
    let mut primary = stocked();
    let mut replica = stocked();
    for (i, op) in [buy("a"), buy("b"), buy("c")].into_iter().enumerate() {
        let e = entry(3 + i as u64, 500, op);
        let a = primary.apply_op(&e).unwrap();
        primary.finish(&e, &a.result);
        replica.apply_logged(&e).unwrap();
    }
    assert_eq!(primary.digest(), replica.digest());
}

#[test]
fn records_keep_their_creation_time_until_deleted() {
    let mut s = State::default();
    run(&mut s, 1, 100, txn(vec![], vec![put("k", "1")], vec![])).unwrap();
    run(
        &mut s,
        2,
        200,
        txn(vec![], vec![incr("k", 1, None)], vec![]),
    )
    .unwrap();
    let r = s.get("k", 0).unwrap();
    assert_eq!((r.created_ms(), r.modified_ms()), (100, 200));
    let del = txn(vec![], vec![TxnOp::Delete { key: "k".into() }], vec![]);
    run(&mut s, 3, 300, del).unwrap();
    run(&mut s, 4, 400, txn(vec![], vec![put("k", "2")], vec![])).unwrap();
    let r = s.get("k", 0).unwrap();
    assert_eq!((r.created_ms(), r.modified_ms()), (400, 400));
    // Expired (still in the map until purged): a put creates the key anew.
    let ttl = TxnOp::Put {
        key: "k".into(),
        value: "3".into(),
        ttl_ms: Some(50),
    };
    run(&mut s, 5, 500, txn(vec![], vec![ttl], vec![])).unwrap();
    assert_eq!(s.get("k", 500).unwrap().created_ms(), 400);
    run(&mut s, 6, 600, txn(vec![], vec![put("k", "4")], vec![])).unwrap();
    let r = s.get("k", 600).unwrap();
    assert_eq!((r.created_ms(), r.modified_ms()), (600, 600));
}
