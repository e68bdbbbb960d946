//! The commit index per ack level with the term-start rule, and what a primary learns from its
//! replicas' answers.

use super::*;
use std::time::{Duration, Instant};

fn ack(durable: u64) -> AppendResponse {
    AppendResponse {
        ok: true,
        durable_index: durable,
        last_index: durable,
        applied_index: durable,
        ..AppendResponse::default()
    }
}

/// A primary of term 3 from index `start` whose replicas b, c, d, e are durable through these.
fn progress(start: u64, durable: [u64; 4]) -> Progress {
    let mut p = Progress::new(3, start, ["b", "c", "d", "e"].map(String::from));
    let sent = Instant::now();
    for (peer, d) in ["b", "c", "d", "e"].into_iter().zip(durable) {
        assert!(p.record_ack(peer, 3, sent, &ack(d)));
    }
    p
}

#[test]
fn each_ack_level_counts_its_own_members() {
    let p = progress(1, [7, 5, 3, 1]);
    assert_eq!(p.commit_for(AckLevel::Async, 9), 9);
    assert_eq!(p.commit_for(AckLevel::One, 9), 7);
    assert_eq!(
        p.commit_for(AckLevel::One, 6),
        6,
        "never past the primary's own"
    );
    // Five members: the third highest of 9, 7, 5, 3, 1.
    assert_eq!(p.commit_for(AckLevel::Quorum, 9), 5);
    assert_eq!(p.commit_for(AckLevel::All, 9), 1);
}

#[test]
fn nothing_of_an_older_term_commits_before_the_terms_first_entry() {
    // The term started at 6: a majority durable through 5 does not commit entries 1..=5 yet.
    let p = progress(6, [5, 5, 5, 0]);
    assert_eq!(p.commit_for(AckLevel::Quorum, 6), 0);
    let p = progress(6, [6, 6, 0, 0]);
    assert_eq!(p.commit_for(AckLevel::Quorum, 6), 6);
    assert_eq!(p.commit_for(AckLevel::All, 6), 0);
}

#[test]
fn answers_of_an_older_term_are_ignored_and_durability_never_goes_back() {
    let mut p = progress(1, [4, 4, 4, 4]);
    assert!(!p.record_ack("b", 2, Instant::now(), &ack(9)));
    assert_eq!(p.peers["b"].durable, 4);
    assert!(p.record_ack("b", 3, Instant::now(), &ack(2)));
    assert_eq!(p.peers["b"].durable, 4);
    p.record_error("c", "refused".into());
    assert_eq!(p.peers["c"].error.as_deref(), Some("refused"));
    assert!(p.record_ack("c", 3, Instant::now(), &ack(5)));
    assert_eq!(p.peers["c"].error, None);
}

#[test]
fn confirmations_count_answers_to_requests_sent_since_a_moment() {
    let t0 = Instant::now();
    let mut p = Progress::new(3, 1, ["b", "c"].map(String::from));
    assert_eq!(p.confirmed_since(t0), 0);
    p.record_ack("b", 3, t0, &ack(1));
    let t1 = t0 + Duration::from_millis(10);
    p.record_ack("c", 3, t1, &ack(1));
    assert_eq!(p.confirmed_since(t0), 2);
    assert_eq!(p.confirmed_since(t1), 1);
    let lease = Duration::from_millis(100);
    assert_eq!(p.fresh(t1 + Duration::from_millis(95), lease), 1);
    assert_eq!(p.fresh(t1 + Duration::from_millis(50), lease), 2);
}
