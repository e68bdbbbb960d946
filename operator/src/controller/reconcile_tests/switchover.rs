//! Planned switchovers against fake nodes: through the `rcluster.dev/switchover-to` annotation
//! (removed when done), and the one a scale-down starts when it would remove the primary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::{Value, json};

use super::fixtures::{Log, finish, log_lines, serve};
use super::nodes::fake_cluster;
use super::world::*;
use crate::controller::reconcile;
use crate::crd::ReplicatedClusterStatus;

fn pods(n: usize, primary: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            pod(
                &format!("demo-{i}"),
                true,
                Some(if i == primary { "primary" } else { "replica" }),
            )
        })
        .collect()
}

fn record(primary: &str) -> ReplicatedClusterStatus {
    ReplicatedClusterStatus {
        term: 3,
        primary: Some(primary.to_string()),
        ..ReplicatedClusterStatus::default()
    }
}

fn node_lines(log: &Log) -> Vec<String> {
    log_lines(log, &["node ", "status "])
}

#[tokio::test]
async fn annotation_switches_over_and_is_removed_when_done() {
    let log = Log::default();
    let (nodes, urls) = fake_cluster(3, 0, &log).await;
    let mut c = cluster(json!({}), Some(record("demo-0")));
    c.metadata.annotations = Some(BTreeMap::from([(
        "rcluster.dev/switchover-to".to_string(),
        "demo-2".to_string(),
    )]));
    let w = world(c, pods(3, 0), Some(secret_object()));
    let (ctx, handle) = context(urls, Arc::new(AtomicU64::new(50_000)));

    // 1. Writes stop on demo-0: a new term is recorded, then demo-0 is fenced in it. 2. demo-2
    // holds everything demo-0 has: recorded, promoted, the others follow it.
    let handle = switch_over(
        &w,
        &log,
        &ctx,
        handle,
        true,
        ("demo-0", "demo-2"),
        &["demo-0", "demo-1"],
        |s| assert_eq!(s.term, 4),
    )
    .await;

    // 3. Done: the annotation goes, and a switchover is not counted as a failover.
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, |_| {}).optional());
    script.push(remove_annotation(&w));
    reconcile_with(&w, &log, &ctx, handle, script).await;

    assert_eq!(
        node_lines(&log),
        [
            "status term 4 primary None",
            "node demo-0 fence term 4",
            "status term 4 primary None",
            "status term 4 primary Some(\"demo-2\")",
            "node demo-2 promote term 4",
            "node demo-0 follow term 4",
            "node demo-1 follow term 4",
            "status term 4 primary Some(\"demo-2\")",
        ]
    );
    assert_eq!(nodes[2].state.lock().unwrap()["role"], "primary");
    assert!(w.lock().unwrap().cluster.metadata.annotations.is_none());
    assert!(
        w.lock()
            .unwrap()
            .cluster
            .status
            .as_ref()
            .unwrap()
            .last_failover
            .is_none()
    );
    assert!(
        ctx.metrics
            .encode()
            .unwrap()
            .contains("rcluster_operator_failovers_total 0")
    );
}

#[tokio::test]
async fn scale_down_moves_the_primary_before_removing_its_pod() {
    let log = Log::default();
    let (nodes, urls) = fake_cluster(3, 2, &log).await;
    let w = world(
        cluster(json!({"replicas": 2}), Some(record("demo-2"))),
        pods(3, 2),
        Some(secret_object()),
    );
    let (ctx, handle) = context(urls, Arc::new(AtomicU64::new(50_000)));
    let sts_replicas =
        |n: i64| move |sts: &Value| assert_eq!(sts["spec"]["replicas"], n, "StatefulSet size");

    // 1. The StatefulSet keeps demo-2 (the primary) and a switchover to demo-0 starts.
    let mut script = vec![get_secret(&w), list_pods(&w)];
    script.extend(apply_stage(&w, true, sts_replicas(3)));
    script.extend(switchover_started(&w, &log, "demo-2", |s| {
        assert_eq!(s.term, 4)
    }));
    let handle = reconcile_with(&w, &log, &ctx, handle, script).await;

    // 2. demo-0 is promoted; the StatefulSet still holds three pods until the record says so.
    let mut script = vec![get_secret(&w), list_pods(&w)];
    script.extend(apply_stage(&w, false, sts_replicas(3)));
    script.extend(switchover_completed(
        &w,
        &log,
        "demo-0",
        &["demo-1", "demo-2"],
    ));
    let handle = reconcile_with(&w, &log, &ctx, handle, script).await;

    // 3. The primary is within the new size: the member list drops demo-2 in a new term (the
    // record first), demo-0 is promoted again with the new list; demo-2 keeps its pod.
    let mut script = vec![get_secret(&w), list_pods(&w)];
    script.extend(apply_stage(&w, false, sts_replicas(3)));
    script.push(write_status(&w, &log, |s| {
        assert_eq!((s.term, s.member_list.len()), (5, 2));
        assert_eq!(s.previous_member_list.as_ref().map(Vec::len), Some(3));
    }));
    script.push(write_status(&w, &log, |_| {}).optional());
    script.push(event("MembersChanging", None));
    script.push(event("Promoted", Some("demo-0")));
    script.push(event("ReplicaRefetching", Some("demo-1")));
    let handle = reconcile_with(&w, &log, &ctx, handle, script).await;

    // 4. The primary acknowledged the term's first entry: the change is committed.
    let mut script = vec![get_secret(&w), list_pods(&w)];
    script.extend(apply_stage(&w, false, sts_replicas(3)));
    script.push(write_status(&w, &log, |s| {
        assert_eq!(s.previous_member_list, None)
    }));
    script.push(write_status(&w, &log, |_| {}).optional());
    script.push(event("MembersChanged", None));
    let handle = reconcile_with(&w, &log, &ctx, handle, script).await;

    // 5. Only now the StatefulSet shrinks to two.
    let mut script = vec![get_secret(&w), list_pods(&w)];
    script.extend(apply_stage(&w, false, sts_replicas(2)));
    script.push(write_status(&w, &log, |_| {}).optional());
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx).await.unwrap();
    finish(server).await;

    let primary = nodes[0].state.lock().unwrap().clone();
    assert_eq!(
        (primary["role"].as_str(), primary["term"].as_u64()),
        (Some("primary"), Some(5))
    );
    assert_eq!(
        primary["members"],
        json!([{"name": "demo-0"}, {"name": "demo-1"}])
    );
    assert_eq!(nodes[2].state.lock().unwrap()["following"], "demo-0");
}

#[tokio::test]
async fn a_request_on_the_primary_node_is_honoured_and_cleared() {
    let log = Log::default();
    let (nodes, urls) = fake_cluster(3, 0, &log).await;
    // `rcluster switchover --to demo-2` through the read-write Service; a replica still carries
    // a request from an earlier term, which is never acted on.
    nodes[0].state.lock().unwrap()["switchover_request"] = json!({"to": "demo-2", "at_ms": 5});
    nodes[1].state.lock().unwrap()["switchover_request"] = json!({"to": "demo-1", "at_ms": 1});
    let w = world(
        cluster(json!({}), Some(record("demo-0"))),
        pods(3, 0),
        Some(secret_object()),
    );
    let (ctx, handle) = context(urls, Arc::new(AtomicU64::new(50_000)));

    // Writes stop on demo-0; the switchover is in the record, so both requests are used up.
    // Then demo-2 is promoted.
    let handle = switch_over(
        &w,
        &log,
        &ctx,
        handle,
        true,
        ("demo-0", "demo-2"),
        &["demo-0", "demo-1"],
        |s| {
            assert_eq!(s.term, 4);
            let to = s.switchover.as_ref().map(|sw| sw.to.as_str());
            assert_eq!(to, Some("demo-2"));
        },
    )
    .await;

    // Settled: nothing asks for another switchover.
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, |_| {}).optional());
    reconcile_with(&w, &log, &ctx, handle, script).await;

    assert_eq!(
        node_lines(&log),
        [
            "status term 4 primary None",
            "node demo-0 fence term 4",
            "node demo-0 clear-switchover term 4",
            "node demo-1 clear-switchover term 4",
            "status term 4 primary None",
            "status term 4 primary Some(\"demo-2\")",
            "node demo-2 promote term 4",
            "node demo-0 follow term 4",
            "node demo-1 follow term 4",
            "status term 4 primary Some(\"demo-2\")",
        ]
    );
    for n in &nodes {
        assert_eq!(n.state.lock().unwrap()["switchover_request"], Value::Null);
    }
    assert_eq!(nodes[2].state.lock().unwrap()["role"], "primary");
}
