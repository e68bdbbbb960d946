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
mod apply;
mod context;
mod error;
mod events;
pub mod lease;
mod observe;
mod plan;
mod rollout;
pub mod run;
mod status;
mod telemetry;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;

pub use context::{Clock, Context, MemberAddress, NodeTimeouts, NodeUrl, pod_ip_url, system_clock};
pub use error::Error;
pub use plan::SWITCHOVER_ANNOTATION;

use crate::crd::{LastFailover, Phase, ReplicatedCluster};
use crate::failover::Action;
use crate::metrics::Outcome;
use crate::nodes::{self, MemberUrls, NodeClient};
use act::Written;
use context::FailoverStart;
use plan::Plan;

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

    let secret = apply::existing_secret(client, &ns, &name).await?;
    let pods = observe::list_pods(client, &ns, &name).await?;
    let initial =
        observe::initial_members(&name, cluster.spec.replicas, cluster.status.as_ref(), &pods);
    let record = observe::coordinator(cluster.status.as_ref(), &initial);
    let replicas = observe::effective_replicas(&name, cluster.spec.replicas, &record, &pods);

    let desired = apply::desired(cluster, replicas, secret.as_ref())?;
    let delete_sm = desired.service_monitor.is_none()
        && !ctx.with_memory(&key, &uid, |m| m.service_monitor_gone);
    let applied = apply::apply_all(client, &ns, &name, &desired, delete_sm).await;
    let apply_errors = applied.errors;
    let revision = applied
        .statefulset
        .as_ref()
        .and_then(rollout::update_revision);
    let sm_ok = !apply_errors
        .iter()
        .any(|e| matches!(e, Error::Apply { object, .. } if object.starts_with("ServiceMonitor")));
    ctx.with_memory(&key, &uid, |m| {
        m.service_monitor_gone = desired.service_monitor.is_none() && sm_ok
    });

    let token = apply::token(&desired);
    let probes = NodeClient::new(&token, ctx.timeouts.probe);
    let names = observe::member_names(&name, replicas);
    let mut members = observe::probe(ctx, &probes, &ns, &name, &names, &pods).await;
    let now = ctx.now_ms();
    let view = ctx.with_memory(&key, &uid, |m| {
        observe::view(&name, &cluster.spec, record.clone(), &members, m, now)
    });

    let annotation = cluster
        .annotations()
        .get(SWITCHOVER_ANNOTATION)
        .map(String::as_str);
    let request = plan::request(&name, cluster.spec.replicas, annotation, &view, &members);
    let enabled = cluster.spec.failover.enabled;
    let mut plan = plan::plan(&view, request.as_ref(), enabled);
    let restart = rollout::step(
        &name,
        revision.as_deref(),
        &record,
        &members,
        in_place(&plan),
    );
    if let (rollout::Step::Switchover { from }, None) = (&restart, &request) {
        tracing::info!(cluster = %key, primary = %from, "rollout: the primary hands over before its restart");
        let handover = plan::Request {
            target: None,
            source: plan::Source::Rollout,
        };
        plan = plan::plan(&view, Some(&handover), enabled);
    }
    let used_requests: Vec<(String, String)> = plan::used_node_requests(
        &members,
        record.primary.as_deref(),
        request.as_ref(),
        &plan.switchover,
    )
    .into_iter()
    .filter_map(|m| Some((m.name.clone(), m.url.clone()?)))
    .collect();
    let next = record.after(&plan.actions);
    let updated = rollout::updated(revision.as_deref(), &next, &members);
    let mut failing_over =
        ctx.with_memory(&key, &uid, |m| note_failover_start(m, &view, &plan, now));
    tracing::debug!(cluster = %key, actions = ?plan.actions, "decided");

    // 1. The record, before any node hears of the new term or primary.
    let mut current = cluster.clone();
    let first_record = cluster
        .status
        .as_ref()
        .is_none_or(|s| s.member_list.is_empty());
    if next != record || first_record {
        let status = status::build(&status::Input {
            cluster: &current,
            record: &next,
            members: &members,
            plan: &plan,
            failing_over,
            last_failover: None,
            updated,
            now: status::time_from_ms(now),
        });
        match act::write_status(client, &current, status).await? {
            Written::Ok(obj) => current = *obj,
            Written::Conflict => {
                tracing::info!(cluster = %key, "status changed since it was read; deciding again");
                return Ok(Reconciled {
                    requeue: Requeue::requeue(CONFLICT_REQUEUE),
                    apply_errors,
                });
            }
        }
        tracing::info!(cluster = %key, term = next.term, primary = ?next.primary, "record written");
    }

    // 2. The nodes.
    let commands = NodeClient::new(&token, ctx.timeouts.command);
    let urls: BTreeMap<String, String> = members
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.url.clone()?)))
        .collect();
    let peers = peer_urls(ctx, &ns, &name, &next);
    let results = nodes::run_commands(&commands, &urls, &plan.actions, peers.as_ref()).await;
    for r in &results {
        if let (Ok(s), Some(m)) = (&r.outcome, members.iter_mut().find(|m| m.name == r.node)) {
            m.node = Some(s.clone());
        }
    }
    for (node, url) in &used_requests {
        // Harmless when it fails: a request left on a node that is no longer the primary, or
        // whose switchover is recorded, is never acted on again, and is cleared next time.
        if let Err(e) = commands.clear_switchover(url, next.term).await {
            tracing::warn!(cluster = %key, %node, error = %e, "cannot clear the switchover request");
        }
    }
    let last_failover = ctx.with_memory(&key, &uid, |m| note_promotion(m, &results, now));
    if let Some(lf) = &last_failover {
        ctx.metrics
            .record_failover(Duration::from_millis(lf.duration_ms.max(0) as u64));
        failing_over = false;
    }

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
        failing_over,
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
    if plan::annotation_finished(annotation, &plan.switchover)
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
    let reported = ctx.with_memory(&key, &uid, |m| std::mem::replace(&mut m.reported, lasting));
    let mut evs = events::for_decision(&ns, &record, &plan, &results, &apply_failures, &reported);
    evs.extend(restarted);
    events::publish(ctx, cluster, &evs).await;
    if let Some(e) = failure {
        return Err(e);
    }

    let progress = if !results.is_empty() || next != record {
        Progress::Acting
    } else if matches!(phase, Some(Phase::Running | Phase::Degraded))
        && in_place(&plan)
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

/// Nothing was (or is waiting to be) done.
fn in_place(plan: &Plan) -> bool {
    plan.actions.is_empty() && plan.switchover == plan::Outcome::None
}

/// Remembers when a failover (not an election of a first primary, not a switchover) started.
/// Returns whether one is in progress.
fn note_failover_start(
    m: &mut context::ClusterMemory,
    view: &crate::failover::ClusterView,
    plan: &Plan,
    now: u64,
) -> bool {
    let planned = matches!(
        plan.switchover,
        plan::Outcome::Started { .. } | plan::Outcome::Continuing { .. }
    );
    let bumps = plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::BumpTerm { .. }));
    if let (Some(from), false, None, true) =
        (&view.coordinator.primary, planned, &m.failover, bumps)
    {
        let detected_ms = view
            .observations
            .iter()
            .find(|o| &o.name == from)
            .and_then(|o| o.unhealthy_since_ms)
            .unwrap_or(now);
        m.failover = Some(FailoverStart {
            from: from.clone(),
            detected_ms,
            entries_lost: 0,
        });
    }
    if let Some(f) = m.failover.as_mut() {
        for a in &plan.actions {
            if let Action::ReportPossibleLoss { entries, .. } = a {
                f.entries_lost = entries.unwrap_or(0);
            }
        }
    }
    m.failover.is_some()
}

/// When a failover's promotion succeeded: the `lastFailover` record.
fn note_promotion(
    m: &mut context::ClusterMemory,
    results: &[nodes::CommandResult],
    now: u64,
) -> Option<LastFailover> {
    let promoted = results
        .iter()
        .find(|r| r.op == "promote" && r.outcome.is_ok())?;
    // The new primary starts healthy. Its failure clock ran while it was fenced during the
    // election; kept, the next probe that finds it not yet ready would depose it at once.
    m.unhealthy_since.remove(&promoted.node);
    let f = m.failover.take()?;
    Some(LastFailover {
        time: status::time_from_ms(now),
        from: f.from,
        to: promoted.node.clone(),
        term: promoted.term as i64,
        duration_ms: now.saturating_sub(f.detected_ms) as i64,
        entries_lost: f.entries_lost as i64,
    })
}

#[cfg(test)]
mod requeue_tests {
    use super::*;

    #[test]
    fn a_promoted_node_starts_with_a_clean_failure_clock() {
        let mut m = context::ClusterMemory::default();
        m.unhealthy_since.insert("demo-1".into(), 5);
        m.unhealthy_since.insert("demo-0".into(), 5);
        let promoted = nodes::CommandResult {
            op: "promote",
            node: "demo-1".into(),
            term: 2,
            primary: None,
            outcome: Ok(crate::nodes::NodeStatus::default()),
        };
        note_promotion(&mut m, &[promoted], 10);
        assert!(!m.unhealthy_since.contains_key("demo-1"));
        assert!(
            m.unhealthy_since.contains_key("demo-0"),
            "the old primary stays failing"
        );
    }

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
