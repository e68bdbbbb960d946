//! The migration state machine (`reshard::next_step`) against the node's real state machine for
//! two shards, with client writes and reads routed the way the nodes route them, interrupted at
//! every point: the coordinator forgets everything it did not record, the cluster map reaches
//! the nodes late, a migration is aborted before the slot map names the target. Invariants: at
//! no moment do two shards accept writes for a slot; a read never returns a value older than an
//! acknowledged write; at the end every acknowledged write is at the one owner, the source keeps
//! nothing of a moved range and the target nothing of an aborted one.

use proptest::prelude::*;
use rcluster_node::log::{Entry, Op};
use rcluster_node::slot_state::entry_in_range;
use rcluster_node::state::{ApplyError, State};
use rcluster_operator::reshard::{Migration, Phase, Step, next_step};
use rcluster_proto::{DEFAULT_SLOTS, ShardId, SlotMap, slot_of};
use std::collections::BTreeMap;

/// One shard's primary: its state, its log and the newest cluster map it heard of.
struct Shard {
    id: ShardId,
    state: State,
    log: Vec<Entry>,
    map: SlotMap,
}

impl Shard {
    fn propose(&mut self, op: Op) -> Result<(), ApplyError> {
        let e = Entry {
            term: 1,
            index: self.log.len() as u64 + 1,
            ts_ms: 1_000,
            idem: None,
            op,
        };
        let applied = self.state.apply_op(&e)?;
        if applied.changed {
            self.state.finish(&e, &applied.result);
            self.log.push(e);
        }
        Ok(())
    }

    /// Who serves `key` by this shard's map and log (as `api/placement.rs` decides).
    fn owner(&self, key: &str) -> Result<ShardId, ()> {
        let slot = slot_of(key, DEFAULT_SLOTS);
        let slots = &self.state.slots;
        if let Some(newer) = slots.owner_after(slot, self.map.epoch, self.id) {
            return Ok(newer);
        }
        let by_map = self.map.owner_of(key);
        if by_map == self.id && !slots.readable(slot) {
            return Err(());
        }
        Ok(by_map)
    }
}

#[derive(Debug, Clone)]
enum Event {
    /// A write of key N with a value, reaching shard M's primary first.
    Write(u8, u16, u8),
    Read(u8, u8),
    Advance,
    /// The coordinator restarts: what it did not record is gone.
    Crash,
    /// The coordinator's map reaches shard N.
    Push(u8),
    Abort,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0u8..24, any::<u16>(), 0u8..2).prop_map(|(k, v, at)| Event::Write(k, v, at)),
        2 => (0u8..24, 0u8..2).prop_map(|(k, at)| Event::Read(k, at)),
        6 => Just(Event::Advance),
        1 => Just(Event::Crash),
        2 => (0u8..2).prop_map(Event::Push),
        1 => Just(Event::Abort),
    ]
}

/// What the coordinator keeps in memory only.
#[derive(Default)]
struct Memory {
    /// A copy under way: the source's state at its index, and the key to continue after.
    copy: Option<(u64, State, Option<String>)>,
    caught_up: bool,
}

struct World {
    shards: [Shard; 2],
    /// The coordinator's map (saved with the record).
    map: SlotMap,
    migration: Option<Migration>,
    memory: Memory,
    /// Every acknowledged write's value.
    acked: BTreeMap<String, String>,
}

fn key(k: u8) -> String {
    format!("k{k}")
}

impl World {
    fn new() -> World {
        let map = SlotMap::even(DEFAULT_SLOTS, 2).unwrap();
        let shard = |id| Shard {
            id,
            state: State::default(),
            log: Vec::new(),
            map: map.clone(),
        };
        // Half of shard 0's slots go to shard 1.
        let half = DEFAULT_SLOTS / 4;
        World {
            shards: [shard(0), shard(1)],
            map,
            migration: Some(Migration::new(half, 2 * half - 1, 0, 1)),
            memory: Memory::default(),
            acked: BTreeMap::new(),
        }
    }

    /// Routes like a node: the node a client reached serves the key or forwards it once to the
    /// shard its map and log name; that shard serves it only if it agrees.
    fn serving(&self, key: &str, entry: u8) -> Option<usize> {
        let at = self.shards[usize::from(entry % 2)].owner(key).ok()? as usize;
        self.shards[at].owner_of_self(key).then_some(at)
    }

    fn write(&mut self, k: &str, v: String, entry: u8) {
        let Some(at) = self.serving(k, entry) else {
            return;
        };
        let op = Op::Put {
            key: k.into(),
            value: format!("\"{v}\"").into(),
            ttl_ms: None,
            if_version: None,
        };
        match self.shards[at].propose(op) {
            Ok(()) => {
                self.acked.insert(k.into(), v);
            }
            Err(ApplyError::SlotMigrating { .. }) => {}
            Err(e) => panic!("unexpected refusal {e:?}"),
        }
    }

    fn read(&self, k: &str, entry: u8) -> Option<String> {
        let at = self.serving(k, entry)?;
        Some(
            self.shards[at]
                .state
                .get(k, 0)
                .map(|r| r.value().trim_matches('"').to_string())
                .unwrap_or_default(),
        )
    }

    /// Performs one step of the migration; false once it is finished.
    fn advance(&mut self) -> bool {
        let Some(m) = self.migration.clone() else {
            return false;
        };
        let (from, to) = (m.from as usize, m.to as usize);
        let step = next_step(
            &m,
            &self.shards[from].state.slots,
            &self.shards[to].state.slots,
            self.memory.caught_up,
        );
        match step {
            Step::Begin => self.shards[to]
                .propose(Op::ImportBegin {
                    start: m.start,
                    end: m.end,
                    from: m.from,
                })
                .unwrap(),
            Step::Copy => {
                let (at, clone, after) = self.memory.copy.take().unwrap_or_else(|| {
                    let src = &self.shards[from];
                    (src.log.len() as u64, src.state.clone(), None)
                });
                let (records, topics, idem, next) =
                    clone.export_range(m.start, m.end, after.as_deref(), 3);
                let last = next.is_none();
                self.shards[to]
                    .propose(Op::ImportCopy {
                        at,
                        records,
                        topics,
                        idem,
                        last,
                    })
                    .unwrap();
                if !last {
                    self.memory.copy = Some((at, clone, next));
                }
            }
            Step::CatchUp { from: after } | Step::Drain { from: after, .. } => {
                let src = &self.shards[from];
                let upto = (after + 4).min(src.log.len() as u64);
                let entries = src.log[after as usize..upto as usize]
                    .iter()
                    .filter_map(|e| entry_in_range(e, m.start, m.end))
                    .collect();
                self.memory.caught_up = upto == src.log.len() as u64;
                self.shards[to]
                    .propose(Op::ImportEntries { entries, upto })
                    .unwrap();
            }
            Step::Fence => self.shards[from]
                .propose(Op::SlotsFence {
                    start: m.start,
                    end: m.end,
                    to: m.to,
                })
                .unwrap(),
            Step::Record(phase) => {
                let phase = match phase {
                    Phase::Owned { .. } => {
                        self.map = self.map.with_owner(m.start, m.end, m.to).unwrap();
                        Phase::Owned {
                            epoch: self.map.epoch,
                        }
                    }
                    p => p,
                };
                self.migration = Some(Migration { phase, ..m });
            }
            Step::Handoff { epoch } => self.shards[from]
                .propose(Op::SlotsHandoff {
                    start: m.start,
                    end: m.end,
                    to: m.to,
                    epoch,
                })
                .unwrap(),
            Step::End { epoch } => self.shards[to]
                .propose(Op::ImportEnd {
                    start: m.start,
                    end: m.end,
                    epoch,
                })
                .unwrap(),
            Step::Drop => self.shards[from]
                .propose(Op::SlotsDrop {
                    start: m.start,
                    end: m.end,
                })
                .unwrap(),
            Step::Abort => self.shards[to]
                .propose(Op::ImportAbort {
                    start: m.start,
                    end: m.end,
                })
                .unwrap(),
            Step::Unfence => self.shards[from]
                .propose(Op::SlotsUnfence {
                    start: m.start,
                    end: m.end,
                })
                .unwrap(),
            Step::Finished => {
                self.migration = None;
                return false;
            }
        }
        true
    }

    fn check(&self) {
        for (k, v) in &self.acked {
            for entry in 0..2 {
                if let Some(read) = self.read(k, entry) {
                    assert_eq!(&read, v, "read of {k} older than an acknowledged write");
                }
            }
        }
        for k in (0..24).map(key) {
            let accepting = self
                .shards
                .iter()
                .filter(|s| s.owner_of_self(&k) && s.state.slots.writable(&k))
                .count();
            assert!(accepting <= 1, "two shards accept writes to {k}");
        }
    }
}

impl Shard {
    /// Whether this shard, by its own map and log, serves `key` itself.
    fn owner_of_self(&self, key: &str) -> bool {
        self.owner(key) == Ok(self.id)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_migration_interrupted_anywhere_ends_with_one_owner_and_nothing_lost(
        events in proptest::collection::vec(event(), 1..160)
    ) {
        let mut w = World::new();
        for (i, k) in (0..24).map(key).enumerate() {
            w.write(&k, format!("initial{i}"), 0);
        }
        for e in events {
            match e {
                Event::Write(k, v, at) => w.write(&key(k), v.to_string(), at),
                // Reads are checked after every event; this one only adds an interleaving.
                Event::Read(k, at) => {
                    let _ = w.read(&key(k), at);
                }
                Event::Advance => {
                    w.advance();
                }
                Event::Crash => w.memory = Memory::default(),
                Event::Push(s) => w.shards[s as usize].map = w.map.clone(),
                Event::Abort => {
                    if let Some(m) = &mut w.migration
                        && !m.owned()
                    {
                        m.phase = Phase::Aborting;
                    }
                }
            }
            w.check();
        }
        // Left alone, the migration finishes (bounded), and the map reaches every node.
        let mut steps = 0;
        while w.advance() {
            steps += 1;
            prop_assert!(steps < 10_000, "the migration does not finish");
        }
        for s in &mut w.shards {
            s.map = w.map.clone();
        }
        w.check();
        for (k, v) in &w.acked {
            for at in 0..2 {
                let read = w.read(k, at);
                prop_assert_eq!(read.as_ref(), Some(v), "{} unreadable at the end", k);
            }
        }
        let owner = |k: &str| w.map.owner_of(k) as usize;
        for k in (0..24).map(key) {
            let elsewhere = w.shards[1 - owner(&k)].state.get(&k, 0).is_some();
            prop_assert!(!elsewhere, "{} is also kept by the shard that does not own it", k);
        }
    }
}
