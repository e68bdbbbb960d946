use super::*;
use crate::controller::observe::tests::{member, node};
use crate::crd::ReplicatedClusterSpec;
use crate::failover::Action;
use crate::failover::SwitchoverOutcome as Outcome;

fn cluster(status: Option<ReplicatedClusterStatus>) -> ReplicatedCluster {
    let mut c = ReplicatedCluster::new("demo", ReplicatedClusterSpec::default());
    c.metadata.namespace = Some("shop".into());
    c.metadata.generation = Some(3);
    c.status = status;
    c
}

fn record(term: u64, primary: Option<&str>) -> Coordinator {
    Coordinator {
        term,
        primary: primary.map(str::to_string),
        members: vec!["demo-0".into(), "demo-1".into(), "demo-2".into()],
        ..Coordinator::default()
    }
}

fn plan(actions: Vec<Action>) -> Plan {
    Plan {
        actions,
        switchover: Outcome::None,
        failover_disabled: false,
        request: None,
        clear: Vec::new(),
    }
}

fn healthy_members() -> Vec<Member> {
    let mut p = node("demo-0", "primary", 2, 40, true);
    p.commit_index = 40;
    vec![
        member("demo-0", Some(p)),
        member("demo-1", Some(node("demo-1", "replica", 2, 40, true))),
        member("demo-2", Some(node("demo-2", "replica", 2, 35, true))),
    ]
}

fn build_at(
    c: &ReplicatedCluster,
    rec: &Coordinator,
    members: &[Member],
    p: &Plan,
    failing_over: bool,
    now_ms: u64,
) -> ReplicatedClusterStatus {
    build(&Input {
        cluster: c,
        record: rec,
        members,
        plan: p,
        failing_over,
        updated: None,
        last_failover: None,
        now: time_from_ms(now_ms),
    })
}

fn cond<'a>(s: &'a ReplicatedClusterStatus, type_: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

fn summary(s: &ReplicatedClusterStatus) -> Vec<(String, String, String)> {
    s.conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect()
}

fn triple(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.to_string(), s.to_string(), r.to_string())
}

#[test]
fn healthy_cluster_is_running() {
    let c = cluster(None);
    let s = build_at(
        &c,
        &record(2, Some("demo-0")),
        &healthy_members(),
        &plan(vec![]),
        false,
        1_000,
    );
    assert_eq!(s.phase, Some(Phase::Running));
    assert_eq!((s.term, s.primary.as_deref()), (2, Some("demo-0")));
    assert_eq!((s.replicas, s.ready_replicas), (3, 3));
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(
        s.selector.as_deref(),
        Some(
            "app.kubernetes.io/component=node,app.kubernetes.io/instance=demo,app.kubernetes.io/name=rcluster"
        )
    );
    assert_eq!(
        summary(&s),
        [
            triple("Ready", "True", "AllMembersReady"),
            triple("Available", "True", "PrimaryReady"),
            triple("FailingOver", "False", "Stable"),
            triple("Degraded", "False", "AllMembersReady"),
        ]
    );
    let roles: Vec<(MemberRole, i64, i64)> = s
        .members
        .iter()
        .map(|m| (m.role, m.applied_index, m.lag_entries))
        .collect();
    assert_eq!(
        roles,
        [
            (MemberRole::Primary, 40, 0),
            (MemberRole::Replica, 40, 0),
            (MemberRole::Replica, 35, 5)
        ]
    );
    assert!(cond(&s, "Ready").observed_generation == Some(3));
    assert_eq!(cond(&s, "Ready").last_transition_time, time_from_ms(1_000));
}

#[test]
fn a_missing_replica_degrades() {
    let c = cluster(None);
    let mut m = healthy_members();
    m[2] = member("demo-2", None);
    m[2].pod = None;
    let s = build_at(
        &c,
        &record(2, Some("demo-0")),
        &m,
        &plan(vec![]),
        false,
        1_000,
    );
    assert_eq!(s.phase, Some(Phase::Degraded));
    assert_eq!((s.replicas, s.ready_replicas), (2, 2));
    assert_eq!(cond(&s, "Degraded").status, "True");
    assert_eq!(cond(&s, "Degraded").message, "not ready: demo-2");
    assert_eq!(cond(&s, "Ready").status, "False");
    assert_eq!(cond(&s, "Available").status, "True");
    assert_eq!(s.members[2].role, MemberRole::Unknown);
}

#[test]
fn a_new_cluster_is_pending_while_electing() {
    let c = cluster(None);
    let m = vec![member("demo-0", None), member("demo-1", None)];
    let s = build_at(&c, &record(1, None), &m, &plan(vec![]), false, 1_000);
    assert_eq!(s.phase, Some(Phase::Pending));
    assert_eq!(cond(&s, "Available").reason, "NoPrimary");
    // Not a failover: there never was a primary.
    assert_eq!(cond(&s, "FailingOver").status, "False");
}

#[test]
fn a_failing_primary_makes_the_cluster_unavailable_then_failing_over() {
    let had = ReplicatedClusterStatus {
        phase: Some(Phase::Running),
        primary: Some("demo-0".into()),
        term: 2,
        ..ReplicatedClusterStatus::default()
    };
    let c = cluster(Some(had));
    let mut m = healthy_members();
    m[0] = member("demo-0", None);
    let waiting = plan(vec![Action::Wait {
        reason: WaitReason::WithinDetectionWindow {
            primary: "demo-0".into(),
            remaining_ms: 400,
        },
    }]);
    let s = build_at(&c, &record(2, Some("demo-0")), &m, &waiting, false, 1_000);
    assert_eq!(s.phase, Some(Phase::Unavailable));
    assert_eq!(cond(&s, "Available").reason, "PrimaryNotReady");
    assert!(
        cond(&s, "Available").message.contains("failover in 400 ms"),
        "{}",
        cond(&s, "Available").message
    );

    let s = build_at(&c, &record(3, None), &m, &plan(vec![]), true, 2_000);
    assert_eq!(s.phase, Some(Phase::FailingOver));
    assert_eq!(cond(&s, "FailingOver").status, "True");
    assert_eq!(cond(&s, "FailingOver").reason, "ElectionInProgress");
    assert_eq!((s.term, s.primary.as_deref()), (3, None));
}

#[test]
fn too_few_responders_is_reported() {
    let c = cluster(Some(ReplicatedClusterStatus {
        phase: Some(Phase::FailingOver),
        term: 3,
        ..ReplicatedClusterStatus::default()
    }));
    let m = vec![
        member("demo-0", None),
        member("demo-1", Some(node("demo-1", "fenced", 3, 40, false))),
        member("demo-2", None),
    ];
    let p = plan(vec![Action::Wait {
        reason: WaitReason::TooFewResponders { have: 1, need: 2 },
    }]);
    let s = build_at(&c, &record(3, None), &m, &p, true, 1_000);
    assert_eq!(s.phase, Some(Phase::Unavailable));
    assert_eq!(cond(&s, "FailingOver").status, "True");
    assert_eq!(cond(&s, "FailingOver").reason, "WaitingForQuorum");
    assert_eq!(cond(&s, "Available").reason, "WaitingForQuorum");
    assert!(
        cond(&s, "Available")
            .message
            .starts_with("1 member(s) answered"),
        "{}",
        cond(&s, "Available").message
    );
}

#[test]
fn disabled_failover_is_reported() {
    let c = cluster(Some(ReplicatedClusterStatus {
        phase: Some(Phase::Running),
        primary: Some("demo-0".into()),
        term: 2,
        ..ReplicatedClusterStatus::default()
    }));
    let mut m = healthy_members();
    m[0] = member("demo-0", None);
    let mut p = plan(vec![]);
    p.failover_disabled = true;
    let s = build_at(&c, &record(2, Some("demo-0")), &m, &p, false, 1_000);
    assert_eq!(s.phase, Some(Phase::Unavailable));
    assert_eq!(cond(&s, "Available").reason, "FailoverDisabled");
}

#[test]
fn transition_times_move_only_when_a_condition_flips() {
    let rec = record(2, Some("demo-0"));
    let first = build_at(
        &cluster(None),
        &rec,
        &healthy_members(),
        &plan(vec![]),
        false,
        1_000,
    );
    let c = cluster(Some(first.clone()));
    // Same state later: identical status, so the controller writes nothing.
    let again = build_at(&c, &rec, &healthy_members(), &plan(vec![]), false, 9_000);
    assert_eq!(again, first);

    let mut m = healthy_members();
    m[1].node.as_mut().unwrap().ready = false;
    let flipped = build_at(&c, &rec, &m, &plan(vec![]), false, 9_000);
    assert_eq!(
        cond(&flipped, "Ready").last_transition_time,
        time_from_ms(9_000)
    );
    assert_eq!(
        cond(&flipped, "Degraded").last_transition_time,
        time_from_ms(9_000)
    );
    assert_eq!(
        cond(&flipped, "Available").last_transition_time,
        time_from_ms(1_000)
    );
}

#[test]
fn last_failover_is_kept_until_replaced() {
    let lf = LastFailover {
        time: time_from_ms(5),
        from: "demo-0".into(),
        to: "demo-1".into(),
        term: 3,
        duration_ms: 1200,
        entries_lost: 0,
    };
    let c = cluster(Some(ReplicatedClusterStatus {
        last_failover: Some(lf.clone()),
        ..ReplicatedClusterStatus::default()
    }));
    let s = build_at(
        &c,
        &record(2, Some("demo-0")),
        &healthy_members(),
        &plan(vec![]),
        false,
        1_000,
    );
    assert_eq!(s.last_failover, Some(lf));
}

#[test]
fn member_changes_and_outdated_member_lists_degrade() {
    let c = cluster(None);
    let list = |names: &[&str]| -> Vec<rcluster_proto::MemberReport> {
        names
            .iter()
            .map(|n| rcluster_proto::MemberReport {
                name: n.to_string(),
                ..Default::default()
            })
            .collect()
    };
    let three = ["demo-0", "demo-1", "demo-2"];
    let four = ["demo-0", "demo-1", "demo-2", "demo-3"];
    let mut m = healthy_members();
    for x in &mut m {
        x.node.as_mut().unwrap().members = list(&three);
    }
    let mut rec = record(2, Some("demo-0"));
    let s = build_at(&c, &rec, &m, &plan(vec![]), false, 1_000);
    assert_eq!(s.phase, Some(Phase::Running));
    assert_eq!(s.member_list, three);

    // Scaled up to four: the new pod has no node yet, then runs but is not listed yet.
    m.push(member("demo-3", None));
    m[3].pod = None;
    let s = build_at(&c, &rec, &m, &plan(vec![]), false, 1_000);
    assert_eq!(cond(&s, "Degraded").reason, "MembersNotReady");
    m[3] = member("demo-3", Some(node("demo-3", "replica", 2, 40, true)));
    let s = build_at(&c, &rec, &m, &plan(vec![]), false, 1_000);
    assert_eq!(s.phase, Some(Phase::Degraded));
    assert_eq!(cond(&s, "Degraded").reason, "MembersChanging");

    // The change is recorded but not committed.
    rec.members = four.iter().map(|n| n.to_string()).collect();
    rec.previous_members = Some(three.iter().map(|n| n.to_string()).collect());
    for x in &mut m {
        x.node.as_mut().unwrap().members = list(&four);
    }
    let s = build_at(&c, &rec, &m, &plan(vec![]), false, 1_000);
    assert_eq!(cond(&s, "Degraded").reason, "MembersChanging");
    assert_eq!(
        s.previous_member_list.as_deref(),
        Some(&three.map(String::from)[..])
    );

    // Committed; a node that missed the list is reported until it is told again.
    rec.previous_members = None;
    let s = build_at(&c, &rec, &m, &plan(vec![]), false, 1_000);
    assert_eq!(s.phase, Some(Phase::Running));
    m[1].node.as_mut().unwrap().members = list(&three);
    let s = build_at(&c, &rec, &m, &plan(vec![]), false, 1_000);
    assert_eq!(cond(&s, "Degraded").reason, "MemberListOutdated");
    assert!(cond(&s, "Degraded").message.starts_with("demo-1 report"));
}
