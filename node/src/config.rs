//! Command line and environment configuration of a node.

use crate::engine::EngineConfig;
use crate::wal::{FsyncMode, WalConfig};
use clap::Parser;
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

#[derive(Parser, Debug, Clone)]
#[command(name = "rcluster-node", version, about = "rcluster data node")]
pub struct NodeArgs {
    /// Folder for the write-ahead log and snapshots.
    #[arg(long, env = "RCLUSTER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to serve HTTP on (port 0 picks a free port; the ready line shows it).
    #[arg(long, env = "RCLUSTER_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,
    /// This node's name.
    #[arg(long, env = "RCLUSTER_NAME", default_value = "n1")]
    pub name: String,
    /// When a write counts as durable: after fsync (`always`, group commit) or after write(2) with
    /// an fsync every interval (`interval`).
    #[arg(long, env = "RCLUSTER_FSYNC", value_enum, default_value = "always")]
    pub fsync: FsyncMode,
    #[arg(long, env = "RCLUSTER_FSYNC_INTERVAL_MS", default_value_t = 10)]
    pub fsync_interval_ms: u64,
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
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, env = "RCLUSTER_LOG_JSON")]
    pub log_json: bool,
    /// Log filter, e.g. `info` or `rcluster_node=debug`.
    #[arg(long, env = "RCLUSTER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(flatten)]
    pub limits: Limits,
}

impl NodeArgs {
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            wal: WalConfig {
                dir: self.data_dir.clone(),
                fsync: self.fsync,
                fsync_interval: Duration::from_millis(self.fsync_interval_ms.max(1)),
                segment_bytes: self.segment_bytes.max(4096),
            },
            snapshot_entries: self.snapshot_entries.max(1),
            snapshot_bytes: self.snapshot_bytes.max(4096),
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            session_wait: Duration::from_millis(self.session_wait_ms),
        }
    }
}
