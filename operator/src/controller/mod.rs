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
mod rollout;
pub mod run;
mod status;
mod telemetry;

#[cfg(test)]
mod reconcile_tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;

pub use annotation::SWITCHOVER_ANNOTATION;
pub use context::{Clock, Context, MemberAddress, NodeTimeouts, NodeUrl, pod_ip_url, system_clock};
pub use error::Error;

use crate::coordinator::{self, Probe, Request, Source, Unsent};
use crate::crd::{Phase, ReplicatedCluster};
use crate::metrics::Outcome;
use crate::nodes::{Addressed, MemberUrls, NodeClient};
use act::Written;

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

    let secret = apply::existing_secret(client, &ns, &name).await?;
    let pods = observe::list_pods(client, &ns, &name).await?;
    let initial =
        observe::initial_members(&name, cluster.spec.replicas, cluster.status.as_ref(), &pods);
    let record = observe::coordinator(cluster.status.as_ref(), &initial);
    let replicas = observe::effective_replicas(&name, cluster.spec.replicas, &record, &pods);

    let desired = apply::desired(cluster, replicas, secret.as_ref())?;
    let delete_sm = desired.service_monitor.is_none() && !memory.service_monitor_gone;
    let applied = apply::apply_all(client, &ns, &name, &desired, delete_sm).await;
    let apply_errors = applied.errors;
    let revision = applied
        .statefulset
        .as_ref()
        .and_then(rollout::update_revision);
    let sm_ok = !apply_errors
        .iter()
        .any(|e| matches!(e, Error::Apply { object, .. } if object.starts_with("ServiceMonitor")));
    memory.service_monitor_gone = desired.service_monitor.is_none() && sm_ok;

    let token = apply::token(&desired);
    let probes = NodeClient::new(&token, ctx.timeouts.probe);
    let names = observe::member_names(&name, replicas);
    let mut members = observe::probe(ctx, &probes, &ns, &name, &names, &pods).await;
    let now = ctx.now_ms();
    let probed: Vec<Probe> = members.iter().map(|m| m.probe(now)).collect();
    let ack = observe::ack_level(cluster.spec.replication.ack);
    let (observations, _) = memory.runtime.observe(&probed, ack, now);
    let view = observe::view(&name, &cluster.spec, record.clone(), observations, now);

    let annotation = cluster
        .annotations()
        .get(SWITCHOVER_ANNOTATION)
        .map(String::as_str);
    let enabled = cluster.spec.failover.enabled;
    let mut plan = coordinator::plan(&view, annotation::request(annotation), &probed, enabled);
    let restart = rollout::step(
        &name,
        revision.as_deref(),
        &record,
        &members,
        plan.in_place(),
    );
    if let (rollout::Step::Switchover { from }, None) = (&restart, &plan.request) {
        tracing::info!(cluster = %key, primary = %from, "rollout: the primary hands over before its restart");
        let handover = Request {
            target: None,
            source: Source::Rollout,
        };
        plan = coordinator::plan(&view, Some(handover), &probed, enabled);
    }
    let next = record.after(&plan.actions);
    let updated = rollout::updated(revision.as_deref(), &next, &members);
    tracing::debug!(cluster = %key, actions = ?plan.actions, "decided");

    // 1. The record, before any node hears of the new term or primary; 2. the nodes.
    let commands = NodeClient::new(&token, ctx.timeouts.command);
    let urls: BTreeMap<String, String> = members
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.url.clone()?)))
        .collect();
    let peers = peer_urls(ctx, &ns, &name, &next);
    let nodes = Addressed {
        client: &commands,
        urls: &urls,
        members: peers.as_ref(),
    };
    let mut store = act::StatusStore {
        client,
        current: cluster.clone(),
        members: &members,
        updated,
        now_ms: now,
    };
    let stepped = match memory
        .runtime
        .step(&record, &plan, &mut store, &nodes, now)
        .await
    {
        Ok(stepped) => stepped,
        Err(Unsent::Conflict) => {
            tracing::info!(cluster = %key, "status changed since it was read; deciding again");
            return Ok(Reconciled {
                requeue: Requeue::requeue(CONFLICT_REQUEUE),
                apply_errors,
            });
        }
        Err(Unsent::Store(e)) => return Err(e),
    };
    let current = store.current;
    if stepped.stored {
        tracing::info!(cluster = %key, term = next.term, primary = ?next.primary, "record written");
    }
    let results = stepped.results;
    for r in &results {
        if let (Ok(s), Some(m)) = (&r.outcome, members.iter_mut().find(|m| m.name == r.node)) {
            m.node = Some(s.clone());
        }
    }
    let last_failover = stepped.completed.failover.as_ref().map(|f| {
        let took = Duration::from_millis(f.duration_ms().unwrap_or(0));
        ctx.metrics.record_failover(took);
        status::last_failover(f)
    });

    // 3. The labels the Services select on. From here on a failure is reported after the
    // events, so a promotion is never left unannounced.
    let mut failure = act::relabel(
        client,
        &ns,
        &act::desired_roles(&pods, next.primary.as_deref()),
    )
    .await
    .err();

    let status = status::build(&status::Input {
        cluster: &current,
        record: &next,
        members: &members,
        plan: &plan,
        failing_over: memory.runtime.failing_over(),
        last_failover,
        updated,
        now: status::time_from_ms(ctx.now_ms()),
    });
    let phase = status.phase;
    // A conflict here loses nothing: the record was written (or unchanged) and the nodes were
    // told; the next reconcile writes the observations again.
    let mut conflict = false;
    if current.status.as_ref() != Some(&status) {
        match act::write_status(client, &current, status).await {
            Ok(written) => conflict = matches!(written, Written::Conflict),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if annotation::finished(annotation, &plan.switchover)
        && let Err(e) = act::remove_switchover_annotation(client, cluster).await
    {
        failure = failure.or(Some(e));
    }

    // 4. A rollout restart, once everything above is in place. Not after a conflict or a
    // failure: the restart waits for a reconcile that saw the world as it is.
    let mut restarted = None;
    if let (rollout::Step::Restart { pod, uid: pod_uid }, false, None) =
        (&restart, conflict, &failure)
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
    let lasting = events::lasting(&plan, &results, &apply_failures);
    let reported = std::mem::replace(&mut memory.reported, lasting);
    let mut evs = events::for_decision(&ns, &record, &plan, &results, &apply_failures, &reported);
    evs.extend(restarted);
    events::publish(ctx, cluster, &evs).await;
    if let Some(e) = failure {
        return Err(e);
    }

    let progress = if !results.is_empty() || next != record {
        Progress::Acting
    } else if matches!(phase, Some(Phase::Running | Phase::Degraded))
        && plan.in_place()
        && restart == rollout::Step::UpToDate
    {
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

/// The member list the nodes get with promote and follow: the record's, with the URLs nodes reach
/// each other at. `None` (the nodes keep theirs) when a URL is unknown: a partial list would make
/// a node count its quorums over too few members.
fn peer_urls(
    ctx: &Context,
    ns: &str,
    cluster: &str,
    record: &crate::failover::Coordinator,
) -> Option<MemberUrls> {
    record
        .members
        .iter()
        .map(|pod| {
            let url = (ctx.peer_url)(&MemberAddress {
                namespace: ns,
                cluster,
                pod,
                pod_ip: None,
            })?;
            Some((pod.clone(), url))
        })
        .collect()
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
