//! Slot migration, as the nodes record it and the coordinator reads it (docs/SHARDS.md
//! "Resharding"): a shard's ranges going out and coming in, and the coordinator's record of the
//! one migration under way.

use crate::slots::{DEFAULT_SLOTS, ShardId, slot_of};
use serde::{Deserialize, Serialize};

fn slot(name: &str) -> u32 {
    slot_of(name, DEFAULT_SLOTS)
}

/// A range this shard is giving away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    pub start: u32,
    pub end: u32,
    pub to: u32,
    /// The log index of the fence entry: the target has everything once it applied up to here.
    pub fence_index: u64,
    /// The slot map epoch that made `to` the owner, once handed off.
    pub handed_off: Option<u64>,
    /// The data is gone. The record stays, so that a node whose map is older than the handoff
    /// still sends the range to its new owner instead of serving it empty.
    #[serde(default)]
    pub dropped: bool,
}

/// The range this shard is taking in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    pub start: u32,
    pub end: u32,
    pub from: u32,
    /// The source index of the copy being applied (pages of one copy all carry it).
    pub copy_at: Option<u64>,
    /// The copy is complete.
    pub copied: bool,
    /// The highest source index whose effects on the range this shard holds.
    pub source_index: u64,
}

/// A range this shard took over, and the slot map epoch that made it the owner. Kept so a node
/// serves the range even before it hears of that map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopted {
    pub start: u32,
    pub end: u32,
    pub epoch: u64,
}

/// The most adopted ranges remembered (older ones are in every map nodes hold by then).
pub const ADOPTED_KEPT: usize = 16;
/// The most dropped ranges remembered (far more than one resharding moves).
pub const DROPPED_KEPT: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotState {
    pub outgoing: Vec<Outgoing>,
    pub incoming: Option<Incoming>,
    pub adopted: Vec<Adopted>,
}

pub fn within(slot: u32, start: u32, end: u32) -> bool {
    (start..=end).contains(&slot)
}

impl SlotState {
    /// No migration under way here (dropped ranges are history).
    pub fn is_idle(&self) -> bool {
        self.incoming.is_none() && self.outgoing.iter().all(|o| o.dropped)
    }

    /// Nothing at all to consult: routing needs neither history nor a migration.
    pub fn is_empty(&self) -> bool {
        self.incoming.is_none() && self.outgoing.is_empty() && self.adopted.is_empty()
    }

    /// The range `start..=end` going out, unless it is history already.
    pub fn outgoing(&self, start: u32, end: u32) -> Option<&Outgoing> {
        self.outgoing
            .iter()
            .find(|o| !o.dropped && (o.start, o.end) == (start, end))
    }

    /// Whether a write to `name` may be applied here now.
    pub fn writable(&self, name: &str) -> bool {
        self.is_idle() || self.blocking(slot(name)).is_none()
    }

    /// The slot `name` is in, when a migration blocks writes to it.
    pub fn blocking(&self, slot: u32) -> Option<u32> {
        let out = self.outgoing.iter().any(|o| within(slot, o.start, o.end));
        let inc = self
            .incoming
            .as_ref()
            .is_some_and(|i| within(slot, i.start, i.end));
        (out || inc).then_some(slot)
    }

    /// Whether reads of `slot` may be served here: not once handed off, not while importing.
    pub fn readable(&self, slot: u32) -> bool {
        let handed = self
            .outgoing
            .iter()
            .any(|o| o.handed_off.is_some() && within(slot, o.start, o.end));
        let inc = self
            .incoming
            .as_ref()
            .is_some_and(|i| within(slot, i.start, i.end));
        !(handed || inc)
    }

    /// The shard that owns `slot` by this shard's own log, newer than a map of epoch `epoch`:
    /// `Some(to)` for a range handed off at a later epoch, `Some(me)` (via `adopted`) for a range
    /// taken over at a later epoch.
    pub fn owner_after(&self, slot: u32, epoch: u64, me: u32) -> Option<u32> {
        if let Some(o) = self
            .outgoing
            .iter()
            .find(|o| within(slot, o.start, o.end) && o.handed_off.is_some_and(|e| e > epoch))
        {
            return Some(o.to);
        }
        self.adopted
            .iter()
            .any(|a| a.epoch > epoch && within(slot, a.start, a.end))
            .then_some(me)
    }
}

/// The coordinator's record of the one migration under way (at most one at a time). It is saved
/// before each phase acts, and together with the shards' own records (their [`SlotState`], in
/// their logs) it says exactly how to go on after any interruption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub start: u32,
    pub end: u32,
    pub from: ShardId,
    pub to: ShardId,
    pub phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The target imports a copy of the range and then the source's log for it; the source
    /// serves the range as before.
    Copying,
    /// The source refuses writes to the range; the target takes the rest of the source's log.
    Fencing,
    /// The slot map of `epoch` names the target the owner. Recorded before any node hears of it;
    /// from here the migration only goes forward.
    Owned { epoch: u64 },
    /// The target serves the range; the source drops its copy.
    Dropping { epoch: u64 },
    /// Undoing a migration that never reached `Owned`: the target forgets the range, the source
    /// takes writes again.
    Aborting,
}

impl Migration {
    pub fn new(start: u32, end: u32, from: ShardId, to: ShardId) -> Migration {
        Migration {
            start,
            end,
            from,
            to,
            phase: Phase::Copying,
        }
    }

    pub fn slots(&self) -> u32 {
        self.end - self.start + 1
    }

    /// Whether the slot map already names the target (the move can no longer be undone).
    pub fn owned(&self) -> bool {
        matches!(self.phase, Phase::Owned { .. } | Phase::Dropping { .. })
    }
}

impl std::fmt::Display for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            Phase::Copying => "copying",
            Phase::Fencing => "fencing",
            Phase::Owned { .. } => "owned",
            Phase::Dropping { .. } => "dropping",
            Phase::Aborting => "aborting",
        };
        write!(
            f,
            "slots {}-{} shard {} -> {} ({phase})",
            self.start, self.end, self.from, self.to
        )
    }
}
