//! The report of a bench run: what was run, totals per API (and per node), the per-second series,
//! and the generator's own CPU use; printed as a table (or JSON), written to `--output`, drawn to
//! `--plot`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{BenchApi, Mix};
use super::record::{Point, Totals};
use super::stats::{ApiStats, Summary, summarize, table};
use super::{BenchArgs, Output, Target, plot};
use crate::failure::Failure;
use crate::term;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub config: Value,
    pub elapsed_secs: f64,
    #[serde(default)]
    pub interrupted: bool,
    pub apis: Vec<Summary>,
    pub total: Summary,
    /// One point per second of the measured run.
    #[serde(default)]
    pub series: Vec<SeriesPoint>,
    /// Per node, in a `--per-node` run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeReport>,
    /// The load generator's own cost.
    #[serde(default)]
    pub generator: Value,
    /// Unmeasured requests that kept deletes, pulls and unsubscribes meaningful.
    #[serde(default)]
    pub refills: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub t: f64,
    pub secs: f64,
    pub apis: Vec<Summary>,
    pub total: Summary,
}

impl From<&Point> for SeriesPoint {
    fn from(p: &Point) -> Self {
        SeriesPoint {
            t: p.t,
            secs: p.secs,
            apis: p.apis.clone(),
            total: p.total.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub url: String,
    pub apis: Vec<Summary>,
    pub total: Summary,
}

pub struct Inputs<'a> {
    pub args: &'a BenchArgs,
    pub mix: &'a Mix,
    pub targets: &'a [Target],
    pub totals: &'a Totals,
    pub elapsed: f64,
    pub interrupted: bool,
    pub cpu_secs: f64,
    /// Threads that ran the workers.
    pub threads: usize,
    pub refills: Value,
    pub left_behind: usize,
}

/// Summaries per API, plus their total.
fn summaries(stats: &BTreeMap<BenchApi, ApiStats>, elapsed: f64) -> (Vec<Summary>, Summary) {
    let mut total = ApiStats::default();
    let apis = stats
        .iter()
        .map(|(api, s)| {
            total.merge(s);
            summarize(api.name(), s, elapsed)
        })
        .collect();
    (apis, summarize("total", &total, elapsed))
}

/// The share of a core above which a generator thread counts as busy. At 70 % a thread is idle
/// less than a third of the time, so an answer often arrives while the thread is still busy
/// with others' requests and waits: its latency then includes the generator's queue, and a
/// closed loop sends less than the server could take.
const BUSY: f64 = 0.7;

/// A warning when the generator, not the server, may have set the pace: it used more than
/// [`BUSY`] of a core per thread that runs workers, or of every core of the machine (its
/// threads then took CPU from a server on the same machine).
pub fn busy_warning(cpu_secs: f64, elapsed: f64, threads: usize, cores: usize) -> Option<String> {
    if elapsed <= 0.0 {
        return None;
    }
    let used = cpu_secs / elapsed;
    let (threads, cores) = (threads.max(1), cores.max(1));
    if used > BUSY * threads as f64 {
        let hint = if threads < cores {
            format!("try --threads {}", threads + 1)
        } else {
            "it has a thread per core already".to_string()
        };
        Some(format!(
            "warning: the generator kept its {} worker thread(s) {:.0} % busy (over {:.0} %): \
             it may have limited the rate and added to the latency; {hint}",
            threads,
            used / threads as f64 * 100.0,
            BUSY * 100.0
        ))
    } else if used > BUSY * cores as f64 {
        Some(format!(
            "warning: the generator used {:.0} % of this machine's {} cores (over {:.0} %): a \
             server on the same machine was left little CPU",
            used / cores as f64 * 100.0,
            cores,
            BUSY * 100.0
        ))
    } else {
        None
    }
}

/// CPU time (user + system) this process has used, in seconds.
pub fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0.0;
        }
        u
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

impl Report {
    pub fn build(i: Inputs) -> Report {
        let args = i.args;
        let (apis, total) = summaries(&i.totals.by_api(), i.elapsed);
        let nodes = if args.per_node {
            i.targets
                .iter()
                .enumerate()
                .map(|(n, t)| {
                    let (apis, total) = summaries(&i.totals.of_node(n), i.elapsed);
                    NodeReport {
                        node: t.name.clone(),
                        url: t.url.clone(),
                        apis,
                        total,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let weights: BTreeMap<&str, u32> = i.mix.0.iter().map(|(a, w)| (a.name(), *w)).collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let warning = busy_warning(i.cpu_secs, i.elapsed, i.threads, cores);
        let per_request = if total.count > 0 {
            i.cpu_secs * 1e6 / total.count as f64
        } else {
            0.0
        };
        Report {
            config: json!({
                "endpoints": i.targets.iter().map(|t| t.url.clone()).collect::<Vec<_>>(),
                "concurrency": args.concurrency,
                "duration_secs": args.duration,
                "requests": args.requests,
                "rate": args.rate,
                "per_node": args.per_node,
                "warmup_secs": args.warmup,
                "value_size": args.value_size,
                "keys": args.keys,
                "mix": weights,
                "ack": args.ack,
                "consistency": args.consistency,
            }),
            elapsed_secs: (i.elapsed * 1000.0).round() / 1000.0,
            interrupted: i.interrupted,
            apis,
            total,
            series: i.totals.series.iter().map(SeriesPoint::from).collect(),
            nodes,
            generator: json!({
                "cpu_secs": (i.cpu_secs * 1000.0).round() / 1000.0,
                "cpu_us_per_request": (per_request * 100.0).round() / 100.0,
                "threads": i.threads,
                "cores": cores,
                "warning": warning,
                "left_behind": i.left_behind,
            }),
            refills: i.refills,
        }
    }

    /// Prints the report (table or JSON) and writes `--output` and `--plot`.
    pub fn emit(&self, args: &BenchArgs, out: Output) -> Result<(), Failure> {
        if let Some(path) = &args.output {
            let text = serde_json::to_string_pretty(self).unwrap_or_default();
            std::fs::write(path, text + "\n").map_err(|e| Failure::Other {
                code: "io",
                message: format!("cannot write {}: {e}", path.display()),
                exit: 1,
            })?;
        }
        if let Some(path) = &args.plot {
            std::fs::write(path, plot::run_svg(self)).map_err(|e| Failure::Other {
                code: "io",
                message: format!("cannot write {}: {e}", path.display()),
                exit: 1,
            })?;
        }
        if out.json {
            return term::line(serde_json::to_string(self).unwrap_or_default());
        }
        term::text(&self.text())
    }

    /// The table(s) and a closing summary line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let rows = |apis: &[Summary], total: &Summary| {
            let mut rows = apis.to_vec();
            if rows.len() > 1 {
                rows.push(total.clone());
            }
            table(&rows)
        };
        for n in &self.nodes {
            out.push_str(&format!("node {} ({})\n", n.node, n.url));
            out.push_str(&rows(&n.apis, &n.total));
        }
        if !self.nodes.is_empty() {
            out.push_str("all nodes\n");
        }
        out.push_str(&rows(&self.apis, &self.total));
        let g = &self.generator;
        out.push_str(&format!(
            "{} worker(s), {:.2} s measured{}, {} requests, {} errors; generator CPU {:.2} s \
             ({:.1} µs per request)\n",
            self.config["concurrency"],
            self.elapsed_secs,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.total.count,
            self.total.errors,
            g["cpu_secs"].as_f64().unwrap_or(0.0),
            g["cpu_us_per_request"].as_f64().unwrap_or(0.0),
        ));
        if let Some(w) = g["warning"].as_str() {
            out.push_str(w);
            out.push('\n');
        }
        out
    }

    /// A run in which every request failed (or none completed) is a failure: exit 3 when nothing
    /// could be reached, else 1.
    pub fn verdict(&self) -> Result<(), Failure> {
        let t = &self.total;
        if t.ok > 0 {
            return Ok(());
        }
        if t.count == 0 {
            return Err(Failure::Other {
                code: "no_requests",
                message: "no request completed during the run".into(),
                exit: 1,
            });
        }
        let unreachable = ["transport", "timeout", "outcome_unknown"];
        let only_unreachable = t
            .error_codes
            .keys()
            .all(|c| unreachable.contains(&c.as_str()));
        let codes: Vec<String> = t
            .error_codes
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        Err(Failure::Other {
            code: "all_failed",
            message: format!(
                "every request failed ({} of {}: {})",
                t.errors,
                t.count,
                codes.join(", ")
            ),
            exit: if only_unreachable { 3 } else { 1 },
        })
    }
}
