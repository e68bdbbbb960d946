//! Planned switchover: wait until the target is ready (within the node's lag bound), stop writes
//! on the primary by fencing it in a new term, then promote the target once it provably holds
//! every acknowledged entry. Nothing acknowledged is lost at any ack level.
//!
//! The fenced primary's log is final, and it saw every acknowledged write. The target qualifies
//! when it holds all of that log, or when the entries it lacks cannot have been acknowledged:
//! fewer members than the write quorum are ahead of it or unknown. At `quorum` and `all` this
//! lets a switchover under load succeed although the last in-flight writes never reached the
//! target (they were not acknowledged; the old primary discards them when it follows). The
//! fenced node keeps draining its log to the replicas of its old term, and a write waiting
//! there is acknowledged when a drained entry completes its write quorum; so the other members
//! are fenced too before the target is promoted on that ground, which makes their logs final.
//! Draining also lets a target that is behind catch up; one that does not within the timeout
//! is abandoned for an ordinary election, which keeps the most advanced member.

use super::steps::{best_candidate, follow_others, start_election};
use super::types::{
    Action, ClusterView, Observation, Role, Switchover, SwitchoverProblem, SwitchoverStep,
    WaitReason,
};
use super::view::Members;

/// One step of a planned switchover to `target` (`None`: the most advanced replica). Call it
/// again after running the actions until it returns `Done`, `Abandoned` or `Rejected`. Pass the
/// target recorded in the first step's [`Action::BeginSwitchover`]: with `None` and a healthy
/// primary a new switchover starts. While a switchover is recorded, [`decide`](super::decide) continues it too.
pub fn plan_switchover(view: &ClusterView, target: Option<&str>) -> SwitchoverStep {
    match Members::new(view) {
        Ok(members) => plan(&members, target),
        Err(problem) => SwitchoverStep::Rejected {
            problem: SwitchoverProblem::InvalidInput { problem },
        },
    }
}

pub(super) enum Progress {
    Act(Vec<Action>),
    Abandon(SwitchoverProblem, Vec<Action>),
}

fn plan(m: &Members, target: Option<&str>) -> SwitchoverStep {
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
    if target.unhealthy_since_ms.is_some() {
        // Not ready (lagging): stopping writes now would leave a long gap to close.
        return SwitchoverStep::Proceed {
            actions: vec![catching_up(target, primary)],
        };
    }
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
    m.reachable_get(name)
        .filter(|p| p.unhealthy_since_ms.is_none() && p.term == m.term() && p.role == Role::Primary)
}

fn replicates_from(m: &Members, o: &Observation, primary: &str) -> bool {
    o.name != primary
        && o.term == m.term()
        && o.role == Role::Replica
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
    let promote = || {
        let mut actions = vec![Action::Promote {
            node: to.name.clone(),
            term,
        }];
        actions.extend(follow_others(m, &to.name));
        Progress::Act(actions)
    };
    if to.log_position() >= from.log_position() {
        return promote();
    }
    // A fenced node still drains its log to the replicas of the term it led, and a write
    // waiting there is acknowledged once that completes a write quorum: the entries a member
    // in an older term holds are not final yet. Fence those first; the target keeps draining.
    let draining: Vec<String> = m
        .reachable_any()
        .filter(|o| o.term < term && o.name != to.name)
        .map(|o| o.name.clone())
        .collect();
    let unacknowledged = lacks_only_unacknowledged(m, to);
    if unacknowledged && draining.is_empty() {
        return promote();
    }
    let behind = from.last_log_index.saturating_sub(to.last_log_index);
    if m.now_ms.saturating_sub(sw.started_ms) >= m.settings.switchover_timeout_ms {
        return abandon(SwitchoverProblem::TimedOut {
            target: to.name.clone(),
            behind,
        });
    }
    let mut actions = Vec::new();
    if unacknowledged {
        actions.push(Action::Fence {
            nodes: draining,
            term,
        });
    }
    actions.push(catching_up(to, from));
    Progress::Act(actions)
}

fn catching_up(target: &Observation, primary: &Observation) -> Action {
    Action::Wait {
        reason: WaitReason::SwitchoverCatchingUp {
            target: target.name.clone(),
            target_index: target.last_log_index,
            primary_index: primary.last_log_index,
        },
    }
}

/// Whether every entry `target` lacks is provably unacknowledged: an acknowledged entry is on
/// `write_quorum` members, and each of them is ahead of `target` or did not answer.
/// While a member change is uncommitted this must hold for the previous list too.
fn lacks_only_unacknowledged(m: &Members, target: &Observation) -> bool {
    let holds = |list: &[String]| {
        let answering: Vec<&Observation> = m
            .reachable_any()
            .filter(|o| list.contains(&o.name))
            .collect();
        let ahead = answering
            .iter()
            .filter(|o| o.log_position() > target.log_position())
            .count();
        let silent = list.len() - answering.len();
        ahead + silent < m.settings.ack.write_quorum(list.len())
    };
    holds(m.config) && m.previous.as_ref().is_none_or(|(list, _)| holds(list))
}
