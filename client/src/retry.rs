//! When to retry a request, where, and after how long. Pure: the caller supplies the
//! clock and the jitter, so every decision is testable without sockets or sleeps.

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::transport::TransportErrorKind;

/// Bounds on retrying one call.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// No new attempt starts after this much time since the first one.
    pub deadline: Duration,
    /// Backoff before the first retry; doubles per retry up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// `503 not_primary` redirects followed per call; they do not count as attempts.
    pub max_redirects: u32,
}

/// The defaults keep a call going through a failover: the detection window (1 s by default)
/// plus an election and the client finding the new primary take 1–3 s, and 20 attempts with
/// backoff capped at 500 ms span at least 4 s (within the 10 s deadline).
impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 20,
            deadline: Duration::from_secs(10),
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            max_redirects: 3,
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries (still follows `not_primary` redirects).
    pub fn no_retry() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    /// Backoff before retry number `retry` (1-based), given `jitter` in `[0, 1)`:
    /// "equal jitter", between half and all of the capped exponential delay.
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let full = self
            .base_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let half = full / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send again at once to this base URL (the primary named by the server).
    Redirect(String),
    /// Send again after `after`; `rotate` moves to the next endpoint first.
    Retry { after: Duration, rotate: bool },
    /// Stop and report.
    GiveUp,
}

/// The retry bookkeeping of one call.
#[derive(Debug)]
pub struct RetryState {
    policy: RetryPolicy,
    started: Instant,
    attempts: u32,
    redirects: u32,
    maybe_applied: bool,
    /// Some node answered (or may have received the request) during this call.
    answered: bool,
    /// The shorter deadline of a call that has reached no node at all.
    unreachable_deadline: Option<Duration>,
}

impl RetryState {
    pub fn new(policy: RetryPolicy, now: Instant) -> Self {
        Self {
            policy,
            started: now,
            attempts: 1,
            redirects: 0,
            maybe_applied: false,
            answered: false,
            unreachable_deadline: None,
        }
    }

    /// Gives up after `d` (instead of the policy's deadline) while no attempt has reached any
    /// node: every connection was refused or timed out. A cluster in a failover still has nodes
    /// that answer, so this only shortens the wait when nothing listens at all.
    pub fn give_up_unreachable_after(mut self, d: Option<Duration>) -> Self {
        self.unreachable_deadline = d;
        self
    }

    /// Attempts made so far, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// True once an attempt failed in a way that may have applied the request (timeout or
    /// broken connection after sending, `503 ack_timeout` or `503 outcome_unknown`).
    pub fn maybe_applied(&self) -> bool {
        self.maybe_applied
    }

    /// A redirect to the primary a server named, unless it is where the attempt went or the
    /// call used up its redirects.
    fn redirect(&mut self, tried: &str, primary: Option<&str>) -> Option<Decision> {
        let target = primary.map(|p| p.trim_end_matches('/'));
        let target = target.filter(|p| !p.is_empty() && *p != tried)?;
        if self.redirects >= self.policy.max_redirects {
            return None;
        }
        self.redirects += 1;
        Some(Decision::Redirect(target.to_string()))
    }

    /// Decides after `err` from the attempt sent to `tried`. `primary` is the
    /// `Rcluster-Primary` response header, if any.
    pub fn next(
        &mut self,
        err: &Error,
        tried: &str,
        primary: Option<&str>,
        now: Instant,
        jitter: f64,
    ) -> Decision {
        // Only a refused (or unanswered) connection shows that nothing was reached.
        self.answered |= !matches!(
            err,
            Error::Transport(t) if t.kind == TransportErrorKind::Connect
        );
        let rotate = match err {
            Error::Transport(t) => {
                // A bad URL or a certificate that does not verify: retrying cannot help.
                if matches!(
                    t.kind,
                    TransportErrorKind::InvalidUrl | TransportErrorKind::Tls
                ) {
                    return Decision::GiveUp;
                }
                self.maybe_applied |= t.maybe_sent();
                true
            }
            Error::Api { status, code, .. } => match (*status, code.as_str()) {
                // Nothing was applied: go to the primary it names, or elsewhere.
                (503, "not_primary") => {
                    if let Some(d) = self.redirect(tried, primary) {
                        return d;
                    }
                    true
                }
                // In a deposed primary's log: the new primary's log decides. Safe to retry only
                // because every attempt of a write carries the same idempotency key (the first
                // result comes back if it was applied); never reported as "not applied".
                (503, "outcome_unknown") => {
                    self.maybe_applied = true;
                    if let Some(d) = self.redirect(tried, primary) {
                        return d;
                    }
                    true
                }
                // In the primary's log but not acknowledged in time: it may still commit.
                (503, "ack_timeout") => {
                    self.maybe_applied = true;
                    false
                }
                // The node belongs to another cluster and did nothing: try another endpoint.
                (409, "cluster_mismatch") => true,
                (503, _) => true,
                (429, _) => false,
                _ => return Decision::GiveUp,
            },
            _ => return Decision::GiveUp,
        };
        if self.attempts >= self.policy.attempts {
            return Decision::GiveUp;
        }
        let after = self.policy.backoff(self.attempts, jitter);
        let deadline = match self.unreachable_deadline {
            Some(d) if !self.answered => d.min(self.policy.deadline),
            _ => self.policy.deadline,
        };
        if now.saturating_duration_since(self.started) + after > deadline {
            return Decision::GiveUp;
        }
        self.attempts += 1;
        Decision::Retry { after, rotate }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportError;

    fn transport(kind: TransportErrorKind) -> Error {
        Error::Transport(TransportError {
            kind,
            message: "x".into(),
            refused: false,
        })
    }

    fn api(status: u16, code: &str) -> Error {
        Error::Api {
            status,
            code: code.into(),
            message: String::new(),
        }
    }

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            deadline: Duration::from_secs(60),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(800),
            max_redirects: 2,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = policy(10);
        let ms = |r, j| p.backoff(r, j).as_millis();
        assert_eq!((ms(1, 0.0), ms(1, 0.999_999)), (50, 99));
        assert_eq!((ms(2, 0.0), ms(3, 0.0)), (100, 200));
        assert_eq!(ms(4, 0.0), 400);
        for r in 4..40 {
            assert!(
                p.backoff(r, 0.999) <= Duration::from_millis(800),
                "retry {r}"
            );
            assert!(p.backoff(r, 0.0) >= Duration::from_millis(400), "retry {r}");
        }
    }

    #[test]
    fn connect_errors_rotate_until_attempts_run_out() {
        let t0 = Instant::now();
        let mut s = RetryState::new(policy(3), t0);
        let e = transport(TransportErrorKind::Connect);
        for _ in 0..2 {
            assert!(matches!(
                s.next(&e, "http://a", None, t0, 0.5),
                Decision::Retry { rotate: true, .. }
            ));
        }
        assert_eq!(s.next(&e, "http://a", None, t0, 0.5), Decision::GiveUp);
        assert!(
            !s.maybe_applied(),
            "a refused connection never applies a write"
        );
    }

    #[test]
    fn timeouts_and_ack_timeouts_make_the_outcome_unknown() {
        let t0 = Instant::now();
        let mut s = RetryState::new(policy(5), t0);
        s.next(
            &transport(TransportErrorKind::Timeout),
            "http://a",
            None,
            t0,
            0.0,
        );
        assert!(s.maybe_applied());

        let mut s = RetryState::new(policy(5), t0);
        let d = s.next(&api(503, "ack_timeout"), "http://a", None, t0, 0.0);
        assert!(matches!(d, Decision::Retry { rotate: false, .. }), "{d:?}");
        assert!(s.maybe_applied());

        let mut s = RetryState::new(policy(5), t0);
        s.next(&api(503, "unavailable"), "http://a", None, t0, 0.0);
        assert!(!s.maybe_applied());
    }

    #[test]
    fn not_primary_redirects_are_free_but_bounded() {
        let t0 = Instant::now();
        let mut s = RetryState::new(policy(1), t0);
        let e = api(503, "not_primary");
        assert_eq!(
            s.next(&e, "http://a", Some("http://b/"), t0, 0.0),
            Decision::Redirect("http://b".into())
        );
        assert_eq!(
            s.next(&e, "http://b", Some("http://c"), t0, 0.0),
            Decision::Redirect("http://c".into())
        );
        // Redirects exhausted and only one attempt allowed.
        assert_eq!(
            s.next(&e, "http://c", Some("http://a"), t0, 0.0),
            Decision::GiveUp
        );
    }

    #[test]
    fn default_policy_outlasts_a_failover() {
        let p = RetryPolicy::default();
        let least: Duration = (1..p.attempts).map(|r| p.backoff(r, 0.0)).sum();
        assert!(least >= Duration::from_secs(3), "{least:?}");
        let most: Duration = (1..p.attempts).map(|r| p.backoff(r, 0.999)).sum();
        assert!(most <= p.deadline, "{most:?}");
    }

    #[test]
    fn not_primary_means_nothing_was_applied() {
        let t0 = Instant::now();
        let mut s = RetryState::new(policy(3), t0);
        s.next(&api(503, "not_primary"), "http://a", None, t0, 0.0);
        assert!(!s.maybe_applied());
    }

    #[test]
    fn outcome_unknown_is_retried_at_the_new_primary_and_stays_unknown() {
        let t0 = Instant::now();
        let mut s = RetryState::new(policy(3), t0);
        let e = api(503, "outcome_unknown");
        assert_eq!(
            s.next(&e, "http://a", Some("http://b"), t0, 0.0),
            Decision::Redirect("http://b".into())
        );
        assert!(s.maybe_applied());
        // Without a hint it tries elsewhere; a later "nothing applied here" cannot undo the doubt.
        assert!(matches!(
            s.next(&e, "http://b", None, t0, 0.0),
            Decision::Retry { rotate: true, .. }
        ));
        s.next(&api(503, "not_primary"), "http://c", None, t0, 0.0);
        assert!(s.maybe_applied());
    }

    #[test]
    fn not_primary_pointing_at_itself_or_nowhere_backs_off() {
        let t0 = Instant::now();
        let mut s = RetryState::new(policy(3), t0);
        let e = api(503, "not_primary");
        assert!(matches!(
            s.next(&e, "http://a", Some("http://a"), t0, 0.0),
            Decision::Retry { rotate: true, .. }
        ));
        assert!(matches!(
            s.next(&e, "http://a", None, t0, 0.0),
            Decision::Retry { rotate: true, .. }
        ));
    }

    #[test]
    fn client_errors_are_final() {
        let t0 = Instant::now();
        for (status, code) in [
            (412, "version_mismatch"),
            (404, "not_found"),
            (400, "invalid_key"),
        ] {
            let mut s = RetryState::new(policy(5), t0);
            assert_eq!(
                s.next(&api(status, code), "http://a", None, t0, 0.0),
                Decision::GiveUp
            );
        }
        let mut s = RetryState::new(policy(5), t0);
        let bad = transport(TransportErrorKind::InvalidUrl);
        assert_eq!(s.next(&bad, "x", None, t0, 0.0), Decision::GiveUp);
    }

    #[test]
    fn another_cluster_s_node_is_left_for_the_next_endpoint() {
        let t0 = Instant::now();
        let mut s = RetryState::new(policy(5), t0);
        let e = api(409, "cluster_mismatch");
        assert!(matches!(
            s.next(&e, "http://b", None, t0, 0.0),
            Decision::Retry { rotate: true, .. }
        ));
        assert!(!s.maybe_applied(), "the node refused before doing anything");
    }

    #[test]
    fn a_call_that_reached_no_node_gives_up_sooner() {
        let t0 = Instant::now();
        let refused = transport(TransportErrorKind::Connect);
        let later = t0 + Duration::from_millis(1500);
        let mut s = RetryState::new(policy(100), t0)
            .give_up_unreachable_after(Some(Duration::from_secs(1)));
        assert!(matches!(
            s.next(&refused, "a", None, t0, 0.0),
            Decision::Retry { .. }
        ));
        assert_eq!(s.next(&refused, "a", None, later, 0.0), Decision::GiveUp);
        // Once a node answered (here: "not the primary"), the full deadline applies again.
        let mut s = RetryState::new(policy(100), t0)
            .give_up_unreachable_after(Some(Duration::from_secs(1)));
        s.next(&api(503, "unavailable"), "b", None, t0, 0.0);
        assert!(matches!(
            s.next(&refused, "a", None, later, 0.0),
            Decision::Retry { .. }
        ));
        // A timeout may have reached a node: no shortcut either.
        let mut s = RetryState::new(policy(100), t0)
            .give_up_unreachable_after(Some(Duration::from_secs(1)));
        s.next(&transport(TransportErrorKind::Timeout), "a", None, t0, 0.0);
        assert!(matches!(
            s.next(&refused, "a", None, later, 0.0),
            Decision::Retry { .. }
        ));
        assert_eq!(s.attempts(), 3);
    }

    #[test]
    fn deadline_stops_retries() {
        let t0 = Instant::now();
        let mut p = policy(100);
        p.deadline = Duration::from_secs(2);
        let mut s = RetryState::new(p, t0);
        let e = transport(TransportErrorKind::Connect);
        assert!(matches!(
            s.next(&e, "a", None, t0, 0.0),
            Decision::Retry { .. }
        ));
        let late = t0 + Duration::from_millis(1990);
        assert_eq!(s.next(&e, "a", None, late, 0.0), Decision::GiveUp);
    }
}
