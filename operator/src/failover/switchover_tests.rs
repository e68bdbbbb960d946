//! One named case per branch of `plan_switchover`, and a switchover driven to the end.

use super::fixtures::*;
use super::*;
use AckLevel::*;

fn healthy() -> ClusterView {
    view(3, Quorum)
        .coord(4, Some("n1"))
        .with(primary("n1", 4, 10))
        .with(replica("n2", 4, 9, "n1"))
        .with(replica("n3", 4, 10, "n1"))
        .now(1_000)
}

fn in_progress(to: &str, started_ms: u64) -> ClusterView {
    let mut v = view(3, Async).coord(5, None).now(100_000);
    v.coordinator.switchover = Some(Switchover {
        from: "n1".into(),
        to: to.into(),
        started_ms,
    });
    v
}

fn quorum_in_progress() -> ClusterView {
    let mut v = in_progress("n2", 90_000);
    v.settings.ack = Quorum;
    v
}

fn begin(to: &str) -> SwitchoverStep {
    SwitchoverStep::Proceed {
        actions: vec![
            Action::BeginSwitchover {
                from: "n1".into(),
                to: to.into(),
                term: 5,
                started_ms: 1_000,
            },
            fence(&["n1"], 5),
        ],
    }
}

fn rejected(problem: SwitchoverProblem) -> SwitchoverStep {
    SwitchoverStep::Rejected { problem }
}

fn abandoned(problem: SwitchoverProblem, actions: Vec<Action>) -> SwitchoverStep {
    SwitchoverStep::Abandoned { problem, actions }
}

#[test]
fn switchover_steps() {
    let mut unhealthy_primary = healthy();
    unhealthy_primary.observations[0].unhealthy_since_ms = Some(500);
    let cases: Vec<(&str, ClusterView, Option<&str>, SwitchoverStep)> = vec![
        (
            "begins by fencing the primary",
            healthy(),
            Some("n2"),
            begin("n2"),
        ),
        (
            "without a target the most advanced replica is chosen",
            healthy(),
            None,
            begin("n3"),
        ),
        (
            "a target that is already primary is done",
            healthy(),
            Some("n1"),
            SwitchoverStep::Done {
                primary: "n1".into(),
                term: 4,
            },
        ),
        (
            "a target outside the members is rejected",
            healthy(),
            Some("n7"),
            rejected(SwitchoverProblem::NotAMember { node: "n7".into() }),
        ),
        (
            "an unreachable target is rejected",
            view(3, Quorum)
                .coord(4, Some("n1"))
                .with(primary("n1", 4, 10))
                .with(down("n2")),
            Some("n2"),
            rejected(SwitchoverProblem::Unreachable { node: "n2".into() }),
        ),
        (
            "a target that does not replicate from the primary is rejected",
            view(3, Quorum)
                .coord(4, Some("n1"))
                .with(primary("n1", 4, 10))
                .with(fenced("n2", 4, 4, 10)),
            Some("n2"),
            rejected(SwitchoverProblem::TargetNotFollowing {
                target: "n2".into(),
            }),
        ),
        (
            "no replica to choose from is rejected",
            view(3, Quorum)
                .coord(4, Some("n1"))
                .with(primary("n1", 4, 10)),
            None,
            rejected(SwitchoverProblem::NoCandidate),
        ),
        (
            "an unhealthy primary is failover's business",
            unhealthy_primary,
            Some("n2"),
            rejected(SwitchoverProblem::NoHealthyPrimary),
        ),
        (
            "no primary at all is failover's business",
            healthy().coord(4, None),
            Some("n2"),
            rejected(SwitchoverProblem::NoHealthyPrimary),
        ),
        (
            "an old primary that missed the fence is fenced again",
            in_progress("n2", 90_000)
                .with(primary("n1", 4, 10))
                .with(replica("n2", 4, 8, "n1")),
            Some("n2"),
            SwitchoverStep::Proceed {
                actions: vec![
                    fence(&["n1"], 5),
                    wait(WaitReason::SwitchoverFencing {
                        primary: "n1".into(),
                    }),
                ],
            },
        ),
        (
            "a target behind the fenced primary is waited for",
            in_progress("n2", 90_000)
                .with(fenced("n1", 5, 4, 10))
                .with(replica("n2", 4, 8, "n1")),
            Some("n2"),
            SwitchoverStep::Proceed {
                actions: vec![wait(WaitReason::SwitchoverCatchingUp {
                    target: "n2".into(),
                    target_index: 8,
                    primary_index: 10,
                })],
            },
        ),
        (
            "a caught-up target is promoted and the rest follow it",
            in_progress("n2", 90_000)
                .with(fenced("n1", 5, 4, 10))
                .with(replica("n2", 5, 10, "n1").log(4, 10))
                .with(replica("n3", 4, 7, "n1")),
            None,
            SwitchoverStep::Proceed {
                actions: vec![
                    promote("n2", 5),
                    follow("n1", "n2", 5),
                    follow("n3", "n2", 5),
                ],
            },
        ),
        (
            "a target that does not catch up in time is abandoned",
            in_progress("n2", 0)
                .with(fenced("n1", 5, 4, 10))
                .with(replica("n2", 4, 8, "n1")),
            Some("n2"),
            abandoned(
                SwitchoverProblem::TimedOut {
                    target: "n2".into(),
                    behind: 2,
                },
                vec![bump(6), fence(&["n1", "n2"], 6)],
            ),
        ),
        (
            "an old primary that disappears abandons the switchover",
            in_progress("n2", 90_000)
                .with(down("n1"))
                .with(replica("n2", 4, 8, "n1")),
            Some("n2"),
            abandoned(
                SwitchoverProblem::Unreachable { node: "n1".into() },
                vec![bump(6), fence(&["n2"], 6)],
            ),
        ),
        (
            "a target that disappears abandons the switchover",
            in_progress("n2", 90_000).with(fenced("n1", 5, 4, 10)),
            Some("n2"),
            abandoned(
                SwitchoverProblem::Unreachable { node: "n2".into() },
                vec![bump(6), fence(&["n1"], 6)],
            ),
        ),
        (
            "an old primary still claiming primary in the new term abandons",
            in_progress("n2", 90_000)
                .with(primary("n1", 5, 10))
                .with(replica("n2", 4, 8, "n1")),
            Some("n2"),
            abandoned(
                SwitchoverProblem::PrimaryNotFenced {
                    primary: "n1".into(),
                },
                vec![bump(6), fence(&["n1", "n2"], 6)],
            ),
        ),
        (
            "a different target while one is in progress is rejected",
            in_progress("n2", 90_000).with(fenced("n1", 5, 4, 10)),
            Some("n3"),
            rejected(SwitchoverProblem::OtherSwitchoverInProgress { to: "n2".into() }),
        ),
        (
            "a lagging target is waited for before writes stop",
            view(3, Quorum)
                .coord(4, Some("n1"))
                .with(primary("n1", 4, 10))
                .with(replica("n2", 4, 3, "n1").unhealthy(500)),
            Some("n2"),
            SwitchoverStep::Proceed {
                actions: vec![wait(WaitReason::SwitchoverCatchingUp {
                    target: "n2".into(),
                    target_index: 3,
                    primary_index: 10,
                })],
            },
        ),
        (
            "at quorum a target behind only the fenced primary is promoted",
            quorum_in_progress()
                .with(fenced("n1", 5, 4, 10))
                .with(replica("n2", 4, 9, "n1"))
                .with(fenced("n3", 5, 4, 9)),
            Some("n2"),
            SwitchoverStep::Proceed {
                actions: vec![
                    promote("n2", 5),
                    follow("n1", "n2", 5),
                    follow("n3", "n2", 5),
                ],
            },
        ),
        (
            // n1 still drains to n3 in term 4: entry 10 reaching n3 completes a quorum and
            // acknowledges a waiting write, which n2 would not have.
            "at quorum a replica the old primary still drains to is fenced first",
            quorum_in_progress()
                .with(fenced("n1", 5, 4, 10))
                .with(replica("n2", 4, 9, "n1"))
                .with(replica("n3", 4, 9, "n1")),
            Some("n2"),
            SwitchoverStep::Proceed {
                actions: vec![
                    fence(&["n3"], 5),
                    wait(WaitReason::SwitchoverCatchingUp {
                        target: "n2".into(),
                        target_index: 9,
                        primary_index: 10,
                    }),
                ],
            },
        ),
        (
            "at quorum a target behind two members waits",
            quorum_in_progress()
                .with(fenced("n1", 5, 4, 10))
                .with(replica("n2", 4, 9, "n1"))
                .with(replica("n3", 4, 10, "n1")),
            Some("n2"),
            SwitchoverStep::Proceed {
                actions: vec![wait(WaitReason::SwitchoverCatchingUp {
                    target: "n2".into(),
                    target_index: 9,
                    primary_index: 10,
                })],
            },
        ),
        (
            "at quorum a silent member may hold what the target lacks",
            quorum_in_progress()
                .with(fenced("n1", 5, 4, 10))
                .with(replica("n2", 4, 9, "n1"))
                .with(down("n3")),
            Some("n2"),
            SwitchoverStep::Proceed {
                actions: vec![wait(WaitReason::SwitchoverCatchingUp {
                    target: "n2".into(),
                    target_index: 9,
                    primary_index: 10,
                })],
            },
        ),
        (
            "invalid input is rejected",
            view(2, Quorum).with(down("n1")).with(down("n1")),
            None,
            rejected(SwitchoverProblem::InvalidInput {
                problem: "member n1 is observed twice".into(),
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (name, view, target, expected) in cases {
        let got = plan_switchover(&view, target);
        if got != expected {
            failures.push(format!(
                "{name}:\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn decide_continues_a_recorded_switchover() {
    let v = in_progress("n2", 90_000)
        .with(fenced("n1", 5, 4, 10))
        .with(replica("n2", 4, 8, "n1"));
    assert_eq!(
        decide(&v),
        vec![wait(WaitReason::SwitchoverCatchingUp {
            target: "n2".into(),
            target_index: 8,
            primary_index: 10,
        })]
    );
}

/// A switchover driven by repeated calls, with the runtime's effects applied by hand. Under
/// load at `quorum`: the target is ready but one entry behind, which only the old primary holds
/// (so it was never acknowledged); once the other replica is fenced (the old primary can no
/// longer drain the entry to it) the target is promoted and the old primary follows it.
#[test]
fn switchover_runs_to_the_end_without_loss() {
    let mut v = view(3, Quorum)
        .coord(4, Some("n1"))
        .with(primary("n1", 4, 10))
        .with(replica("n2", 4, 9, "n1"))
        .with(replica("n3", 4, 9, "n1"));
    let mut steps = Vec::new();
    for _ in 0..10 {
        let actions = match plan_switchover(&v, Some("n2")) {
            SwitchoverStep::Done { primary, term } => {
                assert_eq!((primary.as_str(), term), ("n2", 5));
                assert_eq!(
                    steps,
                    [
                        "begin_switchover",
                        "fence",
                        "fence",
                        "wait",
                        "promote",
                        "follow",
                        "follow"
                    ]
                );
                assert_eq!(v.observations[0].following.as_deref(), Some("n2"));
                assert_eq!(decide(&v), vec![], "the cluster is healthy afterwards");
                return;
            }
            SwitchoverStep::Proceed { actions } => actions,
            other => panic!("unexpected step {other:?}"),
        };
        v.coordinator = v.coordinator.after(&actions);
        for action in &actions {
            let json = serde_json::to_value(action).expect("serializes");
            steps.push(json["action"].as_str().unwrap_or_default().to_string());
            apply(&mut v, action);
        }
        v.now_ms += 100;
    }
    panic!("switchover did not finish: {steps:?}");
}

fn apply(v: &mut ClusterView, action: &Action) {
    let find = |v: &mut ClusterView, name: &str| {
        v.observations
            .iter()
            .position(|o| o.name == name)
            .expect("every member is observed")
    };
    match action {
        Action::Fence { nodes, term } => {
            for n in nodes {
                let i = find(v, n);
                let o = &mut v.observations[i];
                o.term = *term;
                o.role = Role::Fenced;
                o.following = None;
            }
        }
        Action::Promote { node, term } => {
            let i = find(v, node);
            v.observations[i].role = Role::Primary;
            v.observations[i].term = *term;
        }
        Action::Follow {
            node,
            primary,
            term,
        } => {
            let i = find(v, node);
            let o = &mut v.observations[i];
            o.role = Role::Replica;
            o.term = *term;
            o.following = Some(primary.clone());
        }
        _ => {}
    }
}
