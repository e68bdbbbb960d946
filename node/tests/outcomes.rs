//! What a client is told when a write's fate is not settled, with real node processes: a primary
//! that stops leading while a write waits for its acknowledgement answers `outcome_unknown`
//! (never `not_primary`, which means that nothing was applied), and a retry with the same
//! Idempotency-Key at the new primary applies the write exactly once, wherever the entry went.

mod common;
use common::*;
use serde_json::json;
use std::thread::JoinHandle;

/// Writes wait for their acknowledgement far longer than these tests take to fence a primary.
const SLOW_ACK: &[&str] = &["--ack-timeout-ms", "60000", "--session-wait-ms", "2000"];

const SELL: &str = r#"{"delta":-1,"min":0}"#;

fn sell(n: &Node, key: &str, ack: &str) -> Resp {
    n.req_h(
        "POST",
        &format!("/v1/kv/stock/incr?ack={ack}"),
        Some(SELL),
        &[("Idempotency-Key", key)],
    )
}

fn sell_in_background(n: &Node, key: &str, ack: &str) -> JoinHandle<Resp> {
    let (addr, key, ack) = (n.addr.clone(), key.to_string(), ack.to_string());
    std::thread::spawn(move || {
        http(
            &addr,
            "POST",
            &format!("/v1/kv/stock/incr?ack={ack}"),
            Some(SELL),
            &[("Idempotency-Key", &key)],
        )
    })
}

fn last_index(n: &Node) -> u64 {
    n.status()["last_log_index"].as_u64().unwrap()
}

fn wait_logged(n: &Node, index: u64) {
    wait_for("the entry in the node's log", || {
        (last_index(n) >= index).then_some(())
    });
}

fn stock(n: &Node) -> serde_json::Value {
    n.req("GET", "/v1/kv/stock", None).json()["value"].clone()
}

/// Stops the primary leading, as a coordinator's failover does: fenced with a newer term.
fn fence_primary(c: &mut Cluster) {
    let term = c.term + 1;
    let r = c.internal(0, "fence", json!({"term": term}));
    assert_eq!(r.status, 200, "fence: {}", r.body);
    c.term = term;
}

#[test]
fn a_write_only_the_deposed_primary_holds_is_unknown_and_its_retry_applies_it_once() {
    let mut c = Cluster::with_primary(3, SLOW_ACK);
    let r = c.nodes[0].req("PUT", "/v1/kv/stock?ack=all", Some("10"));
    assert_eq!(r.status, 200, "{}", r.body);
    let next = last_index(&c.nodes[0]) + 1;
    c.nodes[1].pause();
    c.nodes[2].pause();
    let waiting = sell_in_background(&c.nodes[0], "order-1", "quorum");
    wait_logged(&c.nodes[0], next);
    fence_primary(&mut c);
    let r = waiting.join().unwrap();
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "outcome_unknown"),
        "{}",
        r.body
    );
    // A write that never reached the log is still plainly refused.
    let refused = c.nodes[0].req("POST", "/v1/kv/stock/incr", Some(SELL));
    assert_eq!(refused.code(), "not_primary", "{}", refused.body);

    // A fenced primary still ships its log to its old replicas (for a switchover); stopped
    // before they resume, it cannot hand them the entry, so only its own log holds it.
    c.nodes[0].kill9();
    c.nodes[1].resume();
    c.nodes[2].resume();
    c.term += 1;
    let term = c.term;
    let r = c.internal(1, "promote", json!({"term": term}));
    assert_eq!(r.status, 200, "promote: {}", r.body);
    c.nodes[0].restart();
    for i in [0, 2] {
        let r = c.internal(i, "follow", json!({"term": term, "primary": "n2"}));
        assert_eq!(r.status, 200, "follow: {}", r.body);
    }
    c.wait_ready();
    let retry = sell(&c.nodes[1], "order-1", "quorum");
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.json()["value"], json!(9));
    assert_eq!(sell(&c.nodes[1], "order-1", "quorum").body, retry.body);
    c.wait_converged(&[0, 1, 2]);
    assert_eq!(stock(&c.nodes[1]), json!(9), "sold once");
    assert!(c.nodes[0].status()["entries_discarded"].as_u64() >= Some(1));
}

#[test]
fn a_write_the_new_primary_holds_is_unknown_and_its_retry_does_not_apply_it_again() {
    let mut c = Cluster::with_primary(3, SLOW_ACK);
    let r = c.nodes[0].req("PUT", "/v1/kv/stock?ack=all", Some("10"));
    assert_eq!(r.status, 200, "{}", r.body);
    let next = last_index(&c.nodes[0]) + 1;
    // `all` waits for n3, which is stopped; n2 gets the entry.
    c.nodes[2].pause();
    let waiting = sell_in_background(&c.nodes[0], "order-2", "all");
    wait_logged(&c.nodes[1], next);
    fence_primary(&mut c);
    let r = waiting.join().unwrap();
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "outcome_unknown"),
        "{}",
        r.body
    );

    c.nodes[2].resume();
    c.elect(1);
    let retry = sell(&c.nodes[1], "order-2", "all");
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.json()["value"], json!(9), "the first result");
    c.wait_converged(&[0, 1, 2]);
    assert_eq!(stock(&c.nodes[1]), json!(9), "sold once, not twice");
}
