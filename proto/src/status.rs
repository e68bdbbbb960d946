//! `GET /v1/status`: one typed report that the node serializes and the client and the operator
//! parse. Parsing is lenient (`default` on everything optional) so a newer node's extra fields or
//! an older node's missing ones never break a reader.

use crate::ack::{AckLevel, CommitByAck};
use crate::migration::SlotState;
use crate::role::Role;
use crate::slots::ShardId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node's member name.
    pub node: String,
    /// The cluster this node belongs to (`None`: started without an id).
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The shard (replica group) this node belongs to.
    #[serde(default)]
    pub shard: ShardId,
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub term: u64,
    /// The primary this node knows for its term (a primary names itself).
    #[serde(default)]
    pub primary: Option<String>,
    /// A replica: the primary it replicates from.
    #[serde(default)]
    pub following: Option<String>,
    #[serde(default)]
    pub primary_url: Option<String>,
    #[serde(default)]
    pub last_log_index: u64,
    #[serde(default)]
    pub last_log_term: u64,
    /// The quorum commit index as this node knows it.
    #[serde(default)]
    pub commit_index: u64,
    /// A primary: the index of its term's first entry. Once that is committed at the cluster's ack
    /// level, so is the member list it was promoted with.
    #[serde(default)]
    pub term_start: u64,
    /// A primary or standalone node: the highest index acknowledged at each level.
    #[serde(default)]
    pub commit_by_ack: Option<CommitByAck>,
    #[serde(default)]
    pub durable_index: u64,
    #[serde(default)]
    pub applied_index: u64,
    #[serde(default)]
    pub known_commit: u64,
    #[serde(default)]
    pub snapshot_index: u64,
    #[serde(default)]
    pub wal_segments: u64,
    #[serde(default)]
    pub records: u64,
    #[serde(default)]
    pub topics: u64,
    #[serde(default)]
    pub ready: bool,
    /// A primary that has not heard from a quorum within its lease.
    #[serde(default)]
    pub isolated: bool,
    /// A replica that matched its log with its primary since it started following.
    #[serde(default)]
    pub synced: bool,
    /// Entries this node discarded because a new primary's log replaced them.
    #[serde(default)]
    pub entries_discarded: u64,
    #[serde(default)]
    pub default_ack: Option<AckLevel>,
    #[serde(default)]
    pub members: Vec<MemberReport>,
    /// A planned switchover asked for through `POST /v1/switchover` on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover_request: Option<SwitchoverRequest>,
    /// `?digest=true`: a hash of the state (equal on nodes that applied the same log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// What recovery found and did at start (its shape is documented in docs/API.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<serde_json::Value>,
    /// The slot ranges this node's shard is giving away or taking in, by its own log (absent when
    /// it never took part in a migration).
    #[serde(default, skip_serializing_if = "SlotState::is_empty")]
    pub slot_state: SlotState,
}

/// One member as the reporting node sees it. A primary knows its replicas' progress; other nodes
/// report names and URLs only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    pub name: String,
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_entries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Milliseconds since the replica last answered the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ack_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    /// The replica to hand over to (`None`: the most advanced one).
    #[serde(default)]
    pub to: Option<String>,
    pub at_ms: u64,
}

impl NodeStatus {
    /// Names in the node's member list.
    pub fn member_names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_parsing_of_old_and_new_reports() {
        let s: NodeStatus = serde_json::from_str(
            r#"{"node":"n1","role":"primary","term":3,"members":[{"name":"n1","url":"http://a"}],
                "some_future_field":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(s.role, Role::Primary);
        assert_eq!(s.shard, 0);
        assert_eq!(s.member_names(), vec!["n1"]);
        let back: NodeStatus = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
