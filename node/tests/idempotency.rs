//! Idempotency retention: `--idempotency-max-keys` and `--idempotency-ttl-ms` of the primary decide
//! which keys every node forgets; keys within them are answered with their first result.

mod common;
use common::*;

fn put(n: &Node, key: &str, idem: &str, query: &str) -> Resp {
    n.req_h(
        "PUT",
        &format!("/v1/kv/{key}{query}"),
        Some(r#""v""#),
        &[("Idempotency-Key", idem)],
    )
}

/// Whether `idem` is still remembered, asked without changing anything: a request that differs
/// from the first (an `if_version` no record has) is refused as a reuse while the key is
/// remembered, and as a version mismatch once it is forgotten; neither is applied.
fn remembered(n: &Node, key: &str, idem: &str) -> bool {
    let r = put(n, key, idem, "?if_version=999999999");
    match (r.status, r.code().as_str()) {
        (409, "idempotency_key_reused") => true,
        (412, "version_mismatch") => false,
        other => panic!("unexpected answer {other:?}: {}", r.body),
    }
}

#[test]
fn keys_beyond_the_bound_are_forgotten_on_every_node_and_the_rest_answered() {
    let c = Cluster::with_primary(3, &["--idempotency-max-keys", "3"]);
    let p = &c.nodes[0];
    let first: Vec<Resp> = (0..6)
        .map(|i| put(p, &format!("k{i}"), &format!("req-{i}"), ""))
        .collect();
    for r in &first {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_for("the three oldest keys to be forgotten", || {
        (0..3)
            .all(|i| !remembered(p, &format!("k{i}"), &format!("req-{i}")))
            .then_some(())
    });
    // Within the bound: a retry gets the first result and writes nothing.
    for (i, r) in first.iter().enumerate().skip(3) {
        let retry = put(p, &format!("k{i}"), &format!("req-{i}"), "");
        assert_eq!(retry.body, r.body, "req-{i} is answered");
        let now = p.req("GET", &format!("/v1/kv/k{i}"), None).json();
        assert_eq!(now["version"], r.json()["version"]);
    }
    // Beyond it: the retry is a new write.
    let again = put(p, "k0", "req-0", "");
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.json()["version"].as_u64() > first[0].json()["version"].as_u64());
    // The replicas forgot exactly what the primary logged: the states (with their keys) agree.
    c.wait_converged(&[0, 1, 2]);
}

#[test]
fn keys_older_than_the_retention_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path(), &["--idempotency-ttl-ms", "300"]);
    let r = put(&n, "a", "once", "");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("the key to age out", || {
        (!remembered(&n, "a", "once")).then_some(())
    });
    let retry = put(&n, "a", "once", "");
    assert!(retry.json()["version"].as_u64() > r.json()["version"].as_u64());
}

#[test]
fn a_bad_retention_flag_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(NODE_BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--idempotency-max-keys", "many"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--idempotency-max-keys"), "{err}");
}
