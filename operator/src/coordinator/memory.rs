//! What a coordinator remembers about each member between probe rounds: since when it has been
//! failing (the decision's failure clock), when it was last healthy, and its last answer (the log
//! position of a member that stopped answering). In memory only: a restarted coordinator starts
//! the clocks again, which costs one more detection window, never safety.

use std::collections::BTreeMap;

use crate::failover::Observation;
use crate::nodes::{self, NodeStatus};

/// One member's answer in a probe round.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    pub name: String,
    /// Its `/v1/status`; `None` when it did not answer.
    pub status: Option<NodeStatus>,
    /// Why it did not answer.
    pub error: Option<String>,
    /// Answers and reports ready (on Kubernetes: and its pod is not going away).
    pub healthy: bool,
    /// Certain not to serve on, whatever it answers: nothing listens at its address, or (on
    /// Kubernetes) its pod is being deleted or does not exist.
    pub gone: bool,
    /// When the probe was sent and when it was answered (the caller's clock, ms).
    pub sent_ms: u64,
    pub answered_ms: u64,
    /// How often the member's process was restarted, where the runtime knows it (counters the
    /// node reports start again from zero after a restart).
    pub restarts: u64,
}

impl Probe {
    pub fn ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.ready)
    }
}

/// What is remembered about one member.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Since when it has failed every probe (unreachable or not healthy): from the first
    /// failing probe of the current run of failures.
    pub unhealthy_since_ms: Option<u64>,
    /// When a probe last found it healthy.
    pub healthy_at_ms: Option<u64>,
    /// Its last answer, kept while it does not answer.
    pub last: Option<NodeStatus>,
    pub restarts: u64,
}

/// The memory of one replica group's members.
#[derive(Debug, Default)]
pub struct Memory {
    members: BTreeMap<String, Seen>,
}

impl Memory {
    /// Takes in one probe round and returns the failover observations. Members that were not
    /// probed are forgotten. A member that stopped answering keeps the term and log position it
    /// was last seen at: they estimate a possible loss, refuse promoting an empty log, and keep
    /// a term handed out by someone else in view.
    pub fn observe(&mut self, probes: &[Probe]) -> Vec<Observation> {
        self.members
            .retain(|name, _| probes.iter().any(|p| &p.name == name));
        probes
            .iter()
            .map(|p| {
                let seen = self.members.entry(p.name.clone()).or_default();
                seen.restarts = p.restarts;
                if p.healthy {
                    seen.unhealthy_since_ms = None;
                    seen.healthy_at_ms = Some(p.answered_ms);
                } else {
                    seen.unhealthy_since_ms.get_or_insert(p.sent_ms);
                }
                let since = seen.unhealthy_since_ms;
                let mut obs = match &p.status {
                    Some(status) => {
                        seen.last = Some(status.clone());
                        nodes::observation(status, &p.name, since)
                    }
                    None => {
                        let mut obs = nodes::unreachable(&p.name, since);
                        if let Some(last) = &seen.last {
                            obs.term = last.term;
                            obs.last_log_term = last.last_log_term;
                            obs.last_log_index = last.last_log_index;
                            obs.applied_index = last.applied_index;
                        }
                        obs
                    }
                };
                obs.gone = p.gone;
                obs
            })
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Seen> {
        self.members.get(name)
    }

    /// Starts `name`'s failure clock afresh: a node just promoted is judged from its promotion,
    /// not from the failures it had while fenced during the election (or it would be deposed at
    /// once if it is not ready at the very next probe).
    pub fn forget_failures(&mut self, name: &str) {
        if let Some(seen) = self.members.get_mut(name) {
            seen.unhealthy_since_ms = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(term: u64, index: u64, ready: bool) -> NodeStatus {
        NodeStatus {
            node: "n1".into(),
            role: "primary".into(),
            term,
            last_log_term: term,
            last_log_index: index,
            applied_index: index,
            ready,
            ..NodeStatus::default()
        }
    }

    fn probe(name: &str, status: Option<NodeStatus>, sent: u64) -> Probe {
        Probe {
            name: name.into(),
            healthy: status.as_ref().is_some_and(|s| s.ready),
            status,
            sent_ms: sent,
            answered_ms: sent + 1,
            ..Probe::default()
        }
    }

    #[test]
    fn failures_are_timed_from_the_first_failing_probe_and_clear_on_recovery() {
        let mut m = Memory::default();
        m.observe(&[probe("n1", Some(status(2, 7, true)), 100)]);
        assert_eq!(m.get("n1").unwrap().healthy_at_ms, Some(101));
        m.observe(&[probe("n1", None, 200)]);
        m.observe(&[probe("n1", Some(status(2, 7, false)), 300)]);
        let o = m.observe(&[probe("n1", None, 400)]);
        assert_eq!(o[0].unhealthy_since_ms, Some(200));
        let seen = m.get("n1").unwrap();
        assert_eq!(
            (seen.unhealthy_since_ms, seen.healthy_at_ms),
            (Some(200), Some(101))
        );
        let o = m.observe(&[probe("n1", Some(status(2, 9, true)), 500)]);
        assert!(o[0].reachable && o[0].unhealthy_since_ms.is_none());
    }

    #[test]
    fn a_node_that_stops_answering_keeps_its_last_seen_term_and_position() {
        let mut m = Memory::default();
        m.observe(&[probe("n1", Some(status(2, 7, true)), 100)]);
        let o = m.observe(&[probe("n1", None, 200)]);
        assert!(!o[0].reachable);
        assert_eq!((o[0].term, o[0].log_position()), (2, (2, 7)));
        assert_eq!(o[0].applied_index, 7);
    }

    #[test]
    fn a_promoted_node_starts_with_a_clean_failure_clock_and_others_keep_theirs() {
        let mut m = Memory::default();
        m.observe(&[probe("n1", None, 5), probe("n2", None, 5)]);
        m.forget_failures("n2");
        assert_eq!(m.get("n2").unwrap().unhealthy_since_ms, None);
        assert_eq!(m.get("n1").unwrap().unhealthy_since_ms, Some(5));
        let o = m.observe(&[probe("n1", None, 9), probe("n2", None, 9)]);
        assert_eq!(o[1].unhealthy_since_ms, Some(9));
    }

    #[test]
    fn members_no_longer_probed_are_forgotten() {
        let mut m = Memory::default();
        m.observe(&[
            probe("n1", None, 5),
            probe("n2", Some(status(1, 1, true)), 5),
        ]);
        m.observe(&[probe("n1", None, 6)]);
        assert!(m.get("n2").is_none());
        let o = m.observe(&[probe("n2", None, 7)]);
        assert_eq!((o[0].term, o[0].unhealthy_since_ms), (0, Some(7)));
    }
}
