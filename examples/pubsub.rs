//! Pub/sub: replicated topics, every message published once and received exactly once.
//!
//! Run against the playground: `cargo run -p rcluster-examples --bin pubsub -- http://127.0.0.1:7001`
//!
//! Publishers write to several topics with `ack=quorum` and an idempotency key per message (a
//! publish retried after a failover is stored once). Two consumers: a push consumer with one
//! stream over all topics (`GET /v1/stream`, resumed after its last event id on any node), and a
//! pull consumer with a durable subscription on each topic, whose pulls carry an idempotency key
//! so a pull retried after a lost answer returns the same messages instead of skipping them. Both
//! must see every message exactly once, in offset order per topic. It prints the publish and pull
//! latencies it measured; `rcluster bench --api publish` measures the per-API figures properly.

mod util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rcluster_client::{Retention, Start, TopicEvent};
use serde_json::json;
use util::{Args, fail, quorum, until_known};

const TOPICS: u64 = 3;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[tokio::main]
async fn main() {
    let args = Args::parse(30);
    let client = args.client();
    let run = std::process::id();
    let topics: Vec<String> = (0..TOPICS).map(|t| format!("ps{run}-t{t}")).collect();
    for t in &topics {
        let (retention, create) = (Retention::default(), quorum(format!("{t}-create")));
        until_known(|| client.create_topic(t, &retention, &create))
            .await
            .unwrap_or_else(|e| fail(&format!("create {t}: {e}")));
        let sub = quorum(format!("{t}-sub"));
        until_known(|| client.subscribe(t, "pull", Some(Start::Earliest), &sub))
            .await
            .unwrap_or_else(|e| fail(&format!("subscribe {t}: {e}")));
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let from = topics
        .iter()
        .map(|t| format!("{t}:0"))
        .collect::<Vec<_>>()
        .join(",");
    let mut pushed = client.stream_topics(&names, Some(&from));
    println!("ready: {TOPICS} topics, {} messages each", args.rounds);
    let publisher = {
        let (client, topics, rounds) = (client.clone(), topics.clone(), args.rounds);
        tokio::spawn(async move {
            let mut took = Vec::new();
            for n in 0..rounds {
                for t in &topics {
                    let start = Instant::now();
                    let (value, opts) = (json!(n), quorum(format!("{t}-{n}")));
                    until_known(|| client.publish(t, &value, &opts))
                        .await
                        .unwrap_or_else(|e| fail(&format!("publish {n} to {t}: {e}")));
                    took.push(start.elapsed());
                }
            }
            took
        })
    };
    // Push: one stream over every topic.
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let total = TOPICS * args.rounds;
    for _ in 0..total {
        match pushed.next().await {
            Ok(TopicEvent::Message { topic, message, .. }) => {
                let next = got.entry(topic.clone()).or_default();
                if message.offset != next.len() as u64 || message.value != json!(next.len()) {
                    fail(&format!(
                        "{topic}: offset {} after {} messages",
                        message.offset,
                        next.len()
                    ));
                }
                next.push(message.offset);
            }
            Ok(TopicEvent::Reset { message, .. }) => fail(&message),
            Err(e) => fail(&format!("stream: {e}")),
        }
    }
    let mut took = publisher.await.unwrap_or_else(|e| fail(&e.to_string()));
    // Pull: each subscription hands out every message once.
    let mut pulls = Vec::new();
    for t in &topics {
        let mut next = 0u64;
        for p in 0.. {
            if next == args.rounds {
                break;
            }
            if p > 10 * args.rounds {
                fail(&format!("{t}: pulls stopped at {next}"));
            }
            let start = Instant::now();
            let opts = quorum(format!("{t}-pull-{p}"));
            let got = until_known(|| client.pull(t, "pull", Some(10), Some(1000), &opts))
                .await
                .unwrap_or_else(|e| fail(&format!("pull {t}: {e}")));
            pulls.push(start.elapsed());
            for m in got.messages {
                if m.offset != next || m.value != json!(next) {
                    fail(&format!(
                        "{t}: pulled offset {} when {next} was due",
                        m.offset
                    ));
                }
                next += 1;
            }
        }
    }
    took.sort();
    pulls.sort();
    println!(
        "publish p50 {:?} p99 {:?} ({} calls); pull p50 {:?} p99 {:?} ({} calls)",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.len(),
        percentile(&pulls, 0.5),
        percentile(&pulls, 0.99),
        pulls.len()
    );
    println!(
        "ok: {total} messages over {TOPICS} topics, each streamed once and pulled once in order"
    );
}
