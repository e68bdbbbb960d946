//! Shards end to end: playgrounds of 4 shards × 2 nodes driven by one coordinator runtime per
//! shard. Keys and topics spread over every shard and are reachable through any node; killing one
//! shard's primary fails over that shard alone while the others keep acknowledging writes; and a
//! marketplace plus compare-and-set registers across all shards keep exact inventory and a
//! linearizable history per key through primary kills in every shard.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcluster_client::{AckLevel, Client, Consistency, PutOptions, WriteOptions};
use rcluster_e2e::linearizability::{self, Limits, Observed, OpKind, Operation, Outcome, Verdict};
use rcluster_e2e::ops::{micros, refused, until_known};
use rcluster_e2e::{DEADLINE, Options, Playground, Rng, get_json, http, runtime, serial, wait_for};
use rcluster_proto::ClusterMap;
use serde_json::{Value, json};

const SHARDS: u16 = 4;
const RESOLVE: Duration = Duration::from_secs(60);

fn sharded() -> Playground {
    let pg = Playground::start(Options {
        shards: SHARDS,
        replicas: 2,
        ..Options::default()
    });
    pg.wait_all_healthy();
    pg
}

/// The cluster map every node was sent, as node `name` serves it.
fn cluster_map(pg: &Playground, name: &str) -> ClusterMap {
    wait_for("the cluster map on every node", DEADLINE, || {
        let maps: Vec<ClusterMap> = pg
            .names
            .iter()
            .map(|n| serde_json::from_value(get_json(&pg.url(n), "/v1/cluster")?).ok())
            .collect::<Option<_>>()?;
        let all_shards = maps.iter().all(|m| m.slots.shards == u32::from(SHARDS));
        all_shards.then_some(())
    });
    serde_json::from_value(get_json(&pg.url(name), "/v1/cluster").expect("map")).expect("a map")
}

/// Names (from `prefix0`, `prefix1`, ...) whose slot belongs to `shard`.
fn names_on(map: &ClusterMap, prefix: &str, shard: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| map.slots.owner_of(k) == shard)
        .take(n)
        .collect()
}

fn quorum(key: String) -> WriteOptions {
    WriteOptions {
        ack: Some(AckLevel::Quorum),
        idempotency_key: Some(key),
    }
}

fn count(pg: &Playground, shard: u16, what: &str) -> u64 {
    let (primary, _) = pg.healthy_shard(shard).expect("a healthy shard");
    pg.node_status(&primary).expect("status")[what]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn keys_and_topics_spread_over_shards_and_one_shards_failover_spares_the_others() {
    let _turn = serial();
    let pg = sharded();
    let map = cluster_map(&pg, "n1");
    assert_eq!(map.slots.shards, u32::from(SHARDS));
    let entry = pg.url("n1");
    let addr = entry.trim_start_matches("http://").to_string();
    // 40 topics and 400 keys, all through one node of shard 0.
    for i in 0..40 {
        let (code, body) = http(&addr, "PUT", &format!("/v1/topics/t{i}"), Some("{}")).unwrap();
        assert_eq!(code, 200, "create t{i}: {body}");
    }
    for i in 0..400 {
        let path = format!("/v1/kv/key{i}?ack=quorum");
        let (code, body) = http(&addr, "PUT", &path, Some(&i.to_string())).unwrap();
        assert_eq!(code, 200, "put key{i}: {body}");
    }
    let records: Vec<u64> = (0..SHARDS).map(|k| count(&pg, k, "records")).collect();
    let topics: Vec<u64> = (0..SHARDS).map(|k| count(&pg, k, "topics")).collect();
    eprintln!("records per shard {records:?}, topics per shard {topics:?}");
    assert_eq!(records.iter().sum::<u64>(), 400);
    assert_eq!(topics.iter().sum::<u64>(), 40);
    assert!(records.iter().all(|r| *r > 0) && topics.iter().all(|t| *t > 0));

    // A topic of shard 2 with a subscriber and messages, all through shard 0's node.
    let victim = 2u16;
    let topic = names_on(&map, "t", u32::from(victim), 1)
        .pop()
        .filter(|t| {
            t.trim_start_matches('t')
                .parse::<u32>()
                .is_ok_and(|i| i < 40)
        })
        .expect("one of the 40 topics lives on shard 2");
    let post = |path: &str, body: &str| http(&addr, "POST", path, Some(body)).map(|r| r.0);
    assert_eq!(
        http(
            &addr,
            "PUT",
            &format!("/v1/topics/{topic}/subscriptions/s1?start=earliest"),
            None
        )
        .map(|r| r.0),
        Some(200)
    );
    for m in 0..5 {
        assert_eq!(
            post(&format!("/v1/topics/{topic}/messages"), &m.to_string()),
            Some(200)
        );
    }

    // Writes to the other shards' keys run while shard 2 fails over: none may fail.
    let others: Vec<String> = (0..SHARDS)
        .filter(|k| *k != victim)
        .flat_map(|k| names_on(&map, "other", u32::from(k), 3))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let writer = {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = &others[(n % others.len() as u64) as usize];
                let path = format!("/v1/kv/{key}?ack=quorum");
                match http(&addr, "PUT", &path, Some(&n.to_string())) {
                    Some((200, _)) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failed.lock().unwrap().push(format!("{key}: {other:?}")),
                }
                n += 1;
            }
        })
    };
    wait_for("writes to the other shards", DEADLINE, || {
        (ok.load(Ordering::SeqCst) > 20).then_some(())
    });
    let (primary, term) = pg.healthy_shard(victim).expect("shard 2 healthy");
    pg.kill9(&primary);
    let (next, _) = pg.wait_shard_primary_after(victim, term);
    eprintln!("shard {victim}: killed {primary} (term {term}), new primary {next}");
    // The topic takes publishes again, and the subscriber pulls every message exactly once.
    wait_for(
        "publishing to the failed-over shard's topic",
        DEADLINE,
        || (post(&format!("/v1/topics/{topic}/messages"), "5") == Some(200)).then_some(()),
    );
    let before = ok.load(Ordering::SeqCst);
    wait_for("more writes after the failover", DEADLINE, || {
        (ok.load(Ordering::SeqCst) > before + 20).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    assert_eq!(
        failed.lock().unwrap().clone(),
        Vec::<String>::new(),
        "writes to other shards failed during shard {victim}'s failover"
    );
    let mut pulled = Vec::new();
    while pulled.len() < 6 {
        let (code, body) = http(
            &addr,
            "POST",
            &format!("/v1/topics/{topic}/subscriptions/s1/pull?max=10"),
            None,
        )
        .unwrap();
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let msgs = v["messages"].as_array().cloned().unwrap_or_default();
        assert!(!msgs.is_empty(), "pulled {pulled:?}, then nothing");
        pulled.extend(msgs.iter().map(|m| m["value"].clone()));
    }
    assert_eq!(pulled, (0..6).map(|i| json!(i)).collect::<Vec<_>>());
    // The killed node came back and re-fetched: its shard converges.
    pg.wait_shard_converged(victim);
}

struct Shop {
    products: Vec<String>,
    stock: u64,
    acked: Vec<AtomicU64>,
    sold_out: Vec<AtomicBool>,
    purchases: AtomicU64,
    unresolved: AtomicU64,
}

async fn buyer(id: usize, client: Client, shop: Arc<Shop>, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(100 + id as u64);
    for n in 0.. {
        let open: Vec<usize> = (0..shop.products.len())
            .filter(|p| !shop.sold_out[*p].load(Ordering::SeqCst))
            .collect();
        if open.is_empty() || stop.load(Ordering::SeqCst) {
            return;
        }
        let p = open[rng.below(open.len() as u64) as usize];
        let opts = quorum(format!("shard-buy-{id}-{n}"));
        let key = &shop.products[p];
        match until_known(RESOLVE, || client.incr(key, -1, Some(0), None, &opts)).await {
            Ok(_) => {
                shop.acked[p].fetch_add(1, Ordering::SeqCst);
                shop.purchases.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if e.code() == Some("out_of_bounds") => {
                shop.sold_out[p].store(true, Ordering::SeqCst);
            }
            Err(e) => {
                eprintln!("buyer {id}: purchase of {key} unresolved: {e}");
                shop.unresolved.fetch_add(1, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
    }
}

type History = Arc<Mutex<Vec<Operation>>>;

/// put / get / compare-and-set on `keys` (one per shard), every operation recorded.
async fn registers(
    c: u64,
    client: Client,
    keys: Vec<String>,
    origin: Instant,
    stop: Arc<AtomicBool>,
    history: History,
) {
    let mut rng = Rng::new(c);
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        let value = format!("c{c}-{seq}");
        let call = micros(origin);
        let (kind, outcome) = if rng.below(10) < 4 {
            let outcome = match client.get(&key, Some(Consistency::Linearizable)).await {
                Ok(Some(rec)) => {
                    versions.insert(key.clone(), rec.version);
                    let value = rec.value.as_str().unwrap_or_default().to_string();
                    Outcome::Ok(Observed::Found {
                        value,
                        version: rec.version,
                    })
                }
                Ok(None) => Outcome::Ok(Observed::NotFound),
                Err(_) => Outcome::Unknown,
            };
            (OpKind::Get, outcome)
        } else {
            let expected = (rng.below(2) == 0).then(|| versions.get(&key).copied().unwrap_or(0));
            let opts = PutOptions {
                if_version: expected,
                write: quorum(format!("{key}-c{c}-{seq}")),
                ..PutOptions::default()
            };
            let v = json!(value);
            let r = until_known(RESOLVE, || client.put(&key, &v, &opts)).await;
            let outcome = match &r {
                Ok(p) => {
                    versions.insert(key.clone(), p.version);
                    Outcome::Ok(Observed::Written { version: p.version })
                }
                Err(e) if e.code() == Some("version_mismatch") => Outcome::Ok(Observed::Mismatch),
                Err(e) if refused(e) => Outcome::Failed,
                Err(_) => Outcome::Unknown,
            };
            let kind = match expected {
                Some(expected_version) => OpKind::Cas {
                    expected_version,
                    value,
                },
                None => OpKind::Put { value },
            };
            (kind, outcome)
        };
        let ret = (!matches!(outcome, Outcome::Unknown)).then(|| micros(origin));
        history.lock().unwrap().push(Operation {
            client: c,
            key,
            kind,
            call,
            ret,
            outcome,
        });
        tokio::time::sleep(Duration::from_millis(rng.below(10))).await;
    }
}

#[test]
fn marketplace_and_registers_stay_exact_across_primary_kills_in_every_shard() {
    let _turn = serial();
    let pg = sharded();
    let map = cluster_map(&pg, "n1");
    let rt = runtime();
    // Three products and one register on every shard.
    let products: Vec<String> = (0..SHARDS)
        .flat_map(|k| names_on(&map, "stock/p", u32::from(k), 3))
        .collect();
    let keys: Vec<String> = (0..SHARDS)
        .flat_map(|k| names_on(&map, "reg/k", u32::from(k), 1))
        .collect();
    let shop = Arc::new(Shop {
        // Enough that the shop cannot sell out before the last kill: buyers keep buying on the
        // other shards while each failover runs (about 150 purchases a kill on a loaded machine).
        stock: 100,
        acked: products.iter().map(|_| AtomicU64::new(0)).collect(),
        sold_out: products.iter().map(|_| AtomicBool::new(false)).collect(),
        products,
        purchases: AtomicU64::new(0),
        unresolved: AtomicU64::new(0),
    });
    let client = pg.client();
    rt.block_on(async {
        for (p, key) in shop.products.iter().enumerate() {
            let opts = PutOptions {
                write: quorum(format!("shard-stock-{p}")),
                ..PutOptions::default()
            };
            let v = json!(shop.stock);
            until_known(RESOLVE, || client.put(key, &v, &opts))
                .await
                .expect("stock");
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let history: History = Arc::default();
    let origin = Instant::now();
    let buyers: Vec<_> = (0..8)
        .map(|id| rt.spawn(buyer(id, pg.client(), shop.clone(), stop.clone())))
        .collect();
    let regs: Vec<_> = (0..3)
        .map(|c| {
            rt.spawn(registers(
                c,
                pg.client(),
                keys.clone(),
                origin,
                stop.clone(),
                history.clone(),
            ))
        })
        .collect();
    // One primary kill in every shard, each while purchases are in flight.
    for shard in 0..SHARDS {
        let before = shop.purchases.load(Ordering::SeqCst);
        wait_for("purchases before the kill", DEADLINE, || {
            let sold_out = shop.sold_out.iter().all(|s| s.load(Ordering::SeqCst));
            assert!(!sold_out, "the shop sold out before shard {shard}'s kill");
            (shop.purchases.load(Ordering::SeqCst) >= before + 15).then_some(())
        });
        let (primary, term) = pg.healthy_shard(shard).unwrap_or_else(|| {
            wait_for("the shard to be healthy", DEADLINE, || {
                pg.healthy_shard(shard)
            })
        });
        pg.kill9(&primary);
        let (next, _) = pg.wait_shard_primary_after(shard, term);
        eprintln!(
            "shard {shard}: killed {primary} at {} purchases, new primary {next}",
            shop.purchases.load(Ordering::SeqCst)
        );
    }
    stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for t in buyers.into_iter().chain(regs) {
            t.await.expect("task");
        }
    });
    assert_eq!(shop.unresolved.load(Ordering::SeqCst), 0);
    let digests: Vec<String> = (0..SHARDS).map(|k| pg.wait_shard_converged(k)).collect();
    eprintln!(
        "{} purchases; shard digests {digests:?}",
        shop.purchases.load(Ordering::SeqCst)
    );
    rt.block_on(async {
        for (p, key) in shop.products.iter().enumerate() {
            let rec = client
                .get(key, Some(Consistency::Linearizable))
                .await
                .expect("read stock")
                .expect("a stock record");
            let left = rec.value.as_i64().expect("an integer");
            let acked = shop.acked[p].load(Ordering::SeqCst);
            assert!(left >= 0, "{key}: stock {left}");
            assert_eq!(
                shop.stock - left as u64,
                acked,
                "{key}: {left} left after {acked} purchases"
            );
        }
    });
    let history = history.lock().unwrap().clone();
    assert!(history.len() > 50, "too little progress: {}", history.len());
    let verdict = linearizability::check(
        &history,
        Limits {
            max_steps: 20_000_000,
        },
    )
    .expect("a well-formed history");
    assert_eq!(verdict, Verdict::Linearizable, "{verdict:?}");

    // A session token carries a write on one shard to a read of another shard's replica.
    let (a, b) = (&keys[0], &keys[1]);
    let writer = pg.client();
    let reader_entry = {
        let owner = map.slots.owner_of(b) as u16;
        let (primary, _) = pg.healthy_shard(owner).expect("healthy");
        let replica = pg
            .shard_names(owner)
            .into_iter()
            .find(|n| *n != primary)
            .expect("a replica");
        pg.url(&replica)
    };
    let (seen_a, seen_b) = (json!("seen-a"), json!("seen-b"));
    rt.block_on(async {
        let opts = PutOptions {
            write: quorum("token-a".into()),
            ..PutOptions::default()
        };
        until_known(RESOLVE, || writer.put(a, &seen_a, &opts))
            .await
            .expect("write a");
        let opts = PutOptions {
            write: quorum("token-b".into()),
            ..PutOptions::default()
        };
        until_known(RESOLVE, || writer.put(b, &seen_b, &opts))
            .await
            .expect("write b");
        let token = writer.token();
        assert!(
            token.iter().count() >= 2,
            "one position per shard written: {token}"
        );
        let reader = Client::builder([reader_entry])
            .discover_members(false)
            .build()
            .expect("reader");
        reader.observe_token(&token);
        let got = reader
            .get(b, Some(Consistency::Session))
            .await
            .expect("session read");
        assert_eq!(got.expect("the record").value, json!("seen-b"));
    });
}

/// Requests forwarded by any node so far (`rcluster_forwarded_requests_total`, all shards).
fn forwarded(pg: &Playground) -> u64 {
    pg.names
        .iter()
        .map(|n| {
            let addr = pg.url(n).trim_start_matches("http://").to_string();
            let text = http(&addr, "GET", "/metrics", None)
                .map(|r| r.1)
                .unwrap_or_default();
            text.lines()
                .filter(|l| l.starts_with("rcluster_forwarded_requests_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        })
        .sum()
}

#[test]
fn the_client_sends_each_request_straight_to_its_shard() {
    let _turn = serial();
    let pg = sharded();
    cluster_map(&pg, "n1");
    let rt = runtime();
    let client = pg.client();
    rt.block_on(async {
        // The first answer starts discovery, which fetches the cluster map.
        let (opts, zero) = (PutOptions::default(), json!(0));
        until_known(RESOLVE, || client.put("warm-up", &zero, &opts))
            .await
            .expect("first write");
    });
    wait_for("the client to learn every shard", DEADLINE, || {
        (client.endpoints().len() == pg.names.len()).then_some(())
    });
    let before = forwarded(&pg);
    rt.block_on(async {
        for i in 0..100 {
            let key = format!("direct/{i}");
            let v = json!(i);
            let opts = PutOptions::default();
            until_known(RESOLVE, || client.put(&key, &v, &opts))
                .await
                .expect("put");
            let got = client.get(&key, None).await.expect("get").expect("record");
            assert_eq!(got.value, json!(i));
        }
    });
    let after = forwarded(&pg);
    assert_eq!(
        after, before,
        "every request went to its shard's primary directly"
    );
    // After a failover the cached map names a dead primary: requests still succeed (the client
    // falls back to any node, which forwards) and the map is corrected.
    let (primary, term) = pg.healthy_shard(1).expect("shard 1 healthy");
    pg.kill9(&primary);
    pg.wait_shard_primary_after(1, term);
    let map = cluster_map(&pg, "n1");
    let keys = names_on(&map, "after/", 1, 10);
    let one = json!(1);
    rt.block_on(async {
        for key in &keys {
            let opts = PutOptions {
                write: quorum(format!("after-{key}")),
                ..PutOptions::default()
            };
            until_known(RESOLVE, || client.put(key, &one, &opts))
                .await
                .expect("a write to the failed-over shard");
        }
    });
}
