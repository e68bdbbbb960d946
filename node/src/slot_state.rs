//! Slot migration in the state machine (docs/SHARDS.md "Resharding"): which ranges this shard is
//! giving away or taking in, and the log operations that move them. Everything here is replicated:
//! a shard's new primary knows exactly how far a migration got from its own log.
//!
//! A source range is *fenced* (no writes: they answer `slot_migrating`, nothing applied), then
//! *handed off* (not served at all: the owner is another shard), then *dropped*. A target range is
//! *imported* (a consistent copy of the source's range, then the source's entries for it, applied
//! with their original versions and times) and served only from `ImportEnd` on. So at no moment do
//! two shards accept writes for one slot.

use crate::log::{self, Entry, ImportedIdem, ImportedRecord, ImportedTopic, Op};
use crate::record::Rec;
use crate::state::{
    Applied, ApplyError, IdemRecord, Message, NO_SLOT, OpResult, Record, State, Topic, Versions,
};
use imbl::{OrdMap, Vector};
pub use rcluster_proto::migration::{
    ADOPTED_KEPT, Adopted, DROPPED_KEPT, Incoming, Outgoing, SlotState, within,
};
use rcluster_proto::{DEFAULT_SLOTS, slot_of};

fn slot(name: &str) -> u32 {
    slot_of(name, DEFAULT_SLOTS)
}

/// A copy page stops after this many bytes of keys and values (it must fit a replication batch
/// on the target).
const PAGE_BYTES: usize = 2 << 20;

fn changed() -> Result<Applied, ApplyError> {
    Ok(Applied {
        result: OpResult::Noop,
        changed: true,
        events: Vec::new(),
    })
}

fn unchanged() -> Result<Applied, ApplyError> {
    Ok(Applied {
        result: OpResult::Noop,
        changed: false,
        events: Vec::new(),
    })
}

impl State {
    /// Refuses a data operation that touches a slot a migration blocks.
    pub(crate) fn check_slots(&self, op: &Op) -> Result<(), ApplyError> {
        if self.slots.is_idle() {
            return Ok(());
        }
        for name in op.names() {
            if let Some(slot) = self.slots.blocking(slot(name)) {
                return Err(ApplyError::SlotMigrating { slot });
            }
        }
        Ok(())
    }

    /// Applies a slot migration step; `None` for any other operation.
    pub(crate) fn apply_slot_op(&mut self, e: &Entry) -> Option<Result<Applied, ApplyError>> {
        Some(match &e.op {
            Op::SlotsFence { start, end, to } => {
                if self.slots.outgoing(*start, *end).is_some() {
                    return Some(unchanged());
                }
                self.slots.outgoing.push(Outgoing {
                    start: *start,
                    end: *end,
                    to: *to,
                    fence_index: e.index,
                    handed_off: None,
                    dropped: false,
                });
                changed()
            }
            Op::SlotsUnfence { start, end } => {
                let before = self.slots.outgoing.len();
                // Only a range not handed off yet: after the handoff a migration only goes on.
                self.slots.outgoing.retain(|o| {
                    (o.start, o.end) != (*start, *end) || o.handed_off.is_some() || o.dropped
                });
                if self.slots.outgoing.len() == before {
                    unchanged()
                } else {
                    changed()
                }
            }
            Op::SlotsHandoff {
                start,
                end,
                to,
                epoch,
            } => {
                match self
                    .slots
                    .outgoing
                    .iter_mut()
                    .find(|o| !o.dropped && (o.start, o.end) == (*start, *end))
                {
                    Some(o) if o.handed_off.is_some() => return Some(unchanged()),
                    Some(o) => o.handed_off = Some(*epoch),
                    None => self.slots.outgoing.push(Outgoing {
                        start: *start,
                        end: *end,
                        to: *to,
                        fence_index: e.index,
                        handed_off: Some(*epoch),
                        dropped: false,
                    }),
                }
                changed()
            }
            Op::SlotsDrop { start, end } => {
                let Some(o) = self
                    .slots
                    .outgoing
                    .iter_mut()
                    .find(|o| !o.dropped && (o.start, o.end) == (*start, *end))
                else {
                    return Some(unchanged());
                };
                // Only a range handed off: before that, this shard still serves it.
                if o.handed_off.is_none() {
                    return Some(unchanged());
                }
                o.dropped = true;
                self.remove_range(*start, *end);
                let dropped = self.slots.outgoing.iter().filter(|o| o.dropped).count();
                if dropped > DROPPED_KEPT
                    && let Some(oldest) = self.slots.outgoing.iter().position(|o| o.dropped)
                {
                    self.slots.outgoing.remove(oldest);
                }
                changed()
            }
            Op::ImportBegin { start, end, from } => match &self.slots.incoming {
                Some(i) if (i.start, i.end, i.from) == (*start, *end, *from) => unchanged(),
                Some(i) => Err(ApplyError::ImportBusy {
                    start: i.start,
                    end: i.end,
                }),
                None => {
                    self.slots.incoming = Some(Incoming {
                        start: *start,
                        end: *end,
                        from: *from,
                        copy_at: None,
                        copied: false,
                        source_index: 0,
                    });
                    changed()
                }
            },
            Op::ImportCopy {
                at,
                records,
                topics,
                idem,
                last,
            } => self.import_copy(e.index, *at, records, topics, idem, *last),
            Op::ImportEntries { entries, upto } => {
                self.import_entries(e.index, entries, *upto, Versions::Exact)
            }
            Op::ImportTail {
                entries,
                upto,
                offset,
            } => self.import_entries(e.index, entries, *upto, Versions::Offset(*offset)),
            Op::ImportEnd { start, end, epoch } => {
                match &self.slots.incoming {
                    Some(i) if (i.start, i.end) == (*start, *end) && i.copied => {}
                    _ => return Some(unchanged()),
                }
                self.slots.incoming = None;
                // The range is back here: what this shard once gave away of it is obsolete.
                self.slots
                    .outgoing
                    .retain(|o| !(o.dropped && o.start <= *end && *start <= o.end));
                self.slots.adopted.push(Adopted {
                    start: *start,
                    end: *end,
                    epoch: *epoch,
                });
                if self.slots.adopted.len() > ADOPTED_KEPT {
                    self.slots.adopted.remove(0);
                }
                changed()
            }
            Op::ImportAbort { start, end } => {
                match &self.slots.incoming {
                    Some(i) if (i.start, i.end) == (*start, *end) => {}
                    _ => return Some(unchanged()),
                }
                self.slots.incoming = None;
                self.remove_range(*start, *end);
                changed()
            }
            _ => return None,
        })
    }

    fn import_copy(
        &mut self,
        index: u64,
        at: u64,
        records: &[ImportedRecord],
        topics: &[ImportedTopic],
        idem: &[ImportedIdem],
        last: bool,
    ) -> Result<Applied, ApplyError> {
        let Some(inc) = self.slots.incoming.clone() else {
            return unchanged();
        };
        if inc.copied {
            return unchanged();
        }
        if inc.copy_at.is_some_and(|a| a != at) {
            // A new copy (the source's primary changed): the old pages may hold keys the new
            // copy lacks, so they go first.
            self.remove_range(inc.start, inc.end);
        }
        for r in records {
            self.set_record(
                &r.key,
                Record {
                    value: r.value.clone(),
                    version: r.version,
                    expires_at_ms: r.expires_at_ms,
                    created_ms: r.created_ms,
                    modified_ms: r.modified_ms,
                },
            );
            self.version_floor = self.version_floor.max(r.version + 1);
        }
        for t in topics {
            let topic = Topic {
                retention: t.retention,
                first_offset: t.first_offset,
                messages: t
                    .messages
                    .iter()
                    .map(|(value, at)| Message {
                        value: value.clone(),
                        published_at_ms: *at,
                        // Positions in this shard's log: the import entry's.
                        index,
                    })
                    .collect::<Vector<_>>(),
                subscriptions: t.subscriptions.iter().cloned().collect::<OrdMap<_, _>>(),
            };
            self.topics.insert(t.name.clone(), topic);
        }
        for i in idem {
            if let Ok(result) = log::decode::<OpResult>(&i.result) {
                self.remember(
                    &i.key,
                    IdemRecord {
                        fingerprint: i.fingerprint,
                        // The import entry's index: a retry's session token then names this
                        // shard's log, not the source's.
                        index,
                        ts_ms: i.ts_ms,
                        result: Box::new(result),
                        slot: NO_SLOT,
                    },
                );
            }
        }
        self.raise_version_offset(index);
        let inc = self.slots.incoming.as_mut().expect("checked above");
        inc.copy_at = Some(at);
        if last {
            inc.copied = true;
            inc.source_index = at;
        }
        changed()
    }

    fn import_entries(
        &mut self,
        index: u64,
        entries: &[Entry],
        upto: u64,
        versions: Versions,
    ) -> Result<Applied, ApplyError> {
        let Some(inc) = self.slots.incoming.clone() else {
            return unchanged();
        };
        if !inc.copied || upto <= inc.source_index {
            return unchanged();
        }
        for inner in entries.iter().filter(|x| x.index > inc.source_index) {
            // The source applied it; applied here with its version and time it has the same
            // effect. Watchers hear nothing: they heard it from the source.
            if let Ok(applied) = self.apply_data(inner, versions)
                && applied.changed
                && let Some(tag) = &inner.idem
            {
                self.remember(
                    &tag.key,
                    IdemRecord {
                        fingerprint: tag.fingerprint,
                        index,
                        ts_ms: inner.ts_ms,
                        result: Box::new(applied.result),
                        slot: NO_SLOT,
                    },
                );
            }
        }
        self.raise_version_offset(index);
        if let Some(i) = self.slots.incoming.as_mut() {
            i.source_index = upto;
        }
        changed()
    }

    /// After an import entry at `index` raised the version floor: every later entry of this
    /// shard gets a version above everything imported. Raised here, at the import, not at the
    /// next write: the offset must not change while this shard gives a range away later (its
    /// tail travels with the one offset it had).
    fn raise_version_offset(&mut self, index: u64) {
        self.version_offset = self
            .version_offset
            .max(self.version_floor.saturating_sub(index));
    }

    /// Removes every record, topic and idempotency key of slots `start..=end`.
    fn remove_range(&mut self, start: u32, end: u32) {
        let keys: Vec<String> = self
            .records
            .iter()
            .map(Rec::key)
            .filter(|k| within(slot(k), start, end))
            .map(str::to_string)
            .collect();
        for k in keys {
            self.remove_record(&k);
        }
        let topics: Vec<String> = self
            .topics
            .keys()
            .filter(|t| within(slot(t), start, end))
            .cloned()
            .collect();
        for t in topics {
            self.topics.remove(&t);
        }
        let idem: Vec<String> = self
            .idem
            .iter()
            .filter(|i| i.slot() != NO_SLOT && within(u32::from(i.slot()), start, end))
            .map(|i| i.key().to_string())
            .collect();
        // Their elements of the idempotency queue become stale and are skipped there.
        for k in idem {
            self.idem.remove(&k);
        }
    }

    /// One page of a consistent copy of slots `start..=end`, continuing after cursor `after`
    /// (`None`: the first page). A copy walks the range's records, then its idempotency keys,
    /// then its topics, each in key order; a page holds at most `limit` items of one kind and
    /// about [`PAGE_BYTES`], so it always fits a replication batch on the target. The cursor of
    /// the next page comes back (`None` after the last).
    pub fn export_range(
        &self,
        start: u32,
        end: u32,
        after: Option<&str>,
        limit: usize,
    ) -> (
        Vec<ImportedRecord>,
        Vec<ImportedTopic>,
        Vec<ImportedIdem>,
        Option<String>,
    ) {
        use std::ops::Bound;
        let (phase, from) = match after {
            None => ('r', None),
            Some(c) => {
                let mut chars = c.chars();
                let phase = chars.next().unwrap_or('r');
                let rest = chars.as_str();
                (phase, (!rest.is_empty()).then_some(rest))
            }
        };
        let lower = |from: Option<&str>| match from {
            Some(a) => Bound::Excluded(a.to_string()),
            None => Bound::Unbounded,
        };
        let mut bytes = 0;
        let (mut records, mut topics, mut idem) = (Vec::new(), Vec::new(), Vec::new());
        let full = |n: usize, bytes: usize| n >= limit || bytes >= PAGE_BYTES;
        match phase {
            'r' => {
                let first = from.map_or(Bound::Unbounded, Bound::Excluded);
                for r in self.records.from(first) {
                    let r = r.view();
                    let k = r.key;
                    if !within(slot(k), start, end) {
                        continue;
                    }
                    if full(records.len(), bytes) {
                        let next = format!("r{}", last_key(&records));
                        return (records, topics, idem, Some(next));
                    }
                    bytes += k.len() + r.value.len();
                    records.push(ImportedRecord {
                        key: k.to_string(),
                        value: r.value.into(),
                        version: r.version,
                        expires_at_ms: r.expires_at_ms,
                        created_ms: r.created_ms,
                        modified_ms: r.modified_ms,
                    });
                }
                (records, topics, idem, Some("i".to_string()))
            }
            'i' => {
                let first = from.map_or(Bound::Unbounded, Bound::Excluded);
                for i in self.idem.from(first) {
                    // A key of unknown slot goes with every range: applied once either way.
                    if i.slot() != NO_SLOT && !within(u32::from(i.slot()), start, end) {
                        continue;
                    }
                    let (k, Some(r)) = (i.key(), i.record()) else {
                        continue;
                    };
                    if full(idem.len(), bytes) {
                        let last = idem.last().map_or("", |i: &ImportedIdem| i.key.as_str());
                        let next = format!("i{last}");
                        return (records, topics, idem, Some(next));
                    }
                    let result = log::encode(&r.result);
                    bytes += k.len() + result.len() + 32;
                    idem.push(ImportedIdem {
                        key: k.to_string(),
                        fingerprint: r.fingerprint,
                        ts_ms: r.ts_ms,
                        result,
                    });
                }
                (records, topics, idem, Some("t".to_string()))
            }
            _ => {
                for (n, t) in self.topics.range((lower(from), Bound::Unbounded)) {
                    if !within(slot(n), start, end) {
                        continue;
                    }
                    // A topic goes whole (its messages with it): at least one per page.
                    if !topics.is_empty() && full(topics.len(), bytes) {
                        let last = topics
                            .last()
                            .map_or("", |t: &ImportedTopic| t.name.as_str());
                        let next = format!("t{last}");
                        return (records, topics, idem, Some(next));
                    }
                    bytes += t.messages.iter().map(|m| m.value.len() + 16).sum::<usize>();
                    topics.push(ImportedTopic {
                        name: n.clone(),
                        retention: t.retention,
                        first_offset: t.first_offset,
                        messages: t
                            .messages
                            .iter()
                            .map(|m| (m.value.clone(), m.published_at_ms))
                            .collect(),
                        subscriptions: t
                            .subscriptions
                            .iter()
                            .map(|(s, c)| (s.clone(), *c))
                            .collect(),
                    });
                }
                (records, topics, idem, None)
            }
        }
    }
}

fn last_key(records: &[ImportedRecord]) -> &str {
    records.last().map_or("", |r| r.key.as_str())
}

/// The part of `e` that touches slots `start..=end`, if any (for the source's log tail).
pub fn entry_in_range(e: &Entry, start: u32, end: u32) -> Option<Entry> {
    let inside = |n: &str| within(slot(n), start, end);
    match &e.op {
        Op::Expire { keys } => {
            let keys: Vec<(String, u64)> =
                keys.iter().filter(|(k, _)| inside(k)).cloned().collect();
            (!keys.is_empty()).then(|| Entry {
                op: Op::Expire { keys },
                ..e.clone()
            })
        }
        op => op
            .names()
            .first()
            .is_some_and(|n| inside(n))
            .then(|| e.clone()),
    }
}

#[cfg(test)]
#[path = "slot_state_tests.rs"]
mod tests;
