//! The cluster map: where every slot lives and how to reach each shard. Served by every node at
//! `GET /v1/cluster`, pushed to nodes by the coordinator, cached by clients.

use crate::slots::{ShardId, SlotMap};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Which shard owns each slot.
    pub slots: SlotMap,
    /// Every shard, by number.
    pub shards: Vec<ShardInfo>,
}

/// One shard (replica group) as the coordinator last recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub shard: ShardId,
    /// Member name → base URL.
    pub members: BTreeMap<String, String>,
    /// The member that leads the shard in `term`, if one does.
    #[serde(default)]
    pub primary: Option<String>,
    #[serde(default)]
    pub term: u64,
}

impl ShardInfo {
    pub fn primary_url(&self) -> Option<&str> {
        self.primary
            .as_deref()
            .and_then(|p| self.members.get(p))
            .map(String::as_str)
    }
}

impl ClusterMap {
    /// One shard owning every slot: a cluster without shards.
    pub fn single(
        slots: u32,
        members: BTreeMap<String, String>,
        primary: Option<String>,
        term: u64,
    ) -> ClusterMap {
        ClusterMap {
            slots: SlotMap::single(slots),
            shards: vec![ShardInfo {
                shard: 0,
                members,
                primary,
                term,
            }],
        }
    }

    pub fn shard(&self, id: ShardId) -> Option<&ShardInfo> {
        self.shards.iter().find(|s| s.shard == id)
    }

    /// Combines what two maps know: the slot map of the higher epoch, and per shard the entry of
    /// the higher term (the newer on a tie). Maps arrive from one coordinator in order, but a node
    /// may hear a delayed push after a newer one; this makes the order not matter.
    pub fn merged(&self, newer: &ClusterMap) -> ClusterMap {
        let slots = if newer.slots.epoch >= self.slots.epoch {
            newer.slots.clone()
        } else {
            self.slots.clone()
        };
        let mut shards: BTreeMap<ShardId, ShardInfo> =
            self.shards.iter().map(|s| (s.shard, s.clone())).collect();
        for s in &newer.shards {
            match shards.get(&s.shard) {
                Some(old) if old.term > s.term => {}
                _ => {
                    shards.insert(s.shard, s.clone());
                }
            }
        }
        ClusterMap {
            slots,
            shards: shards.into_values().collect(),
        }
    }

    /// Checks the map is usable: a valid slot map, and an entry with members for every shard it
    /// names.
    pub fn validate(&self) -> Result<(), String> {
        self.slots.validate().map_err(|e| e.to_string())?;
        for id in 0..self.slots.shards {
            match self.shard(id) {
                Some(s) if !s.members.is_empty() => {}
                _ => return Err(format!("shard {id} has no members in the cluster map")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(shard: ShardId, primary: &str, term: u64) -> ShardInfo {
        ShardInfo {
            shard,
            members: [(primary.to_string(), format!("http://{primary}"))].into(),
            primary: Some(primary.into()),
            term,
        }
    }

    #[test]
    fn merging_keeps_the_newest_of_each_part() {
        let a = ClusterMap {
            slots: SlotMap::even(8, 2).unwrap(),
            shards: vec![info(0, "a", 3), info(1, "b", 1)],
        };
        let b = ClusterMap {
            slots: SlotMap::even(8, 2).unwrap().with_owner(0, 0, 1).unwrap(),
            shards: vec![info(0, "c", 2), info(1, "d", 2)],
        };
        let m = a.merged(&b);
        assert_eq!(m.slots.epoch, 2);
        assert_eq!(
            m.shard(0).unwrap().primary.as_deref(),
            Some("a"),
            "term 3 beats 2"
        );
        assert_eq!(m.shard(1).unwrap().primary.as_deref(), Some("d"));
        assert_eq!(b.merged(&a), m, "order does not matter");
        assert_eq!(m.shard(1).unwrap().primary_url(), Some("http://d"));
        m.validate().unwrap();
        let mut missing = m.clone();
        missing.shards.pop();
        assert!(missing.validate().is_err());
    }
}
