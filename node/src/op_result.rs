//! What applying an operation answers: the client's result, and what a retry with the same
//! idempotency key is answered again (kept in the idempotency results, so not in the state).

use crate::log::{Json, Retention, TxnResult};
use serde::{Deserialize, Serialize};

/// A message as a pull delivered it (and as a retried pull's idempotency record keeps it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pulled {
    pub value: Json,
    pub published_at_ms: u64,
}

/// The result of an applied operation: what the client is told, and what a retry with the same
/// idempotency key is told again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpResult {
    Noop,
    // Record results leave out the key: the request names it, and every write with an idempotency
    // key keeps its result for a day, so a copy of the key would cost memory for nothing.
    Put {
        version: u64,
        expires_at_ms: Option<u64>,
    },
    Delete {
        version: u64,
    },
    Incr {
        value: i64,
        version: u64,
    },
    Expired {
        count: u64,
    },
    CreateTopic {
        topic: String,
        created: bool,
        retention: Retention,
    },
    DeleteTopic {
        topic: String,
    },
    Publish {
        first_offset: u64,
        count: u64,
    },
    Trimmed {
        dropped: u64,
    },
    Subscribe {
        topic: String,
        name: String,
        cursor: u64,
        created: bool,
    },
    Unsubscribe {
        topic: String,
        name: String,
    },
    Pull {
        messages: Vec<(u64, Pulled)>,
        cursor: u64,
    },
    /// A transaction: which branch ran (and, when the failure branch ran, the first comparison
    /// that did not hold) and each operation's result in order.
    Txn {
        succeeded: bool,
        failed_compare: Option<u32>,
        results: Vec<TxnResult>,
    },
    /// Idempotency keys forgotten by [`Op::ForgetIdem`].
    Forgotten {
        count: u64,
    },
}
