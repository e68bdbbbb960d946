//! Request options and response bodies of the v1 API (docs/API.md).
//!
//! Response types are lenient (`#[serde(default)]` on optional parts) so that a node that
//! adds fields does not break older clients.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Write acknowledgement level and read consistency: the wire contract's own types.
pub use rcluster_proto::{AckLevel, Consistency};

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
    Offset(u64),
}

impl FromStr for Start {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(Start::Earliest),
            "latest" => Ok(Start::Latest),
            n => n
                .parse()
                .map(Start::Offset)
                .map_err(|_| format!("expected earliest, latest or an offset, got {s:?}")),
        }
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Start::Earliest => f.write_str("earliest"),
            Start::Latest => f.write_str("latest"),
            Start::Offset(n) => write!(f, "{n}"),
        }
    }
}

/// Options common to every write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub ack: Option<AckLevel>,
    /// Sent as `Idempotency-Key`; a fresh random key is used when `None`.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Seconds to live (> 0, fractions allowed).
    pub ttl: Option<f64>,
    /// 0 = must not exist; otherwise the current version must equal it.
    pub if_version: Option<u64>,
    pub write: WriteOptions,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub if_version: Option<u64>,
    pub write: WriteOptions,
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub prefix: Option<String>,
    pub start_after: Option<String>,
    pub limit: Option<u32>,
    pub consistency: Option<Consistency>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PutResult {
    pub key: String,
    pub version: u64,
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub key: String,
    pub value: Value,
    pub version: u64,
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// When the key was created (the primary's clock; 0 when unknown).
    #[serde(default)]
    pub created_ms: u64,
    /// When the current value was written.
    #[serde(default)]
    pub modified_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeleteResult {
    pub key: String,
    pub version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IncrResult {
    pub key: String,
    pub value: i64,
    pub version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListPage {
    pub items: Vec<Record>,
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicCreated {
    pub topic: String,
    pub created: bool,
    #[serde(default)]
    pub retention: Retention,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicDeleted {
    pub topic: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubscriptionInfo {
    pub name: String,
    pub cursor: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicInfo {
    pub name: String,
    #[serde(default)]
    pub retention: Retention,
    pub first_offset: u64,
    pub next_offset: u64,
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicList {
    pub topics: Vec<TopicInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Published {
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PublishedBatch {
    pub offsets: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subscribed {
    pub topic: String,
    pub subscription: String,
    pub cursor: u64,
    pub created: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Unsubscribed {
    pub topic: String,
    pub subscription: String,
    pub deleted: bool,
}

/// A topic message (in `pull`, `read` and `stream`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub offset: u64,
    pub value: Value,
    #[serde(default)]
    pub published_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pulled {
    pub messages: Vec<Message>,
    pub cursor: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReadResult {
    pub messages: Vec<Message>,
    pub first_offset: u64,
    /// Where the next page starts (pass it as `from`).
    pub next_offset: u64,
    /// Where the topic ends: the offset its next message will get.
    #[serde(default)]
    pub end_offset: Option<u64>,
}

/// A `watch` event's data (`event:` is put, delete or expire).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WatchData {
    pub key: String,
    #[serde(default)]
    pub value: Option<Value>,
    pub version: u64,
    #[serde(default)]
    pub modified_ms: u64,
    #[serde(default)]
    pub created_ms: Option<u64>,
}

/// What a merged read sorts by, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MergeOrder {
    /// The time of the last write (`modified_ms`).
    #[default]
    Modified,
    Version,
}

impl MergeOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeOrder::Modified => "modified",
            MergeOrder::Version => "version",
        }
    }
}

/// A merged read: the records under several prefixes in one page, newest first.
#[derive(Debug, Clone, Default)]
pub struct MergedOptions {
    pub prefixes: Vec<String>,
    pub order: Option<MergeOrder>,
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    pub consistency: Option<Consistency>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergedPage {
    pub items: Vec<Record>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    #[serde(default)]
    pub next: Option<String>,
}

/// `GET /v1/status`: the wire contract's report.
pub use rcluster_proto::NodeStatus as Status;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn start_parses() {
        assert_eq!("earliest".parse::<Start>(), Ok(Start::Earliest));
        assert_eq!("latest".parse::<Start>(), Ok(Start::Latest));
        assert_eq!("17".parse::<Start>(), Ok(Start::Offset(17)));
        assert!("-1".parse::<Start>().is_err());
        assert!("soon".parse::<Start>().is_err());
    }

    #[test]
    fn lenient_response_parsing() {
        let r: Record =
            serde_json::from_value(json!({"key":"a","value":1,"version":3,"extra":true})).unwrap();
        assert_eq!(r.expires_at_ms, None);
        let t: TopicList = serde_json::from_value(json!({"topics":[
            {"name":"t","retention":{},"first_offset":0,"next_offset":2,"subscriptions":[]}
        ]}))
        .unwrap();
        assert_eq!(t.topics[0].next_offset, 2);
    }
}
