//! The ReplicatedCluster controller (DESIGN.md "Operator"), in the shape of kube-rs/controller-rs
//! with one module per reconcile stage:
//!
//! observe (pods, Secret) → apply (owned objects, server-side apply) → observe (each node's
//! `/v1/status`) → plan (the shared `failover` module decides) → act (record first, then node
//! commands, then pod labels) → status → events.
//!
//! Every reconcile is level-based: it reads the world again and repeats whatever a previous
//! reconcile left unfinished (a crash, a 409 on the status, lost leadership). Safety does not
//! depend on this process's memory: terms live in the resource status, written with optimistic
//! concurrency before any node hears of them, and nodes reject older terms.
//!
//! The decisions and what is remembered around them (failure clocks, switchover requests, failover
//! statistics, record first → node commands → used-up requests cleared) are the coordinator
//! runtime's (`crate::coordinator`), the same as the playground's; this module keeps what is the
//! controller's own: pods, the API server, the status and Events.
//!
//! Member changes (scale up and down) go through the failover module's `plan_members`: the new
//! member list is recorded in a new term before the primary is promoted again with it; pods that
//! leave are deleted only once the change is committed (`observe::effective_replicas`).
//!
//! Pod template changes roll out through `rollout`: the StatefulSet is `OnDelete`, and the
//! controller deletes one outdated member pod at a time while the cluster is settled, replicas
//! first; the primary hands over in a planned switchover and restarts last.
//!
//! Shards (`shards`): every shard is a replica group of its own, with its own StatefulSet, its own
//! coordinator runtime in the controller's memory and its own record in `status.shards` (shard 0's
//! also at the top level, where a cluster without shards keeps it). The shards decide and act
//! concurrently, so one shard's election never waits on another's node commands; their record
//! writes follow each other over the one resource. The slot map is recorded in `status.slotMap`
//! before any node is told of it; the cluster map (slot map, each shard's members, primary and
//! term) is then pushed to every node that has not taken it. The shard count is the recorded
//! one; a changed `spec.shards` is carried out by the resharding stage (`reshard`): slots move
//! one range at a time, every step recorded in `status.reshard` before the nodes act on it.
//!
//! Planned switchovers are asked for with the `rcluster.dev/switchover-to` annotation, or on the
//! primary node (`POST /v1/switchover`, `rcluster switchover`), as in the playground.

mod act;
mod annotation;
mod apply;
mod context;
mod error;
mod events;
pub mod lease;
mod observe;
mod reshard;
mod rollout;
pub mod run;
mod security;
mod shard_step;
mod shards;
mod status;
pub mod stop;
mod telemetry;

#[cfg(test)]
mod reconcile_tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;

pub use annotation::SWITCHOVER_ANNOTATION;
pub use context::{Clock, Context, MemberAddress, NodeTimeouts, NodeUrl, pod_ip_url, system_clock};
pub use error::Error;

use rcluster_proto::ShardId;

use crate::crd::{Phase, ReplicatedCluster, ReplicatedClusterStatus, SlotMapStatus};
use crate::failover::Coordinator;
use crate::metrics::Outcome;
use crate::nodes::NodeClient;
use crate::resources;
use act::Written;
use shard_step::{Prep, ShardEnv, primary_url, push_cluster_map, run_shard};

/// After a 409 on the status the reconcile stops; it runs again on fresh data this soon.
pub const CONFLICT_REQUEUE: Duration = Duration::from_millis(500);
/// After an error.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(5);

/// How far a cluster is from needing nothing, for [`requeue_after`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A primary serves and nothing needs doing.
    Settled,
    /// Waiting: for the detection window, for responders, for a switchover target, for pods.
    Waiting,
    /// Commands were just sent: the next step of an election or switchover follows.
    Acting,
}

/// How soon to look again. Waiting, four times per detection window (at most every 5 s), so a
/// failing primary is noticed well within it; acting, at once (at most every second), so an
/// election's second step follows its first; settled, every few seconds (pod and StatefulSet
/// watches trigger reconciles on readiness changes in between).
pub fn requeue_after(window: Duration, progress: Progress) -> Duration {
    let ms = Duration::from_millis;
    match progress {
        Progress::Settled => (window / 2).clamp(ms(1_000), ms(5_000)),
        Progress::Waiting => (window / 4).clamp(ms(250), ms(5_000)),
        Progress::Acting => (window / 8).clamp(ms(250), ms(1_000)),
    }
}

/// The controller entry point: one reconcile of one cluster.
pub async fn reconcile(
    cluster: Arc<ReplicatedCluster>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = reconcile_cluster(&cluster, &ctx).await;
    let outcome = match &result {
        Ok(r) if r.apply_errors.is_empty() => Outcome::Ok,
        _ => Outcome::Error,
    };
    ctx.metrics.record_reconcile(outcome, started.elapsed());
    let r = result?;
    for e in &r.apply_errors {
        tracing::warn!(cluster = %cluster.name_any(), error = %e, "apply failed");
    }
    Ok(r.requeue)
}

pub fn error_policy(cluster: Arc<ReplicatedCluster>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    tracing::warn!(cluster = %cluster.name_any(), kind = error.label(), error = %error, "reconcile failed");
    Requeue::requeue(ERROR_REQUEUE)
}

pub struct Reconciled {
    pub requeue: Requeue,
    /// Owned objects that could not be applied (the failover stage ran regardless).
    pub apply_errors: Vec<Error>,
}

pub async fn reconcile_cluster(
    cluster: &ReplicatedCluster,
    ctx: &Context,
) -> Result<Reconciled, Error> {
    let ns = cluster
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let uid = cluster.uid().ok_or(Error::MissingMetadata("uid"))?;
    let name = cluster.name_any();
    let key = format!("{ns}/{name}");
    let client = &ctx.client;
    let memory = ctx.memory_of(&key, &uid);
    let mut memory = memory.lock().await;

    // TLS and tokens, decided once for the cluster (`crd::security`): every stage below reads
    // them from `cluster`, every status written records them. The status as read stays in
    // `read`: a record it lacks is written even when nothing else changed.
    let read = cluster;
    let decided = security::decided(read, ctx.security_default);
    let cluster = &decided;
    let secret = apply::existing_secret(client, &ns, &name).await?;
    let running = shards::count(cluster);
    let tls = cluster.security().tls;
    let secured =
        security::prepare(client, cluster, &ns, &name, running, ctx.now_ms() / 1000).await?;
    let pods = observe::list_pods(client, &ns, &name).await?;
    let slots = shards::slot_map(cluster, running).map_err(Error::SlotMap)?;
    let preps: Vec<Prep> = (0..running)
        .map(|k| Prep::new(cluster, &name, k, &pods))
        .collect();
    let replicas: Vec<i32> = preps.iter().map(|p| p.replicas).collect();

    let desired = apply::desired(cluster, &replicas, secret.as_ref())?;
    let delete_sm = desired.service_monitor.is_none() && !memory.service_monitor_gone;
    let applied = apply::apply_all(client, &ns, &name, &desired, delete_sm).await;
    let apply_errors = applied.errors;
    let revisions: Vec<Option<String>> = (0..preps.len())
        .map(|k| {
            applied
                .statefulsets
                .get(k)
                .and_then(Option::as_ref)
                .and_then(rollout::update_revision)
        })
        .collect();
    let sm_ok = !apply_errors
        .iter()
        .any(|e| matches!(e, Error::Apply { object, .. } if object.starts_with("ServiceMonitor")));
    memory.service_monitor_gone = desired.service_monitor.is_none() && sm_ok;

    let token = apply::token(&desired);
    let trust = secured.trust.clone().unwrap_or_default();
    let probes = NodeClient::with_trust(&token, ctx.timeouts.probe, trust.clone());
    let commands = NodeClient::with_trust(&token, ctx.timeouts.command, trust);
    let annotation = cluster
        .annotations()
        .get(SWITCHOVER_ANNOTATION)
        .map(String::as_str);
    // The annotation names a pod: the switchover is its shard's (empty: shard 0's).
    let annotated =
        annotation.map(|a| resources::member_of(&name, a.trim()).map_or(0, |(shard, _)| shard));

    // Every shard decides and acts at once: one shard's election never waits for another's
    // node commands. Their record writes go one after the other over the shared resource.
    let shared = tokio::sync::Mutex::new(read.clone());
    let env = ShardEnv {
        ctx,
        cluster,
        ns: &ns,
        name: &name,
        key: &key,
        probes: &probes,
        commands: &commands,
        current: &shared,
        slots: &slots,
    };
    let mems = &mut memory.shards;
    mems.retain(|k, _| *k < running);
    for k in 0..running {
        mems.entry(k).or_default();
    }
    let runs =
        futures_util::future::join_all(mems.range_mut(0..running).zip(&preps).zip(&revisions).map(
            |(((k, mem), prep), revision)| {
                let request = (annotated == Some(*k))
                    .then(|| annotation::request(annotation))
                    .flatten();
                run_shard(&env, prep, mem, revision.as_deref(), request)
            },
        ))
        .await;
    let mut done = Vec::new();
    let mut conflict = false;
    for run in runs {
        match run? {
            Some(r) => done.push(r),
            None => conflict = true,
        }
    }
    let current = shared.into_inner();
    if conflict {
        tracing::info!(cluster = %key, "status changed since it was read; deciding again");
        return Ok(Reconciled {
            requeue: Requeue::requeue(CONFLICT_REQUEUE),
            apply_errors,
        });
    }

    // 3. The labels the Services select on. From here on a failure is reported after the
    // events, so a promotion is never left unannounced.
    let mut failure = None;
    for (prep, run) in preps.iter().zip(&done) {
        let roles = act::desired_roles(&prep.pods, run.next.primary.as_deref());
        if let Err(e) = act::relabel(client, &ns, &roles).await {
            failure = failure.or(Some(e));
        }
    }

    let now = status::time_from_ms(ctx.now_ms());
    let per_shard: Vec<ReplicatedClusterStatus> = done
        .iter()
        .enumerate()
        .map(|(k, run)| {
            status::build(&status::Input {
                cluster: &shards::cluster_view(&current, k as ShardId),
                record: &run.next,
                members: &run.members,
                plan: &run.plan,
                failing_over: run.failing_over,
                last_failover: run.last_failover.clone(),
                updated: run.updated,
                now: now.clone(),
            })
        })
        .collect();
    // The resharding: its next record (and slot map), decided from the record as read.
    let primaries: Vec<Option<String>> = done.iter().map(primary_url).collect();
    let wanted = cluster.spec.shards.max(1) as u32;
    let read = current.status.as_ref().and_then(|s| s.reshard.as_ref());
    let input = reshard::Input {
        read,
        slots: &slots,
        wanted,
        primaries: &primaries,
        now: &now,
    };
    let wake = ctx.waker(cluster);
    let decided = reshard::decide(
        &input,
        &mut memory.reshard,
        |mover, m, source, target| {
            tokio::spawn(async move {
                let out = mover.run_phase(m, source, target).await;
                wake();
                out
            })
        },
        || crate::reshard::Mover::new(commands.clone()),
    )
    .map_err(Error::SlotMap)?;
    let resharding = shards::resharding_condition(&current, decided.record.as_ref(), &now);
    let last_step = decided
        .record
        .as_ref()
        .map(|r| r.last_step.as_ref().map_or(0, |t| t.0.as_second()));
    ctx.metrics.set_resharding(&ns, &name, last_step);
    let next_slots = decided.slots;
    // The end of a resharding: the shards beyond the map go before the record says it ended
    // (a failure here leaves the record, and the next reconcile deletes them).
    let mut removed = Vec::new();
    if decided.finished {
        let keep = next_slots.shards;
        removed = reshard::remove_shards(client, &ns, &name, keep)
            .await?
            .into_iter()
            .map(reshard::shard_removed)
            .collect();
        memory
            .pushed
            .retain(|pod, _| resources::member_of(&name, pod).is_some_and(|(k, _)| k < keep));
    }
    let mut status = shards::combine(per_shard, &next_slots, decided.record, resharding);
    status.security = Some(cluster.security());
    let phase = status.phase;
    // A conflict here loses nothing: the record was written (or unchanged) and the nodes were
    // told; the next reconcile writes the observations again.
    let mut recorded = current.status.clone();
    if current.status.as_ref() != Some(&status) {
        match act::write_status(client, &current, status.clone()).await {
            Ok(Written::Ok(_)) => recorded = Some(status),
            Ok(Written::Conflict) => conflict = true,
            Err(e) => failure = failure.or(Some(e)),
        }
    }

    // 4. The cluster map, to every node that answers and has not taken it yet: only a slot map
    // the status records is ever sent.
    if recorded.as_ref().and_then(|s| s.slot_map.as_ref())
        == Some(&SlotMapStatus::from(&next_slots))
    {
        let records: Vec<Coordinator> = done
            .iter()
            .take(next_slots.shards as usize)
            .map(|r| r.next.clone())
            .collect();
        let peer = |pod: &str| {
            (ctx.peer_url)(&MemberAddress {
                namespace: &ns,
                cluster: &name,
                pod,
                pod_ip: None,
                tls,
            })
        };
        // A map grown for new shards is sent once they run (have records): a node refuses a
        // map with a shard it cannot route to.
        let complete = records.len() == next_slots.shards as usize;
        if let Some(map) = complete
            .then(|| shards::cluster_map(&next_slots, &records, peer))
            .flatten()
        {
            let members: Vec<&observe::Member> = done.iter().flat_map(|r| &r.members).collect();
            push_cluster_map(&commands, &mut memory.pushed, &members, &map).await;
        }
    }

    let switchover_done = annotated
        .and_then(|k| done.get(k as usize))
        .is_some_and(|run| annotation::finished(annotation, &run.plan.switchover));
    if switchover_done && let Err(e) = act::remove_switchover_annotation(client, cluster).await {
        failure = failure.or(Some(e));
    }

    // 5. A rollout restart (one pod of the cluster at a time), once everything above is in
    // place. Not after a conflict or a failure: the restart waits for a reconcile that saw the
    // world as it is.
    let mut restarted = None;
    let restart = done
        .iter()
        .zip(&revisions)
        .find(|(run, _)| matches!(run.restart, rollout::Step::Restart { .. }));
    if let (Some((run, revision)), false, None) = (restart, conflict, &failure)
        && let rollout::Step::Restart { pod, uid: pod_uid } = &run.restart
    {
        let outcome = act::delete_pod(client, &ns, pod, pod_uid.as_deref()).await;
        let note = outcome.as_ref().map(drop).map_err(ToString::to_string);
        restarted = Some(events::restart(
            &ns,
            pod,
            revision.as_deref().unwrap_or("?"),
            note,
        ));
        if let Err(e) = outcome {
            failure = failure.or(Some(e));
        }
    }

    let apply_failures: Vec<String> = apply_errors.iter().map(ToString::to_string).collect();
    // What the security stage made comes first: where the tokens and the CA are.
    let mut evs = secured.events;
    for (k, run) in done.iter().enumerate() {
        // Objects shared by every shard: their failures are told once.
        let failures: &[String] = if k == 0 { &apply_failures } else { &[] };
        let lasting = events::lasting(&run.plan, &run.results, failures);
        let mem = memory.shards.entry(k as ShardId).or_default();
        let reported = std::mem::replace(&mut mem.reported, lasting);
        evs.extend(events::for_decision(
            &ns,
            &run.record,
            &run.plan,
            &run.results,
            failures,
            &reported,
        ));
    }
    for ev in &decided.events {
        tracing::info!(cluster = %key, reason = %ev.reason, note = ev.note.as_deref().unwrap_or(""), "resharding");
    }
    evs.extend(decided.events);
    evs.extend(removed);
    evs.extend(restarted);
    events::publish(ctx, cluster, &evs).await;
    if let Some(e) = failure {
        return Err(e);
    }

    let acting = decided.acting
        || done
            .iter()
            .any(|r| !r.results.is_empty() || r.next != r.record);
    let settled = done
        .iter()
        .all(|r| r.plan.in_place() && r.restart == rollout::Step::UpToDate);
    let progress = if acting {
        Progress::Acting
    } else if matches!(phase, Some(Phase::Running | Phase::Degraded)) && settled {
        Progress::Settled
    } else {
        Progress::Waiting
    };
    let window: Duration = cluster.spec.failover.detection_window.into();
    let after = if conflict {
        CONFLICT_REQUEUE
    } else {
        requeue_after(window, progress)
    };
    Ok(Reconciled {
        requeue: Requeue::requeue(after),
        apply_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_meets_the_detection_window() {
        let (s, ms) = (Duration::from_secs, Duration::from_millis);
        // Waiting: four looks per window, between every 250 ms and every 5 s.
        assert_eq!(requeue_after(s(10), Progress::Waiting), ms(2_500));
        assert_eq!(requeue_after(s(1), Progress::Waiting), ms(250));
        assert_eq!(requeue_after(s(600), Progress::Waiting), s(5));
        // Acting: the next step soon.
        assert_eq!(requeue_after(s(10), Progress::Acting), s(1));
        assert_eq!(requeue_after(s(1), Progress::Acting), ms(250));
        // Settled: a few seconds.
        assert_eq!(requeue_after(s(10), Progress::Settled), s(5));
        assert_eq!(requeue_after(s(1), Progress::Settled), s(1));
        assert_eq!(requeue_after(s(600), Progress::Settled), s(5));
    }
}
