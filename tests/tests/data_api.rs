//! The client library's data API against a real cluster: transactions (both branches, one slot,
//! surviving a primary kill) and streams that resume by themselves when the node serving them is
//! killed — every change and message delivered once, in order, with no gap, across 20 kills.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rcluster_client::{
    AckLevel, Client, Compare, Consistency, ListOptions, PutOptions, Retention, TopicEvent, Txn,
    TxnOp, WatchEvent, WriteOptions,
};
use rcluster_e2e::ops::until_known;
use rcluster_e2e::{DEADLINE, Options, Playground, runtime, serial, wait_for};
use serde_json::json;

const RESOLVE: Duration = Duration::from_secs(60);

fn quorum(key: String) -> WriteOptions {
    WriteOptions {
        ack: Some(AckLevel::Quorum),
        idempotency_key: Some(key),
    }
}

/// A client that knows every member, so a stream can move when its node dies.
fn client_of(pg: &Playground) -> Client {
    Client::builder(pg.urls.clone())
        .request_timeout(Duration::from_secs(3))
        .retry_deadline(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn buy(order: &str) -> Txn {
    Txn::new()
        .when(Compare::at_least("{p7}/stock", 1))
        .then(TxnOp::incr("{p7}/stock", -1).min(0))
        .then(TxnOp::put(
            &format!("{{p7}}/orders/{order}"),
            json!({"buyer": order}),
        ))
        .otherwise(TxnOp::incr("{p7}/refused", 1))
}

#[test]
fn transactions_apply_one_branch_atomically_and_survive_a_primary_kill() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    pg.wait_healthy();
    let rt = runtime();
    let client = client_of(&pg);
    rt.block_on(async {
        let opts = PutOptions {
            write: quorum("stock".into()),
            ..PutOptions::default()
        };
        client
            .put("{p7}/stock", &json!(2), &opts)
            .await
            .expect("stock");
        let mut sold = 0;
        for n in 0..3 {
            let order = format!("o{n}");
            let (txn, opts) = (buy(&order), quorum(order.clone()));
            let r = until_known(RESOLVE, || client.txn(&txn, &opts))
                .await
                .expect("txn");
            if r.succeeded {
                sold += 1;
                assert_eq!(r.results.len(), 2, "{r:?}");
                assert_eq!(r.results[0].value, Some(2 - sold), "{r:?}");
                assert!(r.results[1].version.is_some(), "{r:?}");
            } else {
                assert_eq!((n, r.failed_compare), (2, Some(0)), "{r:?}");
                assert_eq!(r.results[0].value, Some(1), "the failure branch ran");
            }
            // Buyer 1's purchase is retried while its primary dies: applied once.
            if n == 1 {
                let (_, term) = pg.kill_primary();
                pg.wait_primary_after(term);
                let again = until_known(RESOLVE, || client.txn(&txn, &opts))
                    .await
                    .expect("txn retried");
                assert_eq!(again, r, "the same answer for the same idempotency key");
            }
        }
        assert_eq!(sold, 2);
        let lin = Some(Consistency::Linearizable);
        let stock = client.get("{p7}/stock", lin).await.unwrap().unwrap();
        assert_eq!(stock.value, json!(0));
        assert!(stock.modified_ms >= stock.created_ms && stock.created_ms > 0);
        let orders = client
            .list(&ListOptions {
                prefix: Some("{p7}/orders/".into()),
                consistency: lin,
                ..ListOptions::default()
            })
            .await
            .unwrap();
        assert_eq!(orders.items.len(), 2, "one order per unit sold");

        // Names in two slots: refused as a whole, naming both.
        let cross = Txn::new()
            .then(TxnOp::put("{a}/x", json!(1)))
            .then(TxnOp::put("{b}/y", json!(1)));
        let err = client
            .txn(&cross, &quorum("cross".into()))
            .await
            .unwrap_err();
        assert_eq!((err.status(), err.code()), (Some(400), Some("cross_slot")));
        assert!(
            err.to_string().contains("{a}/x") && err.to_string().contains("{b}/y"),
            "{err}"
        );
        assert_eq!(
            client.get("{a}/x", lin).await.unwrap(),
            None,
            "nothing applied"
        );
    });
}

/// The member whose URL `url` is.
fn name_of(pg: &Playground, url: &str) -> String {
    let i = pg
        .urls
        .iter()
        .position(|u| u == url)
        .expect("a member's URL");
    pg.names[i].clone()
}

#[test]
fn streams_resume_without_gap_or_duplicate_across_twenty_kills_of_their_node() {
    const KILLS: usize = 20;
    let _turn = serial();
    let pg = Playground::start(Options::default());
    pg.wait_healthy();
    let rt = runtime();
    let client = client_of(&pg);
    rt.block_on(async {
        let (retention, create) = (Retention::default(), quorum("feed".into()));
        until_known(RESOLVE, || client.create_topic("feed", &retention, &create))
            .await
            .expect("topic");
        let mut watch = client.watch(Some("w/"));
        // A watch without a position starts where it first connects, which is at its first
        // read: open it before the first write, or a write that beats the connection is not
        // the watch's to deliver (the test's rare "one change short" stall at the end).
        tokio::time::timeout(DEADLINE, watch.wait_open())
            .await
            .expect("the watch opens in time")
            .expect("the watch opens");
        let mut stream = client.stream("feed", Some(0));
        // Writers: a put and a publish per step, in order, each resolved before the next.
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (client, written, stop) = (client.clone(), written.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("w/{i:06}");
                    let opts = PutOptions {
                        write: quorum(format!("put-{i}")),
                        ..PutOptions::default()
                    };
                    let value = json!(i);
                    until_known(RESOLVE, || client.put(&key, &value, &opts))
                        .await
                        .expect("put");
                    let opts = quorum(format!("pub-{i}"));
                    until_known(RESOLVE, || client.publish("feed", &value, &opts))
                        .await
                        .expect("publish");
                    i += 1;
                    written.store(i, Ordering::SeqCst);
                }
                i
            })
        };
        let (mut keys, mut messages) = (Vec::new(), Vec::new());
        // Reads until each stream got `n` items.
        async fn drain(
            watch: &mut rcluster_client::WatchStream,
            stream: &mut rcluster_client::TopicStream,
            keys: &mut Vec<u64>,
            messages: &mut Vec<u64>,
            n: usize,
        ) {
            while keys.len() < n {
                match watch.next().await.expect("watch") {
                    WatchEvent::Change(c) => keys.push(c.value.unwrap().as_u64().unwrap()),
                    // No history may be lost: say where, at once, rather than stall.
                    WatchEvent::Reset { message, .. } => {
                        panic!("the watch at {:?} was reset: {message}", watch.endpoint())
                    }
                }
            }
            while messages.len() < n {
                match stream.next().await.expect("stream") {
                    TopicEvent::Message { message, .. } => {
                        messages.push(message.value.as_u64().unwrap())
                    }
                    TopicEvent::Reset { message, .. } => {
                        panic!("the stream at {:?} was reset: {message}", stream.endpoint())
                    }
                }
            }
        }
        for k in 0..KILLS {
            let goal = keys.len() + 3;
            tokio::time::timeout(
                DEADLINE,
                drain(&mut watch, &mut stream, &mut keys, &mut messages, goal),
            )
            .await
            .unwrap_or_else(|_| panic!("streams stalled before kill {k}"));
            let (_, term) = pg.wait_healthy();
            // Alternate: the watch's node, then the topic stream's.
            let url = if k % 2 == 0 {
                watch.endpoint()
            } else {
                stream.endpoint()
            };
            let victim = name_of(&pg, url.expect("an open stream"));
            let pid = pg.kill9(&victim);
            // One node down at a time: the next kill waits for the playground's restart.
            wait_for("the killed node's restart", DEADLINE, || {
                pg.pid(&victim).filter(|p| *p != pid)
            });
            wait_for("the cluster after the kill", DEADLINE, || {
                pg.healthy().filter(|(_, t)| *t >= term)
            });
        }
        stop.store(true, Ordering::SeqCst);
        let total = writer.await.unwrap() as usize;
        assert_eq!(written.load(Ordering::SeqCst) as usize, total);
        tokio::time::timeout(
            DEADLINE,
            drain(&mut watch, &mut stream, &mut keys, &mut messages, total),
        )
        .await
        .unwrap_or_else(|_| {
            // Where the first gap or repeat is, so a stall says which write went missing.
            let first_off = |got: &[u64]| got.iter().zip(0u64..).position(|(v, i)| *v != i);
            panic!(
                "not every write delivered: {} of {total} changes (watch at {:?}, first out of \
                 order at {:?}), {} messages (stream at {:?}, first out of order at {:?})",
                keys.len(),
                watch.endpoint(),
                first_off(&keys),
                messages.len(),
                stream.endpoint(),
                first_off(&messages),
            )
        });
        let expected: Vec<u64> = (0..total as u64).collect();
        assert_eq!(keys, expected, "each change once, in order");
        assert_eq!(messages, expected, "each message once, in order");
    });
}
