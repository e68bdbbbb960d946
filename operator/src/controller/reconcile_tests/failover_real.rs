//! (b) Three real rcluster-node processes driven by the controller through the mock API server:
//! the first election, then the primary's process is killed. After the detection window the new
//! term is written to the status before any node hears of it, the reachable members are fenced,
//! the most advanced replica is promoted, the other follows it, and the pod labels move.
//!
//! The check that the record comes first runs inside the mock API server: when the status write
//! with the new term (or primary) arrives, no node may know it yet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::fixtures::{Log, finish, finish_keep, serve};
use super::nodes::{RealNode, http, start_real, status, wait_for};
use super::world::*;
use crate::controller::reconcile;
use crate::crd::{MemberRole, Phase};

/// Every node's (term, role), read directly while the status write is in flight.
fn terms(urls: &[String]) -> Vec<(u64, String)> {
    urls.iter()
        .filter_map(|u| status(u))
        .map(|s| {
            (
                s["term"].as_u64().unwrap_or(0),
                s["role"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn all_ready(nodes: &[&RealNode]) -> Option<()> {
    nodes
        .iter()
        .all(|n| status(&n.url).is_some_and(|s| s["ready"] == true))
        .then_some(())
}

fn status_line(line: &str) -> bool {
    line.starts_with("status ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_is_replaced_after_the_term_is_recorded() {
    let mut nodes = start_real(&["demo-0", "demo-1", "demo-2"]);
    let urls: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.url.clone()))
        .collect();
    let all_urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let clock = Arc::new(AtomicU64::new(1_000));
    let (ctx, handle) = context(urls, clock.clone());
    let log = Log::default();
    let spec = json!({"replicas": 3, "failover": {"detectionWindow": "1s"}});
    let pods: Vec<Value> = (0..3)
        .map(|i| pod(&format!("demo-{i}"), true, None))
        .collect();
    let w = world(cluster(spec, None), pods, Some(secret_object()));

    // 1. First election, step one: term 1 recorded, then every member fenced.
    let mut script = opening(&w, true);
    let probe = all_urls.clone();
    script.push(write_status(&w, &log, move |s| {
        assert_eq!((s.term, s.primary.as_deref()), (1, None));
        assert!(
            terms(&probe).iter().all(|(t, _)| *t == 0),
            "a node learnt term 1 first"
        );
    }));
    for p in ["demo-0", "demo-1", "demo-2"] {
        script.push(relabel(&w, p, "replica"));
    }
    script.push(write_status(&w, &log, |s| {
        assert!(s.members.iter().all(|m| m.term == 1))
    }));
    script.push(event("ElectionStarted", None));
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx.clone()).await.unwrap();
    let handle = finish_keep(server).await;

    // 2. Step two: demo-0 (all logs empty, first in order) recorded, promoted; the others follow.
    clock.store(1_250, Ordering::SeqCst);
    let mut script = opening(&w, false);
    let probe = all_urls[0].clone();
    script.push(write_status(&w, &log, move |s| {
        assert_eq!((s.term, s.primary.as_deref()), (1, Some("demo-0")));
        assert_ne!(
            status(&probe).unwrap()["role"],
            "primary",
            "promoted before the record"
        );
    }));
    script.push(relabel(&w, "demo-0", "primary"));
    script.push(write_status(&w, &log, |_| {}));
    script.push(event("Promoted", Some("demo-0")));
    script.push(event("ReplicaRefetching", Some("demo-1")));
    script.push(event("ReplicaRefetching", Some("demo-2")));
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx.clone()).await.unwrap();
    let handle = finish_keep(server).await;

    // Some data, acknowledged by a quorum and applied everywhere.
    let refs: Vec<&RealNode> = nodes.iter().collect();
    tokio::task::block_in_place(|| {
        wait_for("every node ready", || all_ready(&refs));
        let (code, _) = http(&nodes[0].url, "PUT", "/v1/kv/k1", Some("\"v1\"")).unwrap();
        assert_eq!(code, 200);
        let applied = |u: &String| {
            status(u)
                .and_then(|s| s["applied_index"].as_u64())
                .unwrap_or(0)
        };
        let target = applied(&all_urls[0]);
        wait_for("replicas applied k1", || {
            all_urls.iter().all(|u| applied(u) >= target).then_some(())
        });
    });

    // 3. Steady: nothing to do (the status may still change as members became ready).
    clock.store(2_000, Ordering::SeqCst);
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, |s| assert_eq!(s.phase, Some(Phase::Running))).optional());
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx.clone()).await.unwrap();
    let handle = finish_keep(server).await;
    let settled = w.lock().unwrap().cluster.status.clone().unwrap();
    assert_eq!(
        settled.phase,
        Some(Phase::Running),
        "{:?}",
        settled.conditions
    );
    assert_eq!(settled.ready_replicas, 3);
    let before_failure = log.lock().unwrap().len();

    // The primary's process dies; its pod still looks Ready (the kubelet has not noticed).
    nodes[0].kill();

    // 4. Within the detection window: reported, nothing done.
    clock.store(10_000, Ordering::SeqCst);
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, |s| {
        assert_eq!((s.term, s.primary.as_deref()), (1, Some("demo-0")));
        assert_eq!(s.phase, Some(Phase::Unavailable));
    }));
    script.push(event("PrimaryUnhealthy", None));
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx.clone()).await.unwrap();
    let handle = finish_keep(server).await;

    // 5. Window elapsed: term 2 recorded before the survivors are fenced.
    clock.store(11_000, Ordering::SeqCst);
    let mut script = opening(&w, false);
    let probe = all_urls[1..].to_vec();
    script.push(write_status(&w, &log, move |s| {
        assert_eq!((s.term, s.primary.as_deref()), (2, None));
        assert_eq!(s.phase, Some(Phase::FailingOver));
        let seen = terms(&probe);
        assert_eq!(seen.len(), 2);
        assert!(
            seen.iter().all(|(t, _)| *t == 1),
            "fenced before the record: {seen:?}"
        );
    }));
    script.push(relabel(&w, "demo-0", "replica"));
    script.push(write_status(&w, &log, |s| {
        assert!(
            s.members[1..].iter().all(|m| m.term == 2),
            "{:?}",
            s.members
        )
    }));
    script.push(event("FailoverStarted", None));
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx.clone()).await.unwrap();
    let handle = finish_keep(server).await;

    // 6. Both survivors answer in term 2: demo-1 (as advanced as demo-2, first in order) is
    // recorded, then promoted; demo-2 follows it; the labels move.
    clock.store(11_250, Ordering::SeqCst);
    let mut script = opening(&w, false);
    let probe = all_urls[1].clone();
    script.push(write_status(&w, &log, move |s| {
        assert_eq!((s.term, s.primary.as_deref()), (2, Some("demo-1")));
        assert_eq!(
            status(&probe).unwrap()["role"],
            "fenced",
            "promoted before the record"
        );
    }));
    script.push(relabel(&w, "demo-1", "primary"));
    script.push(write_status(&w, &log, |s| {
        let lf = s.last_failover.as_ref().expect("lastFailover");
        assert_eq!(
            (lf.from.as_str(), lf.to.as_str(), lf.term),
            ("demo-0", "demo-1", 2)
        );
        assert_eq!(
            lf.duration_ms, 1_250,
            "from the first failed probe to the promotion"
        );
        assert_eq!(s.members[1].role, MemberRole::Primary);
    }));
    script.push(event("Promoted", Some("demo-1")));
    script.push(event("ReplicaRefetching", Some("demo-2")));
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx.clone()).await.unwrap();
    finish(server).await;

    // The nodes agree, and the acknowledged write survived.
    tokio::task::block_in_place(|| {
        let s1 = status(&nodes[1].url).unwrap();
        assert_eq!(
            (s1["role"].as_str(), s1["term"].as_u64()),
            (Some("primary"), Some(2))
        );
        wait_for("demo-2 follows demo-1", || {
            let s2 = status(&nodes[2].url)?;
            (s2["role"] == "replica" && s2["following"] == "demo-1").then_some(())
        });
        let (code, v) = http(&nodes[1].url, "GET", "/v1/kv/k1?consistency=eventual", None).unwrap();
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["value"], "v1", "{v}");
    });
    assert!(
        ctx.metrics
            .encode()
            .unwrap()
            .contains("rcluster_operator_failovers_total 1")
    );
    let statuses: Vec<String> = log.lock().unwrap()[before_failure..]
        .iter()
        .filter(|l| status_line(l))
        .cloned()
        .collect();
    assert_eq!(statuses[1], "status term 2 primary None", "{statuses:?}");
    assert!(statuses.contains(&"status term 2 primary Some(\"demo-1\")".to_string()));
    let pods = &w.lock().unwrap().pods;
    let roles: Vec<&Value> = pods
        .iter()
        .map(|p| &p["metadata"]["labels"]["rcluster.dev/role"])
        .collect();
    assert_eq!(
        roles,
        [&json!("replica"), &json!("primary"), &json!("replica")]
    );
}
