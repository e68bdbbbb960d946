//! The slot map as the status records it, and the shard label. (Each shard's record,
//! `ShardStatus`, is in `status.rs` beside the types it is made of.)
//!
//! Shaped so that resharding can add its own record beside them (the migration in progress, every
//! step recorded before the nodes act) without changing these: a shard's record is the same
//! whether or not slots move, and the slot map is replaced as a whole at the next epoch.

use rcluster_proto::{SlotMap, SlotRange};
use serde::{Deserialize, Serialize};

/// Label on every member pod: the shard it belongs to (`0`, `1`, ...). Per-shard Services, the
/// PodDisruptionBudgets and the metrics' `shard` label select on it.
pub const SHARD_LABEL: &str = "rcluster.dev/shard";

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
