//! rcluster operator library.
pub mod controller;
pub mod coordinator;
pub mod crd;
pub mod failover;
pub mod linearizability;
pub mod metrics;
pub mod nodes;
pub mod playground;
pub mod resources;
