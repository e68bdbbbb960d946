//! The `rcluster` command line against a real `rcluster-node` process.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;
use support::*;

fn version_of(v: &Value) -> u64 {
    v["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in {v}"))
}

#[test]
fn records_put_get_delete_and_cas() {
    let node = Node::start();
    let put = node.rc(&["put", "greeting", "hello"]).ok();
    let line = put.stdout.trim();
    assert!(line.starts_with("put greeting -> version "), "{line}");
    let v1: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();

    let got = node.rc(&["get", "greeting"]).ok();
    assert_eq!(
        got.stdout.trim(),
        format!("greeting = \"hello\" (version {v1})")
    );
    let got = node.rc(&["get", "greeting", "--json"]).ok().json();
    assert_eq!(
        (got["value"].as_str(), version_of(&got)),
        (Some("hello"), v1)
    );

    // JSON values stay JSON; keys with slashes work.
    let put = node
        .rc(&["--json", "put", "users/42", r#"{"name":"Ada","n":[1,2]}"#])
        .ok()
        .json();
    assert_eq!(put["key"], "users/42");
    let got = node
        .rc(&["get", "users/42", "--json", "--consistency", "eventual"])
        .ok()
        .json();
    assert_eq!(got["value"]["n"][1], 2);

    // CAS: a wrong version is a 412 (exit 1, one line), the right one succeeds.
    node.rc(&[
        "put",
        "greeting",
        "x",
        "--if-version",
        &(v1 + 1000).to_string(),
    ])
    .api_error("version_mismatch");
    node.rc(&["put", "greeting", "x", "--if-version", "0"])
        .api_error("version_mismatch");
    let v2 = version_of(
        &node
            .rc(&[
                "put",
                "greeting",
                "bye",
                "--if-version",
                &v1.to_string(),
                "--json",
            ])
            .ok()
            .json(),
    );
    assert!(v2 > v1);

    // TTL shows up as an expiry.
    let ttl = node
        .rc(&["put", "temp", "1", "--ttl", "60", "--json"])
        .ok()
        .json();
    assert!(ttl["expires_at_ms"].as_u64().is_some(), "{ttl}");

    let del = node
        .rc(&["delete", "greeting", "--if-version", &v2.to_string()])
        .ok();
    assert!(
        del.stdout.starts_with("delete greeting -> version "),
        "{del:?}"
    );
    node.rc(&["get", "greeting"]).api_error("not_found");
    node.rc(&["get", "greeting", "--consistency", "session"])
        .api_error("not_found");
}

#[test]
fn incr_with_bounds_and_negative_deltas() {
    let node = Node::start();
    let r = node.rc(&["incr", "stock", "--delta", "5"]).ok();
    assert!(r.stdout.starts_with("incr stock -> 5 (version "), "{r:?}");
    let r = node
        .rc(&["incr", "stock", "--delta", "-3", "--min", "0", "--json"])
        .ok()
        .json();
    assert_eq!(r["value"], 2);
    node.rc(&["incr", "stock", "--delta", "-3", "--min", "0"])
        .api_error("out_of_bounds");
    node.rc(&["incr", "stock", "--max", "2"])
        .api_error("out_of_bounds");
    node.rc(&["put", "word", "abc"]).ok();
    node.rc(&["incr", "word"]).api_error("not_a_number");
    let r = node.rc(&["get", "stock", "--json"]).ok().json();
    assert_eq!(r["value"], 2, "failed increments changed nothing");
}

#[test]
fn idempotency_key_applies_a_write_once() {
    let node = Node::start();
    let args = ["incr", "n", "--idempotency-key", "once-1", "--json"];
    let first = node.rc(&args).ok().json();
    let again = node.rc(&args).ok().json();
    assert_eq!(first, again);
    assert_eq!(node.rc(&["get", "n", "--json"]).ok().json()["value"], 1);
}

#[test]
fn list_pages_and_all() {
    let node = Node::start();
    for k in ["a/1", "a/2", "a/3", "a/4", "a/5", "b/1"] {
        node.rc(&["put", k, k]).ok();
    }
    let page = node.rc(&["list", "--prefix", "a/", "--limit", "2"]).ok();
    let lines: Vec<&str> = page.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{page:?}");
    assert!(lines[0].starts_with("a/1 = \"a/1\""), "{page:?}");
    assert_eq!(lines[2], "(more: --start-after a/2)");

    let page = node
        .rc(&[
            "list",
            "--prefix",
            "a/",
            "--limit",
            "2",
            "--start-after",
            "a/2",
            "--json",
        ])
        .ok()
        .json();
    let keys: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a/3", "a/4"]);
    assert_eq!(page["next"], "a/4");

    let all = node
        .rc(&["list", "--prefix", "a/", "--limit", "2", "--all", "--json"])
        .ok()
        .json();
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
    let all = node.rc(&["list", "--all"]).ok();
    assert_eq!(all.stdout.lines().count(), 6, "{all:?}");
}

#[test]
fn topics_publish_read_subscribe_pull_stream() {
    let node = Node::start();
    let r = node
        .rc(&["topic", "create", "orders", "--max-messages", "100"])
        .ok();
    assert!(r.stdout.starts_with("topic orders created"), "{r:?}");
    let r = node.rc(&["topic", "create", "orders"]).ok();
    assert!(r.stdout.starts_with("topic orders already exists"), "{r:?}");

    let one = node
        .rc(&["topic", "publish", "orders", "first", "--json"])
        .ok()
        .json();
    assert_eq!(one["offset"], 0);
    let batch = node
        .rc(&["topic", "publish", "orders", "2", r#"{"id":3}"#, "four"])
        .ok();
    assert_eq!(batch.stdout.trim(), "published 3 -> offsets 1..=3");

    let read = node
        .rc(&[
            "topic", "read", "orders", "--from", "1", "--limit", "2", "--json",
        ])
        .ok()
        .json();
    let msgs = read["messages"].as_array().unwrap();
    assert_eq!(
        (msgs.len(), msgs[0]["offset"].as_u64(), &msgs[1]["value"]),
        (2, Some(1), &serde_json::json!({"id":3}))
    );
    assert_eq!(read["next_offset"], 4);
    let read = node.rc(&["topic", "read", "orders"]).ok();
    assert!(read.stdout.starts_with("0: \"first\"\n"), "{read:?}");

    let sub = node
        .rc(&["subscribe", "orders", "workers", "--start", "earliest"])
        .ok();
    assert!(sub.stdout.contains("cursor 0"), "{sub:?}");
    let late = node
        .rc(&["subscribe", "orders", "late", "--start", "latest", "--json"])
        .ok()
        .json();
    assert_eq!(late["cursor"], 4);

    let pulled = node
        .rc(&[
            "pull",
            "orders",
            "--subscriber",
            "workers",
            "--max",
            "3",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(pulled["messages"].as_array().unwrap().len(), 3);
    assert_eq!(pulled["cursor"], 3);
    let pulled = node
        .rc(&[
            "pull",
            "orders",
            "--subscriber",
            "workers",
            "--wait-ms",
            "100",
        ])
        .ok();
    assert_eq!(pulled.stdout.trim(), "3: \"four\"\n1 message(s), cursor 4");
    node.rc(&["pull", "orders", "--subscriber", "nobody"])
        .api_error("subscription_not_found");

    let list = node.rc(&["topic", "list", "--json"]).ok().json();
    let t = &list["topics"][0];
    assert_eq!(
        (t["name"].as_str(), t["next_offset"].as_u64()),
        (Some("orders"), Some(4))
    );
    let table = node.rc(&["topic", "list"]).ok();
    assert!(
        table.stdout.contains("workers@4") && table.stdout.contains("late@4"),
        "{table:?}"
    );

    let stream = node
        .rc(&["topic", "stream", "orders", "--from", "0", "--count", "4"])
        .ok();
    assert_eq!(
        stream.stdout.lines().collect::<Vec<_>>(),
        ["0: \"first\"", "1: 2", "2: {\"id\":3}", "3: \"four\""]
    );
    let stream = node
        .rc(&[
            "--json", "topic", "stream", "orders", "--from", "2", "--count", "1",
        ])
        .ok()
        .json();
    assert_eq!(
        (stream["event"].as_str(), stream["data"]["offset"].as_u64()),
        (Some("message"), Some(2))
    );

    let r = node.rc(&["unsubscribe", "orders", "late"]).ok();
    assert_eq!(r.stdout.trim(), "subscription late on orders deleted");
    let r = node.rc(&["topic", "delete", "orders"]).ok();
    assert_eq!(r.stdout.trim(), "topic orders deleted");
    assert_eq!(node.rc(&["topic", "list"]).ok().stdout.trim(), "no topics");
    node.rc(&["topic", "publish", "orders", "x"])
        .api_error("topic_not_found");
}

#[test]
fn watch_prints_changes_as_they_commit() {
    let node = Node::start();
    let watcher = command(&[
        "--endpoint",
        &node.url,
        "--json",
        "watch",
        "--prefix",
        "w/",
        "--count",
        "2",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("watch starts");
    let mut watcher = KillOnDrop(watcher);
    // The watch sees changes from when it connects: keep writing until it has seen two.
    let deadline = Instant::now() + CLI_DEADLINE;
    let mut i = 0;
    while watcher.0.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "watch did not report two changes"
        );
        node.rc(&["put", &format!("w/{i}"), &i.to_string()]).ok();
        node.rc(&["put", "other", "ignored"]).ok();
        i += 1;
    }
    let out = watcher
        .0
        .stdout
        .take()
        .map(std::io::read_to_string)
        .unwrap()
        .unwrap();
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{out}");
    for e in &events {
        assert_eq!(e["event"], "put");
        assert!(e["data"]["key"].as_str().unwrap().starts_with("w/"), "{e}");
        assert_eq!(
            e["id"].as_str().map(|s| s.parse::<u64>().unwrap()),
            e["data"]["version"].as_u64()
        );
    }
}

#[test]
fn status_human_and_json_and_env_endpoints() {
    let node = Node::start();
    let text = node.rc(&["status"]).ok();
    assert!(
        text.stdout.contains("role: ") && text.stdout.contains("term: "),
        "{text:?}"
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rcluster"));
    cmd.args(["status", "--json"]).env(
        "RCLUSTER_ENDPOINTS",
        format!("http://127.0.0.1:1,{}", node.url),
    );
    let status = run(cmd).ok().json();
    assert!(
        status["role"].is_string() && status["term"].is_u64(),
        "{status}"
    );
    assert_eq!(status["ready"], true);
}

#[test]
fn exit_codes_for_usage_and_unreachable() {
    let r = rcluster(&["put", "k"]);
    assert_eq!(r.code, 2, "{r:?}");
    let r = rcluster(&["incr", "k", "--delta", "many"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(rcluster(&["--help"]).ok().code, 0);
    let r = rcluster(&["--endpoint", "not-a-url", "status"]);
    assert_eq!(r.code, 2, "{r:?}");

    // A port nobody listens on: exit 3 within the retry budget, one line on stderr.
    let (_held, addr) = refusing_addr();
    let url = format!("http://{addr}");
    for args in [
        &["status"][..],
        &["put", "k", "v"],
        &["topic", "stream", "t"],
    ] {
        let mut all = vec!["--endpoint", url.as_str()];
        all.extend_from_slice(args);
        let r = rcluster(&all);
        assert_eq!(r.code, 3, "{r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
        assert!(
            r.stderr.starts_with("error: could not reach the cluster"),
            "{r:?}"
        );
    }
}

fn check_summary(s: &Value) {
    let n = |f: &str| {
        s[f].as_u64()
            .unwrap_or_else(|| panic!("{f} missing in {s}"))
    };
    assert_eq!(n("count"), n("ok") + n("errors"), "{s}");
    assert!(s["throughput"].as_f64().unwrap() > 0.0, "{s}");
    assert!(
        n("p50_us") <= n("p90_us") && n("p90_us") <= n("p99_us") && n("p99_us") <= n("max_us"),
        "{s}"
    );
    assert!(n("p50_us") > 0, "{s}");
}

#[test]
fn bench_reports_per_api_latency_and_throughput() {
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.json");
    let file_arg = file.to_str().unwrap();
    let r = node
        .rc(&[
            "bench",
            "--concurrency",
            "2",
            "--requests",
            "200",
            "--mix",
            "put=50,get=50",
            "--keys",
            "50",
            "--value-size",
            "64",
            "--output",
            file_arg,
        ])
        .ok();
    assert!(r.stdout.contains("p99"), "{r:?}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(&file)).unwrap()).unwrap();
    assert_eq!(report["total"]["count"], 200, "{report}");
    assert_eq!(report["total"]["errors"], 0, "{report}");
    let apis: Vec<&str> = report["apis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["api"].as_str().unwrap())
        .collect();
    assert_eq!(apis, ["put", "get"]);
    for s in report["apis"].as_array().unwrap() {
        check_summary(s);
    }
    check_summary(&report["total"]);
    assert_eq!(report["config"]["concurrency"], 2);
    assert!(report["elapsed_secs"].as_f64().unwrap() > 0.0);

    // Topic APIs, duration-bounded, report on stdout.
    let r = node
        .rc(&[
            "--json",
            "bench",
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--mix",
            "publish=1,pull=1,incr=1",
        ])
        .ok()
        .json();
    assert_eq!(r["total"]["errors"], 0, "{r}");
    assert_eq!(r["apis"].as_array().unwrap().len(), 3, "{r}");
    check_summary(&r["total"]);
}

#[test]
fn write_to_a_silent_server_reports_outcome_unknown() {
    // Accepts connections and never answers: each attempt may have been applied.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(64) {
            held.push(conn);
        }
    });
    let r = rcluster(&["--endpoint", &url, "--timeout", "0.2", "put", "k", "v"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(
        r.stderr
            .starts_with("error: outcome unknown (idempotency key "),
        "{r:?}"
    );
    // A read against it is merely unreachable.
    let r = rcluster(&["--endpoint", &url, "--timeout", "0.2", "get", "k"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.starts_with("error: could not reach the cluster"),
        "{r:?}"
    );
}
