//! Reads that real applications page through: a topic read's cursor, topic listings on any node,
//! record times, and the merged read of several prefixes (a timeline page in one request).

mod common;

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
