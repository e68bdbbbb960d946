use super::*;
use crate::failover::{AckLevel, Coordinator, Observation, Role, Settings, SwitchoverProblem};
use crate::nodes::NodeStatus;

type Outcome = SwitchoverOutcome;

fn obs(name: &str, role: Role, term: u64, index: u64, following: Option<&str>) -> Observation {
    Observation {
        name: name.to_string(),
        reachable: true,
        role,
        term,
        last_log_term: term,
        last_log_index: index,
        applied_index: index,
        following: following.map(str::to_string),
        unhealthy_since_ms: None,
        gone: false,
        members: Vec::new(),
        term_start: 0,
        commit_by_ack: None,
    }
}

fn view(n: usize, term: u64, primary: Option<&str>, observations: Vec<Observation>) -> ClusterView {
    ClusterView {
        settings: Settings {
            members: (0..n).map(|i| format!("demo-{i}")).collect(),
            ack: AckLevel::Quorum,
            detection_window_ms: 1_000,
            allow_lossy_promotion: false,
            switchover_timeout_ms: 10_000,
        },
        coordinator: Coordinator {
            term,
            primary: primary.map(str::to_string),
            ..Coordinator::default()
        },
        observations,
        now_ms: 50_000,
    }
}

/// demo-0 primary of term 3; the others replicate it, demo-2 the furthest.
fn healthy(n: usize) -> ClusterView {
    let mut o = vec![obs("demo-0", Role::Primary, 3, 20, Some("demo-0"))];
    for i in 1..n {
        o.push(obs(
            &format!("demo-{i}"),
            Role::Replica,
            3,
            10 + i as u64,
            Some("demo-0"),
        ));
    }
    view(n, 3, Some("demo-0"), o)
}

fn probe_of(o: &Observation) -> Probe {
    let role = match o.role {
        Role::Primary | Role::Replica => o.role,
        _ => Role::Fenced,
    };
    Probe {
        name: o.name.clone(),
        status: o.reachable.then(|| NodeStatus {
            node: o.name.clone(),
            role,
            term: o.term,
            last_log_term: o.last_log_term,
            last_log_index: o.last_log_index,
            following: o.following.clone(),
            ready: o.unhealthy_since_ms.is_none(),
            ..NodeStatus::default()
        }),
        healthy: o.reachable && o.unhealthy_since_ms.is_none(),
        ..Probe::default()
    }
}

fn probes(v: &ClusterView) -> Vec<Probe> {
    v.observations.iter().map(probe_of).collect()
}

fn asked(target: &str) -> Option<Request> {
    Some(Request {
        target: Some(target.to_string()).filter(|t| !t.is_empty()),
        source: Source::Annotation,
    })
}

#[test]
fn an_asked_switchover_comes_before_a_node_request() {
    let v = healthy(3);
    let mut p = probes(&v);
    assert_eq!(select(&v, asked("demo-2"), &p), asked("demo-2"));
    assert_eq!(select(&v, None, &p), None);
    p[0].status.as_mut().unwrap().switchover_request =
        Some(crate::nodes::SwitchoverRequest { to: None, at_ms: 5 });
    assert_eq!(select(&v, asked("demo-2"), &p), asked("demo-2"));
    assert_eq!(
        select(&v, None, &p),
        Some(Request {
            target: None,
            source: Source::Node
        })
    );
}

#[test]
fn scale_down_hands_the_primary_to_the_best_replica_that_stays() {
    let mut v = healthy(5);
    // The desired members are demo-0..2.
    v.settings.members.truncate(3);
    v.coordinator.primary = Some("demo-4".into());
    for o in &mut v.observations {
        o.role = Role::Replica;
        o.following = Some("demo-4".into());
    }
    v.observations[4].role = Role::Primary;
    v.observations[0].last_log_index = 5;
    v.observations[0].last_log_term = 3;
    v.observations[3].last_log_index = 99; // ahead, but removed by the scale-down
    let p = probes(&v);
    assert_eq!(
        select(&v, asked("demo-3"), &p),
        Some(Request {
            target: Some("demo-2".into()),
            source: Source::ScaleDown
        })
    );
    // No replica that stays is ready to take over: nothing starts (the scale-down waits).
    for o in &mut v.observations[..3] {
        o.unhealthy_since_ms = Some(1);
    }
    assert_eq!(select(&v, None, &probes(&v)), None);
}

#[test]
fn without_a_request_the_failover_rules_decide() {
    let v = healthy(3);
    let p = plan(&v, None, &probes(&v), true);
    assert_eq!(p.actions, crate::failover::decide(&v));
    assert_eq!(p.switchover, Outcome::None);
    assert!(!p.failover_disabled && p.in_place());
}

#[test]
fn disabled_failover_only_reports() {
    let mut v = healthy(3);
    v.observations[0].reachable = false;
    v.observations[0].unhealthy_since_ms = Some(1);
    let enabled = plan(&v, None, &[], true);
    assert!(matches!(enabled.actions[0], Action::BumpTerm { to: 4 }));
    let disabled = plan(&v, None, &[], false);
    assert!(disabled.actions.is_empty());
    assert!(disabled.failover_disabled);

    // The first election of a new cluster is not a failover: it runs regardless.
    let fresh = view(3, 0, None, vec![obs("demo-0", Role::Fenced, 0, 0, None)]);
    let p = plan(&fresh, None, &[], false);
    assert!(matches!(p.actions[0], Action::BumpTerm { to: 1 }));
    assert!(!p.failover_disabled);
}

#[test]
fn switchover_starts_by_fencing_the_primary_in_a_new_term() {
    let v = healthy(3);
    let p = plan(&v, asked("demo-1"), &[], true);
    assert_eq!(
        p.switchover,
        Outcome::Started {
            from: "demo-0".into(),
            to: "demo-1".into()
        }
    );
    assert_eq!(p.request, asked("demo-1"));
    assert!(matches!(
        &p.actions[0],
        Action::BeginSwitchover { term: 4, .. }
    ));
    assert!(matches!(&p.actions[1], Action::Fence { nodes, term: 4 } if nodes == &["demo-0"]));
}

#[test]
fn switchover_to_the_primary_is_done_and_bad_targets_are_rejected() {
    let v = healthy(3);
    let done = plan(&v, asked("demo-0"), &[], true);
    assert_eq!(
        done.switchover,
        Outcome::Done {
            primary: "demo-0".into()
        }
    );
    let rejected = plan(&v, asked("demo-7"), &[], true);
    assert!(matches!(
        rejected.switchover,
        Outcome::Rejected(SwitchoverProblem::NotAMember { .. })
    ));
    assert_eq!(rejected.actions, crate::failover::decide(&v));
}

#[test]
fn switchover_waits_for_a_primary() {
    // An election is in progress: the request stays, the election goes on.
    let v = view(
        3,
        4,
        None,
        vec![
            obs("demo-0", Role::Fenced, 4, 20, None),
            obs("demo-1", Role::Fenced, 4, 20, None),
            obs("demo-2", Role::Fenced, 4, 20, None),
        ],
    );
    let p = plan(&v, asked("demo-2"), &[], true);
    assert_eq!(p.switchover, Outcome::Deferred);
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Promote { .. }))
    );
}

#[test]
fn a_recorded_switchover_goes_on_until_the_target_is_promoted() {
    let mut v = view(
        3,
        4,
        None,
        vec![
            obs("demo-0", Role::Fenced, 4, 20, None),
            obs("demo-1", Role::Replica, 3, 20, Some("demo-0")),
            obs("demo-2", Role::Replica, 3, 18, Some("demo-0")),
        ],
    );
    v.observations[0].last_log_term = 3;
    v.observations[1].last_log_term = 3;
    v.observations[2].last_log_term = 3;
    v.coordinator.switchover = Some(crate::failover::Switchover {
        from: "demo-0".into(),
        to: "demo-1".into(),
        started_ms: 49_000,
    });
    let p = plan(&v, None, &[], true);
    assert_eq!(
        p.switchover,
        Outcome::Continuing {
            to: "demo-1".into()
        }
    );
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Promote { node, term: 4 } if node == "demo-1"))
    );
}

fn with_requests(v: &ClusterView, on: &[(usize, &str)]) -> Vec<Probe> {
    let mut p = probes(v);
    for (i, to) in on {
        p[*i].status.as_mut().unwrap().switchover_request = Some(crate::nodes::SwitchoverRequest {
            to: Some(to.to_string()),
            at_ms: 5,
        });
    }
    p
}

#[test]
fn a_request_on_the_primary_node_is_used_up_once_acted_on() {
    let v = healthy(3);
    let p = with_requests(&v, &[(0, "demo-2"), (1, "demo-1")]);
    let req = select(&v, None, &p).unwrap();
    assert_eq!(
        req,
        Request {
            target: Some("demo-2".into()),
            source: Source::Node
        }
    );
    let used = |outcome: &Outcome, req: Option<&Request>| -> Vec<String> {
        used_node_requests(&p, Some("demo-0"), req, outcome)
    };
    // Started, finished or refused: the primary's request is used up. A replica's request is
    // never acted on and always goes.
    let started = Outcome::Started {
        from: "demo-0".into(),
        to: "demo-2".into(),
    };
    assert_eq!(used(&started, Some(&req)), ["demo-0", "demo-1"]);
    let refused = Outcome::Rejected(SwitchoverProblem::NoCandidate);
    assert_eq!(used(&refused, Some(&req)), ["demo-0", "demo-1"]);
    // The target is not ready yet, or there is no healthy primary: the request stays.
    assert_eq!(used(&Outcome::Waiting, Some(&req)), ["demo-1"]);
    assert_eq!(used(&Outcome::Deferred, Some(&req)), ["demo-1"]);
    // An asked switchover goes first: the node's request waits its turn.
    let annotated = select(&v, asked("demo-1"), &p).unwrap();
    assert_eq!(annotated.source, Source::Annotation);
    assert_eq!(used(&started, Some(&annotated)), ["demo-1"]);
    // The whole step: started, so both requests are used up.
    let step = plan(&v, None, &p, true);
    assert_eq!(step.request, Some(req));
    assert_eq!(step.clear, ["demo-0", "demo-1"]);
}

#[test]
fn a_request_on_an_unhealthy_primary_is_kept_until_it_recovers() {
    // demo-0 answers with the request but is not ready (cut off from its replicas): there is no
    // healthy primary to hand over from, and no failover before the detection window ends.
    let mut v = healthy(3);
    v.observations[0].unhealthy_since_ms = Some(49_900);
    let p = with_requests(&v, &[(0, "demo-1")]);
    let step = plan(&v, None, &p, true);
    assert_eq!(step.switchover, Outcome::Deferred);
    assert!(step.clear.is_empty(), "{:?}", step.clear);
    assert!(
        step.waits()
            .any(|w| matches!(w, WaitReason::WithinDetectionWindow { .. })),
        "{:?}",
        step.actions
    );
    // Recovered: the switchover starts, and the request is used up.
    v.observations[0].unhealthy_since_ms = None;
    let p = with_requests(&v, &[(0, "demo-1")]);
    let step = plan(&v, None, &p, true);
    assert!(matches!(step.switchover, Outcome::Started { .. }));
    assert_eq!(step.clear, ["demo-0"]);
}
