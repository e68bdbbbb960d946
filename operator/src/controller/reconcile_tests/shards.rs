//! A cluster of two shards against fake nodes: each shard's StatefulSet and Services, both
//! shards' records in the status, a failover in one shard that leaves the other's record and
//! nodes alone, the cluster map pushed to every node, and a change of `spec.shards` that begins a
//! resharding (recorded before anything acts on it).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rcluster_proto::SlotMap;
use serde_json::{Value, json};

use super::fixtures::{Expect, Log, finish, finish_keep, log_lines, not_found, serve};
use super::nodes::{FakeNode, dead_url, fake_cluster, fake_status};
use super::world::*;
use crate::controller::reconcile;
use crate::crd::{ReplicatedClusterStatus, ShardStatus, SlotMapStatus};

fn names(set: &str) -> Vec<String> {
    (0..3).map(|i| format!("{set}-{i}")).collect()
}

/// Shard 0 serves (term 3, primary demo-0); shard 1 lost its primary and is electing in term 5.
fn two_shards() -> ReplicatedClusterStatus {
    let slots = SlotMap::even(4096, 2).unwrap();
    let shard0 = ShardStatus {
        shard: 0,
        term: 3,
        primary: Some("demo-0".into()),
        member_list: names("demo"),
        slots: slots.describe(0),
        ..ShardStatus::default()
    };
    let shard1 = ShardStatus {
        shard: 1,
        term: 5,
        primary: None,
        member_list: names("demo-s1"),
        slots: slots.describe(1),
        ..ShardStatus::default()
    };
    ReplicatedClusterStatus {
        term: 3,
        primary: Some("demo-0".into()),
        member_list: names("demo"),
        shards: vec![shard0, shard1],
        slot_map: Some(SlotMapStatus::from(&slots)),
        ..ReplicatedClusterStatus::default()
    }
}

/// The owned objects of a cluster of `shards` shards, in the controller's order.
fn sharded_apply_stage(w: &Shared, shards: u32, first: bool) -> Vec<Expect> {
    let core = "/api/v1/namespaces/shop";
    let stored = w.clone();
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut v = vec![
        apply(&format!("{core}/secrets"), "Secret", "demo-secret").respond(move |b| {
            stored.lock().unwrap().secret = Some(b.clone());
            (200, b)
        }),
        apply(&format!("{core}/services"), "Service", "demo-headless"),
        apply(&format!("{core}/services"), "Service", "demo-client").check(|b| {
            assert_eq!(b["spec"]["selector"].get("rcluster.dev/shard"), None, "{b}");
            assert_eq!(b["spec"]["selector"].get("rcluster.dev/role"), None, "{b}");
        }),
    ];
    for k in 0..shards {
        let set = if k == 0 {
            "demo".to_string()
        } else {
            format!("demo-s{k}")
        };
        let shard = k.to_string();
        let selects_shard = move |b: &Value| {
            assert_eq!(b["spec"]["selector"]["rcluster.dev/shard"], shard, "{b}");
        };
        v.extend([
            apply(
                &format!("{core}/configmaps"),
                "ConfigMap",
                leak(format!("{set}-config")),
            )
            .check(move |b| {
                let config: Value =
                    serde_json::from_str(b["data"]["cluster.json"].as_str().unwrap()).unwrap();
                assert_eq!(config["shard"], k, "{config}");
                let members: Vec<String> = config["members"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect();
                assert_eq!(members, names(&crate::resources::shard_name("demo", k)));
            }),
            apply(
                &format!("{core}/services"),
                "Service",
                leak(format!("{set}-rw")),
            )
            .check(selects_shard.clone()),
            apply(
                &format!("{core}/services"),
                "Service",
                leak(format!("{set}-ro")),
            )
            .check(selects_shard),
            apply(
                "/apis/apps/v1/namespaces/shop/statefulsets",
                "StatefulSet",
                leak(set.clone()),
            )
            .check(move |b| {
                assert_eq!(b["spec"]["replicas"], 3);
                assert_eq!(
                    b["spec"]["selector"]["matchLabels"]["rcluster.dev/shard"],
                    k.to_string()
                );
            }),
            apply(
                "/apis/policy/v1/namespaces/shop/poddisruptionbudgets",
                "PodDisruptionBudget",
                leak(set),
            ),
        ]);
    }
    if first {
        v.push(
            Expect::delete("/apis/monitoring.coreos.com/v1/namespaces/shop/servicemonitors/demo")
                .respond(|_| not_found()),
        );
    }
    v
}

fn sharded_opening(w: &Shared, shards: u32, first: bool) -> Vec<Expect> {
    let mut v = vec![get_secret(w), list_pods(w)];
    v.extend(sharded_apply_stage(w, shards, first));
    v
}

#[tokio::test]
async fn a_failover_in_one_shard_leaves_the_other_alone_and_a_shards_change_begins_a_resharding() {
    let log = Log::default();
    let (shard0, mut urls) = fake_cluster(3, 0, &log).await;
    let s1 = [
        FakeNode::start(
            "demo-s1-1",
            fake_status("demo-s1-1", "fenced", 5, 4, 40, false),
            log.clone(),
        )
        .await,
        FakeNode::start(
            "demo-s1-2",
            fake_status("demo-s1-2", "fenced", 5, 4, 38, false),
            log.clone(),
        )
        .await,
    ];
    urls.insert("demo-s1-0".to_string(), dead_url());
    for n in &s1 {
        urls.insert(n.name.clone(), n.url.clone());
    }
    let mut pods = vec![
        pod("demo-0", true, Some("primary")),
        pod("demo-1", true, Some("replica")),
        pod("demo-2", true, Some("replica")),
    ];
    pods.extend(
        names("demo-s1")
            .iter()
            .map(|n| pod(n, n != "demo-s1-0", Some("replica"))),
    );
    let w = world(
        cluster(json!({"shards": 2}), Some(two_shards())),
        pods,
        Some(secret_object()),
    );
    let (ctx, handle) = context(urls, Arc::new(AtomicU64::new(100_000)));

    let mut script = sharded_opening(&w, 2, true);
    script.push(write_status(&w, &log, |s| {
        assert_eq!(s.shards[1].term, 5);
        assert_eq!(s.shards[1].primary.as_deref(), Some("demo-s1-1"));
        assert_eq!(
            (s.shards[0].term, s.shards[0].primary.as_deref()),
            (3, Some("demo-0"))
        );
        assert_eq!((s.term, s.primary.as_deref()), (3, Some("demo-0")));
    }));
    script.push(relabel(&w, "demo-s1-1", "primary"));
    script.push(write_status(&w, &log, |_| {}));
    script.push(event("Promoted", Some("demo-s1-1")));
    script.push(event("ReplicaRefetching", Some("demo-s1-2")));
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx.clone()).await.unwrap();
    let handle = finish_keep(server).await;

    let order = log_lines(&log, &["node ", "status "]);
    assert_eq!(
        order,
        [
            "status term 3 primary Some(\"demo-0\")",
            "node demo-s1-1 promote term 5",
            "node demo-s1-2 follow term 5",
            "status term 3 primary Some(\"demo-0\")",
        ],
        "shard 1's record is stored before its nodes hear of it; shard 0's nodes get no command"
    );
    let status = current(&w).status.unwrap();
    assert_eq!(status.shards.len(), 2);
    assert_eq!(
        (status.shards[0].term, status.shards[0].primary.as_deref()),
        (3, Some("demo-0"))
    );
    assert_eq!(
        (status.shards[1].term, status.shards[1].primary.as_deref()),
        (5, Some("demo-s1-1"))
    );
    assert_eq!(status.shards[1].slots, "2048-4095");
    assert_eq!(status.replicas, 6);
    assert_eq!(status.members.len(), 6);

    // Every node that answers took the cluster map: both shards, their primaries and terms.
    for n in shard0.iter().chain(&s1) {
        let map = n.state.lock().unwrap()["cluster_map"].clone();
        assert_eq!(map["slots"]["epoch"], 1, "{}: {map}", n.name);
        assert_eq!(map["shards"][0]["primary"], "demo-0");
        assert_eq!(map["shards"][1]["primary"], "demo-s1-1");
        assert_eq!(map["shards"][1]["term"], 5);
        assert_eq!(map["shards"][1]["members"].as_object().unwrap().len(), 3);
    }
    let pushes = log_lines(&log, &["map "]).len();
    assert_eq!(pushes, 5);

    // spec.shards changes to 3: a resharding begins. Its record and the map with room for a
    // third shard are written before anything else happens; two shards run until then.
    w.lock().unwrap().cluster.spec.shards = 3;
    let mut script = sharded_opening(&w, 2, false);
    script.push(write_status(&w, &log, |s| {
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Resharding")
            .expect("the condition");
        assert_eq!(c.status, "True");
        let r = s.reshard.as_ref().expect("the resharding's record");
        assert_eq!((r.shards, r.migration.as_ref()), (3, None));
        assert_eq!(r.remaining_slots, 1365, "{r:?}");
        let map = s.slot_map.as_ref().unwrap();
        assert_eq!(
            (map.shards, map.epoch),
            (3, 2),
            "room for shard 2, which owns nothing"
        );
        assert!(map.ranges.iter().all(|r| r.shard < 2));
        assert_eq!(s.shards.len(), 2);
    }));
    script.push(event("ReshardStarted", None));
    let server = serve(handle, script, log.clone());
    reconcile(Arc::new(current(&w)), ctx).await.unwrap();
    finish(server).await;
    assert_eq!(
        log_lines(&log, &["map "]).len(),
        pushes,
        "a map with a shard that does not run yet is not sent (a node would refuse it)"
    );
}
