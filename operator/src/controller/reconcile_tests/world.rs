//! The API server's side of a reconcile test: what exists (the cluster with its status and
//! resourceVersion, pods, the Secret), and the expectations of each kind of request, answered
//! the way the API server would.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::fixtures::{Expect, Log, mock_client, not_found, status_error};
use super::nodes::SECRET;
use crate::controller::context::{Context, NodeTimeouts};
use crate::crd::{ReplicatedCluster, ReplicatedClusterStatus, SecurityStatus};
use crate::metrics::Metrics;

pub const NS: &str = "shop";
const CLUSTERS: &str = "/apis/rcluster.dev/v1alpha1/namespaces/shop/replicatedclusters";

pub struct World {
    pub cluster: ReplicatedCluster,
    pub pods: Vec<Value>,
    pub secret: Option<Value>,
    /// What the StatefulSet controller reports (`status`), returned with the applied StatefulSet.
    pub statefulset_status: Option<Value>,
}

pub type Shared = Arc<Mutex<World>>;

/// A cluster as the API server returns it: name `demo`, resourceVersion "1", generation 1.
pub fn cluster(spec: Value, status: Option<ReplicatedClusterStatus>) -> ReplicatedCluster {
    let mut c = ReplicatedCluster::new("demo", serde_json::from_value(spec).unwrap());
    c.metadata.namespace = Some(NS.into());
    c.metadata.uid = Some("uid-demo".into());
    c.metadata.resource_version = Some("1".into());
    c.metadata.generation = Some(1);
    c.status = status;
    c
}

pub fn pod(name: &str, ready: bool, role: Option<&str>) -> Value {
    let mut labels = json!({
        "app.kubernetes.io/name": "rcluster", "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/component": "node", "app.kubernetes.io/managed-by": "rcluster-operator"});
    if let Some(r) = role {
        labels["rcluster.dev/role"] = json!(r);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "status": {"podIP": "127.0.0.1",
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

pub fn secret_object() -> Value {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("demo-secret".into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "token".to_string(),
            ByteString(SECRET.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    serde_json::to_value(secret).unwrap()
}

pub fn world(cluster: ReplicatedCluster, pods: Vec<Value>, secret: Option<Value>) -> Shared {
    Arc::new(Mutex::new(World {
        cluster,
        pods,
        secret,
        statefulset_status: None,
    }))
}

/// The object the controller's cache would hand to the next reconcile.
pub fn current(w: &Shared) -> ReplicatedCluster {
    w.lock().unwrap().cluster.clone()
}

/// A context on the mock client; members are reached at `urls[pod]`, time is `clock` (ms).
/// TLS and tokens are off unless a cluster asks for them.
pub fn context(
    urls: BTreeMap<String, String>,
    clock: Arc<AtomicU64>,
) -> (Arc<Context>, super::fixtures::Handle) {
    context_with(urls, clock, SecurityStatus::OFF)
}

/// [`context`] with `security_default` for a new cluster whose spec does not say.
pub fn context_with(
    urls: BTreeMap<String, String>,
    clock: Arc<AtomicU64>,
    security_default: SecurityStatus,
) -> (Arc<Context>, super::fixtures::Handle) {
    let (client, handle) = mock_client();
    let mut ctx = Context::new(
        client,
        Metrics::new().unwrap(),
        Some("test-operator".into()),
    );
    // On 127.0.0.1 nodes reach each other where the controller reaches them.
    let peers = urls.clone();
    ctx.node_url = Arc::new(move |a| urls.get(a.pod).cloned());
    ctx.peer_url = Arc::new(move |a| peers.get(a.pod).cloned());
    ctx.clock = Arc::new(move || clock.load(Ordering::SeqCst));
    ctx.timeouts = NodeTimeouts {
        probe: Duration::from_millis(500),
        command: Duration::from_secs(5),
    };
    // The nodes of most of these tests serve plain http without tokens; the operator's default
    // (on) is the subject of `security.rs`, which asks for it.
    ctx.security_default = security_default;
    (Arc::new(ctx), handle)
}

pub fn get_secret(w: &Shared) -> Expect {
    let w = w.clone();
    Expect::get("/api/v1/namespaces/shop/secrets/demo-secret").respond(move |_| {
        match w.lock().unwrap().secret.clone() {
            Some(s) => (200, s),
            None => not_found(),
        }
    })
}

pub fn list_pods(w: &Shared) -> Expect {
    let w = w.clone();
    Expect::get("/api/v1/namespaces/shop/pods")
        .query("labelSelector=app.kubernetes.io%2Fcomponent%3Dnode%2Capp.kubernetes.io%2Finstance%3Ddemo%2Capp.kubernetes.io%2Fname%3Drcluster")
        .respond(move |_| {
            let items = w.lock().unwrap().pods.clone();
            (200, json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}))
        })
}

/// A server-side apply of `kind` `name` under the operator's field manager; answered with the
/// applied object.
pub fn apply(path: &str, kind: &'static str, name: &'static str) -> Expect {
    Expect::patch(&format!("{path}/{name}"))
        .query("fieldManager=rcluster-operator")
        .query("force=true")
        .check(move |b| {
            assert_eq!(b["kind"], kind, "{b}");
            assert_eq!(b["metadata"]["name"], name);
            assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "uid-demo");
            assert_eq!(
                b["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "rcluster-operator"
            );
        })
}

/// Every owned object, in the controller's order; `first`: the (disabled) ServiceMonitor is
/// deleted once, later reconciles know it is gone.
pub fn apply_stage(
    w: &Shared,
    first: bool,
    check_sts: impl FnOnce(&Value) + Send + 'static,
) -> Vec<Expect> {
    let core = "/api/v1/namespaces/shop";
    let stored = w.clone();
    let sts_world = w.clone();
    let mut v = vec![
        apply(&format!("{core}/secrets"), "Secret", "demo-secret").respond(move |b| {
            stored.lock().unwrap().secret = Some(b.clone());
            (200, b)
        }),
        apply(&format!("{core}/services"), "Service", "demo-headless"),
        apply(&format!("{core}/services"), "Service", "demo-client"),
        apply(&format!("{core}/configmaps"), "ConfigMap", "demo-config"),
        apply(&format!("{core}/services"), "Service", "demo-rw"),
        apply(&format!("{core}/services"), "Service", "demo-ro"),
        apply(
            "/apis/apps/v1/namespaces/shop/statefulsets",
            "StatefulSet",
            "demo",
        )
        .check(check_sts)
        .respond(move |mut b| {
            if let Some(status) = sts_world.lock().unwrap().statefulset_status.clone() {
                b["metadata"]["generation"] = json!(2);
                b["status"] = status;
            }
            (200, b)
        }),
        apply(
            "/apis/policy/v1/namespaces/shop/poddisruptionbudgets",
            "PodDisruptionBudget",
            "demo",
        ),
    ];
    if first {
        v.push(
            Expect::delete("/apis/monitoring.coreos.com/v1/namespaces/shop/servicemonitors/demo")
                .respond(|_| not_found()),
        );
    }
    v
}

/// The reconcile's opening: Secret, pods, owned objects.
pub fn opening(w: &Shared, first: bool) -> Vec<Expect> {
    let mut v = vec![get_secret(w), list_pods(w)];
    v.extend(apply_stage(w, first, |_| {}));
    v
}

/// Every write the API server stores gives the object a new resourceVersion.
fn bump_resource_version(c: &mut ReplicatedCluster) {
    let rv: u64 = c
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    c.metadata.resource_version = Some((rv + 1).to_string());
}

/// A status replace. Like the API server, it refuses (409) a resourceVersion other than the
/// stored one; otherwise it stores the status and bumps the resourceVersion. `check` sees the
/// status sent; `log` gets a line with the term and primary, to order against node commands.
pub fn write_status(
    w: &Shared,
    log: &Log,
    check: impl FnOnce(&ReplicatedClusterStatus) + Send + 'static,
) -> Expect {
    let (w, log) = (w.clone(), log.clone());
    // The operator's field manager, as on its server-side applies: without it the API server
    // records the status as written by "unknown".
    Expect::put(&format!("{CLUSTERS}/demo/status"))
        .query("fieldManager=rcluster-operator")
        .respond(move |body| {
            let sent: ReplicatedCluster = serde_json::from_value(body).unwrap();
            let mut world = w.lock().unwrap();
            if sent.metadata.resource_version != world.cluster.metadata.resource_version {
                return (409, status_error(409, "Conflict"));
            }
            let status = sent.status.clone().expect("a status");
            super::fixtures::log_push(
                &log,
                format!("status term {} primary {:?}", status.term, status.primary),
            );
            check(&status);
            world.cluster.status = Some(status);
            bump_resource_version(&mut world.cluster);
            (200, serde_json::to_value(&world.cluster).unwrap())
        })
}

/// The role label of `pod` moves to `role`.
pub fn relabel(w: &Shared, pod_name: &'static str, role: &'static str) -> Expect {
    let w = w.clone();
    Expect::patch(&format!("/api/v1/namespaces/shop/pods/{pod_name}"))
        .query("fieldManager=rcluster-operator")
        .check(move |b| assert_eq!(b["metadata"]["labels"]["rcluster.dev/role"], role, "{b}"))
        .respond(move |_| {
            let mut world = w.lock().unwrap();
            let p = world
                .pods
                .iter_mut()
                .find(|p| p["metadata"]["name"] == pod_name)
                .expect("a known pod");
            p["metadata"]["labels"]["rcluster.dev/role"] = json!(role);
            (200, p.clone())
        })
}

/// An event with `reason` about the cluster (and about `pod`, when given).
pub fn event(reason: &'static str, pod: Option<&'static str>) -> Expect {
    Expect::post("/apis/events.k8s.io/v1/namespaces/shop/events").check(move |b| {
        assert_eq!(b["reason"], reason, "{b}");
        assert_eq!(b["regarding"]["kind"], "ReplicatedCluster");
        assert_eq!(b["reportingController"], "rcluster-operator");
        if let Some(p) = pod {
            assert_eq!(b["related"]["name"], p, "{b}");
        }
    })
}

/// The end of a reconcile that promoted `primary`: its record, the label moving to it, the
/// status, and the events of the promotion and of every follower.
pub fn promotion(
    w: &Shared,
    log: &Log,
    primary: &'static str,
    followers: &[&'static str],
) -> Vec<Expect> {
    let mut script = vec![
        write_status(w, log, move |s| {
            assert_eq!(s.primary.as_deref(), Some(primary))
        }),
        relabel(w, primary, "primary"),
        write_status(w, log, |_| {}),
        event("Promoted", Some(primary)),
    ];
    script.extend(
        followers
            .iter()
            .map(|f| event("ReplicaRefetching", Some(f))),
    );
    script
}

/// A promotion that ends a switchover: the same, and the switchover's completion.
pub fn switchover_completed(
    w: &Shared,
    log: &Log,
    primary: &'static str,
    followers: &[&'static str],
) -> Vec<Expect> {
    let mut script = promotion(w, log, primary, followers);
    script.push(event("SwitchoverCompleted", None));
    script
}

/// The end of a reconcile that starts a switchover away from `from`: the new term recorded
/// without a primary (`check` sees it), `from` labelled a replica, the status, the event.
pub fn switchover_started(
    w: &Shared,
    log: &Log,
    from: &'static str,
    check: impl FnOnce(&ReplicatedClusterStatus) + Send + 'static,
) -> Vec<Expect> {
    vec![
        write_status(w, log, move |s| {
            assert_eq!(s.primary, None, "writes stop before anyone is promoted");
            check(s)
        }),
        relabel(w, from, "replica"),
        write_status(w, log, |s| {
            let c = s
                .conditions
                .iter()
                .find(|c| c.type_ == "FailingOver")
                .unwrap();
            assert_eq!(c.reason, "SwitchoverInProgress");
        }),
        event("SwitchoverStarted", None),
    ]
}

pub fn remove_annotation(w: &Shared) -> Expect {
    let w = w.clone();
    Expect::patch(&format!("{CLUSTERS}/demo"))
        .query("fieldManager=rcluster-operator")
        .check(|b| {
            assert_eq!(
                b["metadata"]["annotations"]["rcluster.dev/switchover-to"],
                Value::Null,
                "{b}"
            )
        })
        .respond(move |_| {
            let mut world = w.lock().unwrap();
            world.cluster.metadata.annotations = None;
            bump_resource_version(&mut world.cluster);
            (200, serde_json::to_value(&world.cluster).unwrap())
        })
}

/// One reconcile of the world's cluster against `script`; every request must match it.
pub async fn reconcile_with(
    w: &Shared,
    log: &Log,
    ctx: &Arc<Context>,
    handle: super::fixtures::Handle,
    script: Vec<Expect>,
) -> super::fixtures::Handle {
    let server = super::fixtures::serve(handle, script, log.clone());
    crate::controller::reconcile(Arc::new(current(w)), ctx.clone())
        .await
        .unwrap();
    super::fixtures::finish_keep(server).await
}

/// The first election of a new cluster whose pods are `pods[0..n]`, in two reconciles: the
/// record and the fence, then the promotion of the first pod.
pub async fn first_election(
    w: &Shared,
    log: &Log,
    ctx: &Arc<Context>,
    handle: super::fixtures::Handle,
    pods: &[&'static str],
) -> super::fixtures::Handle {
    let listed: Vec<String> = pods.iter().map(|p| p.to_string()).collect();
    let mut script = opening(w, true);
    script.push(write_status(w, log, move |s| {
        assert_eq!(s.member_list, listed)
    }));
    for p in pods {
        script.push(relabel(w, p, "replica"));
    }
    script.push(write_status(w, log, |_| {}));
    script.push(event("ElectionStarted", None));
    let handle = reconcile_with(w, log, ctx, handle, script).await;

    let mut script = opening(w, false);
    script.extend(promotion(w, log, pods[0], &pods[1..]));
    reconcile_with(w, log, ctx, handle, script).await
}

/// A whole planned switchover from `from` to `to`, in two reconciles: writes stop on `from` in
/// a new term (`check` sees that record), then `to` is promoted and `followers` follow it.
#[allow(clippy::too_many_arguments)]
pub async fn switch_over(
    w: &Shared,
    log: &Log,
    ctx: &Arc<Context>,
    handle: super::fixtures::Handle,
    first: bool,
    (from, to): (&'static str, &'static str),
    followers: &[&'static str],
    check: impl FnOnce(&ReplicatedClusterStatus) + Send + 'static,
) -> super::fixtures::Handle {
    let mut script = opening(w, first);
    script.extend(switchover_started(w, log, from, check));
    let handle = reconcile_with(w, log, ctx, handle, script).await;
    let mut script = opening(w, false);
    script.extend(switchover_completed(w, log, to, followers));
    reconcile_with(w, log, ctx, handle, script).await
}
