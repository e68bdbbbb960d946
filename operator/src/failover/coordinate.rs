//! One coordinator decision, the way a runtime takes it: a switchover in progress goes on; a
//! requested one starts once there is a healthy primary; otherwise the failover rules run; and
//! a settled cluster's member list follows the desired one. The Kubernetes controller and the
//! property tests' simulated runtime both decide through this function.

use super::election::decide;
use super::membership::plan_members;
use super::switchover::plan_switchover;
use super::types::{Action, ClusterView, Role, SwitchoverProblem, SwitchoverStep};

/// What became of a requested or running planned switchover in one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchoverOutcome {
    None,
    /// Requested, but the target is not ready to take over yet (the cluster is kept repaired).
    Waiting,
    Started {
        from: String,
        to: String,
    },
    Continuing {
        to: String,
    },
    /// The requested target is the primary.
    Done {
        primary: String,
    },
    /// There is no healthy primary: the failover rules run first, the request stays.
    Deferred,
    Rejected(SwitchoverProblem),
    Abandoned(SwitchoverProblem),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub switchover: SwitchoverOutcome,
}

impl Decision {
    fn new(actions: Vec<Action>, switchover: SwitchoverOutcome) -> Decision {
        Decision {
            actions,
            switchover,
        }
    }
}

/// The actions for now. `request`: a planned switchover someone asked for, to the named member
/// or (`Some(None)`) to the most advanced replica.
pub fn coordinate(view: &ClusterView, request: Option<Option<&str>>) -> Decision {
    let mut d = if let Some(sw) = &view.coordinator.switchover {
        match plan_switchover(view, Some(&sw.to)) {
            SwitchoverStep::Proceed { actions } => {
                Decision::new(actions, SwitchoverOutcome::Continuing { to: sw.to.clone() })
            }
            SwitchoverStep::Abandoned { problem, actions } => {
                Decision::new(actions, SwitchoverOutcome::Abandoned(problem))
            }
            SwitchoverStep::Done { primary, .. } => {
                Decision::new(decide(view), SwitchoverOutcome::Done { primary })
            }
            SwitchoverStep::Rejected { problem } => {
                Decision::new(decide(view), SwitchoverOutcome::Rejected(problem))
            }
        }
    } else if let Some(target) = request {
        start_switchover(view, target)
    } else {
        Decision::new(decide(view), SwitchoverOutcome::None)
    };
    if d.actions.is_empty() && d.switchover == SwitchoverOutcome::None {
        d.actions = plan_members(view);
    }
    d
}

fn start_switchover(view: &ClusterView, target: Option<&str>) -> Decision {
    if view.coordinator.primary.is_none() {
        return Decision::new(decide(view), SwitchoverOutcome::Deferred);
    }
    match plan_switchover(view, target) {
        SwitchoverStep::Done { primary, .. } => {
            Decision::new(decide(view), SwitchoverOutcome::Done { primary })
        }
        SwitchoverStep::Proceed { actions } => {
            let started = actions.iter().find_map(|a| match a {
                Action::BeginSwitchover { from, to, .. } => Some((from.clone(), to.clone())),
                _ => None,
            });
            match started {
                Some((from, to)) => Decision::new(actions, SwitchoverOutcome::Started { from, to }),
                None => {
                    // The target is not ready yet: keep the cluster repaired meanwhile.
                    let mut all = decide(view);
                    all.extend(actions);
                    Decision::new(all, SwitchoverOutcome::Waiting)
                }
            }
        }
        SwitchoverStep::Rejected {
            problem: SwitchoverProblem::NoHealthyPrimary,
        } => Decision::new(decide(view), SwitchoverOutcome::Deferred),
        SwitchoverStep::Rejected { problem } => {
            Decision::new(decide(view), SwitchoverOutcome::Rejected(problem))
        }
        SwitchoverStep::Abandoned { problem, actions } => {
            Decision::new(actions, SwitchoverOutcome::Abandoned(problem))
        }
    }
}

/// When the primary is not among the desired members (a scale-down would remove it): the most
/// advanced healthy replica that stays and follows it in the current term, to hand over to
/// first (the earliest desired member among equals).
pub fn handover_target(view: &ClusterView) -> Option<String> {
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
            let rank = desired.iter().position(|d| *d == o.name);
            (o.log_position(), std::cmp::Reverse(rank))
        })
        .map(|o| o.name.clone())
}
