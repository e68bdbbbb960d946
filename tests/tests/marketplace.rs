//! Marketplace inventory under failover: 10 products with 100 units each, 16 concurrent buyers
//! doing `incr -1 min 0` at `ack=quorum` through the client library (given one endpoint), and the
//! primary killed with SIGKILL at random moments while they buy. Afterwards no stock is below 0,
//! every product lost exactly as many units as purchases were acknowledged (none lost, none
//! applied twice) and every member holds the same state.
//!
//! A purchase whose outcome is unknown (timeout, connection lost, deposed primary) is retried
//! with the same idempotency key until the answer is known: the first result if it was applied,
//! a fresh application if it was not. So every purchase ends up acknowledged or refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rcluster_client::{AckLevel, Client, Consistency, PutOptions, WriteOptions};
use rcluster_e2e::ops::until_known;
use rcluster_e2e::{DEADLINE, Options, Playground, Rng, runtime, serial, wait_for};
use serde_json::json;

const PRODUCTS: usize = 10;
const STOCK: u64 = 100;
const BUYERS: usize = 16;
const KILLS: usize = 3;
/// Buyers pause when they get this far past a kill that has not happened yet, so every kill
/// lands while purchases are in flight.
const SLACK: u64 = 100;
const RESOLVE: Duration = Duration::from_secs(60);

struct Shop {
    acked: Vec<AtomicU64>,
    sold_out: Vec<AtomicBool>,
    purchases: AtomicU64,
    kills: AtomicUsize,
    thresholds: Vec<u64>,
    unresolved: AtomicU64,
}

fn product(p: usize) -> String {
    format!("stock/product-{p}")
}

fn quorum(key: String) -> WriteOptions {
    WriteOptions {
        ack: Some(AckLevel::Quorum),
        idempotency_key: Some(key),
    }
}

async fn buyer(id: usize, client: Client, shop: Arc<Shop>, run: u64) {
    let mut rng = Rng::new(id as u64);
    let stop_at = Instant::now() + Duration::from_secs(240);
    for n in 0.. {
        let open: Vec<usize> = (0..PRODUCTS)
            .filter(|p| !shop.sold_out[*p].load(Ordering::SeqCst))
            .collect();
        if open.is_empty() || Instant::now() > stop_at {
            return;
        }
        loop {
            let k = shop.kills.load(Ordering::SeqCst);
            let ahead =
                k < KILLS && shop.purchases.load(Ordering::SeqCst) >= shop.thresholds[k] + SLACK;
            if !ahead || Instant::now() > stop_at {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let p = open[rng.below(open.len() as u64) as usize];
        let opts = quorum(format!("buy-{run}-{id}-{n}"));
        let key = product(p);
        match until_known(RESOLVE, || client.incr(&key, -1, Some(0), None, &opts)).await {
            Ok(_) => {
                shop.acked[p].fetch_add(1, Ordering::SeqCst);
                shop.purchases.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if e.code() == Some("out_of_bounds") => {
                shop.sold_out[p].store(true, Ordering::SeqCst);
            }
            Err(e) => {
                eprintln!("buyer {id}: purchase {n} of {key} unresolved: {e}");
                shop.unresolved.fetch_add(1, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
    }
}

#[test]
fn inventory_is_exact_across_primary_kills() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    pg.wait_healthy();
    let rt = runtime();
    let client = pg.client();
    let run = Rng::new(7).next_u64();
    rt.block_on(async {
        for p in 0..PRODUCTS {
            let opts = PutOptions {
                write: quorum(format!("stock-{run}-{p}")),
                ..PutOptions::default()
            };
            let (key, value) = (product(p), json!(STOCK));
            until_known(RESOLVE, || client.put(&key, &value, &opts))
                .await
                .expect("stock the shelves");
        }
    });
    let mut rng = Rng::new(11);
    let shop = Arc::new(Shop {
        acked: (0..PRODUCTS).map(|_| AtomicU64::new(0)).collect(),
        sold_out: (0..PRODUCTS).map(|_| AtomicBool::new(false)).collect(),
        purchases: AtomicU64::new(0),
        kills: AtomicUsize::new(0),
        thresholds: (0..KILLS as u64)
            .map(|k| 100 + k * 280 + rng.below(120))
            .collect(),
        unresolved: AtomicU64::new(0),
    });

    let started = Instant::now();
    let mut killed = Vec::new();
    std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            for k in 0..KILLS {
                wait_for("purchases to reach the next kill", DEADLINE * 2, || {
                    (shop.purchases.load(Ordering::SeqCst) >= shop.thresholds[k]).then_some(())
                });
                let (primary, term) = pg.kill_primary();
                shop.kills.fetch_add(1, Ordering::SeqCst);
                let (next, _) = pg.wait_primary_after(term);
                eprintln!(
                    "kill {k}: {primary} (term {term}) at {} purchases; new primary {next}",
                    shop.purchases.load(Ordering::SeqCst)
                );
                killed.push(primary);
            }
        });
        rt.block_on(async {
            let tasks: Vec<_> = (0..BUYERS)
                .map(|id| tokio::spawn(buyer(id, client.clone(), shop.clone(), run)))
                .collect();
            for t in tasks {
                t.await.expect("buyer task");
            }
        });
        killer.join().expect("killer");
    });
    eprintln!(
        "{} purchases in {:.1} s with {} kills",
        shop.purchases.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64(),
        killed.len()
    );

    assert_eq!(shop.unresolved.load(Ordering::SeqCst), 0);
    assert_eq!(killed.len(), KILLS);
    let digest = pg.wait_converged();
    rt.block_on(async {
        for p in 0..PRODUCTS {
            let rec = client
                .get(&product(p), Some(Consistency::Linearizable))
                .await
                .expect("read stock")
                .expect("stock record");
            let left = rec.value.as_i64().expect("an integer");
            let acked = shop.acked[p].load(Ordering::SeqCst);
            assert!(left >= 0, "product {p}: stock {left}");
            assert_eq!(
                STOCK - left as u64,
                acked,
                "product {p}: {left} left after {acked} acknowledged purchases"
            );
            assert!(shop.sold_out[p].load(Ordering::SeqCst));
        }
    });
    let s = pg.status();
    assert!(s["failovers_total"].as_u64() >= Some(KILLS as u64), "{s}");
    for name in &pg.names {
        let st = pg.node_status(name).expect("status");
        assert_eq!(st["digest"], digest.as_str(), "{name}");
    }
}
