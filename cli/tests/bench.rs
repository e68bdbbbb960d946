//! `rcluster bench` against real nodes: every API, honest deletes and pulls, the report and its
//! per-second series, plots, comparisons, progress lines, Ctrl-C, open loop and exit codes.

mod support;

use std::process::Stdio;

use serde_json::Value;
use support::*;

fn check_summary(s: &Value) {
    let n = |f: &str| {
        s[f].as_u64()
            .unwrap_or_else(|| panic!("{f} missing in {s}"))
    };
    assert_eq!(n("count"), n("ok") + n("errors"), "{s}");
    assert!(s["throughput"].as_f64().unwrap() > 0.0, "{s}");
    assert!(
        n("p50_us") <= n("p90_us") && n("p90_us") <= n("p99_us") && n("p99_us") <= n("max_us"),
        "{s}"
    );
    assert!(n("p50_us") > 0, "{s}");
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn api_names(report: &Value) -> Vec<String> {
    report["apis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["api"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn bench_reports_per_api_latency_and_throughput() {
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.json");
    let file_arg = file.to_str().unwrap();
    let r = node
        .rc(&[
            "bench",
            "--concurrency",
            "2",
            "--threads",
            "2",
            "--requests",
            "200",
            "--mix",
            "put=50,get=50",
            "--keys",
            "50",
            "--value-size",
            "64",
            "--output",
            file_arg,
        ])
        .ok();
    assert!(r.stdout.contains("p99"), "{r:?}");
    assert!(r.stdout.contains("generator CPU"), "{r:?}");
    let report = read_json(&file);
    assert_eq!(report["total"]["count"], 200, "{report}");
    assert_eq!(report["total"]["errors"], 0, "{report}");
    assert_eq!(api_names(&report), ["put", "get"]);
    for s in report["apis"].as_array().unwrap() {
        check_summary(s);
    }
    check_summary(&report["total"]);
    assert_eq!(report["config"]["concurrency"], 2);
    assert!(report["elapsed_secs"].as_f64().unwrap() > 0.0);
    // The generator's own CPU over the run, and the threads its workers ran on.
    let g = &report["generator"];
    assert!(g["cpu_secs"].as_f64().unwrap() > 0.0, "{report}");
    assert!(g["cpu_us_per_request"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(g["threads"], 2, "{report}");
    assert!(g.get("warning").is_some(), "a warning or null: {report}");
}

/// All sixteen APIs in one run: each is measured, none fails, and what a run consumes (keys to
/// delete, messages to pull, topics and subscriptions to remove) is refilled unmeasured.
#[test]
fn every_api_is_covered_and_consumers_are_refilled() {
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.json");
    let mix = "put=1,get=1,delete=1,incr=1,list=1,create_topic=1,delete_topic=1,list_topics=1,\
               publish=1,subscribe=1,unsubscribe=1,pull=1,read=1,stream=1,watch=1,status=1";
    let r = node.rc(&[
        "bench",
        "--concurrency",
        "3",
        "--duration",
        "3",
        "--keys",
        "30",
        "--mix",
        mix,
        "--output",
        file.to_str().unwrap(),
    ]);
    let report = read_json(&file);
    assert_eq!(r.code, 0, "{r:?}");
    let mut names = api_names(&report);
    names.sort();
    let mut want: Vec<String> = mix
        .split(',')
        .map(|p| p.split('=').next().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(names, want, "{report}");
    assert_eq!(report["total"]["errors"], 0, "{report}");
    for s in report["apis"].as_array().unwrap() {
        assert!(s["ok"].as_u64().unwrap() > 0, "{s}");
    }
    let refills = &report["refills"];
    assert!(refills["puts_for_delete"].as_u64().unwrap() > 0, "{report}");
    assert!(
        refills["publish_batches_for_pull"].as_u64().unwrap() > 0,
        "{report}"
    );
    // Topics and subscriptions the run created are gone again.
    let topics = node.rc(&["topic", "list", "--json"]).ok().json();
    let names: Vec<&str> = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bench"], "{topics}");
    let subs = &topics["topics"][0]["subscriptions"];
    assert_eq!(
        subs.as_array().unwrap().len(),
        1,
        "only the pull subscription: {subs}"
    );
}

#[test]
fn deletes_and_pulls_always_find_something() {
    let node = Node::start();
    let r = node
        .rc(&[
            "--json",
            "bench",
            "--concurrency",
            "2",
            "--duration",
            "2",
            "--api",
            "delete",
        ])
        .ok()
        .json();
    assert!(r["total"]["ok"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["total"]["errors"], 0, "no delete of a missing key: {r}");
    let r = node
        .rc(&[
            "--json",
            "bench",
            "--concurrency",
            "2",
            "--duration",
            "2",
            "--api",
            "pull",
            "--pull-max",
            "5",
        ])
        .ok()
        .json();
    let pulls = r["total"]["ok"].as_u64().unwrap();
    assert!(pulls > 0, "{r}");
    // The subscription moved by (nearly) a full batch per pull: pulls found messages.
    let topics = node.rc(&["topic", "list", "--json"]).ok().json();
    let cursor = topics["topics"][0]["subscriptions"][0]["cursor"]
        .as_u64()
        .unwrap();
    assert!(
        cursor >= pulls * 5 * 9 / 10,
        "{pulls} pulls moved the cursor to {cursor}: {r}"
    );
}

#[test]
fn progress_plot_series_and_comparison() {
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    let svg = dir.path().join("run.svg");
    let r = node
        .rc(&[
            "bench",
            "--concurrency",
            "2",
            "--duration",
            "3",
            "--mix",
            "put=1,get=1",
            "--output",
            a.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ])
        .ok();
    // A progress line a second on stderr (not a terminal: one line each).
    let progress: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert!(progress.len() >= 2, "{r:?}");
    assert!(
        progress[0].contains("req/s") && progress[0].contains("p99"),
        "{r:?}"
    );
    let report = read_json(&a);
    let series = report["series"].as_array().unwrap();
    assert!(series.len() >= 3, "a point per second: {report}");
    for p in series {
        assert!(p["apis"].as_array().unwrap().len() == 2, "{p}");
    }
    let sum: u64 = series
        .iter()
        .map(|p| p["total"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        sum,
        report["total"]["count"].as_u64().unwrap(),
        "the series adds up"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains(r#"data-name="put p99""#),
        "{text}"
    );
    node.rc(&[
        "bench",
        "--duration",
        "1",
        "--api",
        "get",
        "--output",
        b.to_str().unwrap(),
    ])
    .ok();
    let cmp_svg = dir.path().join("cmp.svg");
    let r = rcluster(&[
        "bench",
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--plot",
        cmp_svg.to_str().unwrap(),
    ])
    .ok();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("get") && l.contains(" b ")),
        "{r:?}"
    );
    assert!(
        r.stdout.contains('%'),
        "changes against the first run: {r:?}"
    );
    let text = std::fs::read_to_string(&cmp_svg).unwrap();
    assert!(text.contains(r#"data-run="b""#), "{text}");
    let r = rcluster(&["bench", "compare", a.to_str().unwrap(), "/nonexistent.json"]);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn a_run_where_every_request_failed_exits_non_zero() {
    let (_held, dead) = refusing_addr();
    let r = rcluster(&[
        "--endpoint",
        &dead,
        "bench",
        "--duration",
        "1",
        "--api",
        "status",
        "-q",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stdout.contains("transport"),
        "the table still shows what happened: {r:?}"
    );
    assert!(r.stderr.contains("every request failed"), "{r:?}");
    let node = Node::start();
    let r = node.rc(&[
        "bench",
        "--duration",
        "1",
        "--api",
        "pull",
        "--topic",
        "no such!",
        "-q",
    ]);
    assert_eq!(r.code, 2, "a bad topic name is a usage error: {r:?}");
}

#[test]
fn ctrl_c_prints_the_partial_results() {
    let node = Node::start();
    let mut child = KillOnDrop(
        command(&[
            "--endpoint",
            &node.url,
            "bench",
            "--duration",
            "60",
            "--api",
            "put",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    // Once a progress line is out, the run is measuring.
    wait_for("a progress line", DEADLINE, || {
        rx.try_iter().find(|l| l.starts_with('['))
    });
    assert!(signal(child.0.id(), "-INT"));
    let status = wait_for("the bench to stop", DEADLINE, || {
        child.0.try_wait().unwrap()
    });
    let out = std::io::read_to_string(child.0.stdout.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(
        out.contains("(interrupted)") && out.contains("put"),
        "{out}"
    );
}

#[test]
fn open_loop_keeps_to_its_rate() {
    let node = Node::start();
    let r = node
        .rc(&[
            "--json",
            "bench",
            "--rate",
            "40",
            "--duration",
            "2",
            "--concurrency",
            "4",
            "--api",
            "get",
        ])
        .ok()
        .json();
    let count = r["total"]["count"].as_u64().unwrap();
    // Never more than the schedule allows (40/s for 2 s, plus a request per worker at the edge).
    assert!(count > 0 && count <= 84, "{r}");
    assert_eq!(r["config"]["rate"], 40.0);
}
