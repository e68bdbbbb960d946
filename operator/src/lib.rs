//! rcluster operator library.
pub mod crd;
pub mod metrics;
pub mod resources;
pub mod failover;
pub mod linearizability;
