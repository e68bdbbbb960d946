//! Pure builders: a `ReplicatedCluster` in, the Kubernetes objects it should own out.
//!
//! No I/O here. The controller applies the results with server-side apply under
//! [`FIELD_MANAGER`]; tests compare the objects. One file per object kind.
//!
//! Per shard: a StatefulSet, its ConfigMap (the shard number and the shard's member list), the
//! read-write and read-only Services and a PodDisruptionBudget. Shard 0's objects keep the names a
//! cluster without shards has always had (`<cluster>`, `<cluster>-config`, `<cluster>-rw`, ...),
//! so an existing cluster keeps its pods and volumes; shard k's are named after `<cluster>-s<k>`.
//! Shared by every shard: the Secret, the headless Service (every pod's DNS name) and the client
//! Service (every node: any node routes any request).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::DynamicObject;
use kube::{Resource, ResourceExt};

use crate::crd::{MAX_NAME_LEN, MAX_SHARDED_NAME_LEN, ReplicatedCluster, SHARD_LABEL};
use rcluster_proto::ShardId;

pub mod configmap;
pub mod pdb;
pub mod secret;
pub mod security;
pub mod service;
pub mod servicemonitor;
pub mod statefulset;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "rcluster-operator";

/// Port of the node's HTTP API, health and metrics endpoints.
pub const NODE_PORT: i32 = 7000;
/// Name of that port on the container and the Services.
pub const PORT_NAME: &str = "http";

pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Tells the three Services apart, so the ServiceMonitor can pick the headless one.
pub const SERVICE_LABEL: &str = "rcluster.dev/service";
pub const APP_NAME: &str = "rcluster";
pub const MANAGED_BY: &str = "rcluster-operator";

/// `app.kubernetes.io/component` of each owned object.
pub mod component {
    pub const NODE: &str = "node";
    pub const CONFIG: &str = "config";
    pub const SECRET: &str = "secret";
    pub const METRICS: &str = "metrics";
    /// The CA and node certificate Secrets (`spec.tls`).
    pub const TLS: &str = "tls";
    /// The access tokens Secret (`spec.auth`).
    pub const AUTH: &str = "auth";
}

/// Why desired objects could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "ReplicatedCluster has no metadata.{0}; builders need an object read from the API server"
    )]
    MissingMetadata(&'static str),
    #[error("cluster name {name:?} is invalid: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cannot encode the cluster config: {0}")]
    Config(String),
    #[error("cannot generate the cluster secret: {0}")]
    Random(String),
    #[error("cannot make the cluster's certificates or access tokens: {0}")]
    Security(String),
}

/// The name shard `shard`'s StatefulSet, pods and per-shard objects derive from: the cluster's
/// own for shard 0 (the names a cluster without shards has), `<cluster>-s<k>` for shard k.
pub fn shard_name(cluster: &str, shard: ShardId) -> String {
    match shard {
        0 => cluster.to_string(),
        k => format!("{cluster}-s{k}"),
    }
}
pub fn statefulset_name(cluster: &str, shard: ShardId) -> String {
    shard_name(cluster, shard)
}
pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}-headless")
}
/// The Service over every node of every shard: any node answers any request.
pub fn client_service_name(cluster: &str) -> String {
    format!("{cluster}-client")
}
pub fn rw_service_name(cluster: &str, shard: ShardId) -> String {
    format!("{}-rw", shard_name(cluster, shard))
}
pub fn ro_service_name(cluster: &str, shard: ShardId) -> String {
    format!("{}-ro", shard_name(cluster, shard))
}
pub fn config_map_name(cluster: &str, shard: ShardId) -> String {
    format!("{}-config", shard_name(cluster, shard))
}
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-secret")
}
pub fn pdb_name(cluster: &str, shard: ShardId) -> String {
    shard_name(cluster, shard)
}
pub fn service_monitor_name(cluster: &str) -> String {
    cluster.to_string()
}
/// Pod `ordinal` of the StatefulSet `set` (a [`shard_name`]).
pub fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// The ordinal of `pod` in the StatefulSet `set` (the inverse of [`pod_name`]).
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// The shard and ordinal of a member pod of `cluster`: `demo-2` is (0, 2), `demo-s1-2` is (1, 2).
pub fn member_of(cluster: &str, pod: &str) -> Option<(ShardId, i32)> {
    let rest = pod.strip_prefix(cluster)?.strip_prefix('-')?;
    if let Ok(o) = rest.parse::<i32>() {
        return Some((0, o));
    }
    let (shard, ordinal) = rest.strip_prefix('s')?.split_once('-')?;
    let shard: ShardId = shard
        .parse()
        .ok()
        .filter(|s| *s > 0 && !shard.starts_with('0'))?;
    Some((shard, ordinal.parse().ok()?))
}

/// URL of member pod `pod`, stable across restarts thanks to the headless Service (shared by
/// every shard); `https` when the cluster has TLS (its certificate names every such host).
pub fn member_url(cluster: &str, namespace: &str, pod: &str, tls: bool) -> String {
    format!(
        "{}://{pod}.{}.{namespace}.svc:{NODE_PORT}",
        scheme(tls),
        headless_service_name(cluster)
    )
}

/// The nodes' URL scheme.
pub fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// Labels every owned object carries.
pub fn common_labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), APP_NAME.to_string()),
        (INSTANCE_LABEL.to_string(), cluster.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (COMPONENT_LABEL.to_string(), component.to_string()),
    ])
}

/// Labels that select the cluster's node pods (StatefulSet selector, Services, PDB).
pub fn pod_selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), APP_NAME.to_string()),
        (INSTANCE_LABEL.to_string(), cluster.to_string()),
        (COMPONENT_LABEL.to_string(), component::NODE.to_string()),
    ])
}

/// Labels that select the node pods of one shard (its Services and PodDisruptionBudget). In a
/// cluster of one shard, the cluster's pod selector: the objects of a cluster created before
/// shards stay exactly as they were (its pods get the shard label only when the operator labels
/// them).
pub fn shard_selector(cluster: &str, shard: ShardId, shards: u32) -> BTreeMap<String, String> {
    let mut labels = pod_selector(cluster);
    if shards > 1 {
        labels.insert(SHARD_LABEL.to_string(), shard.to_string());
    }
    labels
}

/// [`pod_selector`] as a label selector string, for `status.selector` (scale subresource).
pub fn pod_selector_string(cluster: &str) -> String {
    pod_selector(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What every builder needs from the cluster object, checked once.
pub(crate) struct Owner<'a> {
    pub cluster: &'a ReplicatedCluster,
    pub name: String,
    pub namespace: String,
    owner_ref: OwnerReference,
}

impl<'a> Owner<'a> {
    pub fn new(cluster: &'a ReplicatedCluster) -> Result<Self, BuildError> {
        let name = cluster
            .metadata
            .name
            .clone()
            .ok_or(BuildError::MissingMetadata("name"))?;
        validate_name(&name)?;
        let namespace = cluster
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        let uid = cluster.uid().ok_or(BuildError::MissingMetadata("uid"))?;
        let owner_ref = OwnerReference {
            api_version: ReplicatedCluster::api_version(&()).into_owned(),
            kind: ReplicatedCluster::kind(&()).into_owned(),
            name: name.clone(),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        Ok(Owner {
            cluster,
            name,
            namespace,
            owner_ref,
        })
    }

    /// Metadata of an owned object: namespace, common labels, controller owner reference.
    pub fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(common_labels(&self.name, component)),
            owner_references: Some(vec![self.owner_ref.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// Metadata of one shard's object: [`Owner::meta`] and the shard label.
    pub fn shard_meta(&self, name: String, component: &str, shard: ShardId) -> ObjectMeta {
        let mut meta = self.meta(name, component);
        if let Some(labels) = meta.labels.as_mut() {
            labels.insert(SHARD_LABEL.to_string(), shard.to_string());
        }
        meta
    }
}

/// The CRD's CEL rules enforce the same; this guards objects that bypassed them.
fn validate_name(name: &str) -> Result<(), BuildError> {
    let invalid = |reason| BuildError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid("must be 1 to 52 characters"));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let starts_ok = name.as_bytes()[0].is_ascii_lowercase();
    let ends_ok = !name.ends_with('-');
    if !(ok_chars && starts_ok && ends_ok) {
        return Err(invalid(
            "must be a DNS-1035 label (lower case letters, digits, '-', starting with a letter)",
        ));
    }
    Ok(())
}

/// One shard as its builders need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub id: ShardId,
    /// How many shards the cluster has.
    pub count: u32,
    /// How many member pods the shard runs (the spec's, or more while a scale-down waits).
    pub replicas: i32,
}

impl Shard {
    /// The StatefulSet name of the shard, which its pods' names derive from.
    pub fn set_name(&self, cluster: &str) -> String {
        shard_name(cluster, self.id)
    }
}

/// The objects of one shard.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardObjects {
    pub config_map: ConfigMap,
    pub rw_service: Service,
    pub ro_service: Service,
    pub statefulset: StatefulSet,
    pub pdb: PodDisruptionBudget,
}

/// Every object a cluster should own, ready to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub secret: Secret,
    pub headless_service: Service,
    pub client_service: Service,
    /// One per shard, in shard order.
    pub shards: Vec<ShardObjects>,
    /// `None` when disabled; the controller then deletes any ServiceMonitor it created.
    pub service_monitor: Option<DynamicObject>,
}

/// Builds every owned object: `replicas[k]` member pods for shard k (the number of shards is
/// `replicas.len()`). `existing_secret` is the cluster Secret as read from the API server (if
/// any), so its token and cluster id are kept; `new_token` (random hex) runs only for what it
/// lacks.
pub fn build_all(
    cluster: &ReplicatedCluster,
    replicas: &[i32],
    existing_secret: Option<&Secret>,
    new_token: impl Fn() -> Result<String, BuildError>,
) -> Result<Desired, BuildError> {
    let count = replicas.len().max(1) as u32;
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    if count > 1 && name.len() > MAX_SHARDED_NAME_LEN {
        return Err(BuildError::InvalidName {
            name: name.to_string(),
            reason: "must be at most 48 characters with several shards",
        });
    }
    let shards = replicas
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let shard = Shard {
                id: k as ShardId,
                count,
                replicas: *r,
            };
            Ok(ShardObjects {
                config_map: configmap::build(cluster, shard)?,
                rw_service: service::build_read_write(cluster, shard)?,
                ro_service: service::build_read_only(cluster, shard)?,
                statefulset: statefulset::build(cluster, shard)?,
                pdb: pdb::build(cluster, shard)?,
            })
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    Ok(Desired {
        secret: secret::build(cluster, existing_secret, new_token)?,
        headless_service: service::build_headless(cluster)?,
        client_service: service::build_client(cluster)?,
        shards,
        service_monitor: servicemonitor::build(cluster)?,
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::crd::{ReplicatedCluster, ReplicatedClusterSpec};

    /// A cluster as the API server returns it, with the spec given as YAML (defaults filled by serde).
    pub fn cluster(spec_yaml: &str) -> ReplicatedCluster {
        let spec: ReplicatedClusterSpec = serde_saphyr::from_str(spec_yaml).expect("spec yaml");
        let mut c = ReplicatedCluster::new("demo", spec);
        c.metadata.namespace = Some("shop".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::cluster;
    use super::*;

    #[test]
    fn names_and_urls_are_stable() {
        // Shard 0 keeps the names of a cluster without shards.
        assert_eq!(statefulset_name("demo", 0), "demo");
        assert_eq!(headless_service_name("demo"), "demo-headless");
        assert_eq!(client_service_name("demo"), "demo-client");
        assert_eq!(rw_service_name("demo", 0), "demo-rw");
        assert_eq!(ro_service_name("demo", 0), "demo-ro");
        assert_eq!(config_map_name("demo", 0), "demo-config");
        assert_eq!(pdb_name("demo", 0), "demo");
        assert_eq!(secret_name("demo"), "demo-secret");
        assert_eq!(pod_name("demo", 2), "demo-2");
        assert_eq!(ordinal("demo", "demo-3"), Some(3));
        assert_eq!(ordinal("demo", "demo-x"), None);
        assert_eq!(ordinal("demo", "demox-1"), None);
        assert_eq!(ordinal("demo-2", "demo-2-0"), Some(0));
        assert_eq!(
            member_url("demo", "shop", "demo-1", false),
            "http://demo-1.demo-headless.shop.svc:7000"
        );
        assert_eq!(
            member_url("demo", "shop", "demo-1", true),
            "https://demo-1.demo-headless.shop.svc:7000"
        );
        // Shard k's are named after <cluster>-s<k>; pods of every shard share the headless Service.
        assert_eq!(statefulset_name("demo", 3), "demo-s3");
        assert_eq!(rw_service_name("demo", 1), "demo-s1-rw");
        assert_eq!(ro_service_name("demo", 1), "demo-s1-ro");
        assert_eq!(config_map_name("demo", 12), "demo-s12-config");
        assert_eq!(pdb_name("demo", 1), "demo-s1");
        assert_eq!(pod_name(&shard_name("demo", 1), 0), "demo-s1-0");
        assert_eq!(
            member_url("demo", "shop", "demo-s1-2", false),
            "http://demo-s1-2.demo-headless.shop.svc:7000"
        );
        assert_eq!(member_of("demo", "demo-2"), Some((0, 2)));
        assert_eq!(member_of("demo", "demo-s1-2"), Some((1, 2)));
        assert_eq!(member_of("demo", "demo-s12-0"), Some((12, 0)));
        for not_ours in [
            "demo-s0-1",
            "demo-s01-1",
            "demo-s1",
            "demo-sx-1",
            "demox-1",
            "other-1",
        ] {
            assert_eq!(member_of("demo", not_ours), None, "{not_ours}");
        }
        // A cluster whose name looks like another's shard: its own pods are its shard 0.
        assert_eq!(member_of("demo-s1", "demo-s1-0"), Some((0, 0)));
        assert_eq!(
            pod_selector_string("demo"),
            "app.kubernetes.io/component=node,app.kubernetes.io/instance=demo,app.kubernetes.io/name=rcluster"
        );
    }

    #[test]
    fn owner_needs_metadata_from_the_api_server() {
        let mut c = cluster("{}");
        c.metadata.uid = None;
        assert!(matches!(
            Owner::new(&c),
            Err(BuildError::MissingMetadata("uid"))
        ));
        let mut c = cluster("{}");
        c.metadata.namespace = None;
        assert!(matches!(
            Owner::new(&c),
            Err(BuildError::MissingMetadata("namespace"))
        ));
        let mut c = cluster("{}");
        c.metadata.name = None;
        assert!(matches!(
            Owner::new(&c),
            Err(BuildError::MissingMetadata("name"))
        ));
    }

    #[test]
    fn rejects_names_that_would_make_invalid_objects() {
        for bad in ["", "1abc", "Abc", "a_b", "abc-", &"a".repeat(53)] {
            let mut c = cluster("{}");
            c.metadata.name = Some(bad.to_string());
            assert!(
                matches!(Owner::new(&c), Err(BuildError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        for good in ["a", "demo-2", &"a".repeat(52)] {
            let mut c = cluster("{}");
            c.metadata.name = Some(good.to_string());
            assert!(Owner::new(&c).is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn every_object_is_owned_by_the_cluster_and_labelled() {
        let c = cluster("metrics: {serviceMonitor: {enabled: true}}");
        let d = build_all(&c, &[3, 3], None, || Ok("t".into())).unwrap();
        let sm = d.service_monitor.clone().unwrap();
        let mut metas = vec![
            &d.secret.metadata,
            &d.headless_service.metadata,
            &d.client_service.metadata,
            &sm.metadata,
        ];
        for (k, s) in d.shards.iter().enumerate() {
            let per_shard = [
                &s.config_map.metadata,
                &s.rw_service.metadata,
                &s.ro_service.metadata,
                &s.statefulset.metadata,
                &s.pdb.metadata,
            ];
            for meta in per_shard {
                let labels = meta.labels.as_ref().unwrap();
                assert_eq!(labels[SHARD_LABEL], k.to_string(), "{:?}", meta.name);
            }
            metas.extend(per_shard);
        }
        assert_eq!(metas.len(), 14);
        for meta in metas {
            let refs = meta.owner_references.as_ref().unwrap();
            assert_eq!(refs.len(), 1);
            let r = &refs[0];
            assert_eq!(r.api_version, "rcluster.dev/v1alpha1");
            assert_eq!(r.kind, "ReplicatedCluster");
            assert_eq!(r.name, "demo");
            assert_eq!(r.uid, "uid-1");
            assert_eq!(r.controller, Some(true));
            assert_eq!(r.block_owner_deletion, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("shop"));
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels[NAME_LABEL], "rcluster");
            assert_eq!(labels[INSTANCE_LABEL], "demo");
            assert_eq!(labels[MANAGED_BY_LABEL], "rcluster-operator");
            assert!(labels.contains_key(COMPONENT_LABEL));
        }
    }

    #[test]
    fn each_shard_gets_its_own_objects_and_the_shared_ones_exist_once() {
        let c = cluster("{replicas: 3, shards: 2}");
        let d = build_all(&c, &[3, 4], None, || Ok("t".into())).unwrap();
        let names: Vec<Vec<String>> = d
            .shards
            .iter()
            .map(|s| {
                [
                    &s.config_map.metadata,
                    &s.rw_service.metadata,
                    &s.ro_service.metadata,
                    &s.statefulset.metadata,
                    &s.pdb.metadata,
                ]
                .iter()
                .map(|m| m.name.clone().unwrap())
                .collect()
            })
            .collect();
        assert_eq!(
            names,
            [
                ["demo-config", "demo-rw", "demo-ro", "demo", "demo"],
                [
                    "demo-s1-config",
                    "demo-s1-rw",
                    "demo-s1-ro",
                    "demo-s1",
                    "demo-s1"
                ],
            ]
        );
        // A shard keeps the members a scale-down still holds.
        let replicas: Vec<Option<i32>> = d
            .shards
            .iter()
            .map(|s| s.statefulset.spec.as_ref().unwrap().replicas)
            .collect();
        assert_eq!(replicas, [Some(3), Some(4)]);
        assert_eq!(
            d.headless_service.metadata.name.as_deref(),
            Some("demo-headless")
        );
        assert_eq!(
            d.client_service.metadata.name.as_deref(),
            Some("demo-client")
        );
    }

    #[test]
    fn a_sharded_cluster_needs_a_shorter_name() {
        let mut c = cluster("{shards: 2}");
        c.metadata.name = Some("a".repeat(49));
        assert!(matches!(
            build_all(&c, &[3, 3], None, || Ok("t".into())),
            Err(BuildError::InvalidName { .. })
        ));
        // One shard: the usual 52.
        c.metadata.name = Some("a".repeat(52));
        assert!(build_all(&c, &[3], None, || Ok("t".into())).is_ok());
        c.metadata.name = Some("a".repeat(48));
        assert!(build_all(&c, &[3, 3], None, || Ok("t".into())).is_ok());
    }

    #[test]
    fn shard_selectors_add_the_shard_label_only_with_several_shards() {
        assert_eq!(shard_selector("demo", 0, 1), pod_selector("demo"));
        let s1 = shard_selector("demo", 1, 2);
        assert_eq!(s1[SHARD_LABEL], "1");
        assert_eq!(s1.len(), pod_selector("demo").len() + 1);
        assert_eq!(shard_selector("demo", 0, 2)[SHARD_LABEL], "0");
    }
}
