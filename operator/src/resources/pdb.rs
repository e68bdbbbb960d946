//! PodDisruptionBudget `<cluster>` (shard k ≥ 1: `<cluster>-s<k>`): voluntary disruptions (node
//! drains) take one member of each shard at a time, so a drain never costs a shard its quorum.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{BuildError, Owner, Shard, component, pdb_name, shard_selector};
use crate::crd::ReplicatedCluster;

pub fn build(cluster: &ReplicatedCluster, shard: Shard) -> Result<PodDisruptionBudget, BuildError> {
    let owner = Owner::new(cluster)?;
    Ok(PodDisruptionBudget {
        metadata: owner.shard_meta(pdb_name(&owner.name, shard.id), component::NODE, shard.id),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(shard_selector(&owner.name, shard.id, shard.count)),
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
    use crate::resources::pod_selector;
    use crate::resources::test_support::cluster;

    #[test]
    fn one_member_at_a_time_for_any_size() {
        for replicas in [1, 3, 7] {
            let shard = Shard {
                id: 0,
                count: 1,
                replicas,
            };
            let pdb = build(&cluster(&format!("{{replicas: {replicas}}}")), shard).unwrap();
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

    #[test]
    fn each_shard_has_its_own_budget() {
        let c = cluster("{shards: 2}");
        for id in [0, 1] {
            let shard = Shard {
                id,
                count: 2,
                replicas: 3,
            };
            let pdb = build(&c, shard).unwrap();
            let name = if id == 0 {
                "demo".to_string()
            } else {
                format!("demo-s{id}")
            };
            assert_eq!(pdb.metadata.name, Some(name));
            let selector = pdb.spec.unwrap().selector.unwrap().match_labels.unwrap();
            assert_eq!(selector["rcluster.dev/shard"], id.to_string());
        }
    }
}
