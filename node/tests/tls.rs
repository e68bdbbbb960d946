//! TLS on the node's listener: the connection layer's rules under TLS, certificate rotation by
//! SIGHUP, a 3-node cluster that replicates, fails over and forwards over https with the client's
//! access token, and the `rcluster` CLI with `--cacert` and `--token`. Real node processes.

mod common;
use common::*;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;

const WRITE: &str = "w-2b9d7e-token";
const READ: &str = "r-7c1a4f-token";

fn tls_node(pki: &Pki, extra: &[&str]) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = pki.node_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = Node::start(dir.path(), &args);
    node.tls = Some(pki.client.clone());
    (node, dir)
}

/// Writes `bytes` on a fresh TLS connection and reads until the node closes it.
fn tls_raw(node: &Node, tls: &Arc<rustls::ClientConfig>, bytes: &[u8]) -> String {
    let mut s = tls_connect(&node.addr, tls).expect("TLS connection");
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_tls_node_keeps_its_connection_rules_and_refuses_other_cas() {
    let pki = Pki::new("main");
    let (node, _dir) = tls_node(
        &pki,
        &["--header-timeout-ms", "1000", "--max-body-bytes", "1000"],
    );
    assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);
    let tls = pki.client.clone();

    let r = node.req("PUT", "/v1/kv/a", Some("\"over tls\""));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        node.req("GET", "/v1/kv/a", None).json()["value"],
        "over tls"
    );

    // Malformed requests still get JSON errors, now inside TLS.
    let out = tls_raw(&node, &tls, b"NOT A REQUEST\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains(r#""code":"bad_request""#), "{out}");
    let r = node.req("PUT", "/v1/kv/a?tll=60", Some("1"));
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "invalid_parameter"),
        "{}",
        r.body
    );
    let big = "1".repeat(2000);
    let r = node.req("PUT", "/v1/kv/a", Some(&big));
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));

    // A head that does not arrive in time: 408 in the error shape.
    let out = tls_raw(&node, &tls, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n");
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains(r#""code":"header_timeout""#), "{out}");

    // A connection that never starts its handshake is closed after the header timeout too.
    let mut silent = std::net::TcpStream::connect(&node.addr).unwrap();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 16];
    let closed = silent.read(&mut buf);
    assert!(
        matches!(closed, Ok(0))
            || matches!(&closed, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "closed without an answer: {closed:?}"
    );

    // Plain HTTP to the TLS port: told to use https, in plain HTTP.
    let r = http(&node.addr, "GET", "/v1/status", None, &[]);
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "tls_required"),
        "{}",
        r.body
    );

    // A client that trusts another CA does not get through the handshake.
    let other = Pki::new("other");
    let err = try_https(&node.addr, &other.client, "GET", "/v1/status", None, &[])
        .expect_err("another CA's client must not connect");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // Probes and metrics work over TLS, and the handshakes that failed are counted.
    assert_eq!(node.req("GET", "/readyz", None).status, 200);
    let metrics = node.req("GET", "/metrics", None).body;
    assert!(
        metrics.contains(r#"rcluster_connections_closed_total{reason="tls_handshake"}"#),
        "{metrics}"
    );
}

#[test]
fn a_rotated_certificate_is_served_after_sighup_without_a_restart() {
    let pki = Pki::new("first");
    let (node, _dir) = tls_node(&pki, &["--reload-interval-ms", "3600000"]);
    let next = Pki::new("second");
    let status = |tls: &Arc<rustls::ClientConfig>| {
        try_https(&node.addr, tls, "GET", "/v1/status", None, &[]).map(|r| r.status)
    };
    assert_eq!(status(&pki.client).ok(), Some(200));
    assert!(status(&next.client).is_err());

    // A half-written pair (a key without its certificate) is not taken: the old one stays.
    std::fs::write(&pki.cert, "not a certificate").unwrap();
    node.hangup();
    node.wait_log("the TLS certificate was not reloaded");
    assert_eq!(status(&pki.client).ok(), Some(200));

    std::fs::copy(&next.cert, &pki.cert).unwrap();
    std::fs::copy(&next.key, &pki.key).unwrap();
    node.hangup();
    wait_for("the new certificate", || {
        (status(&next.client).ok() == Some(200)).then_some(())
    });
    assert!(
        status(&pki.client).is_err(),
        "the old CA no longer verifies it"
    );
    let pid = node.pid();
    assert_ne!(pid, 0, "the same process serves");
}

#[test]
fn a_tls_cluster_replicates_fails_over_and_forwards_with_the_clients_token() {
    let pki = Pki::new("cluster");
    let files = tempfile::tempdir().unwrap();
    let auth = files.path().join("auth");
    std::fs::write(&auth, format!("{WRITE} write\n{READ} read\n")).unwrap();
    let mut c = Cluster::start_opts(3, &["--auth-file", auth.to_str().unwrap()], Some(&pki));
    c.elect(0);
    // ack=all while every member is up; quorum once one is gone.
    let write = |i: usize, c: &Cluster, key: &str, token: &str| {
        let ack = if c.nodes[0].pid() == 0 {
            "quorum"
        } else {
            "all"
        };
        c.nodes[i].req_h(
            "PUT",
            &format!("/v1/kv/{key}?ack={ack}"),
            Some("1"),
            &[("Authorization", &format!("Bearer {token}"))],
        )
    };
    for i in 0..20 {
        let r = write(0, &c, &format!("k{i}"), WRITE);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // ack=all over https: every replica has them.
    c.wait_converged(&[0, 1, 2]);

    // A write sent to a replica is forwarded to the primary over https with the client's token:
    // the primary checks it (without the token it would answer 401).
    let r = write(2, &c, "via-replica", WRITE);
    assert_eq!(r.status, 200, "{}", r.body);
    let on_primary = c.nodes[0].req_h(
        "GET",
        "/v1/kv/via-replica",
        None,
        &[("Authorization", &format!("Bearer {READ}"))],
    );
    assert_eq!(on_primary.status, 200, "{}", on_primary.body);
    let r = write(2, &c, "refused", READ);
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));

    // kill -9 the primary; node 1 takes over (the coordinator's commands go over https too).
    c.nodes[0].kill9();
    c.term += 1;
    let term = c.term;
    let promote = c.internal(1, "promote", serde_json::json!({"term": term}));
    assert_eq!(promote.status, 200, "{}", promote.body);
    let follow = c.internal(
        2,
        "follow",
        serde_json::json!({"term": term, "primary": c.names[1]}),
    );
    assert_eq!(follow.status, 200, "{}", follow.body);
    let mut last = String::new();
    let accepted = (0..600).any(|_| {
        let r = write(1, &c, "after-failover", WRITE);
        last = format!("{} {}", r.status, r.body);
        r.status == 200 || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            false
        }
    });
    assert!(accepted, "the new primary did not accept a write: {last}");
    let r = write(2, &c, "after-failover-via-replica", WRITE);
    assert_eq!(r.status, 200, "{}", r.body);
    c.wait_converged(&[1, 2]);
    let status = c.nodes[2].req_h(
        "GET",
        "/v1/status",
        None,
        &[("Authorization", &format!("Bearer {READ}"))],
    );
    assert_eq!(status.json()["primary"], "n2");
}

/// The CLI lives in rcluster-cli: its binary is found (or built) like the end-to-end tests' are.
fn cli_bin() -> std::path::PathBuf {
    rcluster_e2e::bin("rcluster")
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cli_bin())
        .args(args)
        .env_remove("RCLUSTER_TOKEN")
        .env_remove("RCLUSTER_CACERT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_uses_cacert_and_token_and_refuses_a_certificate_of_another_ca() {
    let pki = Pki::new("cli");
    let files = tempfile::tempdir().unwrap();
    let auth = files.path().join("auth");
    std::fs::write(&auth, format!("{WRITE} write\n{READ} read\n")).unwrap();
    let (node, _dir) = tls_node(&pki, &["--auth-file", auth.to_str().unwrap()]);
    let ca = pki.ca.to_str().unwrap();
    let endpoint = node.url.as_str();
    let base = ["--endpoint", endpoint, "--cacert", ca, "--timeout", "5"];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        cli(&args)
    };

    let (code, out, err) = run(&["--token", WRITE, "put", "greeting", "hello", "--string"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&["--token", READ, "get", "greeting"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hello"), "{out}");

    // The token from the environment, as RCLUSTER_TOKEN.
    let out = Command::new(cli_bin())
        .args(base)
        .args(["get", "greeting"])
        .env("RCLUSTER_TOKEN", READ)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No token, or too low a role: the server's error, exit 1, one line.
    let (code, _, err) = run(&["get", "greeting"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unauthenticated"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _, err) = run(&["--token", READ, "put", "greeting", "bye", "--string"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("forbidden"), "{err}");

    // A server certificate from another CA: refused, exit 3.
    let other = Pki::new("elsewhere");
    let (code, _, err) = cli(&[
        "--endpoint",
        endpoint,
        "--cacert",
        other.ca.to_str().unwrap(),
        "--token",
        READ,
        "get",
        "greeting",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("certificate"), "{err}");

    // A --cacert that is not a certificate file: a usage error.
    let (code, _, err) = cli(&[
        "--endpoint",
        endpoint,
        "--cacert",
        auth.to_str().unwrap(),
        "status",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--cacert"), "{err}");

    // The token never shows in the node's log.
    assert!(!node.log().contains(WRITE) && !node.log().contains(READ));
}
