//! PodDisruptionBudget `<cluster>`: voluntary disruptions (node drains) take one member at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{BuildError, Owner, component, pdb_name, pod_selector};
use crate::crd::ReplicatedCluster;

pub fn build(cluster: &ReplicatedCluster) -> Result<PodDisruptionBudget, BuildError> {
    let owner = Owner::new(cluster)?;
    Ok(PodDisruptionBudget {
        metadata: owner.meta(pdb_name(&owner.name), component::NODE),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(pod_selector(&owner.name)),
                ..LabelSelector::default()
            }),
            // A member that is already not ready gives no availability to protect; without this
            // one stuck pod would block every node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::cluster;

    #[test]
    fn one_member_at_a_time_for_any_size() {
        for replicas in [1, 3, 7] {
            let pdb = build(&cluster(&format!("{{replicas: {replicas}}}"))).unwrap();
            assert_eq!(pdb.metadata.name.as_deref(), Some("demo"));
            let spec = pdb.spec.unwrap();
            assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
            assert_eq!(spec.min_available, None);
            assert_eq!(
                spec.selector.unwrap().match_labels,
                Some(pod_selector("demo"))
            );
            assert_eq!(
                spec.unhealthy_pod_eviction_policy.as_deref(),
                Some("AlwaysAllow")
            );
        }
    }
}
