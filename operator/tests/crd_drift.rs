//! The checked-in CRD must be exactly what the Rust types generate.

use std::path::Path;

const CRD_FILE: &str = "crds/replicatedclusters.rcluster.dev.yaml";

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CRD_FILE);
    let generated = rcluster_operator::crd::crd_yaml().expect("generate CRD");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{CRD_FILE} is out of date with operator/src/crd.rs. Regenerate it from the repository root:\n\
         \n    cargo run -q -p rcluster-operator -- crd > {CRD_FILE}\n"
    );
}

#[test]
fn generated_yaml_parses_back_to_the_same_crd() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    let yaml = rcluster_operator::crd::crd_yaml().unwrap();
    let parsed: CustomResourceDefinition = serde_saphyr::from_str(&yaml).expect("YAML parses");
    assert_eq!(
        parsed,
        rcluster_operator::crd::ReplicatedCluster::crd(),
        "YAML round trip changed the CRD"
    );
}
