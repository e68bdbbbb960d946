//! The Kubernetes controller's StatefulSet in the simulation: which pods (the first ordinals)
//! exist, from the coordinator runtime's `keep_running` as `controller::observe::effective_replicas`
//! uses it.

use rcluster_operator::coordinator::keep_running;
use rcluster_operator::failover::Coordinator;

/// How many pods (the first ordinals) exist: the desired count, but a pod goes only once it is
/// in no member list (nor the primary), and never while there is no primary.
pub fn pods(slots: &[String], desired: usize, co: &Coordinator, existing: usize) -> usize {
    let ordinal = |name: &str| slots.iter().position(|s| s == name);
    let running = &slots[..existing.min(slots.len())];
    keep_running(&slots[..desired.min(slots.len())], co, running)
        .into_iter()
        .filter_map(ordinal)
        .map(|o| o + 1)
        .fold(desired, usize::max)
}
