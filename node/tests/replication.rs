//! Three real node processes on 127.0.0.1, roles set through the internal endpoints.

mod common;
mod events;
use common::*;
use serde_json::{Value, json};

const FAST: &[&str] = &["--ack-timeout-ms", "1500", "--session-wait-ms", "1500"];

fn put(n: &Node, key: &str, value: &str, ack: &str) -> Resp {
    n.req("PUT", &format!("/v1/kv/{key}?ack={ack}"), Some(value))
}

#[test]
fn ack_levels_with_one_replica_stopped() {
    let c = Cluster::with_primary(3, FAST);
    let p = &c.nodes[0];
    assert_eq!(put(p, "warm", "0", "all").status, 200);
    c.nodes[2].pause();
    let q = put(p, "q", "1", "quorum");
    assert_eq!(q.status, 200, "quorum needs 2 of 3: {}", q.body);
    assert_eq!(put(p, "a", "1", "async").status, 200);
    assert_eq!(put(p, "o", "1", "one").status, 200);
    let all = put(p, "x", "1", "all");
    assert_eq!(
        (all.status, all.code()),
        (503, "ack_timeout".to_string()),
        "{}",
        all.body
    );
    let s = p.status();
    assert!(s["commit_by_ack"]["all"].as_u64() < s["commit_by_ack"]["quorum"].as_u64());
    c.nodes[2].resume();
    c.wait_converged(&[0, 1, 2]);
    // The entry whose `all` ack timed out is decided by the log: it committed once n3 came back.
    assert_eq!(
        c.nodes[2]
            .req("GET", "/v1/kv/x?consistency=eventual", None)
            .json()["value"],
        json!(1)
    );
    assert_eq!(put(p, "y", "2", "all").status, 200);
}

#[test]
fn quorum_profiles_are_readable_everywhere() {
    let c = Cluster::with_primary(3, FAST);
    let p = &c.nodes[0];
    let mut written = Vec::new();
    for u in 0..20 {
        let r = put(
            p,
            &format!("profile/{u}"),
            &format!(r#"{{"user":{u},"bio":"hi"}}"#),
            "quorum",
        );
        assert_eq!(r.status, 200);
        written.push((u, r.header("rcluster-token").unwrap().to_string()));
        // Quorum: durable and applied on a majority the moment it is acknowledged.
        let holders = c
            .nodes
            .iter()
            .filter(|n| {
                n.req(
                    "GET",
                    &format!("/v1/kv/profile/{u}?consistency=eventual"),
                    None,
                )
                .status
                    == 200
            })
            .count();
        assert!(
            holders >= 2,
            "profile {u} on {holders} nodes right after its quorum ack"
        );
    }
    for n in &c.nodes {
        for (u, token) in &written {
            let r = n.req_h(
                "GET",
                &format!("/v1/kv/profile/{u}?consistency=session"),
                None,
                &[("Rcluster-Token", token)],
            );
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["value"]["user"], json!(u));
        }
    }
    // Linearizable reads and writes are the primary's: a replica forwards them there, or (when
    // the sender routes itself, `Rcluster-Direct`) refuses and points there, applying nothing.
    let r = c.nodes[1].req("GET", "/v1/kv/profile/1", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["value"]["user"], json!(1));
    let direct = [("Rcluster-Direct", "1")];
    let r = c.nodes[1].req_h("GET", "/v1/kv/profile/1", None, &direct);
    assert_eq!((r.status, r.code()), (503, "not_primary".to_string()));
    assert_eq!(r.header("rcluster-primary"), Some(p.url.as_str()));
    let w = c.nodes[1].req_h("PUT", "/v1/kv/profile/1", Some("{}"), &direct);
    assert_eq!(
        w.code(),
        "not_primary",
        "a direct write to a replica is refused"
    );
    let w = c.nodes[1].req(
        "PUT",
        "/v1/kv/profile/2",
        Some(r#"{"user":2,"via":"replica"}"#),
    );
    assert_eq!(
        w.status, 200,
        "a plain write to a replica is forwarded: {}",
        w.body
    );
    assert_eq!(
        p.req("GET", "/v1/kv/profile/2", None).json()["value"]["via"],
        json!("replica")
    );
    assert_eq!(
        p.req("GET", "/v1/kv/profile/1", None).json()["value"]["user"],
        json!(1)
    );
}

#[test]
fn session_reads_never_go_back_in_time() {
    let c = Cluster::with_primary(3, FAST);
    let (p, r2, r3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    assert_eq!(put(p, "k", r#""old""#, "all").status, 200);
    // A lagging replica: paused while the primary moves on.
    r2.pause();
    let w = put(p, "k", r#""new""#, "quorum");
    let token = w.header("rcluster-token").unwrap().to_string();
    let addr = r2.addr.clone();
    let reader = std::thread::spawn(move || {
        http(
            &addr,
            "GET",
            "/v1/kv/k?consistency=session",
            None,
            &[("Rcluster-Token", &token)],
        )
    });
    r2.resume();
    let r = reader.join().unwrap();
    if r.status == 200 {
        assert_eq!(
            r.json()["value"],
            json!("new"),
            "a session read waited for the token"
        );
    } else {
        assert_eq!((r.status, r.code()), (503, "not_ready".to_string()));
    }
    // With the primary stopped, a replica cannot reach a future token: it answers 503, never old data.
    let ahead = (w.header("rcluster-token").unwrap().parse::<u64>().unwrap() + 1000).to_string();
    p.pause();
    let r = r3.req_h(
        "GET",
        "/v1/kv/k?consistency=session",
        None,
        &[("Rcluster-Token", &ahead)],
    );
    assert_eq!((r.status, r.code()), (503, "not_ready".to_string()));
    p.resume();

    // Causal chain: A writes x; B reads x on replica 2 and writes y with its token; C reads y on
    // replica 3 and then x with the token it got: never y without x.
    for round in 0..10 {
        let a = put(p, "x", &round.to_string(), "quorum");
        let ta = a.header("rcluster-token").unwrap().to_string();
        let b_read = r2.req_h(
            "GET",
            "/v1/kv/x?consistency=session",
            None,
            &[("Rcluster-Token", &ta)],
        );
        assert_eq!(b_read.json()["value"], json!(round));
        let tb = b_read.header("rcluster-token").unwrap().to_string();
        let b_write = p.req_h(
            "PUT",
            "/v1/kv/y?ack=async",
            Some(&round.to_string()),
            &[("Rcluster-Token", &tb)],
        );
        assert_eq!(b_write.status, 200);
        let c_read = wait_for("y on replica 3", || {
            let r = r3.req("GET", "/v1/kv/y?consistency=session", None);
            (r.status == 200 && r.json()["value"] == json!(round)).then_some(r)
        });
        let tc = c_read.header("rcluster-token").unwrap().to_string();
        let x = r3.req_h(
            "GET",
            "/v1/kv/x?consistency=session",
            None,
            &[("Rcluster-Token", &tc)],
        );
        assert_eq!(
            x.json()["value"],
            json!(round),
            "saw y without the x it depends on"
        );
    }
}

#[test]
fn restarted_and_wiped_replicas_catch_up() {
    let mut c = Cluster::with_primary(
        3,
        &["--snapshot-entries", "200", "--ack-timeout-ms", "3000"],
    );
    for i in 0..300 {
        assert_eq!(
            put(&c.nodes[0], &format!("k{i}"), &i.to_string(), "all").status,
            200
        );
    }
    // kill -9 and restart: it remembers it follows n1 and streams from its last index.
    c.nodes[1].kill9();
    for i in 300..400 {
        assert_eq!(
            put(&c.nodes[0], &format!("k{i}"), &i.to_string(), "quorum").status,
            200
        );
    }
    c.nodes[1].restart();
    c.wait_converged(&[0, 1]);
    // A wiped data dir: the replica gets the primary's snapshot, then the log after it.
    wait_for("a snapshot on the primary", || {
        (c.nodes[0].status()["snapshot_index"].as_u64() > Some(0)).then_some(())
    });
    c.nodes[2].kill9();
    std::fs::remove_dir_all(&c.nodes[2].dir).unwrap();
    std::fs::create_dir_all(&c.nodes[2].dir).unwrap();
    c.nodes[2].restart();
    let term = c.term;
    assert_eq!(
        c.internal(2, "follow", json!({"term": term, "primary": "n1"}))
            .status,
        200
    );
    let digest = c.wait_converged(&[0, 1, 2]);
    c.nodes[2].wait_log("installed a snapshot from the primary");
    assert_eq!(
        c.nodes[2]
            .req("GET", "/v1/kv/k399?consistency=eventual", None)
            .json()["value"],
        json!(399)
    );
    assert_eq!(
        c.nodes[2].status()["digest"].as_str(),
        Some(digest.as_str())
    );
}

#[test]
fn an_old_primary_discards_its_unreplicated_entries_and_converges() {
    let mut c = Cluster::with_primary(3, FAST);
    let base = put(&c.nodes[0], "base", "1", "all");
    assert_eq!(base.status, 200);
    let base_position = base
        .header("rcluster-token")
        .expect("a session token")
        .to_string();
    // The replicas stop hearing from n1, which acknowledges async writes alone.
    c.nodes[1].pause();
    c.nodes[2].pause();
    for i in 0..5 {
        assert_eq!(
            put(&c.nodes[0], &format!("lost{i}"), "1", "async").status,
            200
        );
    }
    c.nodes[0].pause();
    // Restarted rather than resumed: appends n1 sent them while they were stopped die with their
    // sockets, so none of the async writes can land before the fence.
    c.nodes[1].restart();
    c.nodes[2].restart();
    // Failover to n2 under a higher term.
    c.term += 1;
    let term = c.term;
    for i in [1, 2] {
        assert_eq!(c.internal(i, "fence", json!({"term": term})).status, 200);
    }
    assert_eq!(c.internal(1, "promote", json!({"term": term})).status, 200);
    assert_eq!(
        c.internal(2, "follow", json!({"term": term, "primary": "n2"}))
            .status,
        200
    );
    assert_eq!(put(&c.nodes[1], "after", "2", "quorum").status, 200);
    // The old primary wakes up still believing it leads term 1: its replicas refuse it and it steps down.
    c.nodes[0].resume();
    wait_for("the old primary to step down", || {
        (c.nodes[0].status()["role"] != json!("primary")).then_some(())
    });
    let late = c.nodes[0].req_h(
        "PUT",
        "/v1/kv/late?ack=async",
        Some("1"),
        &[("Rcluster-Direct", "1")],
    );
    assert_eq!(late.code(), "not_primary");
    // The new primary's shipper reaches it with the newer term (and the coordinator tells it to
    // follow n2): it truncates back to the common entry and re-fetches.
    assert_eq!(
        c.internal(0, "follow", json!({"term": term, "primary": "n2"}))
            .status,
        200
    );
    let digest = c.wait_converged(&[0, 1, 2]);
    // Every async write of the old primary must be gone everywhere.
    let missing = (0..5)
        .filter(|i| {
            c.nodes[1]
                .req("GET", &format!("/v1/kv/lost{i}"), None)
                .status
                == 404
        })
        .count();
    assert!(missing >= 1, "the test did not create a divergent suffix");
    assert_eq!(
        missing, 5,
        "an async write reached a replica that never heard it"
    );
    let s = c.nodes[0].status();
    assert_eq!(s["entries_discarded"], json!(missing), "{s}");
    c.nodes[0].wait_log("discarded divergent log entries");
    assert_eq!(
        c.nodes[0]
            .req("GET", "/v1/kv/lost4?consistency=eventual", None)
            .status,
        404
    );
    assert_eq!(
        c.nodes[0]
            .req("GET", "/v1/kv/after?consistency=eventual", None)
            .json()["value"],
        json!(2)
    );
    for n in &c.nodes {
        assert_eq!(n.status()["digest"].as_str(), Some(digest.as_str()));
    }
    let m = c.nodes[0].req("GET", "/metrics", None).body;
    assert!(m.contains(&format!("rcluster_entries_discarded_total {missing}")));
    // Discarding the divergent suffix keeps the history before it: a watch resuming from before
    // it on the old primary gets the committed changes, not a reset.
    let w = events::open(
        &c.nodes[0].addr,
        &format!("/v1/watch?from={base_position}"),
        &[],
    )
    .expect("a watch resumed on the old primary");
    let mut keys = Vec::new();
    while keys.last().map(String::as_str) != Some("after") {
        let e = w.next_change().expect("a change");
        assert_eq!(
            e.event, "put",
            "resuming before the discarded entries: {e:?}"
        );
        keys.push(e.s("key").to_string());
    }
    assert_eq!(keys.len(), 5 - missing + 1, "{keys:?}");
}

#[test]
fn fencing_terms_and_the_secret() {
    let c = Cluster::with_primary(3, FAST);
    let stale = |r: Resp| (r.status, r.code());
    for op in ["fence", "promote"] {
        assert_eq!(
            stale(c.internal(1, op, json!({"term": 0}))),
            (409, "stale_term".to_string()),
            "{op}"
        );
    }
    assert_eq!(
        stale(c.internal(1, "follow", json!({"term": 0, "primary": "n1"}))),
        (409, "stale_term".to_string())
    );
    // Promoting a second node in the same term is refused.
    assert_eq!(c.internal(1, "promote", json!({"term": 1})).status, 409);
    // No secret, or a wrong one: 401, and nothing changes.
    let before = c.nodes[1].status();
    for auth in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "test-cluster-secret")],
    ] {
        let r = c.nodes[1].req_h("POST", "/internal/v1/fence", Some(r#"{"term":99}"#), &auth);
        assert_eq!((r.status, r.code()), (401, "unauthorized".to_string()));
        let r = c.nodes[1].req_h("POST", "/internal/v1/append", Some("x"), &auth);
        assert_eq!(r.status, 401);
    }
    assert_eq!(c.nodes[1].status()["term"], before["term"]);
    // The secret never shows through client endpoints.
    for path in ["/v1/status", "/metrics", "/v1/kv"] {
        assert!(
            !c.nodes[0].req("GET", path, None).body.contains(SECRET),
            "{path}"
        );
    }
    // An append from an older term is refused by the replica.
    let r = c.internal(1, "fence", json!({"term": 5}));
    assert_eq!(r.json()["role"], json!("fenced"));
    let r = c.nodes[1].req("GET", "/v1/kv/x?consistency=eventual", None);
    assert_eq!(
        r.code(),
        "not_ready",
        "a fenced node serves no possibly stale data"
    );
    wait_for("the primary to learn the newer term and step down", || {
        let s = c.nodes[0].status();
        (s["term"] == json!(5) && s["role"] == json!("fenced")).then_some(())
    });
}

#[test]
fn topics_replicate_and_replicas_serve_reads_by_offset() {
    let c = Cluster::with_primary(3, FAST);
    let p = &c.nodes[0];
    p.req("PUT", "/v1/topics/orders?ack=quorum", None);
    p.req(
        "PUT",
        "/v1/topics/orders/subscriptions/billing?start=earliest&ack=quorum",
        None,
    );
    let mut token = String::new();
    for i in 0..10 {
        let r = p.req(
            "POST",
            "/v1/topics/orders/messages?ack=quorum",
            Some(&format!(r#"{{"order":{i}}}"#)),
        );
        token = r.header("rcluster-token").unwrap().to_string();
    }
    let pulled = p
        .req(
            "POST",
            "/v1/topics/orders/subscriptions/billing/pull?max=4&ack=quorum",
            None,
        )
        .json();
    assert_eq!(pulled["cursor"], json!(4));
    for n in &c.nodes[1..] {
        let r = n.req_h(
            "GET",
            "/v1/topics/orders/messages?from=2&limit=3&consistency=session",
            None,
            &[("Rcluster-Token", &token)],
        );
        let offsets: Vec<Value> = r.json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["offset"].clone())
            .collect();
        assert_eq!(offsets, vec![json!(2), json!(3), json!(4)]);
    }
    c.wait_converged(&[0, 1, 2]);
    let topics = c.nodes[2]
        .req("GET", "/v1/topics?consistency=eventual", None)
        .json();
    assert_eq!(
        topics["topics"][0]["subscriptions"][0]["cursor"],
        json!(4),
        "the cursor replicates too"
    );
}

#[test]
fn planned_switchover_loses_no_acknowledged_write_even_async() {
    let mut c = Cluster::with_primary(3, FAST);
    // The target lags: async writes are acknowledged by the primary alone.
    c.nodes[1].pause();
    for i in 0..20 {
        assert_eq!(
            put(&c.nodes[0], &format!("sw{i}"), &i.to_string(), "async").status,
            200
        );
    }
    // Stop writes on the primary with a new term; it keeps shipping its log (draining).
    c.term += 1;
    let term = c.term;
    assert_eq!(c.internal(0, "fence", json!({"term": term})).status, 200);
    assert_eq!(
        put(&c.nodes[0], "refused", "1", "async").code(),
        "not_primary"
    );
    let last = c.nodes[0].status()["last_log_index"].as_u64().unwrap();
    c.nodes[1].resume();
    wait_for("the target to catch up with the old primary", || {
        (c.nodes[1].status()["last_log_index"].as_u64() >= Some(last)).then_some(())
    });
    assert_eq!(c.internal(1, "promote", json!({"term": term})).status, 200);
    for i in [0, 2] {
        assert_eq!(
            c.internal(i, "follow", json!({"term": term, "primary": "n2"}))
                .status,
            200
        );
    }
    for i in 0..20 {
        let r = c.nodes[1].req("GET", &format!("/v1/kv/sw{i}"), None);
        assert_eq!(
            r.json()["value"],
            json!(i),
            "acknowledged sw{i} lost in the switchover"
        );
    }
    assert_eq!(put(&c.nodes[1], "after", "1", "all").status, 200);
    c.wait_converged(&[0, 1, 2]);
    assert_eq!(c.nodes[0].status()["entries_discarded"], json!(0));
}

#[test]
fn switchover_requests_are_recorded_for_the_coordinator() {
    let c = Cluster::with_primary(3, FAST);
    let r = c.nodes[0].req("POST", "/v1/switchover", Some(r#"{"to":"n3"}"#));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(c.nodes[0].status()["switchover_request"]["to"], json!("n3"));
    assert_eq!(
        c.nodes[1].req("POST", "/v1/switchover", None).code(),
        "not_primary"
    );
    assert_eq!(
        c.nodes[0]
            .req("POST", "/v1/switchover", Some(r#"{"to":"n9"}"#))
            .status,
        409
    );
    assert_eq!(
        c.nodes[0]
            .req("POST", "/v1/switchover", Some(r#"{"too":"n2"}"#))
            .status,
        400
    );
    let clear = json!({"term": c.term});
    assert_eq!(c.internal(0, "clear-switchover", clear).status, 200);
    assert!(c.nodes[0].status().get("switchover_request").is_none());
}

#[test]
fn an_isolated_primary_fences_itself() {
    let c = Cluster::with_primary(3, &["--ack-timeout-ms", "1000", "--lease-ms", "500"]);
    let p = &c.nodes[0];
    assert_eq!(
        p.req("GET", "/v1/kv/none", None).status,
        404,
        "linearizable reads work while it leads"
    );
    c.nodes[1].pause();
    c.nodes[2].pause();
    // After its lease without a quorum it reports not ready and stops claiming linearizable reads.
    wait_for("the primary to report not ready", || {
        (p.req("GET", "/readyz", None).status == 503).then_some(())
    });
    assert_eq!(p.status()["isolated"], json!(true));
    let r = p.req("GET", "/v1/kv/none", None);
    assert_eq!(
        (r.status, r.code()),
        (503, "unavailable".to_string()),
        "{}",
        r.body
    );
    let w = put(p, "k", "1", "quorum");
    assert_eq!(w.code(), "ack_timeout", "no quorum, no acknowledgement");
    c.nodes[1].resume();
    c.nodes[2].resume();
    wait_for("the primary to be ready again", || {
        (p.req("GET", "/readyz", None).status == 200).then_some(())
    });
    assert_eq!(p.req("GET", "/v1/kv/k", None).json()["value"], json!(1));
}

#[test]
fn an_empty_log_never_overwrites_committed_entries() {
    let mut c = Cluster::with_primary(3, FAST);
    for i in 0..10 {
        assert_eq!(put(&c.nodes[0], &format!("k{i}"), "1", "all").status, 200);
    }
    let before: Vec<Value> = (1..3).map(|i| c.nodes[i].status()).collect();
    // The primary loses its disk and a (wrong) coordinator promotes it anyway.
    c.nodes[0].kill9();
    std::fs::remove_dir_all(&c.nodes[0].dir).unwrap();
    std::fs::create_dir_all(&c.nodes[0].dir).unwrap();
    c.nodes[0].restart();
    c.term += 1;
    let term = c.term;
    assert_eq!(c.internal(0, "promote", json!({"term": term})).status, 200);
    for i in 1..3 {
        assert_eq!(
            c.internal(i, "follow", json!({"term": term, "primary": "n1"}))
                .status,
            200
        );
    }
    // The replicas refuse to discard what they know is committed; the empty node cannot commit.
    assert_eq!(put(&c.nodes[0], "new", "1", "quorum").code(), "ack_timeout");
    wait_for("the refusal to be reported", || {
        c.nodes[0].status()["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| {
                m["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("refusing to discard"))
            })
            .then_some(())
    });
    for (i, b) in (1..3).zip(&before) {
        let s = c.nodes[i].status();
        assert_eq!(
            (s["last_log_index"].clone(), s["digest"].clone()),
            (b["last_log_index"].clone(), b["digest"].clone())
        );
        assert_eq!(s["entries_discarded"], json!(0));
    }
}
