//! A pod template change rolls out, against fake nodes and against real ones: the StatefulSet
//! (OnDelete) reports a new update revision, and the controller deletes one outdated pod at a
//! time while the cluster is settled — replicas first (highest ordinal first), then a
//! switchover, then the old primary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::{Value, json};

use super::fixtures::{Expect, Log, log_lines};
use super::nodes::{fake_cluster, http, start_real, status, wait_for};
use super::world::*;
use crate::crd::ReplicatedClusterStatus;

const OLD: &str = "demo-6d5f8";
const NEW: &str = "demo-7b9c4";

fn revision_pod(i: usize, role: Option<&str>, revision: &str, uid: &str) -> Value {
    let mut p = pod(&format!("demo-{i}"), true, role);
    p["metadata"]["labels"]["controller-revision-hash"] = json!(revision);
    p["metadata"]["uid"] = json!(uid);
    p
}

fn recorded() -> ReplicatedClusterStatus {
    ReplicatedClusterStatus {
        term: 3,
        primary: Some("demo-0".into()),
        member_list: vec!["demo-0".into(), "demo-1".into(), "demo-2".into()],
        ..ReplicatedClusterStatus::default()
    }
}

/// The delete of `demo-i`, with its uid as precondition. The StatefulSet controller's part is
/// played here: the pod comes back from the new template (same name and volume, new uid), not
/// ready until [`ready`] says so.
fn delete(w: &Shared, log: &Log, i: usize) -> Expect {
    let (w, log) = (w.clone(), log.clone());
    let name = format!("demo-{i}");
    Expect::delete(&format!("/api/v1/namespaces/shop/pods/{name}"))
        .check(move |b| {
            assert_eq!(b["preconditions"]["uid"], format!("uid-{i}"), "{b}");
        })
        .respond(move |_| {
            super::fixtures::log_push(&log, format!("delete {name}"));
            let mut world = w.lock().unwrap();
            let p = world
                .pods
                .iter_mut()
                .find(|p| p["metadata"]["name"] == name)
                .expect("a known pod");
            let old = p.clone();
            let role = old["metadata"]["labels"]["rcluster.dev/role"]
                .as_str()
                .map(str::to_string);
            *p = revision_pod(i, role.as_deref(), NEW, &format!("uid-{i}-new"));
            p["status"]["conditions"][0]["status"] = json!("False");
            (200, old)
        })
}

/// The kubelet's readiness probe passes on `demo-i`.
fn ready(w: &Shared, i: usize) {
    w.lock().unwrap().pods[i]["status"]["conditions"][0]["status"] = json!("True");
}

fn updated(n: i32) -> impl FnOnce(&ReplicatedClusterStatus) + Send + 'static {
    move |s| assert_eq!(s.updated_replicas, Some(n), "updatedReplicas")
}

fn lines(log: &Log) -> Vec<String> {
    log_lines(log, &["node ", "delete "])
}

/// A reconcile that restarts `demo-i` for the rollout (`status`: the status write before it).
fn restart(w: &Shared, log: &Log, i: usize, status: Expect) -> Vec<Expect> {
    let name: &'static str = ["demo-0", "demo-1", "demo-2"][i];
    let mut script = opening(w, false);
    script.push(status);
    script.push(delete(w, log, i));
    script.push(event("RollingUpdate", Some(name)));
    script
}

#[tokio::test]
async fn template_change_restarts_replicas_first_and_the_primary_after_a_switchover() {
    let log = Log::default();
    let (nodes, urls) = fake_cluster(3, 0, &log).await;
    let pods = (0..3)
        .map(|i| {
            let role = if i == 0 { "primary" } else { "replica" };
            revision_pod(i, Some(role), OLD, &format!("uid-{i}"))
        })
        .collect();
    let w = world(
        cluster(json!({}), Some(recorded())),
        pods,
        Some(secret_object()),
    );
    let (ctx, handle) = context(urls, Arc::new(AtomicU64::new(50_000)));

    // 0. The StatefulSet controller has not reported the new template yet: nothing restarts.
    let mut script = opening(&w, true);
    script.push(write_status(&w, &log, |s| assert_eq!(s.updated_replicas, None)).optional());
    let handle = reconcile_with(&w, &log, &ctx, handle, script).await;

    // 1. It has; but demo-1 is not ready: nothing restarts while a member is down.
    w.lock().unwrap().statefulset_status =
        Some(json!({"replicas": 3, "observedGeneration": 2, "updateRevision": NEW}));
    w.lock().unwrap().pods[1]["status"]["conditions"][0]["status"] = json!("False");
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, updated(0)));
    let handle = reconcile_with(&w, &log, &ctx, handle, script).await;
    assert!(lines(&log).is_empty(), "{:?}", lines(&log));

    // 2. All ready: the highest replica goes first, then the other.
    w.lock().unwrap().pods[1]["status"]["conditions"][0]["status"] = json!("True");
    let handle = reconcile_with(
        &w,
        &log,
        &ctx,
        handle,
        restart(&w, &log, 2, write_status(&w, &log, updated(0))),
    )
    .await;
    ready(&w, 2);
    let handle = reconcile_with(
        &w,
        &log,
        &ctx,
        handle,
        restart(&w, &log, 1, write_status(&w, &log, updated(1))),
    )
    .await;
    ready(&w, 1);

    // 3. Only the primary is outdated: writes stop on it in a new term (recorded first), and
    // the most advanced updated replica takes over.
    let handle = switch_over(
        &w,
        &log,
        &ctx,
        handle,
        false,
        ("demo-0", "demo-1"),
        &["demo-0", "demo-2"],
        |s| assert_eq!((s.term, s.updated_replicas), (4, Some(2))),
    )
    .await;

    // 4. The old primary, a replica now, restarts last.
    let script = restart(&w, &log, 0, write_status(&w, &log, |_| {}).optional());
    let handle = reconcile_with(&w, &log, &ctx, handle, script).await;
    ready(&w, 0);

    // 5. Done: every pod on the new template; nothing else is deleted.
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, updated(3)));
    reconcile_with(&w, &log, &ctx, handle, script).await;

    assert_eq!(
        lines(&log),
        [
            "delete demo-2",
            "delete demo-1",
            "node demo-0 fence term 4",
            "node demo-1 promote term 4",
            "node demo-0 follow term 4",
            "node demo-2 follow term 4",
            "delete demo-0",
        ]
    );
    assert_eq!(nodes[1].state.lock().unwrap()["role"], "primary");
}

fn put(url: &str, key: &str) {
    let (code, v) = http(
        url,
        "PUT",
        &format!("/v1/kv/{key}?ack=quorum"),
        Some("\"v\""),
    )
    .unwrap();
    assert_eq!(code, 200, "{key}: {v}");
}

/// Waits until `url`'s node is ready and holds everything `primary` has.
fn caught_up(url: &str, primary: &str) {
    wait_for("the node ready and caught up", || {
        let (s, p) = (status(url)?, status(primary)?);
        (s["ready"] == true && s["last_log_index"] == p["last_log_index"]).then_some(())
    });
}

/// The same rollout over real `rcluster-node` processes: each "pod deletion" is a kill -9 and a
/// restart on the same data directory, as the StatefulSet recreates a pod with its volume.
/// Quorum writes are acknowledged while a replica is down, and every acknowledged write is on
/// the new primary at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_over_real_nodes_keeps_every_acknowledged_write() {
    let mut nodes = start_real(&["demo-0", "demo-1", "demo-2"]);
    let urls: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.url.clone()))
        .collect();
    let url = |i: usize| urls[&format!("demo-{i}")].clone();
    let (ctx, handle) = context(urls.clone(), Arc::new(AtomicU64::new(1_000)));
    let log = Log::default();
    let pods = (0..3)
        .map(|i| revision_pod(i, None, OLD, &format!("uid-{i}")))
        .collect();
    let w = world(
        cluster(json!({"replicas": 3}), None),
        pods,
        Some(secret_object()),
    );
    let mut handle = first_election(&w, &log, &ctx, handle, &["demo-0", "demo-1", "demo-2"]).await;
    let mut written = 0;
    tokio::task::block_in_place(|| {
        caught_up(&url(1), &url(0));
        caught_up(&url(2), &url(0));
        for _ in 0..10 {
            written += 1;
            put(&url(0), &format!("k{written}"));
        }
    });
    w.lock().unwrap().statefulset_status =
        Some(json!({"replicas": 3, "observedGeneration": 2, "updateRevision": NEW}));

    // Replicas first: each is killed and restarted; writes go on meanwhile.
    for i in [2, 1] {
        let script = restart(&w, &log, i, write_status(&w, &log, |_| {}).optional());
        handle = reconcile_with(&w, &log, &ctx, handle, script).await;
        tokio::task::block_in_place(|| {
            nodes[i].kill();
            for _ in 0..5 {
                written += 1;
                put(&url(0), &format!("k{written}"));
            }
            nodes[i].restart();
            caught_up(&url(i), &url(0));
        });
        ready(&w, i);
    }

    // The primary hands over to demo-1 (the most advanced; the lowest ordinal among equals).
    let handle = switch_over(
        &w,
        &log,
        &ctx,
        handle,
        false,
        ("demo-0", "demo-1"),
        &["demo-0", "demo-2"],
        |s| assert_eq!((s.term, s.updated_replicas), (2, Some(2))),
    )
    .await;
    tokio::task::block_in_place(|| {
        wait_for("demo-1 serves", || {
            (status(&url(1))?["ready"] == true).then_some(())
        });
        caught_up(&url(0), &url(1));
    });

    // The old primary restarts last, as a replica of demo-1.
    let script = restart(&w, &log, 0, write_status(&w, &log, |_| {}).optional());
    let handle = reconcile_with(&w, &log, &ctx, handle, script).await;
    tokio::task::block_in_place(|| {
        nodes[0].restart();
        caught_up(&url(0), &url(1));
        assert_eq!(status(&url(0)).unwrap()["role"], "replica");
    });
    ready(&w, 0);

    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, updated(3)));
    reconcile_with(&w, &log, &ctx, handle, script).await;

    tokio::task::block_in_place(|| {
        for k in 1..=written {
            let (code, v) = http(&url(1), "GET", &format!("/v1/kv/k{k}"), None).unwrap();
            assert_eq!((code, &v["value"]), (200, &json!("v")), "k{k}: {v}");
        }
        wait_for("every node applied the same log", || {
            let digests: Vec<Value> = (0..3)
                .map(|i| {
                    let (_, s) = http(&url(i), "GET", "/v1/status?digest=true", None)?;
                    (s["applied_index"] == status(&url(1))?["applied_index"])
                        .then(|| s["digest"].clone())
                })
                .collect::<Option<_>>()?;
            digests.iter().all(|d| *d == digests[0]).then_some(())
        });
    });
    assert_eq!(
        lines(&log)
            .iter()
            .filter(|l| l.starts_with("delete"))
            .collect::<Vec<_>>(),
        ["delete demo-2", "delete demo-1", "delete demo-0"]
    );
}
