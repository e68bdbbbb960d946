//! Timeline: posts of followed users, newest first, in one merged read; posts expire from
//! timelines but stay in their owner's archive; reposts.
//!
//! Run against the playground: `cargo run -p rcluster-examples --bin timeline -- --ttl-secs 5 http://127.0.0.1:7001`
//!
//! A post is one transaction on its author's hash slot (`{author}`): the post under
//! `{author}/posts/` with a time to live (24 h in the seed; `--ttl-secs` shortens it so the demo
//! can watch posts expire) and its copy under `{author}/archive/` with none — both or neither, so
//! the archive never misses a post. A timeline page is one `GET /v1/merged` over the followed
//! users' `posts/` prefixes ordered by `modified_ms` (the primary's clock), newest first, with a
//! limit and a cursor: one request instead of one list per followed user plus a client-side
//! merge. Writes use `ack=quorum` and reads `consistency=linearizable` (the reader sees its own
//! posts and reposts at once, and no read answers from a primary that was just replaced), so a
//! failover loses no confirmed post.

mod util;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rcluster_client::{Client, Consistency, MergeOrder, MergedOptions, Record, Txn, TxnOp};
use serde_json::json;
use util::{Args, fail, quorum, until_known};

fn tag(run: u32, a: u64) -> String {
    format!("{{tl{run}-u{a}}}")
}

/// Every page of the timeline of the first `followed` authors, `limit` posts a page.
async fn timeline(client: &Client, run: u32, followed: u64, limit: u32) -> Vec<Record> {
    let prefixes = (0..followed)
        .map(|a| format!("{}/posts/", tag(run, a)))
        .collect();
    let mut opts = MergedOptions {
        prefixes,
        order: Some(MergeOrder::Modified),
        limit: Some(limit),
        cursor: None,
        consistency: Some(Consistency::Linearizable),
    };
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let page = until_known(|| client.merged(&opts))
            .await
            .unwrap_or_else(|e| fail(&format!("timeline: {e}")));
        all.extend(page.items);
        match page.next {
            Some(next) => opts.cursor = Some(next),
            None => return all,
        }
    }
    fail("the timeline never ended")
}

fn newest_first(posts: &[Record]) {
    for w in posts.windows(2) {
        if w[0].modified_ms < w[1].modified_ms {
            fail(&format!(
                "{} is listed before the newer {}",
                w[0].key, w[1].key
            ));
        }
    }
}

async fn post(
    client: &Client,
    run: u32,
    author: u64,
    id: &str,
    value: serde_json::Value,
    ttl: f64,
) {
    let t = tag(run, author);
    let txn = Txn::new()
        .then(TxnOp::put(&format!("{t}/posts/{id}"), value.clone()).ttl(ttl))
        .then(TxnOp::put(&format!("{t}/archive/{id}"), value));
    let opts = quorum(format!("{run}-{author}-{id}"));
    until_known(|| client.txn(&txn, &opts))
        .await
        .unwrap_or_else(|e| fail(&format!("post {id}: {e}")));
}

/// Median latency of a first timeline page: one merged read, and the same page built from one
/// list per followed author plus one more read (the follow list), merged in the client.
async fn latencies(client: &Client, run: u32, followed: u64) -> (Duration, Duration) {
    const TIMES: usize = 21;
    let lin = Some(Consistency::Linearizable);
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for _ in 0..TIMES {
        let start = Instant::now();
        let opts = MergedOptions {
            prefixes: (0..followed)
                .map(|a| format!("{}/posts/", tag(run, a)))
                .collect(),
            order: Some(MergeOrder::Modified),
            limit: Some(20),
            cursor: None,
            consistency: lin,
        };
        until_known(|| client.merged(&opts))
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        one.push(start.elapsed());
        let start = Instant::now();
        let _ = client.get(&format!("{}/follows", tag(run, 0)), lin).await;
        let mut all = Vec::new();
        for a in 0..followed {
            let opts = rcluster_client::ListOptions {
                prefix: Some(format!("{}/posts/", tag(run, a))),
                limit: Some(20),
                consistency: lin,
                ..Default::default()
            };
            let page = until_known(|| client.list(&opts))
                .await
                .unwrap_or_else(|e| fail(&e.to_string()));
            all.extend(page.items);
        }
        all.sort_by(|a, b| b.modified_ms.cmp(&a.modified_ms).then(b.key.cmp(&a.key)));
        all.truncate(20);
        many.push(start.elapsed());
    }
    one.sort();
    many.sort();
    (one[TIMES / 2], many[TIMES / 2])
}

#[tokio::main]
async fn main() {
    let args = Args::parse(3);
    let client = args.client();
    let run = std::process::id();
    // The reader follows authors 0..followed; one more author is not followed.
    let followed = args.followed;
    let authors = followed + 1;
    println!(
        "ready: {authors} authors, following {followed}, posts live {} s",
        args.ttl_secs
    );
    // Phase 1: posts that expire.
    let mut expiring = BTreeSet::new();
    for a in 0..authors {
        let id = format!("a{a}-old");
        post(
            &client,
            run,
            a,
            &id,
            json!({"text": format!("hello from {a}")}),
            args.ttl_secs,
        )
        .await;
        expiring.insert(format!("{}/posts/{id}", tag(run, a)));
    }
    let early = timeline(&client, run, followed, 100).await;
    newest_first(&early);
    // Phase 2, once those are gone: posts that stay for a day, and a repost.
    let deadline =
        Instant::now() + Duration::from_secs_f64(args.ttl_secs) + Duration::from_secs(90);
    loop {
        let now = timeline(&client, run, followed, 100).await;
        if now.iter().all(|r| !expiring.contains(&r.key)) {
            break;
        }
        if Instant::now() > deadline {
            fail("expired posts are still in the timeline");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut live = BTreeSet::new();
    for n in 0..args.rounds {
        for a in 0..authors {
            let id = format!("a{a}-{n:04}");
            post(
                &client,
                run,
                a,
                &id,
                json!({"text": format!("post {n} of {a}")}),
                86_400.0,
            )
            .await;
            if a < followed {
                live.insert(format!("{}/posts/{id}", tag(run, a)));
            }
        }
    }
    // Author 0 reposts a post of the author the reader does not follow.
    let original = format!("{}/posts/a{followed}-0000", tag(run, followed));
    post(
        &client,
        run,
        0,
        "repost-1",
        json!({"repost_of": original}),
        86_400.0,
    )
    .await;
    let repost = format!("{}/posts/repost-1", tag(run, 0));
    live.insert(repost.clone());
    // Pages of 3: the cursor carries the merge across pages.
    let page = timeline(&client, run, followed, 3).await;
    newest_first(&page);
    let keys: BTreeSet<String> = page.iter().map(|r| r.key.clone()).collect();
    if keys != live || keys.len() != page.len() {
        fail(&format!("the timeline has {keys:?}, expected {live:?}"));
    }
    if page[0].key != repost {
        fail(&format!(
            "the newest post is {}, not the repost",
            page[0].key
        ));
    }
    // The archive kept every post, expired ones included.
    for a in 0..authors {
        let prefix = format!("{}/archive/", tag(run, a));
        let opts = rcluster_client::ListOptions {
            prefix: Some(prefix.clone()),
            consistency: Some(Consistency::Linearizable),
            ..Default::default()
        };
        let archive = until_known(|| client.list(&opts))
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        let expected = args.rounds as usize + 1 + usize::from(a == 0);
        if archive.items.len() != expected {
            fail(&format!(
                "{prefix} holds {} posts, not {expected}",
                archive.items.len()
            ));
        }
    }
    // What the merged read saves: one request, against one list per followed author plus the
    // profile read a client would otherwise need first (here: the list of whom the reader follows).
    let (one, many) = latencies(&client, run, followed).await;
    println!(
        "timeline of {followed} followed authors: one merged request p50 {one:?}, {} requests p50 {many:?}",
        followed + 1
    );
    println!(
        "ok: {} live posts newest first in one merged read per page, expired posts gone from the \
         timeline and kept in the archive, the repost on top",
        page.len()
    );
}
