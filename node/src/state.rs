//! The replicated state machine: records, topics, subscriptions and idempotency keys.
//!
//! `apply_op` either fails or reports "unchanged" without touching anything, or changes the state.
//! The primary logs only entries that changed something; every node applies the logged entries in
//! order with `apply_logged`, and the same log gives the same state (time comes from the entry).
//! Collections are persistent (imbl) so a snapshot is an O(1) clone taken without stalling writers.

pub use crate::idem::{
    IDEM_FORGET_BATCH, IDEM_MAX_KEYS, IDEM_TTL_MS, Idem, IdemMap, IdemRecord, NO_SLOT,
};
use crate::log::{Entry, Fnv, Op};
pub use crate::op_result::{OpResult, Pulled};
pub use crate::record::Record;
use crate::record::{Rec, Records};
pub use crate::topic::{Message, Topic};
pub use rcluster_proto::migration::SlotState;

/// How a write's version is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Versions {
    /// The log index, or more when an import raised the floor: versions of a key only grow.
    #[default]
    Next,
    /// The entry's own index: what a source that never imported stamped (`ImportEntries`).
    Exact,
    /// The entry's index plus the source's version offset: an imported source entry keeps the
    /// version the source gave it (`ImportTail`).
    Offset(u64),
}
use imbl::{OrdMap, Vector};
use rcluster_proto::{DEFAULT_SLOTS, slot_of};
use std::ops::Bound;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("version mismatch: the current version is {current}")]
    VersionMismatch { current: u64 },
    #[error("no such key")]
    NotFound,
    #[error("the current value is not an integer")]
    NotANumber,
    #[error("the result would leave the allowed range")]
    OutOfBounds,
    #[error("no such topic")]
    TopicNotFound,
    #[error("no such subscription")]
    SubscriptionNotFound,
    #[error("offset {start} is past the topic's end; the next offset is {next}")]
    OffsetOutOfRange { start: u64, next: u64 },
    #[error("slot {slot} is moving to another shard; nothing was applied, retry shortly")]
    SlotMigrating { slot: u32 },
    #[error("slots {start}-{end} are being imported already; one migration at a time")]
    ImportBusy { start: u32, end: u32 },
    /// An operation of a transaction failed; nothing of the transaction was applied.
    #[error("transaction operation {op} ({what}): {source}; nothing was applied")]
    InTxn {
        op: u32,
        what: String,
        source: Box<ApplyError>,
    },
}

/// A change to a record, pushed to watchers once committed.
///
/// A put's event holds the record it wrote: the very block the map holds while it is current,
/// so the node's buffer of recent changes (65,536 of them) costs a pointer each rather than a
/// copy of each key and value (about 230 bytes an event before).
#[derive(Debug, Clone, PartialEq)]
pub struct KvEvent {
    /// The log index of the entry (several events may share one: a transaction, an expiry).
    pub index: u64,
    pub kind: KvEventKind,
    change: Change,
}

#[derive(Debug, Clone, PartialEq)]
enum Change {
    Put(Rec),
    /// A delete or an expiry: the key, and the entry's version and time.
    Removed {
        key: Box<str>,
        version: u64,
        modified_ms: u64,
    },
}

impl KvEvent {
    pub fn key(&self) -> &str {
        match &self.change {
            Change::Put(r) => r.key(),
            Change::Removed { key, .. } => key,
        }
    }

    /// The value written, for a put.
    pub fn value(&self) -> Option<&str> {
        match &self.change {
            Change::Put(r) => Some(r.value()),
            Change::Removed { .. } => None,
        }
    }

    /// The record's version after a put; the entry's index for a delete or an expiry.
    pub fn version(&self) -> u64 {
        match &self.change {
            Change::Put(r) => r.version(),
            Change::Removed { version, .. } => *version,
        }
    }

    /// The entry's time.
    pub fn modified_ms(&self) -> u64 {
        match &self.change {
            Change::Put(r) => r.modified_ms(),
            Change::Removed { modified_ms, .. } => *modified_ms,
        }
    }

    /// After a put: when the key was created.
    pub fn created_ms(&self) -> Option<u64> {
        match &self.change {
            Change::Put(r) => Some(r.created_ms()),
            Change::Removed { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvEventKind {
    Put,
    Delete,
    Expire,
}

impl KvEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KvEventKind::Put => "put",
            KvEventKind::Delete => "delete",
            KvEventKind::Expire => "expire",
        }
    }
}

pub struct Applied {
    pub result: OpResult,
    /// False when the operation left the state as it was; the primary does not log such entries.
    pub changed: bool,
    pub events: Vec<KvEvent>,
}

#[derive(Debug, Clone, Default)]
pub struct State {
    pub records: Records,
    pub topics: OrdMap<String, Topic>,
    pub idem: IdemMap,
    /// Derived indexes, rebuilt from the maps above when a snapshot is loaded.
    pub(crate) expiring: OrdMap<(u64, String), u64>,
    /// Idempotency keys in the order of the entries that stored them, oldest first (imported
    /// keys share their import entry's index). A queue, not a map: 8 bytes a key in full chunks.
    /// An element whose key was stored again later, or dropped with its slot, is stale (the map
    /// holds another record for the key, or none) and is skipped when it reaches the front.
    pub(crate) idem_order: Vector<Idem>,
    pub applied_index: u64,
    pub applied_term: u64,
    /// Slot migrations this shard takes part in (replicated, like everything here).
    pub slots: SlotState,
    /// The least version the next write gets. Normally the next log index; an import raises it
    /// above every imported version, so a key's versions keep increasing across a move.
    pub version_floor: u64,
    /// Versions are `index + version_offset`: 0 until an import raises the floor above the log's
    /// indexes, then raised at that import entry so every later version is above every imported
    /// one. Changed only by imports, so a shard's tail shipped to another shard carries one
    /// offset that gives each entry the version this shard gave it.
    pub version_offset: u64,
    /// How the entry being applied stamps versions (not state: set around each application).
    applying: Versions,
    /// The local entry last stamped and its version.
    stamped: (u64, u64),
}

fn unchanged(result: OpResult) -> Result<Applied, ApplyError> {
    Ok(Applied {
        result,
        changed: false,
        events: Vec::new(),
    })
}

impl State {
    /// The record as seen at `now_ms`: expired records are never returned, purged or not.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<&Rec> {
        self.records.get(key).filter(|r| r.live_at(now_ms))
    }

    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> (Vec<Rec>, bool) {
        let lower = match start_after {
            Some(s) if s >= prefix => Bound::Excluded(s),
            _ => Bound::Included(prefix),
        };
        let mut items = Vec::new();
        let mut more = false;
        for r in self.records.from(lower) {
            let k = r.key();
            if !k.starts_with(prefix) {
                break;
            }
            if !r.live_at(now_ms) || !self.serves(k) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(r.clone());
        }
        (items, more)
    }

    /// Whether this shard serves `name` by its own record of migrations: not a range it handed
    /// off (its copy waits to be dropped) nor one it is still importing. Listings skip the rest,
    /// so a key is never listed by two shards.
    pub fn serves(&self, name: &str) -> bool {
        self.slots.is_empty()
            || self
                .slots
                .readable(rcluster_proto::slot_of(name, rcluster_proto::DEFAULT_SLOTS))
    }

    /// Records whose expiry time has passed, oldest first, for the primary's purge entries.
    /// Records of a slot that is moving are left alone: the shard that owns them afterwards
    /// purges them.
    pub fn expired_keys(&self, now_ms: u64, max: usize) -> Vec<(String, u64)> {
        self.expiring
            .iter()
            .take_while(|((at, _), _)| *at <= now_ms)
            .filter(|((_, k), _)| self.slots.writable(k))
            .take(max)
            .map(|((_, k), v)| (k.clone(), *v))
            .collect()
    }

    /// Topics with age retention whose oldest message is due to be dropped.
    pub fn topics_to_trim(&self, now_ms: u64) -> Vec<String> {
        self.topics
            .iter()
            .filter(|(n, t)| {
                self.slots.writable(n)
                    && t.retention.max_age_ms.is_some_and(|age| {
                        t.messages
                            .front()
                            .is_some_and(|m| m.published_at_ms.saturating_add(age) <= now_ms)
                    })
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Applies an entry that is already in the log (replay, replication). Entries only reach the
    /// log when they changed the primary's state, so a failure here means the logs differ; it is
    /// reported, and the entry still counts as applied so indexes stay aligned.
    pub fn apply_logged(&mut self, e: &Entry) -> Result<Applied, ApplyError> {
        let out = self.apply_op(e);
        if let Ok(applied) = &out {
            self.finish(e, &applied.result);
        } else {
            self.applied_index = e.index;
            self.applied_term = e.term;
        }
        out
    }

    /// Validates and applies `e.op`. On error or `changed == false` nothing was modified; then the
    /// caller must not log the entry. After a changing apply the caller must call [`State::finish`].
    pub fn apply_op(&mut self, e: &Entry) -> Result<Applied, ApplyError> {
        if let Some(applied) = self.apply_slot_op(e) {
            return applied;
        }
        self.check_slots(&e.op)?;
        self.apply_data(e, Versions::Next)
    }

    /// The next version of a write at log index `index` (see [`State::version_floor`]).
    /// Every write of one entry (a transaction) gets the same version.
    fn stamp(&mut self, index: u64, versions: Versions) -> u64 {
        let v = match versions {
            // Local entries come in index order: a repeat is the same entry.
            Versions::Next if self.stamped.0 == index && index > 0 => return self.stamped.1,
            Versions::Next => {
                let v = index + self.version_offset;
                if v < self.version_floor {
                    // Only a state from before offsets (a floor raised without one) gets here.
                    self.version_offset = self.version_floor - index;
                    self.version_floor
                } else {
                    v
                }
            }
            Versions::Exact => index,
            Versions::Offset(offset) => index + offset,
        };
        self.version_floor = self.version_floor.max(v + 1);
        if versions == Versions::Next {
            self.stamped = (index, v);
        }
        v
    }

    /// Applies a data operation (not a slot migration step).
    pub(crate) fn apply_data(
        &mut self,
        e: &Entry,
        versions: Versions,
    ) -> Result<Applied, ApplyError> {
        let before = std::mem::replace(&mut self.applying, versions);
        let r = self.apply_data_as(e);
        self.applying = before;
        r
    }

    fn apply_data_as(&mut self, e: &Entry) -> Result<Applied, ApplyError> {
        let now = e.ts_ms;
        let mut events = Vec::new();
        let result = match &e.op {
            Op::Noop => OpResult::Noop,
            Op::Put {
                key,
                value,
                ttl_ms,
                if_version,
            } => {
                // A conditional put looks the key up before it writes; an unconditional one walks
                // the map once, reading the creation time to keep where it writes.
                if let Some(expected) = if_version {
                    let current = self.version_at(key, now);
                    if *expected != current {
                        return Err(ApplyError::VersionMismatch { current });
                    }
                }
                let expires_at_ms = ttl_ms.map(|t| now.saturating_add(t));
                let ev = self.write_record(e, key, value, expires_at_ms, |old| {
                    old.filter(|r| r.live_at(now)).map(Rec::created_ms)
                });
                let version = ev.version();
                events.push(ev);
                OpResult::Put {
                    version,
                    expires_at_ms,
                }
            }
            Op::Delete { key, if_version } => {
                let current = self.version_at(key, now);
                if current == 0 {
                    return Err(ApplyError::NotFound);
                }
                if let Some(expected) = if_version
                    && *expected != current
                {
                    return Err(ApplyError::VersionMismatch { current });
                }
                let ev = self.erase_record(e, key, KvEventKind::Delete);
                let version = ev.version();
                events.push(ev);
                OpResult::Delete { version }
            }
            Op::Incr {
                key,
                delta,
                min,
                max,
            } => {
                let (value, ev) = self.incr(e, key, *delta, *min, *max)?;
                let version = ev.version();
                events.push(ev);
                OpResult::Incr { value, version }
            }
            Op::Expire { keys } => {
                let mut count = 0;
                for (key, version) in keys {
                    let due = self.records.get(key.as_str()).is_some_and(|r| {
                        r.version() == *version && r.expires_at_ms().is_some_and(|t| t <= now)
                    });
                    if due {
                        events.push(self.erase_record(e, key, KvEventKind::Expire));
                        count += 1;
                    }
                }
                if count == 0 {
                    return unchanged(OpResult::Expired { count });
                }
                OpResult::Expired { count }
            }
            Op::CreateTopic { .. }
            | Op::DeleteTopic { .. }
            | Op::Publish { .. }
            | Op::Trim { .. }
            | Op::Subscribe { .. }
            | Op::Unsubscribe { .. }
            | Op::Pull { .. } => return self.apply_topic_op(e),
            // Migration steps are applied by `apply_slot_op`, never as data.
            Op::SlotsFence { .. }
            | Op::SlotsUnfence { .. }
            | Op::SlotsHandoff { .. }
            | Op::SlotsDrop { .. }
            | Op::ImportBegin { .. }
            | Op::ImportCopy { .. }
            | Op::ImportEntries { .. }
            | Op::ImportTail { .. }
            | Op::ImportEnd { .. }
            | Op::ImportAbort { .. } => return unchanged(OpResult::Noop),
            Op::ForgetIdem { below_index } => {
                let count = self.forget_idem_below(*below_index);
                if count == 0 {
                    return unchanged(OpResult::Forgotten { count });
                }
                OpResult::Forgotten { count }
            }
            Op::Txn {
                compare,
                success,
                failure,
            } => return self.apply_txn(e, compare, success, failure),
        };
        Ok(Applied {
            result,
            changed: true,
            events,
        })
    }

    /// Book-keeping after a changing apply: remember the idempotency key, forget old ones, advance
    /// the applied position.
    pub fn finish(&mut self, e: &Entry, result: &OpResult) {
        if let Some(tag) = &e.idem {
            let slot =
                e.op.names()
                    .first()
                    .map_or(NO_SLOT, |n| slot_of(n, DEFAULT_SLOTS) as u16);
            self.remember(
                &tag.key,
                IdemRecord {
                    fingerprint: tag.fingerprint,
                    index: e.index,
                    ts_ms: e.ts_ms,
                    result: Box::new(result.clone()),
                    slot,
                },
            );
        }
        self.applied_index = e.index;
        self.applied_term = e.term;
    }

    fn version_at(&self, key: &str, now_ms: u64) -> u64 {
        self.get(key, now_ms).map_or(0, Rec::version)
    }

    /// Adds `delta` to the integer at `key` (a missing key counts as 0) within `[min, max]`.
    pub(crate) fn incr(
        &mut self,
        e: &Entry,
        key: &str,
        delta: i64,
        min: Option<i64>,
        max: Option<i64>,
    ) -> Result<(i64, KvEvent), ApplyError> {
        let live = self.get(key, e.ts_ms);
        let current = match live {
            None => 0,
            Some(r) => r
                .value()
                .trim()
                .parse::<i64>()
                .map_err(|_| ApplyError::NotANumber)?,
        };
        let expires = live.and_then(Rec::expires_at_ms);
        let created = live.map(Rec::created_ms);
        let next = current.checked_add(delta).ok_or(ApplyError::OutOfBounds)?;
        if min.is_some_and(|m| next < m) || max.is_some_and(|m| next > m) {
            return Err(ApplyError::OutOfBounds);
        }
        let ev = self.write_record(e, key, &next.to_string(), expires, |_| created);
        Ok((next, ev))
    }

    /// Writes `key` in entry `e`: the one place where a record's version and times are decided.
    /// The key keeps the creation time `created_ms` gives from the record it holds now (`None`,
    /// the write's time, when the key was absent or expired at `e.ts_ms`).
    pub(crate) fn write_record(
        &mut self,
        e: &Entry,
        key: &str,
        value: &str,
        expires_at_ms: Option<u64>,
        created_ms: impl FnOnce(Option<&Rec>) -> Option<u64>,
    ) -> KvEvent {
        let version = self.stamp(e.index, self.applying);
        let mut written = None;
        // One walk of the map: the old record comes back from the upsert.
        let old = self.records.upsert(key, |old| {
            let created_ms = created_ms(old).unwrap_or(e.ts_ms);
            let record = Rec::build(key, value, version, expires_at_ms, created_ms, e.ts_ms);
            written = Some(record.clone());
            record
        });
        if let Some(at) = old.and_then(|old| old.expires_at_ms()) {
            self.expiring.remove(&(at, key.to_string()));
        }
        if let Some(at) = expires_at_ms {
            self.expiring.insert((at, key.to_string()), version);
        }
        KvEvent {
            index: e.index,
            kind: KvEventKind::Put,
            change: Change::Put(written.expect("the upsert built the record")),
        }
    }

    /// Removes `key` in entry `e` (deleted or expired).
    pub(crate) fn erase_record(&mut self, e: &Entry, key: &str, kind: KvEventKind) -> KvEvent {
        self.remove_record(key);
        KvEvent {
            index: e.index,
            kind,
            change: Change::Removed {
                key: key.into(),
                version: self.stamp(e.index, self.applying),
                modified_ms: e.ts_ms,
            },
        }
    }

    /// Removes `key`, with its expiry.
    pub(crate) fn remove_record(&mut self, key: &str) {
        if let Some(old) = self.records.remove(key)
            && let Some(at) = old.expires_at_ms()
        {
            self.expiring.remove(&(at, key.to_string()));
        }
    }

    /// Stores a record as it is (an imported one keeps its version and times).
    pub(crate) fn set_record(&mut self, key: &str, record: Record) {
        let expires = record.expires_at_ms;
        let version = record.version;
        if let Some(old) = self.records.insert(Rec::new(key, &record))
            && let Some(at) = old.expires_at_ms()
        {
            self.expiring.remove(&(at, key.to_string()));
        }
        if let Some(at) = expires {
            self.expiring.insert((at, key.to_string()), version);
        }
    }

    /// Rebuilds the derived indexes after the primary maps were loaded from a snapshot.
    pub(crate) fn rebuild_indexes(&mut self) {
        self.expiring = self
            .records
            .iter()
            .filter_map(|r| {
                r.expires_at_ms()
                    .map(|at| ((at, r.key().to_string()), r.version()))
            })
            .collect();
        self.rebuild_idem_order();
    }

    /// A digest of the replicated state, equal on nodes that applied the same log prefix.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::default();
        for r in &self.records {
            h.write_field(r.key().as_bytes());
            h.write_field(r.value().as_bytes());
            h.write(&r.version().to_le_bytes());
            h.write(&r.expires_at_ms().unwrap_or(0).to_le_bytes());
            h.write(&r.created_ms().to_le_bytes());
            h.write(&r.modified_ms().to_le_bytes());
        }
        for (name, t) in &self.topics {
            h.write_field(name.as_bytes());
            h.write(&t.first_offset.to_le_bytes());
            h.write(&t.retention.max_messages.unwrap_or(0).to_le_bytes());
            h.write(&t.retention.max_age_ms.unwrap_or(0).to_le_bytes());
            for m in &t.messages {
                h.write_field(m.value.as_bytes());
                h.write(&m.published_at_ms.to_le_bytes());
                h.write(&m.index.to_le_bytes());
            }
            for (s, c) in &t.subscriptions {
                h.write_field(s.as_bytes());
                h.write(&c.to_le_bytes());
            }
        }
        for i in &self.idem {
            h.write_field(i.key().as_bytes());
            h.write(&i.fingerprint().to_le_bytes());
            h.write(&i.index().to_le_bytes());
        }
        h.finish()
    }
}

/// Shared so tests in other modules can build entries tersely.
pub fn entry(index: u64, ts_ms: u64, op: Op) -> Entry {
    Entry {
        term: 1,
        index,
        ts_ms,
        idem: None,
        op,
    }
}

#[path = "state_idem.rs"]
mod idem_keys;
#[path = "state_topics.rs"]
mod topic_ops;

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
