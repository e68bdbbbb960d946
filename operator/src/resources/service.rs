//! The Services of a cluster.
//!
//! - `<cluster>-headless`: gives each member of every shard a stable DNS name for replication and
//!   routing; lists members that are not ready too, because a replica that is catching up must
//!   still reach the primary.
//! - `<cluster>-client`: every ready node of every shard. Any node answers any request (it
//!   forwards what another shard owns, and writes, to the right primary), so this is the one
//!   address a plain HTTP client needs.
//! - Per shard, `<cluster>-rw` and `<cluster>-ro` for shard 0 (the names of a cluster without
//!   shards), `<cluster>-s<k>-rw` and `-ro` for shard k: the shard's primary, selected by the
//!   `rcluster.dev/role=primary` label the operator moves on failover, and its replicas
//!   (`rcluster.dev/role=replica`), for `session` and `eventual` reads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    BuildError, NODE_PORT, Owner, PORT_NAME, SERVICE_LABEL, Shard, client_service_name, component,
    headless_service_name, pod_selector, ro_service_name, rw_service_name, shard_selector,
};
use crate::crd::{MemberRole, ROLE_LABEL, ReplicatedCluster};

/// `rcluster.dev/service` value of each Service.
pub mod kind {
    pub const HEADLESS: &str = "headless";
    pub const CLIENT: &str = "client";
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
    shard: Option<Shard>,
    selector: BTreeMap<String, String>,
    spec: ServiceSpec,
) -> Service {
    let mut metadata = match shard {
        Some(s) => owner.shard_meta(name, component::NODE, s.id),
        None => owner.meta(name, component::NODE),
    };
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
        None,
        pod_selector(&owner.name),
        ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        },
    ))
}

pub fn build_client(cluster: &ReplicatedCluster) -> Result<Service, BuildError> {
    let owner = Owner::new(cluster)?;
    Ok(service(
        &owner,
        client_service_name(&owner.name),
        kind::CLIENT,
        None,
        pod_selector(&owner.name),
        ServiceSpec {
            type_: Some(cluster.spec.service_type.as_str().to_string()),
            ..ServiceSpec::default()
        },
    ))
}

fn shard_service(
    cluster: &ReplicatedCluster,
    shard: Shard,
    name: fn(&str, u32) -> String,
    kind: &str,
    role: MemberRole,
) -> Result<Service, BuildError> {
    let owner = Owner::new(cluster)?;
    let mut selector = shard_selector(&owner.name, shard.id, shard.count);
    selector.insert(ROLE_LABEL.to_string(), role.as_str().to_string());
    Ok(service(
        &owner,
        name(&owner.name, shard.id),
        kind,
        Some(shard),
        selector,
        ServiceSpec {
            type_: Some(cluster.spec.service_type.as_str().to_string()),
            ..ServiceSpec::default()
        },
    ))
}

pub fn build_read_write(cluster: &ReplicatedCluster, shard: Shard) -> Result<Service, BuildError> {
    shard_service(
        cluster,
        shard,
        rw_service_name,
        kind::READ_WRITE,
        MemberRole::Primary,
    )
}

pub fn build_read_only(cluster: &ReplicatedCluster, shard: Shard) -> Result<Service, BuildError> {
    shard_service(
        cluster,
        shard,
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

    const SINGLE: Shard = Shard {
        id: 0,
        count: 1,
        replicas: 3,
    };

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
        let rw = build_read_write(&c, SINGLE).unwrap();
        let ro = build_read_only(&c, SINGLE).unwrap();
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
            for s in [
                build_read_write(&c, SINGLE).unwrap(),
                build_read_only(&c, SINGLE).unwrap(),
                build_client(&c).unwrap(),
            ] {
                assert_eq!(s.spec.unwrap().type_.as_deref(), Some(t));
            }
        }
    }

    #[test]
    fn the_client_service_reaches_every_ready_node_of_every_shard() {
        let s = build_client(&cluster("{shards: 3}")).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("demo-client"));
        assert_eq!(s.metadata.labels.as_ref().unwrap()[SERVICE_LABEL], "client");
        assert_eq!(
            selector(&s),
            vec![
                pair("app.kubernetes.io/component", "node"),
                pair("app.kubernetes.io/instance", "demo"),
                pair("app.kubernetes.io/name", "rcluster"),
            ],
            "no role, no shard: any node routes any request"
        );
        let spec = s.spec.unwrap();
        assert_eq!(spec.publish_not_ready_addresses, None);
        assert_eq!(spec.cluster_ip, None);
    }

    #[test]
    fn each_shard_has_its_own_read_write_and_read_only_services() {
        let c = cluster("{shards: 2}");
        for id in [0, 1] {
            let shard = Shard {
                id,
                count: 2,
                replicas: 3,
            };
            let rw = build_read_write(&c, shard).unwrap();
            let ro = build_read_only(&c, shard).unwrap();
            let base = if id == 0 {
                "demo".to_string()
            } else {
                format!("demo-s{id}")
            };
            assert_eq!(rw.metadata.name, Some(format!("{base}-rw")));
            assert_eq!(ro.metadata.name, Some(format!("{base}-ro")));
            for (s, role) in [(&rw, "primary"), (&ro, "replica")] {
                let sel = selector(s);
                assert!(
                    sel.contains(&pair("rcluster.dev/shard", &id.to_string())),
                    "{sel:?}"
                );
                assert!(sel.contains(&pair("rcluster.dev/role", role)));
                assert_eq!(
                    s.metadata.labels.as_ref().unwrap()["rcluster.dev/shard"],
                    id.to_string()
                );
            }
        }
        // One shard: the selectors of a cluster created before shards, unchanged.
        let rw = build_read_write(&cluster("{}"), SINGLE).unwrap();
        assert!(!selector(&rw).iter().any(|(k, _)| k == "rcluster.dev/shard"));
    }
}
