use super::*;
use crate::crd::ReplicatedClusterStatus;
use crate::failover::{Role, Switchover};

pub fn pod(name: &str, ready: bool) -> PodInfo {
    PodInfo {
        name: name.to_string(),
        ready,
        ip: Some("10.0.0.1".into()),
        role_label: None,
        terminating: false,
    }
}

pub fn node(name: &str, role: &str, term: u64, index: u64, ready: bool) -> NodeStatus {
    NodeStatus {
        node: name.to_string(),
        role: role.to_string(),
        term,
        last_log_term: term,
        last_log_index: index,
        applied_index: index,
        commit_index: index,
        ready,
        ..NodeStatus::default()
    }
}

pub fn member(name: &str, status: Option<NodeStatus>) -> Member {
    Member {
        name: name.to_string(),
        pod: Some(pod(name, status.as_ref().is_some_and(|s| s.ready))),
        url: Some(format!("http://{name}")),
        error: status.is_none().then(|| "connection refused".to_string()),
        node: status,
    }
}

#[test]
fn pod_info_reads_readiness_ip_label_and_deletion() {
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "demo-1", "labels": {"rcluster.dev/role": "replica"},
                     "deletionTimestamp": "2024-01-01T00:00:00Z"},
        "status": {"podIP": "10.1.1.1", "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"}]}
    }))
    .unwrap();
    assert_eq!(
        PodInfo::from_pod(&p),
        PodInfo {
            name: "demo-1".into(),
            ready: true,
            ip: Some("10.1.1.1".into()),
            role_label: Some("replica".into()),
            terminating: true,
        }
    );
    let bare: Pod =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "demo-2"}})).unwrap();
    let info = PodInfo::from_pod(&bare);
    assert!(!info.ready && info.ip.is_none() && !info.terminating);
}

#[test]
fn ordinals_belong_to_the_cluster() {
    assert_eq!(ordinal("demo", "demo-3"), Some(3));
    assert_eq!(ordinal("demo", "demo-x"), None);
    assert_eq!(ordinal("demo", "demox-1"), None);
    assert_eq!(ordinal("demo-2", "demo-2-0"), Some(0));
    assert_eq!(member_names("demo", 3), ["demo-0", "demo-1", "demo-2"]);
}

#[test]
fn scale_down_never_drops_the_primary_nor_shrinks_without_one() {
    let pods: Vec<PodInfo> = (0..5).map(|i| pod(&format!("demo-{i}"), true)).collect();
    // Primary within the new size: shrink.
    assert_eq!(effective_replicas("demo", 3, Some("demo-1"), &pods), 3);
    // Primary at ordinal 3: keep it (ordinal 4 may go).
    assert_eq!(effective_replicas("demo", 3, Some("demo-3"), &pods), 4);
    assert_eq!(effective_replicas("demo", 1, Some("demo-4"), &pods), 5);
    // No primary: keep every existing member.
    assert_eq!(effective_replicas("demo", 3, None, &pods), 5);
    // Scale-up is never held back.
    assert_eq!(effective_replicas("demo", 7, Some("demo-4"), &pods), 7);
    assert_eq!(effective_replicas("demo", 3, None, &[]), 3);
}

#[test]
fn failure_timers_start_at_the_first_failure_and_clear_on_recovery() {
    let mut mem = ClusterMemory::default();
    let up = |ready| member("demo-0", Some(node("demo-0", "primary", 2, 10, ready)));
    let obs = observations(&[up(true)], &mut mem, 1_000);
    assert_eq!(obs[0].unhealthy_since_ms, None);
    assert_eq!((obs[0].role, obs[0].term), (Role::Primary, 2));

    let obs = observations(&[member("demo-0", None)], &mut mem, 2_000);
    assert_eq!(obs[0].unhealthy_since_ms, Some(2_000));
    assert!(!obs[0].reachable);
    // The last known log position survives, for loss estimates; the role does not.
    assert_eq!((obs[0].term, obs[0].log_position()), (2, (2, 10)));
    assert_eq!(obs[0].role, Role::Unknown);

    // Still failing later (answers but not ready): the timer keeps its start.
    let obs = observations(&[up(false)], &mut mem, 5_000);
    assert_eq!(obs[0].unhealthy_since_ms, Some(2_000));
    assert!(obs[0].reachable);

    let obs = observations(&[up(true)], &mut mem, 6_000);
    assert_eq!(obs[0].unhealthy_since_ms, None);
    assert!(mem.unhealthy_since.is_empty());
}

#[test]
fn terminating_pods_count_as_unhealthy_and_removed_members_are_forgotten() {
    let mut mem = ClusterMemory::default();
    let mut m = member("demo-1", Some(node("demo-1", "replica", 1, 5, true)));
    m.pod.as_mut().unwrap().terminating = true;
    let obs = observations(&[m], &mut mem, 10);
    assert_eq!(obs[0].unhealthy_since_ms, Some(10));
    observations(&[member("demo-0", None)], &mut mem, 20);
    assert!(!mem.unhealthy_since.contains_key("demo-1"));
    assert!(!mem.last_seen.contains_key("demo-1"));
}

#[test]
fn coordinator_comes_from_status_and_the_switchover_from_memory() {
    let status = ReplicatedClusterStatus {
        term: 4,
        primary: Some("demo-1".into()),
        ..ReplicatedClusterStatus::default()
    };
    let mut mem = ClusterMemory::default();
    let c = coordinator(Some(&status), &mem);
    assert_eq!(
        (c.term, c.primary.as_deref(), c.switchover),
        (4, Some("demo-1"), None)
    );
    assert_eq!(coordinator(None, &mem), Coordinator::default());

    let sw = Switchover {
        from: "demo-1".into(),
        to: "demo-2".into(),
        started_ms: 7,
    };
    mem.switchover = Some((5, sw.clone()));
    let during = ReplicatedClusterStatus {
        term: 5,
        primary: None,
        ..ReplicatedClusterStatus::default()
    };
    assert_eq!(coordinator(Some(&during), &mem).switchover, Some(sw));
    // A remembered switchover of another term is stale (someone else moved the record on).
    let later = ReplicatedClusterStatus {
        term: 6,
        ..ReplicatedClusterStatus::default()
    };
    assert_eq!(coordinator(Some(&later), &mem).switchover, None);
}

#[test]
fn settings_follow_the_spec() {
    let spec: ReplicatedClusterSpec = serde_json::from_value(serde_json::json!({
        "replicas": 2,
        "replication": {"ack": "one"},
        "failover": {"detectionWindow": "2500ms", "allowDataLoss": true}
    }))
    .unwrap();
    let s = settings(&spec, member_names("demo", 2));
    assert_eq!(s.members, ["demo-0", "demo-1"]);
    assert_eq!(s.ack, AckLevel::One);
    assert_eq!(s.detection_window_ms, 2_500);
    assert!(s.allow_lossy_promotion);
    for (mode, level) in [
        (AckMode::Async, AckLevel::Async),
        (AckMode::Quorum, AckLevel::Quorum),
        (AckMode::All, AckLevel::All),
    ] {
        assert_eq!(ack_level(mode), level);
    }
}

#[test]
fn view_lists_members_in_ordinal_order() {
    let spec = ReplicatedClusterSpec::default();
    let members = vec![
        member("demo-0", None),
        member("demo-1", Some(node("demo-1", "replica", 1, 3, true))),
        member("demo-2", Some(node("demo-2", "replica", 1, 3, true))),
    ];
    let mut mem = ClusterMemory::default();
    let v = view(&spec, Coordinator::default(), &members, &mut mem, 99);
    assert_eq!(v.settings.members, ["demo-0", "demo-1", "demo-2"]);
    assert_eq!(v.now_ms, 99);
    let names: Vec<&str> = v.observations.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["demo-0", "demo-1", "demo-2"]);
    assert_eq!(v.settings.detection_window_ms, 10_000);
}
