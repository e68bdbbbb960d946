//! Every client API of one node, with its error cases and limits, against a real process.

mod common;
use common::*;
use serde_json::{Value, json};

fn node(extra: &[&str]) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path(), extra);
    (dir, n)
}

#[test]
fn records_put_get_cas_delete_and_tokens() {
    let (_d, n) = node(&[]);
    let r = n.req(
        "PUT",
        "/v1/kv/users/42",
        Some(r#"{"name":"ann","tags":[1,2]}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v1 = r.json()["version"].as_u64().unwrap();
    assert_eq!(r.header("rcluster-token").unwrap(), v1.to_string());

    let g = n.req("GET", "/v1/kv/users/42", None).json();
    let t = g["created_ms"].clone();
    assert!(t.as_u64().is_some_and(|t| t > 0), "{g}");
    assert_eq!(
        g,
        json!({"key":"users/42","value":{"name":"ann","tags":[1,2]},"version":v1,
            "created_ms":t,"modified_ms":t})
    );
    for c in ["linearizable", "session", "eventual"] {
        let g = n.req("GET", &format!("/v1/kv/users/42?consistency={c}"), None);
        assert_eq!(g.json()["version"], json!(v1), "{c}");
    }
    // Percent-encoded keys decode to the same key.
    assert_eq!(n.req("GET", "/v1/kv/users%2F42", None).status, 200);

    // Compare-and-set: 0 means "must not exist".
    let r = n.req("PUT", "/v1/kv/users/42?if_version=0", Some("1"));
    assert_eq!((r.status, r.code()), (412, "version_mismatch".into()));
    let r = n.req(
        "PUT",
        &format!("/v1/kv/users/42?if_version={v1}"),
        Some(r#""v2""#),
    );
    assert_eq!(r.status, 200);
    let v2 = r.json()["version"].as_u64().unwrap();
    assert!(v2 > v1);
    let r = n.req(
        "PUT",
        &format!("/v1/kv/users/42?if_version={v1}"),
        Some(r#""v3""#),
    );
    assert_eq!(r.status, 412, "a stale version never wins");
    assert_eq!(
        n.req("PUT", "/v1/kv/fresh?if_version=0", Some("true"))
            .status,
        200
    );

    let r = n.req("DELETE", &format!("/v1/kv/users/42?if_version={v1}"), None);
    assert_eq!(r.status, 412);
    let r = n.req("DELETE", &format!("/v1/kv/users/42?if_version={v2}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(n.req("GET", "/v1/kv/users/42", None).code(), "not_found");
    assert_eq!(n.req("DELETE", "/v1/kv/users/42", None).status, 404);

    // Session reads with a token from the future wait, then answer 503 instead of a stale value.
    let r = n.req_h(
        "GET",
        "/v1/kv/fresh?consistency=session",
        None,
        &[("Rcluster-Token", "999999")],
    );
    assert_eq!((r.status, r.code()), (503, "not_ready".into()));
}

#[test]
fn incr_is_bounded() {
    let (_d, n) = node(&[]);
    let r = n.req("POST", "/v1/kv/stock/incr", Some(r#"{"delta":3}"#));
    assert_eq!(r.json()["value"], json!(3));
    let r = n.req("POST", "/v1/kv/stock/incr", Some(r#"{"delta":-1,"min":0}"#));
    assert_eq!(r.json()["value"], json!(2));
    let r = n.req("POST", "/v1/kv/stock/incr", Some(r#"{"delta":-3,"min":0}"#));
    assert_eq!((r.status, r.code()), (409, "out_of_bounds".into()));
    assert_eq!(n.req("GET", "/v1/kv/stock", None).json()["value"], json!(2));
    let r = n.req("POST", "/v1/kv/stock/incr", Some(r#"{"delta":9,"max":10}"#));
    assert_eq!(r.status, 409);
    assert_eq!(
        n.req("POST", "/v1/kv/stock/incr", None).json()["value"],
        json!(3),
        "default delta 1"
    );
    n.req("PUT", "/v1/kv/name", Some(r#""ann""#));
    assert_eq!(
        n.req("POST", "/v1/kv/name/incr", Some("{}")).code(),
        "not_a_number"
    );
    assert_eq!(
        n.req("POST", "/v1/kv/x/incr", Some(r#"{"delta":"a"}"#))
            .code(),
        "invalid_json"
    );
    assert_eq!(
        n.req(
            "POST",
            "/v1/kv/x/incr",
            Some(r#"{"delta":1,"min":5,"max":1}"#)
        )
        .status,
        400
    );
    assert_eq!(
        n.req("POST", "/v1/kv/x/incr", Some(r#"{"delta":1,"bogus":1}"#))
            .status,
        400
    );
}

#[test]
fn list_pages_through_a_prefix() {
    let (_d, n) = node(&[]);
    for i in 0..25 {
        assert_eq!(
            n.req("PUT", &format!("/v1/kv/p/{i:02}"), Some(&i.to_string()))
                .status,
            200
        );
    }
    n.req("PUT", "/v1/kv/q/0", Some("0"));
    let mut keys = Vec::new();
    let mut after = String::new();
    loop {
        let page = n
            .req(
                "GET",
                &format!("/v1/kv?prefix=p/&limit=10&start_after={after}"),
                None,
            )
            .json();
        for item in page["items"].as_array().unwrap() {
            keys.push(item["key"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(k) => after = k.to_string(),
            None => break,
        }
    }
    assert_eq!(
        keys,
        (0..25).map(|i| format!("p/{i:02}")).collect::<Vec<_>>()
    );
    assert_eq!(n.req("GET", "/v1/kv?limit=0", None).status, 413);
    assert_eq!(
        n.req("GET", "/v1/kv?limit=5000", None).code(),
        "batch_too_large"
    );
    assert_eq!(
        n.req("GET", "/v1/kv?limit=abc", None).code(),
        "invalid_parameter"
    );
}

#[test]
fn topics_publish_subscribe_pull_read() {
    let (_d, n) = node(&[]);
    let r = n.req("PUT", "/v1/topics/news", Some(r#"{"max_messages":1000}"#));
    assert_eq!(r.json()["created"], json!(true));
    assert_eq!(
        n.req("PUT", "/v1/topics/news", Some(r#"{"max_messages":1000}"#))
            .json()["created"],
        json!(false)
    );
    assert_eq!(
        n.req(
            "PUT",
            "/v1/topics/news/subscriptions/s1?start=earliest",
            None
        )
        .status,
        200
    );
    for i in 0..5 {
        let r = n.req(
            "POST",
            "/v1/topics/news/messages",
            Some(&format!(r#"{{"n":{i}}}"#)),
        );
        assert_eq!(r.json()["offset"], json!(i));
    }
    let r = n.req(
        "POST",
        "/v1/topics/news/messages?batch=true",
        Some("[5,6,7]"),
    );
    assert_eq!(r.json()["offsets"], json!([5, 6, 7]));
    // `latest` starts after everything published so far.
    assert_eq!(
        n.req("PUT", "/v1/topics/news/subscriptions/late", None)
            .json()["cursor"],
        json!(8)
    );
    assert_eq!(
        n.req("PUT", "/v1/topics/news/subscriptions/at3?start=3", None)
            .json()["cursor"],
        json!(3)
    );

    let p = n
        .req("POST", "/v1/topics/news/subscriptions/s1/pull?max=3", None)
        .json();
    let offsets: Vec<u64> = p["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![0, 1, 2]);
    assert_eq!(p["messages"][1]["value"], json!({"n":1}));
    let p = n
        .req(
            "POST",
            "/v1/topics/news/subscriptions/s1/pull?max=100",
            None,
        )
        .json();
    assert_eq!(p["messages"].as_array().unwrap().len(), 5);
    assert_eq!(p["cursor"], json!(8));
    let p = n
        .req("POST", "/v1/topics/news/subscriptions/s1/pull", None)
        .json();
    assert_eq!(p["messages"], json!([]));

    // A long poll returns as soon as a message is published.
    let addr = n.addr.clone();
    let waiter = std::thread::spawn(move || {
        http(
            &addr,
            "POST",
            "/v1/topics/news/subscriptions/s1/pull?wait_ms=20000",
            None,
            &[],
        )
        .json()
    });
    wait_for("the long poll to be waiting", || {
        let m = n.req("GET", "/metrics", None).body;
        m.contains("rcluster_requests_in_flight{api=\"pull\"} 1")
            .then_some(())
    });
    n.req("POST", "/v1/topics/news/messages", Some(r#""late""#));
    let got = waiter.join().unwrap();
    assert_eq!(got["messages"][0]["value"], json!("late"));

    let r = n
        .req("GET", "/v1/topics/news/messages?from=6&limit=2", None)
        .json();
    assert_eq!(
        r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["offset"].clone())
            .collect::<Vec<_>>(),
        vec![json!(6), json!(7)]
    );
    assert_eq!(
        (r["next_offset"].clone(), r["end_offset"].clone()),
        (json!(8), json!(9)),
        "the next page, and where the topic ends"
    );

    let list = n.req("GET", "/v1/topics", None).json();
    let t = &list["topics"][0];
    assert_eq!(t["name"], json!("news"));
    assert_eq!(t["subscriptions"].as_array().unwrap().len(), 3);

    assert_eq!(
        n.req("DELETE", "/v1/topics/news/subscriptions/late", None)
            .status,
        200
    );
    assert_eq!(
        n.req("DELETE", "/v1/topics/news/subscriptions/late", None)
            .code(),
        "subscription_not_found"
    );
    assert_eq!(
        n.req("POST", "/v1/topics/news/subscriptions/nobody/pull", None)
            .code(),
        "subscription_not_found"
    );
    assert_eq!(n.req("DELETE", "/v1/topics/news", None).status, 200);
    assert_eq!(
        n.req("POST", "/v1/topics/news/messages", Some("1")).code(),
        "topic_not_found"
    );
    assert_eq!(
        n.req("GET", "/v1/topics/news/messages", None).code(),
        "topic_not_found"
    );
    assert_eq!(
        n.req("PUT", "/v1/topics/news/subscriptions/x", None).code(),
        "topic_not_found"
    );
}

#[test]
fn retention_by_count_and_age() {
    let (_d, n) = node(&[]);
    n.req("PUT", "/v1/topics/short", Some(r#"{"max_messages":3}"#));
    for i in 0..10 {
        n.req("POST", "/v1/topics/short/messages", Some(&i.to_string()));
    }
    let r = n.req("GET", "/v1/topics/short/messages", None).json();
    assert_eq!(
        (r["first_offset"].clone(), r["next_offset"].clone()),
        (json!(7), json!(10))
    );
    n.req("PUT", "/v1/topics/aging", Some(r#"{"max_age_secs":1}"#));
    n.req("POST", "/v1/topics/aging/messages", Some("1"));
    // The primary trims aged messages through the log.
    wait_for("age retention", || {
        let r = n.req("GET", "/v1/topics/aging/messages", None).json();
        (r["first_offset"] == json!(1)).then_some(())
    });
}

#[test]
fn streams_push_committed_changes_in_order() {
    let (_d, n) = node(&[]);
    n.req("PUT", "/v1/topics/feed", None);
    n.req("POST", "/v1/topics/feed/messages", Some(r#""before""#));
    let topic = sse_events(&n.addr, "/v1/topics/feed/stream?from=0", 3);
    let watch = sse_events(&n.addr, "/v1/watch?prefix=w/", 4);
    n.req("POST", "/v1/topics/feed/messages", Some(r#""a""#));
    n.req("PUT", "/v1/kv/other", Some("0"));
    n.req("PUT", "/v1/kv/w/1", Some(r#"{"x":1}"#));
    n.req("POST", "/v1/topics/feed/messages", Some(r#""b""#));
    n.req("POST", "/v1/kv/w/2/incr", Some(r#"{"delta":2}"#));
    n.req("DELETE", "/v1/kv/w/1", None);
    let got: Vec<_> = (0..3)
        .map(|_| topic.recv_timeout(DEADLINE).unwrap())
        .collect();
    let values: Vec<Value> = got
        .iter()
        .map(|(_, _, d)| serde_json::from_str::<Value>(d).unwrap()["value"].clone())
        .collect();
    assert_eq!(values, vec![json!("before"), json!("a"), json!("b")]);
    assert_eq!(
        got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
        ["0", "1", "2"]
    );
    // The watch opens with its position (`progress`), then the changes.
    let opened = watch.recv_timeout(DEADLINE).unwrap();
    assert_eq!(opened.0, "progress");
    let changes: Vec<_> = (0..3)
        .map(|_| watch.recv_timeout(DEADLINE).unwrap())
        .collect();
    let kinds: Vec<_> = changes
        .iter()
        .map(|(e, _, d)| {
            (
                e.clone(),
                serde_json::from_str::<Value>(d).unwrap()["key"].clone(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("put".into(), json!("w/1")),
            ("put".into(), json!("w/2")),
            ("delete".into(), json!("w/1"))
        ]
    );
    assert_eq!(n.req("GET", "/v1/topics/missing/stream", None).status, 404);
}

#[test]
fn idempotency_key_returns_the_first_result() {
    let (_d, n) = node(&[]);
    let h = [("Idempotency-Key", "buy-1")];
    let a = n.req_h("POST", "/v1/kv/stock/incr", Some(r#"{"delta":1}"#), &h);
    let b = n.req_h("POST", "/v1/kv/stock/incr", Some(r#"{"delta":1}"#), &h);
    assert_eq!(a.body, b.body);
    assert_eq!(
        n.req("GET", "/v1/kv/stock", None).json()["value"],
        json!(1),
        "applied once"
    );
    let c = n.req_h("POST", "/v1/kv/stock/incr", Some(r#"{"delta":5}"#), &h);
    assert_eq!((c.status, c.code()), (409, "idempotency_key_reused".into()));
    let long = "k".repeat(300);
    assert_eq!(
        n.req_h("PUT", "/v1/kv/a", Some("1"), &[("Idempotency-Key", &long)])
            .status,
        400
    );
}

#[test]
fn ttl_records_expire_and_are_purged() {
    let (_d, n) = node(&[]);
    let r = n.req("PUT", "/v1/kv/session?ttl=0.5", Some(r#""tok""#));
    let expires = r.json()["expires_at_ms"].as_u64().unwrap();
    assert!(expires > 0);
    n.req("PUT", "/v1/kv/keep", Some("1"));
    wait_for("expiry", || {
        (n.req("GET", "/v1/kv/session", None).status == 404).then_some(())
    });
    let list = n.req("GET", "/v1/kv", None).json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // Purging goes through the log: the record count drops once the expire entry is applied.
    wait_for("purge", || {
        (n.req("GET", "/v1/status", None).json()["records"] == json!(1)).then_some(())
    });
    for bad in ["0", "-1", "abc", "1e12"] {
        assert_eq!(
            n.req("PUT", &format!("/v1/kv/t?ttl={bad}"), Some("1"))
                .code(),
            "invalid_parameter",
            "ttl={bad}"
        );
    }
}

#[test]
fn bad_input_gets_json_errors_and_changes_nothing() {
    let (_d, n) = node(&[
        "--max-key-bytes",
        "16",
        "--max-value-bytes",
        "64",
        "--max-body-bytes",
        "256",
        "--max-batch",
        "4",
    ]);
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        (
            "PUT",
            "/v1/kv/k".into(),
            Some("{not json".into()),
            400,
            "invalid_json",
        ),
        (
            "PUT",
            "/v1/kv/k".into(),
            Some("".into()),
            400,
            "invalid_json",
        ),
        (
            "PUT",
            "/v1/kv/k".into(),
            Some("1 2".into()),
            400,
            "invalid_json",
        ),
        (
            "PUT",
            "/v1/kv/k".into(),
            Some(format!("\"{}\"", "x".repeat(100))),
            413,
            "value_too_large",
        ),
        (
            "PUT",
            "/v1/kv/k".into(),
            Some("x".repeat(300)),
            413,
            "body_too_large",
        ),
        (
            "PUT",
            format!("/v1/kv/{}", "k".repeat(17)),
            Some("1".into()),
            413,
            "key_too_long",
        ),
        (
            "PUT",
            "/v1/kv/a%01b".into(),
            Some("1".into()),
            400,
            "invalid_key",
        ),
        (
            "PUT",
            "/v1/kv/%ff".into(),
            Some("1".into()),
            400,
            "invalid_key",
        ),
        (
            "PUT",
            "/v1/kv/k?if_version=-1".into(),
            Some("1".into()),
            400,
            "invalid_parameter",
        ),
        (
            "PUT",
            "/v1/kv/k?ack=most".into(),
            Some("1".into()),
            400,
            "invalid_parameter",
        ),
        (
            "GET",
            "/v1/kv/k?consistency=strong".into(),
            None,
            400,
            "invalid_parameter",
        ),
        (
            "PUT",
            "/v1/topics/bad%20name".into(),
            None,
            400,
            "invalid_name",
        ),
        (
            "PUT",
            "/v1/topics/t".into(),
            Some(r#"{"max_messages":0}"#.into()),
            400,
            "invalid_parameter",
        ),
        (
            "PUT",
            "/v1/topics/t".into(),
            Some(r#"{"max_mesages":1}"#.into()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/topics/t/messages?batch=true".into(),
            Some("[1,2,3,4,5]".into()),
            413,
            "batch_too_large",
        ),
        (
            "POST",
            "/v1/topics/t/messages?batch=true".into(),
            Some("{}".into()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/topics/t/subscriptions/s/pull?max=5".into(),
            None,
            413,
            "batch_too_large",
        ),
        (
            "POST",
            "/v1/topics/t/subscriptions/s/pull?wait_ms=99999".into(),
            None,
            400,
            "invalid_parameter",
        ),
        (
            "PUT",
            "/v1/topics/t/subscriptions/s?start=middle".into(),
            None,
            400,
            "invalid_parameter",
        ),
        ("GET", "/v2/anything".into(), None, 404, "route_not_found"),
        ("PATCH", "/v1/kv/k".into(), None, 405, "method_not_allowed"),
        ("POST", "/v1/topics".into(), None, 405, "method_not_allowed"),
        (
            "DELETE",
            "/v1/status".into(),
            None,
            405,
            "method_not_allowed",
        ),
    ];
    for (m, path, body, status, code) in &cases {
        let r = n.req(m, path, body.as_deref());
        assert_eq!(
            (r.status, r.code().as_str()),
            (*status, *code),
            "{m} {path}: {}",
            r.body
        );
    }
    let s = n.req("GET", "/v1/status", None).json();
    assert_eq!(
        (
            s["records"].clone(),
            s["topics"].clone(),
            s["last_log_index"].clone()
        ),
        (json!(0), json!(0), json!(0))
    );
    // A batch with one oversized message is refused whole.
    n.req("PUT", "/v1/topics/t", None);
    let big = format!("[1,\"{}\"]", "y".repeat(80));
    assert_eq!(
        n.req("POST", "/v1/topics/t/messages?batch=true", Some(&big))
            .code(),
        "value_too_large"
    );
    assert_eq!(
        n.req("GET", "/v1/topics/t/messages", None).json()["next_offset"],
        json!(0)
    );
    // Raw garbage on the socket does not hurt the node.
    let _ = try_http(&n.addr, "GET\0\u{7f}", "/", Some(b"\xff\xfe"), &[]);
    assert_eq!(n.req("GET", "/livez", None).status, 200);
}

#[test]
fn status_health_and_metrics() {
    let (_d, n) = node(&[]);
    n.req("PUT", "/v1/kv/a", Some("1"));
    n.req("GET", "/v1/kv/a", None);
    n.req("GET", "/v1/kv/missing", None);
    assert_eq!(n.req("GET", "/livez", None).json(), json!({"status":"ok"}));
    assert_eq!(n.req("GET", "/readyz", None).status, 200);
    let s = n.req("GET", "/v1/status?digest=true", None).json();
    assert_eq!(s["role"], json!("standalone"));
    assert_eq!(s["applied_index"], json!(1));
    assert_eq!(s["digest"].as_str().unwrap().len(), 16);
    let m = n.req("GET", "/metrics", None).body;
    for line in [
        "rcluster_requests_total{api=\"put\",outcome=\"ok\"} 1",
        "rcluster_requests_total{api=\"get\",outcome=\"not_found\"} 1",
        "rcluster_request_duration_seconds_count{api=\"get\"} 2",
        "rcluster_log_last_index 1",
        "rcluster_commit_index 1",
        "rcluster_records 1",
        "rcluster_role{role=\"standalone\"} 1",
    ] {
        assert!(m.contains(line), "metrics lack {line:?}:\n{m}");
    }
    for name in [
        "rcluster_wal_fsync_duration_seconds_count",
        "rcluster_wal_fsync_batch_entries_count",
        "rcluster_snapshots_total",
        "rcluster_commit_index",
    ] {
        assert!(m.contains(name), "metrics lack {name}");
    }
}
