//! Bench arguments, the report's verdict and text, and the plots of a made-up run.

use super::record::{Point, SharedRecorder, Totals};
use super::report::Inputs;
use super::*;

#[derive(clap::Parser)]
struct T {
    #[command(flatten)]
    b: BenchArgs,
}

fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
    use clap::Parser;
    T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|t| t.b)
}

#[test]
fn bench_args_parse() {
    let b = parse(&[
        "--concurrency",
        "2",
        "--requests",
        "200",
        "--mix",
        "put=1,get=1",
    ])
    .unwrap();
    assert_eq!((b.concurrency, b.requests), (2, Some(200)));
    assert_eq!(b.mix().0.len(), 2);
    let b = parse(&["--api", "incr"]).unwrap();
    assert_eq!(b.mix(), Mix(vec![(BenchApi::Incr, 1)]));
    let b = parse(&["--api", "delete_topic", "--rate", "500", "--per-node"]).unwrap();
    assert_eq!((b.rate, b.per_node), (Some(500.0), true));
    for bad in [
        &["--api", "put", "--mix", "get=1"][..],
        &["--concurrency", "0"],
        &["--duration", "0"],
        &["--duration", "100000"],
        &["--requests", "0"],
        &["--warmup", "-1"],
        &["--rate", "0"],
        &["--rate", "fast"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

/// A report of a run of `seconds` seconds where puts always succeed and gets fail as given.
fn made_up(seconds: u64, get_error: Option<&str>) -> Report {
    made_up_with_cpu(seconds, get_error, 0.5)
}

/// [`made_up`], where the generator used `cpu_secs` of CPU on its one thread.
fn made_up_with_cpu(seconds: u64, get_error: Option<&str>, cpu_secs: f64) -> Report {
    let rec: SharedRecorder = SharedRecorder::default();
    let mut totals = Totals::default();
    for s in 1..=seconds {
        {
            let mut r = lock(&rec);
            for i in 0..100 {
                r.stats
                    .entry((0, BenchApi::Put))
                    .or_default()
                    .record_ok(500 + i * s);
                let get = r.stats.entry((0, BenchApi::Get)).or_default();
                match get_error {
                    Some(code) => get.record_error(code),
                    None => get.record_ok(200),
                }
            }
        }
        totals.collect(std::slice::from_ref(&rec), s as f64, 1.0);
    }
    let args = parse(&["--mix", "put=1,get=1"]).unwrap();
    Report::build(Inputs {
        args: &args,
        mix: &args.mix(),
        targets: &[Target {
            name: "n1".into(),
            url: "http://127.0.0.1:7001".into(),
        }],
        totals: &totals,
        elapsed: seconds as f64,
        interrupted: false,
        cpu_secs,
        threads: 1,
        refills: serde_json::json!({}),
        left_behind: 0,
    })
}

#[test]
fn reports_have_a_series_and_a_verdict() {
    let r = made_up(3, None);
    assert_eq!(r.series.len(), 3);
    assert_eq!(r.total.count, 600);
    assert_eq!(r.series[1].apis.len(), 2);
    assert_eq!(r.generator["cpu_us_per_request"], 833.33);
    r.verdict().unwrap();
    assert!(
        r.text()
            .contains("generator CPU 0.50 s (833.3 µs per request)"),
        "{}",
        r.text()
    );
    // A report survives its JSON round trip (what `bench compare` reads).
    let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back.series.len(), 3);

    let mut all_failed = made_up(1, Some("transport"));
    all_failed.total.ok = 0;
    all_failed.total.error_codes = [("transport".to_string(), 200)].into();
    let f = all_failed.verdict().unwrap_err();
    assert_eq!((f.exit_code(), f.code().as_str()), (3, "all_failed"));
    all_failed.total.error_codes = [("not_found".to_string(), 200)].into();
    assert_eq!(all_failed.verdict().unwrap_err().exit_code(), 1);
}

#[test]
fn a_busy_generator_is_named_in_the_report() {
    use super::report::busy_warning;
    // 0.5 s of CPU over 3 s: a sixth of one thread.
    let r = made_up(3, None);
    assert_eq!(
        r.generator["warning"],
        serde_json::Value::Null,
        "{}",
        r.generator
    );
    assert!(!r.text().contains("warning"), "{}", r.text());
    // Over 70 % of a core per thread: more threads would help while there are cores for them.
    let w = busy_warning(8.0, 10.0, 1, 4).unwrap();
    assert!(
        w.contains("1 worker thread(s) 80 % busy") && w.contains("--threads 2"),
        "{w}"
    );
    let w = busy_warning(15.0, 10.0, 2, 2).unwrap();
    assert!(w.contains("a thread per core already"), "{w}");
    assert!(busy_warning(6.9, 10.0, 1, 4).is_none());
    // More threads than cores: the machine is the limit.
    let w = busy_warning(15.0, 10.0, 4, 2).unwrap();
    assert!(w.contains("75 % of this machine's 2 cores"), "{w}");
    assert!(busy_warning(1.0, 0.0, 1, 1).is_none(), "nothing measured");
    // The report carries the warning in its JSON and its text.
    let busy = made_up_with_cpu(2, None, 1.8);
    let w = busy.generator["warning"].as_str().unwrap_or_default();
    assert!(w.contains("90 % busy"), "{}", busy.generator);
    assert!(busy.text().contains(w), "{}", busy.text());
}

#[test]
fn plots_draw_a_line_per_api_and_a_bar_per_run() {
    let r = made_up(5, None);
    let svg = plot::run_svg(&r);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // Throughput: put, get, total; latency: p50 and p99 of each.
    for name in [
        "put", "get", "total", "put p50", "put p99", "get p50", "get p99",
    ] {
        let tag = format!(r#"data-name="{name}""#);
        let line = svg.lines().find(|l| l.contains(&tag));
        let line = line.unwrap_or_else(|| panic!("no series {name}"));
        let points = line.split("points=\"").nth(1).unwrap();
        assert_eq!(points.split(' ').count(), 5, "{name}: a point per second");
    }
    let other = made_up(5, None);
    let svg = plot::compare_svg(&[("a".into(), r), ("b".into(), other)]);
    // Three panels × two APIs × two runs.
    assert_eq!(svg.matches(r#"class="bar""#).count(), 12);
}

#[test]
fn compare_tables_show_the_change_against_the_first_run() {
    let a = made_up(2, None);
    let mut b = made_up(2, None);
    for s in b.apis.iter_mut().chain(std::iter::once(&mut b.total)) {
        s.throughput *= 1.5;
    }
    let t = compare::table(&[("before".into(), a), ("after".into(), b)]);
    let line = t
        .lines()
        .find(|l| l.starts_with("put") && l.contains("after"))
        .unwrap();
    assert!(line.contains("+50.0%"), "{t}");
}

#[test]
fn progress_lines_name_each_api() {
    let r = made_up(1, None);
    let p = Point {
        t: 1.0,
        secs: 1.0,
        apis: r.apis.clone(),
        total: r.total.clone(),
    };
    let line = progress::line(&p);
    assert!(line.starts_with("[   1 s]"), "{line}");
    assert!(
        line.contains("req/s") && line.contains("(put 100/s, get 100/s)"),
        "{line}"
    );
}

#[test]
fn incr_keys_are_kept_apart() {
    let plan = Plan {
        mix: Mix(vec![(BenchApi::Put, 1)]),
        value: serde_json::json!("x"),
        keys: 10,
        key_prefix: "b/".into(),
        topic: "t".into(),
        pull_max: 1,
        ack: None,
        consistency: None,
        delivery_timeout: Duration::from_secs(1),
        backlog: AtomicI64::new(0),
        refills: Refills::default(),
        prebuilt: Default::default(),
    };
    assert_eq!(plan.key(BenchApi::Put, 3), "b/3");
    assert_eq!(plan.key(BenchApi::Incr, 3), "b/n/3");
    assert!(
        plan.call(BenchApi::Incr)
            .unwrap()
            .path
            .starts_with("/v1/kv/b/n/")
    );
    assert!(
        plan.call(BenchApi::Delete).is_err(),
        "delete needs the worker's keys"
    );
}

#[test]
fn requests_are_built_before_the_run() {
    let mut plan = Plan {
        mix: parse_mix("put=1,get=1,status=1,delete=1").unwrap(),
        value: serde_json::json!("xyz"),
        keys: 10,
        key_prefix: "b/".into(),
        topic: "t".into(),
        pull_max: 1,
        ack: None,
        consistency: None,
        delivery_timeout: Duration::from_secs(1),
        backlog: AtomicI64::new(0),
        refills: Refills::default(),
        prebuilt: Default::default(),
    };
    plan.prebuild();
    let puts = &plan.prebuilt[&BenchApi::Put];
    let paths: Vec<&str> = puts.iter().map(|c| c.path.as_str()).collect();
    let want: Vec<String> = (0..10).map(|i| format!("/v1/kv/b/{i}")).collect();
    assert_eq!(paths, want);
    // One body for every put, and only the status of each answer is looked at.
    assert_eq!(puts[3].body.as_deref(), Some(&b"\"xyz\""[..]));
    let first = puts[0].body.as_ref().unwrap().as_ptr();
    assert!(
        puts.iter()
            .all(|c| c.body.as_ref().unwrap().as_ptr() == first)
    );
    assert!(puts.iter().all(|c| c.write && !c.parse_reply));
    assert_eq!(plan.prebuilt[&BenchApi::Get].len(), 10);
    assert_eq!(plan.prebuilt[&BenchApi::Status].len(), 1);
    assert!(!plan.prebuilt.contains_key(&BenchApi::Delete));
    for _ in 0..100 {
        let c = plan.call(BenchApi::Put).unwrap();
        assert!(matches!(c, std::borrow::Cow::Borrowed(_)));
        assert!(want.contains(&c.path));
    }
    // A key space too large to build ahead: each request is built when it is sent.
    plan.keys = 10_000_000;
    plan.prebuild();
    assert!(!plan.prebuilt.contains_key(&BenchApi::Put));
    let c = plan.call(BenchApi::Put).unwrap();
    assert!(matches!(c, std::borrow::Cow::Owned(_)) && !c.parse_reply);
    assert!(c.path.starts_with("/v1/kv/b/"));
}
