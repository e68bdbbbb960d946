//! The shipper's reading of a replica's answer.

use super::*;

fn answer(f: impl FnOnce(&mut AppendResponse)) -> AppendResponse {
    let mut r = AppendResponse {
        term: 3,
        last_index: 10,
        ..AppendResponse::default()
    };
    f(&mut r);
    r
}

#[test]
fn a_newer_term_stops_the_shipper() {
    assert_eq!(judge(3, 11, &answer(|r| r.term = 4)), Verdict::StepDown(4));
    assert_eq!(
        judge(3, 11, &answer(|r| (r.term, r.ok) = (4, true))),
        Verdict::StepDown(4)
    );
}

#[test]
fn success_confirms_what_the_replica_holds() {
    assert_eq!(judge(3, 8, &answer(|r| r.ok = true)), Verdict::Advanced(11));
    assert_eq!(
        judge(3, 15, &answer(|r| r.ok = true)),
        Verdict::Advanced(15)
    );
}

#[test]
fn a_refusal_says_what_to_send_next() {
    assert_eq!(
        judge(3, 11, &answer(|r| r.need_snapshot = true)),
        Verdict::Resend(0)
    );
    let e = answer(|r| r.error = Some("stale".into()));
    assert_eq!(judge(3, 11, &e), Verdict::Backoff(Some("stale".into())));
    assert_eq!(
        judge(3, 11, &answer(|r| r.retry_from = Some(4))),
        Verdict::Resend(4)
    );
    // Never past the replica's log, never before the first entry.
    assert_eq!(
        judge(3, 11, &answer(|r| r.retry_from = Some(40))),
        Verdict::Resend(11)
    );
    assert_eq!(
        judge(3, 11, &answer(|r| r.retry_from = Some(0))),
        Verdict::Resend(1)
    );
    assert_eq!(judge(3, 11, &answer(|_| {})), Verdict::Backoff(None));
}
