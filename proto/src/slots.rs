//! Hash slots: which shard owns a key or a topic.
//!
//! A cluster has a fixed number of slots, chosen at creation and never changed (resharding moves
//! slots between shards; it never rehashes). `slot = fmix32(crc32c(hashed part)) % slots`, where the hashed
//! part of a name is the text inside its first `{…}` when that is non-empty (Redis Cluster's hash
//! tags: `{user42}/profile` and `{user42}/posts/7` share a slot), else the whole name. Topics hash
//! by their name with the same rule, and their subscriptions and cursors live with them.
//!
//! The [`SlotMap`] says which shard owns each slot. It belongs to the coordinator, is stored in its
//! durable record before any node acts on it, and carries an `epoch` that grows with every change
//! of ownership: a node or client holding a map with a lower epoch must refresh it, never obey it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Slots of a new cluster unless it asks otherwise.
pub const DEFAULT_SLOTS: u32 = 4096;
/// Upper bound on the slot count (a slot number must fit the status and routing tables cheaply).
pub const MAX_SLOTS: u32 = 65_536;

/// A shard's number: shard `k` of a cluster with `n` shards, `0 <= k < n`.
pub type ShardId = u32;

/// The part of `name` that is hashed: the first non-empty `{tag}`, else all of it.
pub fn hash_tag(name: &str) -> &str {
    if let Some(open) = name.find('{')
        && let Some(len) = name[open + 1..].find('}')
        && len > 0
    {
        return &name[open + 1..open + 1 + len];
    }
    name
}

/// The slot of a record key or topic name in a cluster of `slots` slots.
///
/// CRC32C alone is linear over GF(2): keys that differ only in a counter suffix (`key1`, `key2`,
/// …) land in slots with a visible pattern (30 %/20 % instead of 25 % each over four shards).
/// murmur3's finalizer mixes every bit into every other before the modulo; it is a bijection, so
/// it adds no collisions.
pub fn slot_of(name: &str, slots: u32) -> u32 {
    fmix32(crc32c::crc32c(hash_tag(name).as_bytes())) % slots.max(1)
}

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Slots `start..=end`, owned by `shard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRange {
    pub start: u32,
    pub end: u32,
    pub shard: ShardId,
}

impl SlotRange {
    /// How many slots the range holds (never zero: `end >= start`).
    pub fn count(&self) -> u32 {
        self.end - self.start + 1
    }

    pub fn contains(&self, slot: u32) -> bool {
        (self.start..=self.end).contains(&slot)
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// Which shard owns each slot, at one epoch.
///
/// Invariant (checked by [`SlotMap::validate`], kept by every constructor): the ranges are sorted,
/// contiguous, cover `0..slots` exactly once, adjacent ranges of one shard are merged, and every
/// shard id is below `shards`. So every slot has exactly one owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotMap {
    pub epoch: u64,
    pub slots: u32,
    pub shards: u32,
    pub ranges: Vec<SlotRange>,
}

/// Why a slot map is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotMapError {
    BadSlotCount(u32),
    NoShards,
    /// A slot is owned by nobody or by two ranges.
    Coverage {
        slot: u32,
    },
    UnknownShard {
        shard: ShardId,
    },
    /// An empty or reversed range.
    BadRange {
        start: u32,
        end: u32,
    },
}

impl fmt::Display for SlotMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotMapError::BadSlotCount(n) => {
                write!(f, "the slot count must be 1..={MAX_SLOTS}, got {n}")
            }
            SlotMapError::NoShards => f.write_str("a slot map needs at least one shard"),
            SlotMapError::Coverage { slot } => {
                write!(f, "slot {slot} is not owned by exactly one range")
            }
            SlotMapError::UnknownShard { shard } => {
                write!(f, "a range names shard {shard}, which does not exist")
            }
            SlotMapError::BadRange { start, end } => write!(f, "bad slot range {start}-{end}"),
        }
    }
}

impl std::error::Error for SlotMapError {}

impl SlotMap {
    /// `slots` slots spread over `shards` shards in equal contiguous ranges (the first shards take
    /// one slot more when it does not divide), at epoch 1.
    pub fn even(slots: u32, shards: u32) -> Result<SlotMap, SlotMapError> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(SlotMapError::BadSlotCount(slots));
        }
        if shards == 0 || shards > slots {
            return Err(SlotMapError::NoShards);
        }
        let base = slots / shards;
        let extra = slots % shards;
        let mut ranges = Vec::with_capacity(shards as usize);
        let mut start = 0;
        for shard in 0..shards {
            let len = base + u32::from(shard < extra);
            ranges.push(SlotRange {
                start,
                end: start + len - 1,
                shard,
            });
            start += len;
        }
        Ok(SlotMap {
            epoch: 1,
            slots,
            shards,
            ranges,
        })
    }

    /// A single shard owning every slot: what a cluster without shards is.
    pub fn single(slots: u32) -> SlotMap {
        SlotMap::even(slots.clamp(1, MAX_SLOTS), 1).expect("one shard always fits")
    }

    pub fn validate(&self) -> Result<(), SlotMapError> {
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(SlotMapError::BadSlotCount(self.slots));
        }
        if self.shards == 0 {
            return Err(SlotMapError::NoShards);
        }
        let mut next = 0u32;
        for r in &self.ranges {
            if r.end < r.start {
                return Err(SlotMapError::BadRange {
                    start: r.start,
                    end: r.end,
                });
            }
            if r.start != next || r.end >= self.slots {
                return Err(SlotMapError::Coverage {
                    slot: next.min(self.slots - 1),
                });
            }
            if r.shard >= self.shards {
                return Err(SlotMapError::UnknownShard { shard: r.shard });
            }
            next = r.end + 1;
        }
        if next != self.slots {
            return Err(SlotMapError::Coverage { slot: next });
        }
        Ok(())
    }

    /// The shard owning `slot` (`None` only for a slot outside the map).
    pub fn owner(&self, slot: u32) -> Option<ShardId> {
        let i = self.ranges.partition_point(|r| r.end < slot);
        self.ranges
            .get(i)
            .filter(|r| r.contains(slot))
            .map(|r| r.shard)
    }

    /// The shard owning a key or topic name.
    pub fn owner_of(&self, name: &str) -> ShardId {
        self.owner(slot_of(name, self.slots)).unwrap_or(0)
    }

    pub fn slot_of(&self, name: &str) -> u32 {
        slot_of(name, self.slots)
    }

    /// The ranges `shard` owns, in slot order.
    pub fn ranges_of(&self, shard: ShardId) -> impl Iterator<Item = &SlotRange> {
        self.ranges.iter().filter(move |r| r.shard == shard)
    }

    /// How many slots `shard` owns.
    pub fn slot_count(&self, shard: ShardId) -> u32 {
        self.ranges_of(shard).map(SlotRange::count).sum()
    }

    /// The map after giving `start..=end` to `to`, at the next epoch. The other slots keep their
    /// owners; adjacent ranges of one shard are merged.
    pub fn with_owner(&self, start: u32, end: u32, to: ShardId) -> Result<SlotMap, SlotMapError> {
        if end < start || end >= self.slots {
            return Err(SlotMapError::BadRange { start, end });
        }
        if to >= self.shards {
            return Err(SlotMapError::UnknownShard { shard: to });
        }
        let mut out: Vec<SlotRange> = Vec::with_capacity(self.ranges.len() + 2);
        let mut push = |r: SlotRange| match out.last_mut() {
            Some(last) if last.shard == r.shard && last.end + 1 == r.start => last.end = r.end,
            _ => out.push(r),
        };
        for r in &self.ranges {
            if r.end < start || r.start > end {
                push(*r);
                continue;
            }
            if r.start < start {
                push(SlotRange {
                    start: r.start,
                    end: start - 1,
                    shard: r.shard,
                });
            }
            if r.start <= start {
                push(SlotRange {
                    start,
                    end,
                    shard: to,
                });
            }
            if r.end > end {
                push(SlotRange {
                    start: end + 1,
                    end: r.end,
                    shard: r.shard,
                });
            }
        }
        let map = SlotMap {
            epoch: self.epoch + 1,
            slots: self.slots,
            shards: self.shards,
            ranges: out,
        };
        map.validate()?;
        Ok(map)
    }

    /// The same ownership with room for `shards` shards (more: the new ones own nothing yet;
    /// fewer: refused while a removed shard still owns a slot). The epoch grows only if the shard
    /// count changes.
    pub fn with_shards(&self, shards: u32) -> Result<SlotMap, SlotMapError> {
        if shards == 0 {
            return Err(SlotMapError::NoShards);
        }
        if let Some(r) = self.ranges.iter().find(|r| r.shard >= shards) {
            return Err(SlotMapError::UnknownShard { shard: r.shard });
        }
        let mut map = self.clone();
        if shards != self.shards {
            map.shards = shards;
            map.epoch += 1;
        }
        Ok(map)
    }

    /// Ranges as `0-1023,2048-3071` for one shard (status tables).
    pub fn describe(&self, shard: ShardId) -> String {
        let parts: Vec<String> = self.ranges_of(shard).map(|r| r.to_string()).collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(",")
        }
    }
}

/// One range to move from a shard to another (one migration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotMove {
    pub start: u32,
    pub end: u32,
    pub from: ShardId,
    pub to: ShardId,
}

impl SlotMove {
    pub fn count(&self) -> u32 {
        self.end - self.start + 1
    }
}

impl fmt::Display for SlotMove {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slots {}-{} from shard {} to shard {}",
            self.start, self.end, self.from, self.to
        )
    }
}

impl SlotMap {
    /// How many slots each of `shards` shards owns when balanced: equal counts, the first shards
    /// one more when it does not divide.
    pub fn balanced_counts(&self, shards: u32) -> Vec<u32> {
        let shards = shards.max(1);
        (0..shards)
            .map(|s| self.slots / shards + u32::from(s < self.slots % shards))
            .collect()
    }

    /// The moves that balance the map over shards `0..shards` (fewer shards than the map has:
    /// the others give everything away). Each move takes contiguous slots from the end of a
    /// shard that owns too many and gives them to one that owns too few; a shard already at its
    /// share moves nothing. Applying every move in order gives a map where each shard owns its
    /// [`balanced_counts`](Self::balanced_counts) share.
    pub fn balance_moves(&self, shards: u32) -> Vec<SlotMove> {
        let want = self.balanced_counts(shards);
        let have = |s: ShardId| self.slot_count(s);
        let mut need: Vec<(ShardId, u32)> = (0..shards)
            .filter(|s| have(*s) < want[*s as usize])
            .map(|s| (s, want[s as usize] - have(s)))
            .collect();
        let mut moves = Vec::new();
        for from in 0..self.shards.max(shards) {
            let keep = want.get(from as usize).copied().unwrap_or(0);
            let mut excess = have(from).saturating_sub(keep);
            // Give away from the end of the shard's last ranges first.
            let ranges: Vec<SlotRange> = self.ranges_of(from).copied().collect();
            for r in ranges.iter().rev() {
                let mut end = r.end;
                let mut left = r.count().min(excess);
                while left > 0 {
                    let Some((to, n)) = need.first_mut() else {
                        return moves;
                    };
                    let take = left.min(*n);
                    moves.push(SlotMove {
                        start: end + 1 - take,
                        end,
                        from,
                        to: *to,
                    });
                    *n -= take;
                    if *n == 0 {
                        need.remove(0);
                    }
                    left -= take;
                    excess -= take;
                    end = end.wrapping_sub(take);
                }
                if excess == 0 {
                    break;
                }
            }
        }
        moves
    }
}

#[cfg(test)]
#[path = "slots_tests.rs"]
mod tests;
