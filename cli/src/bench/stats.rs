//! Per-API counters and latency histograms of a bench run, and their summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, 3 significant digits.
const MAX_MICROS: u64 = 600_000_000;

/// What one API saw during a run (one worker's, or merged).
#[derive(Debug, Clone)]
pub struct ApiStats {
    /// Latency of successful requests, in microseconds.
    latency: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Default for ApiStats {
    fn default() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl ApiStats {
    pub fn record_ok(&mut self, micros: u64) {
        self.ok += 1;
        self.latency.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn record_error(&mut self, code: &str) {
        *self.errors.entry(code.to_string()).or_default() += 1;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ok == 0 && self.errors.is_empty()
    }

    /// Back to nothing recorded, keeping the histogram's memory.
    pub fn reset(&mut self) {
        self.ok = 0;
        self.errors.clear();
        self.latency.reset();
    }

    pub fn merge(&mut self, other: &ApiStats) {
        self.ok += other.ok;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub api: String,
    /// Requests completed (ok + errors).
    pub count: u64,
    pub ok: u64,
    pub errors: u64,
    #[serde(default)]
    pub error_codes: BTreeMap<String, u64>,
    /// Completed requests per second.
    pub throughput: f64,
    /// Latency of successful requests, microseconds.
    #[serde(default)]
    pub mean_us: f64,
    pub p50_us: u64,
    #[serde(default)]
    pub p90_us: u64,
    pub p99_us: u64,
    #[serde(default)]
    pub max_us: u64,
}

pub fn summarize(api: &str, s: &ApiStats, elapsed_secs: f64) -> Summary {
    let count = s.ok + s.error_count();
    let has = !s.latency.is_empty();
    let q = |q: f64| {
        if has {
            s.latency.value_at_quantile(q)
        } else {
            0
        }
    };
    Summary {
        api: api.to_string(),
        count,
        ok: s.ok,
        errors: s.error_count(),
        error_codes: s.errors.clone(),
        throughput: if elapsed_secs > 0.0 {
            round2(count as f64 / elapsed_secs)
        } else {
            0.0
        },
        mean_us: if has { round2(s.latency.mean()) } else { 0.0 },
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        max_us: if has { s.latency.max() } else { 0 },
    }
}

/// `850 µs`, `1.25 ms`, `3.1 s`.
pub fn micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.2} ms", us as f64 / 1000.0),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A fixed-width table of summaries.
pub fn table(rows: &[Summary]) -> String {
    let mut out = format!(
        "{:<13} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
        "api", "count", "errors", "req/s", "p50", "p90", "p99", "max"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<13} {:>9} {:>7} {:>10.1} {:>9} {:>9} {:>9} {:>9}",
            r.api,
            r.count,
            r.errors,
            r.throughput,
            micros(r.p50_us),
            micros(r.p90_us),
            micros(r.p99_us),
            micros(r.max_us)
        );
    }
    for r in rows.iter().filter(|r| r.errors > 0) {
        let codes: Vec<String> = r
            .error_codes
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        let _ = writeln!(out, "{} errors: {}", r.api, codes.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_latencies() {
        let mut s = ApiStats::default();
        for us in 1..=1000 {
            s.record_ok(us);
        }
        s.record_error("version_mismatch");
        s.record_error("version_mismatch");
        let sum = summarize("put", &s, 2.0);
        assert_eq!((sum.count, sum.ok, sum.errors), (1002, 1000, 2));
        assert_eq!(sum.error_codes.get("version_mismatch"), Some(&2));
        assert_eq!(sum.throughput, 501.0);
        // 3 significant digits: quantiles within 0.1 %.
        assert!((499..=501).contains(&sum.p50_us), "{}", sum.p50_us);
        assert!((899..=901).contains(&sum.p90_us), "{}", sum.p90_us);
        assert!((989..=991).contains(&sum.p99_us), "{}", sum.p99_us);
        assert!((1000..=1001).contains(&sum.max_us), "{}", sum.max_us);
        assert!((sum.mean_us - 500.5).abs() < 1.0, "{}", sum.mean_us);
    }

    #[test]
    fn empty_and_merged_stats() {
        let empty = summarize("get", &ApiStats::default(), 0.0);
        assert_eq!((empty.count, empty.p99_us, empty.throughput), (0, 0, 0.0));

        let mut a = ApiStats::default();
        let mut b = ApiStats::default();
        a.record_ok(10);
        b.record_ok(30);
        b.record_error("transport");
        a.merge(&b);
        let sum = summarize("get", &a, 1.0);
        assert_eq!((sum.count, sum.ok, sum.errors, sum.max_us), (3, 2, 1, 30));
        // Out-of-range latencies saturate instead of being lost.
        a.record_ok(u64::MAX);
        assert_eq!(summarize("get", &a, 1.0).ok, 3);
    }

    #[test]
    fn table_has_a_row_per_api_and_error_details() {
        let mut s = ApiStats::default();
        s.record_ok(100);
        s.record_error("not_found");
        let rows = [summarize("get", &s, 1.0), summarize("total", &s, 1.0)];
        let t = table(&rows);
        assert_eq!(t.lines().count(), 5, "{t}");
        assert!(t.contains("get errors: not_found=1"), "{t}");
        assert!(t.contains("100 µs"), "{t}");
        assert_eq!(
            (micros(1_250), micros(3_100_000)),
            ("1.25 ms".into(), "3.10 s".into())
        );
    }
}
