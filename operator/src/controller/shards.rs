//! Shards (pure): how many a cluster runs, its slot map, each shard's part of the status, and the
//! cluster map every node is told.
//!
//! The shard count and the slot map are the recorded ones (`status.slotMap`), not the spec's: a
//! changed `spec.shards` is carried out by a resharding (`reshard`), which grows the recorded map
//! first and shrinks it last. A status written before shards (no `status.shards`, no
//! `status.slotMap`) is one shard whose record is the top level, so the terms of a cluster
//! created before this operator version carry on.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use rcluster_proto::{ClusterMap, DEFAULT_SLOTS, ShardId, ShardInfo, SlotMap};

use crate::crd::{
    ReplicatedCluster, ReplicatedClusterStatus, ReshardStatus, ShardStatus, SlotMapStatus,
};
use crate::failover::Coordinator;

/// The shard count the controller runs: the recorded slot map's (a resharding grows it before
/// new shards start and shrinks it once the shards that go own nothing); a cluster that ran
/// before shards (a status with a term but no slot map) runs one; a new cluster the spec's.
pub fn count(cluster: &ReplicatedCluster) -> u32 {
    let status = cluster.status.as_ref();
    match status.and_then(|s| s.slot_map.as_ref()) {
        Some(m) => m.shards.max(1) as u32,
        None if status.is_some_and(|s| s.term > 0) => 1,
        None => cluster.spec.shards.max(1) as u32,
    }
}

/// The `Resharding` condition: `True` while slots move (its message the progress), `False` once
/// they are where they belong; none on a cluster that was never resharded (its status stays as
/// it was). Its transition time is kept while its status lasts.
pub fn resharding_condition(
    cluster: &ReplicatedCluster,
    record: Option<&ReshardStatus>,
    now: &Time,
) -> Option<Condition> {
    let type_ = crate::crd::condition::RESHARDING;
    let before = cluster
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == type_));
    if record.is_none() && !before {
        return None;
    }
    let (status, reason, message) = match record {
        Some(r) => ("True", "SlotsMoving", r.message.clone()),
        None => (
            "False",
            "Balanced",
            "every shard owns its share of the slots".to_string(),
        ),
    };
    let since = cluster
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
        })
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Some(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: since,
        observed_generation: cluster.metadata.generation,
    })
}

/// The recorded slot map, or (nothing recorded yet) every slot spread evenly over `shards`. A
/// recorded map that fails its checks is an error: nothing is routed by it.
pub fn slot_map(cluster: &ReplicatedCluster, shards: u32) -> Result<SlotMap, String> {
    match cluster.status.as_ref().and_then(|s| s.slot_map.as_ref()) {
        Some(recorded) => recorded.to_slot_map(),
        None => SlotMap::even(DEFAULT_SLOTS, shards).map_err(|e| e.to_string()),
    }
}

/// Shard `shard`'s part of `status` in the shape of a cluster of one shard: its record at the
/// top level, its members; the conditions are the cluster's (their transition times carry on).
/// `None`: nothing recorded for it yet.
pub fn view(status: &ReplicatedClusterStatus, shard: ShardId) -> Option<ReplicatedClusterStatus> {
    let Some(s) = status.shards.iter().find(|s| s.shard as u32 == shard) else {
        // Written before shards: shard 0's record is the top level.
        return (shard == 0 && status.shards.is_empty()).then(|| ReplicatedClusterStatus {
            shards: Vec::new(),
            slot_map: None,
            reshard: None,
            ..status.clone()
        });
    };
    Some(ReplicatedClusterStatus {
        observed_generation: status.observed_generation,
        phase: s.phase,
        primary: s.primary.clone(),
        term: s.term,
        replicas: s.replicas,
        ready_replicas: s.ready_replicas,
        updated_replicas: None,
        selector: status.selector.clone(),
        members: s.members.clone(),
        conditions: status.conditions.clone(),
        last_failover: s.last_failover.clone(),
        member_list: s.member_list.clone(),
        previous_member_list: s.previous_member_list.clone(),
        switchover: s.switchover.clone(),
        shards: Vec::new(),
        slot_map: None,
        reshard: None,
        security: status.security,
    })
}

/// The cluster as shard `shard`'s decisions and status builder see it: [`view`] as its status.
pub fn cluster_view(cluster: &ReplicatedCluster, shard: ShardId) -> ReplicatedCluster {
    let mut c = cluster.clone();
    c.status = c.status.as_ref().and_then(|s| view(s, shard));
    c
}

/// Shard `shard`'s entry, from its status in the one-shard shape.
fn entry(shard: ShardId, s: &ReplicatedClusterStatus, slots: &SlotMap) -> ShardStatus {
    ShardStatus {
        shard: shard as i32,
        phase: s.phase,
        primary: s.primary.clone(),
        term: s.term,
        replicas: s.replicas,
        ready_replicas: s.ready_replicas,
        slots: slots.describe(shard),
        members: s.members.clone(),
        last_failover: s.last_failover.clone(),
        member_list: s.member_list.clone(),
        previous_member_list: s.previous_member_list.clone(),
        switchover: s.switchover.clone(),
    }
}

/// `full` with shard `shard`'s status (one-shard shape) recorded in it: its entry in
/// `status.shards`, the slot map, and for shard 0 the record at the top level too (where a cluster
/// of one shard has it). A cluster of one shard keeps the whole of it at the top level.
pub fn merge(
    full: &ReplicatedClusterStatus,
    shard: ShardId,
    s: ReplicatedClusterStatus,
    slots: &SlotMap,
) -> ReplicatedClusterStatus {
    let mut shards: Vec<ShardStatus> = full
        .shards
        .iter()
        .filter(|e| e.shard as u32 != shard)
        .cloned()
        .collect();
    shards.push(entry(shard, &s, slots));
    shards.sort_by_key(|e| e.shard);
    let mut next = if slots.shards == 1 {
        s
    } else if shard == 0 {
        ReplicatedClusterStatus {
            primary: s.primary,
            term: s.term,
            last_failover: s.last_failover,
            member_list: s.member_list,
            previous_member_list: s.previous_member_list,
            switchover: s.switchover,
            ..full.clone()
        }
    } else {
        full.clone()
    };
    next.shards = shards;
    next.slot_map = Some(SlotMapStatus::from(slots));
    // The resharding's record is the cluster's, never a shard's: a shard's record write keeps it.
    next.reshard = full.reshard.clone();
    next
}

/// The whole status from every shard's (in shard order, one-shard shape): the record of shard 0
/// at the top level; members, counts and phase over every shard; each condition the worst of the
/// shards' (its message names the shards it is about); the resharding's record and condition.
/// Shards beyond the map's count (just removed by a resharding) are left out.
pub fn combine(
    per_shard: Vec<ReplicatedClusterStatus>,
    slots: &SlotMap,
    reshard: Option<ReshardStatus>,
    resharding: Option<Condition>,
) -> ReplicatedClusterStatus {
    let mut per_shard = per_shard;
    per_shard.truncate(slots.shards.max(1) as usize);
    let mut full = ReplicatedClusterStatus::default();
    for (k, s) in per_shard.iter().enumerate() {
        full = merge(&full, k as ShardId, s.clone(), slots);
    }
    if per_shard.len() > 1 {
        let first = &per_shard[0];
        full.observed_generation = first.observed_generation;
        full.selector = first.selector.clone();
        full.phase = per_shard
            .iter()
            .filter_map(|s| s.phase)
            .max_by_key(|p| severity(*p));
        full.replicas = per_shard.iter().map(|s| s.replicas).sum();
        full.ready_replicas = per_shard.iter().map(|s| s.ready_replicas).sum();
        full.updated_replicas = per_shard
            .iter()
            .map(|s| s.updated_replicas)
            .sum::<Option<i32>>();
        full.members = per_shard.iter().flat_map(|s| s.members.clone()).collect();
        full.conditions = combine_conditions(&per_shard);
    }
    // `ShardsChangeRefused`: written by operators from before resharding.
    full.conditions.retain(|c| {
        c.type_ != crate::crd::condition::RESHARDING && c.type_ != "ShardsChangeRefused"
    });
    full.conditions.extend(resharding);
    full.reshard = reshard;
    full
}

/// How bad a phase is, for the phase of the whole cluster (the worst shard's).
fn severity(p: crate::crd::Phase) -> u8 {
    use crate::crd::Phase::*;
    match p {
        Running => 0,
        Degraded => 1,
        Pending => 2,
        FailingOver => 3,
        Unavailable => 4,
    }
}

/// Per condition type: `True` for Ready and Available only when every shard says so; `True` for
/// FailingOver and Degraded when any shard does. The message is the deciding shards', each
/// prefixed with its shard; the transition time the latest of theirs.
fn combine_conditions(per_shard: &[ReplicatedClusterStatus]) -> Vec<Condition> {
    use crate::crd::condition::*;
    let mut out = Vec::new();
    for type_ in [READY, AVAILABLE, FAILING_OVER, DEGRADED] {
        let of: Vec<(usize, &Condition)> = per_shard
            .iter()
            .enumerate()
            .filter_map(|(k, s)| Some((k, s.conditions.iter().find(|c| c.type_ == type_)?)))
            .collect();
        let Some((_, first)) = of.first() else {
            continue;
        };
        let all_must_hold = type_ == READY || type_ == AVAILABLE;
        let deciding = if all_must_hold { "False" } else { "True" };
        let chosen: Vec<_> = of.iter().filter(|(_, c)| c.status == deciding).collect();
        let (status, picked): (&str, Vec<_>) = if chosen.is_empty() {
            (first.status.as_str(), of.iter().collect())
        } else {
            (deciding, chosen)
        };
        let message = picked
            .iter()
            .map(|(k, c)| format!("shard {k}: {}", c.message))
            .collect::<Vec<_>>()
            .join("; ");
        let time = picked
            .iter()
            .map(|(_, c)| c.last_transition_time.clone())
            .max_by_key(|t| t.0);
        out.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: picked[0].1.reason.clone(),
            message,
            last_transition_time: time.unwrap_or_else(|| first.last_transition_time.clone()),
            observed_generation: first.observed_generation,
        });
    }
    out
}

/// What every node is told: the slot map and each shard's recorded members (at the URLs nodes
/// reach each other at), primary and term. `None` when a member's URL is unknown: a node must
/// not be sent a map it would route to nowhere with.
pub fn cluster_map(
    slots: &SlotMap,
    records: &[Coordinator],
    url: impl Fn(&str) -> Option<String>,
) -> Option<ClusterMap> {
    let shards = records
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let members: Option<BTreeMap<String, String>> = r
                .members
                .iter()
                .map(|m| Some((m.clone(), url(m)?)))
                .collect();
            Some(ShardInfo {
                shard: k as ShardId,
                members: members?,
                primary: r.primary.clone(),
                term: r.term,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ClusterMap {
        slots: slots.clone(),
        shards,
    })
}

#[cfg(test)]
#[path = "shards_tests.rs"]
mod tests;
