//! Linearizability checker for key-value register histories: put, get and compare-and-set on
//! several keys, as recorded by a test client against a live cluster.
//!
//! Algorithm: Wing & Gong's search with Lowe's just-in-time linearization and memoization of
//! (set of linearized operations, register state), the approach of Porcupine and Knossos. Each key
//! is checked on its own: linearizability is local (P-compositionality), so a history is
//! linearizable iff every per-key sub-history is. The search is bounded by a step budget and
//! answers [`Verdict::Inconclusive`] when the budget runs out, so it never hangs a test.
//!
//! Model (rcluster's records): every key starts absent with version 0. A successful write gets
//! a new version, the log index of its entry, so versions of one key strictly grow in the
//! linearization and a log index is never the version of two writes (on any key). A
//! compare-and-set succeeds iff the current version equals the expected one (0 = absent).
//!
//! Outcomes:
//! - `Failed` operations had no effect and are dropped.
//! - `Unknown` operations may or may not have taken effect: they never return (return time is
//!   infinity), may be linearized anywhere after their call, or never. An unknown `get` tells
//!   nothing and is dropped.
//! - The version an unknown write produced is unknown. The state then records only a lower
//!   bound (the version before it, plus one). A later read (or compare-and-set) that names a
//!   version fixes it, provided the version is at least that bound and is not the version of any
//!   write whose outcome is known. So a read that returns a version nobody was told about must
//!   be explained by some pending unknown write carrying the same value, linearized before it.
//!   After an unknown write, a known write is only required to have a higher version than the
//!   bound; a failed compare-and-set is accepted whenever the unknown version could differ from
//!   the expected one. Both are deliberately permissive: the checker never reports a violation
//!   that did not happen, at the price of missing a few that involve unknown writes.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use history::{INFINITY, Interner, to_step};
use search::{KeyResult, Op, Search, describe};

pub use history::{HistoryError, Observed, OpKind, Operation, Outcome};

mod history;
mod search;
#[cfg(test)]
#[path = "linearizability_tests.rs"]
mod tests;

/// Bounds of the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Search steps over the whole history before giving up with `Inconclusive`.
    pub max_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 2_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Linearizable,
    Violation(Violation),
    /// The step budget ran out while checking `key`.
    Inconclusive {
        key: String,
        steps: u64,
    },
}

/// Why a key's history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub key: String,
    /// Indices into the history of the longest sequence of this key's operations that could be
    /// linearized, in linearization order.
    pub longest_prefix: Vec<usize>,
    /// Index of an operation that had returned but could not take effect after that prefix.
    pub stuck: usize,
    /// The same, in words.
    pub description: String,
}

/// Check `history`. Every key must start absent (use fresh keys).
pub fn check(history: &[Operation], limits: Limits) -> Result<Verdict, HistoryError> {
    let mut values = Interner::default();
    let mut known_versions = HashSet::new();
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        if let Some(step) = to_step(index, op, &mut values)? {
            if let Some(v) = step.known_version() {
                known_versions.insert(v);
            }
            // Only operations that never returned sort after every return.
            let ret = match op.outcome {
                Outcome::Unknown => INFINITY,
                _ => op.ret.map_or(INFINITY, |r| r.min(INFINITY - 1)),
            };
            by_key.entry(&op.key).or_default().push(Op {
                index,
                call: op.call,
                ret,
                step,
            });
        }
    }
    let mut budget = limits.max_steps;
    let mut inconclusive = None;
    for (key, ops) in by_key {
        let search = Search {
            ops: &ops,
            known_versions: &known_versions,
        };
        match search.run(&mut budget) {
            KeyResult::Ok => {}
            KeyResult::Stuck { prefix, stuck } => {
                let description = describe(history, &values, key, &prefix, stuck, &search);
                return Ok(Verdict::Violation(Violation {
                    key: key.to_string(),
                    longest_prefix: prefix.iter().map(|&i| ops[i].index).collect(),
                    stuck: ops[stuck].index,
                    description,
                }));
            }
            KeyResult::OutOfSteps => {
                inconclusive.get_or_insert_with(|| key.to_string());
            }
        }
    }
    Ok(match inconclusive {
        Some(key) => Verdict::Inconclusive {
            key,
            steps: limits.max_steps,
        },
        None => Verdict::Linearizable,
    })
}
