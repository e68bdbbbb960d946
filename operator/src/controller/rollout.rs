//! Rollout stage (pure): pod template changes reach the pods one at a time, replicas first and
//! the primary last, after a switchover.
//!
//! The StatefulSet uses `updateStrategy: OnDelete`, so the StatefulSet controller recreates a pod
//! from the new template only when someone deletes it; this module decides who and when. A pod
//! is outdated when its `controller-revision-hash` differs from the StatefulSet's
//! `status.updateRevision`. Nothing is deleted unless the cluster is settled — a primary serves,
//! no election, switchover or member change runs, every member pod is ready and none is going
//! away — so a restart never takes more than one member down and never races a failover.
//! Writes at `quorum` keep being acknowledged throughout (one member of ≥ 3 is down at a time);
//! at `all` they wait while a replica restarts, as they do when one fails.

use super::observe::Member;
use crate::failover::Coordinator;
use crate::resources::ordinal;

/// What to do about outdated pods in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every member pod runs the current template, or the template revision is not known yet
    /// (the StatefulSet controller has not observed the latest spec).
    UpToDate,
    /// Pods are outdated, but the cluster is not settled: wait.
    Waiting { outdated: Vec<String> },
    /// Delete this pod (its uid as a precondition: never a newer pod of the same name).
    Restart { pod: String, uid: Option<String> },
    /// Only the primary is outdated: hand over to a replica first.
    Switchover { from: String },
}

/// The revision pods should run: `status.updateRevision`, once the StatefulSet controller has
/// seen the current spec (before that, the revision still names the previous template).
pub fn update_revision(sts: &k8s_openapi::api::apps::v1::StatefulSet) -> Option<String> {
    let status = sts.status.as_ref()?;
    let generation = sts.metadata.generation?;
    if status.observed_generation? < generation {
        return None;
    }
    status.update_revision.clone()
}

/// The next rollout step. `settled`: the failover plan of this reconcile has nothing to do.
/// `members`: the probed member pods.
pub fn step(
    cluster: &str,
    revision: Option<&str>,
    record: &Coordinator,
    members: &[Member],
    settled: bool,
) -> Step {
    let Some(revision) = revision else {
        return Step::UpToDate;
    };
    let listed: Vec<&Member> = members
        .iter()
        .filter(|m| record.members.contains(&m.name))
        .collect();
    let outdated: Vec<&Member> = listed
        .iter()
        .copied()
        .filter(|m| {
            m.pod
                .as_ref()
                .and_then(|p| p.revision.as_deref())
                .is_some_and(|r| r != revision)
        })
        .collect();
    if outdated.is_empty() {
        return Step::UpToDate;
    }
    let waiting = || Step::Waiting {
        outdated: outdated.iter().map(|m| m.name.clone()).collect(),
    };
    let Some(primary) = record.primary.as_deref() else {
        return waiting();
    };
    let calm = settled
        && record.switchover.is_none()
        && record.previous_members.is_none()
        && listed.len() == record.members.len()
        && listed.iter().all(|m| m.ready());
    if !calm {
        return waiting();
    }
    let replica = outdated
        .iter()
        .filter(|m| m.name != primary)
        .max_by_key(|m| ordinal(cluster, &m.name));
    match replica {
        Some(m) => restart(m),
        // Alone, the primary has nobody to hand over to: it restarts (clients wait meanwhile).
        None if record.members.len() == 1 => restart(outdated[0]),
        None => Step::Switchover {
            from: primary.to_string(),
        },
    }
}

fn restart(m: &Member) -> Step {
    Step::Restart {
        pod: m.name.clone(),
        uid: m.pod.as_ref().and_then(|p| p.uid.clone()),
    }
}

/// How many member pods run `revision` (for the status), when it is known.
pub fn updated(revision: Option<&str>, record: &Coordinator, members: &[Member]) -> Option<i32> {
    let revision = revision?;
    let n = members
        .iter()
        .filter(|m| record.members.contains(&m.name))
        .filter(|m| m.pod.as_ref().and_then(|p| p.revision.as_deref()) == Some(revision))
        .count();
    Some(n as i32)
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
