//! Starting from a damaged data directory, with real node processes and real files: a torn log
//! tail is cut; damage that would drop intact entries stops the node with the file and offset,
//! unless `--accept-data-loss` accepts the loss (reported in status, metrics and the log).

mod common;
use common::*;
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};

/// Files of `dir` whose name ends with `suffix`, sorted (oldest segment or snapshot first).
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(suffix))
        .collect();
    out.sort();
    out
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn put_all(n: &Node, keys: std::ops::Range<u64>) {
    for i in keys {
        let r = n.req("PUT", &format!("/v1/kv/k{i}"), Some(&i.to_string()));
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

fn value(n: &Node, key: &str) -> Option<Value> {
    let r = n.req("GET", &format!("/v1/kv/{key}"), None);
    match r.status {
        200 => Some(r.json()["value"].clone()),
        404 => None,
        s => panic!("GET {key}: {s} {}", r.body),
    }
}

/// The node's refusal: exit status and the one line it ends with.
fn refused(n: &mut Node) -> (i32, String) {
    let (status, stderr) = match n.try_restart() {
        Err(x) => x,
        Ok(()) => panic!("the node started; its log:\n{}", n.log()),
    };
    let line = stderr
        .lines()
        .find(|l| l.starts_with("rcluster-node: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_string();
    (status.code().unwrap_or(-1), line)
}

fn metric(n: &Node, name: &str) -> String {
    let text = n.req("GET", "/metrics", None).body;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .to_string()
}

#[test]
fn a_segment_cut_inside_its_header_is_valid_again_before_the_next_write() {
    // The cases: the newest segment truncated to 0 or 5 bytes; and what a crash right
    // after creating a segment leaves: a new, empty or half-headed segment after the others.
    for (case, newest_len, new_file) in [("cut to 0", 0, false), ("cut to 5", 5, false)]
        .into_iter()
        .chain([("new empty", 0, true), ("new half header", 5, true)])
    {
        let dir = tempfile::tempdir().unwrap();
        let mut n = Node::start(dir.path(), &[]);
        put_all(&n, 1..6);
        let last = n.status()["last_log_index"].as_u64().unwrap();
        n.kill9();
        let seg = if new_file {
            let p = dir.path().join(format!("{:020}.wal", last + 1));
            fs::write(&p, &b"RCWAL"[..newest_len]).unwrap();
            p
        } else {
            files(dir.path(), ".wal").pop().unwrap()
        };
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(newest_len as u64)
            .unwrap();
        n.restart();
        n.wait_log("cut a torn log tail");
        let s = n.status();
        assert_eq!(s["recovery"]["data_loss"], json!(false), "{case}: {s}");
        let r = n.req("PUT", "/v1/kv/after", Some("\"kept\""));
        assert_eq!(r.status, 200, "{case}: {}", r.body);
        for round in 0..2 {
            n.restart();
            assert_eq!(
                value(&n, "after"),
                Some(json!("kept")),
                "{case}: acknowledged write lost after restart {round}; log:\n{}",
                n.log()
            );
            if new_file {
                assert_eq!(value(&n, "k5"), Some(json!(5)), "{case}");
            }
        }
    }
}

#[test]
fn a_flipped_byte_mid_log_stops_the_node_until_the_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Node::start(dir.path(), &[]);
    put_all(&n, 1..101);
    n.kill9();
    let seg = files(dir.path(), ".wal").pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    flip_byte(&seg, len / 2);

    let (code, line) = refused(&mut n);
    assert_ne!(code, 0);
    assert!(line.contains(seg.to_str().unwrap()), "{line}");
    assert!(line.contains("at offset "), "{line}");
    assert!(line.contains("--accept-data-loss"), "{line}");
    assert_eq!(fs::metadata(&seg).unwrap().len(), len, "nothing was cut");
    // The offset named is where the damaged entry starts, at or before the flipped byte.
    let offset: u64 = line
        .split("at offset ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(offset > 8 && offset <= len / 2, "{line}");

    // Still refused on a second try: nothing changed on disk.
    assert_ne!(refused(&mut n).0, 0);

    n.set_args(&["--accept-data-loss"]);
    n.restart();
    let s = n.status();
    let cut = &s["recovery"]["truncation"];
    assert_eq!(s["recovery"]["data_loss"], json!(true), "{s}");
    assert_eq!(cut["data_loss"], json!(true));
    assert_eq!(cut["offset"], json!(offset));
    assert_eq!(cut["segment"], json!(seg.to_str().unwrap()));
    assert_eq!(metric(&n, "rcluster_recovery_data_loss"), "1");
    assert!(n.log().contains("ERROR"), "logged at ERROR:\n{}", n.log());
    let kept = cut["last_valid_index"].as_u64().unwrap();
    assert!((2..100).contains(&kept), "{s}");
    assert_eq!(value(&n, "k1"), Some(json!(1)));
    assert_eq!(value(&n, "k100"), None);
    // The log goes on from the cut, and the next start needs no flag.
    assert_eq!(n.req("PUT", "/v1/kv/new", Some("1")).status, 200);
    n.set_args(&[]);
    n.restart();
    assert!(n.status().get("recovery").is_none());
    assert_eq!(value(&n, "new"), Some(json!(1)));
}

#[test]
fn a_torn_last_entry_is_still_cut_and_the_node_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Node::start(dir.path(), &[]);
    put_all(&n, 1..101);
    n.kill9();
    let seg = files(dir.path(), ".wal").pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    n.restart();
    n.wait_log("cut a torn log tail");
    assert!(n.log().contains("WARN"));
    let s = n.status();
    assert_eq!(s["recovery"]["data_loss"], json!(false), "{s}");
    assert_eq!(metric(&n, "rcluster_recovery_data_loss"), "0");
    assert_eq!(value(&n, "k99"), Some(json!(99)));
    assert_eq!(value(&n, "k100"), None);
}

#[test]
fn damage_in_an_older_segment_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Node::start(dir.path(), &["--segment-bytes", "4096"]);
    put_all(&n, 1..201);
    n.kill9();
    let segs = files(dir.path(), ".wal");
    assert!(segs.len() >= 2, "{segs:?}");
    let victim = &segs[0];
    flip_byte(victim, fs::metadata(victim).unwrap().len() / 2);
    let (code, line) = refused(&mut n);
    assert_ne!(code, 0);
    assert!(line.contains(victim.to_str().unwrap()), "{line}");
    assert!(line.contains("newer segment"), "{line}");
    assert_eq!(files(dir.path(), ".wal"), segs, "nothing was removed");
}

#[test]
fn a_damaged_snapshot_is_replaced_only_when_the_log_covers_it() {
    // One big segment: compaction keeps it, so an older state plus the log still reach every
    // entry the damaged snapshot held.
    let dir = tempfile::tempdir().unwrap();
    let mut n = Node::start(dir.path(), &["--snapshot-entries", "50"]);
    put_all(&n, 1..121);
    // The first snapshot comes once 50 entries are logged; the last leaves fewer than 50 after it.
    wait_for("a snapshot", || {
        (n.status()["snapshot_index"].as_u64() > Some(120 - 50)).then_some(())
    });
    n.kill9();
    let snap = files(dir.path(), ".snap").pop().unwrap();
    flip_byte(&snap, fs::metadata(&snap).unwrap().len() / 2);
    n.restart();
    let s = n.status();
    assert_eq!(s["recovery"]["data_loss"], json!(false), "{s}");
    assert_eq!(
        s["recovery"]["damaged_snapshots"][0]["file"],
        json!(snap.to_str().unwrap())
    );
    // Set aside (a fresh snapshot of the same index may take its name once the node runs).
    assert!(PathBuf::from(format!("{}.damaged", snap.display())).exists());
    for i in [1, 60, 120] {
        assert_eq!(value(&n, &format!("k{i}")), Some(json!(i)));
    }
}

#[test]
fn a_damaged_snapshot_whose_entries_are_gone_from_the_log_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--snapshot-entries", "50", "--segment-bytes", "4096"];
    let mut n = Node::start(dir.path(), &args);
    put_all(&n, 1..301);
    // Compaction dropped the first segments: the log no longer starts at index 1. (The last
    // snapshot leaves fewer than 50 entries after it, so one comes past 250.)
    wait_for("a snapshot and compaction", || {
        let segs = files(dir.path(), ".wal");
        (n.status()["snapshot_index"].as_u64() >= Some(250)
            && !segs[0].ends_with(format!("{:020}.wal", 1)))
        .then_some(())
    });
    n.kill9();
    // Only the newest snapshot is left, so nothing older can stand in for it.
    let mut snaps = files(dir.path(), ".snap");
    let newest = snaps.pop().unwrap();
    for s in snaps {
        fs::remove_file(s).unwrap();
    }
    let len = fs::metadata(&newest).unwrap().len();
    flip_byte(&newest, len / 2);
    let segs = files(dir.path(), ".wal");

    let (code, line) = refused(&mut n);
    assert_ne!(code, 0);
    assert!(line.contains("damaged snapshot"), "{line}");
    assert!(line.contains(newest.to_str().unwrap()), "{line}");
    assert!(line.contains("at offset "), "{line}");
    assert!(line.contains("--accept-data-loss"), "{line}");
    assert_eq!(files(dir.path(), ".wal"), segs, "nothing was removed");
    assert!(newest.exists());

    let mut with_flag = args.to_vec();
    with_flag.push("--accept-data-loss");
    n.set_args(&with_flag);
    n.restart();
    let s = n.status();
    assert_eq!(s["recovery"]["data_loss"], json!(true), "{s}");
    assert_eq!(
        s["recovery"]["damaged_snapshots"][0]["file"],
        json!(newest.to_str().unwrap())
    );
    assert_eq!(metric(&n, "rcluster_recovery_data_loss"), "1");
    // What is left is consistent and usable, and the next start is clean.
    assert_eq!(n.req("PUT", "/v1/kv/new", Some("1")).status, 200);
    n.set_args(&args);
    n.restart();
    assert!(n.status().get("recovery").is_none(), "{}", n.status());
    assert_eq!(value(&n, "new"), Some(json!(1)));
}
