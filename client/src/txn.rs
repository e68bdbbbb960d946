//! Transactions (`POST /v1/txn`, docs/API.md "Transactions"): comparisons, then the `success`
//! operations when all hold and the `failure` operations otherwise, applied atomically.
//!
//! ```no_run
//! # async fn demo(client: rcluster_client::Client) -> Result<(), rcluster_client::Error> {
//! use rcluster_client::{Compare, Txn, TxnOp, WriteOptions};
//! use serde_json::json;
//! // One unit of product p7 and its order, or nothing: keys and topic share the slot of `p7`.
//! let buy = Txn::new()
//!     .when(Compare::at_least("{p7}/stock", 1))
//!     .then(TxnOp::incr("{p7}/stock", -1).min(0))
//!     .then(TxnOp::put("{p7}/orders/o1", json!({"buyer": "ann"})))
//!     .then(TxnOp::publish("p7", json!("o1")));
//! let done = client.txn(&buy, &WriteOptions::default()).await?;
//! println!("sold: {}", done.succeeded);
//! # Ok(()) }
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A transaction request (its JSON is the body of `POST /v1/txn`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Txn {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<Compare>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub success: Vec<TxnOp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a comparison (all must hold for `success` to run).
    pub fn when(mut self, c: Compare) -> Txn {
        self.compare.push(c);
        self
    }

    /// Adds an operation of the `success` branch.
    pub fn then(mut self, op: TxnOp) -> Txn {
        self.success.push(op);
        self
    }

    /// The key or topic the transaction is routed by: the first comparison's key, else the first
    /// operation's key or topic (the node's rule, `POST /v1/txn` in docs/API.md).
    pub fn first_name(&self) -> Option<&str> {
        let mut from_ops = self.success.iter().chain(&self.failure).map(|o| match o {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Incr { key, .. } => key,
            TxnOp::Publish { topic, .. } => topic,
        });
        self.compare
            .first()
            .map(|c| &c.key)
            .or_else(|| from_ops.next())
            .map(String::as_str)
    }

    /// Adds an operation of the `failure` branch.
    pub fn otherwise(mut self, op: TxnOp) -> Txn {
        self.failure.push(op);
        self
    }
}

/// A condition on one record; every test set must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The record's version (0: it does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

impl Compare {
    fn on(key: &str) -> Compare {
        Compare {
            key: key.to_string(),
            ..Compare::default()
        }
    }

    pub fn exists(key: &str) -> Compare {
        Compare {
            exists: Some(true),
            ..Compare::on(key)
        }
    }

    pub fn absent(key: &str) -> Compare {
        Compare {
            exists: Some(false),
            ..Compare::on(key)
        }
    }

    pub fn version(key: &str, version: u64) -> Compare {
        Compare {
            version: Some(version),
            ..Compare::on(key)
        }
    }

    pub fn value(key: &str, value: Value) -> Compare {
        Compare {
            value: Some(value),
            ..Compare::on(key)
        }
    }

    /// The value is an integer of at least `n`.
    pub fn at_least(key: &str, n: i64) -> Compare {
        Compare {
            min: Some(n),
            ..Compare::on(key)
        }
    }

    /// The value is an integer of at most `n`.
    pub fn at_most(key: &str, n: i64) -> Compare {
        Compare {
            max: Some(n),
            ..Compare::on(key)
        }
    }
}

/// One operation of a branch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum TxnOp {
    Put {
        key: String,
        value: Value,
        /// Seconds to live.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl: Option<f64>,
    },
    /// Removes the record if it exists.
    Delete {
        key: String,
    },
    Incr {
        key: String,
        #[serde(default = "one")]
        delta: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<i64>,
    },
    Publish {
        topic: String,
        value: Value,
    },
}

fn one() -> i64 {
    1
}

impl TxnOp {
    pub fn put(key: &str, value: Value) -> TxnOp {
        TxnOp::Put {
            key: key.to_string(),
            value,
            ttl: None,
        }
    }

    pub fn delete(key: &str) -> TxnOp {
        TxnOp::Delete {
            key: key.to_string(),
        }
    }

    pub fn incr(key: &str, delta: i64) -> TxnOp {
        TxnOp::Incr {
            key: key.to_string(),
            delta,
            min: None,
            max: None,
        }
    }

    pub fn publish(topic: &str, value: Value) -> TxnOp {
        TxnOp::Publish {
            topic: topic.to_string(),
            value,
        }
    }

    /// A put's time to live, in seconds.
    pub fn ttl(mut self, secs: f64) -> TxnOp {
        if let TxnOp::Put { ttl, .. } = &mut self {
            *ttl = Some(secs);
        }
        self
    }

    /// An increment's lower bound (the transaction fails rather than cross it).
    pub fn min(mut self, n: i64) -> TxnOp {
        if let TxnOp::Incr { min, .. } = &mut self {
            *min = Some(n);
        }
        self
    }

    /// An increment's upper bound.
    pub fn max(mut self, n: i64) -> TxnOp {
        if let TxnOp::Incr { max, .. } = &mut self {
            *max = Some(n);
        }
        self
    }
}

/// The answer to a transaction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TxnResult {
    /// Every comparison held and `success` ran; otherwise `failure` ran.
    pub succeeded: bool,
    /// The first comparison that did not hold.
    #[serde(default)]
    pub failed_compare: Option<u32>,
    /// One per operation of the branch that ran, in order.
    pub results: Vec<TxnOpResult>,
}

/// What one operation did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TxnOpResult {
    pub op: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    /// The record's version after a put or an increment.
    #[serde(default)]
    pub version: Option<u64>,
    /// The value after an increment.
    #[serde(default)]
    pub value: Option<i64>,
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// A delete found the record.
    #[serde(default)]
    pub deleted: Option<bool>,
    /// A publish's offset.
    #[serde(default)]
    pub offset: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_the_wire_form() {
        let t = Txn::new()
            .when(Compare::at_least("{p}/s", 1))
            .then(TxnOp::incr("{p}/s", -1).min(0))
            .then(TxnOp::put("{p}/o", json!(1)).ttl(2.5))
            .otherwise(TxnOp::delete("{p}/o"));
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({
                "compare": [{"key": "{p}/s", "min": 1}],
                "success": [
                    {"op": "incr", "key": "{p}/s", "delta": -1, "min": 0},
                    {"op": "put", "key": "{p}/o", "value": 1, "ttl": 2.5},
                ],
                "failure": [{"op": "delete", "key": "{p}/o"}],
            })
        );
        let op: TxnOp = serde_json::from_value(json!({"op": "incr", "key": "k"})).unwrap();
        assert_eq!(op, TxnOp::incr("k", 1));
    }
}
