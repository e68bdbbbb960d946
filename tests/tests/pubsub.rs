//! Pub/sub under failover: messages published with `ack=quorum` while the primary is killed
//! twice are all pulled exactly once, in offset order, by a subscriber that itself lives through
//! a third kill. Publishes and pulls carry idempotency keys, so a retried publish is applied
//! once and a retried pull returns the same messages instead of skipping them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rcluster_client::{AckLevel, Retention, Start, WriteOptions};
use rcluster_e2e::ops::until_known;
use rcluster_e2e::{DEADLINE, Options, Playground, Rng, runtime, serial, wait_for};
use serde_json::json;

const MESSAGES: u64 = 200;
const RESOLVE: Duration = Duration::from_secs(60);

fn quorum(key: String) -> WriteOptions {
    WriteOptions {
        ack: Some(AckLevel::Quorum),
        idempotency_key: Some(key),
    }
}

#[test]
fn published_messages_are_pulled_exactly_once_in_order_across_kills() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    pg.wait_healthy();
    let rt = runtime();
    let client = pg.client();
    let run = Rng::new(9).next_u64();
    let topic = format!("orders-{}", run % 1_000_000);
    rt.block_on(async {
        let opts = quorum(format!("{topic}-create"));
        let retention = Retention::default();
        until_known(RESOLVE, || client.create_topic(&topic, &retention, &opts))
            .await
            .expect("create topic");
        let opts = quorum(format!("{topic}-subscribe"));
        until_known(RESOLVE, || {
            client.subscribe(&topic, "billing", Some(Start::Earliest), &opts)
        })
        .await
        .expect("subscribe");
    });

    // Publish while the primary is killed at two moments.
    const KILL_AT: [u64; 2] = [60, 140];
    let published = AtomicU64::new(0);
    let kills = AtomicU64::new(0);
    let mut offsets: BTreeMap<u64, u64> = BTreeMap::new();
    std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            for at in KILL_AT {
                wait_for("publishing to progress", DEADLINE, || {
                    (published.load(Ordering::SeqCst) >= at).then_some(())
                });
                pg.kill_primary();
                kills.fetch_add(1, Ordering::SeqCst);
            }
        });
        rt.block_on(async {
            for n in 0..MESSAGES {
                // Never run far ahead of a kill that is due: it must hit publishing.
                while let Some(at) = KILL_AT.get(kills.load(Ordering::SeqCst) as usize) {
                    if n < at + 20 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let opts = quorum(format!("{topic}-publish-{n}"));
                let value = json!({ "n": n });
                let offset = until_known(RESOLVE, || client.publish(&topic, &value, &opts))
                    .await
                    .unwrap_or_else(|e| panic!("publish {n}: {e}"));
                offsets.insert(n, offset);
                published.fetch_add(1, Ordering::SeqCst);
                // Leave the killer room to act while messages are in flight.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        killer.join().expect("killer");
    });
    wait_for("two failovers", DEADLINE, || {
        (pg.status()["failovers_total"].as_u64() == Some(2)).then_some(())
    });

    // Pull in small batches; the primary dies once more while pulling.
    let pulls = AtomicU64::new(0);
    let mut received = Vec::new();
    std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            wait_for("pulling to start", DEADLINE, || {
                (pulls.load(Ordering::SeqCst) >= 3).then_some(())
            });
            pg.kill_primary();
        });
        rt.block_on(async {
            for j in 0..10 * MESSAGES {
                let opts = quorum(format!("{topic}-pull-{j}"));
                let batch = until_known(RESOLVE, || {
                    client.pull(&topic, "billing", Some(20), None, &opts)
                })
                .await
                .unwrap_or_else(|e| panic!("pull {j}: {e}"));
                pulls.fetch_add(1, Ordering::SeqCst);
                if batch.messages.is_empty() && received.len() as u64 >= MESSAGES {
                    break;
                }
                received.extend(batch.messages);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        killer.join().expect("killer");
    });

    let got: Vec<(u64, u64)> = received
        .iter()
        .map(|m| (m.offset, m.value["n"].as_u64().expect("payload")))
        .collect();
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets strictly increase: {got:?}"
    );
    let pulled: Vec<u64> = got.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        pulled,
        (0..MESSAGES).collect::<Vec<_>>(),
        "each message once, in order"
    );
    for (offset, n) in &got {
        assert_eq!(offsets.get(n), Some(offset), "message {n}");
    }
    pg.wait_converged();
}
