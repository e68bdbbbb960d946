//! Resharding a live marketplace (issue 15): a playground of 2 shards is resharded online to 4
//! and then to 3 with `rcluster reshard --shards N`, while buyers take stock with
//! compare-and-set at ack=quorum; in the middle of a migration the source shard's primary, and
//! then the target shard's, are killed with -9. Afterwards: every acknowledged purchase is
//! accounted for, no stock is below zero, each product's history (linearizable reads and
//! compare-and-sets, recorded with their call and return times) is linearizable, every shard's
//! members hold the same state, and every slot has exactly one owner.
//!
//! A purchase is a linearizable read of the stock and a compare-and-set of the next value at the
//! version read; an outcome that is unknown is retried with the same idempotency key until it is
//! known (`slot_migrating` while a range is fenced is such a retry).

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcluster_client::{AckLevel, Client, Consistency, PutOptions, WriteOptions};
use rcluster_e2e::linearizability::{self, Limits, Observed, OpKind, Operation, Outcome, Verdict};
use rcluster_e2e::ops::{micros, refused, until_known};
use rcluster_e2e::{
    DEADLINE, Options, Playground, Rng, bin, get_json, http, runtime, serial, wait_for,
};
use serde_json::{Value, json};

const PRODUCTS: usize = 8;
/// Half the products sell out during the run (their floor is tested), half never do.
const SMALL_STOCK: u64 = 40;
const LARGE_STOCK: u64 = 1_000_000;
const BUYERS: u64 = 6;
const RESOLVE: Duration = Duration::from_secs(60);
/// Moving every range, with kills on the way, on a loaded 2-core machine.
const RESHARD_DEADLINE: Duration = Duration::from_secs(300);
const REPLICAS: u16 = 2;

type History = Arc<Mutex<Vec<Operation>>>;

struct Shop {
    acked: Vec<AtomicU64>,
    unresolved: AtomicU64,
    stop: AtomicBool,
    history: History,
}

fn product(p: usize) -> String {
    format!("market/product-{p}")
}

fn stock(p: usize) -> u64 {
    if p.is_multiple_of(2) {
        SMALL_STOCK
    } else {
        LARGE_STOCK
    }
}

/// A stock value: the count, and who wrote it (every written value is distinct).
fn stock_value(left: u64, by: &str) -> String {
    format!("{left}/{by}")
}

fn left_of(value: &str) -> u64 {
    value
        .split('/')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a stock value")
}

fn quorum(key: String, if_version: u64) -> PutOptions {
    PutOptions {
        if_version: Some(if_version),
        write: WriteOptions {
            ack: Some(AckLevel::Quorum),
            idempotency_key: Some(key),
        },
        ..PutOptions::default()
    }
}

async fn buyer(id: u64, client: Client, shop: Arc<Shop>, origin: Instant) {
    let mut rng = Rng::new(id + 100);
    let mut n = 0u64;
    let record = |key: &str, kind, call, ret, outcome| {
        shop.history.lock().unwrap().push(Operation {
            client: id,
            key: key.to_string(),
            kind,
            call,
            ret,
            outcome,
        });
    };
    while !shop.stop.load(Ordering::SeqCst) && n < 100_000 {
        n += 1;
        let p = rng.below(PRODUCTS as u64) as usize;
        let key = product(p);
        let call = micros(origin);
        let found = match client.get(&key, Some(Consistency::Linearizable)).await {
            Ok(Some(rec)) => {
                let value = rec.value.as_str().expect("a string").to_string();
                let observed = Observed::Found {
                    value: value.clone(),
                    version: rec.version,
                };
                record(
                    &key,
                    OpKind::Get,
                    call,
                    Some(micros(origin)),
                    Outcome::Ok(observed),
                );
                Some((left_of(&value), rec.version))
            }
            Ok(None) => panic!("{key} is gone"),
            // A read that got no answer tells nothing: not recorded.
            Err(_) => None,
        };
        let Some((left, version)) = found else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if left > 0 {
            let value = stock_value(left - 1, &format!("b{id}-{n}"));
            let opts = quorum(format!("buy-{id}-{n}"), version);
            let v = json!(value);
            let call = micros(origin);
            let r = until_known(RESOLVE, || client.put(&key, &v, &opts)).await;
            let (outcome, returned) = match &r {
                Ok(put) => {
                    shop.acked[p].fetch_add(1, Ordering::SeqCst);
                    (
                        Outcome::Ok(Observed::Written {
                            version: put.version,
                        }),
                        true,
                    )
                }
                Err(e) if e.code() == Some("version_mismatch") => {
                    (Outcome::Ok(Observed::Mismatch), true)
                }
                Err(e) if refused(e) => (Outcome::Failed, true),
                Err(e) => {
                    eprintln!("buyer {id}: purchase {n} of {key} unresolved: {e}");
                    shop.unresolved.fetch_add(1, Ordering::SeqCst);
                    (Outcome::Unknown, false)
                }
            };
            let kind = OpKind::Cas {
                expected_version: version,
                value,
            };
            record(&key, kind, call, returned.then(|| micros(origin)), outcome);
        }
        tokio::time::sleep(Duration::from_millis(5 + rng.below(30))).await;
    }
}

/// `rcluster reshard --shards N` against node n1: the CLI finds the playground by itself.
fn reshard_cli(pg: &Playground, shards: u16) -> String {
    let out = Command::new(bin("rcluster"))
        .args(["--endpoint", &pg.url("n1"), "reshard", "--shards"])
        .arg(shards.to_string())
        .output()
        .expect("run rcluster");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "rcluster reshard --shards {shards}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn node_url(pg: &Playground, shard: u16, i: u16) -> String {
    format!("127.0.0.1:{}", pg.base_port + 100 * shard + i)
}

/// Waits for a migration copying (or fencing), then kills the primary of its `end` ("from"/"to").
fn kill_during_copy(pg: &Playground, end: &str) {
    let shard = wait_for("a migration copying", RESHARD_DEADLINE, || {
        let m = pg.status()["reshard"]["migration"].clone();
        (m["phase"] == "copying" || m["phase"] == "fencing")
            .then(|| m[end].as_u64().unwrap() as u16)
    });
    let (primary, term) = wait_for("its shard healthy", DEADLINE, || pg.healthy_shard(shard));
    pg.kill9(&primary);
    eprintln!("killed {primary}, the primary of shard {shard} ({end} of the migration)");
    pg.wait_shard_primary_after(shard, term);
}

/// `rcluster status` shows the migration under way: the playground's progress, a range moving
/// and the slot counts per shard.
fn status_shows_a_migration(pg: &Playground, shards: u16) {
    let want = format!("resharding to {shards} shards:");
    wait_for(
        "rcluster status showing a migration",
        RESHARD_DEADLINE,
        || {
            let out = Command::new(bin("rcluster"))
                .args(["--endpoint", &pg.url("n1"), "status"])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let moving = text
                .lines()
                .any(|l| l.starts_with("  slots ") && l.contains(" → ") && l.contains(": "));
            (text.contains(&want) && moving && text.contains("slots per shard:")).then_some(())
        },
    );
}

fn wait_resharded(pg: &Playground, shards: u32) -> Value {
    wait_for("the resharding to finish", RESHARD_DEADLINE, || {
        let s = pg.status();
        (s["reshard"].is_null() && s["slot_map"]["shards"] == shards).then_some(s)
    })
}

/// Every slot has exactly one owner, no shard reports a migration, and every shard's members
/// hold the same state.
fn verify_shards(pg: &Playground, shards: u16) {
    let status = wait_resharded(pg, u32::from(shards));
    let map: rcluster_proto::SlotMap = serde_json::from_value(status["slot_map"].clone()).unwrap();
    let owned: u32 = (0..u32::from(shards)).map(|k| map.slot_count(k)).sum();
    assert_eq!(owned, map.slots, "slots owned: {map:?}");
    for slot in 0..map.slots {
        assert!(
            map.owner(slot).is_some_and(|k| k < u32::from(shards)),
            "slot {slot}"
        );
    }
    for k in 0..shards {
        wait_for("the shard converged and idle", DEADLINE, || {
            let all: Vec<Value> = (1..=REPLICAS)
                .map(|i| get_json(&node_url(pg, k, i), "/v1/status?digest=true"))
                .collect::<Option<_>>()?;
            let first = &all[0];
            let same = all.iter().all(|s| {
                s["digest"] == first["digest"] && s["applied_index"] == first["applied_index"]
            });
            let idle = all.iter().all(|s| {
                let st = &s["slot_state"];
                st["incoming"].is_null()
                    && st["outgoing"]
                        .as_array()
                        .is_none_or(|o| o.iter().all(|o| o["dropped"] == true))
            });
            (same && idle && first["digest"].is_string()).then_some(())
        });
    }
}

/// `rcluster reshard` on a running playground, without load: the CLI finds the playground, bad
/// and conflicting requests are refused, `rcluster status` shows the ranges moving, and the slots
/// end where they belong with every shard idle and converged.
#[test]
fn rcluster_reshard_reshards_a_running_playground_and_status_shows_the_moves() {
    let _turn = serial();
    let pg = Playground::start(Options {
        shards: 2,
        replicas: REPLICAS,
        ..Options::default()
    });
    pg.wait_all_healthy();
    let addr = pg.url("n1");
    for i in 0..300 {
        let path = format!("/v1/kv/k{i}?ack=quorum");
        assert_eq!(
            http(&addr, "PUT", &path, Some(&i.to_string())).map(|r| r.0),
            Some(200)
        );
    }
    let text = reshard_cli(&pg, 3);
    assert!(text.contains("resharding 2 → 3 shard(s) started"), "{text}");
    let control = format!("127.0.0.1:{}", pg.base_port);
    for bad in ["/reshard?shards=0", "/reshard?shards=17", "/reshard"] {
        let (code, body) = http(&control, "POST", bad, None).unwrap();
        assert_eq!(
            (code, body.contains("bad_request")),
            (400, true),
            "{bad}: {body}"
        );
    }
    let (code, body) = http(&control, "POST", "/reshard?shards=4", None).unwrap();
    assert_eq!(
        (code, body.contains("reshard_running")),
        (409, true),
        "{body}"
    );
    assert!(reshard_cli(&pg, 3).contains("already under way"));
    status_shows_a_migration(&pg, 3);
    verify_shards(&pg, 3);
    assert!(reshard_cli(&pg, 3).contains("already 3 shard(s)"));
    for i in 0..300 {
        let (code, body) = http(&addr, "GET", &format!("/v1/kv/k{i}"), None).unwrap();
        assert_eq!(code, 200, "k{i}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["value"], json!(i), "k{i}");
    }
}

/// Found a defect, now fixed: a key moved a second time, from a shard that imported it before
/// (2 -> 4, then 4 -> 3), came back with an older version (the source stamps above its log
/// indexes after an import; its tail was applied at the entries' indexes). A linearizable read
/// then showed a version below one already acknowledged, and a compare-and-set at a reused
/// version succeeded twice (stock sold beyond what there was).
#[test]
fn resharding_2_to_4_to_3_under_a_marketplace_with_kills_loses_no_purchase() {
    let _turn = serial();
    let pg = Playground::start(Options {
        shards: 2,
        replicas: REPLICAS,
        ..Options::default()
    });
    pg.wait_all_healthy();
    let rt = runtime();
    let client = pg.client();
    let shop = Arc::new(Shop {
        acked: (0..PRODUCTS).map(|_| AtomicU64::new(0)).collect(),
        unresolved: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        history: History::default(),
    });
    let origin = Instant::now();
    // Stocking the shelves is the first write of each product's history.
    rt.block_on(async {
        for p in 0..PRODUCTS {
            let opts = PutOptions {
                write: WriteOptions {
                    ack: Some(AckLevel::Quorum),
                    idempotency_key: Some(format!("stock-{p}")),
                },
                ..PutOptions::default()
            };
            let value = stock_value(stock(p), "shelf");
            let (key, v) = (product(p), json!(value));
            let call = micros(origin);
            let put = until_known(RESOLVE, || client.put(&key, &v, &opts))
                .await
                .expect("stock the shelves");
            shop.history.lock().unwrap().push(Operation {
                client: BUYERS,
                key,
                kind: OpKind::Put { value },
                call,
                ret: Some(micros(origin)),
                outcome: Outcome::Ok(Observed::Written {
                    version: put.version,
                }),
            });
        }
    });
    let buyers: Vec<_> = (0..BUYERS)
        .map(|id| rt.spawn(buyer(id, client.clone(), shop.clone(), origin)))
        .collect();
    // Purchases flow before anything moves.
    wait_for("first purchases", DEADLINE, || {
        (shop
            .acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .sum::<u64>()
            >= 20)
            .then_some(())
    });

    // 2 -> 4: asked through the CLI; a bad count and another count while it runs are refused.
    let text = reshard_cli(&pg, 4);
    assert!(text.contains("resharding 2 → 4 shard(s) started"), "{text}");
    let control = format!("127.0.0.1:{}", pg.base_port);
    let (code, body) = http(&control, "POST", "/reshard?shards=0", None).unwrap();
    assert_eq!((code, body.contains("bad_request")), (400, true), "{body}");
    let (code, body) = http(&control, "POST", "/reshard?shards=3", None).unwrap();
    assert_eq!(
        (code, body.contains("reshard_running")),
        (409, true),
        "{body}"
    );
    assert!(reshard_cli(&pg, 4).contains("already under way"));
    status_shows_a_migration(&pg, 4);
    kill_during_copy(&pg, "from");
    kill_during_copy(&pg, "to");
    verify_shards(&pg, 4);
    let moved = shop
        .acked
        .iter()
        .map(|a| a.load(Ordering::SeqCst))
        .sum::<u64>();
    eprintln!("2 -> 4 done; {moved} purchases acknowledged so far");

    // 4 -> 3: shard 3 gives its slots away and stops.
    let text = reshard_cli(&pg, 3);
    assert!(text.contains("resharding 4 → 3 shard(s) started"), "{text}");
    kill_during_copy(&pg, "from");
    kill_during_copy(&pg, "to");
    verify_shards(&pg, 3);
    for i in 1..=REPLICAS {
        wait_for("shard 3's nodes to stop", DEADLINE, || {
            get_json(&node_url(&pg, 3, i), "/v1/status")
                .is_none()
                .then_some(())
        });
    }

    shop.stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for b in buyers {
            b.await.expect("buyer task");
        }
    });
    assert_eq!(
        shop.unresolved.load(Ordering::SeqCst),
        0,
        "purchases left unknown"
    );
    let history = shop.history.lock().unwrap().clone();
    rt.block_on(async {
        for p in 0..PRODUCTS {
            let rec = client
                .get(&product(p), Some(Consistency::Linearizable))
                .await
                .expect("read stock")
                .expect("stock record");
            let left = left_of(rec.value.as_str().expect("a string"));
            let acked = shop.acked[p].load(Ordering::SeqCst);
            assert_eq!(
                stock(p) - left,
                acked,
                "product {p}: {left} left after {acked} acknowledged purchases"
            );
            if stock(p) == SMALL_STOCK {
                assert_eq!(left, 0, "product {p} sells out during the run");
            }
        }
    });
    // No value below zero was ever read or written (a count is unsigned: a negative one would
    // not parse), and each product's history is linearizable. Versions are log indexes of the
    // shard that wrote them, so each key is checked on its own.
    for p in 0..PRODUCTS {
        let key = product(p);
        let mine: Vec<Operation> = history.iter().filter(|o| o.key == key).cloned().collect();
        let verdict = linearizability::check(&mine, Limits::default()).expect("well-formed");
        assert_eq!(
            verdict,
            Verdict::Linearizable,
            "{key}: {} operations",
            mine.len()
        );
    }
    eprintln!(
        "{} operations recorded, {} purchases acknowledged",
        history.len(),
        shop.acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .sum::<u64>()
    );
}
