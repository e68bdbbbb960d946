//! Access tokens (`--auth-file`): roles per route, 401/403 in the error shape, reload on SIGHUP,
//! and no token in the log or the metrics. Real node processes.

mod common;
use common::*;

const READ: &str = "rt-5f3a9c-read-token";
const WRITE: &str = "wt-81be02-write-token";
const ADMIN: &str = "at-c4d7e6-admin-token";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn auth_file(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("auth");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_node_with_an_auth_file_serves_each_role_what_it_may_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = auth_file(
        files.path(),
        &format!("# roles\n{READ} read\n{WRITE} write # the app\n{ADMIN} admin\n"),
    );
    let node = Node::start(
        dir.path(),
        &[
            "--auth-file",
            file.to_str().unwrap(),
            "--log-level",
            "debug",
        ],
    );
    let as_ = |token: Option<&str>, method: &str, path: &str, body: Option<&str>| {
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        node.req_h(method, path, body, &headers)
    };

    // Anonymous and unknown tokens: 401 in the error shape, with a Bearer challenge.
    for token in [None, Some("not-a-token"), Some("")] {
        let r = as_(token, "GET", "/v1/kv/a", None);
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "unauthenticated"),
            "{token:?}: {}",
            r.body
        );
        assert!(
            r.header("www-authenticate")
                .unwrap_or("")
                .starts_with("Bearer")
        );
    }
    let r = node.req_h(
        "GET",
        "/v1/status",
        None,
        &[("Authorization", &format!("Basic {READ}"))],
    );
    assert_eq!(r.status, 401, "{}", r.body);

    // read: reads only.
    assert_eq!(
        as_(Some(READ), "GET", "/v1/kv/a", None).status,
        404,
        "a missing key, but served"
    );
    assert_eq!(as_(Some(READ), "GET", "/v1/status", None).status, 200);
    assert_eq!(as_(Some(READ), "GET", "/v1/kv", None).status, 200);
    let r = as_(Some(READ), "PUT", "/v1/kv/a", Some("1"));
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "forbidden"),
        "{}",
        r.body
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("write")
    );

    // write: reads and writes, no cluster operations.
    assert_eq!(as_(Some(WRITE), "PUT", "/v1/kv/a", Some("1")).status, 200);
    assert_eq!(
        as_(Some(WRITE), "POST", "/v1/kv/a/incr", Some(r#"{"delta":2}"#)).status,
        200
    );
    assert_eq!(as_(Some(WRITE), "PUT", "/v1/topics/t", None).status, 200);
    let r = as_(Some(READ), "GET", "/v1/kv/a", None);
    assert_eq!(
        (r.status, r.json()["value"].clone()),
        (200, serde_json::json!(3))
    );
    let r = as_(Some(WRITE), "POST", "/v1/switchover", Some("{}"));
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "forbidden"),
        "{}",
        r.body
    );

    // admin: everything; a switchover request is judged on its merits, not refused for the role.
    let r = as_(Some(ADMIN), "POST", "/v1/switchover", Some("{}"));
    assert!(![401, 403].contains(&r.status), "{}: {}", r.status, r.body);
    assert_eq!(as_(Some(ADMIN), "DELETE", "/v1/kv/a", None).status, 200);

    // Probes and metrics stay open for Kubernetes and Prometheus.
    for path in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(node.req("GET", path, None).status, 200, "{path}");
    }

    // Refused from the head alone: a declared 1 GB body is not waited for.
    let raw = raw_exchange(
        &node.addr,
        b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");

    // Internal endpoints still want the cluster secret, whatever the token.
    let r = as_(
        Some(ADMIN),
        "POST",
        "/internal/v1/fence",
        Some(r#"{"term":9}"#),
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "unauthorized"),
        "{}",
        r.body
    );

    // The tokens never show in the log or in the metrics.
    let metrics = node.req("GET", "/metrics", None).body;
    assert!(
        metrics.contains("rcluster_requests_total"),
        "metrics rendered"
    );
    let log = node.log();
    assert!(
        log.contains("access token"),
        "the log says tokens are required:\n{log}"
    );
    for token in [READ, WRITE, ADMIN, "not-a-token"] {
        assert!(!log.contains(token), "the log shows a token:\n{log}");
        assert!(!metrics.contains(token), "the metrics show a token");
    }
}

/// Sends raw bytes and reads what comes back within a few seconds (no body is ever sent).
fn raw_exchange(addr: &str, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn sighup_reloads_the_tokens_and_a_bad_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = auth_file(files.path(), &format!("{WRITE} write\n"));
    // Only the signal may reload in this test: the periodic check is an hour away.
    let node = Node::start(
        dir.path(),
        &[
            "--auth-file",
            file.to_str().unwrap(),
            "--reload-interval-ms",
            "3600000",
        ],
    );
    let put = |token: &str| {
        node.req_h(
            "PUT",
            "/v1/kv/k",
            Some("1"),
            &[("Authorization", &bearer(token))],
        )
        .status
    };
    assert_eq!(put(WRITE), 200);
    assert_eq!(put(ADMIN), 401);

    // Add ADMIN, remove WRITE.
    auth_file(files.path(), &format!("{ADMIN} admin\n"));
    node.hangup();
    wait_for("the new token to work", || {
        (put(ADMIN) == 200).then_some(())
    });
    assert_eq!(put(WRITE), 401, "a removed token is refused");
    node.wait_log("access tokens reloaded");

    // A file that does not parse: the tokens in force stay, and the log says why.
    auth_file(files.path(), &format!("{ADMIN} admin\n{WRITE} superuser\n"));
    node.hangup();
    node.wait_log("line 2: the role must be read, write or admin");
    assert_eq!(put(ADMIN), 200);
    assert_eq!(put(WRITE), 401);
    assert!(
        !node.log().contains(WRITE),
        "the error names the line, not the token"
    );
    let status = node.req_h(
        "GET",
        "/v1/status",
        None,
        &[("Authorization", &bearer(ADMIN))],
    );
    assert_eq!(status.status, 200, "still serving");
}

#[test]
fn a_changed_file_is_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = auth_file(files.path(), &format!("{READ} read\n"));
    let node = Node::start(
        dir.path(),
        &[
            "--auth-file",
            file.to_str().unwrap(),
            "--reload-interval-ms",
            "100",
        ],
    );
    let get = |token: &str| {
        node.req_h(
            "GET",
            "/v1/status",
            None,
            &[("Authorization", &bearer(token))],
        )
        .status
    };
    assert_eq!(get(READ), 200);
    assert_eq!(get(WRITE), 401);
    // As a Kubernetes Secret volume changes: the file is replaced, nobody signals the node.
    let next = files.path().join("auth.next");
    std::fs::write(&next, format!("{WRITE} write\n")).unwrap();
    std::fs::rename(&next, &file).unwrap();
    wait_for("the changed file to be read", || {
        (get(WRITE) == 200).then_some(())
    });
    assert_eq!(get(READ), 401);
}

#[test]
fn without_an_auth_file_the_node_is_open_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.req("PUT", "/v1/kv/a", Some("1")).status, 200);
    node.wait_log("no --auth-file");
}

#[test]
fn a_node_refuses_to_start_with_a_bad_auth_file() {
    let files = tempfile::tempdir().unwrap();
    let file = auth_file(files.path(), "only-a-token\n");
    let mut child = std::process::Command::new(NODE_BIN)
        .args(["--data-dir", files.path().join("data").to_str().unwrap()])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--auth-file",
            file.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for("the node to exit", || child.try_wait().unwrap());
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("line 1: expected `TOKEN ROLE`"), "{err}");
    assert!(!err.contains("only-a-token"), "{err}");
}
