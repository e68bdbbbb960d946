//! (a) A new cluster: every owned object is created with server-side apply under the operator's
//! field manager, the Secret gets a generated token, the first term is recorded and the status
//! written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde_json::json;

use super::fixtures::{Log, finish, serve};
use super::world::*;
use crate::controller::reconcile;
use crate::crd::Phase;

#[tokio::test]
async fn new_cluster_creates_every_object_and_writes_status() {
    let w = world(cluster(json!({"replicas": 3}), None), vec![], None);
    let log = Log::default();
    let (ctx, handle) = context(BTreeMap::new(), Arc::new(AtomicU64::new(5_000)));

    let mut script = vec![get_secret(&w), list_pods(&w)];
    script.extend(apply_stage(&w, true, |sts| {
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["serviceName"], "demo-headless");
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    }));
    script.push(write_status(&w, &log, |s| {
        // No member answers yet: the first term is recorded, nobody is fenced.
        assert_eq!((s.term, s.primary.as_deref()), (1, None));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!((s.replicas, s.ready_replicas), (0, 0));
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Available", "FailingOver", "Degraded"]);
        assert_eq!(s.members.len(), 3);
        assert!(
            s.selector
                .as_deref()
                .unwrap()
                .contains("app.kubernetes.io/instance=demo")
        );
    }));
    script.push(event("ElectionStarted", None));
    let server = serve(handle, script, log.clone());

    let requeue = reconcile(Arc::new(current(&w)), ctx.clone()).await.unwrap();
    finish(server).await;

    // An election step was taken: the next one follows soon (every window/8, at most 1 s).
    assert_eq!(
        requeue,
        kube::runtime::controller::Action::requeue(Duration::from_secs(1))
    );
    let secret = w.lock().unwrap().secret.clone().expect("secret applied");
    let token = secret["data"]["token"].as_str().unwrap();
    assert_eq!(
        token.len(),
        88,
        "64 hex characters, base64-encoded: {token}"
    );
    let metrics = ctx.metrics.encode().unwrap();
    assert!(
        metrics.contains("rcluster_operator_reconciles_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_existing_secret_keeps_its_token_and_a_service_monitor_is_applied() {
    let spec = json!({"replicas": 1, "metrics": {"serviceMonitor": {"enabled": true}}});
    let w = world(
        cluster(spec, None),
        vec![],
        Some(super::world::secret_object()),
    );
    let log = Log::default();
    let (ctx, handle) = context(BTreeMap::new(), Arc::new(AtomicU64::new(5_000)));
    let before = w.lock().unwrap().secret.clone().unwrap()["data"]["token"].clone();

    let mut script = vec![get_secret(&w), list_pods(&w)];
    let mut applies = apply_stage(&w, false, |_| {});
    let token = before.clone();
    applies[0] = apply("/api/v1/namespaces/shop/secrets", "Secret", "demo-secret")
        .check(move |b| assert_eq!(b["data"]["token"], token, "token kept"));
    script.extend(applies);
    script.push(
        apply(
            "/apis/monitoring.coreos.com/v1/namespaces/shop/servicemonitors",
            "ServiceMonitor",
            "demo",
        )
        .check(|b| assert_eq!(b["spec"]["endpoints"][0]["path"], "/metrics")),
    );
    script.push(write_status(&w, &log, |s| assert_eq!(s.term, 1)));
    script.push(event("ElectionStarted", None));
    let server = serve(handle, script, log);
    reconcile(Arc::new(current(&w)), ctx).await.unwrap();
    finish(server).await;
}
