//! A pod template change rolls out against fake nodes: the StatefulSet (OnDelete) reports a new
//! update revision, and the controller deletes one outdated pod at a time while the cluster is
//! settled — replicas first (highest ordinal first), then a switchover, then the old primary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::{Value, json};

use super::fixtures::{Expect, Log, finish, finish_keep, serve};
use super::nodes::{FakeNode, fake_status};
use super::world::*;
use crate::controller::reconcile;
use crate::crd::ReplicatedClusterStatus;

const OLD: &str = "demo-6d5f8";
const NEW: &str = "demo-7b9c4";

async fn nodes(log: &Log) -> (Vec<FakeNode>, BTreeMap<String, String>) {
    let mut nodes = Vec::new();
    for i in 0..3 {
        let name = format!("demo-{i}");
        let role = if i == 0 { "primary" } else { "replica" };
        let mut s = fake_status(&name, role, 3, 3, 50, true);
        s["following"] = json!("demo-0");
        nodes.push(FakeNode::start(&name, s, log.clone()).await);
    }
    let urls = nodes
        .iter()
        .map(|n| (n.name.clone(), n.url.clone()))
        .collect();
    (nodes, urls)
}

fn revision_pod(i: usize, role: &str, revision: &str, uid: &str) -> Value {
    let mut p = pod(&format!("demo-{i}"), true, Some(role));
    p["metadata"]["labels"]["controller-revision-hash"] = json!(revision);
    p["metadata"]["uid"] = json!(uid);
    p
}

fn status() -> ReplicatedClusterStatus {
    ReplicatedClusterStatus {
        term: 3,
        primary: Some("demo-0".into()),
        member_list: vec!["demo-0".into(), "demo-1".into(), "demo-2".into()],
        ..ReplicatedClusterStatus::default()
    }
}

/// The delete of `demo-i`, with its uid as precondition. The StatefulSet controller's part is
/// played here: the pod comes back from the new template (same name and volume, new uid).
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
                .unwrap_or("replica")
                .to_string();
            *p = revision_pod(i, &role, NEW, &format!("uid-{i}-new"));
            (200, old)
        })
}

fn updated(n: i32) -> impl FnOnce(&ReplicatedClusterStatus) + Send + 'static {
    move |s| assert_eq!(s.updated_replicas, Some(n), "updatedReplicas")
}

fn lines(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("node ") || l.starts_with("delete "))
        .cloned()
        .collect()
}

#[tokio::test]
async fn template_change_restarts_replicas_first_and_the_primary_after_a_switchover() {
    let log = Log::default();
    let (nodes, urls) = nodes(&log).await;
    let pods = (0..3)
        .map(|i| {
            let role = if i == 0 { "primary" } else { "replica" };
            revision_pod(i, role, OLD, &format!("uid-{i}"))
        })
        .collect();
    let w = world(
        cluster(json!({}), Some(status())),
        pods,
        Some(secret_object()),
    );
    let (ctx, handle) = context(urls, Arc::new(AtomicU64::new(50_000)));
    let run = |handle, script| {
        let server = serve(handle, script, log.clone());
        let (ctx, cluster) = (ctx.clone(), current(&w));
        async move {
            reconcile(Arc::new(cluster), ctx).await.unwrap();
            finish_keep(server).await
        }
    };

    // 0. The StatefulSet controller has not reported the new template yet: nothing restarts.
    let mut script = opening(&w, true);
    script.push(write_status(&w, &log, |s| assert_eq!(s.updated_replicas, None)).optional());
    let handle = run(handle, script).await;

    // 1. It has; but demo-1 is not ready: nothing restarts while a member is down.
    w.lock().unwrap().statefulset_status =
        Some(json!({"replicas": 3, "observedGeneration": 2, "updateRevision": NEW}));
    w.lock().unwrap().pods[1]["status"]["conditions"][0]["status"] = json!("False");
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, updated(0)));
    let handle = run(handle, script).await;
    assert!(lines(&log).is_empty(), "{:?}", lines(&log));

    // 2. All ready: the highest replica goes first, then the other.
    w.lock().unwrap().pods[1]["status"]["conditions"][0]["status"] = json!("True");
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, updated(0)));
    script.push(delete(&w, &log, 2));
    script.push(event("RollingUpdate", Some("demo-2")));
    let handle = run(handle, script).await;

    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, updated(1)));
    script.push(delete(&w, &log, 1));
    script.push(event("RollingUpdate", Some("demo-1")));
    let handle = run(handle, script).await;

    // 3. Only the primary is outdated: writes stop on it in a new term (recorded first)...
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, |s| {
        assert_eq!((s.term, s.primary.as_deref()), (4, None));
        assert_eq!(s.updated_replicas, Some(2));
    }));
    script.push(relabel(&w, "demo-0", "replica"));
    script.push(write_status(&w, &log, |_| {}));
    script.push(event("SwitchoverStarted", None));
    let handle = run(handle, script).await;

    // ...and the most advanced updated replica takes over.
    let mut script = opening(&w, false);
    script.extend(promotion(&w, &log, "demo-1", &["demo-0", "demo-2"]));
    let handle = run(handle, script).await;

    // 4. The old primary, a replica now, restarts last.
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, |_| {}).optional());
    script.push(event("SwitchoverCompleted", None).optional());
    script.push(delete(&w, &log, 0));
    script.push(event("RollingUpdate", Some("demo-0")));
    let handle = run(handle, script).await;

    // 5. Done: every pod on the new template; nothing else is deleted.
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, updated(3)));
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx.clone()).await.unwrap();
    finish(server).await;

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
