//! Per-API traffic for the dashboard: every second the control server reads each node's
//! `/metrics` (`rcluster_requests_total`, `rcluster_request_duration_seconds`), and turns the
//! counters' growth since the previous read into requests per second, errors per second and
//! latency percentiles (estimated from the histogram buckets, as Prometheus'
//! `histogram_quantile` does). The last two minutes are kept.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use rcluster_client::transport::{Transport, TransportConfig};

/// Points kept: two minutes at one a second.
pub const KEPT: usize = 120;
const EVERY: Duration = Duration::from_secs(1);

/// One API's counters as one node reports them (totals since the node started).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub requests: f64,
    pub errors: f64,
    /// `le` bound (seconds) → cumulative count, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
}

/// Reads the request families out of a node's Prometheus text.
pub fn parse(text: &str) -> BTreeMap<String, Counters> {
    let mut out: BTreeMap<String, Counters> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let Some(api) = label("api") else { continue };
        match name {
            "rcluster_requests_total" => {
                let c = out.entry(api.to_string()).or_default();
                c.requests += value;
                if label("outcome") != Some("ok") {
                    c.errors += value;
                }
            }
            "rcluster_request_duration_seconds_bucket" => {
                let le = match label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                let c = out.entry(api.to_string()).or_default();
                c.buckets.push((le, value));
            }
            _ => {}
        }
    }
    for c in out.values_mut() {
        c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// A sample's labels, in order.
type Labels = Vec<(String, String)>;

/// `name{k="v",...} value` → its parts (labels without escapes, which these families never need).
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let labels = labels
        .split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect();
    Some((name, labels, value))
}

/// The `q` quantile (0..1) of the requests counted in cumulative `buckets`, interpolated within
/// the bucket it falls in; `None` when there were none.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                // Above the last finite bound: that bound is the best estimate.
                return Some(prev.0);
            }
            let within = (rank - prev.1) / (count - prev.1).max(f64::MIN_POSITIVE);
            return Some(prev.0 + (le - prev.0) * within.clamp(0.0, 1.0));
        }
        prev = (le, count);
    }
    Some(prev.0)
}

/// One API in one second, over every node.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rate {
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub at_ms: u64,
    pub apis: BTreeMap<String, Rate>,
}

/// The growth of `now` over `before` (a node that restarted counts from zero again).
fn growth(now: &Counters, before: Option<&Counters>) -> Counters {
    let Some(b) = before.filter(|b| b.requests <= now.requests) else {
        return now.clone();
    };
    let buckets = now
        .buckets
        .iter()
        .map(|(le, c)| {
            let old = b
                .buckets
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, (c - old).max(0.0))
        })
        .collect();
    Counters {
        requests: now.requests - b.requests,
        errors: (now.errors - b.errors).max(0.0),
        buckets,
    }
}

/// Combines one second of every node into a point.
pub fn point(at_ms: u64, secs: f64, per_node: &[NodeCounters]) -> Point {
    let mut sum: BTreeMap<String, Counters> = BTreeMap::new();
    for node in per_node {
        for (api, c) in node {
            let s = sum.entry(api.clone()).or_default();
            s.requests += c.requests;
            s.errors += c.errors;
            for (le, n) in &c.buckets {
                match s.buckets.iter_mut().find(|(l, _)| l == le) {
                    Some(b) => b.1 += n,
                    None => s.buckets.push((*le, *n)),
                }
            }
        }
    }
    let secs = secs.max(1e-3);
    let apis = sum
        .into_iter()
        .filter(|(_, c)| c.requests > 0.0)
        .map(|(api, mut c)| {
            c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let ms = |q| quantile(q, &c.buckets).map(|s| (s * 1e5).round() / 100.0);
            let rate = Rate {
                requests_per_sec: (c.requests / secs * 10.0).round() / 10.0,
                errors_per_sec: (c.errors / secs * 10.0).round() / 10.0,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
            };
            (api, rate)
        })
        .collect();
    Point { at_ms, apis }
}

/// Per API counters of one node.
pub type NodeCounters = BTreeMap<String, Counters>;

/// The last two minutes of traffic.
#[derive(Debug, Default)]
pub struct Traffic {
    pub points: VecDeque<Point>,
}

impl Traffic {
    pub fn push(&mut self, p: Point) {
        if self.points.len() >= KEPT {
            self.points.pop_front();
        }
        self.points.push_back(p);
    }
}

/// Reads every node's metrics once a second until `stop`: `urls` names the nodes of the moment
/// (members come and go), `publish` receives each second's point.
pub async fn scrape(
    urls: impl Fn() -> Vec<String> + Send + 'static,
    publish: impl Fn(Point) + Send + 'static,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let transport = Transport::new(TransportConfig {
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(800),
        ..TransportConfig::default()
    });
    let mut last: BTreeMap<String, NodeCounters> = BTreeMap::new();
    let mut last_at = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut grown = Vec::new();
        let mut seen = BTreeMap::new();
        for url in urls() {
            let answer = transport
                .request(
                    http::Method::GET,
                    &format!("{url}/metrics"),
                    http::HeaderMap::new(),
                    None,
                    None,
                )
                .await;
            let Ok(resp) = answer else { continue };
            if !resp.status.is_success() {
                continue;
            }
            let now = parse(&String::from_utf8_lossy(&resp.body));
            if let Some(before) = last.get(&url) {
                let g: NodeCounters = now
                    .iter()
                    .map(|(api, c)| (api.clone(), growth(c, before.get(api))))
                    .collect();
                grown.push(g);
            }
            seen.insert(url, now);
        }
        let secs = last_at.elapsed().as_secs_f64();
        last_at = std::time::Instant::now();
        last = seen;
        let p = point(super::now_ms(), secs, &grown);
        publish(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP rcluster_requests_total Client requests by API and outcome
# TYPE rcluster_requests_total counter
rcluster_requests_total{api="put",outcome="ok"} 90
rcluster_requests_total{api="put",outcome="version_mismatch"} 10
rcluster_requests_total{api="get",outcome="ok"} 5
rcluster_request_duration_seconds_bucket{api="put",le="0.001"} 50
rcluster_request_duration_seconds_bucket{api="put",le="0.002"} 90
rcluster_request_duration_seconds_bucket{api="put",le="+Inf"} 100
rcluster_request_duration_seconds_sum{api="put"} 0.2
rcluster_term 3
"#;

    #[test]
    fn counters_and_quantiles_from_prometheus_text() {
        let c = parse(TEXT);
        assert_eq!((c["put"].requests, c["put"].errors), (100.0, 10.0));
        assert_eq!(c["get"].requests, 5.0);
        assert_eq!(c["put"].buckets.len(), 3);
        // Half of the 100 are within 1 ms; the 99th is past the last finite bound.
        let b = &c["put"].buckets;
        assert_eq!(quantile(0.5, b), Some(0.001));
        assert!((quantile(0.7, b).unwrap() - 0.0015).abs() < 1e-9);
        assert_eq!(quantile(0.99, b), Some(0.002));
        assert_eq!(quantile(0.5, &[]), None);
    }

    #[test]
    fn a_second_of_growth_over_every_node() {
        let before = parse(TEXT);
        let after = parse(
            &TEXT
                .replace("} 90", "} 190")
                .replace("le=\"+Inf\"} 100", "le=\"+Inf\"} 200")
                .replace("le=\"0.002\"} 90", "le=\"0.002\"} 190"),
        );
        let g: NodeCounters = after
            .iter()
            .map(|(api, c)| (api.clone(), growth(c, before.get(api))))
            .collect();
        let p = point(1, 2.0, &[g.clone(), g]);
        // 100 more puts on each of two nodes in two seconds.
        assert_eq!(p.apis["put"].requests_per_sec, 100.0);
        assert_eq!(p.apis["put"].errors_per_sec, 0.0);
        assert_eq!(p.apis["put"].p50_ms, Some(1.5));
        assert!(!p.apis.contains_key("get"), "no get in that second");
        // A restarted node counts from zero.
        let restarted = growth(
            &parse(TEXT)["get"],
            Some(&Counters {
                requests: 50.0,
                ..Default::default()
            }),
        );
        assert_eq!(restarted.requests, 5.0);
    }
}
