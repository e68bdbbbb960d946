//! Primary/replica replication: what goes over the wire, which index each ack level has reached,
//! and the primary's per-replica log shippers.

pub mod commit;
pub mod sender;

pub use commit::AckLevel;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Cluster settings of this node, as it was started.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub me: String,
    /// Every member's client URL, including this node's, as given at start. Empty for a
    /// standalone node. The member list in force lives in the engine's core: the coordinator
    /// changes it with promote and follow, so it only ever changes together with the term.
    pub members: BTreeMap<String, String>,
    pub secret: Option<String>,
    /// The cluster's id; `None` for a node started without one (it takes no side).
    pub id: Option<String>,
    pub default_ack: AckLevel,
    /// How often an idle primary sends heartbeats.
    pub heartbeat: Duration,
    /// A primary that has not heard from a quorum for this long stops claiming to be primary for
    /// reads and reports not ready.
    pub lease: Duration,
    /// A replica further behind than this many entries reports not ready.
    pub ready_lag: u64,
}

impl Cluster {
    pub fn standalone(me: &str) -> Cluster {
        Cluster {
            me: me.to_string(),
            members: BTreeMap::new(),
            secret: None,
            id: None,
            default_ack: AckLevel::Quorum,
            heartbeat: Duration::from_millis(50),
            lease: Duration::from_millis(1000),
            ready_lag: 1000,
        }
    }
}

/// Header of an append request; the entries follow as checksummed frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppendHeader {
    pub term: u64,
    pub from: String,
    pub prev_index: u64,
    pub prev_term: u64,
    /// The primary's quorum commit index.
    pub commit: u64,
    pub primary_last_index: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppendResponse {
    pub term: u64,
    pub ok: bool,
    pub last_index: u64,
    pub durable_index: u64,
    pub applied_index: u64,
    /// Where the primary should resume after a mismatch.
    pub retry_from: Option<u64>,
    /// The replica cannot continue from its log: send a snapshot.
    pub need_snapshot: bool,
    pub error: Option<String>,
}

/// The member list: name → client URL, this node included.
pub type Members = BTreeMap<String, String>;

/// Body of fence / promote / follow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleCommand {
    pub term: u64,
    #[serde(default)]
    pub primary: Option<String>,
    /// promote / follow: the member list from this term on (absent: unchanged).
    #[serde(default)]
    pub members: Option<Members>,
}

/// The terms of a log: runs of consecutive entries with one term, plus the (index, term) of the
/// snapshot the log continues from. Terms change rarely, so this stays tiny.
#[derive(Debug, Clone, Default)]
pub struct TermRuns {
    base_index: u64,
    base_term: u64,
    runs: Vec<(u64, u64)>,
}

impl TermRuns {
    pub fn new(base_index: u64, base_term: u64) -> Self {
        TermRuns {
            base_index,
            base_term,
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, index: u64, term: u64) {
        if self.runs.last().is_none_or(|(_, t)| *t != term) {
            self.runs.push((index, term));
        }
    }

    /// The term of the entry at `index`, if this log knows it (0 for index 0).
    pub fn term_at(&self, index: u64, last_index: u64) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        if index > last_index || index < self.base_index {
            return None;
        }
        match self.runs.iter().rev().find(|(first, _)| *first <= index) {
            Some((_, t)) => Some(*t),
            None if index == self.base_index => Some(self.base_term),
            None => None,
        }
    }

    /// Forgets entries from `index` on.
    pub fn truncate(&mut self, index: u64) {
        self.runs.retain(|(first, _)| *first < index);
    }

    /// The first index of the run holding `index`: where a primary should retry after a conflict.
    pub fn run_start(&self, index: u64) -> u64 {
        self.runs
            .iter()
            .rev()
            .find(|(first, _)| *first <= index)
            .map_or(self.base_index + 1, |(first, _)| *first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_runs_answer_by_index() {
        let mut t = TermRuns::new(10, 2);
        for i in 11..=15 {
            t.push(i, 2);
        }
        for i in 16..=20 {
            t.push(i, 3);
        }
        assert_eq!(t.term_at(9, 20), None, "compacted");
        assert_eq!(t.term_at(10, 20), Some(2));
        assert_eq!(t.term_at(15, 20), Some(2));
        assert_eq!(t.term_at(16, 20), Some(3));
        assert_eq!(t.term_at(21, 20), None);
        assert_eq!(t.run_start(18), 16);
        t.truncate(16);
        assert_eq!(t.term_at(15, 15), Some(2));
        t.push(16, 4);
        assert_eq!(t.term_at(16, 16), Some(4));
    }

    #[test]
    fn a_fresh_log_has_term_zero_at_index_zero() {
        let t = TermRuns::new(0, 0);
        assert_eq!(t.term_at(0, 0), Some(0));
        assert_eq!(t.term_at(1, 0), None);
    }
}
