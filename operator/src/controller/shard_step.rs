//! One shard's step of a reconcile: probe its members, let its coordinator runtime decide, record
//! the decision, then command its nodes and push the cluster map.

use std::collections::BTreeMap;
use std::time::Duration;

use rcluster_proto::{ClusterMap, ShardId, SlotMap};

use super::context::{Context, MemberAddress, ShardMemory};
use super::error::Error;
use super::observe::PodInfo;
use super::{act, observe, rollout, shards, status};
use crate::coordinator::{self, Probe, Request, Source, Unsent};
use crate::crd::ReplicatedCluster;
use crate::failover::Coordinator;
use crate::nodes::{Addressed, MemberUrls, NodeClient};
use crate::resources;

/// One shard as the reconcile finds it before deciding.
pub(super) struct Prep {
    pub(super) id: ShardId,
    /// The shard's StatefulSet name, which its pods' names derive from.
    pub(super) set: String,
    pub(super) pods: Vec<PodInfo>,
    /// The shard's record (or, new, its initial members).
    pub(super) record: Coordinator,
    /// The record was read without a member list.
    pub(super) stale: bool,
    /// Member pods the shard runs now.
    pub(super) replicas: i32,
}

impl Prep {
    pub(super) fn new(
        cluster: &ReplicatedCluster,
        name: &str,
        id: ShardId,
        pods: &[PodInfo],
    ) -> Prep {
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
pub(super) struct ShardEnv<'a> {
    pub(super) ctx: &'a Context,
    pub(super) cluster: &'a ReplicatedCluster,
    pub(super) ns: &'a str,
    pub(super) name: &'a str,
    pub(super) key: &'a str,
    pub(super) probes: &'a NodeClient,
    pub(super) commands: &'a NodeClient,
    pub(super) current: &'a tokio::sync::Mutex<ReplicatedCluster>,
    pub(super) slots: &'a SlotMap,
}

/// One shard's decision and what it did.
pub(super) struct ShardRun {
    pub(super) members: Vec<observe::Member>,
    /// The record as read, and as in force after the step.
    pub(super) record: Coordinator,
    pub(super) next: Coordinator,
    pub(super) plan: coordinator::Plan,
    pub(super) restart: rollout::Step,
    pub(super) results: Vec<crate::nodes::CommandResult>,
    pub(super) last_failover: Option<crate::crd::LastFailover>,
    pub(super) updated: Option<i32>,
    pub(super) failing_over: bool,
}

/// Probes shard `prep`'s members, decides, records, commands its nodes. `None`: the status
/// changed since it was read (409), nothing was sent.
pub(super) async fn run_shard(
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
pub(super) fn primary_url(run: &ShardRun) -> Option<String> {
    let primary = run.next.primary.as_deref()?;
    run.members
        .iter()
        .find(|m| m.name == primary)
        .and_then(|m| m.url.clone())
}

/// Sends `map` to every member whose node answered and that has not taken it yet (a new pod,
/// or a map that changed). A node that does not take it is sent it again next time.
pub(super) async fn push_cluster_map(
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
pub(super) fn peer_urls(
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
