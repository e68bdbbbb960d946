//! Reads that real applications page through: a topic read's cursor, topic listings on any node,
//! record times, and the merged read of several prefixes (a timeline page in one request).

mod common;
mod sharded;

use common::*;
use serde_json::json;

const FAST: &[&str] = &["--heartbeat-ms", "20", "--lease-ms", "500"];

#[test]
fn a_topic_read_returns_the_next_page_cursor() {
    let d = tempfile::tempdir().unwrap();
    let n = Node::start(d.path(), &[]);
    assert_eq!(n.req("PUT", "/v1/topics/t", None).status, 200);
    for i in 0..10 {
        n.req("POST", "/v1/topics/t/messages", Some(&i.to_string()));
    }
    let mut from = 0;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = n
            .req(
                "GET",
                &format!("/v1/topics/t/messages?from={from}&limit=4"),
                None,
            )
            .json();
        let page: Vec<u64> = r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(r["end_offset"], json!(10), "{r}");
        if page.is_empty() {
            assert_eq!(r["next_offset"], json!(from), "an empty page stays put");
            break;
        }
        assert_eq!(r["next_offset"], json!(page.last().unwrap() + 1), "{r}");
        from = r["next_offset"].as_u64().unwrap();
        seen.extend(page);
    }
    assert_eq!(seen, (0..10).collect::<Vec<u64>>());
}

#[test]
fn topics_are_listed_by_a_replica_at_the_default_consistency() {
    let c = Cluster::with_primary(2, FAST);
    assert_eq!(
        c.nodes[0]
            .req("PUT", "/v1/topics/t1?ack=all", Some("{}"))
            .status,
        200
    );
    let r = c.nodes[1].req("GET", "/v1/topics", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["topics"][0]["name"], json!("t1"));
    let r = c.nodes[1].req("GET", "/v1/kv?prefix=a", None);
    assert_eq!(r.status, 200, "a record listing too: {}", r.body);
}

#[test]
fn the_watch_stream_refuses_unknown_parameters() {
    let d = tempfile::tempdir().unwrap();
    let n = Node::start(d.path(), &[]);
    for path in ["/v1/watch?pefix=a", "/v1/topics/t/stream?form=1"] {
        let r = n.req("GET", path, None);
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_parameter"),
            "{path}"
        );
    }
}

/// Posts of `users` users, `per` each, written round-robin (so times interleave).
fn post_all(n: &Node, users: usize, per: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for p in 0..per {
        for u in 0..users {
            let key = format!("%7Bu{u}%7D/posts/{p:03}");
            let r = n.req(
                "PUT",
                &format!("/v1/kv/{key}"),
                Some(&format!("\"{u}-{p}\"")),
            );
            assert_eq!(r.status, 200, "{}", r.body);
            keys.push(format!("{{u{u}}}/posts/{p:03}"));
        }
    }
    keys
}

fn pages(n: &Node, query: &str, limit: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        let r = n.req(
            "GET",
            &format!("/v1/merged?{query}&limit={limit}&cursor={}", enc(&cursor)),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit);
        out.extend(items.iter().cloned());
        match page["next"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
    panic!("paging never ended");
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Items in strictly descending (modified_ms, key) order.
fn assert_newest_first(items: &[serde_json::Value]) {
    let order: Vec<(u64, &str)> = items
        .iter()
        .map(|i| {
            (
                i["modified_ms"].as_u64().unwrap(),
                i["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] > w[1]), "{order:?}");
}

fn keys_of(items: &[serde_json::Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_merged_read_pages_several_prefixes_newest_first() {
    let d = tempfile::tempdir().unwrap();
    let n = Node::start(d.path(), &[]);
    let written = post_all(&n, 5, 7);
    // Someone not followed, and an expiring post that will be gone.
    n.req("PUT", "/v1/kv/%7Bstranger%7D/posts/1", Some("1"));
    n.req("PUT", "/v1/kv/%7Bu1%7D/posts/zz?ttl=0.2", Some("\"brief\""));
    let follows = "prefix=%7Bu0%7D/posts/&prefix=%7Bu1%7D/posts/&prefix=%7Bu3%7D/posts/";
    wait_for("the brief post to expire", || {
        let r = n.req("GET", "/v1/kv/%7Bu1%7D/posts/zz", None);
        (r.status == 404).then_some(())
    });
    for order in ["modified", "version"] {
        let items = pages(&n, &format!("{follows}&order={order}"), 4);
        let mut want: Vec<String> = written
            .iter()
            .filter(|k| k.starts_with("{u0}") || k.starts_with("{u1}") || k.starts_with("{u3}"))
            .cloned()
            .collect();
        want.reverse();
        if order == "version" {
            assert_eq!(keys_of(&items), want, "newest first by version, each once");
        } else {
            // Writes within one millisecond tie on time and sort by key.
            assert_newest_first(&items);
            assert_eq!(sorted(keys_of(&items)), sorted(want), "each once");
        }
        assert!(items.iter().all(|i| i["created_ms"].as_u64() > Some(0)));
    }
    let one = n
        .req("GET", &format!("/v1/merged?{follows}&limit=1"), None)
        .json();
    assert_eq!(one["items"][0]["key"], json!("{u3}/posts/006"));
    assert!(one["next"].as_str().unwrap().starts_with('m'));
    let bad = [
        ("/v1/merged", "invalid_parameter"),
        ("/v1/merged?prefix=a&order=newest", "invalid_parameter"),
        ("/v1/merged?prefix=a&cursor=x", "invalid_parameter"),
        (
            "/v1/merged?prefix=a&order=version&cursor=m5.a",
            "invalid_parameter",
        ),
        ("/v1/merged?prefix=a&limit=0", "batch_too_large"),
        ("/v1/merged?prefix=a&start_after=b", "invalid_parameter"),
    ];
    for (path, code) in bad {
        let r = n.req("GET", path, None);
        assert_eq!(r.code(), code, "{path}: {}", r.body);
        assert!(r.status == 400 || r.status == 413);
    }
    let m = n.req("GET", "/metrics", None).body;
    assert!(m.contains("rcluster_requests_total{api=\"merged\",outcome=\"ok\"}"));
}

#[test]
fn a_merged_read_on_a_replica_and_across_two_shards() {
    let c = Cluster::with_primary(2, FAST);
    let written = post_all(&c.nodes[0], 3, 3);
    let follows = "prefix=%7Bu0%7D/&prefix=%7Bu2%7D/";
    let r = c.nodes[0].req("GET", &format!("/v1/merged?{follows}"), None);
    let token = r.header("rcluster-token").unwrap().to_string();
    // The replica answers a session read once it has the writes; a linearizable one goes to the
    // primary.
    for consistency in ["session", "linearizable"] {
        let r = c.nodes[1].req_h(
            "GET",
            &format!("/v1/merged?{follows}&consistency={consistency}"),
            None,
            &[("Rcluster-Token", &token)],
        );
        assert_eq!(r.status, 200, "{consistency}: {}", r.body);
        assert_eq!(r.json()["items"].as_array().unwrap().len(), 6);
    }
    drop(written);
    let s = sharded::Sharded::start(2, 1);
    let users: Vec<String> = (0..2)
        .flat_map(|shard| (0..3).map(move |i| (shard, i)))
        .map(|(shard, i)| s.name_on(shard, &format!("user{i}-")))
        .collect();
    let mut want = Vec::new();
    for round in 0..4 {
        for u in &users {
            let key = format!("{{{u}}}/posts/{round}");
            let r = s.node(0, 0).req(
                "PUT",
                &format!("/v1/kv/{}", enc(&key).replace("%2F", "/")),
                Some("1"),
            );
            assert_eq!(r.status, 200, "{}", r.body);
            want.push(key);
        }
    }
    let query: String = users
        .iter()
        .map(|u| format!("prefix={}", enc(&format!("{{{u}}}/"))))
        .collect::<Vec<_>>()
        .join("&");
    for node in [s.node(0, 0), s.node(1, 0)] {
        let items = pages(node, &query, 5);
        assert_newest_first(&items);
        assert_eq!(
            sorted(keys_of(&items)),
            sorted(want.clone()),
            "every post once"
        );
    }
}
