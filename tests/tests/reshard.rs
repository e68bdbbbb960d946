//! Resharding end to end (docs/SHARDS.md "Resharding"): a playground of 2 shards is started again
//! with `--shards 3`, then with `--shards 2`; slots move one range at a time while a writer keeps
//! acknowledging quorum writes, and the primaries of a migration's source and target are killed
//! with -9 in the middle of it, and so is the playground. Nothing acknowledged may be lost, every key and topic must be at
//! exactly one shard, the slots even, and the removed shard's nodes stopped.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcluster_e2e::{DEADLINE, Options, Playground, get_json, http, serial, wait_for};
use serde_json::{Value, json};

const SEED: usize = 1500;
const TOPICS: usize = 6;
const WRITTEN: usize = 24;
/// Moving every range, with kills on the way, on a loaded 2-core machine.
const RESHARD_DEADLINE: Duration = Duration::from_secs(240);

fn opts(shards: u16) -> Options {
    Options {
        shards,
        replicas: 2,
        ..Options::default()
    }
}

fn ok(addr: &str, method: &str, path: &str, body: Option<&str>) -> String {
    let (code, text) = http(addr, method, path, body).unwrap_or((0, String::new()));
    assert_eq!(code, 200, "{method} {path}: {text}");
    text
}

/// Per written key: the last value acknowledged, and the last value attempted.
type Written = Arc<Mutex<Vec<(u64, u64)>>>;

/// Writes `w0`..`w23` in turn with growing values at ack=quorum until `stop`.
fn writer(addr: String, stop: Arc<AtomicBool>, written: Written) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        let mut acked = 0;
        while !stop.load(Ordering::SeqCst) && n < 200_000 {
            n += 1;
            let k = (n % WRITTEN as u64) as usize;
            written.lock().unwrap()[k].1 = n;
            let path = format!("/v1/kv/w{k}?ack=quorum");
            if let Some((200, _)) = http(&addr, "PUT", &path, Some(&n.to_string())) {
                written.lock().unwrap()[k].0 = n;
                acked += 1;
            } else {
                // Not applied or unknown: either way the next value goes on; a pause keeps a
                // failing loop from spinning.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        acked
    })
}

fn reshard_status(pg: &Playground) -> Value {
    pg.status()["reshard"].clone()
}

/// Waits for a migration copying (or fencing), then kills the primary of its `end` ("from"/"to").
fn kill_during_copy(pg: &Playground, end: &str) {
    let (shard, _) = wait_for("a migration copying", RESHARD_DEADLINE, || {
        let m = reshard_status(pg)["migration"].clone();
        (m["phase"] == "copying" || m["phase"] == "fencing")
            .then(|| (m[end].as_u64().unwrap() as u16, ()))
    });
    let (primary, term) = wait_for("its shard healthy", DEADLINE, || pg.healthy_shard(shard));
    pg.kill9(&primary);
    eprintln!("killed {primary}, the primary of shard {shard} ({end} of the migration)");
    pg.wait_shard_primary_after(shard, term);
}

fn wait_resharded(pg: &Playground, shards: u32) -> Value {
    wait_for("the resharding to finish", RESHARD_DEADLINE, || {
        let s = pg.status();
        (s["reshard"].is_null() && s["slot_map"]["shards"] == shards).then_some(s)
    })
}

/// Every check after a resharding to `shards` shards.
/// `pulled`: messages of each topic pulled before (a subscription's cursor moves with its topic).
fn verify(pg: &Playground, shards: u32, written: &Written, pulled: u64) {
    let status = wait_resharded(pg, shards);
    // Even slots.
    let map: rcluster_proto::SlotMap = serde_json::from_value(status["slot_map"].clone()).unwrap();
    let counts: Vec<u32> = (0..shards).map(|k| map.slot_count(k)).collect();
    let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(hi - lo <= 1, "slots are uneven: {counts:?}");
    let addr = pg.url("n1");
    // Every seeded key, through any node, with its value.
    for i in 0..SEED {
        let mut last = None;
        let v = wait_for("a seeded key", DEADLINE, || {
            match http(&addr, "GET", &format!("/v1/kv/seed{i}"), None) {
                Some((200, body)) => Some(serde_json::from_str::<Value>(&body).ok()?),
                Some((404, body)) => panic!("seed{i} is lost: {body}"),
                other => {
                    if last.as_ref() != Some(&other) {
                        eprintln!("seed{i}: {other:?}");
                        last = Some(other);
                    }
                    None
                }
            }
        });
        assert_eq!(v["value"], json!(i), "seed{i}");
    }
    // No acknowledged write lost: each key holds its last acknowledged value or a later attempt.
    for (k, (acked, tried)) in written.lock().unwrap().iter().enumerate() {
        if *acked == 0 {
            continue;
        }
        let body = ok(
            &addr,
            "GET",
            &format!("/v1/kv/w{k}?consistency=linearizable"),
            None,
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        let got = v["value"].as_u64().unwrap();
        assert!(
            got >= *acked && got <= *tried,
            "w{k} holds {got}; acknowledged {acked}, last tried {tried}"
        );
    }
    // The listing across shards has each key once; the shards' record counts add up (no shard
    // kept a copy of what it gave away).
    let mut listed = BTreeSet::new();
    let mut after = String::new();
    loop {
        let path = format!("/v1/kv?prefix=seed&limit=500&start_after={after}");
        let page: Value = serde_json::from_str(&ok(&addr, "GET", &path, None)).unwrap();
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for it in &items {
            assert!(
                listed.insert(it["key"].as_str().unwrap().to_string()),
                "{} listed twice",
                it["key"]
            );
        }
        match page["next"].as_str() {
            Some(n) if !items.is_empty() => after = n.to_string(),
            _ => break,
        }
    }
    assert_eq!(listed.len(), SEED, "the listing across shards");
    let held = wait_for("every shard's record count", DEADLINE, || {
        (0..shards as u16)
            .map(|k| {
                let (primary, _) = pg.healthy_shard(k)?;
                pg.node_status(&primary)?["records"].as_u64()
            })
            .sum::<Option<u64>>()
    });
    let live_w = (0..WRITTEN)
        .filter(|k| http(&addr, "GET", &format!("/v1/kv/w{k}"), None).is_some_and(|r| r.0 == 200))
        .count();
    assert_eq!(
        held,
        (SEED + live_w) as u64,
        "records held by all shards together"
    );
    // Topics moved with their messages and subscriptions: each message once, in order.
    for t in 0..TOPICS {
        let path = format!("/v1/topics/topic{t}/subscriptions/s1/pull?max=2");
        let v: Value = serde_json::from_str(&ok(&addr, "POST", &path, None)).unwrap();
        let got: Vec<Value> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["value"].clone())
            .collect();
        let want: Vec<Value> = (pulled..pulled + 2).map(|i| json!(i)).collect();
        assert_eq!(got, want, "topic{t} after resharding to {shards}");
    }
}

#[test]
fn resharding_2_to_3_to_2_under_writes_and_kills_loses_nothing() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = Playground::start_in(tmp.path(), opts(2), None);
    pg.wait_all_healthy();
    let addr = pg.url("n1");
    for i in 0..SEED {
        ok(
            &addr,
            "PUT",
            &format!("/v1/kv/seed{i}?ack=quorum"),
            Some(&i.to_string()),
        );
    }
    for t in 0..TOPICS {
        ok(&addr, "PUT", &format!("/v1/topics/topic{t}"), Some("{}"));
        let sub = format!("/v1/topics/topic{t}/subscriptions/s1?start=earliest");
        ok(&addr, "PUT", &sub, None);
        for m in 0..4 {
            ok(
                &addr,
                "POST",
                &format!("/v1/topics/topic{t}/messages"),
                Some(&m.to_string()),
            );
        }
    }
    let (dir, base) = (pg.dir.clone(), pg.base_port);
    assert!(pg.stop(), "the playground stops cleanly");

    // Scale out: 2 -> 3 shards, while writing, with the source and then the target killed.
    let mut pg = Playground::start_in(&dir, opts(3), Some(base));
    pg.wait_all_healthy();
    let written: Written = Arc::new(Mutex::new(vec![(0, 0); WRITTEN]));
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(pg.url("n1"), stop.clone(), written.clone());
    kill_during_copy(&pg, "from");
    kill_during_copy(&pg, "to");
    wait_resharded(&pg, 3);
    stop.store(true, Ordering::SeqCst);
    let acked = load.join().unwrap();
    eprintln!("scale-out: {acked} writes acknowledged during it");
    assert!(acked > 0, "the writer got nothing acknowledged");
    verify(&pg, 3, &written, 0);
    let s2: Vec<String> = pg.shard_names(2);
    assert!(pg.stop(), "the playground stops cleanly");

    // Scale in: 3 -> 2; shard 2's nodes stop once it owns nothing. The playground itself is
    // killed with -9 during the first move and started again: it goes on from its record and the
    // shards' logs.
    let mut pg = Playground::start_in(&dir, opts(2), Some(base));
    wait_for("the first move under way", RESHARD_DEADLINE, || {
        let r = reshard_status(&pg);
        (r["moved_slots"] == 0 && !r["migration"].is_null()).then_some(())
    });
    assert!(pg.kill9_playground());
    drop(pg);
    let pg = Playground::start_in(&dir, opts(2), Some(base));
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(pg.url("n1"), stop.clone(), written.clone());
    kill_during_copy(&pg, "from");
    wait_resharded(&pg, 2);
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    verify(&pg, 2, &written, 2);
    let status = pg.status();
    assert_eq!(status["shards"].as_array().map(Vec::len), Some(2));
    for name in s2 {
        wait_for("the removed shard's node to stop", DEADLINE, || {
            let port = 100 * 2 + name[3..].parse::<u16>().ok()?;
            let url = format!("127.0.0.1:{}", base + port);
            get_json(&url, "/v1/status").is_none().then_some(())
        });
    }
}
