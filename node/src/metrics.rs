//! Prometheus metrics of a node. Names are a public interface (dashboards, alerts): change with care.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `api` label values; also the names used in docs/API.md and by `rcluster bench`.
pub const APIS: &[&str] = &[
    "put",
    "get",
    "delete",
    "incr",
    "list",
    "create_topic",
    "delete_topic",
    "list_topics",
    "publish",
    "subscribe",
    "unsubscribe",
    "pull",
    "read",
    "stream",
    "watch",
    "status",
    "switchover",
    "cluster",
    "cluster_stream",
    "txn",
    "merged",
];

/// One API's series, resolved once: finding a series by its labels hashes them and takes a lock
/// (about 400 instructions a request for the three a request touches).
pub struct ApiSeries {
    pub api: &'static str,
    pub ok: IntCounter,
    pub duration: Histogram,
    pub in_flight: IntGauge,
}

pub struct Metrics {
    pub registry: Registry,
    /// The series of every API in `APIS`, for the requests' hot path.
    pub apis: Vec<ApiSeries>,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub fsync_duration: Histogram,
    pub fsync_batch: Histogram,
    pub wal_bytes: IntCounter,
    pub last_index: IntGauge,
    pub commit_index: IntGauge,
    pub applied_index: IntGauge,
    pub snapshot_index: IntGauge,
    pub snapshots: IntCounter,
    pub records: IntGauge,
    /// The runtime's threads that serve requests (`--worker-threads`).
    pub worker_threads: IntGauge,
    pub topics: IntGauge,
    pub term: IntGauge,
    pub role: IntGaugeVec,
    pub ready: IntGauge,
    pub replication_lag_entries: IntGaugeVec,
    pub replication_lag_seconds: prometheus::GaugeVec,
    pub entries_discarded: IntCounter,
    /// Requests this node sent on to another node (another shard's, or its own shard's primary).
    pub forwarded: IntCounterVec,
    pub recovery_cut_bytes: IntGauge,
    pub recovery_data_loss: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone()))
        .expect("metric names are unique constants");
    m
}

impl Metrics {
    /// The resolved series of an API label (every label the routes use is in `APIS`).
    pub fn api(&self, api: &str) -> Option<&ApiSeries> {
        self.apis.iter().find(|s| s.api == api)
    }

    pub fn new() -> Self {
        let r = Registry::new();
        let latency_buckets = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0,
        ];
        let requests = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "rcluster_requests_total",
                    "Client requests by API and outcome",
                ),
                &["api", "outcome"],
            )
            .unwrap(),
        );
        let request_duration = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "rcluster_request_duration_seconds",
                    "Client request latency by API",
                )
                .buckets(latency_buckets.clone()),
                &["api"],
            )
            .unwrap(),
        );
        let in_flight = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "rcluster_requests_in_flight",
                    "Requests being served, including waiting long polls and open streams",
                ),
                &["api"],
            )
            .unwrap(),
        );
        let apis = APIS
            .iter()
            .map(|&api| ApiSeries {
                api,
                in_flight: in_flight.with_label_values(&[api]),
                ok: requests.with_label_values(&[api, "ok"]),
                duration: request_duration.with_label_values(&[api]),
            })
            .collect();
        let forwarded = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "rcluster_forwarded_requests_total",
                    "Requests forwarded to another node, by the shard they were sent to",
                ),
                // Not `shard`: Prometheus gives every series of a pod its own shard under that name.
                &["to_shard"],
            )
            .unwrap(),
        );
        // Exported from the start (a dashboard panel queries it before any forward happens).
        forwarded.with_label_values(&["0"]);
        let gauge = |name: &str, help: &str| reg(&r, IntGauge::new(name, help).unwrap());
        let m = Metrics {
            apis,
            forwarded,
            requests,
            request_duration,
            in_flight,
            fsync_duration: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "rcluster_wal_fsync_duration_seconds",
                        "Duration of WAL fsync calls",
                    )
                    .buckets(latency_buckets),
                )
                .unwrap(),
            ),
            fsync_batch: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "rcluster_wal_fsync_batch_entries",
                        "Entries made durable by one WAL write+fsync (group commit)",
                    )
                    .buckets(vec![
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
                    ]),
                )
                .unwrap(),
            ),
            wal_bytes: reg(
                &r,
                IntCounter::new(
                    "rcluster_wal_bytes_written_total",
                    "Bytes appended to the WAL",
                )
                .unwrap(),
            ),
            last_index: gauge("rcluster_log_last_index", "Index of the last log entry"),
            commit_index: gauge("rcluster_commit_index", "Highest committed log index"),
            applied_index: gauge("rcluster_applied_index", "Highest applied log index"),
            snapshot_index: gauge(
                "rcluster_snapshot_index",
                "Log index of the newest snapshot",
            ),
            snapshots: reg(
                &r,
                IntCounter::new("rcluster_snapshots_total", "Snapshots written").unwrap(),
            ),
            records: gauge(
                "rcluster_records",
                "Records held (including expired, not purged)",
            ),
            topics: gauge("rcluster_topics", "Topics held"),
            worker_threads: gauge(
                "rcluster_worker_threads",
                "Threads that serve requests (--worker-threads)",
            ),
            term: gauge("rcluster_term", "Current term"),
            role: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("rcluster_role", "1 for the node's current role"),
                    &["role"],
                )
                .unwrap(),
            ),
            ready: gauge("rcluster_ready", "1 when the node reports ready"),
            replication_lag_entries: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rcluster_replication_lag_entries",
                        "Entries a replica is behind the primary's last index",
                    ),
                    &["replica"],
                )
                .unwrap(),
            ),
            replication_lag_seconds: reg(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "rcluster_replication_lag_seconds",
                        "Age of the oldest entry a replica has not yet made durable",
                    ),
                    &["replica"],
                )
                .unwrap(),
            ),
            entries_discarded: reg(
                &r,
                IntCounter::new(
                    "rcluster_entries_discarded_total",
                    "Log entries discarded because they diverged from the primary's log",
                )
                .unwrap(),
            ),
            recovery_cut_bytes: gauge(
                "rcluster_recovery_cut_bytes",
                "Bytes of damaged log that recovery cut when the node started (a torn tail, or more with --accept-data-loss)",
            ),
            recovery_data_loss: gauge(
                "rcluster_recovery_data_loss",
                "1 when the node started by dropping intact data under --accept-data-loss",
            ),
            registry: r,
        };
        m.set_role("standalone");
        m
    }

    pub fn set_role(&self, role: &str) {
        for r in ["primary", "replica", "standalone", "fenced"] {
            self.role.with_label_values(&[r]).set(i64::from(r == role));
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("prometheus text format is UTF-8")
    }
}
