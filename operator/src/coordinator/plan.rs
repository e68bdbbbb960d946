//! What one coordination step does: which switchover request to act on (requests are plain
//! input: the Kubernetes annotation, a scale-down or rollout that must move the primary, or a
//! request recorded on the primary node), the shared failover decision, and which recorded
//! requests are used up.

use super::memory::Probe;
use crate::failover::{self, Action, ClusterView, SwitchoverOutcome, WaitReason};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The `rcluster.dev/switchover-to` annotation on a ReplicatedCluster.
    Annotation,
    /// The desired members leave the primary out (a scale-down would remove it).
    ScaleDown,
    /// The primary is the last member on an outdated pod template.
    Rollout,
    /// Asked for on the primary node (`POST /v1/switchover`, e.g. `rcluster switchover`).
    Node,
}

/// A planned switchover someone asked for: to `target`, or (`None`) the most advanced replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub target: Option<String>,
    pub source: Source,
}

/// The decision of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub switchover: SwitchoverOutcome,
    /// A failover was due but the runtime has failover disabled: nothing was done.
    pub failover_disabled: bool,
    /// The switchover request this step acted on (or keeps waiting on), if any.
    pub request: Option<Request>,
    /// Members whose recorded switchover request is used up: cleared once the record is stored.
    pub clear: Vec<String>,
}

impl Plan {
    pub fn waits(&self) -> impl Iterator<Item = &WaitReason> {
        self.actions.iter().filter_map(|a| match a {
            Action::Wait { reason } => Some(reason),
            _ => None,
        })
    }

    /// Nothing was done, and nothing waits to be done.
    pub fn in_place(&self) -> bool {
        self.actions.is_empty() && self.switchover == SwitchoverOutcome::None
    }
}

/// One step's decision. `asked`: a switchover requested from outside the nodes (the annotation,
/// a rollout). `probes`: this round's answers, for the requests recorded on nodes. A decision that
/// would start a failover is held back when `failover_enabled` is false.
pub fn plan(
    view: &ClusterView,
    asked: Option<Request>,
    probes: &[Probe],
    failover_enabled: bool,
) -> Plan {
    let request = select(view, asked, probes);
    let target = request.as_ref().map(|r| r.target.as_deref());
    let decision = failover::coordinate(view, target);
    let mut actions = decision.actions;
    let bumps = actions.iter().any(|a| matches!(a, Action::BumpTerm { .. }));
    let failover_disabled = !failover_enabled && bumps && view.coordinator.primary.is_some();
    if failover_disabled {
        actions.clear();
    }
    let clear = used_node_requests(
        probes,
        view.coordinator.primary.as_deref(),
        request.as_ref(),
        &decision.switchover,
    );
    Plan {
        actions,
        switchover: decision.switchover,
        failover_disabled,
        request,
        clear,
    }
}

/// The switchover to run now, if any. When the desired members leave the primary out, a
/// handover to the most advanced ready replica that stays comes first (nothing starts while
/// there is none: the scale-down waits). Then `asked`, then a request recorded on the recorded
/// primary's node while no switchover is in progress.
pub fn select(view: &ClusterView, asked: Option<Request>, probes: &[Probe]) -> Option<Request> {
    let primary = view.coordinator.primary.as_deref();
    if primary.is_some_and(|p| !view.settings.members.iter().any(|m| m == p)) {
        return failover::handover_target(view).map(|t| Request {
            target: Some(t),
            source: Source::ScaleDown,
        });
    }
    asked.or_else(|| node_request(view, probes))
}

fn node_request(view: &ClusterView, probes: &[Probe]) -> Option<Request> {
    if view.coordinator.switchover.is_some() {
        return None;
    }
    let primary = view.coordinator.primary.as_deref()?;
    let req = probes
        .iter()
        .find(|p| p.name == primary)?
        .status
        .as_ref()?
        .switchover_request
        .as_ref()?;
    Some(Request {
        target: req.to.clone(),
        source: Source::Node,
    })
}

/// Members whose switchover request is used up: the one acted on once the switchover started
/// (it is in the record from then on), finished or was refused; and requests on any other member
/// (a replica's, or one the primary carried into a switchover), which are never acted on. A
/// request waits while its target is not ready or while there is no healthy primary.
pub fn used_node_requests(
    probes: &[Probe],
    primary: Option<&str>,
    request: Option<&Request>,
    outcome: &SwitchoverOutcome,
) -> Vec<String> {
    let acted_on = request.is_some_and(|r| r.source == Source::Node);
    let pending = !acted_on
        || matches!(
            outcome,
            SwitchoverOutcome::Waiting | SwitchoverOutcome::Deferred
        );
    probes
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.switchover_request.is_some())
        })
        .filter(|p| !(pending && Some(p.name.as_str()) == primary))
        .map(|p| p.name.clone())
        .collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
