//! Failover steps against fake nodes, whose commands land in the same log as the API calls:
//! (c) a status conflict (409) stops a promotion, and the next reconcile on fresh data does it;
//! (d) too few responders: the controller waits, says why in status and an event, and promotes
//! nobody.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::json;

use super::fixtures::{Log, finish, finish_keep, serve};
use super::nodes::{FakeNode, dead_url, fake_status};
use super::world::*;
use crate::controller::{CONFLICT_REQUEUE, reconcile};
use crate::crd::{Phase, ReplicatedClusterStatus};

/// An election in progress: term 5 recorded, no primary yet (the old primary failed).
fn electing() -> ReplicatedClusterStatus {
    ReplicatedClusterStatus {
        phase: Some(Phase::FailingOver),
        term: 5,
        primary: None,
        ..ReplicatedClusterStatus::default()
    }
}

fn replica_pods() -> Vec<serde_json::Value> {
    (0..3)
        .map(|i| pod(&format!("demo-{i}"), i != 0, Some("replica")))
        .collect()
}

fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn a_status_conflict_stops_the_promotion_and_the_next_reconcile_does_it() {
    let log = Log::default();
    let n1 = FakeNode::start(
        "demo-1",
        fake_status("demo-1", "fenced", 5, 4, 40, false),
        log.clone(),
    )
    .await;
    let n2 = FakeNode::start(
        "demo-2",
        fake_status("demo-2", "fenced", 5, 4, 38, false),
        log.clone(),
    )
    .await;
    let urls = BTreeMap::from([
        ("demo-0".to_string(), dead_url()),
        ("demo-1".to_string(), n1.url.clone()),
        ("demo-2".to_string(), n2.url.clone()),
    ]);
    let w = world(
        cluster(json!({}), Some(electing())),
        replica_pods(),
        Some(secret_object()),
    );
    // Someone else changed the resource after the controller's cache saw it.
    let stale = current(&w);
    w.lock().unwrap().cluster.metadata.resource_version = Some("2".into());
    let (ctx, handle) = context(urls, Arc::new(AtomicU64::new(100_000)));

    let mut script = opening(&w, true);
    script.push(write_status(&w, &log, |_| panic!("must be refused")));
    let server = serve(handle, script, log.clone());
    let requeue = reconcile(Arc::new(stale), ctx.clone()).await.unwrap();
    let handle = finish_keep(server).await;
    assert_eq!(
        requeue,
        kube::runtime::controller::Action::requeue(CONFLICT_REQUEUE)
    );
    assert!(
        lines(&log).iter().all(|l| !l.starts_with("node ")),
        "no node command after a conflict: {:?}",
        lines(&log)
    );
    assert_eq!(n1.state.lock().unwrap()["role"], "fenced");

    // Fresh data: the promotion is recorded first, then carried out.
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, |s| {
        assert_eq!((s.term, s.primary.as_deref()), (5, Some("demo-1")));
    }));
    script.push(relabel(&w, "demo-1", "primary"));
    script.push(write_status(&w, &log, |s| {
        assert_eq!(s.members[1].role, crate::crd::MemberRole::Primary);
        assert_eq!(s.members[2].role, crate::crd::MemberRole::Replica);
    }));
    script.push(event("Promoted", Some("demo-1")));
    script.push(event("ReplicaRefetching", Some("demo-2")));
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx).await.unwrap();
    finish(server).await;

    let order: Vec<String> = lines(&log)
        .into_iter()
        .filter(|l| l.starts_with("node ") || l.starts_with("status "))
        .collect();
    assert_eq!(
        order,
        [
            "status term 5 primary Some(\"demo-1\")",
            "node demo-1 promote term 5",
            "node demo-2 follow term 5",
            "status term 5 primary Some(\"demo-1\")",
        ]
    );
    assert_eq!(n1.state.lock().unwrap()["role"], "primary");
    assert_eq!(n2.state.lock().unwrap()["following"], "demo-1");
}

#[tokio::test]
async fn too_few_responders_wait_and_say_why() {
    let log = Log::default();
    let n1 = FakeNode::start(
        "demo-1",
        fake_status("demo-1", "fenced", 5, 4, 40, false),
        log.clone(),
    )
    .await;
    let urls = BTreeMap::from([
        ("demo-0".to_string(), dead_url()),
        ("demo-1".to_string(), n1.url.clone()),
        ("demo-2".to_string(), dead_url()),
    ]);
    let w = world(
        cluster(json!({}), Some(electing())),
        replica_pods(),
        Some(secret_object()),
    );
    let (ctx, handle) = context(urls, Arc::new(AtomicU64::new(100_000)));

    let mut script = opening(&w, true);
    script.push(write_status(&w, &log, |s| {
        assert_eq!(
            (s.term, s.primary.as_deref()),
            (5, None),
            "the record does not change"
        );
        assert_eq!(s.phase, Some(Phase::Unavailable));
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == "FailingOver")
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "WaitingForQuorum")
        );
        assert!(c.message.contains("1 member(s) answered"), "{}", c.message);
        let a = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Available")
            .unwrap();
        assert_eq!(
            (a.status.as_str(), a.reason.as_str()),
            ("False", "WaitingForQuorum")
        );
    }));
    script.push(event("WaitingForQuorum", None));
    let server = serve(handle, script, log.clone());
    let requeue = reconcile(Arc::new(current(&w)), ctx.clone()).await.unwrap();
    let handle = finish_keep(server).await;
    // Waiting: four looks per detection window (10 s by default).
    assert_eq!(
        requeue,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_millis(2_500))
    );

    // Still waiting: no new event (a wait is reported when it begins), nothing promoted.
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, |_| {}).optional());
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx).await.unwrap();
    finish(server).await;

    assert!(
        lines(&log).iter().all(|l| !l.starts_with("node ")),
        "{:?}",
        lines(&log)
    );
    assert_eq!(n1.state.lock().unwrap()["role"], "fenced");
}
