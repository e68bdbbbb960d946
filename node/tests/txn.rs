//! Transactions (`POST /v1/txn`) with real nodes: a purchase and its order commit together or not at
//! all, a retried transaction applies once, bad transactions are refused whole with a JSON 4xx,
//! transactions survive replication and a kill -9 of the primary, and with two shards any node
//! routes a transaction to the shard of its keys while one spanning two slots is refused.

mod common;
mod sharded;

use common::*;
use serde_json::{Value, json};
use sharded::{FAST, Sharded};

fn txn(n: &Node, body: &Value, headers: &[(&str, &str)]) -> Resp {
    n.req_h(
        "POST",
        "/v1/txn?ack=quorum",
        Some(&body.to_string()),
        headers,
    )
}

/// A purchase of product `p` as order `order`: one unit off the stock if any is left, the order
/// record and an order event on the product's topic `p` (a topic hashes by its whole name, so
/// keys tagged `{p}` share its slot); otherwise a refusal record.
fn buy(p: &str, order: &str) -> Value {
    json!({
        "compare": [{"key": format!("{{{p}}}/stock"), "min": 1}],
        "success": [
            {"op": "incr", "key": format!("{{{p}}}/stock"), "delta": -1, "min": 0},
            {"op": "put", "key": format!("{{{p}}}/orders/{order}"), "value": {"order": order}},
            {"op": "publish", "topic": p, "value": order},
        ],
        "failure": [{"op": "put", "key": format!("{{{p}}}/sold-out"), "value": true}],
    })
}

fn stock(n: &Node, p: &str, units: i64) {
    let topic = n.req("PUT", &format!("/v1/topics/{p}"), Some("{}"));
    assert_eq!(topic.status, 200, "{}", topic.body);
    let body = json!({"success": [{"op": "put", "key": format!("{{{p}}}/stock"), "value": units}]});
    let r = txn(n, &body, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}

fn get(n: &Node, key: &str) -> Value {
    let r = n.req(
        "GET",
        &format!("/v1/kv/{}", key.replace('{', "%7B").replace('}', "%7D")),
        None,
    );
    if r.status == 404 {
        return Value::Null;
    }
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["value"].clone()
}

/// A failover as the coordinator does it: a new term, `p` promoted, the live `others` following.
fn elect_among(c: &mut Cluster, p: usize, others: &[usize]) {
    c.term += 1;
    let term = c.term;
    let r = c.internal(p, "promote", json!({ "term": term }));
    assert_eq!(r.status, 200, "promote: {}", r.body);
    for &i in others {
        let primary = c.names[p].clone();
        let r = c.internal(i, "follow", json!({"term": term, "primary": primary}));
        assert_eq!(r.status, 200, "follow: {}", r.body);
    }
}

fn applied(n: &Node) -> u64 {
    n.status()["applied_index"].as_u64().unwrap()
}

#[test]
fn a_purchase_and_its_order_commit_together_or_not_at_all() {
    let d = tempfile::tempdir().unwrap();
    let n = Node::start(d.path(), &[]);
    stock(&n, "p1", 2);
    let first = txn(&n, &buy("p1", "o1"), &[("Idempotency-Key", "buy-o1")]);
    assert_eq!(first.status, 200, "{}", first.body);
    let r = first.json();
    assert_eq!(
        (r["succeeded"].clone(), r["branch"].clone()),
        (json!(true), json!("success"))
    );
    let results = r["results"].as_array().unwrap();
    assert_eq!(
        results[0],
        json!({"op": "incr", "key": "{p1}/stock", "value": 1, "version": results[0]["version"]})
    );
    let version = results[0]["version"].as_u64().unwrap();
    assert_eq!(
        results[1]["version"],
        json!(version),
        "one entry, one version"
    );
    assert_eq!(
        results[2],
        json!({"op": "publish", "topic": "p1", "offset": 0})
    );
    assert_eq!(
        first.header("rcluster-token"),
        Some(version.to_string().as_str())
    );
    // The same request again (a retry after a lost answer) returns the first result, applied once.
    let again = txn(&n, &buy("p1", "o1"), &[("Idempotency-Key", "buy-o1")]);
    assert_eq!(again.json(), first.json());
    assert_eq!(get(&n, "{p1}/stock"), json!(1));
    let o2 = txn(&n, &buy("p1", "o2"), &[]).json();
    assert_eq!(o2["succeeded"], json!(true));
    // Sold out: the failure branch runs and says which comparison failed.
    let o3 = txn(&n, &buy("p1", "o3"), &[]);
    assert_eq!(o3.status, 200, "{}", o3.body);
    let o3 = o3.json();
    assert_eq!(
        (o3["succeeded"].clone(), o3["failed_compare"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(o3["results"][0]["op"], json!("put"));
    assert_eq!(get(&n, "{p1}/stock"), json!(0));
    assert_eq!(get(&n, "{p1}/orders/o3"), Value::Null);
    assert_eq!(get(&n, "{p1}/sold-out"), json!(true));
    let orders = n.req("GET", "/v1/topics/p1/messages", None).json();
    let published: Vec<Value> = orders["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].clone())
        .collect();
    assert_eq!(
        published,
        [json!("o1"), json!("o2")],
        "order log = stock sold"
    );
    // Comparisons alone read; record times are those of the transaction's entry.
    let check =
        json!({"compare": [{"key": "{p1}/orders/o1", "exists": true, "value": {"order": "o1"}}]});
    assert_eq!(txn(&n, &check, &[]).json()["succeeded"], json!(true));
    let rec = n.req("GET", "/v1/kv/%7Bp1%7D/orders/o1", None).json();
    assert!(rec["created_ms"].as_u64().unwrap() > 0);
    assert_eq!(rec["created_ms"], rec["modified_ms"]);
    let m = n.req("GET", "/metrics", None).body;
    assert!(
        m.contains("rcluster_requests_total{api=\"txn\",outcome=\"ok\"}"),
        "per-API metrics"
    );
}

#[test]
fn bad_transactions_are_refused_whole() {
    let d = tempfile::tempdir().unwrap();
    let n = Node::start(
        d.path(),
        &["--max-key-bytes", "64", "--max-value-bytes", "200"],
    );
    stock(&n, "p", 5);
    let before = applied(&n);
    let put = |key: &str| json!({"op": "put", "key": key, "value": 1});
    let ops = |n: usize| {
        (0..n)
            .map(|i| put(&format!("{{p}}/k{i}")))
            .collect::<Vec<_>>()
    };
    let deep = (0..70).fold(json!(1), |v, _| json!([v]));
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"success": [put("{p}/a"), put("{q}/b")]}),
            400,
            "cross_slot",
            "\"{q}/b\"",
        ),
        (
            json!({"compare": [{"key": "x", "exists": true}], "success": [put("y")]}),
            400,
            "cross_slot",
            "\"x\"",
        ),
        (
            json!({"success": [put("{p}/a"), {"op": "publish", "topic": "other", "value": 1}]}),
            400,
            "cross_slot",
            "topic \"other\"",
        ),
        (json!({}), 400, "invalid_txn", "at least one key"),
        (
            json!({"success": [{"op": "upsert", "key": "{p}/a"}]}),
            400,
            "invalid_txn",
            "unknown op",
        ),
        (
            json!({"success": [{"op": "put", "key": "{p}/a"}]}),
            400,
            "invalid_txn",
            "needs value",
        ),
        (
            json!({"success": [{"op": "delete", "key": "{p}/a", "ttl": 5}]}),
            400,
            "invalid_txn",
            "takes no ttl",
        ),
        (
            json!({"compare": [{"key": "{p}/a"}]}),
            400,
            "invalid_txn",
            "tests nothing",
        ),
        (
            json!({"success": [put("{p}/a")], "sucess": []}),
            400,
            "invalid_json",
            "unknown field",
        ),
        (
            json!({"success": [{"op": "put", "key": "{p}/a", "value": 1, "ttl": -1}]}),
            400,
            "invalid_parameter",
            "ttl",
        ),
        (
            json!({"success": [{"op": "incr", "key": "{p}/a", "min": 5, "max": 1}]}),
            400,
            "invalid_txn",
            "min",
        ),
        (json!({"success": [put("")]}), 400, "invalid_key", ""),
        (
            json!({"success": [put(&"k".repeat(65))]}),
            413,
            "key_too_long",
            "",
        ),
        (
            json!({"success": [{"op": "publish", "topic": "bad/name", "value": 1}]}),
            400,
            "invalid_name",
            "",
        ),
        (
            json!({"success": [{"op": "put", "key": "{p}/a", "value": "v".repeat(300)}]}),
            413,
            "value_too_large",
            "",
        ),
        (
            json!({"success": [{"op": "put", "key": "{p}/a", "value": deep}]}),
            400,
            "json_too_deep",
            "",
        ),
        (json!({"success": ops(129)}), 413, "batch_too_large", "128"),
        (
            json!({"success": [put("{p}/a"), {"op": "incr", "key": "{p}/stock", "delta": -9, "min": 0}]}),
            409,
            "out_of_bounds",
            "operation 1 (incr {p}/stock)",
        ),
        (
            json!({"success": [put("{nt}/a"), {"op": "publish", "topic": "nt", "value": 1}]}),
            404,
            "topic_not_found",
            "operation 1",
        ),
    ];
    for (body, status, code, says) in cases {
        let r = txn(&n, &body, &[]);
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{body}: {}",
            r.body
        );
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(says), "{body}: {message}");
    }
    let r = n.req("POST", "/v1/txn", Some("[1,"));
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_json"));
    let r = n.req("POST", "/v1/txn?ack=quorum&tll=1", Some("{}"));
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_parameter"));
    assert_eq!(n.req("GET", "/v1/txn", None).status, 405);
    assert_eq!(applied(&n), before, "nothing was applied");
    assert_eq!(get(&n, "{p}/a"), Value::Null);
    assert_eq!(get(&n, "{p}/stock"), json!(5));
}

#[test]
fn transactions_replicate_and_survive_a_kill_of_the_primary() {
    let mut c = Cluster::with_primary(3, FAST);
    // Sent to a replica, a transaction reaches the primary.
    stock(&c.nodes[1], "p", 10);
    for i in 0..4 {
        let r = txn(&c.nodes[2], &buy("p", &format!("a{i}")), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["succeeded"], json!(true));
    }
    c.wait_converged(&[0, 1, 2]);
    let last = txn(
        &c.nodes[1],
        &buy("p", "last"),
        &[("Idempotency-Key", "buy-last")],
    );
    assert_eq!(last.status, 200, "{}", last.body);
    c.nodes[0].kill9();
    elect_among(&mut c, 1, &[2]);
    // The retry after the failover finds the first answer in the new primary's log.
    let again = txn(
        &c.nodes[2],
        &buy("p", "last"),
        &[("Idempotency-Key", "buy-last")],
    );
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json(), last.json());
    for i in 0..5 {
        let r = txn(&c.nodes[2], &buy("p", &format!("b{i}")), &[]);
        assert_eq!(r.json()["succeeded"], json!(true), "{}", r.body);
    }
    let sold_out = txn(&c.nodes[1], &buy("p", "late"), &[]).json();
    assert_eq!(sold_out["succeeded"], json!(false));
    c.nodes[0].restart();
    c.elect(1);
    c.wait_converged(&[0, 1, 2]);
    for node in &c.nodes {
        let r = node.req(
            "GET",
            "/v1/kv?prefix=%7Bp%7D/orders/&consistency=eventual&limit=100",
            None,
        );
        assert_eq!(
            r.json()["items"].as_array().unwrap().len(),
            10,
            "{}",
            r.body
        );
        let topic = node
            .req("GET", "/v1/topics/p/messages?consistency=eventual", None)
            .json();
        assert_eq!(topic["end_offset"], json!(10), "order log = stock sold");
        let s = node
            .req("GET", "/v1/kv/%7Bp%7D/stock?consistency=eventual", None)
            .json();
        assert_eq!(s["value"], json!(0));
    }
}

#[test]
fn with_two_shards_a_transaction_goes_to_the_shard_of_its_slot() {
    let c = Sharded::start(2, 2);
    for shard in [0, 1] {
        let p = c.name_on(shard, "prod");
        let entry = c.node(1 - shard as usize, 1);
        stock(entry, &p, 3);
        let r = txn(entry, &buy(&p, "o1"), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["succeeded"], json!(true));
        assert_eq!(r.header("rcluster-shard"), Some(shard.to_string().as_str()));
        assert_eq!(
            get(c.node(shard as usize, 0), &format!("{{{p}}}/stock")),
            json!(2)
        );
    }
    let (a, b) = (c.name_on(0, "k"), c.name_on(1, "k"));
    let body = json!({"success": [
        {"op": "put", "key": a, "value": 1},
        {"op": "put", "key": b, "value": 1},
    ]});
    for shard in 0..2 {
        for i in 0..2 {
            let r = txn(c.node(shard, i), &body, &[]);
            assert_eq!(
                (r.status, r.code().as_str()),
                (400, "cross_slot"),
                "{}",
                r.body
            );
        }
    }
    assert_eq!(get(c.node(0, 0), &a), Value::Null);
    assert_eq!(get(c.node(1, 0), &b), Value::Null);
}
