//! Reconcile tests against kube's mock service (tower-test), with real or fake nodes.
//!
//! What the mock can and cannot show: requests are asserted (method, path, query, body) and
//! answered the way the API server would, including the resourceVersion precondition of status
//! writes. Server-side apply semantics (field ownership, merging), schema validation, admission,
//! RBAC, watch delivery and garbage collection are not exercised; no real API server runs here.
//! Node commands go to real `rcluster-node` processes in `failover_real`, to fake nodes
//! elsewhere.

pub mod fixtures;
mod nodes;
mod world;

mod failover_fake;
mod failover_real;
mod new_cluster;
mod rollout;
mod scale_real;
mod security;
mod security_default;
mod shards;
mod switchover;
mod wiring;
