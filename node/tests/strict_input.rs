//! Strict input: the node stores only JSON every client can read back, answers every error from
//! its HTTP layer in the JSON error shape, and refuses what it would otherwise silently change
//! (unknown parameters, overflowing numbers, fragments, offsets past the end).

mod common;
mod rawhttp;

use common::*;
use rawhttp::*;
use serde_json::json;

fn node(extra: &[&str]) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path(), extra);
    (dir, n)
}

/// The documented nesting limit of stored values.
const MAX_DEPTH: usize = 64;

fn nested(depth: usize) -> String {
    // Alternate arrays and objects so both kinds count.
    let mut s = String::from("1");
    for i in 0..depth {
        s = if i % 2 == 0 {
            format!("[{s}]")
        } else {
            format!("{{\"k\":{s}}}")
        };
    }
    s
}

#[test]
fn values_a_client_cannot_parse_are_refused() {
    let (_d, n) = node(&[]);
    assert_eq!(n.req("PUT", "/v1/topics/t", None).status, 200);
    let bad: Vec<(String, &str)> = vec![
        ("[".repeat(100_000) + &"]".repeat(100_000), "json_too_deep"),
        (nested(MAX_DEPTH + 1), "json_too_deep"),
        ("1e999999".into(), "invalid_json"),
        ("[-1e400]".into(), "invalid_json"),
        (r#""\ud800""#.into(), "invalid_json"),
        (r#"{"a":"x\udc00y"}"#.into(), "invalid_json"),
        (r#"{"\ud800":1}"#.into(), "invalid_json"),
    ];
    for (value, code) in &bad {
        let short = &value[..value.len().min(40)];
        for path in ["/v1/kv/bad", "/v1/kv/bad?if_version=0"] {
            let r = n.req("PUT", path, Some(value));
            assert_eq!((r.status, r.code().as_str()), (400, *code), "PUT {short}");
        }
        let r = n.req("POST", "/v1/topics/t/messages", Some(value));
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, *code),
            "publish {short}"
        );
        let batch = format!("[1,{value},2]");
        let r = n.req("POST", "/v1/topics/t/messages?batch=true", Some(&batch));
        assert_eq!((r.status, r.code().as_str()), (400, *code), "batch {short}");
    }
    assert_eq!(n.req("GET", "/v1/kv/bad", None).status, 404);
    let read = n.req("GET", "/v1/topics/t/messages", None).json();
    assert_eq!(read["next_offset"], json!(0), "nothing was published");
}

// Values at these limits round-trip through the client and the CLI: see
// `cli/tests/cli.rs::values_at_the_limits_round_trip_through_the_cli`.

#[test]
fn errors_of_the_http_layer_are_json() {
    let (_d, n) = node(&[]);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400, "bad_request"),
        (
            b"GET /v1/status HTTP/9.9\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            b"G@T /v1/status HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            b"GET /v1/status HTTP/1.1\r\nno colon here\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            format!(
                "GET /v1/kv/{} HTTP/1.1\r\nConnection: close\r\n\r\n",
                "a".repeat(10_000)
            )
            .into_bytes(),
            414,
            "uri_too_long",
        ),
        (
            format!("GET /v1/kv/{} HTTP/1.1\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
            "uri_too_long",
        ),
        (
            format!(
                "GET /v1/status HTTP/1.1\r\n{}\r\n",
                (0..200)
                    .map(|i| format!("x-h{i}: 1\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            format!(
                "GET /v1/status HTTP/1.1\r\nx-big: {}\r\n\r\n",
                "b".repeat(600_000)
            )
            .into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            b"BREW /v1/status HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            405,
            "method_not_allowed",
        ),
        (
            b"GET /v1/kv/a#frag HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            400,
            "invalid_path",
        ),
    ];
    for (bytes, status, code) in cases {
        let r = raw(&n.addr, &bytes);
        let line = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{line:?}: {r:?}"
        );
        assert_eq!((r.status, r.code().as_str()), (status, code), "{line:?}");
    }
    assert_eq!(n.req("GET", "/livez", None).status, 200);
}

#[test]
fn unknown_and_repeated_parameters_are_refused_everywhere() {
    let (_d, n) = node(&[]);
    n.req("PUT", "/v1/topics/t", None);
    n.req("PUT", "/v1/topics/t/subscriptions/s", None);
    let routes = [
        ("PUT", "/v1/kv/a", Some("1")),
        ("GET", "/v1/kv/a", None),
        ("DELETE", "/v1/kv/a", None),
        ("POST", "/v1/kv/a/incr", None),
        ("GET", "/v1/kv", None),
        ("GET", "/v1/topics", None),
        ("PUT", "/v1/topics/u", None),
        ("DELETE", "/v1/topics/u", None),
        ("POST", "/v1/topics/t/messages", Some("1")),
        ("GET", "/v1/topics/t/messages", None),
        ("GET", "/v1/topics/t/stream", None),
        ("PUT", "/v1/topics/t/subscriptions/s2", None),
        ("DELETE", "/v1/topics/t/subscriptions/s2", None),
        ("POST", "/v1/topics/t/subscriptions/s/pull", None),
        ("GET", "/v1/watch", None),
        ("GET", "/v1/status", None),
        ("POST", "/v1/switchover", None),
        ("GET", "/livez", None),
        ("GET", "/readyz", None),
        ("GET", "/metrics", None),
    ];
    for (m, path, body) in routes {
        let r = n.req(m, &format!("{path}?tll=60"), body);
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_parameter"),
            "{m} {path}: {}",
            r.body
        );
    }
    // `?tll=60` must not store a record without its TTL.
    assert_eq!(n.req("GET", "/v1/kv/a", None).status, 404);
    let r = n.req("PUT", "/v1/kv/a?ttl=60&ttl=1", Some("1"));
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_parameter"));
    let s = n.req("GET", "/v1/status", None).json();
    assert_eq!(s["records"], json!(0));
    assert_eq!(s["topics"], json!(1));
}

#[test]
fn numbers_and_offsets_out_of_range_are_refused_not_clamped() {
    let (_d, n) = node(&[]);
    let r = n.req(
        "PUT",
        "/v1/topics/t",
        Some(r#"{"max_age_secs":18446744073709551615}"#),
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "invalid_parameter"),
        "{}",
        r.body
    );
    assert_eq!(n.req("GET", "/v1/topics", None).json()["topics"], json!([]));
    for path in [
        "/v1/kv/a?ttl=1e400",
        "/v1/kv/a?if_version=18446744073709551616",
        "/v1/kv/a?ttl=NaN",
    ] {
        let r = n.req("PUT", path, Some("1"));
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_parameter"),
            "{path}"
        );
    }
    let r = n.req(
        "POST",
        "/v1/kv/a/incr",
        Some(r#"{"delta":9223372036854775808}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    assert_eq!(n.req("PUT", "/v1/topics/t", None).status, 200);
    for v in 0..3 {
        n.req("POST", "/v1/topics/t/messages", Some(&v.to_string()));
    }
    let r = n.req("PUT", "/v1/topics/t/subscriptions/late?start=4", None);
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "offset_out_of_range"),
        "{}",
        r.body
    );
    let r = n.req("PUT", "/v1/topics/t/subscriptions/end?start=3", None);
    assert_eq!(
        r.json()["cursor"],
        json!(3),
        "the next offset is a valid start"
    );
    let subs = &n.req("GET", "/v1/topics", None).json()["topics"][0]["subscriptions"];
    assert_eq!(subs, &json!([{"name":"end","cursor":3}]));
}

#[test]
fn read_and_stream_agree_on_a_bad_topic_name() {
    let (_d, n) = node(&[]);
    for path in [
        "/v1/topics/bad%20name/messages",
        "/v1/topics/bad%20name/stream",
    ] {
        let r = n.req("GET", path, None);
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_name"),
            "{path}"
        );
    }
    for path in ["/v1/topics/missing/messages", "/v1/topics/missing/stream"] {
        let r = n.req("GET", path, None);
        assert_eq!(
            (r.status, r.code().as_str()),
            (404, "topic_not_found"),
            "{path}"
        );
    }
}

#[test]
fn head_answers_like_get_without_a_body() {
    let (_d, n) = node(&[]);
    n.req("PUT", "/v1/kv/a", Some(r#"{"x":1}"#));
    for path in ["/v1/kv/a", "/v1/status", "/livez", "/v1/kv?prefix=a"] {
        let get = n.req("GET", path, None);
        let head = raw(
            &n.addr,
            format!("HEAD {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(head.status, get.status, "{path}");
        assert_eq!(head.body, "", "{path}");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
        if path != "/v1/status" {
            assert_eq!(
                head.header("content-length"),
                get.header("content-length"),
                "{path}"
            );
        }
    }
    let r = raw(
        &n.addr,
        b"HEAD /v1/switchover HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

#[test]
fn internal_commands_with_a_stale_term_are_refused() {
    let mut c = Cluster::start(2, &[]);
    c.elect(0);
    c.elect(0);
    for op in ["hello", "clear-switchover", "fence"] {
        let r = c.internal(0, op, json!({"term": 1}));
        assert_eq!(
            (r.status, r.code().as_str()),
            (409, "stale_term"),
            "{op}: {}",
            r.body
        );
    }
    let r = c.internal(0, "clear-switchover", json!({}));
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "invalid_json"),
        "{}",
        r.body
    );
    let r = c.internal(0, "clear-switchover", json!({"term": 2}));
    assert_eq!(r.status, 200, "{}", r.body);
}
