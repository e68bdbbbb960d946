//! The status of a cluster's shards: one coordinator record per shard and the slot map.
//!
//! Shaped so that resharding can add its own record beside them (the migration in progress, every
//! step recorded before the nodes act) without changing these: a shard's record is the same
//! whether or not slots move, and the slot map is replaced as a whole at the next epoch.

use kube::KubeSchema;
use rcluster_proto::{SlotMap, SlotRange};
use serde::{Deserialize, Serialize};

use super::{LastFailover, MemberStatus, Phase, SwitchoverStatus};

/// Label on every member pod: the shard it belongs to (`0`, `1`, ...). Per-shard Services, the
/// PodDisruptionBudgets and the metrics' `shard` label select on it.
pub const SHARD_LABEL: &str = "rcluster.dev/shard";

/// One shard: its coordinator record, its members as last observed, and the slots it owns.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// The shard's number, `0 <= shard < shards`.
    pub shard: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Pod name of the shard's current primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The shard's current term (terms of different shards are unrelated).
    #[serde(default)]
    pub term: i64,
    /// The shard's member pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// The shard's members that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The hash slots the shard owns, as ranges: `0-2047`, or `-` for none.
    #[serde(default)]
    pub slots: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub members: Vec<MemberStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<LastFailover>,
    /// The member list in force since `term`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_list: Vec<String>,
    /// While a member change is not committed yet: the list before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_member_list: Option<Vec<String>>,
    /// A planned switchover in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverStatus>,
}

/// The slot map as recorded: which shard owns each hash slot, at an epoch that grows with every
/// change of ownership.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotMapStatus {
    pub epoch: i64,
    /// How many hash slots the cluster has (fixed at creation).
    pub slots: i32,
    /// How many shards the map has room for: the cluster's shard count.
    pub shards: i32,
    /// Sorted, contiguous ranges covering every slot exactly once.
    pub ranges: Vec<SlotRangeStatus>,
}

/// Slots `start..=end`, owned by `shard`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct SlotRangeStatus {
    pub start: i32,
    pub end: i32,
    pub shard: i32,
}

impl From<&SlotMap> for SlotMapStatus {
    fn from(m: &SlotMap) -> Self {
        SlotMapStatus {
            epoch: m.epoch as i64,
            slots: m.slots as i32,
            shards: m.shards as i32,
            ranges: m
                .ranges
                .iter()
                .map(|r| SlotRangeStatus {
                    start: r.start as i32,
                    end: r.end as i32,
                    shard: r.shard as i32,
                })
                .collect(),
        }
    }
}

impl SlotMapStatus {
    /// The recorded map, checked: every slot has exactly one owner. A map someone edited into
    /// something else is an error, never routed by.
    pub fn to_slot_map(&self) -> Result<SlotMap, String> {
        let n = |v: i64, what: &str| {
            u32::try_from(v).map_err(|_| format!("status.slotMap: {what} {v} is out of range"))
        };
        let ranges = self
            .ranges
            .iter()
            .map(|r| {
                Ok(SlotRange {
                    start: n(r.start.into(), "range start")?,
                    end: n(r.end.into(), "range end")?,
                    shard: n(r.shard.into(), "shard")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let map = SlotMap {
            epoch: u64::try_from(self.epoch)
                .map_err(|_| format!("status.slotMap: epoch {} is negative", self.epoch))?,
            slots: n(self.slots.into(), "slot count")?,
            shards: n(self.shards.into(), "shard count")?,
            ranges,
        };
        map.validate()
            .map_err(|e| format!("status.slotMap is invalid: {e}"))?;
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_map_round_trips_and_a_broken_one_is_refused() {
        let map = SlotMap::even(4096, 3).unwrap();
        let recorded = SlotMapStatus::from(&map);
        assert_eq!(recorded.shards, 3);
        assert_eq!(
            recorded.ranges[1],
            SlotRangeStatus {
                start: 1366,
                end: 2730,
                shard: 1
            }
        );
        assert_eq!(recorded.to_slot_map().unwrap(), map);

        let mut gap = recorded.clone();
        gap.ranges[1].start += 1;
        assert!(gap.to_slot_map().unwrap_err().contains("not owned"));
        let mut unknown = recorded.clone();
        unknown.ranges[2].shard = 3;
        assert!(unknown.to_slot_map().is_err());
        let mut negative = recorded;
        negative.epoch = -1;
        assert!(negative.to_slot_map().is_err());
    }
}
