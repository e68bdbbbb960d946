//! The `rcluster` command line against a real `rcluster-node` process: every command, its text
//! and JSON output, its errors and exit codes.

mod support;

use std::process::Stdio;
use std::time::Instant;

use serde_json::{Value, json};
use support::*;

fn version_of(v: &Value) -> u64 {
    v["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in {v}"))
}

#[test]
fn records_put_get_delete_and_cas() {
    let node = Node::start();
    let put = node.rc(&["put", "greeting", "\"hello\""]).ok();
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
        "1",
        "--if-version",
        &(v1 + 1000).to_string(),
    ])
    .api_error("version_mismatch");
    node.rc(&["put", "greeting", "1", "--if-version", "0"])
        .api_error("version_mismatch");
    let v2 = version_of(
        &node
            .rc(&[
                "put",
                "greeting",
                "bye",
                "--string",
                "--if-version",
                &v1.to_string(),
                "--json",
            ])
            .ok()
            .json(),
    );
    assert!(v2 > v1);

    // TTL shows up as an expiry: raw milliseconds in JSON, a readable time otherwise.
    let ttl = node
        .rc(&["put", "temp", "1", "--ttl", "60", "--json"])
        .ok()
        .json();
    assert!(ttl["expires_at_ms"].as_u64().is_some(), "{ttl}");
    let got = node.rc(&["get", "temp"]).ok();
    assert!(
        got.stdout.contains(" UTC (in 5") || got.stdout.contains(" UTC (in 6"),
        "a readable expiry in about a minute: {got:?}"
    );
    assert!(!got.stdout.contains("expires_at_ms"), "{got:?}");

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
fn txn_from_a_file_runs_one_branch() {
    let node = Node::start();
    node.rc(&["put", "{p}/stock", "1"]).ok();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("buy.json");
    let body = r#"{"compare":[{"key":"{p}/stock","min":1}],
        "success":[{"op":"incr","key":"{p}/stock","delta":-1,"min":0},
                   {"op":"put","key":"{p}/orders/1","value":"ann"}],
        "failure":[{"op":"incr","key":"{p}/refused"}]}"#;
    std::fs::write(&file, body).unwrap();
    let path = file.to_str().unwrap();
    let r = node.rc(&["txn", path, "--ack", "quorum"]).ok();
    assert!(
        r.stdout
            .starts_with("txn -> success\n  incr {p}/stock -> 0 (version "),
        "{r:?}"
    );
    let r = node.rc(&["txn", path, "--json"]).ok().json();
    assert_eq!(
        (&r["succeeded"], &r["failed_compare"]),
        (&json!(false), &json!(0))
    );
    assert_eq!(r["results"][0]["value"], 1, "the failure branch ran");
    let r = node.rc(&["get", "{p}/orders/1", "--json"]).ok().json();
    assert_eq!(r["value"], "ann");
    std::fs::write(
        &file,
        r#"{"success":[{"op":"put","key":"{a}x","value":1},{"op":"put","key":"{b}y","value":1}]}"#,
    )
    .unwrap();
    node.rc(&["txn", path]).api_error("cross_slot");
    std::fs::write(&file, r#"{"sucess":[]}"#).unwrap();
    let r = node.rc(&["txn", path]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.starts_with("error: ") && r.stderr.lines().count() == 1,
        "{r:?}"
    );
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
    node.rc(&["put", "word", "abc", "--string"]).ok();
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
        node.rc(&["put", k, k, "--string"]).ok();
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
        .rc(&["topic", "publish", "orders", "\"first\"", "--json"])
        .ok()
        .json();
    assert_eq!(one["offset"], 0);
    let batch = node
        .rc(&["topic", "publish", "orders", "2", r#"{"id":3}"#, "\"four\""])
        .ok();
    assert_eq!(
        batch.stdout.trim(),
        "published 3 messages -> offsets 1 to 3"
    );

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
    assert_eq!(
        (read["next_offset"].clone(), read["end_offset"].clone()),
        (3.into(), 4.into())
    );
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
    node.rc(&["topic", "publish", "orders", "1"])
        .api_error("topic_not_found");
    // One message: its offset, not a range.
    node.rc(&["topic", "create", "single"]).ok();
    let r = node
        .rc(&["topic", "publish", "single", "--string", "x"])
        .ok();
    assert_eq!(r.stdout.trim(), "published -> offset 0");
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
        node.rc(&["put", "other", "\"ignored\""]).ok();
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
    // A standalone node is a cluster of one.
    let text = node.rc(&["status"]).ok();
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(lines[0].starts_with("cluster "), "{text:?}");
    assert!(
        lines[1].starts_with("shard 0  slots 0-4095 (4096)"),
        "{text:?}"
    );
    assert!(
        lines[3].contains("standalone") && lines[3].ends_with("yes"),
        "{text:?}"
    );
    let local = node.rc(&["status", "--local"]).ok();
    assert!(
        local.stdout.contains("role: standalone") && local.stdout.contains("term: "),
        "{local:?}"
    );
    // RCLUSTER_ENDPOINTS is comma-separated and takes addresses without a scheme; a dead
    // endpoint first in the list costs nothing.
    let (_held, dead) = refusing_addr();
    let mut cmd = command(&["status", "--json", "--local"]);
    cmd.env("RCLUSTER_ENDPOINTS", format!("{dead},{}", node.addr));
    let status = run(cmd).ok().json();
    assert!(
        status["role"].is_string() && status["term"].is_u64(),
        "{status}"
    );
    assert_eq!(status["ready"], true);
    let view = node.rc(&["status", "--json"]).ok().json();
    let member = &view["shards"][0]["members"][0];
    assert_eq!(member["status"]["ready"], true, "{view}");
    assert_eq!(member["url"], node.url.as_str(), "{view}");
}

#[test]
fn exit_codes_for_usage_and_unreachable() {
    let r = rcluster(&["put", "k"]);
    assert_eq!(r.code, 2, "{r:?}");
    let r = rcluster(&["incr", "k", "--delta", "many"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(rcluster(&["--help"]).ok().code, 0);
    let r = rcluster(&["--endpoint", "not a url", "status"]);
    assert_eq!(r.code, 2, "{r:?}");
    let r = rcluster(&["--endpoint", "ftp://127.0.0.1:1", "status"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("expected HOST:PORT, http://HOST:PORT or https://HOST:PORT"),
        "{r:?}"
    );

    // A port nobody listens on: exit 3 after a few seconds of retries that are announced on
    // stderr, then one error line.
    let (_held, addr) = refusing_addr();
    for args in [
        &["status"][..],
        &["put", "k", "1"],
        &["topic", "stream", "t"],
    ] {
        let mut all = vec!["--endpoint", addr.as_str()];
        all.extend_from_slice(args);
        let r = rcluster(&all);
        assert_eq!(r.code, 3, "{r:?}");
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("error: could not reach the cluster"),
            "{r:?}"
        );
        assert!(lines.len() >= 2, "the retries were announced: {r:?}");
        assert!(
            lines[..lines.len() - 1]
                .iter()
                .all(|l| l.starts_with("retrying ")),
            "{r:?}"
        );
        // --quiet keeps only the error.
        let mut all = vec!["--quiet", "--endpoint", addr.as_str()];
        all.extend_from_slice(args);
        let r = rcluster(&all);
        assert_eq!((r.code, r.stderr.lines().count()), (3, 1), "{r:?}");
    }
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
    let r = rcluster(&[
        "-q",
        "--endpoint",
        &url,
        "--timeout",
        "0.2",
        "put",
        "k",
        "1",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(
        r.stderr
            .starts_with("error: outcome unknown (idempotency key "),
        "{r:?}"
    );
    // With --json: the code says "outcome unknown", with the key to retry with.
    let r = rcluster(&[
        "-q",
        "--json",
        "--endpoint",
        &url,
        "--timeout",
        "0.2",
        "put",
        "k",
        "1",
    ]);
    let err: Value = serde_json::from_str(r.stderr.trim()).expect("one JSON document");
    assert_eq!(err["error"]["code"], "outcome_unknown", "{r:?}");
    assert!(err["error"]["idempotency_key"].as_str().is_some(), "{r:?}");
    // A read against it is merely unreachable.
    let r = rcluster(&["-q", "--endpoint", &url, "--timeout", "0.2", "get", "k"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.starts_with("error: could not reach the cluster"),
        "{r:?}"
    );
}

#[test]
fn a_value_that_is_not_json_is_refused_unless_it_is_a_string() {
    let node = Node::start();
    let r = node.rc(&["put", "k", r#"{"a":"#]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "one line: {r:?}");
    assert!(
        r.stderr.starts_with("error: VALUE") && r.stderr.contains("--string"),
        "{r:?}"
    );
    node.rc(&["get", "k"]).api_error("not_found");
    let r = node.rc(&["topic", "create", "t"]).ok();
    assert!(r.stdout.contains("created"), "{r:?}");
    let r = node.rc(&["topic", "publish", "t", "1", "two"]);
    assert_eq!(r.code, 2, "{r:?}");
    let read = node.rc(&["topic", "read", "t", "--json"]).ok().json();
    assert_eq!(read["next_offset"], 0, "nothing of the batch was published");
    // Asked for explicitly, any text is a string.
    node.rc(&["put", "k", r#"{"a":"#, "--string"]).ok();
    let got = node.rc(&["get", "k", "--json"]).ok().json();
    assert_eq!(got["value"], r#"{"a":"#);
}

#[test]
fn errors_are_json_with_json() {
    let node = Node::start();
    let r = node.rc(&["--json", "get", "missing"]);
    assert_eq!(r.code, 1, "{r:?}");
    let e: Value = serde_json::from_str(r.stderr.trim()).expect("stderr is one JSON document");
    assert_eq!(e["error"]["code"], "not_found", "{r:?}");
    assert_eq!(e["error"]["status"], 404, "{r:?}");
    assert_eq!(e["error"]["exit_code"], 1, "{r:?}");
    // Usage errors too, from clap or from the value check.
    for args in [&["put", "k", "--json"][..], &["put", "k", "nope", "--json"]] {
        let r = node.rc(args);
        assert_eq!(r.code, 2, "{r:?}");
        let e: Value = serde_json::from_str(r.stderr.trim()).expect("one JSON document");
        assert_eq!(e["error"]["code"], "usage", "{r:?}");
    }
    let (_held, dead) = refusing_addr();
    let r = rcluster(&["--json", "--endpoint", &dead, "get", "k"]);
    assert_eq!(r.code, 3, "{r:?}");
    let lines: Vec<Value> = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stderr line is JSON"))
        .collect();
    assert!(lines.len() >= 2, "retries, then the error: {r:?}");
    assert!(lines[0]["retrying"]["attempt"].is_u64(), "{r:?}");
    assert_eq!(
        lines.last().unwrap()["error"]["code"],
        "unreachable",
        "{r:?}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let node = Node::start();
    // More than a pipe buffer of output: `list --all` is still writing when the reader leaves.
    let big = format!("\"{}\"", "x".repeat(4000));
    for i in 0..40 {
        let r = http(&node.addr, "PUT", &format!("/v1/kv/p/{i:03}"), Some(&big)).unwrap();
        assert_eq!(r.0, 200, "{r:?}");
    }
    for args in [
        &["list", "--all", "--limit", "5"][..],
        &["--json", "list", "--all", "--limit", "5"],
    ] {
        let mut child = command(&[&["--endpoint", &node.url][..], args].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        use std::io::Read;
        out.read_exact(&mut first).unwrap();
        drop(out);
        let mut child = KillOnDrop(child);
        let status = wait_for("rcluster to exit", DEADLINE, || child.0.try_wait().unwrap());
        let mut err = String::new();
        child
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(0), "{args:?}: {err}");
        assert!(
            err.is_empty(),
            "{args:?}: nothing on stderr, no panic: {err}"
        );
    }
}

#[test]
fn a_negative_ttl_is_refused_with_a_clear_message() {
    let r = rcluster(&["put", "k", "1", "--ttl", "-1"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("expected a number of seconds > 0, got \"-1\""),
        "{r:?}"
    );
    assert!(!r.stderr.contains("tip"), "{r:?}");
}

#[test]
fn the_session_token_passes_between_invocations() {
    let node = Node::start_with(&["--session-wait-ms", "300"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let f = file.to_str().unwrap();
    let put = node
        .rc(&["put", "k", "1", "--json", "--token-out", f])
        .ok()
        .json();
    let token = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        token.trim(),
        put["version"].to_string(),
        "the token is the write's position"
    );
    let at = format!("@{f}");
    let got = node
        .rc(&[
            "get",
            "k",
            "--consistency",
            "session",
            "--token-in",
            &at,
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(got["value"], 1);
    // A token from the future makes the session read wait, then fail: the token is sent.
    let r = node.rc(&[
        "get",
        "k",
        "--consistency",
        "session",
        "--token-in",
        "0:999999999",
        "-q",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    // --token-out keeps what --token-in brought.
    let out2 = dir.path().join("token2");
    node.rc(&[
        "get",
        "k",
        "--token-in",
        "0:999999999",
        "--token-out",
        out2.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read_to_string(&out2).unwrap().trim(), "999999999");
    let r = node.rc(&["get", "k", "--token-in", "not-a-token"]);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn shell_completions_complete_subcommands() {
    let r = rcluster(&["completions", "bash"]).ok();
    assert!(r.stdout.contains("_rcluster"), "{r:?}");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rcluster.bash");
    std::fs::write(&script, &r.stdout).unwrap();
    // What bash offers after `rcluster sta<TAB>` and `rcluster topic <TAB>`.
    let probe = format!(
        "source {}; \
         COMP_WORDS=(rcluster sta); COMP_CWORD=1; _rcluster rcluster sta rcluster; echo \"${{COMPREPLY[@]}}\"; \
         COMP_WORDS=(rcluster topic ''); COMP_CWORD=2; _rcluster rcluster '' topic; echo \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &probe])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lines[0].split(' ').any(|w| w == "status"), "{text}");
    assert!(lines[1].split(' ').any(|w| w == "publish"), "{text}");
    for shell in ["zsh", "fish"] {
        let r = rcluster(&["completions", shell]).ok();
        assert!(
            r.stdout.contains("switchover") && r.stdout.contains("publish"),
            "{shell}"
        );
    }
}

#[test]
fn cluster_ids_from_flags_and_environment_keep_the_cli_off_other_clusters() {
    let node = Node::start_with(&["--cluster-id", "cluster-b"]);
    let r = node.rc(&["-q", "--cluster-id", "cluster-a", "put", "k", "1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("error: cluster_mismatch: "), "{r:?}");
    let mut cmd = command(&["-q", "--endpoint", &node.url, "put", "k", "1"]);
    cmd.env("RCLUSTER_CLUSTER_ID", "cluster-a");
    let r = run(cmd);
    assert!(r.stderr.contains("cluster_mismatch"), "{r:?}");
    node.rc(&["get", "k"]).api_error("not_found");
    node.rc(&["--cluster-id", "cluster-b", "put", "k", "1"])
        .ok();
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
fn values_at_the_limits_round_trip_through_the_cli() {
    let node = Node::start();
    let good = [
        nested(MAX_DEPTH),
        "1e308".into(),
        "-1.7976931348623157e308".into(),
        r#""\ud83d\ude00 \u0000""#.into(),
        r#"{"\ud83d\ude00":[1e-400]}"#.into(),
    ];
    for (i, v) in good.iter().enumerate() {
        let r = http(&node.addr, "PUT", &format!("/v1/kv/good/{i}"), Some(v)).unwrap();
        assert_eq!(r.0, 200, "{v}: {}", r.1);
    }
    let stored: Value = serde_json::from_str(&good[0]).unwrap();
    let got = node.rc(&["get", "good/0", "--json"]).ok().json();
    assert_eq!(got["value"], stored);
    let page = node
        .rc(&["list", "--prefix", "good/", "--json"])
        .ok()
        .json();
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        good.len(),
        "{page}"
    );
    // The same values go in through the CLI too.
    for (i, v) in good.iter().enumerate() {
        node.rc(&["put", &format!("cli/{i}"), v]).ok();
    }
    // A watcher keeps going through values at the limit.
    let watch = command(&[
        "--endpoint",
        &node.url,
        "watch",
        "--prefix",
        "w/",
        "--count",
        "2",
        "--json",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut watch = KillOnDrop(watch);
    let stdout = watch.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    // The watch starts at the commit index when it connects: write until it has seen two.
    let mut seen = Vec::new();
    let mut i = 0;
    wait_for("the watcher to print two events", DEADLINE, || {
        i += 1;
        let r = http(
            &node.addr,
            "PUT",
            &format!("/v1/kv/w/{i}"),
            Some(&good[i % 2]),
        )
        .unwrap();
        assert_eq!(r.0, 200);
        seen.extend(rx.try_iter());
        (seen.len() >= 2).then_some(())
    });
    let status = wait_for("the watcher to exit", DEADLINE, || {
        watch.0.try_wait().unwrap()
    });
    assert!(status.success(), "watch failed: {seen:?}");
}
