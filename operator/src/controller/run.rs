//! `rcluster-operator run`: the HTTP server, leader election, and one controller per watched
//! namespace (or one for all namespaces), until SIGTERM.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::context::{Context, NodeTimeouts};
use super::lease::{LeaderElector, LeaseConfig};
use super::telemetry::{self, Health};
use super::{error_policy, reconcile};
use crate::crd::ReplicatedCluster;
use crate::metrics::Metrics;
use crate::resources::{COMPONENT_LABEL, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, component};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the HTTP server: /metrics and /healthz.
    #[arg(long, env = "RCLUSTER_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Watch only these namespaces (comma-separated). Default: every namespace.
    #[arg(long, env = "RCLUSTER_OPERATOR_NAMESPACE", value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// error, warn, info, debug or trace (RUST_LOG overrides it).
    #[arg(long, env = "RCLUSTER_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log JSON lines instead of text.
    #[arg(long, env = "RCLUSTER_OPERATOR_LOG_JSON")]
    pub log_json: bool,
    /// Elect a leader on a Lease so only one replica acts; `false` only for a single replica.
    #[arg(long, env = "RCLUSTER_OPERATOR_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    #[arg(long, default_value = "rcluster-operator-leader")]
    pub lease_name: String,
    /// Namespace of the Lease. Default: the operator's own (POD_NAMESPACE), else the client's.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's name in the Lease and in events. Default: POD_NAME, else the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    #[arg(long, default_value_t = 15)]
    pub lease_duration_secs: u64,
    #[arg(long, default_value_t = 10)]
    pub renew_deadline_secs: u64,
    #[arg(long, default_value_t = 2)]
    pub retry_period_secs: u64,
    /// Timeout of a node status probe.
    #[arg(long, default_value_t = 1000)]
    pub probe_timeout_ms: u64,
    /// Timeout of a node command (fence, promote, follow).
    #[arg(long, default_value_t = 3000)]
    pub command_timeout_ms: u64,
}

/// A future that completes once `stop` is set. Send + Sync, as the controller's shutdown
/// trigger must be.
fn stopped(mut stop: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (done, wait) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        let _ = done.send(());
    });
    async move {
        let _ = wait.await;
    }
}

async fn shutdown_signal() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn identity(args: &RunArgs) -> String {
    args.identity
        .clone()
        .filter(|i| !i.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| format!("rcluster-operator-{}", std::process::id()))
}

pub async fn run(args: RunArgs) -> Result<(), String> {
    telemetry::init_tracing(&args.log_level, args.log_json)?;
    let metrics = Metrics::new().map_err(|e| format!("cannot build the metrics registry: {e}"))?;
    let health = Arc::new(Health::default());
    let (stop, stop_rx) = watch::channel(false);
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested");
            let _ = stop.send(true);
        });
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let bound = listener.local_addr().unwrap_or(args.listen);
    let server = tokio::spawn(telemetry::serve(
        listener,
        metrics.clone(),
        health.clone(),
        stopped(stop_rx.clone()),
    ));
    tracing::info!(listen = %bound, "serving /metrics and /healthz");

    let result = run_controllers(&args, metrics, health, stop_rx).await;
    let _ = stop.send(true);
    let _ = server.await;
    result
}

async fn run_controllers(
    args: &RunArgs,
    metrics: Metrics,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("cannot configure the Kubernetes client: {e}"))?;
    let identity = identity(args);
    let mut ctx = Context::new(client.clone(), metrics, Some(identity.clone()));
    ctx.timeouts = NodeTimeouts {
        probe: Duration::from_millis(args.probe_timeout_ms.max(1)),
        command: Duration::from_millis(args.command_timeout_ms.max(1)),
    };
    let ctx = Arc::new(ctx);
    let namespaces: Vec<Option<String>> = if args.namespace.is_empty() {
        vec![None]
    } else {
        args.namespace
            .iter()
            .map(|n| Some(n.trim().to_string()))
            .collect()
    };
    if !args.leader_elect {
        health.leader.store(true, Ordering::Relaxed);
        controllers(ctx, &namespaces, stop).await;
        return Ok(());
    }
    let cfg = LeaseConfig {
        namespace: args
            .lease_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_string()),
        name: args.lease_name.clone(),
        identity,
        lease_duration: Duration::from_secs(args.lease_duration_secs),
        renew_deadline: Duration::from_secs(args.renew_deadline_secs),
        retry_period: Duration::from_secs(args.retry_period_secs),
    };
    cfg.validate()?;
    let mut elector = LeaderElector::new(client, cfg.clone());
    tracing::info!(lease = %cfg.name, namespace = %cfg.namespace, identity = %cfg.identity, "waiting for the leader lease");
    tokio::select! {
        _ = elector.acquire() => {}
        _ = stopped(stop.clone()) => return Ok(()),
    }
    tracing::info!("leading: starting the controllers");
    health.leader.store(true, Ordering::Relaxed);
    let result = tokio::select! {
        _ = controllers(ctx, &namespaces, stop) => Ok(()),
        lost = elector.hold() => Err(format!("stopped acting: {lost}")),
    };
    health.leader.store(false, Ordering::Relaxed);
    if result.is_ok() {
        match elector.release().await {
            Ok(()) => tracing::info!("leader lease released"),
            Err(e) => tracing::warn!(error = %e, "cannot release the leader lease"),
        }
    }
    result
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One controller per namespace entry, plus the housekeeping that derives the per-phase gauge
/// from the watched clusters. Returns after a graceful shutdown (running reconciles finish).
pub(super) async fn controllers(
    ctx: Arc<Context>,
    namespaces: &[Option<String>],
    stop: watch::Receiver<bool>,
) {
    let mut stores = Vec::new();
    let mut runs = Vec::new();
    for ns in namespaces {
        let (store, run) = controller(ctx.clone(), ns.as_deref(), stop.clone());
        stores.push(store);
        runs.push(run);
    }
    tokio::join!(join_all(runs), housekeeping(ctx, stores, stop));
}

fn controller<'a>(
    ctx: Arc<Context>,
    ns: Option<&str>,
    stop: watch::Receiver<bool>,
) -> (
    Store<ReplicatedCluster>,
    impl Future<Output = ()> + Send + use<'a>,
) {
    let client = ctx.client.clone();
    let (reader, writer) = reflector::store();
    // Status writes change the resourceVersion but not the generation: filtering them out keeps
    // the controller from reconciling its own writes. Annotations carry switchover requests.
    let clusters = watcher(
        api::<ReplicatedCluster>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(
        predicates::generation.combine(predicates::annotations),
        Default::default(),
    );
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let pods = watcher::Config::default().labels(&format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={}",
        component::NODE
    ));
    // A finished migration task asks for its cluster's reconcile at once (the next phase, or
    // the end of a write pause, should not wait for the periodic requeue).
    let scope = ns.map(str::to_string);
    let wake = futures_util::stream::unfold(ctx.wake.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(obj) => return Some((obj, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |o: &ObjectRef<ReplicatedCluster>| {
        std::future::ready(scope.is_none() || o.namespace == scope)
    });
    let run = Controller::for_stream(clusters, reader.clone())
        .reconcile_on(wake)
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<Secret>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned)
        .watches(api::<Pod>(&client, ns), pods, |pod: Pod| {
            cluster_of_pod(&pod)
        })
        .graceful_shutdown_on(stopped(stop))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        });
    (reader, run)
}

/// The cluster a member pod belongs to, from its instance label.
fn cluster_of_pod(pod: &Pod) -> Option<ObjectRef<ReplicatedCluster>> {
    let cluster = pod.labels().get(INSTANCE_LABEL)?;
    Some(ObjectRef::new(cluster).within(&pod.namespace()?))
}

/// Every few seconds: the per-phase gauge from the cached clusters, and the controller's memory
/// of clusters that were deleted is dropped.
async fn housekeeping(
    ctx: Arc<Context>,
    stores: Vec<Store<ReplicatedCluster>>,
    stop: watch::Receiver<bool>,
) {
    let mut stop_fut = std::pin::pin!(stopped(stop));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = &mut stop_fut => return,
        }
        let clusters: Vec<Arc<ReplicatedCluster>> = stores.iter().flat_map(|s| s.state()).collect();
        ctx.metrics
            .set_clusters(clusters.iter().filter_map(|c| c.status.as_ref()?.phase));
        if !clusters.is_empty() {
            let keys: BTreeSet<String> = clusters
                .iter()
                .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
                .collect();
            ctx.retain_memory(|k| keys.contains(k));
        }
    }
}

/// Entry point of the subcommand: a multi-threaded runtime around [`run`].
pub fn main(args: RunArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rcluster-operator: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once logging is set up the error goes to the log (JSON with --log-json), once;
            // before that (a bad --log-level) to stderr.
            if tracing::dispatcher::has_been_set() {
                tracing::error!(error = %e, "rcluster-operator stopped");
            } else {
                eprintln!("rcluster-operator: {e}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn pods_map_to_their_cluster() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo-1", "namespace": "shop",
                         "labels": {"app.kubernetes.io/instance": "demo"}}
        }))
        .unwrap();
        let r = cluster_of_pod(&pod).unwrap();
        assert_eq!(
            (r.name.as_str(), r.namespace.as_deref()),
            ("demo", Some("shop"))
        );
        let stray: Pod = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "x", "namespace": "shop"}}),
        )
        .unwrap();
        assert!(cluster_of_pod(&stray).is_none());
    }

    #[test]
    fn arguments_match_the_manifests() {
        // The Deployment in manifests/install and the Helm chart pass these.
        let cli = Cli::try_parse_from([
            "run",
            "--listen",
            "0.0.0.0:8080",
            "--namespace",
            "a,b",
            "--log-level",
            "debug",
            "--log-json",
        ])
        .unwrap();
        assert_eq!(cli.run.listen.port(), 8080);
        assert_eq!(cli.run.namespace, ["a", "b"]);
        assert!(cli.run.log_json && cli.run.leader_elect);
        let off = Cli::try_parse_from(["run", "--leader-elect", "false"]).unwrap();
        assert!(!off.run.leader_elect);
        assert!(Cli::try_parse_from(["run", "--listen", "nowhere"]).is_err());
    }
}
