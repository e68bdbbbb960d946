//! No anonymous way to exhaust a node: bodies are authenticated and bounded before they are read,
//! slow and idle connections are closed, a connection limit answers at once, and a node short of
//! file descriptors keeps answering probes and keeps writing its log.

mod common;
mod rawhttp;

use common::*;
use rawhttp::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// A standalone node that knows the cluster secret (so its internal endpoints are live).
fn secret_node(extra: &[&str]) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let data = dir.path().join("data");
    let mut args = vec!["--secret-file", secret.to_str().unwrap()];
    args.extend_from_slice(extra);
    let n = Node::start(&data, &args);
    (dir, n)
}

const GIB: u64 = 1 << 30;

/// A path, the headers sent with it, and the status and code expected.
type Probe<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);

#[test]
fn an_unauthenticated_internal_body_is_refused_before_it_is_read() {
    let (_d, n) = secret_node(&[]);
    let peak_before = proc_kib(n.pid(), "VmHWM");
    let bearer = format!("Bearer {SECRET}");
    let probes: [Probe; 5] = [
        (
            "/internal/v1/install-snapshot?term=1&from=x",
            &[],
            401,
            "unauthorized",
        ),
        (
            "/internal/v1/append",
            &[("Authorization", "Bearer wrong")],
            401,
            "unauthorized",
        ),
        // Authenticated, but far more than one replication batch can be.
        (
            "/internal/v1/append",
            &[("Authorization", &bearer)],
            413,
            "body_too_large",
        ),
        (
            "/internal/v1/fence",
            &[("Authorization", &bearer)],
            413,
            "body_too_large",
        ),
        // A client route: its own limit (2 MiB by default).
        ("/v1/topics/t/messages", &[], 413, "body_too_large"),
    ];
    for (path, headers, status, code) in probes {
        let p = send_large_body(&n.addr, "POST", path, headers, GIB, 256 * MIB);
        assert_eq!(
            (p.resp.status, p.resp.code().as_str()),
            (status, code),
            "{path}: {}",
            p.resp.body
        );
        assert!(
            p.sent < 256 * MIB,
            "{path}: the node answered only after reading {} MiB",
            p.sent / MIB
        );
    }
    let grown = proc_kib(n.pid(), "VmHWM").saturating_sub(peak_before);
    assert!(
        grown < 64 * 1024,
        "the node's peak RSS grew by {grown} KiB while refusing large bodies"
    );
    assert_eq!(n.req("GET", "/livez", None).status, 200);
}

#[test]
fn half_sent_headers_are_closed_after_the_header_timeout() {
    let (_d, n) = secret_node(&["--header-timeout-ms", "300"]);
    let mut s = slow_connection(&n.addr);
    let raw = read_until_closed(&mut s).expect("the node closes a half-sent request");
    let r = parse(&raw).expect("a JSON answer before closing");
    assert_eq!((r.status, r.code().as_str()), (408, "header_timeout"));
    // A connection that sends nothing at all is closed too.
    let mut silent = connect(&n.addr);
    read_until_closed(&mut silent).expect("the node closes a silent connection");
    assert_eq!(n.req("GET", "/livez", None).status, 200);
    assert!(closed_count(&n, "header_timeout") >= 2);
}

/// The header timeout holds for every request of a keep-alive connection, not only its first:
/// a half-sent second head is cut long before the idle timeout the first answer started.
#[test]
fn a_half_sent_second_request_is_closed_after_the_header_timeout() {
    let (_d, n) = secret_node(&["--header-timeout-ms", "300", "--idle-timeout-ms", "600000"]);
    let mut s = connect(&n.addr);
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut s).unwrap().status, 200);
    // The scenario, not a wait for a condition: the connection idles past the first head's
    // timeout, so the node's timer is set for the (far) idle deadline when the next head starts.
    // With the right behaviour the pause's length cannot make the test fail.
    std::thread::sleep(std::time::Duration::from_secs(1));
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    // A read timeout here (the harness's deadline) means the node waited for the idle timeout.
    let raw = read_until_closed(&mut s).expect("the node closes a half-sent second request");
    let r = parse(&raw).expect("a JSON answer before closing");
    assert_eq!((r.status, r.code().as_str()), (408, "header_timeout"));
}

/// `rcluster_connections_closed_total` for `reason`.
fn closed_count(n: &Node, reason: &str) -> u64 {
    let m = n.req("GET", "/metrics", None).body;
    let prefix = format!("rcluster_connections_closed_total{{reason=\"{reason}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in the metrics"))
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let (_d, n) = secret_node(&["--idle-timeout-ms", "300"]);
    let mut s = connect(&n.addr);
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut s).unwrap().status, 200);
    // The connection stays usable for a while...
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut s).unwrap().status, 200);
    // ...and is closed once idle.
    let rest = read_until_closed(&mut s).expect("the node closes an idle connection");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[test]
fn a_body_that_stops_arriving_is_cut_after_the_body_timeout() {
    let (_d, n) = secret_node(&["--body-timeout-ms", "300"]);
    let mut s = connect(&n.addr);
    s.write_all(b"PUT /v1/kv/slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n[1,")
        .unwrap();
    let raw = read_until_closed(&mut s).expect("the node closes a stalled body");
    let r = parse(&raw).expect("a JSON answer");
    assert_eq!((r.status, r.code().as_str()), (408, "body_timeout"));
    assert_eq!(n.req("GET", "/v1/kv/slow", None).status, 404);
}

#[test]
fn connections_over_the_limit_get_a_prompt_answer() {
    let (_d, n) = secret_node(&["--max-connections", "6"]);
    // Six streams hold every slot with a request in service (read on for as long as they last: a
    // watch opens with a progress event and sends heartbeats).
    let streams: Vec<_> = (0..6)
        .map(|_| sse_events(&n.addr, "/v1/watch", usize::MAX))
        .collect();
    let r = http(&n.addr, "GET", "/v1/status", None, &[]);
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "too_many_connections"),
        "{}",
        r.body
    );
    // Probes and authenticated internal calls still get through.
    assert_eq!(closed_count(&n, "too_many_connections"), 1);
    assert_eq!(n.req("GET", "/livez", None).status, 200);
    assert_eq!(n.req("GET", "/readyz", None).status, 200);
    let r = n.req_h(
        "POST",
        "/internal/v1/status",
        Some("{}"),
        &[("Authorization", &format!("Bearer {SECRET}"))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    drop(streams);

    // Slow clients do not hold slots against newcomers: the longest-waiting one is let go.
    let (_d2, n2) = secret_node(&["--max-connections", "6"]);
    let mut slow: Vec<_> = (0..6).map(|_| slow_connection(&n2.addr)).collect();
    let r = n2.req("GET", "/v1/status", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let raw = read_until_closed(&mut slow[0]).expect("the oldest slow connection is closed");
    let r = parse(&raw).expect("a JSON answer");
    assert_eq!((r.status, r.code().as_str()), (503, "too_many_connections"));
    assert!(closed_count(&n2, "evicted") >= 1);
}

/// A node started with a descriptor limit of `nofile` (soft and hard).
struct LimitedNode {
    child: Child,
    addr: String,
}

impl LimitedNode {
    fn start(dir: &std::path::Path, nofile: u32, extra: &[&str]) -> LimitedNode {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(NODE_BIN)
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rcluster-node");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        while !line.starts_with("rcluster-node ready on ") {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                panic!("the node exited before it was ready");
            }
        }
        let addr = line.trim()["rcluster-node ready on http://".len()..].to_string();
        std::thread::spawn(move || for _ in out.lines() {});
        LimitedNode { child, addr }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for LimitedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .count()
}

/// Sends until the node serves the request: a node under a flood of connections may answer
/// `503 too_many_connections` (which a client retries), never time out.
fn served(addr: &str, method: &str, path: &str, body: Option<&str>) -> Resp {
    wait_for(&format!("{method} {path} to be served"), || {
        let r = http(addr, method, path, body, &[]);
        assert_ne!(r.status, 0, "{method} {path}: no answer");
        (r.status != 503).then_some(r)
    })
}

#[test]
fn few_descriptors_and_many_slow_connections_do_not_stop_the_log_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = LimitedNode::start(dir.path(), 160, &["--segment-bytes", "4096"]);
    // Three times more slow connections than the node has descriptors.
    let slow: Vec<_> = (0..480).map(|_| slow_connection(&n.addr)).collect();
    assert_eq!(served(&n.addr, "GET", "/livez", None).status, 200);
    let before = segments(dir.path());
    let value = format!("\"{}\"", "v".repeat(500));
    for i in 0..40 {
        let r = served(&n.addr, "PUT", &format!("/v1/kv/k{i}"), Some(&value));
        assert_eq!(r.status, 200, "put {i}: {}", r.body);
        assert_eq!(served(&n.addr, "GET", "/livez", None).status, 200);
    }
    assert!(
        segments(dir.path()) > before + 2,
        "the log rolled to new segments"
    );
    assert!(n.running(), "the node is still running");
    drop(slow);
    let r = http(&n.addr, "GET", "/v1/kv/k39", None, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(n.running(), "the node is still running");
}
