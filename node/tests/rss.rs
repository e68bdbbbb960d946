//! What a node process holds from the OS: memory that deleted records used goes back to it. Under
//! glibc's malloc a node that had loaded records and then deleted them all kept every page (its
//! arenas stay fragmented), so an operator who cleaned up a keyspace saw no memory come back until
//! a restart; the node's allocator (mimalloc) returns it. RSS is a size, not a timing: the tests
//! wait for it with the harness's deadline.

mod common;
mod rawhttp;

use common::*;
use rawhttp::{connect, proc_kib, read_one};
use std::io::Write;

/// Records loaded and deleted: more than the node keeps change events for watchers (65,536), so
/// after the deletes those hold only deletions, not the values put.
const RECORDS: usize = 70_016;
/// Operations per transaction (the most one may hold): one log entry each, so loading is quick.
const PER_TXN: usize = 128;

/// One transaction over keys `from..from + PER_TXN` (one hash slot: they share the tag `{m}`).
fn txn(from: usize, op: impl Fn(usize) -> String) -> String {
    let ops: Vec<String> = (from..from + PER_TXN).map(op).collect();
    format!(r#"{{"success":[{}]}}"#, ops.join(","))
}

/// Sends each request on one keep-alive connection and expects 200 for each.
fn send_all(n: &Node, requests: impl Iterator<Item = String>) {
    let mut conn = connect(&n.addr);
    conn.set_nodelay(true).unwrap();
    for request in requests {
        // One write a request: a request split over writes waits on Nagle and a delayed ACK.
        conn.write_all(request.as_bytes()).unwrap();
        let r = read_one(&mut conn).expect("an answer");
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

fn delete_request(i: usize) -> String {
    format!("DELETE /v1/kv/%7Bm%7D%2Fk{i} HTTP/1.1\r\nhost: t\r\n\r\n")
}

/// A standalone node loaded with `RECORDS` records by transaction: the node, its RSS in KiB
/// before and after loading.
fn loaded_node(dir: &std::path::Path) -> (Node, u64, u64) {
    // A node alone keeps no shipping cache, so what it holds is the state and what serving costs.
    let n = Node::start(dir, &["--fsync", "interval"]);
    let value = format!("\"{}\"", "v".repeat(200));
    let before = proc_kib(n.pid(), "VmRSS");
    for from in (0..RECORDS).step_by(PER_TXN) {
        let body = txn(from, |i| {
            format!(r#"{{"op":"put","key":"{{m}}/k{i}","value":{value}}}"#)
        });
        let r = n.req("POST", "/v1/txn", Some(&body));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let loaded = proc_kib(n.pid(), "VmRSS");
    // 70k records of 200-byte values, and the change events of their puts: over 20 MB.
    assert!(
        loaded > before + 20 * 1024,
        "loading grew RSS from {before} to only {loaded} KiB"
    );
    (n, before, loaded)
}

fn assert_all_gone(n: &Node) {
    let gone = n.req("GET", "/v1/kv?prefix=%7Bm%7D%2F&limit=1", None);
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert!(
        gone.json()["items"].as_array().unwrap().is_empty(),
        "{}",
        gone.body
    );
}

/// Waits until the node's RSS is under `before` plus half of what loading took, running `serve`
/// between looks (the allocator returns freed pages on its next calls); returns that RSS.
fn wait_returned(n: &Node, before: u64, loaded: u64, mut serve: impl FnMut()) -> u64 {
    // At least half must come back: the change events kept for watchers, and the allocator's own
    // caches, may keep some.
    let under = before + (loaded - before) / 2;
    let what = format!(
        "RSS under {under} KiB: the deleted records' memory back to the OS ({before} KiB at \
         start, {loaded} loaded)"
    );
    wait_for(&what, || {
        serve();
        let now = proc_kib(n.pid(), "VmRSS");
        (now < under).then_some(now)
    })
}

#[test]
fn deleted_records_give_their_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let (n, before, loaded) = loaded_node(dir.path());
    // One delete a request, as an application cleaning up would.
    send_all(&n, (0..RECORDS).map(delete_request));
    assert_all_gone(&n);
    let returned = wait_returned(&n, before, loaded, || {
        let _ = n.req("GET", "/livez", None);
    });
    println!("RSS KiB: {before} at start, {loaded} loaded, {returned} after deleting every record");
}

/// Deletes by transaction free the records as well, but the allocator hands their pages back
/// only as the node goes on allocating: here, while it serves puts of a few other keys.
#[test]
fn memory_freed_by_transactions_comes_back_as_the_node_serves_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (n, before, loaded) = loaded_node(dir.path());
    for from in (0..RECORDS).step_by(PER_TXN) {
        let body = txn(from, |i| format!(r#"{{"op":"delete","key":"{{m}}/k{i}"}}"#));
        let r = n.req("POST", "/v1/txn", Some(&body));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_all_gone(&n);
    let put = |j: usize| {
        let value = r#""other""#;
        format!(
            "PUT /v1/kv/other-{} HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n{value}",
            j % 100,
            value.len()
        )
    };
    let mut served = 0;
    let returned = wait_returned(&n, before, loaded, || {
        send_all(&n, (served..served + 1000).map(put));
        served += 1000;
    });
    println!(
        "RSS KiB: {before} at start, {loaded} loaded, {returned} after deleting every record by \
         transaction and {served} puts"
    );
}
