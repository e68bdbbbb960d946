//! rcluster data node: a replicated log of key-value and pub/sub operations served over HTTP/JSON.

pub mod log;
pub mod state;
pub mod metrics;
pub mod wal;
pub mod engine;
pub mod snapshot;
