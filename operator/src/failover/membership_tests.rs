//! Member changes: the planner, the joint election rule while a change is uncommitted, and the
//! revert when the most advanced member is one that was leaving.

use super::fixtures::*;
use super::*;

fn list(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// `config` in force (and `previous` while a change is uncommitted), `desired` in the settings.
fn members_view(desired: &[&str], config: &[&str], previous: Option<&[&str]>) -> ClusterView {
    let mut v = view(desired.len(), AckLevel::Quorum);
    v.settings.members = list(desired);
    v.coordinator.members = list(config);
    v.coordinator.previous_members = previous.map(list);
    v
}

fn listing(mut o: Observation, names: &[&str]) -> Observation {
    o.members = list(names);
    o
}

#[test]
fn a_running_member_joins_in_a_new_term_with_the_primary_promoted_again() {
    let three = ["n1", "n2", "n3"];
    let v = members_view(&["n1", "n2", "n3", "n4"], &three, None)
        .coord(2, Some("n1"))
        .with(listing(primary("n1", 2, 40), &three))
        .with(listing(replica("n2", 2, 40, "n1"), &three))
        .with(listing(replica("n3", 2, 40, "n1"), &three))
        .with(fenced("n4", 0, 0, 0));
    let actions = plan_members(&v);
    assert_eq!(
        actions,
        vec![
            Action::ChangeMembers {
                from: list(&three),
                members: list(&["n1", "n2", "n3", "n4"]),
                term: 3
            },
            promote("n1", 3),
            follow("n2", "n1", 3),
            follow("n3", "n1", 3),
            follow("n4", "n1", 3),
        ]
    );
    let next = v.coordinator.after(&actions);
    assert_eq!(next.members, list(&["n1", "n2", "n3", "n4"]));
    assert_eq!(next.previous_members, Some(list(&three)));
    assert_eq!((next.term, next.primary.as_deref()), (3, Some("n1")));
    assert_eq!(
        next.after(&[Action::MembersCommitted]).previous_members,
        None
    );
}

#[test]
fn a_member_without_a_running_node_does_not_join_yet() {
    let three = ["n1", "n2", "n3"];
    let v = members_view(&["n1", "n2", "n3", "n4"], &three, None)
        .coord(2, Some("n1"))
        .with(primary("n1", 2, 40))
        .with(replica("n2", 2, 40, "n1"))
        .with(replica("n3", 2, 40, "n1"))
        .with(down("n4"));
    assert_eq!(plan_members(&v), vec![]);
}

#[test]
fn members_leave_in_one_change_but_the_primary_never_does() {
    let five = ["n1", "n2", "n3", "n4", "n5"];
    let obs = |v: ClusterView| {
        v.coord(2, Some("n1"))
            .with(primary("n1", 2, 40))
            .with(replica("n2", 2, 40, "n1"))
            .with(replica("n3", 2, 40, "n1"))
            .with(replica("n4", 2, 40, "n1"))
            .with(replica("n5", 2, 40, "n1"))
    };
    let v = obs(members_view(&["n1", "n2", "n3"], &five, None));
    assert_eq!(
        plan_members(&v),
        vec![
            Action::ChangeMembers {
                from: list(&five),
                members: list(&["n1", "n2", "n3"]),
                term: 3
            },
            promote("n1", 3),
            follow("n2", "n1", 3),
            follow("n3", "n1", 3),
        ]
    );
    // The primary is not among the desired members: a runtime switches over first.
    let v = obs(members_view(&["n2", "n3", "n4"], &five, None));
    assert_eq!(plan_members(&v), vec![]);
}

#[test]
fn a_change_is_committed_once_the_primary_acknowledged_its_terms_first_entry() {
    let four = ["n1", "n2", "n3", "n4"];
    let at = |committed: u64, listed: &[&str]| {
        let mut p = listing(primary("n1", 3, 12), listed);
        p.term_start = 10;
        p.commit_by_ack = Some(CommitByAck {
            async_: 12,
            one: 12,
            quorum: committed,
            all: 0,
        });
        members_view(&four, &four, Some(&["n1", "n2", "n3"]))
            .coord(3, Some("n1"))
            .with(p)
    };
    assert_eq!(
        plan_members(&at(9, &four)),
        vec![Action::Wait {
            reason: WaitReason::MembersCommitting {
                term_start: 10,
                committed: 9
            }
        }]
    );
    assert_eq!(plan_members(&at(10, &four)), vec![Action::MembersCommitted]);
    // A primary that still reports the old list has not taken the change.
    assert!(matches!(
        plan_members(&at(10, &["n1", "n2", "n3"]))[0],
        Action::Wait { .. }
    ));
}

#[test]
fn elections_during_an_uncommitted_change_hear_from_both_lists() {
    // 3 → 4: entry 10 was acknowledged by n1 and n2 (a majority of the old list). n1 and n2
    // are gone; n3 and n4 answer: two of four would do for the new list alone (and would elect
    // n3, losing entry 10), but only one of the old three answers.
    let four = ["n1", "n2", "n3", "n4"];
    let election = |previous: Option<&[&str]>| {
        members_view(&four, &four, previous)
            .coord(4, None)
            .with(down("n1").log(3, 10))
            .with(down("n2").log(3, 10))
            .with(fenced("n3", 4, 2, 5))
            .with(fenced("n4", 4, 0, 0))
    };
    assert_eq!(
        decide(&election(Some(&["n1", "n2", "n3"]))),
        vec![Action::Wait {
            reason: WaitReason::TooFewResponders { have: 1, need: 2 }
        }]
    );
    // Once the change is committed, the new list alone decides.
    assert_eq!(decide(&election(None))[0], promote("n3", 4));
}

#[test]
fn a_leaving_member_that_holds_the_most_goes_back_to_the_old_list() {
    // 5 → 3 uncommitted: n4 and n5 hold entries n2 and n3 lack; n1 is gone.
    let five = ["n1", "n2", "n3", "n4", "n5"];
    let v = members_view(&["n1", "n2", "n3"], &["n1", "n2", "n3"], Some(&five))
        .coord(4, None)
        .with(down("n1"))
        .with(fenced("n2", 4, 2, 5))
        .with(fenced("n3", 4, 2, 5))
        .with(fenced("n4", 4, 2, 10))
        .with(fenced("n5", 4, 2, 10));
    let actions = decide(&v);
    assert_eq!(
        actions,
        vec![
            Action::ChangeMembers {
                from: list(&["n1", "n2", "n3"]),
                members: list(&five),
                term: 4
            },
            promote("n4", 4),
            follow("n2", "n4", 4),
            follow("n3", "n4", 4),
            follow("n5", "n4", 4),
        ]
    );
    let next = v.coordinator.after(&actions);
    assert_eq!(
        (next.members.clone(), next.primary.as_deref()),
        (list(&five), Some("n4"))
    );
}

#[test]
fn a_replica_that_missed_the_member_list_is_told_again() {
    let four = ["n1", "n2", "n3", "n4"];
    let v = members_view(&four, &four, None)
        .coord(3, Some("n1"))
        .with(listing(primary("n1", 3, 40), &four))
        .with(listing(replica("n2", 3, 40, "n1"), &four))
        .with(listing(replica("n3", 3, 40, "n1"), &["n1", "n2", "n3"]))
        .with(replica("n4", 3, 40, "n1"));
    assert_eq!(decide(&v), vec![follow("n3", "n1", 3)]);
}

#[test]
fn a_lossy_revert_records_the_list_before_reporting_the_loss() {
    // 2 → 1 uncommitted at `async`: n1 (the only member left) is gone, n2 answers alone,
    // which is too few for the old list; lossy promotion takes it back.
    let mut v = members_view(&["n1"], &["n1"], Some(&["n1", "n2"]))
        .lossy()
        .coord(4, None)
        .with(down("n1").log(2, 10))
        .with(fenced("n2", 4, 2, 8));
    v.settings.ack = AckLevel::Async;
    let actions = decide(&v);
    assert_eq!(
        actions,
        vec![
            Action::ChangeMembers {
                from: list(&["n1"]),
                members: list(&["n1", "n2"]),
                term: 4
            },
            Action::ReportPossibleLoss {
                promoted: "n2".into(),
                longest: Some("n1".into()),
                entries: Some(2)
            },
            promote("n2", 4),
        ]
    );
    assert_eq!(
        actions[0].new_term(),
        Some(4),
        "the term change comes first"
    );
}
