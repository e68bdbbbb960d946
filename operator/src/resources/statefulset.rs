//! StatefulSet `<cluster>` (shard k ≥ 1: `<cluster>-s<k>`): one rcluster-node pod per member of
//! the shard, each with its own volume. The shard number reaches the node in its shard's ConfigMap.
//!
//! With several shards the selector and the pod labels carry the shard (`rcluster.dev/shard`), so
//! each shard's StatefulSet, Services and PodDisruptionBudget select only its own pods. A cluster of
//! one shard keeps the selector and template it had before shards: the selector is immutable, and a
//! changed template would restart every pod.
//!
//! - `podManagementPolicy: Parallel`: members start together; the operator, not pod order, decides
//!   who is primary.
//! - `updateStrategy: OnDelete`: the StatefulSet never restarts pods by itself. After a template
//!   change the operator deletes replicas first and the primary last (after a switchover), so a
//!   rollout costs at most one failover-free primary change.
//! - PVCs are retained on scale-down and deletion: data is never removed by a spec change.
//! - `spec.tls` / `spec.auth`: the certificate Secret and the token Secret are mounted read-only
//!   (group-readable by fsGroup only) beside the cluster Secret, as whole directories rather than
//!   `subPath`, so the kubelet's updates of a renewed certificate reach the files the node watches.
//!   Probes then speak HTTPS (the kubelet does not verify the certificate; `/livez` and `/readyz`
//!   need no token).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy as RetentionPolicy;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceFieldSelector, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::configmap::CONFIG_KEY;
use super::secret::{CLUSTER_ID_KEY, TOKEN_KEY};
use super::security::{AUTH_KEY, CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY, auth_secret, tls_secret};
use super::{
    BuildError, NODE_PORT, Owner, PORT_NAME, Shard, common_labels, component, config_map_name,
    headless_service_name, pod_selector, secret_name, shard_selector, statefulset_name,
};
use crate::crd::{ReplicatedCluster, SHARD_LABEL};

/// Name of the node container.
pub const CONTAINER_NAME: &str = "node";
/// Name of the volume claim template; PVCs are `data-<pod>` (`data-<cluster>-<ordinal>` in shard 0).
pub const DATA_VOLUME: &str = "data";
pub const DATA_DIR: &str = "/var/lib/rcluster";
pub const CONFIG_DIR: &str = "/etc/rcluster";
pub const SECRET_DIR: &str = "/var/run/secrets/rcluster";
/// The node certificate, its key and the CA (`spec.tls`).
pub const TLS_DIR: &str = "/var/run/secrets/rcluster-tls";
/// The access tokens file (`spec.auth`).
pub const AUTH_DIR: &str = "/var/run/secrets/rcluster-auth";
/// Unprivileged user and group the node runs as (the distroless "nonroot" id).
pub const RUN_AS: i64 = 65532;

/// Path of the config file inside the container.
pub fn config_path() -> String {
    format!("{CONFIG_DIR}/{CONFIG_KEY}")
}

/// Path of the cluster token inside the container.
pub fn secret_path() -> String {
    format!("{SECRET_DIR}/{TOKEN_KEY}")
}

/// Arguments of the node container. The image's entrypoint is `rcluster-node`;
/// `$(POD_NAME)` is expanded by the kubelet from the container's env.
pub fn node_args(tls: bool, auth: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--data-dir",
        DATA_DIR,
        "--listen",
        &format!("0.0.0.0:{NODE_PORT}"),
        "--config",
        &config_path(),
        "--name",
        "$(POD_NAME)",
        "--secret-file",
        &secret_path(),
        "--log-json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if tls {
        for (flag, key) in [
            ("--tls-cert", TLS_CERT_KEY),
            ("--tls-key", TLS_KEY_KEY),
            ("--tls-ca", CA_CERT_KEY),
        ] {
            args.extend([flag.to_string(), format!("{TLS_DIR}/{key}")]);
        }
    }
    if auth {
        args.extend(["--auth-file".to_string(), format!("{AUTH_DIR}/{AUTH_KEY}")]);
    }
    args
}

pub fn build(cluster: &ReplicatedCluster, shard: Shard) -> Result<StatefulSet, BuildError> {
    let owner = Owner::new(cluster)?;
    Ok(StatefulSet {
        metadata: owner.shard_meta(
            statefulset_name(&owner.name, shard.id),
            component::NODE,
            shard.id,
        ),
        spec: Some(StatefulSetSpec {
            replicas: Some(shard.replicas),
            service_name: Some(headless_service_name(&owner.name)),
            selector: LabelSelector {
                match_labels: Some(shard_selector(&owner.name, shard.id, shard.count)),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("Parallel".to_string()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                rolling_update: None,
            }),
            persistent_volume_claim_retention_policy: Some(RetentionPolicy {
                when_deleted: Some("Retain".to_string()),
                when_scaled: Some("Retain".to_string()),
            }),
            template: pod_template(&owner, shard),
            volume_claim_templates: Some(vec![volume_claim(&owner)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

fn pod_template(owner: &Owner, shard: Shard) -> PodTemplateSpec {
    let spec = &owner.cluster.spec;
    let mut labels = common_labels(&owner.name, component::NODE);
    if shard.count > 1 {
        labels.insert(SHARD_LABEL.to_string(), shard.id.to_string());
    }
    let affinity = spec
        .affinity
        .clone()
        .unwrap_or_else(|| default_affinity(&owner.name));
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![node_container(owner)],
            volumes: Some(volumes(owner, shard)),
            affinity: Some(affinity),
            tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
            node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                // Skips a recursive chown of a large volume on every start.
                fs_group_change_policy: Some("OnRootMismatch".to_string()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_string(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            // Members find each other through the headless Service, not Service env vars.
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(30),
            ..PodSpec::default()
        }),
    }
}

/// Spread members over nodes when the user did not say otherwise: losing one node then loses
/// one member, not the majority.
fn default_affinity(cluster: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_string(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(pod_selector(cluster)),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The cluster id from the cluster Secret (required: a member without it would refuse its peers'
/// messages).
fn cluster_id_env(cluster: &str) -> EnvVar {
    EnvVar {
        name: "RCLUSTER_CLUSTER_ID".to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret_name(cluster),
                key: CLUSTER_ID_KEY.to_string(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The node's `--worker-threads` from the CPU its pod is given (`spec.resources`): the limit, else
/// the request, in whole CPUs rounded up (the downward API rounds up; a request of 0 gives 0, which
/// the node reads as its default). Without either the node would start a thread per CPU of the
/// host, and threads beyond the CPU a node gets cost it CPU in switches between them (README
/// "Performance"). The node's own default already follows a CPU limit (its cgroup quota); a
/// request is only known here.
fn worker_threads_env(resources: Option<&ResourceRequirements>) -> Option<EnvVar> {
    let sets_cpu =
        |m: &Option<BTreeMap<String, Quantity>>| m.as_ref().is_some_and(|m| m.contains_key("cpu"));
    let resource = match resources? {
        r if sets_cpu(&r.limits) => "limits.cpu",
        r if sets_cpu(&r.requests) => "requests.cpu",
        _ => return None,
    };
    Some(EnvVar {
        name: "RCLUSTER_WORKER_THREADS".to_string(),
        value_from: Some(EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some(CONTAINER_NAME.to_string()),
                resource: resource.to_string(),
                divisor: Some(Quantity("1".to_string())),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    })
}

fn http_probe(path: &str, tls: bool, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(PORT_NAME.to_string()),
            scheme: tls.then(|| "HTTPS".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn node_container(owner: &Owner) -> Container {
    let spec = &owner.cluster.spec;
    let on = owner.cluster.security();
    let (tls, auth) = (on.tls, on.auth);
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().to_string()),
        args: Some(node_args(tls, auth)),
        env: Some(
            [
                Some(field_env("POD_NAME", "metadata.name")),
                Some(field_env("POD_NAMESPACE", "metadata.namespace")),
                Some(cluster_id_env(&owner.name)),
                worker_threads_env(spec.resources.as_ref()),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_string()),
            container_port: NODE_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        // Replaying a long log can take a while; liveness must not kill the node meanwhile.
        startup_probe: Some(http_probe("/livez", tls, 2, 150)),
        liveness_probe: Some(http_probe("/livez", tls, 10, 3)),
        // Short period: the ro Service should stop routing to a lagging replica quickly.
        readiness_probe: Some(http_probe("/readyz", tls, 2, 2)),
        resources: spec.resources.clone(),
        volume_mounts: Some(
            [
                Some(mount(DATA_VOLUME, DATA_DIR, false)),
                Some(mount("config", CONFIG_DIR, true)),
                Some(mount("secret", SECRET_DIR, true)),
                tls.then(|| mount(TLS_VOLUME, TLS_DIR, true)),
                auth.then(|| mount(AUTH_VOLUME, AUTH_DIR, true)),
                Some(mount("tmp", "/tmp", false)),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// Volume names of the certificate and token Secrets.
pub const TLS_VOLUME: &str = "tls";
pub const AUTH_VOLUME: &str = "auth";

fn volumes(owner: &Owner, shard: Shard) -> Vec<Volume> {
    let cluster = owner.name.as_str();
    let items = |keys: &[&str]| {
        Some(
            keys.iter()
                .map(|key| KeyToPath {
                    key: key.to_string(),
                    path: key.to_string(),
                    ..KeyToPath::default()
                })
                .collect(),
        )
    };
    let item = |key: &str| items(&[key]);
    let secret_volume = |name: &str, secret: String, keys: &[&str]| Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            items: items(keys),
            // Owner root, group fsGroup: readable by the node's group only.
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut v = vec![
        Volume {
            name: "config".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(cluster, shard.id),
                items: item(CONFIG_KEY),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "secret".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name(cluster)),
                items: item(TOKEN_KEY),
                // Owner root, group fsGroup: readable by the node's group only.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    if let Some(secret) = tls_secret(owner.cluster, cluster) {
        let keys = [TLS_CERT_KEY, TLS_KEY_KEY, CA_CERT_KEY];
        v.push(secret_volume(TLS_VOLUME, secret, &keys));
    }
    if let Some(secret) = auth_secret(owner.cluster, cluster) {
        v.push(secret_volume(AUTH_VOLUME, secret, &[AUTH_KEY]));
    }
    v
}

fn volume_claim(owner: &Owner) -> PersistentVolumeClaim {
    let storage = &owner.cluster.spec.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(pod_selector(&owner.name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: storage.class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

#[cfg(test)]
#[path = "statefulset_tests.rs"]
mod tests;
