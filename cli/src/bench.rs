//! `rcluster bench`: a closed-loop load generator. Each worker owns one client (so one
//! connection) and sends its next request when the previous one completed. Runs are
//! always bounded in time, and optionally in request count.

mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

pub use stats::{ApiStats, Summary, summarize, table};

use rcluster_client::calls::{self, Call};
use rcluster_client::types::*;
use rcluster_client::{Client, Error, RetryPolicy, random};

/// The time bound when only `--requests` is given.
const MAX_RUN: Duration = Duration::from_secs(600);
const SUBSCRIPTION: &str = "bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchApi {
    Put,
    Get,
    Delete,
    Incr,
    List,
    Publish,
    Read,
    Pull,
    Status,
}

impl BenchApi {
    pub fn name(self) -> &'static str {
        match self {
            BenchApi::Put => "put",
            BenchApi::Get => "get",
            BenchApi::Delete => "delete",
            BenchApi::Incr => "incr",
            BenchApi::List => "list",
            BenchApi::Publish => "publish",
            BenchApi::Read => "read",
            BenchApi::Pull => "pull",
            BenchApi::Status => "status",
        }
    }
}

/// Weighted choice of APIs, e.g. `put=80,get=20`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix(pub Vec<(BenchApi, u32)>);

impl Mix {
    /// Picks an API for `u` in `[0, 1)`.
    pub fn pick(&self, u: f64) -> BenchApi {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut point = (u.clamp(0.0, 1.0) * f64::from(total)) as u32;
        for (api, w) in &self.0 {
            if point < *w {
                return *api;
            }
            point -= w;
        }
        self.0.last().map(|(a, _)| *a).unwrap_or(BenchApi::Put)
    }

    fn has(&self, api: BenchApi) -> bool {
        self.0.iter().any(|(a, _)| *a == api)
    }
}

pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut out: Vec<(BenchApi, u32)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected API=WEIGHT"))?;
        let api =
            BenchApi::from_str(name.trim(), true).map_err(|_| format!("unknown API {name:?}"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: weight must be a whole number"))?;
        if out.iter().any(|(a, _)| *a == api) {
            return Err(format!("{name} appears twice"));
        }
        if weight > 0 {
            out.push((api, weight));
        }
    }
    let total: u64 = out.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 || total > u64::from(u32::MAX) {
        return Err("the weights must add up to more than 0".into());
    }
    Ok(Mix(out))
}

fn non_negative_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v <= MAX_RUN.as_secs_f64() => Ok(v),
        _ => Err(format!(
            "expected seconds in 0..={}, got {s:?}",
            MAX_RUN.as_secs()
        )),
    }
}

fn run_secs(s: &str) -> Result<f64, String> {
    match non_negative_secs(s) {
        Ok(v) if v > 0.0 => Ok(v),
        _ => Err(format!(
            "expected seconds in (0, {}], got {s:?}",
            MAX_RUN.as_secs()
        )),
    }
}

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Workers, each with its own connection.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Measured run time (default 10 s unless --requests is given).
    #[arg(long, value_name = "SECS", value_parser = run_secs)]
    pub duration: Option<f64>,
    /// Stop after N measured requests (the run is still bounded by --duration, or 600 s).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Size of each value in bytes (a JSON string of that length).
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub value_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub keys: u64,
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    /// The single API to load (default put).
    #[arg(long, value_enum, conflicts_with = "mix")]
    pub api: Option<BenchApi>,
    /// Weighted mix of APIs, e.g. put=80,get=20.
    #[arg(long, value_parser = parse_mix)]
    pub mix: Option<Mix>,
    #[arg(long, value_enum)]
    pub ack: Option<AckLevel>,
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
    /// Unmeasured time before the measured run.
    #[arg(long, default_value_t = 0.0, value_name = "SECS", value_parser = non_negative_secs)]
    pub warmup: f64,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Topic for publish, read and pull.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Messages per pull.
    #[arg(long, default_value_t = 10)]
    pub pull_max: u32,
}

impl BenchArgs {
    pub fn mix(&self) -> Mix {
        match (&self.mix, self.api) {
            (Some(m), _) => m.clone(),
            (None, api) => Mix(vec![(api.unwrap_or(BenchApi::Put), 1)]),
        }
    }
}

/// Everything a worker needs, fixed for the run.
struct Plan {
    mix: Mix,
    value: Value,
    keys: u64,
    key_prefix: String,
    topic: String,
    pull_max: u32,
    ack: Option<AckLevel>,
    consistency: Option<Consistency>,
    measure_start: Instant,
    end: Instant,
    requests: Option<u64>,
}

impl Plan {
    fn key(&self, api: BenchApi, i: u64) -> String {
        // Counters live apart from the other records, so `incr` never meets a string.
        match api {
            BenchApi::Incr => format!("{}n/{i}", self.key_prefix),
            _ => format!("{}{i}", self.key_prefix),
        }
    }

    fn call(&self, api: BenchApi) -> Result<Call, Error> {
        let key = self.key(api, random::next_u64() % self.keys);
        let w = WriteOptions {
            ack: self.ack,
            idempotency_key: None,
        };
        match api {
            BenchApi::Put => calls::put(
                &key,
                &self.value,
                &PutOptions {
                    write: w,
                    ..Default::default()
                },
            ),
            BenchApi::Get => calls::get(&key, self.consistency),
            BenchApi::Delete => calls::delete(
                &key,
                &DeleteOptions {
                    if_version: None,
                    write: w,
                },
            ),
            BenchApi::Incr => calls::incr(&key, 1, None, None, &w),
            BenchApi::List => Ok(calls::list(&ListOptions {
                prefix: Some(self.key_prefix.clone()),
                start_after: None,
                limit: Some(10),
                consistency: self.consistency,
            })),
            BenchApi::Publish => calls::publish(&self.topic, &self.value, &w),
            BenchApi::Read => calls::read(&self.topic, None, Some(10), self.consistency),
            BenchApi::Pull => {
                calls::pull(&self.topic, SUBSCRIPTION, Some(self.pull_max), Some(0), &w)
            }
            BenchApi::Status => Ok(calls::status()),
        }
    }
}

fn error_label(e: &Error) -> String {
    match e {
        Error::Api { code, .. } => code.clone(),
        Error::Transport(_) => "transport".into(),
        Error::OutcomeUnknown { .. } => "outcome_unknown".into(),
        Error::InvalidResponse(_) => "invalid_response".into(),
        Error::InvalidArgument(_) => "invalid_argument".into(),
        Error::Timeout(_) => "timeout".into(),
    }
}

struct WorkerResult {
    stats: BTreeMap<BenchApi, ApiStats>,
    last_done: Option<Instant>,
}

async fn worker(client: Client, plan: Arc<Plan>, issued: Arc<AtomicU64>) -> WorkerResult {
    let mut stats: BTreeMap<BenchApi, ApiStats> = BTreeMap::new();
    let mut last_done = None;
    loop {
        let now = Instant::now();
        if now >= plan.end {
            break;
        }
        let measured = now >= plan.measure_start;
        let over = |n: u64| issued.fetch_add(1, Ordering::Relaxed) >= n;
        if measured && plan.requests.is_some_and(over) {
            break;
        }
        let api = plan.mix.pick(random::unit());
        let started = Instant::now();
        let result = match plan.call(api) {
            Ok(call) => client.execute(&call).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let done = Instant::now();
        if !measured {
            continue;
        }
        let s = stats.entry(api).or_default();
        match result {
            Ok(()) => s.record_ok(done.duration_since(started).as_micros() as u64),
            Err(e) => s.record_error(&error_label(&e)),
        }
        last_done = Some(done);
    }
    WorkerResult { stats, last_done }
}

/// Creates what the mix needs: keys to read, the topic, the subscription, messages.
async fn prepare(client: &Client, args: &BenchArgs, plan: &Plan) -> Result<(), Error> {
    let mix = &plan.mix;
    let w = WriteOptions {
        ack: args.ack,
        idempotency_key: None,
    };
    if [BenchApi::Publish, BenchApi::Read, BenchApi::Pull]
        .iter()
        .any(|a| mix.has(*a))
    {
        client
            .create_topic(&plan.topic, &Retention::default(), &w)
            .await?;
    }
    if mix.has(BenchApi::Pull) {
        client
            .subscribe(&plan.topic, SUBSCRIPTION, Some(Start::Earliest), &w)
            .await?;
    }
    if mix.has(BenchApi::Read) || mix.has(BenchApi::Pull) {
        let batch: Vec<Value> = vec![plan.value.clone(); 100];
        for _ in 0..plan.keys.div_ceil(100).min(100) {
            client.publish_batch(&plan.topic, &batch, &w).await?;
        }
    }
    if [BenchApi::Get, BenchApi::List, BenchApi::Delete]
        .iter()
        .any(|a| mix.has(*a))
    {
        let workers = u64::from(args.concurrency).min(plan.keys);
        let mut tasks = Vec::new();
        for n in 0..workers {
            let client = client.clone();
            let keys: Vec<String> = (n..plan.keys)
                .step_by(workers as usize)
                .map(|i| plan.key(BenchApi::Put, i))
                .collect();
            let value = plan.value.clone();
            let opts = PutOptions {
                write: w.clone(),
                ..Default::default()
            };
            tasks.push(tokio::spawn(async move {
                for k in keys {
                    client.put(&k, &value, &opts).await?;
                }
                Ok::<(), Error>(())
            }));
        }
        for t in tasks {
            t.await
                .map_err(|e| Error::InvalidArgument(format!("prefill task failed: {e}")))??;
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub config: Value,
    pub elapsed_secs: f64,
    pub apis: Vec<Summary>,
    pub total: Summary,
}

/// Runs a benchmark and prints the table (or, with `json`, the report).
pub async fn run(
    endpoints: &[String],
    timeout: f64,
    setup: &Client,
    args: BenchArgs,
    json: bool,
) -> Result<(), Error> {
    let mix = args.mix();
    let duration = match (args.duration, args.requests) {
        (Some(d), _) => Duration::from_secs_f64(d),
        (None, Some(_)) => MAX_RUN,
        (None, None) => Duration::from_secs(10),
    };
    let mut plan = Plan {
        mix: mix.clone(),
        value: Value::String("x".repeat(args.value_size)),
        keys: args.keys,
        key_prefix: args.key_prefix.clone(),
        topic: args.topic.clone(),
        pull_max: args.pull_max,
        ack: args.ack,
        consistency: args.consistency,
        measure_start: Instant::now(),
        end: Instant::now(),
        requests: args.requests,
    };
    prepare(setup, &args, &plan).await?;

    let warmup = Duration::from_secs_f64(args.warmup);
    plan.measure_start = Instant::now() + warmup;
    plan.end = plan.measure_start + duration;
    let plan = Arc::new(plan);
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        // One idle connection per worker and no retries: each request is measured once.
        let client = Client::builder(endpoints.iter().cloned())
            .request_timeout(Duration::from_secs_f64(timeout))
            .max_idle_per_host(1)
            .retry(RetryPolicy::no_retry())
            .build()?;
        tasks.push(tokio::spawn(worker(client, plan.clone(), issued.clone())));
    }
    let mut merged: BTreeMap<BenchApi, ApiStats> = BTreeMap::new();
    let mut last = plan.measure_start;
    for t in tasks {
        let r = t
            .await
            .map_err(|e| Error::InvalidArgument(format!("bench worker failed: {e}")))?;
        for (api, s) in &r.stats {
            merged.entry(*api).or_default().merge(s);
        }
        last = last.max(r.last_done.unwrap_or(last));
    }
    let elapsed = last
        .saturating_duration_since(plan.measure_start)
        .as_secs_f64();
    let report = build_report(endpoints, &args, &mix, &merged, elapsed);
    if let Some(path) = &args.output {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(path, text + "\n")
            .map_err(|e| Error::InvalidArgument(format!("cannot write {}: {e}", path.display())))?;
    }
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        let mut rows = report.apis.clone();
        if rows.len() > 1 {
            rows.push(report.total.clone());
        }
        print!("{}", table(&rows));
        println!(
            "{} worker(s), {:.2} s measured, {} requests, {} errors",
            args.concurrency, elapsed, report.total.count, report.total.errors
        );
    }
    Ok(())
}

fn build_report(
    endpoints: &[String],
    args: &BenchArgs,
    mix: &Mix,
    merged: &BTreeMap<BenchApi, ApiStats>,
    elapsed: f64,
) -> Report {
    let mut total = ApiStats::default();
    let apis = merged
        .iter()
        .map(|(api, s)| {
            total.merge(s);
            summarize(api.name(), s, elapsed)
        })
        .collect();
    let weights: BTreeMap<&str, u32> = mix.0.iter().map(|(a, w)| (a.name(), *w)).collect();
    Report {
        config: json!({
            "endpoints": endpoints,
            "concurrency": args.concurrency,
            "duration_secs": args.duration,
            "requests": args.requests,
            "warmup_secs": args.warmup,
            "value_size": args.value_size,
            "keys": args.keys,
            "mix": weights,
            "ack": args.ack,
            "consistency": args.consistency,
        }),
        elapsed_secs: (elapsed * 1000.0).round() / 1000.0,
        apis,
        total: summarize("total", &total, elapsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parsing() {
        let m = parse_mix("put=80, get=20").unwrap();
        assert_eq!(m, Mix(vec![(BenchApi::Put, 80), (BenchApi::Get, 20)]));
        assert_eq!(
            parse_mix("pull=1,publish=0").unwrap(),
            Mix(vec![(BenchApi::Pull, 1)])
        );
        for bad in [
            "",
            "put",
            "put=x",
            "put=1,put=2",
            "fly=1",
            "put=0",
            "put=-1",
        ] {
            assert!(parse_mix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mix_picks_by_weight() {
        let m = parse_mix("put=80,get=20").unwrap();
        assert_eq!(m.pick(0.0), BenchApi::Put);
        assert_eq!(m.pick(0.79), BenchApi::Put);
        assert_eq!(m.pick(0.80), BenchApi::Get);
        assert_eq!(m.pick(0.999_999), BenchApi::Get);
        let n = 100_000;
        let puts = (0..n)
            .filter(|_| m.pick(random::unit()) == BenchApi::Put)
            .count();
        let share = puts as f64 / n as f64;
        assert!((0.77..0.83).contains(&share), "{share}");
    }

    #[test]
    fn bench_args_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            b: BenchArgs,
        }
        let t = T::try_parse_from([
            "t",
            "--concurrency",
            "2",
            "--requests",
            "200",
            "--mix",
            "put=1,get=1",
        ])
        .unwrap();
        assert_eq!((t.b.concurrency, t.b.requests), (2, Some(200)));
        assert_eq!(t.b.mix().0.len(), 2);
        let t = T::try_parse_from(["t", "--api", "incr"]).unwrap();
        assert_eq!(t.b.mix(), Mix(vec![(BenchApi::Incr, 1)]));
        for bad in [
            &["t", "--api", "put", "--mix", "get=1"][..],
            &["t", "--concurrency", "0"],
            &["t", "--duration", "0"],
            &["t", "--duration", "100000"],
            &["t", "--requests", "0"],
            &["t", "--warmup", "-1"],
        ] {
            assert!(T::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn incr_keys_are_kept_apart() {
        let plan = Plan {
            mix: Mix(vec![(BenchApi::Put, 1)]),
            value: json!("x"),
            keys: 10,
            key_prefix: "b/".into(),
            topic: "t".into(),
            pull_max: 1,
            ack: None,
            consistency: None,
            measure_start: Instant::now(),
            end: Instant::now(),
            requests: None,
        };
        assert_eq!(plan.key(BenchApi::Put, 3), "b/3");
        assert_eq!(plan.key(BenchApi::Incr, 3), "b/n/3");
        assert!(
            plan.call(BenchApi::Incr)
                .unwrap()
                .path
                .starts_with("/v1/kv/b/n/")
        );
    }
}
