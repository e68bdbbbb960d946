//! Pure builders: a `ReplicatedCluster` in, the Kubernetes objects it should own out.
//!
//! No I/O here. The controller applies the results with server-side apply under
//! [`FIELD_MANAGER`]; tests compare the objects. One file per object kind.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::DynamicObject;
use kube::{Resource, ResourceExt};

use crate::crd::{MAX_NAME_LEN, ReplicatedCluster};

pub mod configmap;
pub mod pdb;
pub mod secret;
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
}

/// Names of every object and pod of a cluster.
pub fn statefulset_name(cluster: &str) -> String {
    cluster.to_string()
}
pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}-headless")
}
pub fn rw_service_name(cluster: &str) -> String {
    format!("{cluster}-rw")
}
pub fn ro_service_name(cluster: &str) -> String {
    format!("{cluster}-ro")
}
pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-config")
}
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-secret")
}
pub fn pdb_name(cluster: &str) -> String {
    cluster.to_string()
}
pub fn service_monitor_name(cluster: &str) -> String {
    cluster.to_string()
}
pub fn pod_name(cluster: &str, ordinal: i32) -> String {
    format!("{cluster}-{ordinal}")
}

/// The ordinal of `pod` in `cluster`'s StatefulSet (the inverse of [`pod_name`]).
pub fn ordinal(cluster: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(cluster)?.strip_prefix('-')?.parse().ok()
}
/// URL of member `ordinal`, stable across restarts thanks to the headless Service.
pub fn member_url(cluster: &str, namespace: &str, ordinal: i32) -> String {
    format!(
        "http://{}.{}.{namespace}.svc:{NODE_PORT}",
        pod_name(cluster, ordinal),
        headless_service_name(cluster)
    )
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

/// Every object a cluster should own, ready to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub secret: Secret,
    pub headless_service: Service,
    pub rw_service: Service,
    pub ro_service: Service,
    pub statefulset: StatefulSet,
    pub pdb: PodDisruptionBudget,
    /// `None` when disabled; the controller then deletes any ServiceMonitor it created.
    pub service_monitor: Option<DynamicObject>,
}

/// Builds every owned object. `existing_secret` is the cluster Secret as read from the API
/// server (if any), so its token and cluster id are kept; `new_token` (random hex) runs only for
/// what it lacks.
pub fn build_all(
    cluster: &ReplicatedCluster,
    existing_secret: Option<&Secret>,
    new_token: impl Fn() -> Result<String, BuildError>,
) -> Result<Desired, BuildError> {
    Ok(Desired {
        config_map: configmap::build(cluster)?,
        secret: secret::build(cluster, existing_secret, new_token)?,
        headless_service: service::build_headless(cluster)?,
        rw_service: service::build_read_write(cluster)?,
        ro_service: service::build_read_only(cluster)?,
        statefulset: statefulset::build(cluster)?,
        pdb: pdb::build(cluster)?,
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
        assert_eq!(statefulset_name("demo"), "demo");
        assert_eq!(headless_service_name("demo"), "demo-headless");
        assert_eq!(rw_service_name("demo"), "demo-rw");
        assert_eq!(ro_service_name("demo"), "demo-ro");
        assert_eq!(config_map_name("demo"), "demo-config");
        assert_eq!(secret_name("demo"), "demo-secret");
        assert_eq!(pod_name("demo", 2), "demo-2");
        assert_eq!(ordinal("demo", "demo-3"), Some(3));
        assert_eq!(ordinal("demo", "demo-x"), None);
        assert_eq!(ordinal("demo", "demox-1"), None);
        assert_eq!(ordinal("demo-2", "demo-2-0"), Some(0));
        assert_eq!(
            member_url("demo", "shop", 1),
            "http://demo-1.demo-headless.shop.svc:7000"
        );
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
        let d = build_all(&c, None, || Ok("t".into())).unwrap();
        let sm = d.service_monitor.clone().unwrap();
        let metas = [
            &d.config_map.metadata,
            &d.secret.metadata,
            &d.headless_service.metadata,
            &d.rw_service.metadata,
            &d.ro_service.metadata,
            &d.statefulset.metadata,
            &d.pdb.metadata,
            &sm.metadata,
        ];
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
}
