use super::*;
use crate::log::{IdemTag, Retention, Start};
use crate::record::Rec;

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
        ttl_ms: None,
        if_version: None,
    }
}

/// Applies like the primary does: only changing entries advance the log.
fn run(s: &mut State, index: u64, ts: u64, op: Op) -> Result<OpResult, ApplyError> {
    let e = entry(index, ts, op);
    let a = s.apply_op(&e)?;
    if a.changed {
        s.finish(&e, &a.result);
    }
    Ok(a.result)
}

#[test]
fn a_put_keeps_the_creation_time_of_a_live_record_only() {
    let mut s = State::default();
    run(&mut s, 1, 100, put("k", "1")).unwrap();
    run(&mut s, 2, 200, put("k", "2")).unwrap();
    let r = s.get("k", 200).unwrap();
    assert_eq!(
        (r.created_ms(), r.modified_ms(), r.version()),
        (100, 200, 2)
    );
    let ttl = Op::Put {
        key: "k".into(),
        value: "3".into(),
        ttl_ms: Some(50),
        if_version: Some(2),
    };
    run(&mut s, 3, 300, ttl).unwrap();
    assert_eq!(s.get("k", 300).unwrap().created_ms(), 100);
    // Expired at 400: the next put creates the key anew.
    run(&mut s, 4, 400, put("k", "4")).unwrap();
    let r = s.get("k", 400).unwrap();
    assert_eq!((r.created_ms(), r.modified_ms()), (400, 400));
}

#[test]
fn put_get_cas_and_delete() {
    let mut s = State::default();
    assert!(matches!(
        run(&mut s, 1, 0, put("a", "1")),
        Ok(OpResult::Put { version: 1, .. })
    ));
    let cas = |v| Op::Put {
        key: "a".into(),
        value: "2".into(),
        ttl_ms: None,
        if_version: Some(v),
    };
    assert_eq!(
        run(&mut s, 2, 0, cas(0)),
        Err(ApplyError::VersionMismatch { current: 1 })
    );
    assert!(run(&mut s, 2, 0, cas(1)).is_ok());
    assert_eq!(s.get("a", 0).unwrap().value(), "2");
    let del = |v| Op::Delete {
        key: "a".into(),
        if_version: v,
    };
    assert_eq!(
        run(&mut s, 3, 0, del(Some(1))),
        Err(ApplyError::VersionMismatch { current: 2 })
    );
    assert!(run(&mut s, 3, 0, del(Some(2))).is_ok());
    assert_eq!(run(&mut s, 4, 0, del(None)), Err(ApplyError::NotFound));
    assert_eq!(s.applied_index, 3);
}

#[test]
fn incr_respects_bounds_and_types() {
    let mut s = State::default();
    let incr = |d, min, max| Op::Incr {
        key: "stock".into(),
        delta: d,
        min,
        max,
    };
    assert!(matches!(
        run(&mut s, 1, 0, incr(2, None, None)),
        Ok(OpResult::Incr { value: 2, .. })
    ));
    assert!(run(&mut s, 2, 0, incr(-1, Some(0), None)).is_ok());
    assert!(run(&mut s, 3, 0, incr(-1, Some(0), None)).is_ok());
    assert_eq!(
        run(&mut s, 4, 0, incr(-1, Some(0), None)),
        Err(ApplyError::OutOfBounds)
    );
    assert_eq!(
        run(&mut s, 4, 0, incr(5, None, Some(4))),
        Err(ApplyError::OutOfBounds)
    );
    assert_eq!(s.get("stock", 0).unwrap().value(), "0");
    run(&mut s, 4, 0, put("x", "9223372036854775807")).unwrap();
    let over = Op::Incr {
        key: "x".into(),
        delta: 1,
        min: None,
        max: None,
    };
    assert_eq!(run(&mut s, 5, 0, over), Err(ApplyError::OutOfBounds));
    run(&mut s, 5, 0, put("s", "\"text\"")).unwrap();
    let text = Op::Incr {
        key: "s".into(),
        delta: 1,
        min: None,
        max: None,
    };
    assert_eq!(run(&mut s, 6, 0, text), Err(ApplyError::NotANumber));
}

#[test]
fn ttl_uses_entry_time_and_purges_through_the_log() {
    let mut s = State::default();
    let op = Op::Put {
        key: "t".into(),
        value: "1".into(),
        ttl_ms: Some(1000),
        if_version: None,
    };
    run(&mut s, 1, 5000, op).unwrap();
    assert!(s.get("t", 5999).is_some());
    assert!(
        s.get("t", 6000).is_none(),
        "expired records are never returned"
    );
    assert!(s.expired_keys(5999, 10).is_empty());
    let due = s.expired_keys(6000, 10);
    assert_eq!(due, vec![("t".to_string(), 1)]);
    // A write after expiry (by the entry's clock) sees the key as absent.
    let create = Op::Put {
        key: "t".into(),
        value: "2".into(),
        ttl_ms: None,
        if_version: Some(0),
    };
    run(&mut s, 2, 6000, create).unwrap();
    // The stale purge entry does not remove the new record.
    let purge = Op::Expire { keys: due };
    let r = s.apply_op(&entry(3, 7000, purge)).unwrap();
    assert!(!r.changed);
    assert_eq!(s.get("t", 9_999_999).unwrap().value(), "2");
    assert!(s.expiring.is_empty());
}

#[test]
fn topics_retention_subscriptions_and_pull() {
    let mut s = State::default();
    let retention = Retention {
        max_messages: Some(3),
        max_age_ms: Some(10_000),
    };
    run(
        &mut s,
        1,
        0,
        Op::CreateTopic {
            topic: "n".into(),
            retention,
        },
    )
    .unwrap();
    let publish = |v: &str| Op::Publish {
        topic: "n".into(),
        values: vec![v.into()],
    };
    let sub = |name: &str, start| Op::Subscribe {
        topic: "n".into(),
        name: name.into(),
        start,
    };
    run(&mut s, 2, 0, sub("early", Start::Earliest)).unwrap();
    for i in 0..5u64 {
        let r = run(&mut s, 3 + i, 100 * i, publish(&i.to_string())).unwrap();
        assert_eq!(
            r,
            OpResult::Publish {
                first_offset: i,
                count: 1
            }
        );
    }
    let t = &s.topics["n"];
    assert_eq!((t.first_offset, t.next_offset()), (2, 5));
    run(&mut s, 8, 400, sub("late", Start::Latest)).unwrap();
    let pull = |name: &str| Op::Pull {
        topic: "n".into(),
        name: name.into(),
        max: 2,
    };
    let OpResult::Pull { messages, cursor } = run(&mut s, 9, 400, pull("early")).unwrap() else {
        panic!()
    };
    assert_eq!(messages.iter().map(|m| m.0).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(cursor, 4);
    let empty = s.apply_op(&entry(10, 400, pull("late"))).unwrap();
    assert!(
        !empty.changed,
        "an empty pull changes nothing and is not logged"
    );
    // Age retention drops everything published more than 10 s before the trim entry.
    let trimmed = run(&mut s, 10, 10_400, Op::Trim { topic: "n".into() }).unwrap();
    assert_eq!(trimmed, OpResult::Trimmed { dropped: 3 });
    assert_eq!(s.topics["n"].first_offset, 5);
    assert_eq!(
        run(
            &mut s,
            11,
            0,
            Op::Publish {
                topic: "x".into(),
                values: vec![]
            }
        ),
        Err(ApplyError::TopicNotFound)
    );
}

#[test]
fn idempotency_keys_are_remembered_and_expire_in_log_time() {
    let mut s = State::default();
    let mut e = entry(1, 0, put("a", "1"));
    e.idem = Some(IdemTag {
        key: "req-1".into(),
        fingerprint: 42,
    });
    let a = s.apply_op(&e).unwrap();
    s.finish(&e, &a.result);
    assert_eq!(s.idempotent_result("req-1").unwrap().fingerprint(), 42);
    assert_eq!(s.idem_forget_below(IDEM_TTL_MS, IDEM_TTL_MS, 1), None);
    let below = s
        .idem_forget_below(IDEM_TTL_MS + 1, IDEM_TTL_MS, 1)
        .unwrap();
    run(
        &mut s,
        2,
        IDEM_TTL_MS + 1,
        Op::ForgetIdem { below_index: below },
    )
    .unwrap();
    assert!(s.idempotent_result("req-1").is_none());
}

#[test]
fn list_pages_by_prefix_and_skips_expired() {
    let mut s = State::default();
    for (i, k) in ["a/1", "a/2", "a/3", "b/1"].iter().enumerate() {
        run(&mut s, i as u64 + 1, 0, put(k, "1")).unwrap();
    }
    let ttl = Op::Put {
        key: "a/25".into(),
        value: "1".into(),
        ttl_ms: Some(1),
        if_version: None,
    };
    run(&mut s, 5, 0, ttl).unwrap();
    let (page, more) = s.list("a/", None, 2, 10);
    assert_eq!(
        page.iter().map(Rec::key).collect::<Vec<_>>(),
        ["a/1", "a/2"]
    );
    assert!(more);
    let (page, more) = s.list("a/", Some("a/2"), 2, 10);
    assert_eq!(page.iter().map(Rec::key).collect::<Vec<_>>(), ["a/3"]);
    assert!(!more);
}

#[test]
fn same_log_same_digest() {
    let ops = vec![
        put("a", "1"),
        put("b", "[1,2]"),
        Op::Delete {
            key: "a".into(),
            if_version: None,
        },
    ];
    let mut x = State::default();
    let mut y = State::default();
    for (i, op) in ops.into_iter().enumerate() {
        let e = entry(i as u64 + 1, 0, op);
        x.apply_logged(&e).unwrap();
        y.apply_logged(&e).unwrap();
    }
    assert_eq!(x.digest(), y.digest());
    y.apply_logged(&entry(4, 0, put("c", "1"))).unwrap();
    assert_ne!(x.digest(), y.digest());
}

/// Stores idempotency key `req-{i}` with a put at index `i + 1` and time `10 * i`.
fn remember_puts(s: &mut State, range: std::ops::Range<u64>) {
    for i in range {
        let mut e = entry(i + 1, 10 * i, put(&format!("k{i}"), "1"));
        e.idem = Some(IdemTag {
            key: format!("req-{i}"),
            fingerprint: i,
        });
        let a = s.apply_op(&e).unwrap();
        s.finish(&e, &a.result);
    }
}

fn remembered(s: &State) -> Vec<String> {
    s.idem.iter().map(|i| i.key().to_string()).collect()
}

#[test]
fn idempotency_keys_are_forgotten_only_by_a_logged_decision() {
    let mut s = State::default();
    remember_puts(&mut s, 0..5);
    assert_eq!(s.idempotent_result("req-0").unwrap().fingerprint(), 0);
    // Log time passing forgets nothing by itself: nodes with other settings stay identical.
    run(&mut s, 6, 3 * IDEM_TTL_MS, put("x", "1")).unwrap();
    assert_eq!(remembered(&s).len(), 5);

    // The bound on keys: keep the newest 3.
    let below = s.idem_forget_below(40, IDEM_TTL_MS, 3);
    assert_eq!(below, Some(3));
    let mut replica = s.clone();
    let forget = Op::ForgetIdem { below_index: 3 };
    assert_eq!(
        run(&mut s, 7, 50, forget.clone()),
        Ok(OpResult::Forgotten { count: 2 })
    );
    replica.apply_logged(&entry(7, 50, forget)).unwrap();
    assert_eq!(remembered(&s), ["req-2", "req-3", "req-4"]);
    assert_eq!(s.digest(), replica.digest());
    assert_eq!(s.idem_forget_below(50, IDEM_TTL_MS, 3), None);

    // The age: at time 50 with a 25 ms retention, keys stored before time 25 go (req-2 at 20).
    assert_eq!(s.idem_forget_below(50, 25, 100), Some(4));
    // A key stored again is kept by its new entry, not forgotten with its old one.
    let mut e = entry(8, 60, put("k2", "2"));
    e.idem = Some(IdemTag {
        key: "req-2".into(),
        fingerprint: 9,
    });
    let a = s.apply_op(&e).unwrap();
    s.finish(&e, &a.result);
    assert_eq!(
        run(&mut s, 9, 70, Op::ForgetIdem { below_index: 5 }),
        Ok(OpResult::Forgotten { count: 1 })
    );
    assert_eq!(remembered(&s), ["req-2", "req-4"]);
    assert_eq!(
        run(&mut s, 10, 70, Op::ForgetIdem { below_index: 5 }),
        Ok(OpResult::Forgotten { count: 0 }),
        "nothing left to forget: the entry changes nothing and is not logged"
    );

    // The order survives a snapshot load (the queue is rebuilt from the keys).
    let mut loaded = State {
        idem: s.idem.clone(),
        ..State::default()
    };
    loaded.rebuild_indexes();
    assert_eq!(loaded.idem_forget_below(70, IDEM_TTL_MS, 1), Some(6));
    assert_eq!(s.idem_forget_below(70, IDEM_TTL_MS, 1), Some(6));
}
