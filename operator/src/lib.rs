//! rcluster operator library.
pub mod certs;
pub mod controller;
pub mod coordinator;
pub mod crd;
pub mod failover;
pub mod metrics;
pub mod nodes;
pub mod playground;
pub mod reshard;
pub mod resources;
