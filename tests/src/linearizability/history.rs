//! The recorded history and its reduction to register steps: what each operation did to its
//! key's register, with values interned and unknown outcomes left open.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

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

pub(super) const INFINITY: u64 = u64::MAX;

/// Values as small integers, so register states are cheap to hash.
#[derive(Default)]
pub(super) struct Interner {
    pub(super) names: Vec<String>,
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
pub(super) enum Step {
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
    pub(super) fn known_version(&self) -> Option<u64> {
        match *self {
            Step::Put { version, .. } | Step::Cas { version, .. } => version,
            _ => None,
        }
    }
}

pub(super) fn to_step(
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
