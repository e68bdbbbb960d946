//! The steps elections and switchovers share: start an election (a new term, every reachable
//! member fenced in it), choose the most advanced candidate, and point the others at a primary.

use super::types::{Action, Observation, Role};
use super::view::{Members, same_members};

/// Bump the term and fence every reachable member; the next call chooses among them.
pub(super) fn start_election(m: &Members) -> Vec<Action> {
    let to = m.next_term();
    let mut actions = vec![Action::BumpTerm { to }];
    let nodes = m.reachable_names();
    if !nodes.is_empty() {
        actions.push(Action::Fence { nodes, term: to });
    }
    actions
}

/// The most advanced member; among equals a healthy one, then the first in member order.
pub(super) fn best_candidate<'a>(
    m: &Members,
    among: &[&'a Observation],
) -> Option<&'a Observation> {
    among.iter().copied().max_by_key(|o| {
        (
            o.log_position(),
            o.unhealthy_since_ms.is_none(),
            std::cmp::Reverse(m.rank(&o.name)),
        )
    })
}

/// Point every reachable member other than `primary` at it. Members still claiming to be
/// primary in an older term are fenced first, so they stop accepting writes even if the
/// follow command fails.
pub(super) fn follow_others(m: &Members, primary: &str) -> Vec<Action> {
    let term = m.term();
    let others: Vec<&Observation> = m.reachable().filter(|o| o.name != primary).collect();
    let claimants: Vec<String> = others
        .iter()
        .filter(|o| o.role.claims_primary())
        .map(|o| o.name.clone())
        .collect();
    let mut actions = Vec::new();
    if !claimants.is_empty() {
        actions.push(Action::Fence {
            nodes: claimants,
            term,
        });
    }
    for o in others {
        // A node that reports another member list missed the follow that carried this one.
        let same_list = o.members.is_empty() || same_members(&o.members, m.config);
        let in_place = o.role == Role::Replica
            && o.term == term
            && o.following.as_deref() == Some(primary)
            && same_list;
        if !in_place {
            actions.push(Action::Follow {
                node: o.name.clone(),
                primary: primary.to_string(),
                term,
            });
        }
    }
    actions
}
