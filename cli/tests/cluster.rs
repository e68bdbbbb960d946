//! The CLI against whole clusters: a playground of three nodes (status from a replica, a hung
//! primary first in the endpoint list, a per-node bench) and two shards with a pushed cluster map
//! (status of every shard, the slot of a key).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const SECRET: &str = "cli-test-secret";

/// Status from a replica shows every member with role, term, lag and readiness.
#[test]
fn status_from_a_replica_shows_the_whole_cluster() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    let (primary, term) = pg.wait_healthy();
    let replica = pg.names.iter().find(|n| **n != primary).unwrap().clone();
    let replica_url = pg.url(&replica);
    rcluster(&["--endpoint", &replica_url, "put", "k", "1"]).ok();
    let r = rcluster(&["--endpoint", &replica_url, "status"]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[1].contains(&format!("primary {primary}")), "{r:?}");
    for name in &pg.names {
        let row = lines
            .iter()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {r:?}"));
        let role = if *name == primary {
            "primary"
        } else {
            "replica"
        };
        assert!(row.contains(role), "{row}");
        assert!(row.contains(&format!(" {term} ")), "{row}");
        assert!(row.trim_end().ends_with("yes"), "{row}");
    }
    let view = rcluster(&["--endpoint", &replica_url, "status", "--json"])
        .ok()
        .json();
    let members = view["shards"][0]["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{view}");
    for m in members {
        assert!(m["lag_entries"].is_u64(), "every lag is known: {m}");
        assert_eq!(m["status"]["ready"], true, "{m}");
    }
}

/// A SIGSTOPped node first in the endpoint list costs no request timeout: every endpoint is
/// asked at once where the primary is.
#[test]
fn a_hung_node_first_in_the_list_is_skipped() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    let (primary, term) = pg.wait_healthy();
    let pid = pg.pid(&primary).unwrap();
    assert!(signal(pid, "-STOP"));
    let _resume = Resume(pid);
    let (new_primary, _) = pg.wait_primary_after(term);
    assert_ne!(new_primary, primary);
    let hung = pg.url(&primary);
    let others: Vec<String> = pg
        .names
        .iter()
        .filter(|n| **n != primary)
        .map(|n| pg.url(n))
        .collect();
    let endpoints = format!("{hung},{}", others.join(","));
    // With a 30 s request timeout, trying the hung node first would take at least 30 s a write.
    for i in 0..3 {
        let started = Instant::now();
        let r = rcluster(&[
            "--endpoint",
            &endpoints,
            "--timeout",
            "30",
            "put",
            &format!("k{i}"),
            "1",
        ]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "write {i} took {:?}",
            started.elapsed()
        );
    }
    // Alone, the hung node makes the call wait: the wait is announced, then it gives up.
    let r = rcluster(&["--endpoint", &hung, "--timeout", "2", "get", "k0"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.lines().any(|l| l.starts_with("waiting for ")),
        "{r:?}"
    );
}

/// SIGCONTs a stopped process when dropped, so a failing test leaves nothing stopped.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

#[test]
fn a_per_node_bench_loads_and_reports_every_node() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    pg.wait_healthy();
    let r = rcluster(&[
        "--endpoint",
        &pg.urls[0],
        "--json",
        "bench",
        "--per-node",
        "--concurrency",
        "3",
        "--duration",
        "2",
        "--mix",
        "get=1,put=1",
        "--consistency",
        "eventual",
    ])
    .ok()
    .json();
    let nodes = r["nodes"].as_array().unwrap();
    let mut names: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["n1", "n2", "n3"], "{r}");
    for n in nodes {
        assert!(n["total"]["ok"].as_u64().unwrap() > 0, "{n}");
        assert_eq!(n["total"]["errors"], 0, "{n}");
    }
    let sum: u64 = nodes
        .iter()
        .map(|n| n["total"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, r["total"]["count"].as_u64().unwrap());
}

/// Two shards of one node each, primaries elected and the cluster map pushed by hand (what the
/// coordinator does).
struct Shards {
    nodes: Vec<Node>,
    map: Value,
    _dir: tempfile::TempDir,
}

fn shards() -> Shards {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret = secret.to_str().unwrap().to_string();
    let auth = format!("Bearer {SECRET}");
    let mut nodes = Vec::new();
    let mut infos = Vec::new();
    for (shard, name) in ["a1", "b1"].iter().enumerate() {
        let (listener, url) = bound();
        let member = format!("{name}={url}");
        let shard_arg = shard.to_string();
        let node = Node::start_on(
            listener,
            &[
                "--name",
                name,
                "--member",
                &member,
                "--shard",
                &shard_arg,
                "--secret-file",
                &secret,
            ],
        );
        let (code, body) = request(
            &node.addr,
            "POST",
            "/internal/v1/promote",
            r#"{"term":1}"#,
            &[("Authorization", &auth)],
        );
        assert_eq!(code, 200, "promote {name}: {body}");
        infos.push(json!({"shard": shard, "members": {*name: url}, "primary": name, "term": 1}));
        nodes.push(node);
    }
    let map = json!({
        "slots": {"epoch": 1, "slots": 4096, "shards": 2,
                  "ranges": [{"start": 0, "end": 2047, "shard": 0}, {"start": 2048, "end": 4095, "shard": 1}]},
        "shards": infos,
    });
    for n in &nodes {
        let (code, body) = request(
            &n.addr,
            "POST",
            "/internal/v1/cluster-map",
            &map.to_string(),
            &[("Authorization", &auth)],
        );
        assert_eq!(code, 200, "push the map: {body}");
        wait_for("the node to be ready", DEADLINE, || {
            (http(&n.addr, "GET", "/readyz", None)?.0 == 200).then_some(())
        });
    }
    Shards {
        nodes,
        map,
        _dir: dir,
    }
}

#[test]
fn status_and_slot_show_every_shard_from_any_node() {
    let s = shards();
    for n in &s.nodes {
        let r = n.rc(&["status"]).ok();
        let text = &r.stdout;
        assert!(text.contains("2 shards"), "{text}");
        assert!(
            text.contains("shard 0  slots 0-2047 (2048)  primary a1  term 1"),
            "{text}"
        );
        assert!(
            text.contains("shard 1  slots 2048-4095 (2048)  primary b1  term 1"),
            "{text}"
        );
        for name in ["a1", "b1"] {
            let row = text
                .lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap();
            assert!(
                row.contains("primary") && row.trim_end().ends_with("yes"),
                "{row}"
            );
        }
    }
    // `slot` agrees with the hash and the map, and the key really lives there.
    let slots: rcluster_proto::SlotMap = serde_json::from_value(s.map["slots"].clone()).unwrap();
    for key in ["{user42}/profile", "{user42}/posts/7", "orders", "k9"] {
        let doc = s.nodes[0].rc(&["slot", key, "--json"]).ok().json();
        let slot = rcluster_proto::slot_of(key, 4096);
        let shard = slots.owner(slot).unwrap();
        assert_eq!(
            (doc["slot"].as_u64(), doc["shard"].as_u64()),
            (Some(slot.into()), Some(shard.into())),
            "{doc}"
        );
        assert_eq!(doc["primary"], ["a1", "b1"][shard as usize], "{doc}");
        s.nodes[1].rc(&["put", key, "1"]).ok();
        let owner = &s.nodes[shard as usize];
        let (code, _) = request(
            &owner.addr,
            "GET",
            &format!(
                "/v1/kv/{}?consistency=eventual",
                key.replace('{', "%7B").replace('}', "%7D")
            ),
            "",
            &[("Rcluster-Direct", "1")],
        );
        assert_eq!(code, 200, "{key} is stored on shard {shard}");
    }
    let r = s.nodes[1].rc(&["slot", "{user42}/a", "{user42}/b"]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    let slot_of = |l: &str| {
        l.split("slot ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        slot_of(lines[0]),
        slot_of(lines[1]),
        "one tag, one slot: {r:?}"
    );
    assert!(lines[0].contains("hash tag \"user42\""), "{r:?}");
}
