//! Where workers put their measurements. Each worker owns a recorder (a mutex only the worker and,
//! once a second, the progress ticker take); the ticker moves each second's numbers into the
//! run's totals and its time series.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::api::BenchApi;
use super::stats::{ApiStats, Summary, summarize};

/// (node index, API): per-node runs keep the nodes apart.
pub type Slot = (usize, BenchApi);

#[derive(Debug, Default)]
pub struct Recorder {
    pub stats: BTreeMap<Slot, ApiStats>,
    /// When the worker last completed a measured request.
    pub last_done: Option<Instant>,
}

pub type SharedRecorder = Arc<Mutex<Recorder>>;

pub fn lock(r: &SharedRecorder) -> std::sync::MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// One second (or the last, shorter interval) of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Seconds since the measured run began, at the end of the interval.
    pub t: f64,
    /// The interval's length in seconds.
    pub secs: f64,
    pub apis: Vec<Summary>,
    pub total: Summary,
}

/// The run so far: totals per (node, API) and the time series.
#[derive(Debug, Default)]
pub struct Totals {
    pub stats: BTreeMap<Slot, ApiStats>,
    pub series: Vec<Point>,
}

impl Totals {
    /// Takes what every worker recorded since the last call, as the interval that ends `t`
    /// seconds into the run and lasted `secs`; returns its point.
    pub fn collect(&mut self, recorders: &[SharedRecorder], t: f64, secs: f64) -> Point {
        let mut interval: BTreeMap<BenchApi, ApiStats> = BTreeMap::new();
        for r in recorders {
            let mut r = lock(r);
            for (slot, s) in r.stats.iter_mut() {
                if s.is_empty() {
                    continue;
                }
                interval.entry(slot.1).or_default().merge(s);
                self.stats.entry(*slot).or_default().merge(s);
                s.reset();
            }
        }
        let mut total = ApiStats::default();
        let apis = interval
            .iter()
            .map(|(api, s)| {
                total.merge(s);
                summarize(api.name(), s, secs)
            })
            .collect();
        let point = Point {
            t: (t * 1000.0).round() / 1000.0,
            secs: (secs * 1000.0).round() / 1000.0,
            apis,
            total: summarize("total", &total, secs),
        };
        self.series.push(point.clone());
        point
    }

    /// Per API over every node.
    pub fn by_api(&self) -> BTreeMap<BenchApi, ApiStats> {
        let mut out: BTreeMap<BenchApi, ApiStats> = BTreeMap::new();
        for ((_, api), s) in &self.stats {
            out.entry(*api).or_default().merge(s);
        }
        out
    }

    /// Per API of one node.
    pub fn of_node(&self, node: usize) -> BTreeMap<BenchApi, ApiStats> {
        self.stats
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|((_, api), s)| (*api, s.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_move_into_the_totals_once() {
        let a: SharedRecorder = Arc::default();
        let b: SharedRecorder = Arc::default();
        lock(&a)
            .stats
            .entry((0, BenchApi::Put))
            .or_default()
            .record_ok(100);
        lock(&b)
            .stats
            .entry((1, BenchApi::Put))
            .or_default()
            .record_ok(300);
        lock(&b)
            .stats
            .entry((1, BenchApi::Get))
            .or_default()
            .record_error("not_found");
        let mut totals = Totals::default();
        let p = totals.collect(&[a.clone(), b.clone()], 1.0, 1.0);
        assert_eq!((p.total.count, p.total.errors), (3, 1));
        assert_eq!(p.apis.len(), 2);
        let p2 = totals.collect(&[a, b], 2.0, 1.0);
        assert_eq!(p2.total.count, 0, "nothing counted twice");
        assert_eq!(totals.series.len(), 2);
        assert_eq!(totals.by_api()[&BenchApi::Put].ok, 2);
        assert_eq!(totals.of_node(1)[&BenchApi::Get].error_count(), 1);
    }
}
