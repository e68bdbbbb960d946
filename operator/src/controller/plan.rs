//! Decide stage: which failover function to call (the shared, pure `failover` module decides
//! everything else), and what becomes of a requested switchover.

use crate::failover::{self, Action, ClusterView, WaitReason};

use super::observe::{Member, ordinal};

/// Annotation on a ReplicatedCluster asking for a planned switchover to the named pod (empty:
/// the most advanced replica). The controller removes it when the switchover is done or refused.
pub const SWITCHOVER_ANNOTATION: &str = "rcluster.dev/switchover-to";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Annotation,
    /// The primary's ordinal is about to be removed by a scale-down.
    ScaleDown,
    /// The primary is the last pod on an outdated template.
    Rollout,
    /// Asked for on the primary node (`POST /v1/switchover`, e.g. `rcluster switchover`).
    Node,
}

/// A planned switchover someone asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub target: Option<String>,
    pub source: Source,
}

/// What happened to a switchover in this reconcile.
pub use crate::failover::SwitchoverOutcome as Outcome;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub switchover: Outcome,
    /// A failover was due but `spec.failover.enabled` is false: nothing was done.
    pub failover_disabled: bool,
}

impl Plan {
    fn new(actions: Vec<Action>, switchover: Outcome) -> Plan {
        Plan {
            actions,
            switchover,
            failover_disabled: false,
        }
    }

    pub fn waits(&self) -> impl Iterator<Item = &WaitReason> {
        self.actions.iter().filter_map(|a| match a {
            Action::Wait { reason } => Some(reason),
            _ => None,
        })
    }
}

/// The switchover to run now, if any. A scale-down that would remove the primary comes first:
/// it hands over to the most advanced ready replica that stays. Then the annotation, then a
/// request recorded on the primary node.
pub fn request(
    cluster: &str,
    spec_replicas: i32,
    annotation: Option<&str>,
    view: &ClusterView,
    members: &[Member],
) -> Option<Request> {
    let primary = view.coordinator.primary.as_deref();
    if primary.is_some_and(|p| ordinal(cluster, p).is_some_and(|o| o >= spec_replicas)) {
        return failover::handover_target(view).map(|t| Request {
            target: Some(t),
            source: Source::ScaleDown,
        });
    }
    annotation
        .map(|a| Request {
            target: Some(a.trim().to_string()).filter(|t| !t.is_empty()),
            source: Source::Annotation,
        })
        .or_else(|| node_request(view, members))
}

/// A switchover request recorded on the recorded primary's node, while none is in progress.
fn node_request(view: &ClusterView, members: &[Member]) -> Option<Request> {
    if view.coordinator.switchover.is_some() {
        return None;
    }
    let primary = view.coordinator.primary.as_deref()?;
    let req = members
        .iter()
        .find(|m| m.name == primary)?
        .node
        .as_ref()?
        .switchover_request
        .as_ref()?;
    Some(Request {
        target: req.to.clone(),
        source: Source::Node,
    })
}

/// Nodes whose switchover request is used up: the one this reconcile acted on once the
/// switchover started (it is in the record from then on), finished or was refused; and requests
/// on any other node (a replica's, or one the primary carried into a switchover), which are
/// never acted on.
pub fn used_node_requests<'a>(
    members: &'a [Member],
    primary: Option<&str>,
    request: Option<&Request>,
    outcome: &Outcome,
) -> Vec<&'a Member> {
    let acted_on = request.is_some_and(|r| r.source == Source::Node);
    let pending = !acted_on || matches!(outcome, Outcome::Waiting | Outcome::Deferred);
    members
        .iter()
        .filter(|m| {
            m.node
                .as_ref()
                .is_some_and(|n| n.switchover_request.is_some())
        })
        .filter(|m| !(pending && Some(m.name.as_str()) == primary))
        .collect()
}

/// The actions for this reconcile: the shared coordinator decision (a switchover in progress
/// goes on, a requested one starts once there is a healthy primary, otherwise the failover rules,
/// and a settled cluster's member list follows the spec), held back when it would start a
/// failover that the spec disables.
pub fn plan(view: &ClusterView, request: Option<&Request>, failover_enabled: bool) -> Plan {
    let decision = failover::coordinate(view, request.map(|r| r.target.as_deref()));
    let mut plan = Plan::new(decision.actions, decision.switchover);
    let bumps = plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::BumpTerm { .. }));
    if !failover_enabled && bumps && view.coordinator.primary.is_some() {
        plan.actions.clear();
        plan.failover_disabled = true;
    }
    plan
}

/// Whether the switchover annotation has served its purpose: the switchover it asked for is done,
/// or it was refused or given up.
pub fn annotation_finished(annotation: Option<&str>, outcome: &Outcome) -> bool {
    let Some(a) = annotation.map(str::trim) else {
        return false;
    };
    match outcome {
        Outcome::Done { primary } => a.is_empty() || a == primary,
        Outcome::Rejected(_) | Outcome::Abandoned(_) => true,
        _ => false,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
