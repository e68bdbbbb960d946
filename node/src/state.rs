//! The replicated state machine: records, topics, subscriptions and idempotency keys.
//!
//! `apply_op` either fails or reports "unchanged" without touching anything, or changes the state.
//! The primary logs only entries that changed something; every node applies the logged entries in
//! order with `apply_logged`, and the same log gives the same state (time comes from the entry).
//! Collections are persistent (imbl) so a snapshot is an O(1) clone taken without stalling writers.

pub use crate::idem::{
    IDEM_FORGET_BATCH, IDEM_MAX_KEYS, IDEM_TTL_MS, Idem, IdemMap, IdemRecord, NO_SLOT,
};
use crate::log::{Entry, Fnv, Json, Op, Retention, Start};
pub use crate::op_result::{OpResult, Pulled};
pub use crate::record::Record;
use crate::record::{Rec, Records};
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
use serde::{Deserialize, Serialize};
use std::ops::Bound;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub value: Json,
    pub published_at_ms: u64,
    /// The log index of the entry that published it: orders messages of different topics of
    /// one shard (a multi-topic stream delivers them in log order). 0 when loaded from a
    /// snapshot written before messages kept it.
    pub index: u64,
}

impl Message {
    pub fn pulled(&self) -> Pulled {
        Pulled {
            value: self.value.clone(),
            published_at_ms: self.published_at_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub retention: Retention,
    pub first_offset: u64,
    pub messages: Vector<Message>,
    pub subscriptions: OrdMap<String, u64>,
}

impl Topic {
    pub fn next_offset(&self) -> u64 {
        self.first_offset + self.messages.len() as u64
    }

    /// Messages `[from, from+limit)` that are still retained.
    pub fn read(&self, from: u64, limit: usize) -> Vec<(u64, Message)> {
        let start = from.max(self.first_offset);
        let skip = (start - self.first_offset) as usize;
        self.messages
            .iter()
            .skip(skip)
            .take(limit)
            .enumerate()
            .map(|(i, m)| (start + i as u64, m.clone()))
            .collect()
    }

    pub(crate) fn enforce_retention(&mut self, now_ms: u64) -> u64 {
        let mut dropped = 0;
        if let Some(max) = self.retention.max_messages {
            while self.messages.len() as u64 > max {
                self.messages.pop_front();
                self.first_offset += 1;
                dropped += 1;
            }
        }
        if let Some(age) = self.retention.max_age_ms {
            while self
                .messages
                .front()
                .is_some_and(|m| m.published_at_ms.saturating_add(age) <= now_ms)
            {
                self.messages.pop_front();
                self.first_offset += 1;
                dropped += 1;
            }
        }
        dropped
    }
}

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
#[derive(Debug, Clone, PartialEq)]
pub struct KvEvent {
    /// The log index of the entry (several events may share one: a transaction, an expiry).
    pub index: u64,
    pub kind: KvEventKind,
    pub key: String,
    pub value: Option<Json>,
    /// The record's version after a put; the entry's index for a delete or an expiry.
    pub version: u64,
    /// The entry's time.
    pub modified_ms: u64,
    /// After a put: when the key was created.
    pub created_ms: Option<u64>,
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
                let current = self.version_at(key, now);
                if let Some(expected) = if_version
                    && *expected != current
                {
                    return Err(ApplyError::VersionMismatch { current });
                }
                let expires_at_ms = ttl_ms.map(|t| now.saturating_add(t));
                let ev = self.write_record(e, key, value.clone(), expires_at_ms);
                let version = ev.version;
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
                let version = ev.version;
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
                let version = ev.version;
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
            Op::CreateTopic { topic, retention } => {
                let created = match self.topics.get_mut(topic) {
                    Some(t) if t.retention == *retention => {
                        return unchanged(OpResult::CreateTopic {
                            topic: topic.clone(),
                            created: false,
                            retention: *retention,
                        });
                    }
                    Some(t) => {
                        t.retention = *retention;
                        t.enforce_retention(now);
                        false
                    }
                    None => {
                        let t = Topic {
                            retention: *retention,
                            first_offset: 0,
                            messages: Vector::new(),
                            subscriptions: OrdMap::new(),
                        };
                        self.topics.insert(topic.clone(), t);
                        true
                    }
                };
                OpResult::CreateTopic {
                    topic: topic.clone(),
                    created,
                    retention: *retention,
                }
            }
            Op::DeleteTopic { topic } => {
                self.topics.remove(topic).ok_or(ApplyError::TopicNotFound)?;
                OpResult::DeleteTopic {
                    topic: topic.clone(),
                }
            }
            Op::Publish { topic, values } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or(ApplyError::TopicNotFound)?;
                let first_offset = t.next_offset();
                for v in values {
                    t.messages.push_back(Message {
                        value: v.clone(),
                        published_at_ms: now,
                        index: e.index,
                    });
                }
                t.enforce_retention(now);
                OpResult::Publish {
                    first_offset,
                    count: values.len() as u64,
                }
            }
            Op::Trim { topic } => {
                let t = self.topics.get(topic).ok_or(ApplyError::TopicNotFound)?;
                let mut trimmed = t.clone();
                let dropped = trimmed.enforce_retention(now);
                if dropped == 0 {
                    return unchanged(OpResult::Trimmed { dropped });
                }
                self.topics.insert(topic.clone(), trimmed);
                OpResult::Trimmed { dropped }
            }
            Op::Subscribe { topic, name, start } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or(ApplyError::TopicNotFound)?;
                if let Some(cursor) = t.subscriptions.get(name) {
                    return unchanged(OpResult::Subscribe {
                        topic: topic.clone(),
                        name: name.clone(),
                        cursor: *cursor,
                        created: false,
                    });
                }
                let cursor = match start {
                    Start::Earliest => t.first_offset,
                    Start::Latest => t.next_offset(),
                    Start::Offset(o) if *o > t.next_offset() => {
                        return Err(ApplyError::OffsetOutOfRange {
                            start: *o,
                            next: t.next_offset(),
                        });
                    }
                    Start::Offset(o) => *o,
                };
                t.subscriptions.insert(name.clone(), cursor);
                OpResult::Subscribe {
                    topic: topic.clone(),
                    name: name.clone(),
                    cursor,
                    created: true,
                }
            }
            Op::Unsubscribe { topic, name } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or(ApplyError::TopicNotFound)?;
                t.subscriptions
                    .remove(name)
                    .ok_or(ApplyError::SubscriptionNotFound)?;
                OpResult::Unsubscribe {
                    topic: topic.clone(),
                    name: name.clone(),
                }
            }
            Op::Pull { topic, name, max } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or(ApplyError::TopicNotFound)?;
                let cursor = *t
                    .subscriptions
                    .get(name)
                    .ok_or(ApplyError::SubscriptionNotFound)?;
                let messages: Vec<(u64, Pulled)> = t
                    .read(cursor, *max as usize)
                    .into_iter()
                    .map(|(o, m)| (o, m.pulled()))
                    .collect();
                let Some((last, _)) = messages.last() else {
                    return unchanged(OpResult::Pull {
                        messages,
                        cursor: cursor.max(t.first_offset),
                    });
                };
                let cursor = last + 1;
                t.subscriptions.insert(name.clone(), cursor);
                OpResult::Pull { messages, cursor }
            }
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
        let next = current.checked_add(delta).ok_or(ApplyError::OutOfBounds)?;
        if min.is_some_and(|m| next < m) || max.is_some_and(|m| next > m) {
            return Err(ApplyError::OutOfBounds);
        }
        let ev = self.write_record(e, key, next.to_string().into(), expires);
        Ok((next, ev))
    }

    /// Writes `key` in entry `e`: the one place where a record's version and times are decided.
    /// The key keeps its creation time unless it was absent (or expired).
    pub(crate) fn write_record(
        &mut self,
        e: &Entry,
        key: &str,
        value: Json,
        expires_at_ms: Option<u64>,
    ) -> KvEvent {
        let created_ms = self.get(key, e.ts_ms).map_or(e.ts_ms, Rec::created_ms);
        let version = self.stamp(e.index, self.applying);
        let record = Rec::build(key, &value, version, expires_at_ms, created_ms, e.ts_ms);
        // One walk of the map: the old record comes back from the insert.
        if let Some(old) = self.records.insert(record)
            && let Some(at) = old.expires_at_ms()
        {
            self.expiring.remove(&(at, key.to_string()));
        }
        if let Some(at) = expires_at_ms {
            self.expiring.insert((at, key.to_string()), version);
        }
        KvEvent {
            index: e.index,
            kind: KvEventKind::Put,
            key: key.to_string(),
            value: Some(value),
            version,
            modified_ms: e.ts_ms,
            created_ms: Some(created_ms),
        }
    }

    /// Removes `key` in entry `e` (deleted or expired).
    pub(crate) fn erase_record(&mut self, e: &Entry, key: &str, kind: KvEventKind) -> KvEvent {
        self.remove_record(key);
        KvEvent {
            index: e.index,
            kind,
            key: key.to_string(),
            value: None,
            version: self.stamp(e.index, self.applying),
            modified_ms: e.ts_ms,
            created_ms: None,
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

/// Idempotency keys: stored as entries apply, forgotten as the primary decides.
impl State {
    pub fn idempotent_result(&self, key: &str) -> Option<&Idem> {
        self.idem.get(key)
    }

    /// Stores an idempotency key's record. Records come in log order, so the queue stays sorted.
    pub(crate) fn remember(&mut self, key: &str, rec: IdemRecord) {
        let idem = Idem::new(key, &rec);
        self.idem.insert(idem.clone());
        self.idem_order.push_back(idem);
    }

    /// Whether a queue element is still its key's current record (not stored again later, nor
    /// dropped with its slot).
    fn idem_live(&self, queued: &Idem) -> bool {
        self.idem
            .get(queued.key())
            .is_some_and(|current| current.same(queued))
    }

    /// The primary's decision: the index below which idempotency keys are to be forgotten (those
    /// stored more than `ttl_ms` before `now_ms`, then the oldest beyond `max_keys`), at most about
    /// [`IDEM_FORGET_BATCH`] keys at a time; `None` when nothing is due.
    pub fn idem_forget_below(&self, now_ms: u64, ttl_ms: u64, max_keys: usize) -> Option<u64> {
        let horizon = now_ms.saturating_sub(ttl_ms);
        let mut live = self.idem.len();
        let mut below = None;
        let mut forgotten = 0;
        // Stale elements count too, so one decision walks a bounded part of the queue.
        for (visited, queued) in self.idem_order.iter().enumerate() {
            if !self.idem_live(queued) {
                continue;
            }
            let (index, ts_ms) = (queued.index(), queued.ts_ms());
            // Keys of one entry (an import) go together.
            let same_entry = below == Some(index + 1);
            if !same_entry
                && (forgotten >= IDEM_FORGET_BATCH
                    || visited >= 4 * IDEM_FORGET_BATCH
                    || (ts_ms >= horizon && live <= max_keys))
            {
                break;
            }
            below = Some(index + 1);
            live -= 1;
            forgotten += 1;
        }
        below
    }

    /// Applies [`Op::ForgetIdem`]: removes the keys stored by entries before `below_index`.
    pub(crate) fn forget_idem_below(&mut self, below_index: u64) -> u64 {
        let mut count = 0;
        while let Some(queued) = self.idem_order.front().cloned() {
            if queued.index() >= below_index {
                break;
            }
            self.idem_order.pop_front();
            if self.idem_live(&queued) {
                self.idem.remove(queued.key());
                count += 1;
            }
        }
        count
    }

    /// The queue rebuilt from the map after a snapshot was loaded: by index, then key.
    pub(crate) fn rebuild_idem_order(&mut self) {
        let mut order: Vec<(u64, Idem)> =
            self.idem.iter().map(|i| (i.index(), i.clone())).collect();
        order.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key().cmp(b.1.key())));
        self.idem_order = order.into_iter().map(|(_, i)| i).collect();
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

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
