//! Invariants of an action list against the view it was decided from, whatever happens next.

use proptest::prelude::*;
use rcluster_operator::failover::*;

/// The member list in force in `co` (the settings' before the first recorded change).
fn config<'a>(view: &'a ClusterView, co: &'a Coordinator) -> &'a [String] {
    if co.members.is_empty() {
        &view.settings.members
    } else {
        &co.members
    }
}

/// Invariants of any action list, whatever the view.
pub fn check_shape(view: &ClusterView, actions: &[Action]) -> Result<(), TestCaseError> {
    let changes: Vec<usize> = (0..actions.len())
        .filter(|&i| actions[i].new_term().is_some())
        .collect();
    prop_assert!(
        changes.is_empty() || changes == [0],
        "term change not first: {:?}",
        actions
    );
    let co = &view.coordinator;
    let observed_max = view.observations.iter().map(|o| o.term).max().unwrap_or(0);
    match actions.first() {
        // Going back to the previous member list in an election's own term: nobody was promoted
        // in it yet, so the list is still the coordinator's to choose.
        Some(Action::ChangeMembers { term, .. }) if *term == co.term => {
            let promoted = view
                .observations
                .iter()
                .any(|o| o.term == *term && o.role == Role::Primary);
            prop_assert!(
                co.primary.is_none() && co.switchover.is_none() && !promoted,
                "member list changed in a term with a primary: {:?}",
                actions
            );
            prop_assert!(*term >= observed_max, "{:?}", actions);
        }
        Some(first) => {
            if let Some(to) = first.new_term() {
                prop_assert!(to > observed_max && to > co.term, "{:?}", actions);
            }
        }
        None => {}
    }
    let next = co.after(actions);
    let term = next.term;
    let list = config(view, &next);
    let reachable = |name: &str| {
        view.observations
            .iter()
            .any(|o| o.name == name && o.reachable)
    };
    for action in actions {
        match action {
            Action::Fence { nodes, term: t } => {
                prop_assert_eq!(*t, term);
                prop_assert!(nodes.iter().all(|n| reachable(n)), "{:?}", actions);
            }
            Action::Promote { node, term: t } => {
                prop_assert_eq!(*t, term);
                prop_assert!(
                    reachable(node),
                    "promoted an unreachable node: {:?}",
                    actions
                );
                // The node refuses a member list without itself.
                prop_assert!(list.contains(node), "promoted a non-member: {:?}", actions);
            }
            Action::Follow {
                node,
                primary,
                term: t,
            } => {
                prop_assert_eq!(*t, term);
                prop_assert!(node != primary && reachable(node), "{:?}", actions);
                prop_assert_eq!(Some(primary), next.primary.as_ref(), "{:?}", actions);
                prop_assert!(list.contains(node), "non-member follows: {:?}", actions);
            }
            Action::ChangeMembers { from, members, .. } => {
                prop_assert_eq!(from.as_slice(), config(view, co), "{:?}", actions);
                prop_assert!(!members.is_empty(), "{:?}", actions);
                // One change at a time (a revert replaces the uncommitted one).
                prop_assert!(
                    co.previous_members.is_none() || co.primary.is_none(),
                    "second change before the first committed: {:?}",
                    actions
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// An election with fewer answers in the term than the failover quorum waits; while a member
/// change is uncommitted, that holds for both lists.
pub fn check_waits_with_too_few(
    view: &ClusterView,
    actions: &[Action],
) -> Result<(), TestCaseError> {
    let c = &view.coordinator;
    if c.primary.is_some() || c.switchover.is_some() || c.term == 0 {
        return Ok(());
    }
    let in_term: Vec<&Observation> = view
        .observations
        .iter()
        .filter(|o| o.reachable && o.term == c.term)
        .collect();
    if in_term.iter().any(|o| o.role == Role::Primary) {
        // Already promoted in this term (the record was lost): recording it again is fine.
        return Ok(());
    }
    let lossy = view.settings.allow_lossy_promotion && view.settings.ack.may_lose_writes();
    if lossy {
        return Ok(());
    }
    let lists = std::iter::once(config(view, c)).chain(c.previous_members.as_deref());
    for list in lists {
        let have = in_term.iter().filter(|o| list.contains(&o.name)).count();
        let need = view.settings.ack.failover_quorum(list.len());
        if have < need {
            prop_assert!(
                !actions.iter().any(|a| matches!(a, Action::Promote { .. })),
                "promoted with {} of {} responders of {:?}: {:?}",
                have,
                need,
                list,
                actions
            );
        }
    }
    Ok(())
}
