//! The slot map as the status records it, and the shard label. (Each shard's record,
//! `ShardStatus`, is in `status.rs` beside the types it is made of.)
//!
//! Shaped so that resharding can add its own record beside them (the migration in progress, every
//! step recorded before the nodes act) without changing these: a shard's record is the same
//! whether or not slots move, and the slot map is replaced as a whole at the next epoch.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rcluster_proto::migration::{Migration, Phase};
use rcluster_proto::{SlotMap, SlotRange};
use serde::{Deserialize, Serialize};

use crate::reshard::Resharding;

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

/// A resharding under way (`spec.shards` changed): recorded before each of its steps acts, so
/// an operator that restarts, or a failover in either shard, resumes it from here.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReshardStatus {
    /// The shard count being resharded to, and the one it began from.
    pub shards: i32,
    #[serde(default)]
    pub from: i32,
    /// The one range moving now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
    /// Slots moved so far, and still to move (the moving range included).
    pub moved_slots: i64,
    pub remaining_slots: i64,
    /// A few words for `kubectl get rcl`: `2 -> 3: 512/1365 slots`.
    pub progress: String,
    /// One line: what moves now and how far it is (also the `Resharding` condition's message).
    pub message: String,
    /// When the resharding began, and when its last step was recorded (an alert fires when no
    /// step is recorded for long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<Time>,
}

/// Slots `start..=end` moving from shard `from` to shard `to`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    pub start: i32,
    pub end: i32,
    pub from: i32,
    pub to: i32,
    /// Copying, Fencing (writes to the range paused), Owned (the slot map names the target from
    /// `epoch` on), Dropping (the source forgets its copy), Aborting (undone before Owned).
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

impl From<&Migration> for MigrationStatus {
    fn from(m: &Migration) -> Self {
        let (phase, epoch) = match m.phase {
            Phase::Copying => ("Copying", None),
            Phase::Fencing => ("Fencing", None),
            Phase::Owned { epoch } => ("Owned", Some(epoch as i64)),
            Phase::Dropping { epoch } => ("Dropping", Some(epoch as i64)),
            Phase::Aborting => ("Aborting", None),
        };
        MigrationStatus {
            start: m.start as i32,
            end: m.end as i32,
            from: m.from as i32,
            to: m.to as i32,
            phase: phase.to_string(),
            epoch,
        }
    }
}

impl MigrationStatus {
    pub fn to_migration(&self) -> Result<Migration, String> {
        let n = |v: i32, what: &str| {
            u32::try_from(v)
                .map_err(|_| format!("status.reshard.migration: {what} {v} is negative"))
        };
        let epoch = || {
            self.epoch
                .and_then(|e| u64::try_from(e).ok())
                .ok_or_else(|| format!("status.reshard.migration: {} needs an epoch", self.phase))
        };
        let phase = match self.phase.as_str() {
            "Copying" => Phase::Copying,
            "Fencing" => Phase::Fencing,
            "Owned" => Phase::Owned { epoch: epoch()? },
            "Dropping" => Phase::Dropping { epoch: epoch()? },
            "Aborting" => Phase::Aborting,
            other => return Err(format!("status.reshard.migration: unknown phase {other:?}")),
        };
        Ok(Migration {
            start: n(self.start, "start")?,
            end: n(self.end, "end")?,
            from: n(self.from, "from")?,
            to: n(self.to, "to")?,
            phase,
        })
    }
}

impl ReshardStatus {
    /// The record as saved, with its progress figures from `map`.
    pub fn new(
        r: &Resharding,
        map: &SlotMap,
        started: Option<Time>,
        last_step: Option<Time>,
    ) -> Self {
        ReshardStatus {
            shards: r.shards as i32,
            from: r.from as i32,
            migration: r.migration.as_ref().map(MigrationStatus::from),
            moved_slots: r.moved_slots.into(),
            remaining_slots: r.remaining(map).into(),
            progress: r.progress(map),
            message: r.describe(map),
            started,
            last_step,
        }
    }

    pub fn to_resharding(&self) -> Result<Resharding, String> {
        Ok(Resharding {
            shards: u32::try_from(self.shards)
                .map_err(|_| format!("status.reshard.shards {} is negative", self.shards))?,
            from: u32::try_from(self.from).unwrap_or(0),
            migration: self
                .migration
                .as_ref()
                .map(MigrationStatus::to_migration)
                .transpose()?,
            moved_slots: u32::try_from(self.moved_slots).unwrap_or(0),
        })
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

    #[test]
    fn the_resharding_record_round_trips() {
        let map = SlotMap::even(4096, 2).unwrap().with_shards(3).unwrap();
        for phase in [
            Phase::Copying,
            Phase::Fencing,
            Phase::Owned { epoch: 7 },
            Phase::Dropping { epoch: 7 },
            Phase::Aborting,
        ] {
            let r = Resharding {
                shards: 3,
                from: 2,
                migration: Some(Migration {
                    phase,
                    ..Migration::new(1366, 2047, 0, 2)
                }),
                moved_slots: 5,
            };
            let recorded = ReshardStatus::new(&r, &map, None, None);
            assert_eq!(recorded.to_resharding().unwrap(), r);
            assert_eq!(recorded.remaining_slots, 1365);
        }
        let mut bad = MigrationStatus::from(&Migration::new(0, 1, 0, 1));
        bad.phase = "Owned".into();
        assert!(bad.to_migration().unwrap_err().contains("needs an epoch"));
        bad.phase = "Sideways".into();
        assert!(bad.to_migration().is_err());
    }
}
