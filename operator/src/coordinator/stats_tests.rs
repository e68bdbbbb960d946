use super::*;
use crate::failover::SwitchoverProblem;
use crate::nodes::{CommitByAck, NodeStatus};

fn st(role: &str, term: u64, last: (u64, u64), quorum: u64, discarded: u64) -> NodeStatus {
    NodeStatus {
        node: "x".into(),
        role: role.into(),
        term,
        last_log_term: last.0,
        last_log_index: last.1,
        ready: true,
        entries_discarded: discarded,
        commit_by_ack: (role == "primary").then_some(CommitByAck {
            quorum,
            ..CommitByAck::default()
        }),
        ..NodeStatus::default()
    }
}

fn probe(name: &str, status: Option<NodeStatus>, at: u64, restarts: u64) -> Probe {
    Probe {
        name: name.into(),
        healthy: status.as_ref().is_some_and(|s| s.ready),
        status,
        sent_ms: at,
        answered_ms: at,
        restarts,
        ..Probe::default()
    }
}

fn plan_of(actions: Vec<Action>, switchover: SwitchoverOutcome) -> Plan {
    Plan {
        actions,
        switchover,
        failover_disabled: false,
        request: None,
        clear: Vec::new(),
    }
}

fn led_by(primary: &str, term: u64) -> Coordinator {
    Coordinator {
        term,
        primary: Some(primary.into()),
        ..Coordinator::default()
    }
}

fn promoted(node: &str, term: u64, after: NodeStatus) -> CommandResult {
    CommandResult {
        op: "promote",
        node: node.into(),
        term,
        primary: None,
        outcome: Ok(after),
    }
}

/// n1 seen healthy at 1 000, failing from 1 050.
fn memory_with_failed_n1() -> Memory {
    let mut m = Memory::default();
    m.observe(&[probe(
        "n1",
        Some(st("primary", 2, (2, 50), 48, 1)),
        1_000,
        0,
    )]);
    m.observe(&[probe("n1", None, 1_050, 0)]);
    m
}

#[test]
fn measures_a_failover_from_the_last_good_probe_and_the_first_failed_one() {
    let memory = memory_with_failed_n1();
    let mut s = Stats::new(FailoverCount::SeenHealthy, History::default());
    let bump = |to| plan_of(vec![Action::BumpTerm { to }], SwitchoverOutcome::None);
    s.decided(&led_by("n1", 2), &bump(3), &memory, 2_000);
    assert!(s.failing_over());
    // A second bump in the same election keeps the start.
    s.decided(&Coordinator::default(), &bump(4), &memory, 2_100);
    let done = s.promoted(
        &Coordinator {
            term: 4,
            ..Coordinator::default()
        },
        &[promoted("n2", 4, st("primary", 4, (4, 51), 50, 0))],
        2_200,
    );
    let f = done.failover.expect("a failover completed");
    assert_eq!(
        (f.promotion_ms, f.duration_ms()),
        (Some(1_200), Some(1_150))
    );
    assert_eq!(s.history.failovers_total, 1);
    assert!(!s.failing_over());

    let new_primary = probe("n2", Some(st("primary", 4, (4, 51), 50, 0)), 2_300, 0);
    let old_back = probe("n1", Some(st("replica", 4, (4, 51), 0, 3)), 2_300, 1);
    assert_eq!(s.measure(&[], AckLevel::Quorum, 2_300), Measured::default());
    let m = s.measure(&[new_primary, old_back.clone()], AckLevel::Quorum, 2_400);
    assert_eq!(
        m,
        Measured {
            first_write_ms: None,
            discarded: Some(3)
        }
    );
    let committed = probe("n2", Some(st("primary", 4, (4, 51), 51, 0)), 2_500, 0);
    let m = s.measure(&[committed, old_back], AckLevel::Quorum, 2_500);
    assert_eq!(m.first_write_ms, Some(1_500));
    let last = s.history.last_failover.clone().unwrap();
    assert_eq!(
        (last.from.as_str(), last.to.as_deref(), last.term),
        ("n1", Some("n2"), 4)
    );
    assert_eq!(
        (
            last.last_seen_ms,
            last.failing_since_ms,
            last.detection_ms,
            last.promoted_at_ms,
            last.time_to_first_write_ms
        ),
        (Some(1_000), 1_050, Some(1_000), Some(2_200), Some(1_500))
    );
    // It restarted, so its counter started from zero again.
    assert_eq!(last.entries_discarded, Some(3));
    assert!(s.pending.is_none());
}

#[test]
fn a_primary_never_seen_healthy_counts_only_for_a_runtime_that_did_not_start_it() {
    let mut memory = Memory::default();
    memory.observe(&[probe("n1", None, 500, 0)]);
    let bump = plan_of(vec![Action::BumpTerm { to: 3 }], SwitchoverOutcome::None);
    let mut playground = Stats::new(FailoverCount::SeenHealthy, History::default());
    playground.decided(&led_by("n1", 2), &bump, &memory, 2_000);
    assert!(!playground.failing_over());
    assert_eq!(playground.history.last_failover, None);

    let mut controller = Stats::new(FailoverCount::Always, History::default());
    controller.decided(&led_by("n1", 2), &bump, &memory, 2_000);
    assert!(controller.failing_over());
    let f = controller.history.last_failover.clone().unwrap();
    assert_eq!((f.failing_since_ms, f.last_seen_ms), (500, None));
}

#[test]
fn the_first_election_and_switchovers_are_not_failovers() {
    let memory = memory_with_failed_n1();
    let mut s = Stats::new(FailoverCount::Always, History::default());
    let first = plan_of(vec![Action::BumpTerm { to: 1 }], SwitchoverOutcome::None);
    s.decided(&Coordinator::default(), &first, &memory, 10);
    assert!(!s.failing_over());

    let begin = plan_of(
        vec![Action::BeginSwitchover {
            from: "n1".into(),
            to: "n2".into(),
            term: 3,
            started_ms: 100,
        }],
        SwitchoverOutcome::Started {
            from: "n1".into(),
            to: "n2".into(),
        },
    );
    s.decided(&led_by("n1", 2), &begin, &memory, 100);
    assert!(!s.failing_over());
    let during = Coordinator {
        term: 3,
        switchover: Some(crate::failover::Switchover {
            from: "n1".into(),
            to: "n2".into(),
            started_ms: 100,
        }),
        ..Coordinator::default()
    };
    let done = s.promoted(
        &during,
        &[promoted("n2", 3, st("primary", 3, (3, 9), 0, 0))],
        400,
    );
    assert_eq!(done.failover, None);
    assert_eq!(done.switchover.and_then(|s| s.duration_ms), Some(300));
    // Counted once, however often a promotion is repeated.
    s.promoted(
        &during,
        &[promoted("n2", 3, st("primary", 3, (3, 9), 0, 0))],
        500,
    );
    assert_eq!(
        (s.history.switchovers_total, s.history.failovers_total),
        (1, 0)
    );
}

#[test]
fn an_election_replacing_a_switchover_marks_it_abandoned() {
    let memory = Memory::default();
    let mut s = Stats::new(FailoverCount::Always, History::default());
    let begin = plan_of(
        vec![Action::BeginSwitchover {
            from: "n1".into(),
            to: "n2".into(),
            term: 3,
            started_ms: 100,
        }],
        SwitchoverOutcome::None,
    );
    s.decided(&led_by("n1", 2), &begin, &memory, 100);
    let during = Coordinator {
        term: 3,
        switchover: Some(crate::failover::Switchover {
            from: "n1".into(),
            to: "n2".into(),
            started_ms: 100,
        }),
        ..Coordinator::default()
    };
    let abandon = plan_of(
        vec![Action::BumpTerm { to: 4 }],
        SwitchoverOutcome::Abandoned(SwitchoverProblem::NoCandidate),
    );
    s.decided(&during, &abandon, &memory, 200);
    let last = s.history.last_switchover.clone().unwrap();
    assert_eq!(
        last.abandoned.as_deref(),
        Some("an election replaced the switchover to n2")
    );
    assert!(!s.failing_over(), "no primary was recorded: not a failover");
}

#[test]
fn a_lossy_promotion_reports_what_may_be_lost() {
    let memory = memory_with_failed_n1();
    let mut s = Stats::new(FailoverCount::Always, History::default());
    let bump = plan_of(vec![Action::BumpTerm { to: 3 }], SwitchoverOutcome::None);
    s.decided(&led_by("n1", 2), &bump, &memory, 2_000);
    let lossy = plan_of(
        vec![
            Action::ReportPossibleLoss {
                promoted: "n2".into(),
                longest: Some("n1".into()),
                entries: Some(4),
            },
            Action::Promote {
                node: "n2".into(),
                term: 3,
            },
        ],
        SwitchoverOutcome::None,
    );
    s.decided(&Coordinator::default(), &lossy, &memory, 2_100);
    let done = s.promoted(
        &Coordinator::default(),
        &[promoted("n2", 3, st("primary", 3, (3, 40), 0, 0))],
        2_200,
    );
    assert_eq!(done.failover.and_then(|f| f.possible_loss), Some(4));
}
