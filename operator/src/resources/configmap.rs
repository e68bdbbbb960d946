//! ConfigMap `<cluster>-config` (shard k: `<cluster>-s<k>-config`) holding `cluster.json`, the
//! node's `--config` file: the shard number and the shard's member list.
//!
//! It is shared by every member of the shard, so it holds nothing member-specific: each node learns
//! its own name from `--name $(POD_NAME)`. Mounted as a directory (not `subPath`), so the kubelet
//! updates the file in place when members change. Which slots each shard owns is not here: the
//! operator records the slot map in the status and pushes it to every node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::{Deserialize, Serialize};

use super::{BuildError, Owner, Shard, component, config_map_name, member_url, pod_name};
use crate::crd::{AckMode, Fsync, ReadConsistency, ReplicatedCluster};

/// Key (file name) of the config in the ConfigMap.
pub const CONFIG_KEY: &str = "cluster.json";

/// The contents of `cluster.json`, as `rcluster-node --config` reads it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// Name of the ReplicatedCluster.
    pub cluster: String,
    /// The shard (replica group) the members belong to.
    pub shard: u32,
    /// Every member of the shard: pod name → base URL through the headless Service.
    pub members: BTreeMap<String, String>,
    /// Default write acknowledgement: async | one | quorum | all.
    pub ack: AckMode,
    /// Default read consistency: linearizable | session | eventual.
    pub consistency: ReadConsistency,
    /// always | interval.
    pub fsync: Fsync,
    pub fsync_interval_ms: u32,
}

/// The config every member of `shard` gets.
pub fn cluster_config(
    cluster: &ReplicatedCluster,
    shard: Shard,
) -> Result<ClusterConfig, BuildError> {
    let owner = Owner::new(cluster)?;
    let spec = &cluster.spec;
    let tls = cluster.security().tls;
    let set = shard.set_name(&owner.name);
    let members = (0..shard.replicas.max(0))
        .map(|i| {
            let pod = pod_name(&set, i);
            let url = member_url(&owner.name, &owner.namespace, &pod, tls);
            (pod, url)
        })
        .collect();
    Ok(ClusterConfig {
        cluster: owner.name.clone(),
        shard: shard.id,
        members,
        ack: spec.replication.ack,
        consistency: spec.replication.read_consistency,
        fsync: spec.fsync,
        fsync_interval_ms: u32::try_from(spec.fsync_interval_ms.max(1)).unwrap_or(1),
    })
}

pub fn build(cluster: &ReplicatedCluster, shard: Shard) -> Result<ConfigMap, BuildError> {
    let owner = Owner::new(cluster)?;
    let config = cluster_config(cluster, shard)?;
    let mut json =
        serde_json::to_string_pretty(&config).map_err(|e| BuildError::Config(e.to_string()))?;
    json.push('\n');
    Ok(ConfigMap {
        metadata: owner.shard_meta(
            config_map_name(&owner.name, shard.id),
            component::CONFIG,
            shard.id,
        ),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), json)])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::cluster;

    /// Shard 0 of a one-shard cluster with the spec's members.
    fn single(c: &ReplicatedCluster) -> Shard {
        Shard {
            id: 0,
            count: 1,
            replicas: c.spec.replicas,
        }
    }

    fn config_of(spec: &str) -> serde_json::Value {
        let c = cluster(spec);
        let cm = build(&c, single(&c)).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-config"));
        let labels = cm.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], "config");
        let data = cm.data.unwrap();
        assert_eq!(data.len(), 1);
        serde_json::from_str(&data[CONFIG_KEY]).unwrap()
    }

    #[test]
    fn defaults_give_three_members_quorum_linearizable_always() {
        let v = config_of("{}");
        assert_eq!(
            v,
            serde_json::json!({
                "cluster": "demo",
                "shard": 0,
                "members": {
                    "demo-0": "http://demo-0.demo-headless.shop.svc:7000",
                    "demo-1": "http://demo-1.demo-headless.shop.svc:7000",
                    "demo-2": "http://demo-2.demo-headless.shop.svc:7000",
                },
                "ack": "quorum",
                "consistency": "linearizable",
                "fsync": "always",
                "fsync_interval_ms": 10,
            })
        );
    }

    #[test]
    fn spec_options_reach_the_config() {
        let v = config_of(
            "{replicas: 5, replication: {ack: all, readConsistency: session}, fsync: interval, fsyncIntervalMs: 25}",
        );
        assert_eq!(v["members"].as_object().unwrap().len(), 5);
        assert_eq!(
            v["members"]["demo-4"],
            "http://demo-4.demo-headless.shop.svc:7000"
        );
        assert_eq!(v["ack"], "all");
        assert_eq!(v["consistency"], "session");
        assert_eq!(v["fsync"], "interval");
        assert_eq!(v["fsync_interval_ms"], 25);

        for (ack, consistency) in [("async", "eventual"), ("one", "linearizable")] {
            let v = config_of(&format!(
                "{{replicas: 2, replication: {{ack: {ack}, readConsistency: {consistency}}}}}"
            ));
            assert_eq!(v["ack"], ack);
            assert_eq!(v["consistency"], consistency);
        }
    }

    #[test]
    fn a_single_member_lists_only_itself() {
        let v = config_of("{replicas: 1}");
        assert_eq!(
            v["members"],
            serde_json::json!({"demo-0": "http://demo-0.demo-headless.shop.svc:7000"})
        );
    }

    #[test]
    fn config_round_trips_through_its_type() {
        let c = cluster("{replicas: 2}");
        let cm = build(&c, single(&c)).unwrap();
        let parsed: ClusterConfig = serde_json::from_str(&cm.data.unwrap()[CONFIG_KEY]).unwrap();
        assert_eq!(parsed, cluster_config(&c, single(&c)).unwrap());
    }

    #[test]
    fn each_shard_lists_its_own_members() {
        let c = cluster("{replicas: 2, shards: 3}");
        let shard = Shard {
            id: 2,
            count: 3,
            replicas: 2,
        };
        let cm = build(&c, shard).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-s2-config"));
        assert_eq!(
            cm.metadata.labels.as_ref().unwrap()["rcluster.dev/shard"],
            "2"
        );
        let v: serde_json::Value = serde_json::from_str(&cm.data.unwrap()[CONFIG_KEY]).unwrap();
        assert_eq!(v["shard"], 2);
        assert_eq!(
            v["members"],
            serde_json::json!({
                "demo-s2-0": "http://demo-s2-0.demo-headless.shop.svc:7000",
                "demo-s2-1": "http://demo-s2-1.demo-headless.shop.svc:7000",
            })
        );
    }
}
