use super::*;
use crate::log::{IdemTag, Retention};
use crate::state::entry;

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
        ttl_ms: None,
        if_version: None,
    }
}

/// A shard's state and its log position, applying like its primary: only changing entries advance
/// the log.
struct Shard {
    state: State,
    log: Vec<Entry>,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            state: State::default(),
            log: Vec::new(),
        }
    }

    fn next(&self) -> u64 {
        self.log.len() as u64 + 1
    }

    fn run(&mut self, op: Op) -> Result<OpResult, ApplyError> {
        self.run_idem(op, None)
    }

    fn run_idem(&mut self, op: Op, idem: Option<&str>) -> Result<OpResult, ApplyError> {
        let mut e = entry(self.next(), 1_000, op);
        e.idem = idem.map(|k| IdemTag {
            key: k.into(),
            fingerprint: 7,
        });
        let a = self.state.apply_op(&e)?;
        if a.changed {
            self.state.finish(&e, &a.result);
            self.log.push(e);
        }
        Ok(a.result)
    }
}

/// The slot range holding `key` (a one-slot range).
fn range_of(key: &str) -> (u32, u32) {
    let s = slot_of(key, DEFAULT_SLOTS);
    (s, s)
}

/// Copies `start..=end` from `src` into `dst` the way the target's importer does: a paged
/// consistent copy, then the source's entries after it.
fn import(src: &Shard, dst: &mut Shard, (start, end): (u32, u32), page: usize) {
    let at = src.state.applied_index;
    let mut after: Option<String> = None;
    loop {
        let (records, topics, idem, next) =
            src.state.export_range(start, end, after.as_deref(), page);
        let last = next.is_none();
        dst.run(Op::ImportCopy {
            at,
            records,
            topics,
            idem,
            last,
        })
        .unwrap();
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
}

fn tail(src: &Shard, dst: &mut Shard, (start, end): (u32, u32), from: u64) {
    let entries: Vec<Entry> = src
        .log
        .iter()
        .filter(|e| e.index >= from)
        .filter_map(|e| entry_in_range(e, start, end))
        .collect();
    let upto = src.state.applied_index;
    // As the source's engine serves them (`range_entries`): with its version offset.
    let offset = src.state.version_offset;
    dst.run(Op::ImportTail {
        entries,
        upto,
        offset,
    })
    .unwrap();
}

#[test]
fn a_fenced_range_takes_no_writes_and_a_handed_off_one_is_not_read() {
    let mut s = Shard::new();
    s.run(put("a", "1")).unwrap();
    s.run(put("other", "1")).unwrap();
    let (start, end) = range_of("a");
    s.run(Op::SlotsFence { start, end, to: 1 }).unwrap();
    assert_eq!(
        s.run(put("a", "2")),
        Err(ApplyError::SlotMigrating { slot: start })
    );
    assert!(s.run(put("other", "2")).is_ok() || range_of("other") == (start, end));
    assert!(s.state.slots.readable(start), "fenced: still read here");
    // Unfenced (an aborted migration): writes again.
    s.run(Op::SlotsUnfence { start, end }).unwrap();
    assert!(s.run(put("a", "3")).is_ok());
    s.run(Op::SlotsFence { start, end, to: 1 }).unwrap();
    s.run(Op::SlotsHandoff {
        start,
        end,
        to: 1,
        epoch: 2,
    })
    .unwrap();
    assert!(!s.state.slots.readable(start));
    assert_eq!(s.state.slots.owner_after(start, 1, 0), Some(1));
    assert_eq!(
        s.state.slots.owner_after(start, 2, 0),
        None,
        "the map knows"
    );
    // After the handoff an unfence changes nothing: the migration only goes on.
    assert_eq!(s.run(Op::SlotsUnfence { start, end }), Ok(OpResult::Noop));
    assert!(!s.state.slots.writable("a"));
    s.run(Op::SlotsDrop { start, end }).unwrap();
    assert!(s.state.records.get("a").is_none());
    assert!(s.state.slots.is_idle());
}

#[test]
fn an_import_reproduces_the_source_range_with_its_versions_and_keys() {
    let mut src = Shard::new();
    // Keys of one slot (a hash tag), plus a topic of that slot with a subscriber.
    for i in 0..20 {
        src.run_idem(
            put(&format!("{{u}}/k{i}"), &i.to_string()),
            Some(&format!("w{i}")),
        )
        .unwrap();
    }
    src.run(Op::CreateTopic {
        topic: "{u}t".into(),
        retention: Retention::default(),
    })
    .unwrap();
    src.run(Op::Subscribe {
        topic: "{u}t".into(),
        name: "s".into(),
        start: crate::log::Start::Earliest,
    })
    .unwrap();
    src.run(Op::Publish {
        topic: "{u}t".into(),
        values: vec!["1".into(), "2".into()],
    })
    .unwrap();
    src.run(put("elsewhere", "x")).unwrap();
    let range = range_of("{u}");
    let mut dst = Shard::new();
    // The target's own log is shorter than the source's: versions must still be the source's.
    dst.run(put("mine", "1")).unwrap();
    dst.run(Op::ImportBegin {
        start: range.0,
        end: range.1,
        from: 0,
    })
    .unwrap();
    assert!(matches!(
        dst.run(put("{u}/k1", "no")),
        Err(ApplyError::SlotMigrating { .. })
    ));
    import(&src, &mut dst, range, 7);
    let copied_at = src.state.applied_index;
    // The source keeps writing (before its fence): an incr, a delete, a pull.
    src.run_idem(
        Op::Incr {
            key: "{u}/k3".into(),
            delta: 5,
            min: None,
            max: None,
        },
        Some("late"),
    )
    .unwrap();
    src.run(Op::Delete {
        key: "{u}/k4".into(),
        if_version: None,
    })
    .unwrap();
    src.run(Op::Pull {
        topic: "{u}t".into(),
        name: "s".into(),
        max: 1,
    })
    .unwrap();
    tail(&src, &mut dst, range, copied_at + 1);
    // The same records, versions, topic, cursor and idempotency results as the source.
    for r in src
        .state
        .records
        .iter()
        .filter(|r| r.key().starts_with("{u}"))
    {
        assert_eq!(dst.state.records.get(r.key()), Some(r), "{}", r.key());
    }
    assert!(dst.state.records.get("{u}/k4").is_none());
    assert!(dst.state.records.get("elsewhere").is_none());
    // A topic moves with its messages and cursors; the messages' log positions become the
    // target's (they order a multi-topic stream of the target's log).
    let (t, u) = (&dst.state.topics["{u}t"], &src.state.topics["{u}t"]);
    let msgs = |t: &Topic| -> Vec<(String, u64)> {
        t.messages
            .iter()
            .map(|m| (m.value.to_string(), m.published_at_ms))
            .collect()
    };
    assert_eq!(msgs(t), msgs(u));
    assert_eq!(
        (&t.subscriptions, t.first_offset, &t.retention),
        (&u.subscriptions, u.first_offset, &u.retention)
    );
    let src_late = src
        .state
        .idem
        .get("late")
        .unwrap()
        .result()
        .expect("decodes");
    assert_eq!(dst.state.idem.get("late").unwrap().result(), Some(src_late));
    let src_w7 = src.state.idem.get("w7").unwrap().result().expect("decodes");
    assert_eq!(dst.state.idem.get("w7").unwrap().result(), Some(src_w7));
    // Owned from the end on: a new write's version exceeds every imported one.
    dst.run(Op::ImportEnd {
        start: range.0,
        end: range.1,
        epoch: 3,
    })
    .unwrap();
    let top = src.state.records.iter().map(Rec::version).max().unwrap();
    match dst.run(put("{u}/k1", "new")).unwrap() {
        OpResult::Put { version, .. } => assert!(version > top, "{version} <= {top}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(dst.state.slots.owner_after(range.0, 2, 1), Some(1));
}

#[test]
fn a_restarted_copy_replaces_the_partial_one_and_an_abort_leaves_nothing() {
    let mut src = Shard::new();
    for i in 0..10 {
        src.run(put(&format!("{{v}}/k{i}"), "1")).unwrap();
    }
    let range = range_of("{v}");
    let mut dst = Shard::new();
    dst.run(Op::ImportBegin {
        start: range.0,
        end: range.1,
        from: 0,
    })
    .unwrap();
    // One page of a copy taken at the current index...
    let (records, topics, idem, _) = src.state.export_range(range.0, range.1, None, 4);
    dst.run(Op::ImportCopy {
        at: src.state.applied_index,
        records,
        topics,
        idem,
        last: false,
    })
    .unwrap();
    // ...then the source loses keys and a new copy starts at a later index.
    src.run(Op::Delete {
        key: "{v}/k0".into(),
        if_version: None,
    })
    .unwrap();
    import(&src, &mut dst, range, 3);
    assert!(
        dst.state.records.get("{v}/k0").is_none(),
        "the stale page is gone"
    );
    assert_eq!(
        dst.state
            .records
            .iter()
            .filter(|r| r.key().starts_with("{v}"))
            .count(),
        9
    );
    dst.run(Op::ImportAbort {
        start: range.0,
        end: range.1,
    })
    .unwrap();
    assert_eq!(dst.state.records.len(), 0);
    assert!(dst.state.slots.is_idle());
}

#[test]
fn one_import_at_a_time_and_expiry_waits_for_the_new_owner() {
    let mut s = Shard::new();
    s.run(Op::ImportBegin {
        start: 0,
        end: 9,
        from: 1,
    })
    .unwrap();
    assert_eq!(
        s.run(Op::ImportBegin {
            start: 10,
            end: 19,
            from: 1,
        }),
        Err(ApplyError::ImportBusy { start: 0, end: 9 })
    );
    let mut src = Shard::new();
    src.run(Op::Put {
        key: "{w}".into(),
        value: "1".into(),
        ttl_ms: Some(1),
        if_version: None,
    })
    .unwrap();
    assert_eq!(src.state.expired_keys(u64::MAX, 10).len(), 1);
    let (start, end) = range_of("{w}");
    src.run(Op::SlotsFence { start, end, to: 1 }).unwrap();
    assert!(
        src.state.expired_keys(u64::MAX, 10).is_empty(),
        "a fenced record is purged by its next owner"
    );
}

#[test]
fn entries_outside_the_range_are_not_shipped() {
    let (start, end) = range_of("{x}");
    let e = entry(1, 0, put("{x}a", "1"));
    assert!(entry_in_range(&e, start, end).is_some());
    let far = (0..)
        .map(|i| format!("y{i}"))
        .find(|k| range_of(k) != (start, end))
        .unwrap();
    assert!(entry_in_range(&entry(2, 0, put(&far, "1")), start, end).is_none());
    let mixed = entry(
        3,
        0,
        Op::Expire {
            keys: vec![("{x}a".into(), 1), (far, 1)],
        },
    );
    match entry_in_range(&mixed, start, end).map(|e| e.op) {
        Some(Op::Expire { keys }) => assert_eq!(keys, vec![("{x}a".to_string(), 1)]),
        other => panic!("{other:?}"),
    }
    assert!(entry_in_range(&entry(4, 0, Op::Noop), start, end).is_none());
}

#[test]
fn a_listing_shows_a_moving_key_at_exactly_one_shard_or_none() {
    let listed = |s: &Shard, key: &str| {
        s.state
            .list("", None, 100, 1_000)
            .0
            .iter()
            .any(|r| r.key() == key)
    };
    let mut src = Shard::new();
    src.run(put("a", "1")).unwrap();
    let range = range_of("a");
    let (start, end) = range;
    let mut dst = Shard::new();
    dst.run(Op::ImportBegin {
        start,
        end,
        from: 0,
    })
    .unwrap();
    import(&src, &mut dst, range, 10);
    assert!(
        listed(&src, "a") && !listed(&dst, "a"),
        "importing: only the source"
    );
    src.run(Op::SlotsFence { start, end, to: 1 }).unwrap();
    src.run(Op::SlotsHandoff {
        start,
        end,
        to: 1,
        epoch: 2,
    })
    .unwrap();
    assert!(
        !listed(&src, "a") && !listed(&dst, "a"),
        "between handoff and end"
    );
    dst.run(Op::ImportEnd {
        start,
        end,
        epoch: 2,
    })
    .unwrap();
    assert!(
        !listed(&src, "a") && listed(&dst, "a"),
        "moved: only the target"
    );
    assert!(
        src.state.records.contains_key("a"),
        "the source's copy waits for its drop"
    );
}

#[test]
fn a_copy_of_many_idempotency_keys_comes_in_bounded_pages() {
    // Every write of the client library carries an idempotency key: a range holds about as many
    // keys as records. The first page once carried all of them (hundreds of MB with a large data
    // set: the target refused the body and the copy never finished).
    let mut src = Shard::new();
    for i in 0..3000 {
        src.run_idem(put(&format!("{{t}}k{i}"), "1"), Some(&format!("w{i}")))
            .unwrap();
    }
    let range = range_of("{t}");
    let (start, end) = range;
    let mut after: Option<String> = None;
    let (mut pages, mut idem) = (0, 0);
    loop {
        let (records, topics, keys, next) =
            src.state.export_range(start, end, after.as_deref(), 500);
        assert!(
            records.len() <= 500 && keys.len() <= 500 && topics.len() <= 500,
            "page {pages}: {} records, {} keys",
            records.len(),
            keys.len()
        );
        idem += keys.len();
        pages += 1;
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(idem, 3000, "every key of the range, once");
    assert!(pages >= 12, "{pages} pages");
    let mut dst = Shard::new();
    dst.run(Op::ImportBegin {
        start,
        end,
        from: 0,
    })
    .unwrap();
    import(&src, &mut dst, range, 500);
    assert!(dst.state.slots.incoming.as_ref().is_some_and(|i| i.copied));
    assert_eq!(dst.state.idem.len(), 3000);
    assert_eq!(dst.state.records.len(), 3000);
}

/// A range moved again from a shard that imported it: the second target must hold the versions
/// the first target gave its writes (the defect the 2 -> 4 -> 3 marketplace test found: the
/// first target stamps above its log indexes after its import, and the tail was applied at the
/// entries' indexes, so the key's version went back: a read showed an older version than one
/// acknowledged, and a compare-and-set at that version could succeed twice). The tail now
/// carries the source's version offset.
#[test]
fn a_key_moved_twice_keeps_the_versions_its_second_owner_gave_it() {
    // The first owner's log is long: the key's version is far above the next owner's indexes.
    let mut a = Shard::new();
    for i in 0..50 {
        a.run(put(&format!("pad{i}"), "x")).unwrap();
    }
    a.run(put("{m}/stock", "3")).unwrap();
    let range = range_of("{m}");
    let mut b = Shard::new();
    b.run(Op::ImportBegin {
        start: range.0,
        end: range.1,
        from: 0,
    })
    .unwrap();
    import(&a, &mut b, range, 10);
    b.run(Op::ImportEnd {
        start: range.0,
        end: range.1,
        epoch: 2,
    })
    .unwrap();
    // b serves the key; its next move starts with a copy, then b's tail carries a write.
    let mut c = Shard::new();
    c.run(Op::ImportBegin {
        start: range.0,
        end: range.1,
        from: 1,
    })
    .unwrap();
    import(&b, &mut c, range, 10);
    let copied_at = b.state.applied_index;
    let written = match b.run(put("{m}/stock", "2")).unwrap() {
        OpResult::Put { version, .. } => version,
        other => panic!("{other:?}"),
    };
    assert!(
        written > b.state.applied_index,
        "b stamps above its log index"
    );
    tail(&b, &mut c, range, copied_at + 1);
    assert_eq!(
        c.state.records.get("{m}/stock").map(Rec::version),
        Some(written),
        "the acknowledged version of the write"
    );
}
