//! Log matching on plain data: appends with a previous index and term, divergence and the
//! truncation point, the known commit as a floor, snapshots.

use super::node_tests::{node, with_log};
use super::*;
use rcluster_proto::Role;

fn header(term: u64, from: &str, prev: (u64, u64), commit: u64) -> AppendHeader {
    AppendHeader {
        term,
        from: from.into(),
        prev_index: prev.0,
        prev_term: prev.1,
        commit,
        primary_last_index: 0,
    }
}

/// (index, term) of consecutive entries from `first`.
fn ids(first: u64, terms: &[u64]) -> Vec<(u64, u64)> {
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| (first + i as u64, *t))
        .collect()
}

/// Replica of b in term 2 whose log has these terms.
fn replica(terms: &[u64]) -> Node {
    with_log(node("a", 2, Role::Replica, Some("b")), terms)
}

#[test]
fn an_append_of_an_older_term_or_from_a_second_primary_is_refused() {
    let n = replica(&[1, 2]);
    let refused =
        |c: Result<Contact, RoleError>| matches!(c, Ok(Contact::Refuse(Refusal::Error(_))));
    assert!(refused(n.contact(&header(1, "b", (2, 2), 0))));
    assert!(refused(n.contact(&header(2, "c", (2, 2), 0))));
    let primary = node("a", 2, Role::Primary, Some("a"));
    assert!(refused(primary.contact(&header(2, "b", (0, 0), 0))));
    assert_eq!(
        n.contact(&header(2, "b", (2, 2), 0)),
        Ok(Contact::Accept(None))
    );
}

#[test]
fn an_append_of_a_newer_term_is_accepted_after_the_node_follows_its_sender() {
    let n = replica(&[1, 2]);
    let Ok(Contact::Accept(Some(change))) = n.contact(&header(3, "c", (2, 2), 0)) else {
        panic!("a role change to persist first");
    };
    assert!(change.persist);
    assert_eq!(change.record.term, 3);
    assert_eq!(change.record.primary.as_deref(), Some("c"));
}

#[test]
fn an_append_past_the_end_asks_for_what_is_missing() {
    let n = replica(&[1, 1, 2]);
    let m = n.match_append(&header(2, "b", (5, 2), 0), &ids(6, &[2]));
    assert_eq!(m, Matching::Refuse(Refusal::RetryFrom(4)));
    assert!(n.append_is_ahead(&header(2, "b", (5, 2), 0)));
    assert!(!n.append_is_ahead(&header(1, "b", (5, 2), 0)));
}

#[test]
fn a_previous_entry_of_another_term_sends_the_primary_back_to_the_start_of_that_run() {
    let n = replica(&[1, 1, 2, 2, 2]);
    let m = n.match_append(&header(3, "b", (4, 3), 0), &ids(5, &[3]));
    assert_eq!(m, Matching::Refuse(Refusal::RetryFrom(3)));
}

#[test]
fn matching_entries_are_skipped_and_new_ones_appended() {
    let n = replica(&[1, 1, 2]);
    let m = n.match_append(&header(2, "b", (1, 1), 0), &ids(2, &[1, 2, 2, 2]));
    assert_eq!(
        m,
        Matching::Append {
            new: 2..4,
            matched: 5
        }
    );
    // A heartbeat matches through its previous entry.
    let m = n.match_append(&header(2, "b", (3, 2), 0), &[]);
    assert_eq!(
        m,
        Matching::Append {
            new: 0..0,
            matched: 3
        }
    );
}

#[test]
fn a_divergent_suffix_is_truncated_from_the_first_entry_that_differs() {
    let mut n = replica(&[1, 1, 2, 2]);
    n.known_commit = 2;
    let m = n.match_append(&header(3, "b", (2, 1), 0), &ids(3, &[2, 3, 3]));
    assert_eq!(m, Matching::Truncate(4));
    // After the truncation (the engine rebuilt the log through 3), the same append matches.
    let mut runs = TermRuns::new(0, 0);
    for (i, t) in ids(1, &[1, 1, 2]) {
        runs.push(i, t);
    }
    assert_eq!(n.truncated(4, 3, runs), None);
    let m = n.match_append(&header(3, "b", (2, 1), 0), &ids(3, &[2, 3, 3]));
    assert_eq!(
        m,
        Matching::Append {
            new: 1..3,
            matched: 5
        }
    );
}

#[test]
fn nothing_known_to_be_committed_is_ever_truncated() {
    let mut n = replica(&[1, 1, 2, 2]);
    n.known_commit = 4;
    let m = n.match_append(&header(3, "b", (2, 1), 0), &ids(3, &[2, 3]));
    assert!(matches!(m, Matching::Refuse(Refusal::Error(e)) if e.contains("entry 4 is committed")));
    n.known_commit = 3;
    assert_eq!(
        n.match_append(&header(3, "b", (2, 1), 0), &ids(3, &[2, 3])),
        Matching::Truncate(4)
    );
}

#[test]
fn a_replica_left_empty_by_a_truncation_needs_a_snapshot() {
    let mut n = replica(&[1, 1, 2]);
    assert_eq!(
        n.truncated(3, 0, TermRuns::new(0, 0)),
        Some(Refusal::NeedSnapshot)
    );
    let mut n = replica(&[2]);
    assert_eq!(n.truncated(1, 0, TermRuns::new(0, 0)), None);
}

#[test]
fn entries_below_the_snapshot_count_as_matched() {
    let mut n = node("a", 2, Role::Replica, Some("b"));
    n.runs = TermRuns::new(10, 2);
    n.last_index = 10;
    // The primary resends from 5: entries 5..=10 are in the snapshot, 11 is new.
    let m = n.match_append(&header(2, "b", (4, 1), 0), &ids(5, &[1, 1, 2, 2, 2, 2, 2]));
    assert_eq!(
        m,
        Matching::Append {
            new: 6..7,
            matched: 11
        }
    );
}

#[test]
fn matching_stops_at_a_gap_in_the_batch() {
    let n = replica(&[1]);
    let batch = [(2, 1), (3, 1), (5, 1)];
    let m = n.match_append(&header(2, "b", (1, 1), 0), &batch);
    assert_eq!(
        m,
        Matching::Append {
            new: 0..2,
            matched: 3
        }
    );
}

#[test]
fn the_known_commit_follows_the_primary_up_to_what_matched_and_never_goes_back() {
    let mut n = replica(&[1, 1, 2]);
    n.matched(10, 3);
    assert_eq!(n.known_commit, 3);
    assert!(n.synced);
    n.matched(2, 3);
    assert_eq!(n.known_commit, 3);
}

#[test]
fn a_snapshot_must_come_from_the_current_primary_and_cover_the_known_commit() {
    let mut n = replica(&[1, 1, 2]);
    n.known_commit = 3;
    assert!(n.check_snapshot(2, "c", 5).is_err());
    assert!(n.check_snapshot(3, "b", 5).is_err());
    assert!(n.check_snapshot(2, "b", 2).is_err());
    assert_eq!(n.check_snapshot(2, "b", 3), Ok(()));
    n.installed(9, 2);
    assert_eq!(
        (n.last_index, n.known_commit, n.term_at(9)),
        (9, 9, Some(2))
    );
    assert!(n.synced);
}

#[test]
fn a_log_with_entries_past_what_the_primary_matched_is_not_in_sync() {
    // A restarted old primary: entry 3 may be a divergent suffix nobody else holds. Until the
    // primary's log covers (or replaces) it, the node must not serve reads from it.
    let mut n = replica(&[1, 1, 2]);
    n.synced = false;
    n.matched(10, 2);
    assert!(!n.synced, "entry 3 is unconfirmed");
    n.matched(10, 3);
    assert!(n.synced);
}
