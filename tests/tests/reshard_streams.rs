//! Streams and watches across a slot move (docs/SHARDS.md "Resharding", docs/API.md "moved"): a
//! playground of 2 shards is resharded to 3 with `POST /reshard` while topics are published to
//! and keys written, with a live subscriber pulling, client-library streams and watches open, and
//! raw streams open at the topics' first owners. Every published message reaches the stream and
//! the subscriber exactly once, in order; every acknowledged change reaches the watches exactly
//! once, in order; a raw stream of a topic that moved ends with a `moved` event naming the new
//! shard and the exact offset to resume from.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rcluster_client::calls;
use rcluster_client::{Client, TopicEvent, WatchEvent, WatchOptions, WriteOptions};
use rcluster_e2e::{DEADLINE, Options, Playground, http, runtime, serial, wait_for};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const TOPICS: usize = 12;
const TAGS: usize = 12;
const RESHARD_DEADLINE: Duration = Duration::from_secs(240);

fn topic(i: usize) -> String {
    format!("mv{i}")
}

/// Keys that share a hash tag: a watch on the tag prefix is served by one shard.
fn tag_prefix(i: usize) -> String {
    format!("{{tg{i}}}")
}

fn tag_key(i: usize) -> String {
    format!("{{tg{i}}}k")
}

/// Keys spread over every shard: a watch on `w` is merged across shards.
fn plain_key(i: usize) -> String {
    format!("w{i}")
}

fn ok(addr: &str, method: &str, path: &str, body: Option<&str>) {
    let (code, text) = http(addr, method, path, body).unwrap_or((0, String::new()));
    assert_eq!(code, 200, "{method} {path}: {text}");
}

/// Retries one write with one idempotency key until it is acknowledged: applied exactly once.
async fn exactly_once<F, Fut, T>(what: &str, mut attempt: F) -> T
where
    F: FnMut(WriteOptions) -> Fut,
    Fut: std::future::Future<Output = Result<T, rcluster_client::Error>>,
{
    let opts = WriteOptions {
        idempotency_key: Some(rcluster_client::idempotency_key()),
        ..WriteOptions::default()
    };
    let start = Instant::now();
    loop {
        match attempt(opts.clone()).await {
            Ok(v) => return v,
            Err(e) if start.elapsed() < DEADLINE => eprintln!("{what}: {e}; again"),
            Err(e) => panic!("{what}: not acknowledged within {DEADLINE:?}: {e}"),
        }
    }
}

/// Publishes 0, 1, 2… to every topic and puts 1, 2, 3… to every key, round robin, until `stop`;
/// returns how many of each it wrote (each acknowledged exactly once).
fn load(client: Client, stop: Arc<AtomicBool>, rounds: Arc<AtomicU64>) -> JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (mut published, mut put) = (0u64, 0u64);
        while !stop.load(Ordering::SeqCst) && published < 100_000 {
            for t in 0..TOPICS {
                let v = json!(published);
                exactly_once("publish", |o| {
                    let (c, v, name) = (client.clone(), v.clone(), topic(t));
                    async move { c.publish(&name, &v, &o).await }
                })
                .await;
            }
            published += 1;
            put += 1;
            rounds.store(published, Ordering::SeqCst);
            for k in (0..TAGS).map(tag_key).chain((0..TAGS).map(plain_key)) {
                let v = json!(put);
                exactly_once("put", |o| {
                    let (c, v, k) = (client.clone(), v.clone(), k.clone());
                    async move {
                        let opts = rcluster_client::PutOptions {
                            write: o,
                            ..Default::default()
                        };
                        c.put(&k, &v, &opts).await
                    }
                })
                .await;
            }
        }
        (published, put)
    })
}

/// Pulls every topic's subscription until `stop` and nothing is left; the values per topic.
fn subscriber(client: Client, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Vec<u64>>> {
    tokio::spawn(async move {
        let mut got = vec![Vec::new(); TOPICS];
        for _round in 0..1_000_000u64 {
            let mut any = false;
            let stopping = stop.load(Ordering::SeqCst);
            for (t, seen) in got.iter_mut().enumerate() {
                let pulled = exactly_once("pull", |o| {
                    let (c, name) = (client.clone(), topic(t));
                    async move { c.pull(&name, "s1", Some(100), None, &o).await }
                })
                .await;
                any |= !pulled.messages.is_empty();
                seen.extend(pulled.messages.iter().map(|m| m.value.as_u64().unwrap()));
            }
            if stopping && !any {
                break;
            }
            if !any {
                // Nothing new: poll again shortly rather than write a pull entry per round.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        got
    })
}

/// A raw stream of one topic from offset 0, not resumed: its events until it ends or `stop`.
fn raw_stream(client: Client, t: usize, stop: Arc<AtomicBool>) -> JoinHandle<Vec<(String, Value)>> {
    tokio::spawn(async move {
        let call = calls::stream(&topic(t), Some(0)).unwrap();
        let mut events = client.open_stream(&call).await.expect("open a raw stream");
        let mut got = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            match tokio::time::timeout(Duration::from_millis(500), events.next()).await {
                Ok(Some(Ok(ev))) => got.push((ev.event.clone(), ev.json().unwrap_or(Value::Null))),
                Ok(Some(Err(_)) | None) => break,
                Err(_) => {}
            }
        }
        got
    })
}

/// Reads a client-library topic stream until every topic reached `upto` messages.
async fn read_topics(stream: &mut rcluster_client::TopicStream, upto: u64) -> Vec<Vec<u64>> {
    let mut got = vec![Vec::new(); TOPICS];
    let start = Instant::now();
    while got.iter().any(|g| (g.len() as u64) < upto) {
        assert!(
            start.elapsed() < RESHARD_DEADLINE,
            "the stream stalled: {got:?}"
        );
        match tokio::time::timeout(DEADLINE, stream.next()).await {
            Ok(Ok(TopicEvent::Message { topic, message, .. })) => {
                let t: usize = topic[2..].parse().unwrap();
                got[t].push(message.value.as_u64().unwrap());
            }
            Ok(Ok(TopicEvent::Reset { message, .. })) => panic!("the stream was reset: {message}"),
            Ok(Err(e)) => eprintln!("topic stream: {e}; again"),
            Err(_) => panic!("the topic stream stayed silent for {DEADLINE:?}: {got:?}"),
        }
    }
    got
}

/// Reads a watch until `done` holds for the values every key in `keys` got, in arrival order.
async fn read_watch(
    watch: &mut rcluster_client::WatchStream,
    keys: &[String],
    done: impl Fn(&[u64]) -> bool,
) -> BTreeMap<String, Vec<u64>> {
    let mut got: BTreeMap<String, Vec<u64>> = keys.iter().map(|k| (k.clone(), vec![])).collect();
    let start = Instant::now();
    while !got.values().all(|g| done(g)) {
        assert!(
            start.elapsed() < RESHARD_DEADLINE,
            "the watch stalled: {got:?}"
        );
        match tokio::time::timeout(DEADLINE, watch.next()).await {
            Ok(Ok(WatchEvent::Change(c))) => {
                if let Some(g) = got.get_mut(&c.key) {
                    g.push(c.value.and_then(|v| v.as_u64()).unwrap());
                }
            }
            Ok(Ok(WatchEvent::Reset { message, .. })) => panic!("the watch was reset: {message}"),
            Ok(Err(e)) => eprintln!("watch: {e}; again"),
            Err(_) => panic!("the watch stayed silent for {DEADLINE:?}: {got:?}"),
        }
    }
    got
}

fn consecutive(from: u64, n: u64) -> Vec<u64> {
    (from..from + n).collect()
}

#[test]
fn streams_subscribers_and_watches_follow_moved_slots_exactly_once_in_order() {
    let _turn = serial();
    let pg = Playground::start(Options {
        shards: 2,
        replicas: 2,
        ..Options::default()
    });
    pg.wait_all_healthy();
    let addr = pg.url("n1");
    for t in 0..TOPICS {
        ok(
            &addr,
            "PUT",
            &format!("/v1/topics/{}", topic(t)),
            Some("{}"),
        );
        let sub = format!("/v1/topics/{}/subscriptions/s1?start=earliest", topic(t));
        ok(&addr, "PUT", &sub, None);
    }
    let rt = runtime();
    let client = pg.client();
    let stop_load = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let stop_rest = Arc::new(AtomicBool::new(false));
    let raw: Vec<_> = (0..TOPICS)
        .map(|t| {
            let _in = rt.enter();
            raw_stream(client.clone(), t, stop_rest.clone())
        })
        .collect();
    let names: Vec<String> = (0..TOPICS).map(topic).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let from: Vec<String> = names.iter().map(|t| format!("{t}:0")).collect();
    let mut stream = client.stream_topics(&refs, Some(&from.join(",")));
    let mut tag_watches: Vec<_> = (0..TAGS)
        .map(|i| client.watch(Some(&tag_prefix(i))))
        .collect();
    let mut merged = client.watch_with(WatchOptions {
        prefixes: vec!["w".into()],
        from: None,
    });
    rt.block_on(async {
        for w in tag_watches.iter_mut().chain(std::iter::once(&mut merged)) {
            w.wait_open().await.expect("a watch opens");
        }
    });
    let (load, sub) = {
        let _in = rt.enter();
        (
            load(client.clone(), stop_load.clone(), rounds.clone()),
            subscriber(client.clone(), stop_rest.clone()),
        )
    };

    let control = format!("127.0.0.1:{}", pg.base_port);
    let (code, body) = http(&control, "POST", "/reshard?shards=3", None).unwrap();
    assert_eq!(code, 202, "{body}");
    wait_for("the resharding to finish", RESHARD_DEADLINE, || {
        let s = pg.status();
        (s["reshard"].is_null() && s["slot_map"]["shards"] == 3).then_some(())
    });
    // Some rounds of writes after the moves too.
    let at_end = rounds.load(Ordering::SeqCst);
    wait_for("writes after the resharding", DEADLINE, || {
        (rounds.load(Ordering::SeqCst) >= at_end + 3).then_some(())
    });
    stop_load.store(true, Ordering::SeqCst);
    let (published, put) = rt.block_on(load).unwrap();
    eprintln!("published {published} message(s) per topic, put {put} value(s) per key");
    assert!(published > 0 && put > 0);

    let got = rt.block_on(read_topics(&mut stream, published));
    for (t, g) in got.iter().enumerate() {
        assert_eq!(
            g,
            &consecutive(0, published),
            "{}: the stream's messages",
            topic(t)
        );
    }
    stop_rest.store(true, Ordering::SeqCst);
    let pulled = rt.block_on(sub).unwrap();
    for (t, g) in pulled.iter().enumerate() {
        assert_eq!(
            g,
            &consecutive(0, published),
            "{}: the subscriber's messages",
            topic(t)
        );
    }
    for (i, w) in tag_watches.iter_mut().enumerate() {
        let keys = [tag_key(i)];
        // Each key until it reached the last value written.
        let got = rt.block_on(read_watch(w, &keys, |g| {
            g.last().is_some_and(|v| *v >= put)
        }));
        assert_eq!(
            got[&keys[0]],
            consecutive(1, put),
            "the watch on {}",
            keys[0]
        );
    }
    let keys: Vec<String> = (0..TAGS).map(plain_key).collect();
    // Over every shard a key's changes may interleave across a move: each key until it had
    // as many changes as were written.
    let got = rt.block_on(read_watch(&mut merged, &keys, |g| g.len() as u64 >= put));
    for k in &keys {
        // Each shard's changes come in its order, and shards' parts interleave freely: a key's
        // first changes at its new shard may come before its last ones from the old (docs/SHARDS.md).
        let mut values = got[k].clone();
        values.sort_unstable();
        assert_eq!(
            values,
            consecutive(1, put),
            "the merged watch, key {k}: {:?}",
            got[k]
        );
    }

    // The raw streams at the first owners: a topic that moved ended with `moved`, after every
    // message its first owner had, naming the shard that took it and the offset to go on from.
    let mut moved = 0;
    for (t, h) in raw.into_iter().enumerate() {
        let events = rt.block_on(h).unwrap();
        let messages: Vec<u64> = events
            .iter()
            .filter(|(e, _)| e == "message")
            .map(|(_, d)| d["value"].as_u64().unwrap())
            .collect();
        assert_eq!(
            messages,
            consecutive(0, messages.len() as u64),
            "{}: the raw stream",
            topic(t)
        );
        if let Some((event, data)) = events.last()
            && event == "moved"
        {
            moved += 1;
            assert_eq!(data["shard"], json!(2), "{}: {data}", topic(t));
            assert_eq!(data["topic"], json!(topic(t)));
            assert_eq!(
                data["resume"],
                json!(messages.len().to_string()),
                "{}: resume right after the last message sent",
                topic(t)
            );
        }
    }
    assert!(
        moved > 0,
        "no raw stream of a moved topic ended with `moved`"
    );
    eprintln!("{moved} raw stream(s) ended with `moved`");
}
