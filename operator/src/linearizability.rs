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

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use search::{KeyResult, Op, Search, describe};

mod search;
#[cfg(test)]
mod tests;

/// One client operation as recorded by a test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: u64,
    pub key: String,
    pub kind: OpKind,
    /// When the request was sent (any monotonic unit shared by the whole history).
    pub call: u64,
    /// When the answer arrived; `None` when it never did.
    pub ret: Option<u64>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpKind {
    Put {
        value: String,
    },
    Get,
    /// Write `value` iff the current version is `expected_version` (0: the key must not exist).
    Cas {
        expected_version: u64,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The operation completed with this result.
    Ok(Observed),
    /// Known to have had no effect (rejected before it reached the log).
    Failed,
    /// May or may not have taken effect (timeout, connection lost, 503 after forwarding).
    Unknown,
}

/// What a completed operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Observed {
    /// A put, or a compare-and-set that matched: the version it wrote.
    Written { version: u64 },
    /// A compare-and-set whose expected version did not match (`412 version_mismatch`).
    Mismatch,
    /// A get that found the key.
    Found { value: String, version: u64 },
    /// A get that did not find the key.
    NotFound,
}

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

/// The history itself is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("operation {index}: completed without a return time")]
    MissingReturn { index: usize },
    #[error("operation {index}: returned at {ret} before it was called at {call}")]
    ReturnBeforeCall { index: usize, call: u64, ret: u64 },
    #[error("operation {index}: a {kind} cannot return {result}")]
    ResultDoesNotMatch {
        index: usize,
        kind: &'static str,
        result: &'static str,
    },
    #[error("operation {index}: version 0 is never written (versions are log indices)")]
    ZeroVersion { index: usize },
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

const INFINITY: u64 = u64::MAX;

/// Values as small integers, so register states are cheap to hash.
#[derive(Default)]
struct Interner {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Interner {
    fn id(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(value.to_string());
        self.ids.insert(value.to_string(), id);
        id
    }
}

/// An operation reduced to its effect on one register; `None` versions are unknown outcomes.
#[derive(Debug, Clone, Copy)]
enum Step {
    Put {
        value: u32,
        version: Option<u64>,
    },
    Cas {
        expected: u64,
        value: u32,
        version: Option<u64>,
    },
    CasMismatch {
        expected: u64,
    },
    Get {
        found: Option<(u32, u64)>,
    },
}

impl Step {
    fn known_version(&self) -> Option<u64> {
        match *self {
            Step::Put { version, .. } | Step::Cas { version, .. } => version,
            _ => None,
        }
    }
}

fn to_step(
    index: usize,
    op: &Operation,
    values: &mut Interner,
) -> Result<Option<Step>, HistoryError> {
    let observed = match &op.outcome {
        Outcome::Failed => return Ok(None),
        Outcome::Unknown => None,
        Outcome::Ok(observed) => {
            let ret = op.ret.ok_or(HistoryError::MissingReturn { index })?;
            if ret < op.call {
                return Err(HistoryError::ReturnBeforeCall {
                    index,
                    call: op.call,
                    ret,
                });
            }
            Some(observed)
        }
    };
    let mismatch = |kind, result| HistoryError::ResultDoesNotMatch {
        index,
        kind,
        result,
    };
    let written = |version: u64| {
        if version == 0 {
            Err(HistoryError::ZeroVersion { index })
        } else {
            Ok(Some(version))
        }
    };
    let step = match (&op.kind, observed) {
        (OpKind::Get, None) => return Ok(None),
        (OpKind::Get, Some(Observed::NotFound)) => Step::Get { found: None },
        (OpKind::Get, Some(Observed::Found { value, version })) => Step::Get {
            found: Some((values.id(value), *version)),
        },
        (OpKind::Put { value }, None) => Step::Put {
            value: values.id(value),
            version: None,
        },
        (OpKind::Put { value }, Some(Observed::Written { version })) => Step::Put {
            value: values.id(value),
            version: written(*version)?,
        },
        (
            OpKind::Cas {
                expected_version,
                value,
            },
            None,
        ) => Step::Cas {
            expected: *expected_version,
            value: values.id(value),
            version: None,
        },
        (
            OpKind::Cas {
                expected_version,
                value,
            },
            Some(Observed::Written { version }),
        ) => Step::Cas {
            expected: *expected_version,
            value: values.id(value),
            version: written(*version)?,
        },
        (
            OpKind::Cas {
                expected_version, ..
            },
            Some(Observed::Mismatch),
        ) => Step::CasMismatch {
            expected: *expected_version,
        },
        (kind, Some(result)) => return Err(mismatch(kind_name(kind), result_name(result))),
    };
    Ok(Some(step))
}

fn kind_name(kind: &OpKind) -> &'static str {
    match kind {
        OpKind::Put { .. } => "put",
        OpKind::Get => "get",
        OpKind::Cas { .. } => "cas",
    }
}

fn result_name(result: &Observed) -> &'static str {
    match result {
        Observed::Written { .. } => "written",
        Observed::Mismatch => "mismatch",
        Observed::Found { .. } => "found",
        Observed::NotFound => "not_found",
    }
}
