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
mod shards;
mod status;
pub mod stop;
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

use rcluster_proto::{ClusterMap, ShardId, SlotMap};

use crate::coordinator::{self, Probe, Request, Source, Unsent};
use crate::crd::{Phase, ReplicatedCluster, ReplicatedClusterStatus, SlotMapStatus};
use crate::failover::Coordinator;
use crate::metrics::Outcome;
use crate::nodes::{Addressed, MemberUrls, NodeClient};
use crate::resources;
use act::Written;
use context::ShardMemory;
use observe::PodInfo;

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

/// One shard as the reconcile finds it before deciding.
struct Prep {
    id: ShardId,
    /// The shard's StatefulSet name, which its pods' names derive from.
    set: String,
    pods: Vec<PodInfo>,
    /// The shard's record (or, new, its initial members).
    record: Coordinator,
    /// The record was read without a member list.
    stale: bool,
    /// Member pods the shard runs now.
    replicas: i32,
}

impl Prep {
    fn new(cluster: &ReplicatedCluster, name: &str, id: ShardId, pods: &[PodInfo]) -> Prep {
        let set = resources::shard_name(name, id);
        let pods: Vec<PodInfo> = pods
            .iter()
            .filter(|p| resources::member_of(name, &p.name).is_some_and(|(s, _)| s == id))
            .cloned()
            .collect();
        let status = cluster.status.as_ref().and_then(|s| shards::view(s, id));
        let spec_replicas = cluster.spec.replicas;
        let initial = observe::initial_members(&set, spec_replicas, status.as_ref(), &pods);
        let record = observe::coordinator(status.as_ref(), &initial);
        let replicas = observe::effective_replicas(&set, spec_replicas, &record, &pods);
        Prep {
            id,
            set,
            pods,
            record,
            stale: status.is_none_or(|s| s.member_list.is_empty()),
            replicas,
        }
    }
}

/// What every shard's decision shares.
struct ShardEnv<'a> {
    ctx: &'a Context,
    cluster: &'a ReplicatedCluster,
    ns: &'a str,
    name: &'a str,
    key: &'a str,
    probes: &'a NodeClient,
    commands: &'a NodeClient,
    current: &'a tokio::sync::Mutex<ReplicatedCluster>,
    slots: &'a SlotMap,
}

/// One shard's decision and what it did.
struct ShardRun {
    members: Vec<observe::Member>,
    /// The record as read, and as in force after the step.
    record: Coordinator,
    next: Coordinator,
    plan: coordinator::Plan,
    restart: rollout::Step,
    results: Vec<crate::nodes::CommandResult>,
    last_failover: Option<crate::crd::LastFailover>,
    updated: Option<i32>,
    failing_over: bool,
}

/// Probes shard `prep`'s members, decides, records, commands its nodes. `None`: the status
/// changed since it was read (409), nothing was sent.
async fn run_shard(
    env: &ShardEnv<'_>,
    prep: &Prep,
    mem: &mut ShardMemory,
    revision: Option<&str>,
    request: Option<Request>,
) -> Result<Option<ShardRun>, Error> {
    let ShardEnv { ctx, cluster, .. } = *env;
    let names = observe::member_names(&prep.set, prep.replicas);
    let tls = cluster.security().tls;
    let mut members =
        observe::probe(ctx, env.probes, env.ns, env.name, tls, &names, &prep.pods).await;
    let now = ctx.now_ms();
    let probed: Vec<Probe> = members.iter().map(|m| m.probe(now)).collect();
    let ack = observe::ack_level(cluster.spec.replication.ack);
    let (observations, _) = mem.runtime.observe(&probed, ack, now);
    let view = observe::view(
        &prep.set,
        &cluster.spec,
        prep.record.clone(),
        observations,
        now,
    );
    let enabled = cluster.spec.failover.enabled;
    let mut plan = coordinator::plan(&view, request, &probed, enabled);
    let restart = rollout::step(&prep.set, revision, &prep.record, &members, plan.in_place());
    if let (rollout::Step::Switchover { from }, None) = (&restart, &plan.request) {
        tracing::info!(cluster = %env.key, shard = prep.id, primary = %from, "rollout: the primary hands over before its restart");
        let handover = Request {
            target: None,
            source: Source::Rollout,
        };
        plan = coordinator::plan(&view, Some(handover), &probed, enabled);
    }
    let next = prep.record.after(&plan.actions);
    let updated = rollout::updated(revision, &next, &members);
    tracing::debug!(cluster = %env.key, shard = prep.id, actions = ?plan.actions, "decided");

    // 1. The record, before any node hears of the new term or primary; 2. the nodes.
    let urls: BTreeMap<String, String> = members
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.url.clone()?)))
        .collect();
    let tls = cluster.security().tls;
    let peers = peer_urls(ctx, env.ns, env.name, tls, &next);
    let nodes = Addressed {
        client: env.commands,
        urls: &urls,
        members: peers.as_ref(),
    };
    let mut store = act::StatusStore {
        client: &ctx.client,
        shard: prep.id,
        slots: env.slots,
        current: env.current,
        members: &members,
        updated,
        now_ms: now,
        stale: prep.stale,
        security: cluster.security(),
    };
    let stepped = match mem
        .runtime
        .step(&prep.record, &plan, &mut store, &nodes, now)
        .await
    {
        Ok(stepped) => stepped,
        Err(Unsent::Conflict) => return Ok(None),
        Err(Unsent::Store(e)) => return Err(e),
    };
    if stepped.stored {
        tracing::info!(cluster = %env.key, shard = prep.id, term = next.term, primary = ?next.primary, "record written");
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
    Ok(Some(ShardRun {
        members,
        record: prep.record.clone(),
        next,
        plan,
        restart,
        results,
        last_failover,
        updated,
        failing_over: mem.runtime.failing_over(),
    }))
}

/// The URL the operator reaches a shard's recorded primary at, if its pod has one.
fn primary_url(run: &ShardRun) -> Option<String> {
    let primary = run.next.primary.as_deref()?;
    run.members
        .iter()
        .find(|m| m.name == primary)
        .and_then(|m| m.url.clone())
}

/// Sends `map` to every member whose node answered and that has not taken it yet (a new pod,
/// or a map that changed). A node that does not take it is sent it again next time.
async fn push_cluster_map(
    client: &NodeClient,
    pushed: &mut BTreeMap<String, (String, ClusterMap)>,
    members: &[&observe::Member],
    map: &ClusterMap,
) {
    let due: Vec<(&str, &str, String)> = members
        .iter()
        .filter(|m| m.node.is_some())
        .filter_map(|m| {
            let uid = m.pod.as_ref()?.uid.clone().unwrap_or_default();
            let url = m.url.as_deref()?;
            let taken = pushed
                .get(&m.name)
                .is_some_and(|(u, sent)| *u == uid && sent == map);
            (!taken).then_some((m.name.as_str(), url, uid))
        })
        .collect();
    let sent = futures_util::future::join_all(
        due.iter()
            .map(|(_, url, _)| client.push_cluster_map(url, map)),
    )
    .await;
    for ((name, _, uid), r) in due.into_iter().zip(sent) {
        match r {
            Ok(()) => {
                pushed.insert(name.to_string(), (uid, map.clone()));
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "cannot send the cluster map");
                pushed.remove(name);
            }
        }
    }
}

/// The member list the nodes get with promote and follow: the record's, with the URLs nodes reach
/// each other at. `None` (the nodes keep theirs) when a URL is unknown: a partial list would make
/// a node count its quorums over too few members.
fn peer_urls(
    ctx: &Context,
    ns: &str,
    cluster: &str,
    tls: bool,
    record: &Coordinator,
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
                tls,
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
