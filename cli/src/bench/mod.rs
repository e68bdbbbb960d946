//! `rcluster bench`: a load generator. Workers each own a client (one connection) and send a
//! request when the previous one completed (closed loop), or at a fixed rate (`--rate`, open
//! loop: latency counts from when a request was due, so a server that falls behind shows it).
//! Every run is bounded in time. A line a second shows progress; the report has totals and a
//! per-second series per API (`--output`), and `--plot` draws it. `--per-node` spreads the workers
//! over every node and reports each. Ctrl-C stops the run and reports what was measured.
//!
//! The bench gets its clients built by the caller ([`Clients`]), so it knows nothing of flags.

mod api;
mod compare;
mod plot;
mod progress;
mod record;
mod report;
mod stats;
mod threads;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::Value;

use rcluster_client::types::*;
use rcluster_client::{Client, Error};

pub use api::{BenchApi, Mix, parse_mix};
pub use compare::CompareArgs;
pub use report::Report;
pub use stats::{ApiStats, Summary, summarize, table};

use crate::failure::Failure;
use record::{SharedRecorder, Totals, lock};
use threads::{Host, Job, Pacing};
use workload::{Plan, Refills, Worker};

/// The time bound when only `--requests` is given.
const MAX_RUN: Duration = Duration::from_secs(600);
/// How long the clean-up after a run may take (topics and subscriptions it created).
const CLEAN_UP: Duration = Duration::from_secs(10);

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

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 10_000_000.0 => Ok(v),
        _ => Err(format!(
            "expected requests per second in (0, 10000000], got {s:?}"
        )),
    }
}

/// `rcluster bench [FLAGS]` runs a benchmark; `rcluster bench compare A.json B.json` compares runs.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCommand {
    #[command(subcommand)]
    pub sub: Option<BenchSub>,
    #[command(flatten)]
    pub args: BenchArgs,
}

#[derive(Debug, Subcommand)]
pub enum BenchSub {
    /// Compare the reports (--output files) of several runs, as a table and optionally a plot.
    Compare(CompareArgs),
}

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Workers, each with its own connection.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Threads that run the workers (at most one per worker). One is the cheapest per request;
    /// raise it when the report warns that the generator was busy.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// Measured run time (default 10 s unless --requests is given).
    #[arg(long, value_name = "SECS", value_parser = run_secs)]
    pub duration: Option<f64>,
    /// Stop after N measured requests (the run is still bounded by --duration, or 600 s).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Open loop: send R requests per second in all, spread over the workers, whatever the
    /// answers' pace (latency counts from when each request was due). Default: closed loop.
    #[arg(long, value_name = "R", value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// Spread the workers over every node of the cluster (from its map) and report each node.
    #[arg(long)]
    pub per_node: bool,
    /// Size of each value in bytes (a JSON string of that length).
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub value_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub keys: u64,
    /// Prefix of every key the bench writes.
    #[arg(long, default_value = "bench/", value_name = "TEXT")]
    pub key_prefix: String,
    /// The single API to load (default put).
    #[arg(long, value_enum, conflicts_with = "mix")]
    pub api: Option<BenchApi>,
    /// Weighted mix of APIs, e.g. put=80,get=20 (names as for --api).
    #[arg(long, value_parser = parse_mix)]
    pub mix: Option<Mix>,
    /// Write acknowledgement level (default: the cluster's).
    #[arg(long, value_enum)]
    pub ack: Option<AckLevel>,
    /// Read consistency of get, list and read (default: the cluster's).
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
    /// Unmeasured time before the measured run.
    #[arg(long, default_value_t = 0.0, value_name = "SECS", value_parser = non_negative_secs)]
    pub warmup: f64,
    /// Write the report (totals and a per-second series per API) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Draw per-API throughput and latency percentiles over time as SVG to FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Topic for publish, read, pull, subscribe and unsubscribe (others get their own).
    #[arg(long, default_value = "bench", value_name = "NAME")]
    pub topic: String,
    /// Messages per pull.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub pull_max: u32,
}

impl BenchArgs {
    pub fn mix(&self) -> Mix {
        match (&self.mix, self.api) {
            (Some(m), _) => m.clone(),
            (None, api) => Mix(vec![(api.unwrap_or(BenchApi::Put), 1)]),
        }
    }

    fn duration(&self) -> Duration {
        match (self.duration, self.requests) {
            (Some(d), _) => Duration::from_secs_f64(d),
            (None, Some(_)) => MAX_RUN,
            (None, None) => Duration::from_secs(10),
        }
    }
}

/// A node the workers load: its name (or URL) for the report.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub url: String,
}

/// The clients of a run, built by the caller: one for preparing the data, one per worker (each
/// worker's client is pinned to `targets[node]` in a per-node run).
pub struct Clients {
    pub setup: Client,
    pub targets: Vec<Target>,
    /// (index into `targets`, client) per worker.
    pub workers: Vec<(usize, Client)>,
}

/// Where the output goes: the progress lines and the final table or JSON.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

/// Runs a benchmark: prepares the data, runs the workers with a progress line a second, and
/// reports (stdout, `--output`, `--plot`). Fails when every request failed, and with
/// [`Failure::Interrupted`] after reporting a run stopped by Ctrl-C.
pub async fn run(clients: Clients, args: &BenchArgs, out: Output) -> Result<Report, Failure> {
    let mut plan = Plan {
        mix: args.mix(),
        value: Value::String("x".repeat(args.value_size)),
        keys: args.keys,
        key_prefix: args.key_prefix.clone(),
        topic: args.topic.clone(),
        pull_max: args.pull_max,
        ack: args.ack,
        consistency: args.consistency,
        delivery_timeout: Duration::from_secs(10),
        backlog: AtomicI64::new(0),
        refills: Refills::default(),
        prebuilt: Default::default(),
    };
    plan.prebuild();
    let plan = Arc::new(plan);
    prepare(&clients.setup, args, &plan).await?;

    let warmup = Duration::from_secs_f64(args.warmup);
    let measure_start = Instant::now() + warmup;
    let end = measure_start + args.duration();
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicU64::new(0));
    let n = clients.workers.len().max(1);
    let running = Arc::new(AtomicUsize::new(clients.workers.len()));
    let period = args.rate.map(|r| Duration::from_secs_f64(n as f64 / r));
    let threads = (args.threads as usize).clamp(1, n);
    let mut recorders: Vec<SharedRecorder> = Vec::new();
    let mut jobs: Vec<Vec<Job>> = (0..threads).map(|_| Vec::new()).collect();
    for (id, (node, client)) in clients.workers.into_iter().enumerate() {
        let recorder = SharedRecorder::default();
        recorders.push(recorder.clone());
        let pacing = period.map(|p| Pacing {
            next: Instant::now() + p.mul_f64(id as f64 / n as f64),
            period: p,
        });
        jobs[id % threads].push(Job {
            mix: plan.mix.clone(),
            worker: Worker::new(id, client, plan.clone()),
            node,
            recorder,
            measure_start,
            end,
            requests: args.requests,
            issued: issued.clone(),
            stop: stop.clone(),
            pacing,
            running: running.clone(),
        });
    }
    let mut hosts = Vec::new();
    for j in jobs {
        match Host::start(j, stop.clone()) {
            Ok(h) => hosts.push(h),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(Failure::Other {
                    code: "io",
                    message: format!("cannot start a bench thread: {e}"),
                    exit: 1,
                });
            }
        }
    }

    // The generator's CPU is counted over the measured run only (not the warmup).
    let cpu_start = cpu_at(measure_start);
    let mut ticker = progress::Ticker::new(out, measure_start, args.duration());
    let mut totals = Totals::default();
    let interrupted = ticker
        .run(&mut totals, &recorders, &stop, || {
            running.load(Ordering::Relaxed) == 0
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    for h in &mut hosts {
        h.finished().await;
    }
    // Stopped during the warmup: nothing was measured.
    let cpu = if Instant::now() < measure_start {
        cpu_start.abort();
        0.0
    } else {
        report::cpu_secs() - cpu_start.await.unwrap_or_else(|_| report::cpu_secs())
    };
    let last = recorders
        .iter()
        .filter_map(|r| lock(r).last_done)
        .max()
        .unwrap_or(measure_start);
    let elapsed = last.saturating_duration_since(measure_start).as_secs_f64();
    ticker.finish(&mut totals, &recorders, elapsed);
    let limit = Instant::now() + CLEAN_UP;
    let mut left = 0;
    for h in hosts {
        left += h.clean_up(limit).await;
    }

    let report = Report::build(report::Inputs {
        args,
        mix: &plan.mix,
        targets: &clients.targets,
        totals: &totals,
        elapsed,
        interrupted,
        cpu_secs: cpu,
        threads,
        refills: plan.refills.to_json(),
        left_behind: left,
    });
    report.emit(args, out)?;
    if interrupted {
        return Err(Failure::Interrupted);
    }
    report.verdict()?;
    Ok(report)
}

/// This process's CPU time when the measured run begins (at once when it already has).
fn cpu_at(when: Instant) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        tokio::time::sleep_until(when.into()).await;
        report::cpu_secs()
    })
}

/// Creates what the mix needs before the measured run: keys to read, the topic, the subscription
/// and messages to read.
async fn prepare(client: &Client, args: &BenchArgs, plan: &Plan) -> Result<(), Error> {
    let mix = &plan.mix;
    let w = WriteOptions {
        ack: args.ack,
        idempotency_key: None,
    };
    use BenchApi::*;
    if mix.any(&[Publish, Read, Pull, Subscribe, Unsubscribe]) {
        client
            .create_topic(&plan.topic, &Retention::default(), &w)
            .await?;
    }
    if mix.has(Pull) {
        client
            .subscribe(
                &plan.topic,
                workload::SUBSCRIPTION,
                Some(Start::Earliest),
                &w,
            )
            .await?;
        // Whatever waits on the subscription already counts toward the backlog.
        if let Ok(topics) = client.list_topics().await
            && let Some(t) = topics.topics.iter().find(|t| t.name == plan.topic)
            && let Some(s) = t
                .subscriptions
                .iter()
                .find(|s| s.name == workload::SUBSCRIPTION)
        {
            let waiting = t.next_offset.saturating_sub(s.cursor);
            plan.backlog.store(waiting as i64, Ordering::Relaxed);
        }
    }
    if mix.has(Read) {
        client
            .publish_batch(&plan.topic, &vec![plan.value.clone(); 100], &w)
            .await?;
    }
    if mix.any(&[Get, List]) {
        let workers = u64::from(args.concurrency).min(plan.keys);
        let mut tasks = Vec::new();
        for n in 0..workers {
            let client = client.clone();
            let keys: Vec<String> = (n..plan.keys)
                .step_by(workers as usize)
                .map(|i| plan.key(Put, i))
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

/// Runs `bench compare`.
pub fn compare(args: &CompareArgs, json: bool) -> Result<(), Failure> {
    compare::run(args, json)
}

#[cfg(test)]
#[path = "bench_tests.rs"]
mod tests;
