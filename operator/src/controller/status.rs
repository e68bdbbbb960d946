//! Status stage (pure): the observed members, the coordinator's record and the decision become
//! `status` — phase, members, conditions. Condition transition times are kept while a
//! condition does not change, so an unchanged cluster produces an identical status (and no write).

use crate::failover::Role;
use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::observe::Member;
use crate::coordinator::{self, Plan};
use crate::crd::{
    LastFailover, MemberRole, MemberStatus, Phase, ReplicatedCluster, ReplicatedClusterStatus,
    SwitchoverStatus, condition,
};
use crate::failover::{Coordinator, WaitReason};
use crate::resources::pod_selector_string;

pub struct Input<'a> {
    pub cluster: &'a ReplicatedCluster,
    pub record: &'a Coordinator,
    pub members: &'a [Member],
    pub plan: &'a Plan,
    /// A failover (not a planned switchover) started and its promotion is not done.
    pub failing_over: bool,
    pub last_failover: Option<LastFailover>,
    /// Members on the StatefulSet's current template, when its revision is known.
    pub updated: Option<i32>,
    pub now: Time,
}

/// The status form of a failover the coordinator runtime completed.
pub fn last_failover(f: &coordinator::LastFailover) -> LastFailover {
    LastFailover {
        time: time_from_ms(f.promoted_at_ms.unwrap_or(f.detected_at_ms)),
        from: f.from.clone(),
        to: f.to.clone().unwrap_or_default(),
        term: f.term as i64,
        duration_ms: f.duration_ms().unwrap_or(0) as i64,
        entries_lost: f.possible_loss.unwrap_or(0) as i64,
    }
}

pub fn time_from_ms(ms: u64) -> Time {
    let ts = k8s_openapi::jiff::Timestamp::from_millisecond(ms as i64).unwrap_or_default();
    Time(ts)
}

fn role(m: &Member) -> MemberRole {
    match m.node.as_ref().map(|n| n.role.as_str()) {
        Some("primary") => MemberRole::Primary,
        Some("replica") => MemberRole::Replica,
        _ => MemberRole::Unknown,
    }
}

/// The recorded primary, if it answers as primary of the recorded term and is ready.
fn acting_primary<'a>(record: &Coordinator, members: &'a [Member]) -> Option<&'a Member> {
    let p = record.primary.as_deref()?;
    members.iter().find(|m| m.name == p).filter(|m| {
        m.healthy()
            && m.node
                .as_ref()
                .is_some_and(|n| n.role == Role::Primary && n.term == record.term)
    })
}

struct Cond {
    type_: &'static str,
    ok: bool,
    reason: &'static str,
    message: String,
}

pub fn build(input: &Input) -> ReplicatedClusterStatus {
    let Input {
        cluster,
        record,
        members,
        plan,
        ..
    } = input;
    let old = cluster.status.clone().unwrap_or_default();
    let primary = acting_primary(record, members);
    let commit = primary
        .and_then(|p| p.node.as_ref())
        .map(|n| n.commit_index);
    let member_status: Vec<MemberStatus> = members
        .iter()
        .map(|m| MemberStatus {
            name: m.name.clone(),
            role: role(m),
            ready: m.ready(),
            term: m.node.as_ref().map_or(0, |n| n.term as i64),
            applied_index: m.node.as_ref().map_or(0, |n| n.applied_index as i64),
            lag_entries: match (commit, m.node.as_ref()) {
                (Some(c), Some(n)) => c.saturating_sub(n.applied_index) as i64,
                _ => 0,
            },
        })
        .collect();
    let not_ready: Vec<&str> = members
        .iter()
        .filter(|m| !m.ready())
        .map(|m| m.name.as_str())
        .collect();
    let outdated = outdated_member_lists(members, &record.members);
    let changing = record.previous_members.is_some()
        || members.len() != record.members.len()
        || members.iter().any(|m| !record.members.contains(&m.name));
    let had_primary = old.primary.is_some()
        || old.last_failover.is_some()
        || old.phase.is_some_and(|p| p != Phase::Pending);
    let waiting = plan.waits().next();
    let blocked = plan.waits().find(|w| {
        matches!(
            w,
            WaitReason::TooFewResponders { .. } | WaitReason::OnlyEmptyLogs { .. }
        )
    });

    let phase = if primary.is_some() {
        if not_ready.is_empty() && outdated.is_empty() && !changing {
            Phase::Running
        } else {
            Phase::Degraded
        }
    } else if record.term == 0 || !had_primary {
        Phase::Pending
    } else if blocked.is_some() || plan.failover_disabled {
        Phase::Unavailable
    } else if input.failing_over || record.primary.is_none() {
        Phase::FailingOver
    } else {
        Phase::Unavailable
    };

    let available = match (primary, record.primary.as_deref()) {
        (Some(p), _) => Cond::yes(
            condition::AVAILABLE,
            "PrimaryReady",
            format!("{} accepts writes in term {}", p.name, record.term),
        ),
        _ if plan.failover_disabled => Cond::no(
            condition::AVAILABLE,
            "FailoverDisabled",
            format!(
                "primary {} is not ready and spec.failover.enabled is false",
                record.primary.as_deref().unwrap_or("?")
            ),
        ),
        _ if blocked.is_some() => Cond::no(
            condition::AVAILABLE,
            "WaitingForQuorum",
            wait_message(blocked),
        ),
        (None, Some(p)) => Cond::no(
            condition::AVAILABLE,
            "PrimaryNotReady",
            format!(
                "primary {p} is not ready: {}",
                waiting.map_or_else(
                    || "it does not answer as primary yet".to_string(),
                    |w| wait_message(Some(w))
                )
            ),
        ),
        (None, None) => Cond::no(
            condition::AVAILABLE,
            "NoPrimary",
            format!("electing a primary in term {}", record.term),
        ),
    };
    let ready = if primary.is_none() {
        Cond::no(
            condition::READY,
            available.reason,
            available.message.clone(),
        )
    } else if not_ready.is_empty() {
        Cond::yes(
            condition::READY,
            "AllMembersReady",
            format!("{} of {} members ready", members.len(), members.len()),
        )
    } else {
        Cond::no(
            condition::READY,
            "MembersNotReady",
            format!("not ready: {}", not_ready.join(", ")),
        )
    };
    let failing = if phase == Phase::FailingOver || (had_primary && blocked.is_some()) {
        let (reason, message) = if blocked.is_some() {
            ("WaitingForQuorum", wait_message(blocked))
        } else if let Some(sw) = &record.switchover {
            (
                "SwitchoverInProgress",
                format!(
                    "switching over from {} to {} in term {}",
                    sw.from, sw.to, record.term
                ),
            )
        } else {
            (
                "ElectionInProgress",
                format!("electing a new primary in term {}", record.term),
            )
        };
        Cond::yes(condition::FAILING_OVER, reason, message)
    } else {
        Cond::no(
            condition::FAILING_OVER,
            "Stable",
            "no failover in progress".to_string(),
        )
    };
    let degraded = if !not_ready.is_empty() {
        Cond::yes(
            condition::DEGRADED,
            "MembersNotReady",
            format!("not ready: {}", not_ready.join(", ")),
        )
    } else if !outdated.is_empty() {
        Cond::yes(
            condition::DEGRADED,
            "MemberListOutdated",
            format!(
                "{} report another member list than the one of term {}; it is sent again",
                outdated.join(", "),
                record.term
            ),
        )
    } else if changing {
        let list = record.members.join(", ");
        Cond::yes(
            condition::DEGRADED,
            "MembersChanging",
            match &record.previous_members {
                Some(prev) => format!(
                    "member list changing from [{}] to [{list}]",
                    prev.join(", ")
                ),
                None => format!(
                    "member list [{list}] differs from the pods; members join once they run"
                ),
            },
        )
    } else {
        Cond::no(
            condition::DEGRADED,
            "AllMembersReady",
            "every member is ready".to_string(),
        )
    };

    let generation = cluster.metadata.generation;
    let conditions = [ready, available, failing, degraded]
        .into_iter()
        .map(|c| c.into_condition(&old.conditions, generation, &input.now))
        .collect();
    let name = cluster.metadata.name.clone().unwrap_or_default();
    ReplicatedClusterStatus {
        observed_generation: generation,
        phase: Some(phase),
        primary: record.primary.clone(),
        term: record.term as i64,
        replicas: members.iter().filter(|m| m.pod.is_some()).count() as i32,
        ready_replicas: members.iter().filter(|m| m.ready()).count() as i32,
        updated_replicas: input.updated.or(old.updated_replicas),
        selector: Some(pod_selector_string(&name)),
        members: member_status,
        conditions,
        last_failover: input.last_failover.clone().or(old.last_failover),
        member_list: record.members.clone(),
        previous_member_list: record.previous_members.clone(),
        switchover: record.switchover.as_ref().map(|sw| SwitchoverStatus {
            from: sw.from.clone(),
            to: sw.to.clone(),
            started_ms: sw.started_ms as i64,
        }),
        // The shard entries and the slot map are the caller's (`shards::merge`): this builds one
        // shard's status.
        shards: Vec::new(),
        slot_map: None,
        reshard: None,
        // The cluster's, not a shard's: the caller records it (`security::decided`).
        security: old.security,
    }
}

/// Members of the list in force whose node reports another list: they missed the follow that
/// carried it (the controller sends it again). Nodes that report none are not judged.
fn outdated_member_lists<'a>(members: &'a [Member], list: &[String]) -> Vec<&'a str> {
    let want: BTreeSet<&str> = list.iter().map(String::as_str).collect();
    members
        .iter()
        .filter(|m| want.contains(m.name.as_str()))
        .filter(|m| {
            m.node.as_ref().is_some_and(|n| {
                let have: BTreeSet<String> = n.member_names().into_iter().collect();
                !have.is_empty() && have.iter().map(String::as_str).collect::<BTreeSet<_>>() != want
            })
        })
        .map(|m| m.name.as_str())
        .collect()
}

/// A one-line explanation of why the decision waits.
pub fn wait_message(reason: Option<&WaitReason>) -> String {
    reason.map_or_else(|| "waiting".to_string(), ToString::to_string)
}

impl Cond {
    fn yes(type_: &'static str, reason: &'static str, message: String) -> Cond {
        Cond {
            type_,
            ok: true,
            reason,
            message,
        }
    }
    fn no(type_: &'static str, reason: &'static str, message: String) -> Cond {
        Cond {
            type_,
            ok: false,
            reason,
            message,
        }
    }

    fn into_condition(self, old: &[Condition], generation: Option<i64>, now: &Time) -> Condition {
        let status = if self.ok { "True" } else { "False" };
        let previous = old.iter().find(|c| c.type_ == self.type_);
        let since = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        Condition {
            type_: self.type_.to_string(),
            status: status.to_string(),
            reason: self.reason.to_string(),
            message: self.message,
            last_transition_time: since,
            observed_generation: generation,
        }
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
