//! One named case per branch of `decide`.

use super::fixtures::*;
use super::*;
use AckLevel::*;

fn run(cases: Vec<(&str, ClusterView, Vec<Action>)>) {
    let mut failures = Vec::new();
    for (name, view, expected) in cases {
        let got = decide(&view);
        if got != expected {
            failures.push(format!(
                "{name}:\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn steady_state() {
    let healthy = || {
        view(3, Quorum)
            .coord(4, Some("n1"))
            .with(primary("n1", 4, 10))
            .with(replica("n2", 4, 10, "n1"))
    };
    run(vec![
        (
            "healthy cluster needs nothing",
            healthy().with(replica("n3", 4, 9, "n1")),
            vec![],
        ),
        (
            "unreachable replica is left alone",
            healthy().with(down("n3")),
            vec![],
        ),
        (
            "replica following nobody is pointed at the primary",
            healthy().with(fenced("n3", 4, 4, 10)),
            vec![follow("n3", "n1", 4)],
        ),
        (
            "replica in an older term is pointed at the primary",
            healthy().with(replica("n3", 3, 10, "n2")),
            vec![follow("n3", "n1", 4)],
        ),
        (
            "replica following the wrong node is pointed at the primary",
            healthy().with(replica("n3", 4, 10, "n2")),
            vec![follow("n3", "n1", 4)],
        ),
        (
            "recovered old primary of an older term is fenced and follows",
            healthy().with(primary("n3", 3, 12)),
            vec![fence(&["n3"], 4), follow("n3", "n1", 4)],
        ),
        (
            "standalone node counts as a primary claim",
            healthy().with(node_role("n3", Role::Standalone, 2)),
            vec![fence(&["n3"], 4), follow("n3", "n1", 4)],
        ),
        (
            "node of unknown role follows",
            healthy().with(node_role("n3", Role::Unknown, 4)),
            vec![follow("n3", "n1", 4)],
        ),
        (
            "two primaries in the coordinator's term start an election",
            healthy().with(primary("n3", 4, 10)),
            vec![bump(5), fence(&["n1", "n2", "n3"], 5)],
        ),
        (
            "a term the coordinator never handed out starts an election above it",
            healthy().with(replica("n3", 9, 10, "n2")),
            vec![bump(10), fence(&["n1", "n2", "n3"], 10)],
        ),
        (
            "a remembered higher term of an unreachable node counts too",
            healthy().with(replica("n3", 7, 10, "n2").unreachable()),
            vec![bump(8), fence(&["n1", "n2"], 8)],
        ),
    ]);
}

fn node_role(name: &str, role: Role, term: u64) -> Observation {
    let mut o = replica(name, term, 10, "n1");
    o.role = role;
    o.following = None;
    o
}

#[test]
fn failure_detection() {
    let base = || {
        view(3, Quorum)
            .coord(4, Some("n1"))
            .with(replica("n2", 4, 10, "n1"))
            .with(replica("n3", 4, 9, "n1"))
            .now(100_000)
    };
    run(vec![
        (
            "unreachable primary within the window waits",
            base().with(primary("n1", 4, 10).unreachable().unhealthy(98_000)),
            vec![wait(WaitReason::WithinDetectionWindow {
                primary: "n1".into(),
                remaining_ms: 3_000,
            })],
        ),
        (
            "unreachable primary without a start time waits a whole window",
            base().with(down("n1")),
            vec![wait(WaitReason::WithinDetectionWindow {
                primary: "n1".into(),
                remaining_ms: 5_000,
            })],
        ),
        (
            "unobserved primary waits a whole window",
            base(),
            vec![wait(WaitReason::WithinDetectionWindow {
                primary: "n1".into(),
                remaining_ms: 5_000,
            })],
        ),
        (
            "unreachable primary past the window starts an election",
            base().with(primary("n1", 4, 10).unreachable().unhealthy(95_000)),
            vec![bump(5), fence(&["n2", "n3"], 5)],
        ),
        (
            "reachable but unhealthy primary past the window is fenced too",
            base().with(primary("n1", 4, 10).unhealthy(90_000)),
            vec![bump(5), fence(&["n1", "n2", "n3"], 5)],
        ),
        (
            "reachable but unhealthy primary within the window waits",
            base().with(primary("n1", 4, 10).unhealthy(99_000)),
            vec![wait(WaitReason::WithinDetectionWindow {
                primary: "n1".into(),
                remaining_ms: 4_000,
            })],
        ),
        (
            "primary that lost its term (empty disk) is replaced at once",
            base().with(fenced("n1", 0, 0, 0)),
            vec![bump(5), fence(&["n1", "n2", "n3"], 5)],
        ),
        (
            "recorded primary not acting as primary gets a new election, not the same term",
            base().with(fenced("n1", 4, 4, 10)),
            vec![bump(5), fence(&["n1", "n2", "n3"], 5)],
        ),
        (
            "recorded primary behind a follower of its term is not promoted again",
            base().with(fenced("n1", 4, 4, 8)),
            vec![bump(5), fence(&["n1", "n2", "n3"], 5)],
        ),
        // Certain failures are acted on at once, whatever the window says.
        (
            "primary whose pod is going away starts an election at once",
            base().with(primary("n1", 4, 10).gone().unhealthy(99_000)),
            vec![bump(5), fence(&["n1", "n2", "n3"], 5)],
        ),
        (
            "primary going away that no longer answers starts an election at once",
            base().with(primary("n1", 4, 10).gone().unreachable().unhealthy(99_000)),
            vec![bump(5), fence(&["n2", "n3"], 5)],
        ),
        (
            "restarted primary back fenced, not ready yet, starts an election at once",
            base().with(fenced("n1", 4, 4, 10).unhealthy(99_000)),
            vec![bump(5), fence(&["n1", "n2", "n3"], 5)],
        ),
        (
            "restarted primary back fenced and behind a follower starts an election at once",
            base().with(fenced("n1", 4, 4, 8).unhealthy(99_000)),
            vec![bump(5), fence(&["n1", "n2", "n3"], 5)],
        ),
        (
            "unhealthy primary that lost its term is replaced at once",
            base().with(fenced("n1", 0, 0, 0).unhealthy(99_000)),
            vec![bump(5), fence(&["n1", "n2", "n3"], 5)],
        ),
        (
            "primary removed from the members starts an election",
            base().coord(4, Some("n9")).with(primary("n1", 4, 10)),
            vec![bump(5), fence(&["n1", "n2", "n3"], 5)],
        ),
    ]);
}

#[test]
fn elections() {
    let q3 = |term| view(3, Quorum).coord(term, None);
    run(vec![
        (
            "bootstrap starts the first term",
            q3(0)
                .with(fenced("n1", 0, 0, 0))
                .with(fenced("n2", 0, 0, 0)),
            vec![bump(1), fence(&["n1", "n2"], 1)],
        ),
        (
            "bootstrap with empty logs promotes the first responding member",
            q3(1)
                .with(down("n1"))
                .with(fenced("n2", 1, 0, 0))
                .with(fenced("n3", 1, 0, 0)),
            vec![promote("n2", 1), follow("n3", "n2", 1)],
        ),
        (
            "bootstrap promotes the most advanced member",
            q3(1)
                .with(fenced("n1", 1, 0, 0))
                .with(fenced("n2", 1, 0, 0))
                .with(fenced("n3", 1, 0, 3)),
            vec![
                promote("n3", 1),
                follow("n1", "n3", 1),
                follow("n2", "n3", 1),
            ],
        ),
        (
            "the longest log wins",
            q3(5)
                .with(down("n1"))
                .with(fenced("n2", 5, 4, 9))
                .with(fenced("n3", 5, 4, 10)),
            vec![promote("n3", 5), follow("n2", "n3", 5)],
        ),
        (
            "a higher last term beats a longer log",
            q3(5)
                .with(down("n1"))
                .with(fenced("n2", 5, 4, 9))
                .with(fenced("n3", 5, 3, 12)),
            vec![promote("n2", 5), follow("n3", "n2", 5)],
        ),
        (
            "equal logs: the first member wins",
            q3(5)
                .with(down("n1"))
                .with(fenced("n2", 5, 4, 9))
                .with(fenced("n3", 5, 4, 9)),
            vec![promote("n2", 5), follow("n3", "n2", 5)],
        ),
        (
            "equal logs: a healthy member beats an unhealthy one",
            q3(5)
                .with(down("n1"))
                .with(fenced("n2", 5, 4, 9).unhealthy(1))
                .with(fenced("n3", 5, 4, 9)),
            vec![promote("n3", 5), follow("n2", "n3", 5)],
        ),
        (
            "a member going away is passed over while the others are enough",
            q3(5)
                .with(fenced("n1", 5, 4, 11).gone())
                .with(fenced("n2", 5, 4, 9))
                .with(fenced("n3", 5, 4, 10)),
            vec![
                promote("n3", 5),
                follow("n1", "n3", 5),
                follow("n2", "n3", 5),
            ],
        ),
        (
            "a member going away is promoted when the others are too few",
            q3(5)
                .with(fenced("n1", 5, 4, 11).gone())
                .with(fenced("n2", 5, 4, 9))
                .with(down("n3")),
            vec![promote("n1", 5), follow("n2", "n1", 5)],
        ),
        (
            "the old primary is promoted back when it is the best",
            q3(5)
                .with(fenced("n1", 5, 4, 11))
                .with(fenced("n2", 5, 4, 9))
                .with(down("n3")),
            vec![promote("n1", 5), follow("n2", "n1", 5)],
        ),
        (
            "too few responders wait",
            q3(5)
                .with(down("n1"))
                .with(fenced("n2", 5, 4, 9))
                .with(down("n3")),
            vec![wait(WaitReason::TooFewResponders { have: 1, need: 2 })],
        ),
        (
            "members still in an older term are fenced while waiting",
            q3(5)
                .with(down("n1"))
                .with(fenced("n2", 5, 4, 9))
                .with(replica("n3", 4, 9, "n1")),
            vec![
                fence(&["n3"], 5),
                wait(WaitReason::TooFewResponders { have: 1, need: 2 }),
            ],
        ),
        (
            "no responder at all waits",
            q3(5).with(replica("n3", 4, 9, "n1")),
            vec![
                fence(&["n3"], 5),
                wait(WaitReason::TooFewResponders { have: 0, need: 2 }),
            ],
        ),
        (
            "members in an older term follow once a candidate is chosen",
            q3(5)
                .with(primary("n1", 4, 12))
                .with(fenced("n2", 5, 4, 9))
                .with(fenced("n3", 5, 4, 10)),
            vec![
                promote("n3", 5),
                fence(&["n1"], 5),
                follow("n1", "n3", 5),
                follow("n2", "n3", 5),
            ],
        ),
        (
            "an empty log never wins over a longer one",
            q3(5)
                .with(down("n1"))
                .with(fenced("n2", 5, 0, 0))
                .with(fenced("n3", 5, 4, 7)),
            vec![promote("n3", 5), follow("n2", "n3", 5)],
        ),
        (
            "only empty logs answer while a member is known to hold entries",
            q3(5)
                .with(fenced("n1", 4, 4, 7).unreachable())
                .with(fenced("n2", 5, 0, 0))
                .with(fenced("n3", 5, 0, 0)),
            vec![wait(WaitReason::OnlyEmptyLogs { longest_known: 7 })],
        ),
        (
            "a member already primary in the election term is recorded again",
            q3(5).with(primary("n2", 5, 9)).with(fenced("n3", 5, 4, 9)),
            vec![promote("n2", 5), follow("n3", "n2", 5)],
        ),
        (
            "two members primary in the election term start another election",
            q3(5).with(primary("n2", 5, 9)).with(primary("n3", 5, 9)),
            vec![bump(6), fence(&["n2", "n3"], 6)],
        ),
    ]);
}

#[test]
fn ack_levels_set_how_many_must_answer() {
    let lone = |n, ack| view(n, ack).coord(5, None).with(fenced("n2", 5, 4, 9));
    let waits = |have, need| vec![wait(WaitReason::TooFewResponders { have, need })];
    run(vec![
        (
            "all: one responder holds every acknowledged entry",
            lone(3, All),
            vec![promote("n2", 5)],
        ),
        ("quorum of 5: one of 3 needed", lone(5, Quorum), waits(1, 3)),
        (
            "quorum of 5: three responders suffice",
            lone(5, Quorum)
                .with(fenced("n3", 5, 4, 8))
                .with(fenced("n4", 5, 4, 7)),
            vec![
                promote("n2", 5),
                follow("n3", "n2", 5),
                follow("n4", "n2", 5),
            ],
        ),
        ("one of 3: two needed", lone(3, One), waits(1, 2)),
        (
            "one of 3: both replicas suffice",
            lone(3, One).with(fenced("n3", 5, 4, 8)),
            vec![promote("n2", 5), follow("n3", "n2", 5)],
        ),
        (
            "async: every member must answer",
            lone(3, Async).with(fenced("n3", 5, 4, 8)),
            waits(2, 3),
        ),
        (
            "quorum ignores allow_lossy_promotion",
            lone(3, Quorum).lossy(),
            waits(1, 2),
        ),
        (
            "all of 1: the single member",
            view(1, All).coord(1, None).with(fenced("n1", 1, 0, 0)),
            vec![promote("n1", 1)],
        ),
    ]);
}

#[test]
fn lossy_promotion() {
    let base = || view(3, Async).lossy().coord(5, None);
    run(vec![
        (
            "async lossy promotes the best responder and reports the loss",
            base()
                .with(primary("n1", 4, 15).unreachable())
                .with(fenced("n2", 5, 4, 9))
                .with(fenced("n3", 5, 4, 11)),
            vec![
                Action::ReportPossibleLoss {
                    promoted: "n3".into(),
                    longest: Some("n1".into()),
                    entries: Some(4),
                },
                promote("n3", 5),
                follow("n2", "n3", 5),
            ],
        ),
        (
            "an unknown old position reports an unknown loss",
            base()
                .with(down("n1"))
                .with(fenced("n2", 5, 4, 9))
                .with(fenced("n3", 5, 4, 11)),
            vec![
                Action::ReportPossibleLoss {
                    promoted: "n3".into(),
                    longest: None,
                    entries: None,
                },
                promote("n3", 5),
                follow("n2", "n3", 5),
            ],
        ),
        (
            "lossy promotion first hears from every reachable member",
            base()
                .with(down("n1"))
                .with(fenced("n2", 5, 4, 9))
                .with(replica("n3", 4, 11, "n1")),
            vec![
                fence(&["n3"], 5),
                wait(WaitReason::FencePending {
                    nodes: vec!["n3".into()],
                }),
            ],
        ),
        (
            "one lossy with a single responder",
            view(3, One)
                .lossy()
                .coord(5, None)
                .with(down("n1"))
                .with(fenced("n2", 5, 4, 9))
                .with(down("n3")),
            vec![
                Action::ReportPossibleLoss {
                    promoted: "n2".into(),
                    longest: None,
                    entries: None,
                },
                promote("n2", 5),
            ],
        ),
        (
            "lossy never promotes an empty log over a known longer one",
            base()
                .with(primary("n1", 4, 15).unreachable())
                .with(fenced("n2", 5, 0, 0)),
            vec![wait(WaitReason::OnlyEmptyLogs { longest_known: 15 })],
        ),
        (
            "lossy with nobody answering waits",
            base().with(down("n1")),
            vec![wait(WaitReason::TooFewResponders { have: 0, need: 3 })],
        ),
    ]);
}

#[test]
fn invalid_input_is_reported_not_panicked() {
    let invalid = |problem: &str| {
        vec![wait(WaitReason::InvalidInput {
            problem: problem.into(),
        })]
    };
    let mut no_members = view(1, Quorum);
    no_members.settings.members.clear();
    let mut twice = view(2, Quorum);
    twice.settings.members[1] = "n1".into();
    let mut empty_name = view(2, Quorum);
    empty_name.settings.members[0] = String::new();
    run(vec![
        (
            "no members",
            no_members,
            invalid("the cluster has no members"),
        ),
        (
            "member listed twice",
            twice,
            invalid("member n1 is listed twice"),
        ),
        (
            "empty member name",
            empty_name,
            invalid("member 0 has an empty name"),
        ),
        (
            "member observed twice",
            view(2, Quorum)
                .with(fenced("n1", 0, 0, 0))
                .with(fenced("n1", 0, 0, 0)),
            invalid("member n1 is observed twice"),
        ),
        (
            "observations of non-members are ignored",
            view(1, Quorum)
                .coord(1, Some("n1"))
                .with(primary("n1", 1, 3))
                .with(primary("x", 9, 3)),
            vec![],
        ),
    ]);
}

#[test]
fn coordinator_record_follows_the_actions() {
    let start = Coordinator {
        term: 4,
        primary: Some("n1".into()),
        ..Coordinator::default()
    };
    let bumped = start.after(&[bump(5), fence(&["n2"], 5)]);
    assert_eq!((bumped.term, bumped.primary.clone()), (5, None));
    let promoted = bumped.after(&[promote("n2", 5), follow("n3", "n2", 5)]);
    assert_eq!(
        (promoted.term, promoted.primary.as_deref()),
        (5, Some("n2"))
    );
    assert_eq!(start.after(&[follow("n3", "n1", 4)]), start);
}

#[test]
fn observation_reads_node_status_json() {
    let status = r#"{"node":"n2","role":"replica","term":3,"primary":"n1","last_log_index":7,
        "last_log_term":3,"commit_index":7,"applied_index":7,"snapshot_index":0,"records":2,
        "topics":0,"digest":"x","ready":true,"members":[]}"#;
    let o: Observation = serde_json::from_str(status).expect("status parses");
    assert_eq!(o.name, "n2");
    assert_eq!(
        (o.role, o.term, o.log_position()),
        (Role::Replica, 3, (3, 7))
    );
    assert!(o.reachable);
    let odd: Observation = serde_json::from_str(r#"{"name":"n1","role":"leader"}"#).unwrap();
    assert_eq!(odd.role, Role::Unknown);
}

#[test]
fn actions_serialize_with_a_tag() {
    let json = serde_json::to_value(wait(WaitReason::TooFewResponders { have: 1, need: 2 }))
        .expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({"action":"wait","reason":{"code":"too_few_responders","have":1,"need":2}})
    );
    let back: Action = serde_json::from_value(json).expect("round-trips");
    assert_eq!(
        back,
        wait(WaitReason::TooFewResponders { have: 1, need: 2 })
    );
}

#[test]
fn write_and_failover_quorums() {
    let table = [
        (Async, 3, 1, 3),
        (One, 1, 1, 1),
        (One, 3, 2, 2),
        (Quorum, 1, 1, 1),
        (Quorum, 2, 2, 1),
        (Quorum, 3, 2, 2),
        (Quorum, 4, 3, 2),
        (Quorum, 5, 3, 3),
        (All, 3, 3, 1),
    ];
    for (ack, n, write, failover) in table {
        assert_eq!(ack.write_quorum(n), write, "{ack:?} write quorum of {n}");
        assert_eq!(
            ack.failover_quorum(n),
            failover,
            "{ack:?} failover quorum of {n}"
        );
    }
}
