//! The status of a `ReplicatedCluster`: what the operator observed and the coordinator records
//! it keeps there (term, primary, member lists, switchover, last failover), per shard.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::security::SecurityStatus;
use super::shards::{ReshardStatus, SlotMapStatus};

/// Observed state, written by the operator only.
///
/// The coordinator record of shard 0 (term, primary, member lists, switchover, last failover) sits
/// at the top level, where a cluster without shards has always kept it; every shard's record,
/// shard 0's included, is in `shards`. A status without `shards` is read as one shard whose
/// record is the top level, so a cluster created before shards keeps its terms. The observed
/// fields at the top level (phase, replica counts, members, conditions) cover every shard.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The worst phase of any shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Pod name of shard 0's current primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Shard 0's current term. Stored here before any promotion, so a new primary is never chosen
    /// twice for one term.
    #[serde(default)]
    pub term: i64,
    /// Member pods that exist, in every shard (the scale subresource reads this).
    #[serde(default)]
    pub replicas: i32,
    /// Members that are ready, in every shard.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Members running their StatefulSet's current pod template, in every shard. Below `replicas`
    /// while a template change rolls out (replicas first, the primary last after a switchover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// Label selector of the member pods, in string form (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Every member of every shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub members: Vec<MemberStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Shard 0's most recent failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<LastFailover>,
    /// Shard 0's member list in force: what its nodes count write quorums over since `term`.
    /// Changed by a scale in a new term, once the joining members run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_list: Vec<String>,
    /// While a member change of shard 0 is not committed yet: the list before it (elections must
    /// hear from enough members of both; members leaving are removed only after this is cleared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_member_list: Option<Vec<String>>,
    /// A planned switchover of shard 0 in progress (writes on `from` are stopped while `to`
    /// catches up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverStatus>,
    /// Every shard: its coordinator record (stored before its nodes hear of it), its members and
    /// the slots it owns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["shard".into()]))]
    pub shards: Vec<ShardStatus>,
    /// Which shard owns each hash slot, recorded before any node is told of it. Absent only on a
    /// cluster created before shards that has not been reconciled since (one shard owns every
    /// slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_map: Option<SlotMapStatus>,
    /// A resharding under way (`spec.shards` changed): the shard count asked for, the range
    /// moving now and its phase, and progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshard: Option<ReshardStatus>,
    /// Whether the cluster runs with TLS and access tokens, decided once for the whole cluster
    /// (every shard) and kept across operator upgrades. Absent only on a cluster created by an
    /// operator before it (recorded at its next reconcile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityStatus>,
}

/// One shard: its coordinator record, its members as last observed, and the slots it owns.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// The shard's number, `0 <= shard < shards`.
    pub shard: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Pod name of the shard's current primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The shard's current term (terms of different shards are unrelated).
    #[serde(default)]
    pub term: i64,
    /// The shard's member pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// The shard's members that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The hash slots the shard owns, as ranges: `0-2047`, or `-` for none.
    #[serde(default)]
    pub slots: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub members: Vec<MemberStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<LastFailover>,
    /// The member list in force since `term`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_list: Vec<String>,
    /// While a member change is not committed yet: the list before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_member_list: Option<Vec<String>>,
    /// A planned switchover in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverStatus>,
}

/// A planned switchover in progress.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverStatus {
    pub from: String,
    pub to: String,
    /// When writes on `from` were stopped, in milliseconds since the Unix epoch.
    pub started_ms: i64,
}

/// Lifecycle phase shown in `kubectl get`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Phase {
    /// Objects created; no primary elected yet.
    Pending,
    /// Primary and every replica ready.
    Running,
    /// Primary ready; some replicas missing, not ready or lagging.
    Degraded,
    /// The primary failed and a replica is being promoted.
    FailingOver,
    /// No primary, and a failover cannot proceed (e.g. too few responders); see conditions.
    Unavailable,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Pending,
        Phase::Running,
        Phase::Degraded,
        Phase::FailingOver,
        Phase::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Degraded => "Degraded",
            Phase::FailingOver => "FailingOver",
            Phase::Unavailable => "Unavailable",
        }
    }
}

/// One member as last observed by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name, `<cluster>-<ordinal>`.
    pub name: String,
    pub role: MemberRole,
    /// Pod ready (node's /readyz).
    #[serde(default)]
    pub ready: bool,
    /// Term the member last reported.
    #[serde(default)]
    pub term: i64,
    /// Highest log index applied to the member's state.
    #[serde(default)]
    pub applied_index: i64,
    /// Entries the member is behind the primary's commit index.
    #[serde(default)]
    pub lag_entries: i64,
}

/// Role of a member, as in the `rcluster.dev/role` pod label and the node's `rcluster_role` metric.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Primary,
    Replica,
    /// Not reachable, or reported no role yet.
    Unknown,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Primary => "primary",
            MemberRole::Replica => "replica",
            MemberRole::Unknown => "unknown",
        }
    }
}

/// The most recent failover.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastFailover {
    /// When the new primary was promoted.
    pub time: Time,
    /// The failed primary.
    pub from: String,
    /// The promoted replica.
    pub to: String,
    /// Term of the new primary.
    pub term: i64,
    /// From detection to promotion, in milliseconds.
    pub duration_ms: i64,
    /// Log entries of the old primary that no replica had (only possible with async or one).
    #[serde(default)]
    pub entries_lost: i64,
}
