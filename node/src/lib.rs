//! rcluster data node: a replicated log of key-value and pub/sub operations served over HTTP/JSON.
//!
//! Layers, from the edge in: `api` (HTTP parsing, validation, rendering) → `engine` (ordering,
//! durability waits, background duties; performs what `replication`, the pure replication core,
//! decides) → `state` (the pure state machine) and `wal`/`snapshot` (the files). `shipper` carries
//! the primary's log to its replicas through a narrow engine API.

pub mod ack_waiters;
pub mod admission;
pub mod alloc;
pub mod answer;
pub mod api;
pub mod auth;
pub mod config;
pub mod connection;
pub mod engine;
pub mod fds;
pub mod headers;
pub mod http1;
pub mod idem;
pub mod listen;
pub mod log;
pub mod metrics;
pub mod op_result;
pub mod packed;
pub mod record;
pub mod replication;
pub mod routing;
pub mod server;
pub mod shipper;
pub mod slot_state;
pub mod snapshot;
pub mod state;
pub mod threads;
pub mod tls;
pub mod topic;
pub mod txn;
pub mod value;
pub mod wal;
