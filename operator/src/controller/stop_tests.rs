use super::*;
use crate::controller::reconcile_tests::fixtures::{
    Expect, Log, finish, mock_client, not_found, serve,
};
use serde_json::{Value, json};

const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/ops/deployments/rcluster";
const SCALE: &str = "/apis/apps/v1/namespaces/ops/deployments/rcluster/scale";
const PODS: &str = "/api/v1/namespaces/ops/pods";

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "rcluster", "namespace": "ops"},
        "spec": {"replicas": 2,
                 "selector": {"matchLabels": {"app.kubernetes.io/instance": "rcluster",
                                              "app.kubernetes.io/name": "rcluster"}},
                 "template": {"spec": {"containers": []}}}
    })
}

fn pods(names: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
        "items": names.iter().map(|n| json!({"metadata": {"name": n, "namespace": "ops"}})).collect::<Vec<_>>()
    })
}

fn scale_reply(body: Value) -> (u16, Value) {
    assert_eq!(body["spec"]["replicas"], 0, "{body}");
    (
        200,
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                 "metadata": {"name": "rcluster", "namespace": "ops"}, "spec": {"replicas": 0}}),
    )
}

const SELECTOR: &str =
    "labelSelector=app.kubernetes.io%2Finstance%3Drcluster%2Capp.kubernetes.io%2Fname%3Drcluster";

#[tokio::test(start_paused = true)]
async fn scales_to_zero_and_waits_until_the_terminating_pods_are_gone() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            Expect::get(DEPLOYMENT).reply(200, deployment()),
            Expect::patch(SCALE)
                .query("fieldManager=rcluster-operator")
                .respond(scale_reply),
            // Still stopping (one is releasing its Lease): not done yet.
            Expect::get(PODS)
                .query(SELECTOR)
                .reply(200, pods(&["rcluster-a", "rcluster-b"])),
            Expect::get(PODS)
                .query(SELECTOR)
                .reply(200, pods(&["rcluster-b"])),
            Expect::get(PODS).query(SELECTOR).reply(200, pods(&[])),
        ],
        Log::default(),
    );
    let got = stop(client, "ops", "rcluster", Duration::from_secs(60)).await;
    assert_eq!(got, Ok(Stopped::PodsGone));
    finish(server).await;
}

#[tokio::test]
async fn no_deployment_is_nothing_to_stop() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![Expect::get(DEPLOYMENT).respond(|_| not_found())],
        Log::default(),
    );
    let got = stop(client, "ops", "rcluster", Duration::from_secs(60)).await;
    assert_eq!(got, Ok(Stopped::NoDeployment));
    finish(server).await;
}

#[tokio::test(start_paused = true)]
async fn pods_that_do_not_stop_are_an_error_after_the_timeout() {
    let (client, handle) = mock_client();
    let mut script = vec![
        Expect::get(DEPLOYMENT).reply(200, deployment()),
        Expect::patch(SCALE).respond(scale_reply),
    ];
    for _ in 0..4 {
        script.push(Expect::get(PODS).reply(200, pods(&["rcluster-a"])));
    }
    let server = serve(handle, script, Log::default());
    let err = stop(client, "ops", "rcluster", Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(
        err.contains("still there") && err.contains("rcluster-a"),
        "{err}"
    );
    finish(server).await;
}
