use super::*;
use crate::crd::ReplicatedClusterStatus;
use crate::failover::Switchover;

pub fn pod(name: &str, ready: bool) -> PodInfo {
    PodInfo {
        name: name.to_string(),
        ready,
        ip: Some("10.0.0.1".into()),
        role_label: None,
        terminating: false,
        revision: None,
        uid: None,
    }
}

pub fn node(name: &str, role: &str, term: u64, index: u64, ready: bool) -> NodeStatus {
    NodeStatus {
        node: name.to_string(),
        role: role.into(),
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
        error: status
            .is_none()
            .then(|| "no response within 2.0s".to_string()),
        node: status,
        refused: false,
    }
}

#[test]
fn pod_info_reads_readiness_ip_labels_and_deletion() {
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "demo-1", "uid": "uid-1",
                     "labels": {"rcluster.dev/role": "replica", "controller-revision-hash": "demo-7c9d"},
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
            revision: Some("demo-7c9d".into()),
            uid: Some("uid-1".into()),
        }
    );
    let bare: Pod =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "demo-2"}})).unwrap();
    let info = PodInfo::from_pod(&bare);
    assert!(!info.ready && info.ip.is_none() && !info.terminating);
}

fn record(primary: Option<&str>, members: usize, previous: Option<usize>) -> Coordinator {
    Coordinator {
        term: 3,
        primary: primary.map(str::to_string),
        members: member_names("demo", members as i32),
        previous_members: previous.map(|n| member_names("demo", n as i32)),
        ..Coordinator::default()
    }
}

#[test]
fn scale_down_never_drops_the_primary_nor_a_listed_member_nor_shrinks_without_one() {
    let pods: Vec<PodInfo> = (0..5).map(|i| pod(&format!("demo-{i}"), true)).collect();
    // Primary within the new size and the list already shrunk: shrink.
    assert_eq!(
        effective_replicas("demo", 3, &record(Some("demo-1"), 3, None), &pods),
        3
    );
    // The list still names five members (the change is not made yet), or the change that
    // removes two is not committed: keep them.
    assert_eq!(
        effective_replicas("demo", 3, &record(Some("demo-1"), 5, None), &pods),
        5
    );
    assert_eq!(
        effective_replicas("demo", 3, &record(Some("demo-1"), 3, Some(5)), &pods),
        5
    );
    // Primary at ordinal 3: keep it (ordinal 4 may go).
    assert_eq!(
        effective_replicas("demo", 3, &record(Some("demo-3"), 3, None), &pods),
        4
    );
    assert_eq!(
        effective_replicas("demo", 1, &record(Some("demo-4"), 1, None), &pods),
        5
    );
    // No primary: keep every existing member.
    assert_eq!(
        effective_replicas("demo", 3, &record(None, 3, None), &pods),
        5
    );
    // Scale-up is never held back.
    assert_eq!(
        effective_replicas("demo", 7, &record(Some("demo-4"), 5, None), &pods),
        7
    );
    assert_eq!(
        effective_replicas("demo", 3, &record(None, 3, None), &[]),
        3
    );
}

#[test]
fn a_terminating_pod_is_probed_as_unhealthy_and_gone() {
    let mut m = member("demo-1", Some(node("demo-1", "replica", 1, 5, true)));
    let p = m.probe(10);
    assert!(p.healthy && p.ready());
    assert_eq!((p.sent_ms, p.answered_ms), (10, 10));
    m.pod.as_mut().unwrap().terminating = true;
    let p = m.probe(20);
    assert!(
        !p.healthy && p.ready(),
        "the node answers ready, its pod goes away"
    );
    assert!(p.gone, "a pod being deleted is certain to go");
    let silent = member("demo-0", None).probe(30);
    assert!(!silent.healthy && silent.status.is_none());
    assert!(
        !silent.gone,
        "a silent node may be paused: the detection window decides"
    );
    let mut dead = member("demo-0", None);
    dead.refused = true;
    assert!(
        dead.probe(40).gone,
        "nothing listens: its process is not running"
    );
    let mut deleted = member("demo-0", None);
    deleted.pod = None;
    assert!(deleted.probe(50).gone, "no pod, no process");
}

#[test]
fn the_record_comes_from_status_and_a_new_cluster_starts_with_the_spec_members() {
    let initial = member_names("demo", 3);
    let fresh = coordinator(None, &initial);
    assert_eq!((fresh.term, fresh.members.clone()), (0, initial.clone()));
    let status = ReplicatedClusterStatus {
        term: 5,
        primary: None,
        member_list: member_names("demo", 4),
        previous_member_list: Some(initial.clone()),
        switchover: Some(crate::crd::SwitchoverStatus {
            from: "demo-1".into(),
            to: "demo-2".into(),
            started_ms: 7,
        }),
        ..ReplicatedClusterStatus::default()
    };
    let c = coordinator(Some(&status), &initial);
    assert_eq!(
        c.switchover,
        Some(Switchover {
            from: "demo-1".into(),
            to: "demo-2".into(),
            started_ms: 7
        })
    );
    assert_eq!(c.members, member_names("demo", 4));
    assert_eq!(c.previous_members, Some(initial.clone()));
    // A status written before member lists existed: the nodes run with the spec's list.
    let old = ReplicatedClusterStatus {
        term: 2,
        primary: Some("demo-0".into()),
        ..ReplicatedClusterStatus::default()
    };
    assert_eq!(coordinator(Some(&old), &initial).members, initial);
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
    let members = [
        member("demo-0", None),
        member("demo-1", Some(node("demo-1", "replica", 1, 3, true))),
        member("demo-2", Some(node("demo-2", "replica", 1, 3, true))),
    ];
    let probes: Vec<_> = members.iter().map(|m| m.probe(99)).collect();
    let (observations, _) = crate::coordinator::Runtime::new(
        crate::coordinator::FailoverCount::Always,
        Default::default(),
    )
    .observe(&probes, AckLevel::Quorum, 99);
    let v = view("demo", &spec, Coordinator::default(), observations, 99);
    assert_eq!(v.settings.members, ["demo-0", "demo-1", "demo-2"]);
    assert_eq!(v.now_ms, 99);
    let names: Vec<&str> = v.observations.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["demo-0", "demo-1", "demo-2"]);
    assert_eq!(v.settings.detection_window_ms, 10_000);
}
