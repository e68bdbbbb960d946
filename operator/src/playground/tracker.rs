//! Failover and switchover statistics for `/status`, the metrics and the decision log: who
//! failed, who took over, and how long each phase took, measured from the last probe that found
//! the old primary ready.
//!
//! "Time to first write" ends at the first probe that shows the new primary's commit index (at
//! the cluster's ack level) at or past the first entry of its term (the no-op a promotion
//! appends): from then on it acknowledges writes at that level. It is a probe-based measurement,
//! so it is late by up to one probe interval.

use serde::{Deserialize, Serialize};

use super::state::Saved;
use crate::failover::AckLevel;
use crate::nodes::NodeStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFailover {
    pub from: String,
    /// The promoted node; `None` while the election is in progress.
    pub to: Option<String>,
    pub term: u64,
    /// When a probe last found `from` ready (ms since the epoch).
    pub last_seen_ms: Option<u64>,
    /// When the election started (the term was bumped).
    pub detected_at_ms: u64,
    /// From `last_seen_ms` to the start of the election.
    pub detection_ms: Option<u64>,
    /// From `last_seen_ms` to the promotion.
    pub promotion_ms: Option<u64>,
    /// From `last_seen_ms` until the new primary acknowledged the first entry of its term.
    pub time_to_first_write_ms: Option<u64>,
    /// Entries the old primary discarded when it rejoined (known once it follows again).
    pub entries_discarded: Option<u64>,
    /// Lossy promotion only: entries that may have been lost (a lower bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possible_loss: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSwitchover {
    pub from: String,
    pub to: String,
    pub term: u64,
    pub started_ms: u64,
    /// From the start until the target was promoted.
    pub duration_ms: Option<u64>,
    /// Why it was given up, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<String>,
}

/// A failover being measured (memory only: a restarted playground starts afresh).
#[derive(Debug, Clone)]
struct Pending {
    from: String,
    /// The old primary's discard counter and restart count when it failed.
    discard_baseline: u64,
    from_restarts: u64,
    reference_ms: u64,
    /// (node, term, first index of its term) once promoted.
    promoted: Option<(String, u64, u64)>,
    wrote: bool,
    discards_known: bool,
}

#[derive(Debug, Default)]
pub struct Tracker {
    pending: Option<Pending>,
}

/// What the loop knows about the old primary when its failover starts.
pub struct FailedPrimary<'a> {
    pub name: &'a str,
    pub last_seen_ms: Option<u64>,
    pub unhealthy_since_ms: Option<u64>,
    pub last_status: Option<&'a NodeStatus>,
    pub restarts: u64,
}

impl Tracker {
    /// An election replaced `failed` (the recorded primary). A repeated bump during the same
    /// election only moves the term.
    pub fn election_started(
        &mut self,
        saved: &mut Saved,
        failed: Option<FailedPrimary>,
        term: u64,
        now: u64,
    ) {
        if let (Some(p), Some(last)) = (&self.pending, saved.last_failover.as_mut())
            && p.promoted.is_none()
        {
            last.term = term;
            return;
        }
        let Some(f) = failed else { return };
        let reference_ms = f.last_seen_ms.or(f.unhealthy_since_ms).unwrap_or(now);
        self.pending = Some(Pending {
            from: f.name.to_string(),
            discard_baseline: f.last_status.map_or(0, |s| s.entries_discarded),
            from_restarts: f.restarts,
            reference_ms,
            promoted: None,
            wrote: false,
            discards_known: false,
        });
        saved.last_failover = Some(LastFailover {
            from: f.name.to_string(),
            to: None,
            term,
            last_seen_ms: f.last_seen_ms,
            detected_at_ms: now,
            detection_ms: f.last_seen_ms.map(|t| now.saturating_sub(t)),
            promotion_ms: None,
            time_to_first_write_ms: None,
            entries_discarded: None,
            possible_loss: None,
        });
    }

    /// A promotion succeeded; `after` is the node's answer to it. Returns the failover's
    /// duration so far (ms) when this completes a failover.
    pub fn promoted(
        &mut self,
        saved: &mut Saved,
        node: &str,
        term: u64,
        after: &NodeStatus,
        now: u64,
    ) -> Option<u64> {
        let p = self.pending.as_mut().filter(|p| p.promoted.is_none())?;
        let first_index = if after.last_log_term == term {
            after.last_log_index
        } else {
            after.last_log_index + 1
        };
        p.promoted = Some((node.to_string(), term, first_index));
        p.discards_known = node == p.from;
        saved.failovers_total += 1;
        let took = now.saturating_sub(p.reference_ms);
        if let Some(last) = saved.last_failover.as_mut() {
            last.to = Some(node.to_string());
            last.term = term;
            last.promotion_ms = Some(took);
            if p.discards_known {
                last.entries_discarded = Some(0);
            }
        }
        Some(took)
    }

    pub fn possible_loss(&mut self, saved: &mut Saved, entries: Option<u64>) {
        if let Some(last) = saved
            .last_failover
            .as_mut()
            .filter(|_| self.pending.is_some())
        {
            last.possible_loss = entries;
        }
    }

    /// Completes the measurements from the latest probes. `status` and `restarts` look a node
    /// up by name. Returns the time to first write (ms) when it was measured by this call.
    pub fn observe<'a>(
        &mut self,
        saved: &mut Saved,
        ack: AckLevel,
        status: impl Fn(&str) -> Option<&'a NodeStatus>,
        restarts: impl Fn(&str) -> u64,
        now: u64,
    ) -> Option<u64> {
        let p = self.pending.as_mut()?;
        let (node, term, first_index) = p.promoted.clone()?;
        let last = saved.last_failover.as_mut()?;
        let mut measured = None;
        if !p.wrote
            && let Some(s) = status(&node)
            && s.term == term
            && s.commit_by_ack.is_some_and(|c| c.at(ack) >= first_index)
        {
            p.wrote = true;
            let took = now.saturating_sub(p.reference_ms);
            last.time_to_first_write_ms = Some(took);
            measured = Some(took);
        }
        if !p.discards_known
            && let Some(s) = status(&p.from)
            && s.term >= term
            && s.role == "replica"
            && s.ready
        {
            p.discards_known = true;
            let restarted = restarts(&p.from) > p.from_restarts;
            let discarded = if restarted || s.entries_discarded < p.discard_baseline {
                s.entries_discarded
            } else {
                s.entries_discarded - p.discard_baseline
            };
            last.entries_discarded = Some(discarded);
        }
        if p.wrote && p.discards_known {
            self.pending = None;
        }
        measured
    }
}

/// Switchover bookkeeping (no measurement beyond its duration).
pub fn switchover_started(saved: &mut Saved, from: &str, to: &str, term: u64, now: u64) {
    saved.last_switchover = Some(LastSwitchover {
        from: from.to_string(),
        to: to.to_string(),
        term,
        started_ms: now,
        duration_ms: None,
        abandoned: None,
    });
}

pub fn switchover_done(saved: &mut Saved, now: u64) {
    if let Some(s) = saved
        .last_switchover
        .as_mut()
        .filter(|s| s.duration_ms.is_none())
    {
        s.duration_ms = Some(now.saturating_sub(s.started_ms));
        saved.switchovers_total += 1;
    }
}

pub fn switchover_abandoned(saved: &mut Saved, why: String) {
    if let Some(s) = saved
        .last_switchover
        .as_mut()
        .filter(|s| s.duration_ms.is_none())
    {
        s.abandoned = Some(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::CommitByAck;

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

    #[test]
    fn measures_a_failover_from_the_last_good_probe() {
        let mut saved = Saved::new(3, 7000, AckLevel::Quorum);
        let mut t = Tracker::default();
        let old = st("primary", 2, (2, 50), 48, 1);
        t.election_started(
            &mut saved,
            Some(FailedPrimary {
                name: "n1",
                last_seen_ms: Some(1_000),
                unhealthy_since_ms: Some(1_050),
                last_status: Some(&old),
                restarts: 0,
            }),
            3,
            2_000,
        );
        // A second bump in the same election keeps the start.
        t.election_started(&mut saved, None, 4, 2_100);
        let after = st("primary", 4, (4, 51), 50, 0);
        assert_eq!(t.promoted(&mut saved, "n2", 4, &after, 2_200), Some(1_200));
        assert_eq!(saved.failovers_total, 1);

        let new_primary = st("primary", 4, (4, 51), 50, 0);
        let old_back = st("replica", 4, (4, 51), 0, 3);
        let none = |_: &str| -> Option<&NodeStatus> { None };
        assert_eq!(
            t.observe(&mut saved, AckLevel::Quorum, none, |_| 1, 2_300),
            None
        );
        let both = |n: &str| match n {
            "n2" => Some(&new_primary),
            "n1" => Some(&old_back),
            _ => None,
        };
        assert_eq!(
            t.observe(&mut saved, AckLevel::Quorum, both, |_| 1, 2_400),
            None
        );
        let committed = st("primary", 4, (4, 51), 51, 0);
        let both = |n: &str| match n {
            "n2" => Some(&committed),
            "n1" => Some(&old_back),
            _ => None,
        };
        assert_eq!(
            t.observe(&mut saved, AckLevel::Quorum, both, |_| 1, 2_500),
            Some(1_500)
        );
        let last = saved.last_failover.clone().unwrap();
        assert_eq!(
            (last.from.as_str(), last.to.as_deref(), last.term),
            ("n1", Some("n2"), 4)
        );
        assert_eq!(
            (
                last.detection_ms,
                last.promotion_ms,
                last.time_to_first_write_ms
            ),
            (Some(1_000), Some(1_200), Some(1_500))
        );
        // It restarted, so its counter started from zero again.
        assert_eq!(last.entries_discarded, Some(3));
        assert!(t.pending.is_none());
    }

    #[test]
    fn switchovers_count_once() {
        let mut saved = Saved::new(3, 7000, AckLevel::Quorum);
        switchover_started(&mut saved, "n1", "n2", 5, 100);
        switchover_done(&mut saved, 400);
        switchover_done(&mut saved, 500);
        assert_eq!(saved.switchovers_total, 1);
        assert_eq!(saved.last_switchover.unwrap().duration_ms, Some(300));
    }
}
