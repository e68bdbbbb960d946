//! Planned switchover: stop writes on the primary, let the target catch up, promote it.
//! Nothing acknowledged is lost at any ack level, because the target ends up holding the whole
//! log of the old primary, which saw every acknowledged write.

use super::election::{best_candidate, follow_others, start_election};
use super::{Action, Members, Observation, Switchover, SwitchoverProblem, SwitchoverStep, WaitReason};

pub(super) enum Progress {
    Act(Vec<Action>),
    Abandon(SwitchoverProblem, Vec<Action>),
}

pub(super) fn plan(m: &Members, target: Option<&str>) -> SwitchoverStep {
    if let Some(sw) = &m.coordinator.switchover {
        if target.is_some_and(|t| t != sw.to) {
            return rejected(SwitchoverProblem::OtherSwitchoverInProgress { to: sw.to.clone() });
        }
        if m.max_observed_term() > m.term() {
            return SwitchoverStep::Abandoned {
                problem: SwitchoverProblem::NoHealthyPrimary,
                actions: start_election(m),
            };
        }
        return match resume(m, sw) {
            Progress::Act(actions) => SwitchoverStep::Proceed { actions },
            Progress::Abandon(problem, actions) => SwitchoverStep::Abandoned { problem, actions },
        };
    }
    if let Some(t) = target.filter(|t| m.coordinator.primary.as_deref() == Some(*t)) {
        return SwitchoverStep::Done {
            primary: t.to_string(),
            term: m.term(),
        };
    }
    let Some(primary) = healthy_primary(m) else {
        return rejected(SwitchoverProblem::NoHealthyPrimary);
    };
    let target = match target {
        Some(t) => match check_target(m, &primary.name, t) {
            Ok(o) => o,
            Err(problem) => return rejected(problem),
        },
        None => {
            let replicas: Vec<&Observation> = m
                .reachable()
                .filter(|o| replicates_from(m, o, &primary.name))
                .collect();
            match best_candidate(m, &replicas) {
                Some(o) => o,
                None => return rejected(SwitchoverProblem::NoCandidate),
            }
        }
    };
    let term = m.next_term();
    SwitchoverStep::Proceed {
        actions: vec![
            Action::BeginSwitchover {
                from: primary.name.clone(),
                to: target.name.clone(),
                term,
                started_ms: m.now_ms,
            },
            Action::Fence {
                nodes: vec![primary.name.clone()],
                term,
            },
        ],
    }
}

fn rejected(problem: SwitchoverProblem) -> SwitchoverStep {
    SwitchoverStep::Rejected { problem }
}

fn healthy_primary<'a>(m: &Members<'a>) -> Option<&'a Observation> {
    let name = m.coordinator.primary.as_deref()?;
    m.reachable_get(name).filter(|p| {
        p.unhealthy_since_ms.is_none() && p.term == m.term() && p.role.claims_primary()
    })
}

fn replicates_from(m: &Members, o: &Observation, primary: &str) -> bool {
    o.name != primary
        && o.term == m.term()
        && !o.role.claims_primary()
        && o.following.as_deref() == Some(primary)
}

fn check_target<'a>(
    m: &Members<'a>,
    primary: &str,
    target: &str,
) -> Result<&'a Observation, SwitchoverProblem> {
    if !m.is_member(target) {
        return Err(SwitchoverProblem::NotAMember {
            node: target.to_string(),
        });
    }
    let Some(o) = m.reachable_get(target) else {
        return Err(SwitchoverProblem::Unreachable {
            node: target.to_string(),
        });
    };
    if !replicates_from(m, o, primary) {
        return Err(SwitchoverProblem::TargetNotFollowing {
            target: target.to_string(),
        });
    }
    Ok(o)
}

/// Continue a recorded switchover in the coordinator's term.
pub(super) fn resume(m: &Members, sw: &Switchover) -> Progress {
    let term = m.term();
    let abandon = |problem| Progress::Abandon(problem, start_election(m));
    let unreachable = |node: &str| SwitchoverProblem::Unreachable {
        node: node.to_string(),
    };
    // Without the old primary nobody knows its last entries: the election rules decide.
    let Some(from) = m.reachable_get(&sw.from) else {
        return abandon(unreachable(&sw.from));
    };
    let Some(to) = m.reachable_get(&sw.to) else {
        return abandon(unreachable(&sw.to));
    };
    if from.term < term {
        return Progress::Act(vec![
            Action::Fence {
                nodes: vec![from.name.clone()],
                term,
            },
            Action::Wait {
                reason: WaitReason::SwitchoverFencing {
                    primary: from.name.clone(),
                },
            },
        ]);
    }
    if from.role.claims_primary() {
        return abandon(SwitchoverProblem::PrimaryNotFenced {
            primary: from.name.clone(),
        });
    }
    // `from` is fenced: its log is final, and it holds every acknowledged entry.
    if to.log_position() >= from.log_position() {
        let mut actions = vec![Action::Promote {
            node: to.name.clone(),
            term,
        }];
        actions.extend(follow_others(m, &to.name));
        return Progress::Act(actions);
    }
    let behind = from.last_log_index.saturating_sub(to.last_log_index);
    if m.now_ms.saturating_sub(sw.started_ms) >= m.settings.switchover_timeout_ms {
        return abandon(SwitchoverProblem::TimedOut {
            target: to.name.clone(),
            behind,
        });
    }
    Progress::Act(vec![Action::Wait {
        reason: WaitReason::SwitchoverCatchingUp {
            target: to.name.clone(),
            target_index: to.last_log_index,
            primary_index: from.last_log_index,
        },
    }])
}
