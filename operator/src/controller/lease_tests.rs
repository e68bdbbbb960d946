use super::*;
use crate::controller::reconcile_tests::fixtures::{
    Expect, Log, finish, mock_client, not_found, serve, status_error,
};
use serde_json::{Value, json};

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/rcluster-operator-leader";
const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "ops".into(),
        name: "rcluster-operator-leader".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    }
}

fn lease(holder: Option<&str>, rv: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "rcluster-operator-leader", "namespace": "ops", "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": transitions,
                 "renewTime": "2024-01-01T00:00:00.000000Z"}
    })
}

/// The replace answer: what was sent, with a new resourceVersion.
fn stored(rv: &'static str) -> impl FnOnce(Value) -> (u16, Value) + Send {
    move |mut body| {
        body["metadata"]["resourceVersion"] = json!(rv);
        (200, body)
    }
}

#[test]
fn config_is_checked() {
    assert!(config("a").validate().is_ok());
    assert!(config("").validate().is_err());
    let mut c = config("a");
    c.renew_deadline = Duration::from_secs(20);
    assert!(c.validate().is_err());
}

#[tokio::test]
async fn creates_the_lease_when_there_is_none() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            Expect::get(PATH).respond(|_| not_found()),
            // Written under the operator's field manager, like everything it writes.
            Expect::post(COLLECTION)
                .query("fieldManager=rcluster-operator")
                .check(|b| {
                    assert_eq!(b["spec"]["holderIdentity"], "op-a");
                    assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
                    assert_eq!(b["spec"]["leaseTransitions"], 0);
                })
                .respond(stored("1")),
        ],
        Log::default(),
    );
    let mut e = LeaderElector::new(client, config("op-a"));
    assert!(e.try_acquire_or_renew().await.unwrap());
    finish(server).await;
}

#[tokio::test]
async fn losing_the_create_race_is_not_leading() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            Expect::get(PATH).respond(|_| not_found()),
            Expect::post(COLLECTION).reply(409, status_error(409, "AlreadyExists")),
        ],
        Log::default(),
    );
    let mut e = LeaderElector::new(client, config("op-a"));
    assert!(!e.try_acquire_or_renew().await.unwrap());
    finish(server).await;
}

#[tokio::test(start_paused = true)]
async fn a_held_lease_is_taken_over_only_after_it_stopped_changing_for_its_duration() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            Expect::get(PATH).reply(200, lease(Some("op-b"), "7", 2)),
            // Renewed by op-b meanwhile: the wait starts again.
            Expect::get(PATH).reply(200, lease(Some("op-b"), "8", 2)),
            Expect::get(PATH).reply(200, lease(Some("op-b"), "8", 2)),
            Expect::put(PATH)
                .check(|b| {
                    assert_eq!(
                        b["metadata"]["resourceVersion"], "8",
                        "carries what it read"
                    );
                    assert_eq!(b["spec"]["holderIdentity"], "op-a");
                    assert_eq!(b["spec"]["leaseTransitions"], 3);
                })
                .respond(stored("9")),
        ],
        Log::default(),
    );
    let mut e = LeaderElector::new(client, config("op-a"));
    assert!(!e.try_acquire_or_renew().await.unwrap());
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(
        !e.try_acquire_or_renew().await.unwrap(),
        "changed: op-b is alive"
    );
    tokio::time::advance(Duration::from_secs(16)).await;
    assert!(
        e.try_acquire_or_renew().await.unwrap(),
        "unchanged for 16 s > 15 s"
    );
    finish(server).await;
}

#[tokio::test]
async fn the_holder_renews_and_a_conflict_means_someone_else_won() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            Expect::get(PATH).reply(200, lease(Some("op-a"), "3", 1)),
            Expect::put(PATH)
                .query("fieldManager=rcluster-operator")
                .check(|b| {
                    assert_eq!(b["spec"]["holderIdentity"], "op-a");
                    assert_eq!(
                        b["spec"]["leaseTransitions"], 1,
                        "a renewal is no transition"
                    );
                    assert_eq!(b["metadata"]["resourceVersion"], "3");
                })
                .respond(stored("4")),
            Expect::get(PATH).reply(200, lease(Some("op-a"), "4", 1)),
            Expect::put(PATH).reply(409, status_error(409, "Conflict")),
        ],
        Log::default(),
    );
    let mut e = LeaderElector::new(client, config("op-a"));
    assert!(e.try_acquire_or_renew().await.unwrap());
    assert!(!e.try_acquire_or_renew().await.unwrap());
    finish(server).await;
}

#[tokio::test]
async fn an_empty_holder_is_free_and_release_empties_it() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            Expect::get(PATH).reply(200, lease(None, "5", 4)),
            Expect::put(PATH)
                .check(|b| assert_eq!(b["spec"]["leaseTransitions"], 5))
                .respond(stored("6")),
            Expect::get(PATH).reply(200, lease(Some("op-a"), "6", 5)),
            Expect::put(PATH)
                .query("fieldManager=rcluster-operator")
                .check(|b| {
                    assert!(b["spec"].get("holderIdentity").is_none(), "{b}");
                    assert_eq!(b["spec"]["leaseDurationSeconds"], 1);
                    assert_eq!(b["metadata"]["resourceVersion"], "6");
                })
                .respond(stored("7")),
            // Not ours any more: nothing to release.
            Expect::get(PATH).reply(200, lease(Some("op-b"), "8", 6)),
        ],
        Log::default(),
    );
    let mut e = LeaderElector::new(client, config("op-a"));
    assert!(e.try_acquire_or_renew().await.unwrap());
    e.release().await.unwrap();
    e.release().await.unwrap();
    finish(server).await;
}

#[tokio::test(start_paused = true)]
async fn hold_returns_when_another_candidate_took_the_lease() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            Expect::get(PATH).reply(200, lease(Some("op-a"), "3", 1)),
            Expect::put(PATH).respond(stored("4")),
            Expect::get(PATH).reply(200, lease(Some("op-b"), "9", 2)),
        ],
        Log::default(),
    );
    let mut e = LeaderElector::new(client, config("op-a"));
    assert_eq!(e.hold().await, Lost::TakenOver);
    finish(server).await;
}
