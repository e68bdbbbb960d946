//! The `ReplicatedCluster` custom resource (`rcluster.dev/v1alpha1`).
//!
//! The Rust types are the source of truth: `rcluster-operator crd` prints the CRD generated from
//! them, and `crds/replicatedclusters.rcluster.dev.yaml` must equal that output (a test checks).
//!
//! Validation the OpenAPI schema cannot express is written as CEL rules
//! (`x-kubernetes-validations`), each with a message that says what to change:
//! - `ack: one` and `ack: all` need `replicas >= 2`: with a single member there is no replica to
//!   acknowledge, so every write would wait forever.
//! - `ack: quorum` is allowed with any replica count: one member is its own majority (a dev setup),
//!   two members make quorum behave like `all`; three or more tolerate a failure.
//! - `failover.allowDataLoss` only with `async` or `one`: `quorum` and `all` promise that no
//!   acknowledged write is lost by a failover, and promoting without proof would break that.
//! - `storage` cannot change after creation: StatefulSet volume claim templates are immutable.
//! - The cluster name is a DNS-1035 label of at most 52 characters, so that `<name>-headless` and
//!   the StatefulSet's pod and revision names stay valid; at most 48 with several shards, for the
//!   same reason (shard k's StatefulSet is `<name>-s<k>`).
//! - `shards` is 1 to 16. Changing it on a live cluster reshards it (slots move one range at a
//!   time; `status.reshard` records each step and shows progress).
//! - `tls.enabled` cannot be set, changed or removed after creation: during the rollout that would
//!   switch TLS, members speaking http and members speaking https could not replicate from each
//!   other. Unset it stays unset (the operator's decision, recorded in `status.security`, runs).
//!   `secretName` (of `tls` and `auth`) not with `enabled: false`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::core::Duration;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

mod security;
mod shards;
mod status;

pub use security::{AuthSpec, SecurityStatus, TlsSpec};
pub use shards::{MigrationStatus, ReshardStatus, SHARD_LABEL, SlotMapStatus, SlotRangeStatus};
pub use status::{
    LastFailover, MemberRole, MemberStatus, Phase, ReplicatedClusterStatus, ShardStatus,
    SwitchoverStatus,
};

/// API group of every rcluster resource and label.
pub const GROUP: &str = "rcluster.dev";
/// Label the operator puts on node pods: `primary` or `replica`; the Services select on it.
pub const ROLE_LABEL: &str = "rcluster.dev/role";
/// Longest cluster name whose derived object names all stay valid.
pub const MAX_NAME_LEN: usize = 52;
/// Longest name of a cluster with several shards (`<name>-s15` must fit [`MAX_NAME_LEN`]).
pub const MAX_SHARDED_NAME_LEN: usize = 48;
/// Most shards a cluster may have.
pub const MAX_SHARDS: i32 = 16;

/// Condition types written to `status.conditions`.
pub mod condition {
    /// Every member is ready and the primary accepts writes.
    pub const READY: &str = "Ready";
    /// A ready primary accepts writes at the configured ack level.
    pub const AVAILABLE: &str = "Available";
    /// A failover is in progress (term bumped, promotion not finished).
    pub const FAILING_OVER: &str = "FailingOver";
    /// Some members are missing, not ready or lagging.
    pub const DEGRADED: &str = "Degraded";
    /// Slots are moving between shards (`spec.shards` changed): `True` until every shard owns
    /// its share, the message saying how far it is.
    pub const RESHARDING: &str = "Resharding";
    /// All condition types, in the order they are reported.
    pub const ALL: [&str; 5] = [READY, AVAILABLE, FAILING_OVER, DEGRADED, RESHARDING];
}

/// Desired state of a replicated rcluster deployment.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rcluster.dev",
    version = "v1alpha1",
    kind = "ReplicatedCluster",
    namespaced,
    status = "ReplicatedClusterStatus",
    derive = "PartialEq",
    shortname = "rcl",
    shortname = "rcluster",
    category = "rcluster",
    doc = "A replicated rcluster data service: per shard, a StatefulSet of rcluster-node pods with one \
           primary, replicas that stream its log, and operator-driven failover.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".spec.shards"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Primary", type_ = "string", json_path = ".status.primary"),
    printcolumn(name = "Term", type_ = "integer", json_path = ".status.term"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Reshard", type_ = "string", json_path = ".status.reshard.progress"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 52")
        .message("metadata.name must be at most 52 characters (pod and Service names derive from it)"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS-1035 label: lower case letters, digits and '-', starting with a letter"),
    validation = Rule::new("!has(self.spec.shards) || self.spec.shards <= 1 || size(self.metadata.name) <= 48")
        .message("metadata.name must be at most 48 characters when spec.shards > 1 (shard k's StatefulSet is NAME-s<k>, and pod and revision names derive from it)")
)]
#[x_kube(
    validation = Rule::new("!(self.replication.ack in ['one', 'all']) || self.replicas >= 2")
        .message("replication.ack 'one' and 'all' need replicas >= 2: a single member has no replica to acknowledge writes"),
    validation = Rule::new("!self.failover.allowDataLoss || self.replication.ack in ['async', 'one']")
        .message("failover.allowDataLoss is only allowed with replication.ack 'async' or 'one': 'quorum' and 'all' promise that no acknowledged write is lost"),
    validation = Rule::new("(has(self.tls) && has(self.tls.enabled)) == (has(oldSelf.tls) && has(oldSelf.tls.enabled)) && (!has(self.tls) || !has(self.tls.enabled) || self.tls.enabled == oldSelf.tls.enabled)")
        .message("tls.enabled cannot be set, changed or removed after creation: the members of a cluster all speak http or all https, as status.security records (create a new cluster and copy the data)")
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedClusterSpec {
    /// Number of members (pods) of each shard. One is the shard's primary, the others replicate
    /// its log.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 15))]
    pub replicas: i32,
    /// Number of shards: replica groups of `replicas` members each, every one with its own log,
    /// primary and failover, that split the hash slots between them; any node answers any
    /// request. A change reshards the live cluster: new shards start first, slot ranges move one
    /// at a time until every shard owns an equal share, and shards that go are deleted (with
    /// their volumes) only once they own nothing. Progress: `status.reshard`, the `Resharding`
    /// condition, events.
    #[serde(default = "default_shards")]
    #[schemars(range(min = 1, max = 16))]
    pub shards: i32,
    /// Container image of rcluster-node. Its entrypoint must be the `rcluster-node` binary.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Image pull policy of the node container.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// Write acknowledgement and read consistency defaults.
    #[serde(default)]
    pub replication: ReplicationSpec,
    /// When the node fsyncs its write-ahead log.
    #[serde(default)]
    pub fsync: Fsync,
    /// Group-commit interval for `fsync: interval`, in milliseconds.
    #[serde(default = "default_fsync_interval_ms")]
    #[schemars(range(min = 1, max = 10000))]
    pub fsync_interval_ms: i32,
    /// Persistent volume of each member. Immutable after creation.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage cannot change after creation: StatefulSet volume claim templates are immutable"))]
    pub storage: StorageSpec,
    /// CPU and memory of the node container. Its CPU limit, else its CPU request, in whole CPUs
    /// rounded up, is the number of threads the node serves requests on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Automatic failover when the primary fails.
    #[serde(default)]
    pub failover: FailoverSpec,
    /// Pod affinity. When unset, the operator prefers to spread members over nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Pod tolerations, passed to the pods unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Pod node selector, passed to the pods unchanged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Type of the read-write (`<name>-rw`) and read-only (`<name>-ro`) Services.
    #[serde(default)]
    pub service_type: ServiceType,
    /// Prometheus integration.
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// TLS on every node (https only). On by default for a new cluster; fixed at creation.
    #[serde(default)]
    pub tls: TlsSpec,
    /// Access tokens with roles. On by default for a new cluster.
    #[serde(default)]
    pub auth: AuthSpec,
}

impl ReplicatedCluster {
    /// TLS and tokens as the cluster runs them (`security::in_force`): the one answer every
    /// stage reads (builders, probes, URLs, the operator's trust, events). The controller
    /// records its decision ([`ReplicatedCluster::decide_security`]) on the cluster it
    /// reconciles before anything reads this.
    pub fn security(&self) -> SecurityStatus {
        let recorded = self.status.as_ref().and_then(|s| s.security);
        security::in_force(&self.spec.tls, &self.spec.auth, recorded)
    }

    /// What to record in `status.security`: for a new cluster (no status yet), what its spec
    /// asks for and `default` for the rest; for any other, what it runs.
    pub fn decide_security(&self, default: SecurityStatus) -> SecurityStatus {
        match &self.status {
            Some(_) => self.security(),
            None => security::for_new_cluster(&self.spec.tls, &self.spec.auth, default),
        }
    }
}

/// The spec of `spec: {}`: every field at its schema default.
impl Default for ReplicatedClusterSpec {
    fn default() -> Self {
        ReplicatedClusterSpec {
            replicas: default_replicas(),
            shards: default_shards(),
            image: default_image(),
            image_pull_policy: PullPolicy::default(),
            replication: ReplicationSpec::default(),
            fsync: Fsync::default(),
            fsync_interval_ms: default_fsync_interval_ms(),
            storage: StorageSpec::default(),
            resources: None,
            failover: FailoverSpec::default(),
            affinity: None,
            tolerations: Vec::new(),
            node_selector: BTreeMap::new(),
            service_type: ServiceType::default(),
            metrics: MetricsSpec::default(),
            tls: TlsSpec::default(),
            auth: AuthSpec::default(),
        }
    }
}

fn default_replicas() -> i32 {
    3
}

fn default_shards() -> i32 {
    1
}

/// Default node image: the rcluster-node image of the operator's own version.
pub fn default_image() -> String {
    format!("rcluster-node:{}", env!("CARGO_PKG_VERSION"))
}

fn default_fsync_interval_ms() -> i32 {
    10
}

/// Kubernetes image pull policy.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Replication settings shared by every member.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// Default write acknowledgement; clients may ask for another level per request.
    #[serde(default)]
    pub ack: AckMode,
    /// Default read consistency; clients may ask for another level per request.
    #[serde(default)]
    pub read_consistency: ReadConsistency,
}

/// When a write is acknowledged to the client.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Durable on the primary.
    Async,
    /// Durable on the primary and at least one replica.
    One,
    /// Durable on a majority of members.
    #[default]
    Quorum,
    /// Durable on every in-sync member.
    All,
}

/// The CRD's spelling of the wire contract's ack level (a separate type only because the CRD schema
/// is generated from it).
impl From<AckMode> for rcluster_proto::AckLevel {
    fn from(a: AckMode) -> Self {
        match a {
            AckMode::Async => rcluster_proto::AckLevel::Async,
            AckMode::One => rcluster_proto::AckLevel::One,
            AckMode::Quorum => rcluster_proto::AckLevel::Quorum,
            AckMode::All => rcluster_proto::AckLevel::All,
        }
    }
}

impl AckMode {
    pub fn as_str(self) -> &'static str {
        rcluster_proto::AckLevel::from(self).as_str()
    }
}

/// Default consistency of reads.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    /// Served by the primary after it confirms it is still primary for its term.
    #[default]
    Linearizable,
    /// Any member, once it has applied the client's session token.
    Session,
    /// Any member, at once.
    Eventual,
}

impl ReadConsistency {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Session => "session",
            ReadConsistency::Eventual => "eventual",
        }
    }
}

/// When the write-ahead log is fsynced.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before every acknowledgement (with group commit).
    #[default]
    Always,
    /// Every `fsyncIntervalMs`; a crash may lose the last interval on that member.
    Interval,
}

impl Fsync {
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Interval => "interval",
        }
    }
}

/// Persistent volume of each member.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size: a whole number with an optional unit (Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E).
    #[serde(default = "default_storage_size")]
    #[schemars(pattern(r"^[1-9][0-9]*(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
    /// StorageClass of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            class_name: None,
        }
    }
}

fn default_storage_size() -> String {
    "1Gi".to_string()
}

/// Automatic failover.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Promote a replica when the primary fails. When false, the operator only reports.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long the primary must be unreachable or not ready before a failover starts
    /// (Go duration, 1s to 10m). Not waited for when the failure is certain: the primary's pod
    /// is being deleted or gone, nothing listens at its address, or it answers again after a
    /// restart without its role.
    #[serde(default = "default_detection_window")]
    #[schemars(pattern(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('10m')")
        .message("failover.detectionWindow must be between 1s and 10m"))]
    pub detection_window: Duration,
    /// With `ack: async` or `one`: when too few replicas respond to prove that every acknowledged
    /// write survives, promote the most up-to-date responder anyway and report the possible loss.
    #[serde(default)]
    pub allow_data_loss: bool,
}

impl Default for FailoverSpec {
    fn default() -> Self {
        FailoverSpec {
            enabled: true,
            detection_window: default_detection_window(),
            allow_data_loss: false,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_detection_window() -> Duration {
    std::time::Duration::from_secs(10).into()
}

/// Kubernetes Service type of the client Services.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Prometheus integration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Create a prometheus-operator ServiceMonitor that scrapes every member.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
}

/// The optional ServiceMonitor (needs the monitoring.coreos.com CRDs in the cluster).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    #[serde(default)]
    pub enabled: bool,
    /// Scrape interval (Prometheus duration, e.g. 30s); Prometheus' default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"))]
    pub interval: Option<String>,
    /// Extra labels on the ServiceMonitor, e.g. the one your Prometheus selects on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Errors producing the CRD text.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("cannot serialize the CRD as YAML: {0}")]
    Yaml(String),
}

/// First line of the generated YAML, so nobody edits the checked-in file by hand.
pub const YAML_HEADER: &str =
    "# Generated by `rcluster-operator crd` from operator/src/crd.rs. Do not edit.\n";

/// The CRD as YAML, exactly as checked in under `crds/`.
pub fn crd_yaml() -> Result<String, CrdError> {
    let body = serde_saphyr::to_string(&ReplicatedCluster::crd())
        .map_err(|e| CrdError::Yaml(e.to_string()))?;
    Ok(format!("{YAML_HEADER}{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_equals_an_empty_spec() {
        let empty: ReplicatedClusterSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, ReplicatedClusterSpec::default());
    }

    #[test]
    fn detection_window_parses_go_durations() {
        let spec: ReplicatedClusterSpec =
            serde_json::from_str(r#"{"failover": {"detectionWindow": "1m30s"}}"#).unwrap();
        let window: std::time::Duration = spec.failover.detection_window.into();
        assert_eq!(window, std::time::Duration::from_secs(90));
        let bad = serde_json::from_str::<ReplicatedClusterSpec>(
            r#"{"failover": {"detectionWindow": "soon"}}"#,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn as_str_matches_serde() {
        for ack in [AckMode::Async, AckMode::One, AckMode::Quorum, AckMode::All] {
            assert_eq!(serde_json::to_value(ack).unwrap(), ack.as_str());
        }
        for phase in Phase::ALL {
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
        }
        for role in [
            MemberRole::Primary,
            MemberRole::Replica,
            MemberRole::Unknown,
        ] {
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        for c in [
            ReadConsistency::Linearizable,
            ReadConsistency::Session,
            ReadConsistency::Eventual,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        for f in [Fsync::Always, Fsync::Interval] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
        }
        for p in [
            PullPolicy::Always,
            PullPolicy::IfNotPresent,
            PullPolicy::Never,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for t in [
            ServiceType::ClusterIP,
            ServiceType::NodePort,
            ServiceType::LoadBalancer,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
    }
}
