//! The controller as `run` wires it (watches, predicates, graceful shutdown) against a mock API
//! server that answers by route rather than by script, since the watches start concurrently:
//! a listed cluster is reconciled, and a stop request ends the controller.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::fixtures::{Handle, mock_client, status_error};
use super::world::cluster;
use crate::controller::context::Context;
use crate::controller::run::controllers;
use crate::metrics::Metrics;

fn list(items: Vec<Value>) -> Value {
    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// Answers every request plausibly and records `METHOD path`.
async fn route(mut handle: Handle, seen: Arc<Mutex<Vec<String>>>) {
    while let Some((req, send)) = handle.next_request().await {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let query = req.uri().query().unwrap_or("").to_string();
        let body = req.into_body().collect_bytes().await.unwrap_or_default();
        seen.lock().unwrap().push(format!("{method} {path}"));
        let (code, reply): (u16, Value) = if query.contains("watch=true") {
            // An empty watch: the watcher simply watches again (after its backoff).
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(Vec::new()))
                    .unwrap(),
            );
            continue;
        } else if method == Method::GET && path == "/apis/rcluster.dev/v1alpha1/replicatedclusters"
        {
            let mut c = serde_json::to_value(cluster(json!({}), None)).unwrap();
            c["apiVersion"] = json!("rcluster.dev/v1alpha1");
            c["kind"] = json!("ReplicatedCluster");
            (200, list(vec![c]))
        } else if method == Method::GET && path.contains("/secrets/") {
            // The cluster Secret and (TLS and tokens are on by default) the generated ones.
            (404, status_error(404, "NotFound"))
        } else if method == Method::GET {
            (200, list(vec![]))
        } else if method == Method::DELETE {
            (404, status_error(404, "NotFound"))
        } else {
            let mut v: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
            if path.ends_with("/status") {
                v["metadata"]["resourceVersion"] = json!("2");
            }
            (200, v)
        };
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
    }
}

#[tokio::test]
async fn the_controller_reconciles_listed_clusters_and_stops_on_request() {
    let (client, handle) = mock_client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(route(handle, seen.clone()));
    let ctx = Arc::new(Context::new(client, Metrics::new().unwrap(), None));
    let (stop, stop_rx) = watch::channel(false);
    let run = tokio::spawn(async move { controllers(ctx, &[None], stop_rx).await });

    let status = "PUT /apis/rcluster.dev/v1alpha1/namespaces/shop/replicatedclusters/demo/status";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.lock().unwrap().iter().any(|l| l == status) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconcile: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let seen = seen.lock().unwrap();
        // Watched with label selectors: pods and owned objects of this operator only.
        for kind in [
            "/api/v1/pods",
            "/apis/apps/v1/statefulsets",
            "/api/v1/secrets",
            "/apis/policy/v1/poddisruptionbudgets",
        ] {
            assert!(
                seen.iter().any(|l| l == &format!("GET {kind}")),
                "{kind} not watched: {seen:?}"
            );
        }
        assert!(
            seen.iter()
                .any(|l| l == "PATCH /apis/apps/v1/namespaces/shop/statefulsets/demo")
        );
        // The operator's default for a cluster that does not say: TLS and tokens.
        for secret in ["demo-ca", "demo-tls", "demo-tokens"] {
            assert!(
                seen.iter()
                    .any(|l| l == &format!("PATCH /api/v1/namespaces/shop/secrets/{secret}")),
                "{secret} not made"
            );
        }
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the controller stops after a stop request")
        .unwrap();
}
