//! The Kubernetes controller's side of the decisions: the shared coordinator decision with a
//! scale-down that would remove the primary switching over first (as `controller::plan` calls
//! it), and which pods exist, mirrored from `controller::observe::effective_replicas` (which
//! works on pods).

use rcluster_operator::failover::*;

/// The actions of one reconcile.
pub fn plan(view: &ClusterView) -> Vec<Action> {
    let target = handover_target(view);
    coordinate(view, target.as_deref().map(Some)).actions
}

/// How many pods (the first ordinals) exist: the desired count, but a pod goes only once it is
/// in no member list (nor the primary), and never while there is no primary.
pub fn pods(slots: &[String], desired: usize, co: &Coordinator, existing: usize) -> usize {
    let ordinal = |name: &String| slots.iter().position(|s| s == name);
    let listed = co
        .members
        .iter()
        .chain(co.previous_members.iter().flatten())
        .chain(co.primary.iter())
        .filter_map(ordinal)
        .map(|o| o + 1)
        .fold(desired, usize::max);
    match co.primary {
        Some(_) => listed,
        None => listed.max(existing),
    }
}
