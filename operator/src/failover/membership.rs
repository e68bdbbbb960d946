//! Member changes (scale up and down) at a term boundary.
//!
//! The coordinator records the new list in a new term together with the old one, then
//! re-promotes the current primary in that term with the new list and points every member at
//! it. The primary's first entry of the term commits only at a write quorum of the new list
//! and only after those members hold the whole log before it, so once it is committed every
//! acknowledged entry is on a write quorum of the new list and the old list can be forgotten.
//! Until then elections must hear from enough members of both lists (see `election`): with
//! our failover quorum (`members - write_quorum + 1`, smaller than a majority for even sizes),
//! adding even a single member is not safe without that.
//!
//! Any number of members may join or leave in one change; the next change waits until the
//! previous one is committed. A member joins once it answers (it has a pod and a running node),
//! so a write quorum never counts a member that cannot acknowledge yet. The primary never
//! leaves: the runtime switches over first.

use super::types::{Action, ClusterView, Role, WaitReason};
use super::view::{Members, same_members};

/// The member change to make now, if any (call it when [`decide`](super::decide) has nothing to do): record a
/// new member list in a new term and re-promote the primary with it, or record that the last
/// change is committed. Members join once they answer; the primary never leaves (a runtime
/// switches over first).
pub fn plan_members(view: &ClusterView) -> Vec<Action> {
    match Members::new(view) {
        Ok(members) => plan(&members, &view.settings.members),
        Err(problem) => vec![Action::Wait {
            reason: WaitReason::InvalidInput { problem },
        }],
    }
}

fn plan(m: &Members, desired: &[String]) -> Vec<Action> {
    if m.coordinator.switchover.is_some() {
        return Vec::new();
    }
    let Some(primary) = m.coordinator.primary.as_deref() else {
        return Vec::new();
    };
    let term = m.term();
    let Some(p) = m
        .reachable_get(primary)
        .filter(|p| p.term == term && p.role == Role::Primary && p.unhealthy_since_ms.is_none())
    else {
        return Vec::new();
    };
    if m.previous.is_some() {
        let committed = p.commit_by_ack.map_or(0, |c| c.at(m.settings.ack));
        let listed = same_members(&p.members, m.config);
        if listed && p.term_start > 0 && committed >= p.term_start {
            return vec![Action::MembersCommitted];
        }
        return vec![Action::Wait {
            reason: WaitReason::MembersCommitting {
                term_start: p.term_start,
                committed,
            },
        }];
    }
    if !desired.iter().any(|d| d == primary) {
        return Vec::new();
    }
    let target: Vec<String> = desired
        .iter()
        .filter(|d| m.is_member(d) || m.all.iter().any(|o| o.name == **d && o.reachable))
        .cloned()
        .collect();
    if same_members(&target, m.config) {
        return Vec::new();
    }
    let term = m.next_term();
    let mut actions = vec![
        Action::ChangeMembers {
            from: m.config.to_vec(),
            members: target.clone(),
            term,
        },
        Action::Promote {
            node: primary.to_string(),
            term,
        },
    ];
    for name in target.iter().filter(|n| *n != primary) {
        if m.all.iter().any(|o| o.name == *name && o.reachable) {
            actions.push(Action::Follow {
                node: name.clone(),
                primary: primary.to_string(),
                term,
            });
        }
    }
    actions
}
