//! A resharding's own record, pure and the same for the playground and the controller: the shard
//! count asked for, the one range moving now, and how each migration task's outcome changes the
//! record and the slot map. The caller saves both (state file, resource status) before anything
//! acts on them, and runs the tasks (`mover`).

use rcluster_proto::migration::{Migration, Phase};
use rcluster_proto::{SlotMap, SlotMapError};
use serde::{Deserialize, Serialize};

use super::step::Step;

/// A resharding under way: saved before each of its steps acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resharding {
    /// The shard count asked for.
    pub shards: u32,
    /// The shard count it began from (0: not recorded, by a playground from before).
    #[serde(default)]
    pub from: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Migration>,
    /// Slots moved so far in this resharding.
    #[serde(default)]
    pub moved_slots: u32,
}

/// What the caller does after [`Resharding::advance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Save the record (and the map) and say `.0`; nothing acts before it is saved.
    Save(String),
    /// Nothing changed: a node step, or a task that stopped before its phase ended.
    Unchanged,
}

/// What comes after the last move ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// This range moves next (recorded in the record: save it).
    Move(Migration),
    /// Every slot is where it belongs: the map without the shards that went (save it, clear the
    /// record, then stop the removed shards' nodes).
    Done(SlotMap),
}

impl Resharding {
    pub fn new(from: u32, shards: u32) -> Resharding {
        Resharding {
            shards,
            from,
            migration: None,
            moved_slots: 0,
        }
    }

    /// The map with room for the shards asked for (new shards own nothing until slots move to
    /// them); a map as large or larger is kept until the end, when the removed shards own nothing.
    pub fn grown(&self, map: &SlotMap) -> Result<SlotMap, SlotMapError> {
        if self.shards > map.shards {
            map.with_shards(self.shards)
        } else {
            Ok(map.clone())
        }
    }

    /// Takes in what a migration task came back with. A phase to record: with `Owned`, `map`
    /// becomes the map naming the target at its next epoch, the epoch the phase carries. The end
    /// of a move: the record forgets it.
    pub fn advance(&mut self, map: &mut SlotMap, step: &Step) -> Result<Advance, SlotMapError> {
        let Some(m) = self.migration.clone() else {
            return Ok(Advance::Unchanged);
        };
        match step {
            Step::Record(phase) => {
                let phase = match phase {
                    Phase::Owned { .. } => {
                        *map = map.with_owner(m.start, m.end, m.to)?;
                        Phase::Owned { epoch: map.epoch }
                    }
                    p => *p,
                };
                let m = Migration { phase, ..m };
                let said = format!("resharding: {m}");
                self.migration = Some(m);
                Ok(Advance::Save(said))
            }
            Step::Finished => {
                self.migration = None;
                if m.phase != Phase::Aborting {
                    self.moved_slots += m.slots();
                }
                Ok(Advance::Save(format!("resharding: moved {m}")))
            }
            _ => Ok(Advance::Unchanged),
        }
    }

    /// With no move under way: the next one (now in the record), or the end.
    pub fn next(&mut self, map: &SlotMap) -> Result<Next, SlotMapError> {
        if let Some(mv) = map.balance_moves(self.shards).first() {
            let m = Migration::new(mv.start, mv.end, mv.from, mv.to);
            self.migration = Some(m.clone());
            return Ok(Next::Move(m));
        }
        Ok(Next::Done(if map.shards > self.shards {
            map.with_shards(self.shards)?
        } else {
            map.clone()
        }))
    }

    /// Slots still to move, the one moving now included.
    pub fn remaining(&self, map: &SlotMap) -> u32 {
        map.balance_moves(self.shards)
            .iter()
            .map(|m| m.count())
            .sum()
    }

    /// A few words for a table column: `2 -> 3: 512/1365 slots`.
    pub fn progress(&self, map: &SlotMap) -> String {
        let (moved, left) = (self.moved_slots, self.remaining(map));
        let from = if self.from > 0 { self.from } else { map.shards };
        format!("{from} -> {}: {moved}/{} slots", self.shards, moved + left)
    }

    /// One line: what moves now and how far it is.
    pub fn describe(&self, map: &SlotMap) -> String {
        let from = if self.from > 0 { self.from } else { map.shards };
        let (moved, left) = (self.moved_slots, self.remaining(map));
        let now = match &self.migration {
            Some(m) => format!("; {m}"),
            None => String::new(),
        };
        format!(
            "{from} -> {} shards: {moved} slots moved, {left} to go{now}",
            self.shards
        )
    }
}

/// Whether `map` needs a resharding to run `shards` shards: another shard count, or slots not
/// spread evenly over them.
pub fn needed(map: &SlotMap, shards: u32) -> bool {
    map.shards != shards || !map.balance_moves(shards).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcluster_proto::DEFAULT_SLOTS;

    /// Drives a resharding with every task succeeding at once: each move goes Copying →
    /// Fencing → Owned → Dropping → gone, as the state machine orders it.
    fn run(map: &mut SlotMap, r: &mut Resharding) -> usize {
        let mut moves = 0;
        for _ in 0..100 {
            match r.migration.clone() {
                None => match r.next(map).unwrap() {
                    Next::Move(_) => moves += 1,
                    Next::Done(m) => {
                        *map = m;
                        return moves;
                    }
                },
                Some(m) => {
                    let step = match m.phase {
                        Phase::Copying => Step::Record(Phase::Fencing),
                        Phase::Fencing => Step::Record(Phase::Owned { epoch: 0 }),
                        Phase::Owned { epoch } => Step::Record(Phase::Dropping { epoch }),
                        Phase::Dropping { .. } | Phase::Aborting => Step::Finished,
                    };
                    assert!(matches!(r.advance(map, &step).unwrap(), Advance::Save(_)));
                }
            }
        }
        panic!("the resharding did not end");
    }

    #[test]
    fn growing_and_shrinking_end_even_with_every_slot_owned_once() {
        let mut map = SlotMap::even(DEFAULT_SLOTS, 2).unwrap();
        for shards in [4u32, 3, 1] {
            let mut r = Resharding::new(map.shards, shards);
            assert!(needed(&map, shards));
            map = r.grown(&map).unwrap();
            assert_eq!(map.shards, shards.max(map.shards));
            let epoch = map.epoch;
            let planned = r.remaining(&map);
            let want_moves = map.balance_moves(shards).len();
            assert!(planned > 0);
            let moves = run(&mut map, &mut r);
            assert!(moves >= want_moves.min(1), "to {shards}");
            map.validate().unwrap();
            assert_eq!(map.shards, shards);
            let counts: Vec<u32> = (0..shards).map(|s| map.slot_count(s)).collect();
            assert_eq!(counts, map.balanced_counts(shards), "to {shards}");
            assert_eq!(r.moved_slots, planned, "to {shards}");
            assert_eq!(r.remaining(&map), 0);
            assert!(map.epoch > epoch, "every owner change bumps the epoch");
            assert!(!needed(&map, shards));
        }
    }

    #[test]
    fn an_aborted_move_counts_nothing_and_owned_takes_the_next_epoch() {
        let mut map = SlotMap::even(DEFAULT_SLOTS, 2).unwrap();
        let mut r = Resharding::new(2, 3);
        map = r.grown(&map).unwrap();
        let Next::Move(m) = r.next(&map).unwrap() else {
            panic!("a move");
        };
        r.migration.as_mut().unwrap().phase = Phase::Aborting;
        r.advance(&mut map, &Step::Finished).unwrap();
        assert_eq!((r.moved_slots, r.migration.clone()), (0, None));
        let Next::Move(again) = r.next(&map).unwrap() else {
            panic!("the same move again");
        };
        assert_eq!((again.start, again.end), (m.start, m.end));
        let before = map.epoch;
        r.advance(&mut map, &Step::Record(Phase::Owned { epoch: 0 }))
            .unwrap();
        assert_eq!(
            r.migration.as_ref().unwrap().phase,
            Phase::Owned { epoch: before + 1 }
        );
        assert_eq!(map.owner(m.start), Some(m.to));
        // A node step changes nothing in the record.
        let same = r.clone();
        assert_eq!(
            r.advance(&mut map, &Step::Drop).unwrap(),
            Advance::Unchanged
        );
        assert_eq!(r, same);
        assert!(r.describe(&map).contains("to go"));
        assert_eq!(
            r.progress(&map),
            format!("2 -> 3: 0/{} slots", r.remaining(&map))
        );
    }
}
