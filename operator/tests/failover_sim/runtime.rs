//! The Kubernetes controller's side of the decisions, mirrored from `controller::plan` and
//! `controller::observe::effective_replicas` (private to the controller): which failover
//! function runs, a scale-down that would remove the primary switching over first, member
//! changes only in a settled cluster, and which pods exist.

use rcluster_operator::failover::*;

/// The actions of one reconcile.
pub fn plan(view: &ClusterView) -> Vec<Action> {
    let co = &view.coordinator;
    let (actions, switchover_quiet) = if let Some(sw) = &co.switchover {
        match plan_switchover(view, Some(&sw.to)) {
            SwitchoverStep::Proceed { actions } | SwitchoverStep::Abandoned { actions, .. } => {
                (actions, false)
            }
            SwitchoverStep::Done { .. } | SwitchoverStep::Rejected { .. } => (decide(view), false),
        }
    } else if let Some(target) = scale_down_target(view) {
        (start_switchover(view, &target), false)
    } else {
        (decide(view), true)
    };
    if actions.is_empty() && switchover_quiet {
        return plan_members(view);
    }
    actions
}

/// The primary is about to be removed: the most advanced healthy replica that stays takes over.
fn scale_down_target(view: &ClusterView) -> Option<String> {
    let co = &view.coordinator;
    let primary = co.primary.as_deref()?;
    let desired = &view.settings.members;
    if desired.iter().any(|d| d == primary) {
        return None;
    }
    view.observations
        .iter()
        .filter(|o| desired.contains(&o.name) && o.reachable && o.unhealthy_since_ms.is_none())
        .filter(|o| {
            o.role == Role::Replica && o.term == co.term && o.following.as_deref() == Some(primary)
        })
        .max_by_key(|o| {
            let ordinal = desired.iter().position(|d| *d == o.name);
            (o.log_position(), std::cmp::Reverse(ordinal))
        })
        .map(|o| o.name.clone())
}

fn start_switchover(view: &ClusterView, target: &str) -> Vec<Action> {
    if view.coordinator.primary.is_none() {
        return decide(view);
    }
    match plan_switchover(view, Some(target)) {
        SwitchoverStep::Proceed { actions } => {
            if actions.first().and_then(Action::new_term).is_some() {
                return actions;
            }
            // Not ready yet: keep the cluster repaired meanwhile.
            let mut all = decide(view);
            all.extend(actions);
            all
        }
        SwitchoverStep::Abandoned { actions, .. } => actions,
        SwitchoverStep::Done { .. } | SwitchoverStep::Rejected { .. } => decide(view),
    }
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
