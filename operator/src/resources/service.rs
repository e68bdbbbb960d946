//! The three Services of a cluster.
//!
//! - `<cluster>-headless`: gives each member a stable DNS name for replication; lists members that
//!   are not ready too, because a replica that is catching up must still reach the primary.
//! - `<cluster>-rw`: the primary, selected by the `rcluster.dev/role=primary` label the operator
//!   moves on failover.
//! - `<cluster>-ro`: the replicas (`rcluster.dev/role=replica`), for `session` and `eventual` reads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    BuildError, NODE_PORT, Owner, PORT_NAME, SERVICE_LABEL, component, headless_service_name,
    pod_selector, ro_service_name, rw_service_name,
};
use crate::crd::{MemberRole, ROLE_LABEL, ReplicatedCluster};

/// `rcluster.dev/service` value of each Service.
pub mod kind {
    pub const HEADLESS: &str = "headless";
    pub const READ_WRITE: &str = "rw";
    pub const READ_ONLY: &str = "ro";
}

fn http_port() -> ServicePort {
    ServicePort {
        name: Some(PORT_NAME.to_string()),
        port: NODE_PORT,
        target_port: Some(IntOrString::String(PORT_NAME.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

fn service(
    owner: &Owner,
    name: String,
    kind: &str,
    selector: BTreeMap<String, String>,
    spec: ServiceSpec,
) -> Service {
    let mut metadata = owner.meta(name, component::NODE);
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(SERVICE_LABEL.to_string(), kind.to_string());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![http_port()]),
            ..spec
        }),
        ..Service::default()
    }
}

pub fn build_headless(cluster: &ReplicatedCluster) -> Result<Service, BuildError> {
    let owner = Owner::new(cluster)?;
    Ok(service(
        &owner,
        headless_service_name(&owner.name),
        kind::HEADLESS,
        pod_selector(&owner.name),
        ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        },
    ))
}

fn client_service(
    cluster: &ReplicatedCluster,
    name: fn(&str) -> String,
    kind: &str,
    role: MemberRole,
) -> Result<Service, BuildError> {
    let owner = Owner::new(cluster)?;
    let mut selector = pod_selector(&owner.name);
    selector.insert(ROLE_LABEL.to_string(), role.as_str().to_string());
    Ok(service(
        &owner,
        name(&owner.name),
        kind,
        selector,
        ServiceSpec {
            type_: Some(cluster.spec.service_type.as_str().to_string()),
            ..ServiceSpec::default()
        },
    ))
}

pub fn build_read_write(cluster: &ReplicatedCluster) -> Result<Service, BuildError> {
    client_service(
        cluster,
        rw_service_name,
        kind::READ_WRITE,
        MemberRole::Primary,
    )
}

pub fn build_read_only(cluster: &ReplicatedCluster) -> Result<Service, BuildError> {
    client_service(
        cluster,
        ro_service_name,
        kind::READ_ONLY,
        MemberRole::Replica,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::cluster;

    fn selector(s: &Service) -> Vec<(String, String)> {
        let sel = s.spec.as_ref().unwrap().selector.clone().unwrap();
        sel.into_iter().collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn headless_service_lists_every_member_even_not_ready() {
        let s = build_headless(&cluster("{serviceType: LoadBalancer}")).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("demo-headless"));
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()[SERVICE_LABEL],
            "headless"
        );
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            spec.type_.as_deref(),
            Some("ClusterIP"),
            "headless ignores serviceType"
        );
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(
            selector(&s),
            vec![
                pair("app.kubernetes.io/component", "node"),
                pair("app.kubernetes.io/instance", "demo"),
                pair("app.kubernetes.io/name", "rcluster"),
            ]
        );
        assert_eq!(spec.ports.as_ref().unwrap(), &vec![http_port()]);
    }

    #[test]
    fn read_write_selects_the_primary_and_read_only_the_replicas() {
        let c = cluster("{}");
        let rw = build_read_write(&c).unwrap();
        let ro = build_read_only(&c).unwrap();
        assert_eq!(rw.metadata.name.as_deref(), Some("demo-rw"));
        assert_eq!(ro.metadata.name.as_deref(), Some("demo-ro"));
        assert_eq!(rw.metadata.labels.as_ref().unwrap()[SERVICE_LABEL], "rw");
        assert_eq!(ro.metadata.labels.as_ref().unwrap()[SERVICE_LABEL], "ro");
        assert!(selector(&rw).contains(&pair("rcluster.dev/role", "primary")));
        assert!(selector(&ro).contains(&pair("rcluster.dev/role", "replica")));
        for s in [&rw, &ro] {
            let spec = s.spec.as_ref().unwrap();
            assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
            assert_eq!(spec.cluster_ip, None);
            assert_eq!(spec.publish_not_ready_addresses, None);
            assert!(selector(s).contains(&pair("app.kubernetes.io/instance", "demo")));
            let port = &spec.ports.as_ref().unwrap()[0];
            assert_eq!(port.port, 7000);
            assert_eq!(port.name.as_deref(), Some("http"));
            assert_eq!(
                port.target_port,
                Some(IntOrString::String("http".to_string()))
            );
        }
    }

    #[test]
    fn service_type_applies_to_client_services() {
        for t in ["ClusterIP", "NodePort", "LoadBalancer"] {
            let c = cluster(&format!("{{serviceType: {t}}}"));
            for s in [build_read_write(&c).unwrap(), build_read_only(&c).unwrap()] {
                assert_eq!(s.spec.unwrap().type_.as_deref(), Some(t));
            }
        }
    }
}
