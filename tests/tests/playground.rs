//! The playground itself, driven like a user would: the `rcluster` CLI (status, switchover)
//! against its nodes, its control endpoint, a clean stop, and resuming the same folder.

use std::process::Command;

use rcluster_e2e::{DEADLINE, Options, Playground, alive, bin, get_json, http, serial, wait_for};
use serde_json::Value;

fn rcluster(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("rcluster"))
        .args(["--endpoint", endpoint])
        .args(args)
        .output()
        .expect("run rcluster");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_status_and_switchover_against_the_playground() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    let (primary, term) = pg.wait_healthy();
    assert_eq!(primary, "n1", "the first member is the first primary");
    assert!(
        pg.output()
            .contains(&format!("playground ready: primary n1 term {term}"))
    );
    for url in &pg.urls {
        assert!(pg.output().contains(url), "{url} printed");
    }

    // `rcluster status`, asked of a replica, lists every member with its role and lag (a
    // NAME ROLE TERM APPLIED LAG URL READY table per shard).
    let (code, out, err) = rcluster(&pg.urls[1], &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("primary n1"), "{out}");
    for (name, url) in pg.names.iter().zip(&pg.urls) {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()) && l.contains(url))
            .unwrap_or_else(|| panic!("no member line for {name}:\n{out}"));
        let role = if name == "n1" { "primary" } else { "replica" };
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.get(1), Some(&role), "{line}");
        assert!(
            cols.get(4).is_some_and(|lag| lag.parse::<u64>().is_ok()),
            "{line}"
        );
    }

    // Planned switchover to a named replica, through a replica's endpoint.
    let (code, out, err) = rcluster(&pg.urls[1], &["switchover", "--to", "n3"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("switchover done: primary n3 (was n1)"),
        "{out}"
    );
    let (p, t) = pg.wait_healthy();
    assert_eq!(p, "n3");
    assert!(t > term);
    // To the most advanced replica, with JSON output.
    let (code, out, err) = rcluster(&pg.urls[2], &["--json", "switchover"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["from"], "n3");
    assert_ne!(v["to"], "n3");
    // A target that is not a member: the node refuses it (exit 1).
    let (code, _, err) = rcluster(&pg.urls[0], &["switchover", "--to", "n9"]);
    assert_eq!(code, 1, "{err}");

    // The CLI may see the new primary a moment before the playground records the end.
    let s = wait_for("two switchovers recorded", DEADLINE, || {
        let s = pg.status();
        (s["switchovers_total"] == 2).then_some(s)
    });
    assert_eq!(s["failovers_total"], 0, "a switchover is not a failover");
    let decisions = pg.decisions();
    assert!(
        decisions.iter().any(|d| d["text"]
            .as_str()
            .unwrap_or("")
            .starts_with("switchover done")),
        "{decisions:?}"
    );
    let metrics = http(&pg.control, "GET", "/metrics", None).expect("metrics");
    assert_eq!(metrics.0, 200);
    for family in [
        "rcluster_operator_failovers_total 0",
        "rcluster_operator_failover_duration_seconds_count 0",
        "rcluster_operator_clusters{phase=\"Running\"} 1",
        "rcluster_playground_term ",
    ] {
        assert!(
            metrics.1.contains(family),
            "{family} missing:\n{}",
            metrics.1
        );
    }
}

#[test]
fn stops_cleanly_and_resumes_the_same_cluster() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = Playground::start_in(tmp.path(), Options::default(), None);
    let (_, term) = pg.wait_healthy();
    let secret = pg.secret();
    let rt = rcluster_e2e::runtime();
    let client = pg.client();
    let put = rt.block_on(client.put("resume/k", &serde_json::json!("kept"), &Default::default()));
    put.expect("put");
    let pids: Vec<u32> = pg.names.iter().filter_map(|n| pg.pid(n)).collect();
    assert_eq!(pids.len(), 3);
    let base = pg.base_port;

    assert!(pg.stop(), "SIGTERM: exit 0\n{}", pg.output());
    assert!(pg.output().contains("playground stopped"));
    for pid in pids {
        assert!(!alive(pid), "node {pid} still runs");
    }
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("state.json")).unwrap())
            .unwrap();
    assert_eq!(saved["coordinator"]["term"], term);

    // Same folder: same secret, a later term, the data is still there.
    let pg = Playground::start_in(tmp.path(), Options::default(), Some(base));
    assert!(
        pg.output().contains("resuming the cluster"),
        "{}",
        pg.output()
    );
    let (_, resumed) = pg.wait_healthy();
    assert!(resumed >= term);
    assert_eq!(pg.secret(), secret);
    let client = pg.client();
    let got = rt
        .block_on(client.get("resume/k", None))
        .expect("get")
        .expect("the record survived the restart");
    assert_eq!(got.value, serde_json::json!("kept"));
    assert_eq!(pg.status()["failovers_total"], 0);

    // A second playground on the same folder is refused while this one runs.
    let out = Command::new(bin("rcluster-operator"))
        .args([
            "playground",
            "--quiet",
            "--base-port",
            &(base + 50).to_string(),
        ])
        .arg("--dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another playground"), "{err}");
}

#[test]
fn held_member_stays_down_and_status_reports_it() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    pg.wait_healthy();
    pg.stop_member("n2", false);
    wait_for("n2 to stop", DEADLINE, || {
        let s = get_json(&pg.control, "/status")?;
        let m = s["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == "n2")?
            .clone();
        (m["held"] == true && m["pid"].is_null() && m["reachable"] == false).then_some(())
    });
    assert_eq!(pg.status()["phase"], "Degraded");
    pg.start_member("n2");
    pg.wait_healthy();
    assert_eq!(pg.status()["members"][1]["restarts"], 1);
}

/// A member held down is down for whoever sends to it, as a dead process is: a request sent to
/// its port meanwhile (the playground keeps the socket, so the kernel still accepts the
/// connection) gets no answer and is not served by the member's next start. A primary's append
/// that waited there was how a killed old primary's unreplicated entries reached a replica
/// after the old primary was gone (`rejoin.rs`).
#[test]
fn a_request_sent_to_a_held_member_is_not_served_when_it_starts() {
    use std::io::{Read, Write};
    let _turn = serial();
    let pg = Playground::start(Options::default());
    let (primary, _) = pg.wait_healthy();
    let down = pg.names.iter().find(|n| **n != primary).unwrap().clone();
    pg.stop_member(&down, true);
    wait_for("the member down", DEADLINE, || {
        pg.pid(&down).is_none().then_some(())
    });

    let addr = pg.url(&down).trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).expect("the kernel accepts");
    let body = "\"late\"";
    let req = format!(
        "PUT /v1/kv/playground/sent-while-down HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).expect("send");
    pg.start_member(&down);
    pg.wait_healthy();

    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "the restarted member answered a request sent while it was down: {}",
        String::from_utf8_lossy(&answer)
    );
    let path = "/v1/kv/playground/sent-while-down?consistency=linearizable";
    assert_eq!(
        http(&pg.url(&primary), "GET", path, None).map(|r| r.0),
        Some(404)
    );
}

/// The playground's `reconciles_total` counter (both outcomes): one per coordination cycle.
fn cycles(pg: &Playground) -> u64 {
    let (_, text) = http(&pg.control, "GET", "/metrics", None).expect("metrics");
    text.lines()
        .filter(|l| l.starts_with("rcluster_operator_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A switchover asked for while the primary is cut off from its replicas (it answers, but not
/// ready) waits for it: the request stays on the primary node, and once the replicas are back
/// the switchover runs. The controller has always kept such a request; the playground used to
/// drop it as refused.
#[test]
fn a_switchover_asked_of_an_unhealthy_primary_runs_once_it_recovers() {
    let _turn = serial();
    let pg = Playground::start(Options {
        // No failover while the primary is cut off: the request must outlive the wait.
        detection_window_ms: 600_000,
        ..Options::default()
    });
    let (primary, term) = pg.wait_healthy();
    let replicas: Vec<String> = pg
        .names
        .iter()
        .filter(|n| **n != primary)
        .cloned()
        .collect();
    let target = replicas[0].clone();
    for r in &replicas {
        pg.stop_member(r, true);
    }
    wait_for("the lone primary to report not ready", DEADLINE, || {
        (pg.node_status(&primary)?["ready"] == false).then_some(())
    });
    let body = format!(r#"{{"to":"{target}"}}"#);
    let answer = http(&pg.url(&primary), "POST", "/v1/switchover", Some(&body));
    assert_eq!(answer.as_ref().map(|a| a.0), Some(202), "{answer:?}");
    // Several coordination cycles see the request while the primary is not ready.
    let seen = cycles(&pg);
    wait_for("three coordination cycles", DEADLINE, || {
        (cycles(&pg) >= seen + 3).then_some(())
    });
    let request = pg.node_status(&primary).expect("primary status");
    assert!(
        request["switchover_request"]["to"] == target.as_str(),
        "the request was dropped while the primary was unhealthy: {request}"
    );
    for r in &replicas {
        pg.start_member(r);
    }
    let (now, after) = pg.wait_primary_after(term);
    assert_eq!(now, target, "the switchover it asked for");
    let s = wait_for("the switchover recorded", DEADLINE, || {
        let s = pg.status();
        (s["switchovers_total"] == 1).then_some(s)
    });
    assert_eq!(s["failovers_total"], 0, "{s}");
    assert_eq!(s["last_switchover"]["term"], after, "{s}");
}

/// A `kill -9` of the playground takes its nodes with it: no node keeps running on a data folder
/// nobody coordinates (or that a test has deleted).
#[test]
fn nodes_die_with_a_killed_playground() {
    let _turn = serial();
    let mut pg = Playground::start(Options::default());
    pg.wait_healthy();
    let pids: Vec<u32> = pg.names.iter().filter_map(|n| pg.pid(n)).collect();
    assert_eq!(pids.len(), pg.names.len());
    assert!(pg.kill9_playground(), "kill -9 of the playground");
    wait_for("every node to exit", DEADLINE, || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
}

/// The coordinator's member list as the playground reports it, once no change is in progress.
fn settled_members(pg: &Playground) -> Option<Vec<String>> {
    let s = pg.status();
    let co = &s["coordinator"];
    if !co["previous_members"].is_null() {
        return None;
    }
    let list = co["members"].as_array()?;
    Some(
        list.iter()
            .filter_map(|m| m.as_str().map(String::from))
            .collect(),
    )
}

/// `--replicas` changed on a restart of the same folder: the member list follows in a new term.
/// n4 joins, fetches what the others hold and serves it; back to three, n4 leaves the member list
/// and its process stops.
#[test]
fn replicas_change_when_the_same_folder_restarts() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = Playground::start_in(tmp.path(), Options::default(), None);
    pg.wait_healthy();
    let rt = rcluster_e2e::runtime();
    let put = rt.block_on(pg.client().put(
        "scale/k",
        &serde_json::json!("before"),
        &Default::default(),
    ));
    put.expect("put");
    let base = pg.base_port;
    assert!(pg.stop(), "{}", pg.output());

    let four = Options {
        replicas: 4,
        ..Options::default()
    };
    let mut pg = Playground::start_in(tmp.path(), four, Some(base));
    let four_names: Vec<String> = (1..=4).map(|i| format!("n{i}")).collect();
    wait_for("four members", DEADLINE, || {
        (settled_members(&pg)? == four_names && pg.healthy().is_some()).then_some(())
    });
    let n4 = wait_for("n4 to hold the record", DEADLINE, || {
        let v = get_json(&pg.url("n4"), "/v1/kv/scale/k?consistency=eventual")?;
        (v["value"] == "before").then_some(v)
    });
    assert_eq!(n4["value"], "before");
    assert!(pg.stop(), "{}", pg.output());

    let pg = Playground::start_in(tmp.path(), Options::default(), Some(base));
    wait_for("three members again", DEADLINE, || {
        (settled_members(&pg)? == pg.names && pg.healthy().is_some()).then_some(())
    });
    wait_for("n4 to stop", DEADLINE, || {
        let s = pg.status();
        let listed = s["members"].as_array()?.iter().any(|m| m["name"] == "n4");
        let running = std::net::TcpStream::connect(("127.0.0.1", base + 4)).is_ok();
        (!listed && !running).then_some(())
    });
    let got = rt
        .block_on(pg.client().get("scale/k", None))
        .expect("get")
        .expect("the record is still there");
    assert_eq!(got.value, serde_json::json!("before"));
}

/// A primary whose process ended is replaced without waiting out the detection window: the
/// playground keeps the node's socket, so its port never refuses, and only the supervisor knows
/// the process is gone. The window here is far longer than the test's deadline, so a new primary
/// within it can only come from that certainty.
#[test]
fn a_primary_whose_process_ended_is_replaced_without_waiting_out_the_window() {
    let _turn = serial();
    let pg = Playground::start(Options {
        detection_window_ms: 600_000,
        ..Options::default()
    });
    let (old, term) = pg.wait_healthy();
    pg.stop_member(&old, true);
    let (new, _) = pg.wait_primary_after(term);
    assert_ne!(
        new, old,
        "the stopped member stays down, so another one leads"
    );
    // Nor did the loop wait on it for anything else: the new cluster map went only to members
    // that answered (a push to the stopped one would hang until its timeout and be logged).
    let waited: Vec<Value> = pg
        .decisions()
        .into_iter()
        .filter(|d| {
            d["text"]
                .as_str()
                .is_some_and(|t| t.starts_with(&format!("cannot send the cluster map to {old}")))
        })
        .collect();
    assert!(waited.is_empty(), "{waited:?}");
    pg.start_member(&old);
    pg.wait_healthy();
}

/// The `rcluster_worker_threads` each node of the playground reports.
fn worker_threads(pg: &Playground) -> Vec<usize> {
    pg.urls
        .iter()
        .map(|url| {
            let (code, body) = http(url, "GET", "/metrics", None).expect("metrics answer");
            assert_eq!(code, 200, "{body}");
            body.lines()
                .find_map(|l| l.strip_prefix("rcluster_worker_threads "))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{url} reports no worker threads:\n{body}"))
        })
        .collect()
}

#[test]
fn each_node_serves_on_its_share_of_the_cpus_unless_told_otherwise() {
    let _turn = serial();
    let cpus = std::thread::available_parallelism().unwrap().get();
    let pg = Playground::start(Options::default());
    pg.wait_healthy();
    assert_eq!(worker_threads(&pg), vec![cpus.div_ceil(3); 3]);
    drop(pg);
    // A thread count of the user's, after `--`, is the one used.
    let mut opts = Options::default();
    let asked = cpus + 2;
    opts.node_args
        .extend(["--worker-threads".to_string(), asked.to_string()]);
    let pg = Playground::start(opts);
    pg.wait_healthy();
    assert_eq!(worker_threads(&pg), vec![asked; 3]);
}
