//! The node's own HTTP/1.1 path for simple requests (`node/src/http1.rs`) and its hand-over to
//! hyper: one connection may start on the simple path and end on hyper's, and neither may lose,
//! reorder or repeat a request on the way. Raw sockets, so the bytes and their timing are ours.

mod common;
mod rawhttp;

use common::*;
use rawhttp::*;
use std::io::{Read, Write};

/// Reads `n` responses with Content-Length bodies from `s`, keeping what the node sent ahead
/// (pipelined answers arrive together).
fn read_n(s: &mut std::net::TcpStream, n: usize) -> Vec<Resp> {
    let mut raw = Vec::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while out.len() < n {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .and_then(|head| {
                let r = parse(&raw)?;
                let len: usize = r.header("content-length")?.parse().ok()?;
                (raw.len() >= head + 4 + len).then_some(head + 4 + len)
            });
        if let Some(end) = end {
            out.push(parse(&raw[..end]).unwrap());
            raw.drain(..end);
            continue;
        }
        let got = s.read(&mut buf).expect("the node answers");
        assert!(got > 0, "closed after {} answers", out.len());
        raw.extend_from_slice(&buf[..got]);
    }
    out
}

fn node(extra: &[&str]) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path(), extra);
    (dir, n)
}

/// The value of the node's metric series whose line starts with `series` (name, labels, space).
fn gauge(n: &Node, series: &str) -> u64 {
    let m = n.req("GET", "/metrics", None).body;
    m.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series:?} in /metrics"))
}

fn put(key: &str, value: &str) -> String {
    format!(
        "PUT /v1/kv/{key} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{value}",
        value.len()
    )
}

fn get(key: &str) -> String {
    format!("GET /v1/kv/{key} HTTP/1.1\r\nhost: x\r\n\r\n")
}

#[test]
fn pipelined_requests_are_answered_in_order_across_the_hand_over_to_hyper() {
    let (_d, n) = node(&[]);
    let mut s = connect(&n.addr);
    // Simple, simple, then a chunked body (hyper's from there on), then simple again: all in one
    // write, so the simple path holds hyper's request in its buffer when it hands over.
    let chunked = "PUT /v1/kv/c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\n\"z\"\r\n0\r\n\r\n";
    let all = [put("a", "\"one\""), get("a"), chunked.to_string(), get("c")].concat();
    s.write_all(all.as_bytes()).unwrap();
    let answers = read_n(&mut s, 4);
    assert_eq!(answers[0].status, 200, "{}", answers[0].body);
    assert_eq!(answers[0].json()["version"], 1);
    assert_eq!(answers[1].json()["value"], "one", "{}", answers[1].body);
    assert_eq!(answers[2].status, 200, "{}", answers[2].body);
    assert_eq!(answers[3].json()["value"], "z", "{}", answers[3].body);
    // Still open, and still served (by hyper now).
    s.write_all(get("a").as_bytes()).unwrap();
    assert_eq!(read_one(&mut s).unwrap().json()["value"], "one");
    // Every answer carries the node's headers, whichever path wrote it.
    for a in &answers {
        assert!(a.header("date").is_some(), "{:?}", a.headers);
        assert_eq!(a.header("content-type"), Some("application/json"));
    }
}

#[test]
fn a_body_sent_after_its_head_is_waited_for_and_applied_once() {
    let (_d, n) = node(&[]);
    let mut s = connect(&n.addr);
    for i in 0..20 {
        let value = format!("{{\"n\":{i}}}");
        let head = format!(
            "PUT /v1/kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            value.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.flush().unwrap();
        s.write_all(value.as_bytes()).unwrap();
        let r = read_one(&mut s).unwrap();
        assert_eq!((r.status, r.json()["version"].as_u64()), (200, Some(i + 1)));
    }
    s.write_all(get("k").as_bytes()).unwrap();
    assert_eq!(read_one(&mut s).unwrap().json()["value"]["n"], 19);
}

#[test]
fn a_body_that_stops_midway_on_the_simple_path_gets_the_body_timeout() {
    let (_d, n) = node(&["--body-timeout-ms", "300"]);
    let mut s = connect(&n.addr);
    // A complete request first, so the connection is on the simple path when the slow one comes.
    s.write_all(put("a", "1").as_bytes()).unwrap();
    assert_eq!(read_one(&mut s).unwrap().status, 200);
    s.write_all(b"PUT /v1/kv/b HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n[1,")
        .unwrap();
    let raw = read_until_closed(&mut s).expect("the node closes the connection");
    let r = parse(&raw).expect("an HTTP answer");
    assert_eq!((r.status, r.code().as_str()), (408, "body_timeout"));
    assert_eq!(
        n.req("GET", "/v1/kv/b", None).status,
        404,
        "nothing applied"
    );
}

#[test]
fn a_stream_on_the_simple_path_ends_when_its_client_leaves() {
    let (_d, n) = node(&[]);
    // Connections the node holds open, the scraping one included.
    let open = || gauge(&n, "rcluster_connections_open ");
    let before = open();
    let mut s = connect(&n.addr);
    s.write_all(b"GET /v1/watch?prefix=k HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
        .unwrap();
    // A write shows up on the open stream, framed as chunks.
    let mut seen = Vec::new();
    let mut written = false;
    wait_for("the change on the stream", || {
        let mut buf = [0u8; 4096];
        let got = s.read(&mut buf).ok()?;
        seen.extend_from_slice(&buf[..got]);
        let text = String::from_utf8_lossy(&seen);
        if !written && text.contains("event:progress") {
            assert_eq!(n.req("PUT", "/v1/kv/k", Some("7")).status, 200);
            written = true;
        }
        (text.contains("transfer-encoding: chunked") && text.contains("\"value\":7")).then_some(())
    });
    assert!(open() > before, "the stream holds its connection");
    drop(s);
    wait_for("the stream's connection to end with its client", || {
        (open() <= before).then_some(())
    });
}

#[test]
fn what_the_simple_path_cannot_represent_is_answered_by_hyper() {
    let (_d, n) = node(&[]);
    let mut s = connect(&n.addr);
    // httparse passes `<` in a target; `http`'s URI does not. The answer must still come.
    s.write_all(b"GET /v1/kv/a<b HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let raw = read_until_closed(&mut s).expect("an answer, then the close");
    let r = parse(&raw).expect("an HTTP answer");
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "bad_request"),
        "{}",
        r.body
    );
}

/// A target with a `#` is refused (`invalid_path`) on a connection the simple path served before,
/// alone or pipelined behind simple requests: the simple path leaves it to hyper, and the socket
/// guard, which does not scan heads the simple path parses, must scan this one.
#[test]
fn a_fragment_after_simple_requests_is_refused() {
    let (_d, n) = node(&[]);
    let fragment = "GET /v1/kv/a#frag HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut s = connect(&n.addr);
    s.write_all(put("a", "1").as_bytes()).unwrap();
    assert_eq!(read_one(&mut s).unwrap().status, 200);
    s.write_all(get("a").as_bytes()).unwrap();
    assert_eq!(read_one(&mut s).unwrap().status, 200);
    s.write_all(fragment.as_bytes()).unwrap();
    let r = read_one(&mut s).unwrap();
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "invalid_path"),
        "{}",
        r.body
    );
    // Pipelined: the simple path holds the head in its buffer when it hands over.
    let mut s = connect(&n.addr);
    let all = [get("a"), fragment.to_string(), get("a")].concat();
    s.write_all(all.as_bytes()).unwrap();
    let answers = read_n(&mut s, 3);
    assert_eq!(answers[0].status, 200, "{}", answers[0].body);
    assert_eq!(
        (answers[1].status, answers[1].code().as_str()),
        (400, "invalid_path"),
        "{}",
        answers[1].body
    );
    assert_eq!(answers[2].status, 200, "{}", answers[2].body);
}

#[test]
fn an_open_stream_counts_as_in_flight_until_its_client_leaves() {
    let (_d, n) = node(&[]);
    let in_flight = || gauge(&n, "rcluster_requests_in_flight{api=\"watch\"} ");
    assert_eq!(in_flight(), 0);
    let mut s = connect(&n.addr);
    s.write_all(b"GET /v1/watch?prefix=k HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut seen = Vec::new();
    wait_for("the watch's first event", || {
        let mut buf = [0u8; 4096];
        let got = s.read(&mut buf).ok()?;
        seen.extend_from_slice(&buf[..got]);
        String::from_utf8_lossy(&seen)
            .contains("event:progress")
            .then_some(())
    });
    assert_eq!(in_flight(), 1, "an open stream is in flight");
    drop(s);
    wait_for("the stream to leave the gauge", || {
        (in_flight() == 0).then_some(())
    });
}
