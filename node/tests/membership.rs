//! Member list changes: the coordinator sends a new member list with promote and follow in a
//! new term; new members fetch a snapshot, quorums count the new list, and the list survives a
//! restart.

mod common;

use common::*;
use serde_json::json;

fn put(n: &Node, key: &str, value: &str, ack: &str) -> Resp {
    n.req("PUT", &format!("/v1/kv/{key}?ack={ack}"), Some(value))
}

fn names(status: &serde_json::Value) -> Vec<String> {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

/// Term `term` with `primary` leading the members `which`.
fn reconfigure(c: &Cluster, term: u64, primary: usize, which: &[usize]) {
    let members = c.members(which);
    let r = c.internal(
        primary,
        "promote",
        json!({"term": term, "members": members}),
    );
    assert_eq!(r.status, 200, "promote: {}", r.body);
    for &i in which.iter().filter(|i| **i != primary) {
        let r = c.internal(
            i,
            "follow",
            json!({"term": term, "primary": c.names[primary], "members": members}),
        );
        assert_eq!(r.status, 200, "follow: {}", r.body);
    }
}

#[test]
fn members_join_and_leave_at_a_term_change() {
    let args = ["--snapshot-entries", "100", "--ack-timeout-ms", "1500"];
    let mut c = Cluster::with_primary(3, &args);
    for i in 0..150 {
        assert_eq!(
            put(&c.nodes[0], &format!("k{i}"), "1", "quorum").status,
            200
        );
    }
    wait_for("a snapshot on the primary", || {
        (c.nodes[0].status()["snapshot_index"].as_u64() > Some(0)).then_some(())
    });

    // A new member starts empty and fenced; the running members do not know it yet.
    let d = c.add_node(&args);
    assert_eq!(c.nodes[d].status()["role"], "fenced");
    assert_eq!(names(&c.nodes[0].status()), ["n1", "n2", "n3"]);

    // Join: term 2 carries the new list to everyone.
    reconfigure(&c, 2, 0, &[0, 1, 2, 3]);
    c.wait_ready();
    c.nodes[d].wait_log("installed a snapshot from the primary");
    c.wait_converged(&[0, 1, 2, 3]);
    for n in &c.nodes {
        assert_eq!(names(&n.status()), ["n1", "n2", "n3", "n4"]);
    }
    let primary = c.nodes[0].status();
    let n4 = &primary["members"][3];
    assert_eq!(n4["role"], "replica");
    assert!(n4["durable_index"].as_u64() >= primary["term_start"].as_u64());

    // Quorums count the new list: with n2 and n3 stopped, two of four members are too few,
    // while n4 alone acknowledges `one`.
    c.nodes[1].pause();
    c.nodes[2].pause();
    assert_eq!(put(&c.nodes[0], "q", "1", "quorum").status, 503);
    assert_eq!(put(&c.nodes[0], "o", "1", "one").status, 200);
    c.nodes[1].resume();
    c.nodes[2].resume();
    c.wait_converged(&[0, 1, 2, 3]);

    // Leave: term 3 keeps n1 and n4 only; n2 and n3 no longer count.
    reconfigure(&c, 3, 0, &[0, 3]);
    c.nodes[1].pause();
    c.nodes[2].pause();
    assert_eq!(put(&c.nodes[0], "after", "1", "all").status, 200);
    assert_eq!(names(&c.nodes[0].status()), ["n1", "n4"]);

    // The list outlives a restart (the flags still name n1..n3): a former primary comes back
    // fenced, with the coordinator's list.
    c.nodes[0].restart();
    let s = c.nodes[0].status();
    assert_eq!(
        (s["role"].as_str(), names(&s)),
        (Some("fenced"), vec!["n1".to_string(), "n4".to_string()])
    );
    reconfigure(&c, 4, 0, &[0, 3]);
    assert_eq!(put(&c.nodes[0], "again", "1", "all").status, 200);
    c.wait_converged(&[0, 3]);
    c.nodes[1].resume();
    c.nodes[2].resume();
}

#[test]
fn bad_member_lists_are_refused_and_change_nothing() {
    let c = Cluster::with_primary(3, &[]);
    let others = c.members(&[1, 2]);
    let r = c.internal(0, "promote", json!({"term": 5, "members": others}));
    assert_eq!(
        (r.status, r.code()),
        (409, "conflict".to_string()),
        "{}",
        r.body
    );
    let only_me = c.members(&[1]);
    let r = c.internal(
        1,
        "follow",
        json!({"term": 5, "primary": "n1", "members": only_me}),
    );
    assert_eq!(
        (r.status, r.code()),
        (409, "conflict".to_string()),
        "{}",
        r.body
    );
    let r = c.internal(0, "promote", json!({"term": 5, "members": {"n1": ""}}));
    assert_eq!(r.status, 409, "{}", r.body);
    for n in &c.nodes {
        let s = n.status();
        assert_eq!((s["term"].as_u64(), names(&s).len()), (Some(1), 3));
    }
    assert_eq!(put(&c.nodes[0], "k", "1", "all").status, 200);
}

/// A node that never had a term (a new member, or one whose disk was emptied) adopts no primary
/// that merely ships to it: only the coordinator's follow makes it a replica. Otherwise a
/// primary cut off from the coordinator could count it towards a quorum no election fenced.
#[test]
fn a_node_without_a_term_follows_only_when_told() {
    let args = ["--ack-timeout-ms", "1500"];
    let mut c = Cluster::with_primary(3, &args);
    let d = c.add_node(&args);
    let members = c.members(&[0, 1, 2, 3]);
    let r = c.internal(0, "promote", json!({"term": 2, "members": members}));
    assert_eq!(r.status, 200, "promote: {}", r.body);
    for i in [1, 2] {
        let r = c.internal(
            i,
            "follow",
            json!({"term": 2, "primary": "n1", "members": members}),
        );
        assert_eq!(r.status, 200, "follow: {}", r.body);
    }

    // The primary ships to n4, which refuses (adopting n1 would take milliseconds, well within
    // the ack timeout): an `all` write cannot be acknowledged.
    assert_eq!(put(&c.nodes[0], "a", "1", "all").status, 503);
    let s = c.nodes[d].status();
    assert_eq!(
        (s["term"].as_u64(), s["role"].as_str()),
        (Some(0), Some("fenced"))
    );

    // Told to follow, it fetches the log and `all` writes are acknowledged again.
    let r = c.internal(
        d,
        "follow",
        json!({"term": 2, "primary": "n1", "members": members}),
    );
    assert_eq!(r.status, 200, "follow: {}", r.body);
    c.wait_ready();
    assert_eq!(put(&c.nodes[0], "b", "1", "all").status, 200);
    c.wait_converged(&[0, 1, 2, 3]);
}
