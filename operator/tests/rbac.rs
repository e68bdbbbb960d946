//! The RBAC manifests grant exactly the verbs the operator needs, and the cluster-wide and
//! namespaced variants stay identical.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;

fn rbac_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/rbac")
}

fn load<T: DeserializeOwned>(file: &str) -> T {
    let path = rbac_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (api group, resources, verbs) the operator needs, in manifest order.
const EXPECTED: &[(&str, &[&str], &[&str])] = &[
    (
        "rcluster.dev",
        &["replicatedclusters"],
        &["get", "list", "watch", "patch", "update"],
    ),
    (
        "rcluster.dev",
        &["replicatedclusters/status"],
        &["get", "patch", "update"],
    ),
    (
        "rcluster.dev",
        &["replicatedclusters/finalizers"],
        &["update"],
    ),
    (
        "apps",
        &["statefulsets"],
        &[
            "get", "list", "watch", "create", "patch", "update", "delete",
        ],
    ),
    (
        "",
        &["services", "configmaps", "secrets"],
        &[
            "get", "list", "watch", "create", "patch", "update", "delete",
        ],
    ),
    (
        "policy",
        &["poddisruptionbudgets"],
        &[
            "get", "list", "watch", "create", "patch", "update", "delete",
        ],
    ),
    ("", &["pods"], &["get", "list", "watch", "patch", "delete"]),
    // The volumes of a shard that a resharding removed.
    ("", &["persistentvolumeclaims"], &["list", "delete"]),
    ("events.k8s.io", &["events"], &["create", "patch"]),
    ("", &["events"], &["create", "patch"]),
    (
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update", "patch"],
    ),
    (
        "monitoring.coreos.com",
        &["servicemonitors"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
];

fn simplify(rules: &[PolicyRule]) -> Vec<(String, Vec<String>, Vec<String>)> {
    rules
        .iter()
        .map(|r| {
            let groups = r.api_groups.clone().unwrap_or_default();
            assert_eq!(
                groups.len(),
                1,
                "one API group per rule keeps the review simple: {r:?}"
            );
            assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
            (
                groups[0].clone(),
                r.resources.clone().unwrap_or_default(),
                r.verbs.clone(),
            )
        })
        .collect()
}

#[test]
fn cluster_role_grants_exactly_the_needed_verbs() {
    let role: ClusterRole = load("clusterrole.yaml");
    let expected: Vec<(String, Vec<String>, Vec<String>)> = EXPECTED
        .iter()
        .map(|(g, r, v)| {
            (
                g.to_string(),
                r.iter().map(|s| s.to_string()).collect(),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(simplify(&role.rules.unwrap()), expected);
    assert!(role.aggregation_rule.is_none());
}

#[test]
fn namespaced_role_has_the_same_rules() {
    let cluster: ClusterRole = load("clusterrole.yaml");
    let ns: Role = load("role.yaml");
    assert_eq!(ns.metadata.namespace.as_deref(), Some("rcluster-system"));
    assert_eq!(ns.metadata.name, cluster.metadata.name);
    assert_eq!(ns.rules, cluster.rules);
}

#[test]
fn bindings_give_the_roles_to_the_service_account() {
    let sa: ServiceAccount = load("service-account.yaml");
    let sa_name = sa.metadata.name.clone().unwrap();
    let sa_ns = sa.metadata.namespace.clone().unwrap();
    let crb: ClusterRoleBinding = load("clusterrolebinding.yaml");
    assert_eq!(crb.role_ref.kind, "ClusterRole");
    assert_eq!(crb.role_ref.name, "rcluster-operator");
    let rb: RoleBinding = load("rolebinding.yaml");
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(rb.role_ref.name, "rcluster-operator");
    assert_eq!(rb.metadata.namespace.as_deref(), Some(sa_ns.as_str()));
    for subjects in [crb.subjects.unwrap(), rb.subjects.unwrap()] {
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, sa_name);
        assert_eq!(subjects[0].namespace.as_deref(), Some(sa_ns.as_str()));
    }
}

#[test]
fn user_roles_aggregate_and_cover_scale() {
    let text = std::fs::read_to_string(rbac_dir().join("user-roles.yaml")).unwrap();
    let roles: Vec<ClusterRole> = serde_saphyr::from_multiple(&text).unwrap();
    assert_eq!(roles.len(), 2);
    for role in &roles {
        let labels = role.metadata.labels.clone().unwrap();
        assert_eq!(
            labels["rbac.authorization.k8s.io/aggregate-to-edit"],
            "true"
        );
    }
    let all: Vec<String> = roles
        .iter()
        .flat_map(|r| r.rules.clone().unwrap())
        .flat_map(|r| r.resources.unwrap())
        .collect();
    assert!(all.iter().any(|r| r == "replicatedclusters/scale"));
}

#[test]
fn kustomization_lists_existing_files() {
    let text = std::fs::read_to_string(rbac_dir().join("kustomization.yaml")).unwrap();
    let k: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let resources = k["resources"].as_array().unwrap();
    assert!(!resources.is_empty());
    for r in resources {
        let file = rbac_dir().join(r.as_str().unwrap());
        assert!(file.exists(), "{} missing", file.display());
    }
}
