//! `rcluster bench compare A.json B.json ...`: the reports of several runs side by side, per API:
//! throughput, p50 and p99, and the change against the first run; `--plot` draws them.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::plot;
use super::report::Report;
use super::stats::{Summary, micros};
use crate::failure::Failure;
use crate::term;

#[derive(Debug, Args, Clone)]
pub struct CompareArgs {
    /// Reports written by `rcluster bench --output FILE` (two or more; the first is the baseline).
    #[arg(required = true, num_args = 2.., value_name = "REPORT.json")]
    pub files: Vec<PathBuf>,
    /// Draw throughput, p50 and p99 per API and run as SVG to FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

fn load(path: &PathBuf) -> Result<Report, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        Failure::Usage(format!(
            "{} is not a bench report (rcluster bench --output): {e}",
            path.display()
        ))
    })
}

/// A run's name in the table and plot: its file name without `.json`.
fn name_of(path: &std::path::Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

pub fn run(args: &CompareArgs, json_out: bool) -> Result<(), Failure> {
    let mut runs: Vec<(String, Report)> = Vec::new();
    for f in &args.files {
        runs.push((name_of(f), load(f)?));
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::compare_svg(&runs)).map_err(|e| Failure::Other {
            code: "io",
            message: format!("cannot write {}: {e}", path.display()),
            exit: 1,
        })?;
    }
    if json_out {
        let doc = json!({"runs": runs.iter().map(|(n, r)| json!({
            "name": n, "apis": r.apis, "total": r.total,
        })).collect::<Vec<_>>()});
        return term::line(doc);
    }
    term::text(&table(&runs))
}

fn change(base: f64, v: f64) -> String {
    if base <= 0.0 {
        return "-".into();
    }
    format!("{:+.1}%", (v - base) / base * 100.0)
}

/// Per API, a row per run: throughput and percentiles, with the change against the first run.
pub fn table(runs: &[(String, Report)]) -> String {
    let mut apis: Vec<String> = Vec::new();
    for (_, r) in runs {
        for a in r.apis.iter().chain(std::iter::once(&r.total)) {
            if !apis.contains(&a.api) {
                apis.push(a.api.clone());
            }
        }
    }
    let width = runs.iter().map(|(n, _)| n.len()).max().unwrap_or(3).max(3);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:<width$} {:>10} {:>8} {:>9} {:>8} {:>9} {:>8}",
        "api", "run", "req/s", "change", "p50", "change", "p99", "change"
    );
    let find = |r: &Report, api: &str| -> Option<Summary> {
        r.apis
            .iter()
            .chain(std::iter::once(&r.total))
            .find(|s| s.api == api)
            .cloned()
    };
    for api in &apis {
        let base = find(&runs[0].1, api);
        for (name, r) in runs {
            let Some(s) = find(r, api) else {
                let _ = writeln!(out, "{api:<13} {name:<width$} {:>10}", "-");
                continue;
            };
            let (bt, b50, b99) = base.as_ref().map_or((0.0, 0.0, 0.0), |b| {
                (b.throughput, b.p50_us as f64, b.p99_us as f64)
            });
            let _ = writeln!(
                out,
                "{api:<13} {name:<width$} {:>10.1} {:>8} {:>9} {:>8} {:>9} {:>8}",
                s.throughput,
                change(bt, s.throughput),
                micros(s.p50_us),
                change(b50, s.p50_us as f64),
                micros(s.p99_us),
                change(b99, s.p99_us as f64),
            );
        }
    }
    out
}
