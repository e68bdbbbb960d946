//! Chat: causal delivery over pushed updates — a reply never arrives before the message it answers.
//!
//! Run against the playground: `cargo run -p rcluster-examples --bin chat -- http://127.0.0.1:7002 http://127.0.0.1:7001`
//!
//! Bob posts messages to a room (keys under `{room}/msg/`, `ack=quorum`). Carol follows the room
//! with a watch and answers each message only once she has seen it; Alice only reads, with her own
//! watch, and checks that every reply reaches her after the message it answers. A watch delivers
//! committed changes in log order, and Carol's reply enters the log after the message she saw, so
//! the order holds on any node. The watches resume by themselves: a node that dies or stops
//! answering (a paused replica) costs Alice a reconnect to another node after her last event id —
//! no message lost, none twice, the order kept.

mod util;

use std::collections::HashSet;
use std::time::Duration;

use rcluster_client::{Client, PutOptions, WatchEvent, WatchOptions, WatchStream};
use serde_json::json;
use util::{Args, fail, quorum, until_known};

fn watch(client: &Client, room: &str) -> WatchStream {
    client
        .watch_with(WatchOptions {
            prefixes: vec![format!("{room}/msg/")],
            from: None,
        })
        // The server sends something every 5 s; a node silent for longer is taken as lost.
        .idle_timeout(Duration::from_secs(8))
}

async fn say(client: &Client, key: String, value: serde_json::Value) {
    let opts = PutOptions {
        write: quorum(key.clone()),
        ..PutOptions::default()
    };
    until_known(|| client.put(&key, &value, &opts))
        .await
        .unwrap_or_else(|e| fail(&format!("{key}: {e}")));
}

#[tokio::main]
async fn main() {
    let args = Args::parse(30);
    let run = std::process::id();
    let room = format!("{{room{run}}}");
    let (alice, bob, carol) = (args.client(), args.client(), args.client());
    let mut alice_sees = watch(&alice, &room);
    let mut carol_sees = watch(&carol, &room);
    // Open both streams before the first message: a watch starts at the present.
    for w in [&mut alice_sees, &mut carol_sees] {
        w.wait_open().await.unwrap_or_else(|e| fail(&e.to_string()));
    }
    println!("watching {}", alice_sees.endpoint().unwrap_or("?"));
    let rounds = args.rounds;
    let bob_room = room.clone();
    let bob_task = tokio::spawn(async move {
        for n in 0..rounds {
            say(
                &bob,
                format!("{bob_room}/msg/bob-{n:05}"),
                json!({"from": "bob", "n": n}),
            )
            .await;
            // A conversation's pace, not a load test.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let carol_room = room.clone();
    let carol_task = tokio::spawn(async move {
        let mut answered = 0;
        while answered < rounds {
            match carol_sees.next().await {
                Ok(WatchEvent::Change(c)) if c.kind == "put" && c.key.contains("/msg/bob-") => {
                    let reply = format!("{carol_room}/msg/carol-re-{}", &c.key[c.key.len() - 5..]);
                    say(&carol, reply, json!({"from": "carol", "reply_to": c.key})).await;
                    answered += 1;
                }
                Ok(WatchEvent::Reset { message, .. }) => fail(&format!("carol: {message}")),
                Ok(_) => {}
                Err(e) => fail(&format!("carol's watch: {e}")),
            }
        }
    });
    let mut seen = HashSet::new();
    let mut on = alice_sees.endpoint().map(str::to_string);
    let mut replies = 0;
    while replies < rounds {
        match alice_sees.next().await {
            Ok(WatchEvent::Change(c)) if c.kind == "put" => {
                let now_on = alice_sees.endpoint().map(str::to_string);
                if now_on != on {
                    println!("alice now on {}", now_on.as_deref().unwrap_or("?"));
                    on = now_on;
                }
                if !seen.insert(c.key.clone()) {
                    fail(&format!("alice got {} twice", c.key));
                }
                let answers = c.value.as_ref().and_then(|v| v["reply_to"].as_str());
                if let Some(original) = answers {
                    if !seen.contains(original) {
                        fail(&format!("alice got {} before {original}", c.key));
                    }
                    replies += 1;
                    if replies % 10 == 0 {
                        println!("delivered {replies} replies in order");
                    }
                }
            }
            Ok(WatchEvent::Reset { message, .. }) => fail(&format!("alice: {message}")),
            Ok(_) => {}
            Err(e) => fail(&format!("alice's watch: {e}")),
        }
    }
    bob_task.await.unwrap_or_else(|e| fail(&e.to_string()));
    carol_task.await.unwrap_or_else(|e| fail(&e.to_string()));
    if seen.len() as u64 != 2 * rounds {
        fail(&format!(
            "alice got {} messages, not {}",
            seen.len(),
            2 * rounds
        ));
    }
    println!(
        "ok: {rounds} messages and {rounds} replies, every reply after its message, none twice"
    );
}
