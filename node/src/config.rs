//! Command line and environment configuration of a node.

use crate::engine::{Consistency, EngineConfig};
use crate::replication::{AckLevel, Cluster};
use crate::state::{IDEM_MAX_KEYS, IDEM_TTL_MS};
use crate::wal::{FsyncMode, WalConfig};
use clap::Parser;
use rcluster_client::tls::Trust;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Request limits. Every request over a limit gets a 4xx answer before anything is applied.
#[derive(clap::Args, Debug, Clone)]
pub struct Limits {
    /// Longest record key, in bytes.
    #[arg(long, env = "RCLUSTER_MAX_KEY_BYTES", default_value_t = 512)]
    pub max_key_bytes: usize,
    /// Largest record value or message, in bytes of JSON text.
    #[arg(long, env = "RCLUSTER_MAX_VALUE_BYTES", default_value_t = 1 << 20)]
    pub max_value_bytes: usize,
    /// Largest request body, in bytes.
    #[arg(long, env = "RCLUSTER_MAX_BODY_BYTES", default_value_t = 2 << 20)]
    pub max_body_bytes: usize,
    /// Longest topic or subscription name.
    #[arg(long, env = "RCLUSTER_MAX_NAME_BYTES", default_value_t = 128)]
    pub max_name_bytes: usize,
    /// Most items in one batch: published messages, pulled messages, listed records.
    #[arg(long, env = "RCLUSTER_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 512,
            max_value_bytes: 1 << 20,
            max_body_bytes: 2 << 20,
            max_name_bytes: 128,
            max_batch: 1000,
        }
    }
}

/// Connection limits and timeouts: what keeps slow or idle clients from holding a node's
/// connections and memory.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnLimits {
    /// Most client connections served at once (kept below the descriptor limit, which the node
    /// raises to its hard limit at start). When every one has a request in service, a new
    /// connection gets `503 too_many_connections`; connections that are idle or still sending
    /// a request head give way to newcomers, the longest-waiting first.
    #[arg(long, env = "RCLUSTER_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// A request head (request line and headers) must arrive within this time, counted from
    /// its first byte (from the connection's start for its first request).
    #[arg(long, env = "RCLUSTER_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// A request body must arrive within this time, counted from the end of its head.
    #[arg(long, env = "RCLUSTER_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// A keep-alive connection with no request for this long is closed.
    #[arg(long, env = "RCLUSTER_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
        }
    }
}

impl ConnLimits {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms.max(1))
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms.max(1))
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.max(1))
    }
}

#[derive(Parser, Debug, Clone)]
#[command(name = "rcluster-node", version, about = "rcluster data node")]
pub struct NodeArgs {
    /// Folder for the write-ahead log and snapshots.
    #[arg(long, env = "RCLUSTER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to serve HTTP on (port 0 picks a free port; the ready line shows it).
    #[arg(long, env = "RCLUSTER_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,
    /// Serve on this already bound, listening TCP socket, inherited from the parent process,
    /// instead of binding `--listen` (Unix). A supervisor that keeps the socket open gives a
    /// restarted node the same port with no moment in which another program could take it.
    #[arg(long, env = "RCLUSTER_LISTEN_FD", conflicts_with = "listen")]
    pub listen_fd: Option<i32>,
    /// This node's name (a member name when it is part of a cluster).
    #[arg(long, env = "RCLUSTER_NAME", default_value = "n1")]
    pub name: String,
    /// A cluster member as NAME=URL; repeat for every member, this node included.
    #[arg(long = "member", env = "RCLUSTER_MEMBERS", value_delimiter = ',')]
    pub members: Vec<String>,
    /// The shard (replica group) this node belongs to; its members are the `--member`s. The
    /// coordinator tells every node which slots each shard owns.
    /// [default: 0]
    #[arg(long, env = "RCLUSTER_SHARD")]
    pub shard: Option<u32>,
    /// File holding the cluster secret that internal endpoints require.
    #[arg(long, env = "RCLUSTER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// File of access tokens, one `TOKEN ROLE` per line (roles: read, write, admin; `#` starts a
    /// comment). Client requests then need `Authorization: Bearer TOKEN` with a role at least
    /// the route's. Without it the node serves anyone who reaches it. Read again on SIGHUP and
    /// when it changes; a file that does not parse then keeps the tokens in force.
    #[arg(long, env = "RCLUSTER_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with `--tls-key`), for clients and other
    /// nodes alike; members' URLs are then `https://…`. Read again on SIGHUP and when it changes.
    #[arg(long, env = "RCLUSTER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "RCLUSTER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM file of the CA certificates this node trusts when it calls other nodes over
    /// `https://` (replication, forwarding) [default: the system's].
    #[arg(long, env = "RCLUSTER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// How often the node looks for a changed `--auth-file` or TLS file (milliseconds); SIGHUP
    /// reloads them at once.
    #[arg(long, env = "RCLUSTER_RELOAD_INTERVAL_MS", default_value_t = 10_000)]
    pub reload_interval_ms: u64,
    /// The cluster's id (generated once when the cluster is created). The node reports it,
    /// sends it with its internal requests and refuses requests that name another cluster.
    #[arg(long, env = "RCLUSTER_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// JSON file with cluster settings (`members`, `ack`, `consistency`, `fsync`,
    /// `fsync_interval_ms`), as the operator's ConfigMap provides it. Flags win over the file.
    #[arg(long, env = "RCLUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Default write acknowledgement when a request does not say [default: quorum].
    #[arg(long, env = "RCLUSTER_ACK", value_enum)]
    pub ack: Option<AckLevel>,
    /// Default read consistency when a request does not say [default: linearizable].
    #[arg(long, env = "RCLUSTER_CONSISTENCY")]
    pub consistency: Option<String>,
    /// When a write counts as durable: after fsync (`always`, group commit) or after write(2) with
    /// an fsync every interval (`interval`) [default: always].
    #[arg(long, env = "RCLUSTER_FSYNC", value_enum)]
    pub fsync: Option<FsyncMode>,
    /// With `--fsync interval`: milliseconds between fsyncs [default: 10].
    #[arg(long, env = "RCLUSTER_FSYNC_INTERVAL_MS", value_name = "MS")]
    pub fsync_interval_ms: Option<u64>,
    /// How often an idle primary sends heartbeats to replicas.
    #[arg(long, env = "RCLUSTER_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// A primary that has not heard from a quorum for this long reports not ready.
    #[arg(long, env = "RCLUSTER_LEASE_MS", default_value_t = 1000)]
    pub lease_ms: u64,
    /// A replica further behind than this many entries reports not ready.
    #[arg(long, env = "RCLUSTER_READY_LAG", default_value_t = 1000)]
    pub ready_lag: u64,
    /// Start a new WAL segment after this many bytes.
    #[arg(long, env = "RCLUSTER_SEGMENT_BYTES", default_value_t = 64 << 20)]
    pub segment_bytes: u64,
    /// Snapshot after this many log entries...
    #[arg(long, env = "RCLUSTER_SNAPSHOT_ENTRIES", default_value_t = 1_000_000)]
    pub snapshot_entries: u64,
    /// ...or after this many WAL bytes since the last snapshot.
    #[arg(long, env = "RCLUSTER_SNAPSHOT_BYTES", default_value_t = 256 << 20)]
    pub snapshot_bytes: u64,
    /// How long a write waits for its acknowledgement before answering 503 ack_timeout.
    #[arg(long, env = "RCLUSTER_ACK_TIMEOUT_MS", default_value_t = 5000)]
    pub ack_timeout_ms: u64,
    /// How long a session read waits for this node to reach the client's token.
    #[arg(long, env = "RCLUSTER_SESSION_WAIT_MS", default_value_t = 2000)]
    pub session_wait_ms: u64,
    /// Start even when the log or the newest snapshot is damaged in a way that drops intact
    /// entries: cut there, report it (`/v1/status` `recovery`, `rcluster_recovery_data_loss`).
    /// Without it such a node refuses to start and names the file and offset. A torn log tail
    /// (what a crash mid-write leaves) is cut either way.
    #[arg(long, env = "RCLUSTER_ACCEPT_DATA_LOSS")]
    pub accept_data_loss: bool,
    /// How long (milliseconds of the primary's clock) a retried write with the same
    /// Idempotency-Key gets its first result at least; the primary then forgets the key. Only the
    /// primary's setting counts: it logs what every node forgets.
    #[arg(long, env = "RCLUSTER_IDEMPOTENCY_TTL_MS", value_name = "MS", default_value_t = IDEM_TTL_MS)]
    pub idempotency_ttl_ms: u64,
    /// Most idempotency keys remembered; the primary forgets the oldest beyond it (each costs
    /// about 100 bytes of memory).
    #[arg(long, env = "RCLUSTER_IDEMPOTENCY_MAX_KEYS", default_value_t = IDEM_MAX_KEYS)]
    pub idempotency_max_keys: usize,
    /// Threads that serve connections (each keeps those it is handed); 0 or unset: one per CPU
    /// this process may use (its affinity and CPU quota). A node with more threads than the CPU it
    /// gets spends CPU switching between them (README "Performance"); the operator sets this from
    /// the pod's CPU limit or request.
    #[arg(long, env = "RCLUSTER_WORKER_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub worker_threads: Option<u16>,
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, env = "RCLUSTER_LOG_JSON")]
    pub log_json: bool,
    /// Log filter, e.g. `info` or `rcluster_node=debug`.
    #[arg(long, env = "RCLUSTER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub connections: ConnLimits,
}

/// The `--config` file. Unknown fields are ignored so the operator can add some.
#[derive(Debug, Default, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub members: BTreeMap<String, String>,
    pub ack: Option<AckLevel>,
    pub consistency: Option<String>,
    pub fsync: Option<FsyncMode>,
    pub fsync_interval_ms: Option<u64>,
    /// The node's shard, when the operator's ConfigMap says (one ConfigMap per shard).
    pub shard: Option<u32>,
    pub cluster_id: Option<String>,
}

/// Settings resolved from flags, environment and the config file.
pub struct Resolved {
    pub shard: u32,
    pub engine: EngineConfig,
    pub cluster: Cluster,
    pub consistency: Consistency,
}

/// A cluster id travels in an HTTP header: 1..=128 characters of `[A-Za-z0-9._-]`.
pub fn check_cluster_id(id: &str) -> Result<String, String> {
    let ok = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if id.is_empty() || id.len() > 128 || !ok {
        return Err(format!(
            "a cluster id is 1..=128 characters of A-Z a-z 0-9 . _ -, got {id:?}"
        ));
    }
    Ok(id.to_string())
}

pub fn parse_consistency(s: &str) -> Option<Consistency> {
    Consistency::parse(s)
}

impl NodeArgs {
    pub fn resolve(&self) -> Result<Resolved, String> {
        let file: ConfigFile = match &self.config {
            Some(p) => {
                let bytes =
                    std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| format!("bad config file {}: {e}", p.display()))?
            }
            None => ConfigFile::default(),
        };
        let mut members = file.members.clone();
        for m in &self.members {
            let (name, url) = m
                .split_once('=')
                .ok_or_else(|| format!("--member must be NAME=URL, got {m:?}"))?;
            members.insert(name.to_string(), url.trim_end_matches('/').to_string());
        }
        if !members.is_empty() && !members.contains_key(&self.name) {
            return Err(format!(
                "this node's name {:?} is not among the members",
                self.name
            ));
        }
        let secret = match &self.secret_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read secret file {}: {e}", p.display()))?
                    .trim()
                    .to_string(),
            )
            .filter(|s| !s.is_empty()),
            None => None,
        };
        if members.len() > 1 && secret.is_none() {
            return Err(
                "a cluster member needs --secret-file: internal endpoints must be authenticated"
                    .into(),
            );
        }
        let cluster_id = match self.cluster_id.clone().or(file.cluster_id) {
            Some(id) => Some(check_cluster_id(id.trim())?),
            None => None,
        };
        let consistency_name = self
            .consistency
            .clone()
            .or(file.consistency)
            .unwrap_or("linearizable".into());
        let consistency = parse_consistency(&consistency_name).ok_or_else(|| {
            format!(
                "consistency must be linearizable, session or eventual, got {consistency_name:?}"
            )
        })?;
        let cluster = Cluster {
            me: self.name.clone(),
            members,
            secret,
            id: cluster_id,
            default_ack: self.ack.or(file.ack).unwrap_or(AckLevel::Quorum),
            heartbeat: Duration::from_millis(self.heartbeat_ms.max(1)),
            lease: Duration::from_millis(self.lease_ms.max(1)),
            ready_lag: self.ready_lag,
        };
        let trust = match &self.tls_ca {
            Some(p) => Trust::from_pem_file(p).map_err(|e| format!("--tls-ca {e}"))?,
            None => Trust::System,
        };
        let fsync = self.fsync.or(file.fsync).unwrap_or(FsyncMode::Always);
        let interval = self
            .fsync_interval_ms
            .or(file.fsync_interval_ms)
            .unwrap_or(10);
        Ok(Resolved {
            shard: self.shard.or(file.shard).unwrap_or(0),
            engine: self.engine_config(fsync, interval, trust),
            cluster,
            consistency,
        })
    }

    fn engine_config(
        &self,
        fsync: FsyncMode,
        fsync_interval_ms: u64,
        trust: Trust,
    ) -> EngineConfig {
        EngineConfig {
            wal: WalConfig {
                dir: self.data_dir.clone(),
                fsync,
                fsync_interval: Duration::from_millis(fsync_interval_ms.max(1)),
                segment_bytes: self.segment_bytes.max(4096),
            },
            snapshot_entries: self.snapshot_entries.max(1),
            snapshot_bytes: self.snapshot_bytes.max(4096),
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            session_wait: Duration::from_millis(self.session_wait_ms),
            accept_data_loss: self.accept_data_loss,
            trust,
            idempotency_ttl_ms: self.idempotency_ttl_ms,
            idempotency_max_keys: self.idempotency_max_keys,
        }
    }
}

#[cfg(test)]
mod help_tests {
    use super::*;
    use clap::CommandFactory;

    /// `rcluster-node --help` explains every flag, defaults included.
    #[test]
    fn every_flag_has_help() {
        let cmd = NodeArgs::command();
        let missing: Vec<&str> = cmd
            .get_arguments()
            .filter(|a| !["help", "version"].contains(&a.get_id().as_str()))
            .filter(|a| a.get_help().is_none() && a.get_long_help().is_none())
            .map(|a| a.get_id().as_str())
            .collect();
        assert!(missing.is_empty(), "flags without help: {missing:?}");
        let help = NodeArgs::command().render_help().to_string();
        let line = help
            .lines()
            .skip_while(|l| !l.contains("--fsync-interval-ms"))
            .take(3)
            .collect::<String>();
        assert!(line.contains("[default: 10]"), "{line}");
    }
}
