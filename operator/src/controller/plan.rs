//! Decide stage: which failover function to call (the shared, pure `failover` module decides
//! everything else), and what becomes of a requested switchover.

use crate::failover::{self, Action, ClusterView, SwitchoverProblem, SwitchoverStep, WaitReason};

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    None,
    /// Requested, but the target is not ready to take over yet.
    Waiting,
    Started {
        from: String,
        to: String,
    },
    Continuing {
        to: String,
    },
    Done {
        primary: String,
    },
    /// There is no healthy primary: the failover rules run first, the request stays.
    Deferred,
    Rejected(SwitchoverProblem),
    Abandoned(SwitchoverProblem),
}

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
    if let Some(p) = primary.filter(|p| ordinal(cluster, p).is_some_and(|o| o >= spec_replicas)) {
        let target = members
            .iter()
            .filter(|m| ordinal(cluster, &m.name).is_some_and(|o| o < spec_replicas) && m.healthy())
            .filter_map(|m| Some((m, m.node.as_ref()?)))
            .filter(|(_, n)| {
                n.role == "replica"
                    && n.term == view.coordinator.term
                    && n.following.as_deref() == Some(p)
            })
            .max_by_key(|(m, n)| {
                (
                    (n.last_log_term, n.last_log_index),
                    std::cmp::Reverse(ordinal(cluster, &m.name)),
                )
            })
            .map(|(m, _)| m.name.clone());
        return target.map(|t| Request {
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

/// The actions for this reconcile. A switchover in progress goes on; a requested one starts
/// once there is a healthy primary; otherwise the failover rules run.
pub fn plan(view: &ClusterView, request: Option<&Request>, failover_enabled: bool) -> Plan {
    let mut plan = if let Some(sw) = &view.coordinator.switchover {
        match failover::plan_switchover(view, Some(&sw.to)) {
            SwitchoverStep::Proceed { actions } => {
                Plan::new(actions, Outcome::Continuing { to: sw.to.clone() })
            }
            SwitchoverStep::Abandoned { problem, actions } => {
                Plan::new(actions, Outcome::Abandoned(problem))
            }
            SwitchoverStep::Done { primary, .. } => {
                Plan::new(failover::decide(view), Outcome::Done { primary })
            }
            SwitchoverStep::Rejected { problem } => {
                Plan::new(failover::decide(view), Outcome::Rejected(problem))
            }
        }
    } else if let Some(req) = request {
        start_switchover(view, req)
    } else {
        Plan::new(failover::decide(view), Outcome::None)
    };
    if plan.actions.is_empty() && plan.switchover == Outcome::None {
        // A settled cluster: the member list follows the spec (scale up and down).
        plan.actions = failover::plan_members(view);
    }
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

fn start_switchover(view: &ClusterView, req: &Request) -> Plan {
    if view.coordinator.primary.is_none() {
        return Plan::new(failover::decide(view), Outcome::Deferred);
    }
    match failover::plan_switchover(view, req.target.as_deref()) {
        SwitchoverStep::Done { primary, .. } => {
            Plan::new(failover::decide(view), Outcome::Done { primary })
        }
        SwitchoverStep::Proceed { actions } => {
            let started = actions.iter().find_map(|a| match a {
                Action::BeginSwitchover { from, to, .. } => Some((from.clone(), to.clone())),
                _ => None,
            });
            match started {
                Some((from, to)) => Plan::new(actions, Outcome::Started { from, to }),
                None => {
                    // The target is not ready yet: keep the cluster repaired meanwhile.
                    let mut all = failover::decide(view);
                    all.extend(actions);
                    Plan::new(all, Outcome::Waiting)
                }
            }
        }
        SwitchoverStep::Rejected {
            problem: SwitchoverProblem::NoHealthyPrimary,
        } => Plan::new(failover::decide(view), Outcome::Deferred),
        SwitchoverStep::Rejected { problem } => {
            Plan::new(failover::decide(view), Outcome::Rejected(problem))
        }
        SwitchoverStep::Abandoned { problem, actions } => {
            Plan::new(actions, Outcome::Abandoned(problem))
        }
    }
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
