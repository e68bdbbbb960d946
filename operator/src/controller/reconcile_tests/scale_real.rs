//! (c) Scale-up with real rcluster-node processes through the mock API server: the running
//! cluster gets a fourth member once its node answers. The new member list is recorded in a new
//! term first (with the old one), then the primary is promoted again with it and every member
//! follows; the new member fetches the data, and once the primary acknowledged its term's first
//! entry the old list is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::{Value, json};

use super::fixtures::Log;
use super::nodes::{http, start_real, status, wait_for};
use super::world::*;

fn names(s: &Value) -> Vec<String> {
    s["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_joins_in_a_new_term_and_gets_the_data() {
    // Four processes, as after the StatefulSet grew; the spec asks for three at first, so the
    // fourth is not a member yet.
    let nodes = start_real(&["demo-0", "demo-1", "demo-2", "demo-3"]);
    let urls: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.url.clone()))
        .collect();
    let (ctx, handle) = context(urls, Arc::new(AtomicU64::new(1_000)));
    let log = Log::default();
    let pods: Vec<Value> = (0..3)
        .map(|i| pod(&format!("demo-{i}"), true, None))
        .collect();
    let w = world(
        cluster(json!({"replicas": 3}), None),
        pods,
        Some(secret_object()),
    );

    let handle = first_election(&w, &log, &ctx, handle, &["demo-0", "demo-1", "demo-2"]).await;

    let primary_url = nodes[0].url.clone();
    let new_url = nodes[3].url.clone();
    tokio::task::block_in_place(|| {
        wait_for("the primary is ready", || {
            (status(&primary_url)?["ready"] == true).then_some(())
        });
        let (code, v) = http(&primary_url, "PUT", "/v1/kv/k1", Some("\"v1\"")).unwrap();
        assert_eq!(code, 200, "{v}");
        let s = status(&primary_url).unwrap();
        assert_eq!(names(&s), ["demo-0", "demo-1", "demo-2"]);
        assert_eq!(status(&new_url).unwrap()["role"], "fenced");
    });

    // Scale to four: the pod exists and its node answers, so it joins in term 2.
    {
        let mut w = w.lock().unwrap();
        w.cluster.spec.replicas = 4;
        w.pods.push(pod("demo-3", false, None));
    }
    let mut script = opening(&w, false);
    let probe = new_url.clone();
    script.push(write_status(&w, &log, move |s| {
        assert_eq!((s.term, s.primary.as_deref()), (2, Some("demo-0")));
        assert_eq!(s.member_list, ["demo-0", "demo-1", "demo-2", "demo-3"]);
        assert_eq!(
            s.previous_member_list.as_deref(),
            Some(&["demo-0".to_string(), "demo-1".into(), "demo-2".into()][..])
        );
        assert_eq!(
            status(&probe).unwrap()["term"],
            0,
            "a node heard of term 2 before the record"
        );
    }));
    script.push(relabel(&w, "demo-3", "replica"));
    script.push(write_status(&w, &log, |_| {}).optional());
    script.push(event("MembersChanging", None));
    script.push(event("Promoted", Some("demo-0")));
    for p in ["demo-1", "demo-2", "demo-3"] {
        script.push(event("ReplicaRefetching", Some(p)));
    }
    let handle = reconcile_with(&w, &log, &ctx, handle, script).await;

    // The new member fetches what it lacks and becomes ready; the primary ships to it.
    tokio::task::block_in_place(|| {
        wait_for("demo-3 holds k1", || {
            let (code, v) = http(&new_url, "GET", "/v1/kv/k1?consistency=eventual", None)?;
            (code == 200 && v["value"] == "v1").then_some(())
        });
        wait_for("demo-3 ready", || {
            (status(&new_url)?["ready"] == true).then_some(())
        });
        let s = status(&primary_url).unwrap();
        assert_eq!(names(&s), ["demo-0", "demo-1", "demo-2", "demo-3"]);
        assert_eq!(s["members"][3]["role"], "replica", "{s}");
    });
    w.lock().unwrap().pods[3] = pod("demo-3", true, Some("replica"));

    // The primary acknowledged term 2's first entry at quorum: the old list is dropped.
    let mut script = opening(&w, false);
    script.push(write_status(&w, &log, |s| {
        assert_eq!(s.previous_member_list, None);
        assert_eq!(s.member_list.len(), 4);
    }));
    script.push(write_status(&w, &log, |_| {}).optional());
    script.push(event("MembersChanged", None));
    reconcile_with(&w, &log, &ctx, handle, script).await;
}
