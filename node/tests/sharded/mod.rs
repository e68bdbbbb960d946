//! Two or more shards of real nodes with a pushed cluster map (as the coordinator would push it).
#![allow(dead_code)]

use crate::common::{Cluster, Node};
use serde_json::json;

pub const FAST: &[&str] = &["--heartbeat-ms", "20", "--lease-ms", "500"];

pub struct Sharded {
    pub shards: Vec<Cluster>,
}

impl Sharded {
    /// `n` shards of `members` nodes each, every shard with its first node as primary, and the
    /// cluster map (slots spread evenly) pushed to every node.
    pub fn start(n: u32, members: usize) -> Sharded {
        let shards: Vec<Cluster> = (0..n)
            .map(|s| {
                let mut args = FAST.to_vec();
                let shard = s.to_string();
                args.extend(["--shard", shard.as_str()]);
                Cluster::with_primary(members, &args)
            })
            .collect();
        let c = Sharded { shards };
        c.push_map();
        c
    }

    /// Pushes the map with each shard's current primary (after a failover, say).
    pub fn push_map(&self) {
        let n = self.shards.len() as u32;
        let slots = rcluster_proto::SlotMap::even(4096, n).unwrap();
        let map = json!({
            "slots": slots,
            "shards": self.shards.iter().enumerate().map(|(s, c)| {
                let all: Vec<usize> = (0..c.nodes.len()).collect();
                let primary = c.nodes.iter().zip(&c.names).find_map(|(node, name)| {
                    (node.pid() != 0 && node.status()["role"] == "primary").then(|| name.clone())
                });
                json!({
                    "shard": s, "members": c.members(&all), "primary": primary, "term": c.term,
                })
            }).collect::<Vec<_>>(),
        });
        for c in &self.shards {
            for (i, node) in c.nodes.iter().enumerate() {
                if node.pid() == 0 {
                    continue;
                }
                let r = c.internal(i, "cluster-map", map.clone());
                assert_eq!(r.status, 200, "push the map: {}", r.body);
            }
        }
    }

    pub fn node(&self, shard: usize, i: usize) -> &Node {
        &self.shards[shard].nodes[i]
    }

    pub fn owner(&self, name: &str) -> u32 {
        rcluster_proto::SlotMap::even(4096, self.shards.len() as u32)
            .unwrap()
            .owner_of(name)
    }

    /// The first of `{prefix}0`, `{prefix}1`, … that shard `shard` owns.
    pub fn name_on(&self, shard: u32, prefix: &str) -> String {
        (0..10_000)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| self.owner(k) == shard)
            .expect("a name on every shard")
    }
}
