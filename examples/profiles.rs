//! Profiles: quorum-replicated user profiles, readable at a majority right after a write and
//! read-your-writes on any replica.
//!
//! Run against the playground: `cargo run -p rcluster-examples --bin profiles -- http://127.0.0.1:7001 http://127.0.0.1:7002 http://127.0.0.1:7003`
//!
//! Each profile update is a compare-and-set put (`if_version`, so two editors never overwrite each
//! other silently) acknowledged at `ack=quorum`: once confirmed, a majority of the members hold
//! it, so it survives the loss of the primary. Right after each write the program reads the profile
//! on every member it was given with `consistency=session` and the writer's session token: every
//! member, replicas included, answers with the new version or newer (read-your-writes); at least a
//! majority must answer even while one member is down. It also counts how often an eventual read
//! (no waiting) already showed the write.

mod util;

use std::time::Duration;

use rcluster_client::{Client, Consistency, PutOptions};
use serde_json::json;
use util::{Args, fail, quorum, until_known};

const USERS: u64 = 5;

#[tokio::main]
async fn main() {
    let args = Args::parse(30);
    let client = args.client();
    let run = std::process::id();
    // One client per member, never redirected: reads are answered by that member.
    let members: Vec<Client> = args
        .urls
        .iter()
        .map(|u| {
            Client::builder([u.clone()])
                .discover_members(false)
                .request_timeout(Duration::from_secs(3))
                .retry_deadline(Duration::from_secs(20))
                .build()
                .unwrap_or_else(|e| fail(&e.to_string()))
        })
        .collect();
    let majority = args.urls.len() / 2 + 1;
    println!("ready: {USERS} profiles, {} rounds", args.rounds);
    let mut versions = vec![0u64; USERS as usize];
    let mut shown_at_once = 0;
    for round in 0..args.rounds {
        let u = (round % USERS) as usize;
        let key = format!("profiles/{run}-user{u}");
        let profile = json!({"name": format!("user {u}"), "bio": format!("edit {round}")});
        let opts = PutOptions {
            if_version: Some(versions[u]),
            write: quorum(format!("{run}-edit-{round}")),
            ..PutOptions::default()
        };
        let put = until_known(|| client.put(&key, &profile, &opts))
            .await
            .unwrap_or_else(|e| fail(&format!("edit {round} of {key}: {e}")));
        versions[u] = put.version;
        let token = client.token();
        let (mut at_once, mut readable) = (0, 0);
        for (m, member) in members.iter().enumerate() {
            // Informational: who shows the write before any waiting.
            if let Ok(Some(r)) = member.get(&key, Some(Consistency::Eventual)).await
                && r.version >= put.version
            {
                at_once += 1;
            }
            // The promise: with the writer's token every member reads the write (it waits until
            // it applied it). A member that is down right now (a killed primary restarting)
            // cannot answer; a wrong answer is never acceptable.
            member.observe_token(&token);
            match member.get(&key, Some(Consistency::Session)).await {
                Ok(Some(r)) if r.version >= put.version && r.created_ms <= r.modified_ms => {
                    readable += 1
                }
                Ok(other) => fail(&format!(
                    "member {m} read {other:?} after version {} of {key}",
                    put.version
                )),
                Err(_) => {}
            }
        }
        if readable < majority {
            fail(&format!(
                "{key} version {} was readable on {readable} of {} members",
                put.version,
                members.len()
            ));
        }
        shown_at_once += at_once;
    }
    println!(
        "ok: every edit read back by a majority with the writer's session token; eventual reads \
         showed it at once {shown_at_once} times out of {}",
        args.rounds * members.len() as u64
    );
}
