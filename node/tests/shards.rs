//! Shards at the node level: two replica groups with a pushed cluster map. Any node answers any
//! request (forwarding to the owning shard's primary), lists merge across shards with exact paging,
//! a request routed by a stale map is refused with nothing applied, and session tokens carry one
//! position per shard.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const FAST: &[&str] = &["--heartbeat-ms", "20", "--lease-ms", "500"];

struct Sharded {
    shards: Vec<Cluster>,
}

impl Sharded {
    /// `n` shards of `members` nodes each, every shard with its first node as primary, and the
    /// cluster map (slots spread evenly) pushed to every node.
    fn start(n: u32, members: usize) -> Sharded {
        let shards: Vec<Cluster> = (0..n)
            .map(|s| {
                let mut args = FAST.to_vec();
                let shard = s.to_string();
                args.extend(["--shard", shard.as_str()]);
                Cluster::with_primary(members, &args)
            })
            .collect();
        let all: Vec<usize> = (0..members).collect();
        let slots = rcluster_proto::SlotMap::even(4096, n).unwrap();
        let map = json!({
            "slots": slots,
            "shards": shards.iter().enumerate().map(|(s, c)| json!({
                "shard": s, "members": c.members(&all), "primary": "n1", "term": c.term,
            })).collect::<Vec<_>>(),
        });
        for c in &shards {
            for i in 0..members {
                let r = c.internal(i, "cluster-map", map.clone());
                assert_eq!(r.status, 200, "push the map: {}", r.body);
            }
        }
        Sharded { shards }
    }

    fn node(&self, shard: usize, i: usize) -> &Node {
        &self.shards[shard].nodes[i]
    }

    fn owner(&self, key: &str) -> u32 {
        rcluster_proto::SlotMap::even(4096, self.shards.len() as u32)
            .unwrap()
            .owner_of(key)
    }
}

fn records(n: &Node) -> u64 {
    n.status()["records"].as_u64().unwrap()
}

#[test]
fn any_node_serves_any_key_and_lists_merge_across_shards() {
    let c = Sharded::start(2, 2);
    // Every write goes through one replica of shard 1; each lands on its slot's shard.
    let entry = c.node(1, 1);
    for i in 0..120 {
        let r = entry.req(
            "PUT",
            &format!("/v1/kv/k{i:03}?ack=quorum"),
            Some(&i.to_string()),
        );
        assert_eq!(r.status, 200, "put k{i:03}: {}", r.body);
        let owner = c.owner(&format!("k{i:03}"));
        assert_eq!(r.header("rcluster-shard"), Some(owner.to_string().as_str()));
    }
    let (a, b) = (records(c.node(0, 0)), records(c.node(1, 0)));
    assert_eq!(a + b, 120, "every record stored once");
    assert!(a > 0 && b > 0, "both shards hold records ({a}, {b})");
    // Reads from any node, at every consistency.
    for i in (0..120).step_by(7) {
        for (node, consistency) in [
            (c.node(0, 1), "linearizable"),
            (c.node(1, 0), "eventual"),
            (c.node(0, 0), "session"),
        ] {
            let r = node.req(
                "GET",
                &format!("/v1/kv/k{i:03}?consistency={consistency}"),
                None,
            );
            assert_eq!(
                r.status,
                200,
                "get k{i:03} ({consistency}) via {} owner {}: {}",
                node.url,
                c.owner(&format!("k{i:03}")),
                r.body
            );
            assert_eq!(r.json()["value"], json!(i));
        }
    }
    // A paged list from any node returns every key once, in order.
    for node in [c.node(0, 0), c.node(1, 1)] {
        let mut keys = Vec::new();
        let mut after = String::new();
        loop {
            let r = node.req(
                "GET",
                &format!("/v1/kv?prefix=k&limit=17&start_after={after}"),
                None,
            );
            assert_eq!(r.status, 200, "{}", r.body);
            let page = r.json();
            keys.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["key"].as_str().unwrap().to_string()),
            );
            match page["next"].as_str() {
                Some(n) => after = n.to_string(),
                None => break,
            }
        }
        let want: Vec<String> = (0..120).map(|i| format!("k{i:03}")).collect();
        assert_eq!(keys, want);
    }
}

#[test]
fn a_stale_route_is_refused_and_nothing_applied() {
    let c = Sharded::start(2, 1);
    let key = (0..100)
        .map(|i| format!("x{i}"))
        .find(|k| c.owner(k) == 1)
        .unwrap();
    let direct = [("Rcluster-Direct", "1")];
    let r = c
        .node(0, 0)
        .req_h("PUT", &format!("/v1/kv/{key}"), Some("1"), &direct);
    assert_eq!((r.status, r.code().as_str()), (421, "moved"), "{}", r.body);
    assert_eq!(r.header("rcluster-shard"), Some("1"));
    assert_eq!(r.header("rcluster-epoch"), Some("1"));
    let g = c.node(1, 0).req("GET", &format!("/v1/kv/{key}"), None);
    assert_eq!(g.status, 404, "the refused write was not applied anywhere");
    assert_eq!(records(c.node(0, 0)) + records(c.node(1, 0)), 0);
}

#[test]
fn session_tokens_hold_a_position_per_shard() {
    let c = Sharded::start(2, 2);
    let key_on = |shard: u32| {
        (0..100)
            .map(|i| format!("s{i}"))
            .find(|k| c.owner(k) == shard)
            .unwrap()
    };
    let (a, b) = (key_on(0), key_on(1));
    let w = c
        .node(0, 0)
        .req("PUT", &format!("/v1/kv/{a}"), Some("\"on a\""));
    let token = w.header("rcluster-token").unwrap().to_string();
    assert!(!token.contains(','), "one shard observed so far: {token}");
    // Carried to shard 1 (through a node of shard 1), the token gains shard 1's position and
    // keeps shard 0's.
    let w = c.node(1, 1).req_h(
        "PUT",
        &format!("/v1/kv/{b}"),
        Some("\"on b\""),
        &[("Rcluster-Token", &token)],
    );
    assert_eq!(w.status, 200, "{}", w.body);
    let token = w.header("rcluster-token").unwrap().to_string();
    let t: rcluster_proto::SessionToken = token.parse().unwrap();
    assert!(t.get(0) > 0 && t.get(1) > 0, "{token}");
    // A session read of either key on any replica sees the write.
    for (node, key, want) in [(c.node(1, 1), &a, "on a"), (c.node(0, 1), &b, "on b")] {
        let r = node.req_h(
            "GET",
            &format!("/v1/kv/{key}?consistency=session"),
            None,
            &[("Rcluster-Token", &token)],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["value"], json!(want));
    }
    // A listing that spans shards answers with every shard's position, its own part's included:
    // asked of shard 1's primary, which serves shard 1's part itself.
    let written_on_1 = t.get(1);
    for node in [c.node(1, 0), c.node(0, 0)] {
        let r = node.req("GET", "/v1/kv?prefix=s", None);
        assert_eq!(r.status, 200, "{}", r.body);
        let listed: rcluster_proto::SessionToken =
            r.header("rcluster-token").unwrap().parse().unwrap();
        assert!(
            listed.get(1) >= written_on_1 && listed.get(0) > 0,
            "listed through {}: {listed} after {token}",
            node.url
        );
    }
    let bad = c
        .node(0, 0)
        .req_h("GET", "/v1/kv/x", None, &[("Rcluster-Token", "0:1,x")]);
    assert_eq!(bad.status, 400);
}

#[test]
fn topics_live_on_their_shard_and_hash_tags_colocate() {
    let c = Sharded::start(2, 1);
    let entry = c.node(0, 0);
    for i in 0..12 {
        let r = entry.req("PUT", &format!("/v1/topics/t{i}"), Some("{}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let p = entry.req(
            "POST",
            &format!("/v1/topics/t{i}/messages"),
            Some(&i.to_string()),
        );
        assert_eq!(p.status, 200, "{}", p.body);
        assert_eq!(
            p.header("rcluster-shard"),
            Some(c.owner(&format!("t{i}")).to_string().as_str())
        );
    }
    let listed = c.node(1, 0).req("GET", "/v1/topics", None);
    assert_eq!(listed.status, 200, "{}", listed.body);
    let names: Vec<String> = listed.json()["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    want.sort();
    assert_eq!(names, want);
    let read = c
        .node(1, 0)
        .req("GET", "/v1/topics/t3/messages?from=0", None);
    assert_eq!(read.json()["messages"][0]["value"], json!(3));
    // Keys sharing a hash tag share a shard; a tagged prefix lists from that shard alone.
    let shards: BTreeSet<String> = ["{u7}/profile", "{u7}/posts/1", "{u7}/follows"]
        .iter()
        .map(|k| {
            let r = entry.req("PUT", &format!("/v1/kv/{k}"), Some("1"));
            assert_eq!(r.status, 200);
            r.header("rcluster-shard").unwrap().to_string()
        })
        .collect();
    assert_eq!(shards.len(), 1);
    let l = c.node(1, 0).req("GET", "/v1/kv?prefix=%7Bu7%7D/", None);
    assert_eq!(l.status, 200, "{}", l.body);
    assert_eq!(l.json()["items"].as_array().map(Vec::len), Some(3));
    let _: Value = l.json();
}

#[test]
fn streams_and_watches_work_from_any_node() {
    let c = Sharded::start(2, 1);
    // A topic owned by shard 1, streamed through shard 0's node.
    let topic = (0..100)
        .map(|i| format!("news{i}"))
        .find(|t| c.owner(t) == 1)
        .unwrap();
    assert_eq!(
        c.node(0, 0)
            .req("PUT", &format!("/v1/topics/{topic}"), Some("{}"))
            .status,
        200
    );
    let stream = sse_events(
        &c.node(0, 0).addr,
        &format!("/v1/topics/{topic}/stream?from=0"),
        3,
    );
    for i in 0..3 {
        let r = c.node(0, 0).req(
            "POST",
            &format!("/v1/topics/{topic}/messages"),
            Some(&i.to_string()),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for i in 0..3u64 {
        let (event, id, data) = stream.recv_timeout(DEADLINE).expect("a relayed message");
        assert_eq!((event.as_str(), id), ("message", i.to_string()));
        assert_eq!(
            serde_json::from_str::<Value>(&data).unwrap()["value"],
            json!(i)
        );
    }
    // A watch over every shard sees changes of both, each id a position per shard.
    let keys: Vec<String> = [0, 1]
        .iter()
        .map(|s| {
            (0..100)
                .map(|i| format!("w{i}"))
                .find(|k| c.owner(k) == *s)
                .unwrap()
        })
        .collect();
    // A watch opens with a `progress` event (its starting position), then the changes.
    let watch = sse_events(&c.node(1, 0).addr, "/v1/watch?prefix=w", 3);
    let (event, _, _) = watch.recv_timeout(DEADLINE).expect("the opening event");
    assert_eq!(event, "progress");
    for k in &keys {
        assert_eq!(
            c.node(0, 0)
                .req("PUT", &format!("/v1/kv/{k}"), Some("1"))
                .status,
            200
        );
    }
    let mut seen = BTreeSet::new();
    let mut last_id = String::new();
    for _ in 0..2 {
        let (event, id, data) = watch.recv_timeout(DEADLINE).expect("a watch event");
        assert_eq!(event, "put");
        seen.insert(
            serde_json::from_str::<Value>(&data).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        last_id = id;
    }
    assert_eq!(seen, keys.iter().cloned().collect::<BTreeSet<_>>());
    let position: rcluster_proto::SessionToken = last_id.parse().unwrap();
    assert!(position.get(0) > 0 && position.get(1) > 0, "{last_id}");
}
