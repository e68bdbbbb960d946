//! Failover and switchover statistics: who failed, who took over, and how long each phase took.
//!
//! A failover is measured from two points: the first probe that found the old primary failing
//! (`failing_since_ms`: the detection window starts there; the duration in the Kubernetes status
//! and `rcluster_operator_failover_duration_seconds` end at the promotion), and the last probe that
//! found it healthy (`last_seen_ms`: the phases shown by the playground). "Time to first write"
//! ends at the first probe that shows the new primary's commit index (at the cluster's ack level)
//! at or past the first entry of its term (the no-op a promotion appends): from then on it
//! acknowledges writes at that level. Probe-based, so late by up to one probe interval.

use crate::failover::Role;
use serde::{Deserialize, Serialize};

use super::memory::{Memory, Probe};
use super::plan::Plan;
use crate::failover::{AckLevel, Action, Coordinator, SwitchoverOutcome};
use crate::nodes::CommandResult;

/// Which failures of the recorded primary count as failovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverCount {
    /// Every one: the nodes ran before this runtime started (the controller), so a primary that
    /// fails before this runtime saw it healthy failed under the cluster's clients all the same.
    Always,
    /// Only a primary this runtime saw healthy: it starts the nodes itself (the playground), and
    /// the election that resumes a cluster after its own start is not a failure.
    SeenHealthy,
}

/// The most recent failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFailover {
    pub from: String,
    /// The promoted node; `None` while the election is in progress.
    pub to: Option<String>,
    pub term: u64,
    /// When a probe last found `from` healthy (ms since the epoch).
    pub last_seen_ms: Option<u64>,
    /// When `from` failed its first probe.
    #[serde(default)]
    pub failing_since_ms: u64,
    /// When the election started (the term was bumped).
    pub detected_at_ms: u64,
    /// From `last_seen_ms` to the start of the election.
    pub detection_ms: Option<u64>,
    /// When the new primary was promoted.
    #[serde(default)]
    pub promoted_at_ms: Option<u64>,
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

impl LastFailover {
    /// From the first failing probe of the old primary to the promotion.
    pub fn duration_ms(&self) -> Option<u64> {
        let promoted = self.promoted_at_ms?;
        Some(promoted.saturating_sub(self.failing_since_ms))
    }
}

/// The most recent planned switchover.
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

/// Counters and the latest of each; what a runtime may keep durably (the playground's state file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default)]
    pub failovers_total: u64,
    #[serde(default)]
    pub switchovers_total: u64,
    #[serde(default)]
    pub last_failover: Option<LastFailover>,
    #[serde(default)]
    pub last_switchover: Option<LastSwitchover>,
}

/// What a step completed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completed {
    /// A failover whose new primary was just promoted.
    pub failover: Option<LastFailover>,
    /// A switchover whose target was just promoted.
    pub switchover: Option<LastSwitchover>,
}

/// What a probe round measured of the failover in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measured {
    /// The new primary acknowledged its first write: ms since `last_seen_ms` (or the failure).
    pub first_write_ms: Option<u64>,
    /// The old primary follows again and discarded this many entries.
    pub discarded: Option<u64>,
}

/// A failover being measured (in memory only).
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

#[derive(Debug)]
pub struct Stats {
    count: FailoverCount,
    pending: Option<Pending>,
    pub history: History,
}

impl Stats {
    pub fn new(count: FailoverCount, history: History) -> Stats {
        Stats {
            count,
            pending: None,
            history,
        }
    }

    /// A failover started and its promotion is not done yet.
    pub fn failing_over(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.promoted.is_none())
    }

    /// Before the record is stored: the elections, switchovers and possible losses `plan` starts
    /// from the record `before`.
    pub fn decided(&mut self, before: &Coordinator, plan: &Plan, memory: &Memory, now: u64) {
        let planned = matches!(
            plan.switchover,
            SwitchoverOutcome::Started { .. } | SwitchoverOutcome::Continuing { .. }
        );
        for action in &plan.actions {
            match action {
                Action::BumpTerm { to } => {
                    if let Some(sw) = &before.switchover {
                        self.switchover_abandoned(format!(
                            "an election replaced the switchover to {}",
                            sw.to
                        ));
                    }
                    if !planned && let Some(from) = &before.primary {
                        self.election_started(from, memory, *to, now);
                    }
                }
                Action::BeginSwitchover { from, to, term, .. } => {
                    self.history.last_switchover = Some(LastSwitchover {
                        from: from.clone(),
                        to: to.clone(),
                        term: *term,
                        started_ms: now,
                        duration_ms: None,
                        abandoned: None,
                    });
                }
                Action::ReportPossibleLoss { entries, .. } if self.pending.is_some() => {
                    if let Some(last) = self.history.last_failover.as_mut() {
                        last.possible_loss = *entries;
                    }
                }
                _ => {}
            }
        }
    }

    /// The term was bumped away from the recorded primary `from`. A repeated bump during the
    /// same election only moves the term.
    fn election_started(&mut self, from: &str, memory: &Memory, term: u64, now: u64) {
        if let (Some(p), Some(last)) = (&self.pending, self.history.last_failover.as_mut())
            && p.promoted.is_none()
        {
            last.term = term;
            return;
        }
        let seen = memory.get(from);
        let last_seen_ms = seen.and_then(|s| s.healthy_at_ms);
        if self.count == FailoverCount::SeenHealthy && last_seen_ms.is_none() {
            return;
        }
        let failing_since_ms = seen.and_then(|s| s.unhealthy_since_ms).unwrap_or(now);
        self.pending = Some(Pending {
            from: from.to_string(),
            discard_baseline: seen
                .and_then(|s| s.last.as_ref())
                .map_or(0, |s| s.entries_discarded),
            from_restarts: seen.map_or(0, |s| s.restarts),
            reference_ms: last_seen_ms.unwrap_or(failing_since_ms),
            promoted: None,
            wrote: false,
            discards_known: false,
        });
        self.history.last_failover = Some(LastFailover {
            from: from.to_string(),
            to: None,
            term,
            last_seen_ms,
            failing_since_ms,
            detected_at_ms: now,
            detection_ms: last_seen_ms.map(|t| now.saturating_sub(t)),
            promoted_at_ms: None,
            promotion_ms: None,
            time_to_first_write_ms: None,
            entries_discarded: None,
            possible_loss: None,
        });
    }

    /// After the node commands of a step from the record `before`: a successful promotion ends
    /// the switchover or the failover in progress.
    pub fn promoted(
        &mut self,
        before: &Coordinator,
        results: &[CommandResult],
        now: u64,
    ) -> Completed {
        let mut done = Completed::default();
        for r in results.iter().filter(|r| r.op == "promote") {
            let Ok(status) = &r.outcome else { continue };
            if before.switchover.is_some() {
                done.switchover = self.switchover_done(now);
                continue;
            }
            let Some(p) = self.pending.as_mut().filter(|p| p.promoted.is_none()) else {
                continue;
            };
            let first_index = if status.last_log_term == r.term {
                status.last_log_index
            } else {
                status.last_log_index + 1
            };
            p.promoted = Some((r.node.clone(), r.term, first_index));
            p.discards_known = r.node == p.from;
            self.history.failovers_total += 1;
            if let Some(last) = self.history.last_failover.as_mut() {
                last.to = Some(r.node.clone());
                last.term = r.term;
                last.promoted_at_ms = Some(now);
                last.promotion_ms = Some(now.saturating_sub(p.reference_ms));
                if p.discards_known {
                    last.entries_discarded = Some(0);
                }
                done.failover = Some(last.clone());
            }
        }
        done
    }

    fn switchover_done(&mut self, now: u64) -> Option<LastSwitchover> {
        let s = self
            .history
            .last_switchover
            .as_mut()
            .filter(|s| s.duration_ms.is_none())?;
        s.duration_ms = Some(now.saturating_sub(s.started_ms));
        self.history.switchovers_total += 1;
        Some(s.clone())
    }

    fn switchover_abandoned(&mut self, why: String) {
        if let Some(s) = self
            .history
            .last_switchover
            .as_mut()
            .filter(|s| s.duration_ms.is_none())
        {
            s.abandoned = Some(why);
        }
    }

    /// Completes the measurements of a promoted failover from a probe round.
    pub fn measure(&mut self, probes: &[Probe], ack: AckLevel, now: u64) -> Measured {
        let mut measured = Measured::default();
        let Some(p) = self.pending.as_mut() else {
            return measured;
        };
        let Some((node, term, first_index)) = p.promoted.clone() else {
            return measured;
        };
        let Some(last) = self.history.last_failover.as_mut() else {
            return measured;
        };
        let probe = |name: &str| probes.iter().find(|q| q.name == name);
        let status = |name: &str| probe(name).and_then(|q| q.status.as_ref());
        if !p.wrote
            && let Some(s) = status(&node)
            && s.term == term
            && s.commit_by_ack.is_some_and(|c| c.at(ack) >= first_index)
        {
            p.wrote = true;
            let took = now.saturating_sub(p.reference_ms);
            last.time_to_first_write_ms = Some(took);
            measured.first_write_ms = Some(took);
        }
        if !p.discards_known
            && let Some(s) = status(&p.from)
            && s.term >= term
            && s.role == Role::Replica
            && s.ready
        {
            p.discards_known = true;
            let restarted = probe(&p.from).is_some_and(|q| q.restarts > p.from_restarts);
            let discarded = if restarted || s.entries_discarded < p.discard_baseline {
                s.entries_discarded
            } else {
                s.entries_discarded - p.discard_baseline
            };
            last.entries_discarded = Some(discarded);
            measured.discarded = Some(discarded);
        }
        if p.wrote && p.discards_known {
            self.pending = None;
        }
        measured
    }
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
