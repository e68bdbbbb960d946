//! Crash safety and recovery with real processes, real files and real `kill -9`.

mod common;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What clients were told succeeded.
#[derive(Default)]
struct Acked {
    /// writer -> highest n whose put `w{writer}/{n}` was acknowledged (each writer goes in order)
    puts: BTreeMap<usize, u64>,
    /// acknowledged batch publishes: first offset -> batch id
    batches: BTreeMap<u64, String>,
    /// highest acknowledged subscription cursor, and every offset delivered by an acknowledged pull
    cursor: u64,
    delivered: Vec<u64>,
    /// acknowledged increments, and increments whose outcome is unknown
    incrs: u64,
    incrs_unknown: u64,
}

fn load(
    n: &Node,
    stop: &Arc<AtomicBool>,
    acked: &Arc<Mutex<Acked>>,
    round: usize,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for w in 0..6 {
        let (addr, stop, acked) = (n.addr.clone(), stop.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            let start = acked.lock().unwrap().puts.get(&w).map_or(0, |x| x + 1);
            for i in start.. {
                let r = http(
                    &addr,
                    "PUT",
                    &format!("/v1/kv/w{w}/{i}"),
                    Some(&format!(r#"{{"w":{w},"i":{i}}}"#)),
                    &[],
                );
                if r.status != 200 || stop.load(Ordering::Relaxed) {
                    return;
                }
                acked.lock().unwrap().puts.insert(w, i);
            }
        }));
    }
    for p in 0..2 {
        let (addr, stop, acked) = (n.addr.clone(), stop.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            for i in 0.. {
                let id = format!("r{round}p{p}b{i}");
                let batch: Vec<Value> = (0..5).map(|k| json!({"batch": id, "k": k})).collect();
                let r = http(
                    &addr,
                    "POST",
                    "/v1/topics/events/messages?batch=true",
                    Some(&Value::from(batch).to_string()),
                    &[],
                );
                if r.status != 200 || stop.load(Ordering::Relaxed) {
                    return;
                }
                acked
                    .lock()
                    .unwrap()
                    .batches
                    .insert(r.json()["offset"].as_u64().unwrap(), id);
            }
        }));
    }
    {
        let (addr, stop, acked) = (n.addr.clone(), stop.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = http(
                    &addr,
                    "POST",
                    "/v1/topics/events/subscriptions/audit/pull?max=7",
                    None,
                    &[],
                );
                if r.status != 200 {
                    return;
                }
                let body = r.json();
                let mut a = acked.lock().unwrap();
                a.cursor = body["cursor"].as_u64().unwrap();
                a.delivered.extend(
                    body["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| m["offset"].as_u64().unwrap()),
                );
            }
        }));
    }
    {
        let (addr, stop, acked) = (n.addr.clone(), stop.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = http(
                    &addr,
                    "POST",
                    "/v1/kv/counter/incr",
                    Some(r#"{"delta":1}"#),
                    &[],
                );
                let mut a = acked.lock().unwrap();
                if r.status != 200 {
                    a.incrs_unknown += 1;
                    return;
                }
                a.incrs += 1;
            }
        }));
    }
    threads
}

fn verify(n: &Node, acked: &Acked) {
    for (w, last) in &acked.puts {
        for i in 0..=*last {
            let r = n.req("GET", &format!("/v1/kv/w{w}/{i}"), None);
            assert_eq!(r.status, 200, "acknowledged put w{w}/{i} lost");
            assert_eq!(r.json()["value"], json!({"w": w, "i": i}));
        }
    }
    // Batches are all-or-nothing: every group of five consecutive messages is one whole batch.
    let mut from = 0;
    let mut messages = Vec::new();
    loop {
        let r = n
            .req(
                "GET",
                &format!("/v1/topics/events/messages?from={from}&limit=1000"),
                None,
            )
            .json();
        let page = r["messages"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        from = page.last().unwrap()["offset"].as_u64().unwrap() + 1;
        messages.extend(page);
    }
    assert_eq!(messages.len() % 5, 0, "a batch was half applied");
    for group in messages.chunks(5) {
        let id = &group[0]["value"]["batch"];
        for (k, m) in group.iter().enumerate() {
            assert_eq!(
                (&m["value"]["batch"], &m["value"]["k"]),
                (id, &json!(k)),
                "batch torn at offset {}",
                m["offset"]
            );
        }
    }
    let present: BTreeMap<u64, String> = messages
        .chunks(5)
        .map(|g| {
            (
                g[0]["offset"].as_u64().unwrap(),
                g[0]["value"]["batch"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (offset, id) in &acked.batches {
        assert_eq!(
            present.get(offset),
            Some(id),
            "acknowledged batch {id} at {offset} lost"
        );
    }
    let topics = n.req("GET", "/v1/topics", None).json();
    let cursor = topics["topics"][0]["subscriptions"][0]["cursor"]
        .as_u64()
        .unwrap();
    assert!(
        cursor >= acked.cursor,
        "acknowledged pull lost: cursor {cursor} < {}",
        acked.cursor
    );
    let mut d = acked.delivered.clone();
    let len = d.len();
    d.sort();
    d.dedup();
    assert_eq!(
        d.len(),
        len,
        "a message was delivered twice by acknowledged pulls"
    );
    let counter = n.req("GET", "/v1/kv/counter", None).json()["value"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        counter >= acked.incrs && counter <= acked.incrs + acked.incrs_unknown,
        "counter {counter}, acknowledged {} (+{} unknown)",
        acked.incrs,
        acked.incrs_unknown
    );
}

/// Kills the node mid-load four times and checks every acknowledged write after each restart.
/// With `zeroed_segments` (the `--segment-bytes` given in `extra`), each kill also waits until the
/// newest segment is one the writer zeroed ahead: as long as a segment and ending in zeros.
fn crash_rounds(extra: &[&str], zeroed_segments: Option<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Node::start(dir.path(), extra);
    n.req("PUT", "/v1/topics/events", None);
    n.req(
        "PUT",
        "/v1/topics/events/subscriptions/audit?start=earliest",
        None,
    );
    let acked = Arc::new(Mutex::new(Acked::default()));
    // Different kill points: early, mid and late in a burst of load.
    for (round, kill_after_ms) in [150u64, 700, 1500, 400].into_iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = load(&n, &stop, &acked, round);
        let start = Instant::now();
        wait_for("writes to be acknowledged", || {
            (start.elapsed() >= Duration::from_millis(kill_after_ms)
                && acked.lock().unwrap().puts.values().sum::<u64>() > 0)
                .then_some(())
        });
        if let Some(bytes) = zeroed_segments {
            wait_for("the log to write into a segment zeroed ahead", || {
                let bytes_now = std::fs::read(newest_segment(dir.path())).ok()?;
                (bytes_now.len() as u64 == bytes && bytes_now.last() == Some(&0)).then_some(())
            });
        }
        n.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        n.restart();
        verify(&n, &acked.lock().unwrap());
    }
    let total: u64 = acked.lock().unwrap().puts.values().map(|x| x + 1).sum();
    assert!(total > 50, "the load did real work ({total} puts)");
}

#[test]
fn kill9_mid_load_loses_no_acknowledged_write_fsync_always() {
    crash_rounds(&["--fsync", "always"], None);
}

#[test]
fn kill9_mid_load_in_segments_zeroed_ahead_loses_no_acknowledged_write() {
    // Small segments: the writer zeroes a spare once half a segment is written and rolls into
    // it, so each kill lands in a segment whose tail is zeros, and restart must find its end.
    crash_rounds(
        &["--fsync", "always", "--segment-bytes", "65536"],
        Some(65536),
    );
}

#[test]
fn kill9_mid_load_loses_no_acknowledged_write_fsync_interval() {
    // Interval mode acknowledges after write(2): a process crash keeps everything acknowledged.
    crash_rounds(&["--fsync", "interval", "--segment-bytes", "65536"], None);
}

fn newest_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

#[test]
fn torn_and_corrupt_tails_are_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Node::start(dir.path(), &[]);
    for i in 1..=20 {
        assert_eq!(
            n.req("PUT", &format!("/v1/kv/k{i}"), Some(&i.to_string()))
                .status,
            200
        );
    }
    n.kill9();
    // Torn: the last record lost its final bytes.
    let seg = newest_segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    n.restart();
    n.wait_log("cut a torn log tail");
    let s = n.req("GET", "/v1/status", None).json();
    assert_eq!(s["recovery"]["truncation"]["last_valid_index"], json!(19));
    assert_eq!(
        s["recovery"]["truncation"]["reason"],
        json!("torn frame payload")
    );
    assert_eq!(n.req("GET", "/v1/kv/k19", None).json()["value"], json!(19));
    assert_eq!(
        n.req("GET", "/v1/kv/k20", None).status,
        404,
        "a torn record is never applied"
    );
    // The log continues cleanly after the cut.
    assert_eq!(
        n.req("PUT", "/v1/kv/k20", Some("200")).json()["version"],
        json!(20)
    );

    // Corrupt: flip a byte inside the last record.
    n.kill9();
    let seg = newest_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&seg, bytes).unwrap();
    n.restart();
    let s = n.req("GET", "/v1/status", None).json();
    assert_eq!(
        s["recovery"]["truncation"]["reason"],
        json!("checksum mismatch")
    );
    assert_eq!(n.req("GET", "/v1/kv/k20", None).status, 404);
    assert_eq!(n.req("GET", "/v1/kv/k1", None).json()["value"], json!(1));
}

#[test]
fn idempotency_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Node::start(dir.path(), &[]);
    let h = [("Idempotency-Key", "order-77")];
    let first = n.req_h(
        "POST",
        "/v1/kv/stock/incr",
        Some(r#"{"delta":-1,"min":-10}"#),
        &h,
    );
    assert_eq!(first.status, 200);
    n.kill9();
    n.restart();
    let retry = n.req_h(
        "POST",
        "/v1/kv/stock/incr",
        Some(r#"{"delta":-1,"min":-10}"#),
        &h,
    );
    assert_eq!(retry.body, first.body);
    assert_eq!(
        n.req("GET", "/v1/kv/stock", None).json()["value"],
        json!(-1),
        "applied once"
    );
}

#[test]
fn snapshots_bound_disk_use_and_restart_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Node::start(
        dir.path(),
        &["--snapshot-entries", "400", "--segment-bytes", "16384"],
    );
    n.req("PUT", "/v1/topics/t", None);
    n.req("PUT", "/v1/topics/t/subscriptions/s?start=earliest", None);
    for i in 0..3000u64 {
        let r = n.req(
            "PUT",
            &format!("/v1/kv/k{}", i % 300),
            Some(&format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(40))),
        );
        assert_eq!(r.status, 200);
        if i % 10 == 0 {
            n.req("POST", "/v1/topics/t/messages", Some(&i.to_string()));
        }
    }
    n.req("POST", "/v1/topics/t/subscriptions/s/pull?max=50", None);
    wait_for("a snapshot", || {
        let s = n.req("GET", "/v1/status", None).json();
        (s["snapshot_index"].as_u64().unwrap() >= 2000).then_some(())
    });
    let before = n.req("GET", "/v1/status?digest=true", None).json();
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    // 3300 entries of ~100 bytes were written; compaction keeps far less than all of them.
    assert!(files <= 12, "{files} files remain");
    assert!(bytes < 250_000, "{bytes} bytes remain");
    n.kill9();
    n.restart();
    let after = n.req("GET", "/v1/status?digest=true", None).json();
    assert_eq!(after["digest"], before["digest"]);
    assert_eq!(after["applied_index"], before["applied_index"]);
    n.wait_log("recovered");
    assert_eq!(
        n.req("GET", "/v1/kv/k299", None).json()["value"]["i"],
        json!(2999)
    );
    let t = n.req("GET", "/v1/topics", None).json();
    assert_eq!(t["topics"][0]["subscriptions"][0]["cursor"], json!(50));
}

#[test]
fn incr_never_crosses_its_bound_under_32_clients() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path(), &[]);
    n.req("PUT", "/v1/kv/stock", Some("100"));
    let sold = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (addr, sold) = (n.addr.clone(), sold.clone());
            std::thread::spawn(move || {
                loop {
                    let r = http(
                        &addr,
                        "POST",
                        "/v1/kv/stock/incr",
                        Some(r#"{"delta":-1,"min":0}"#),
                        &[],
                    );
                    match r.status {
                        200 => *sold.lock().unwrap() += 1,
                        409 => return,
                        s => panic!("unexpected status {s}: {}", r.body),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*sold.lock().unwrap(), 100, "exactly the stock was sold");
    assert_eq!(n.req("GET", "/v1/kv/stock", None).json()["value"], json!(0));
}

/// The commit index a node's role record (`role.json`) holds.
fn persisted_commit(n: &Node) -> u64 {
    let bytes = std::fs::read(n.dir.join("role.json")).unwrap_or_default();
    serde_json::from_slice::<Value>(&bytes).map_or(0, |r| r["known_commit"].as_u64().unwrap_or(0))
}

/// Every member writes the commit index it knows to its role record now and then (it keeps a
/// restarted replica from discarding committed entries), in the background while four writers
/// keep writing.
#[test]
fn every_member_persists_the_commit_index_it_knows_while_writes_go_on() {
    let c = Cluster::with_primary(3, &["--ack-timeout-ms", "3000"]);
    let p = &c.nodes[0];
    std::thread::scope(|s| {
        for w in 0..4 {
            s.spawn(move || {
                for i in 0..300 {
                    let r = p.req("PUT", &format!("/v1/kv/w{w}-{i}?ack=quorum"), Some("1"));
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            });
        }
    });
    let commit = p.status()["commit_index"].as_u64().unwrap();
    assert!(commit > 1200, "{commit}");
    for n in &c.nodes {
        // Persisted once the known commit is 1000 past the last one persisted (0 at start).
        wait_for("the commit index in the role record", || {
            (persisted_commit(n) > 1000).then_some(())
        });
        assert!(persisted_commit(n) <= commit);
    }
}
