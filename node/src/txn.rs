//! Transactions (`POST /v1/txn`), in the spirit of etcd's Txn: comparisons on records, then the
//! `success` operations when every comparison holds and the `failure` operations otherwise — all
//! in one log entry, so a crash or a failover shows either all of the chosen branch or none of it.
//!
//! Operations apply in order and each sees the effect of those before it. When one fails (an
//! increment would cross its bound, a topic is missing) the transaction is refused as a whole and
//! the state is put back as it was: the maps are persistent (imbl), so keeping the old ones costs
//! three pointer copies, not a copy of the data.
//!
//! The types are part of the log format, so they live in `crate::log`.

use crate::log::Entry;
pub use crate::log::{Compare, TxnOp, TxnResult};
use crate::record::Rec;
use crate::state::{Applied, ApplyError, KvEvent, KvEventKind, Message, OpResult, State};

impl TxnOp {
    /// The record key or topic name the operation touches.
    pub fn name(&self) -> &str {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Incr { key, .. } => key,
            TxnOp::Publish { topic, .. } => topic,
        }
    }

    /// `put`, `delete`, `incr` or `publish`: the `op` field of the request and the response.
    pub fn kind(&self) -> &'static str {
        match self {
            TxnOp::Put { .. } => "put",
            TxnOp::Delete { .. } => "delete",
            TxnOp::Incr { .. } => "incr",
            TxnOp::Publish { .. } => "publish",
        }
    }
}

impl Compare {
    fn holds(&self, state: &State, now_ms: u64) -> bool {
        let record = state.get(&self.key, now_ms);
        if self.exists.is_some_and(|e| e != record.is_some()) {
            return false;
        }
        if let Some(v) = self.version
            && v != record.map_or(0, Rec::version)
        {
            return false;
        }
        if let Some(want) = &self.value {
            let same = record.is_some_and(|r| {
                let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).ok();
                parse(r.value()).is_some_and(|have| Some(have) == parse(want))
            });
            if !same {
                return false;
            }
        }
        if self.min.is_some() || self.max.is_some() {
            let n = record.and_then(|r| r.value().trim().parse::<i64>().ok());
            let Some(n) = n else {
                return false;
            };
            if self.min.is_some_and(|m| n < m) || self.max.is_some_and(|m| n > m) {
                return false;
            }
        }
        true
    }
}

impl State {
    /// Applies a transaction entry: nothing changes on error, and `changed` is false when the
    /// chosen branch changed nothing (so the primary logs no entry for it).
    pub(crate) fn apply_txn(
        &mut self,
        e: &Entry,
        compare: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
    ) -> Result<Applied, ApplyError> {
        let failed = compare.iter().position(|c| !c.holds(self, e.ts_ms));
        let ops = if failed.is_none() { success } else { failure };
        // Records are put back from what each operation found, not from a clone of the map: a
        // write into a cloned map copies every node on its path, a leaf of 60 elements among
        // them (each element's count touched, a cache miss apiece), for every transaction.
        let before = (self.topics.clone(), self.expiring.clone());
        let mut found: Vec<(&str, Option<Rec>)> = Vec::new();
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        let mut changed = false;
        for (i, op) in ops.iter().enumerate() {
            let mut before_op = None;
            if let TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Incr { key, .. } = op {
                before_op = self.records.get(key).cloned();
                found.push((key, before_op.clone()));
            }
            match self.txn_op(e, op, before_op.as_ref(), &mut events) {
                Ok((result, did)) => {
                    results.push(result);
                    changed |= did;
                }
                Err(err) => {
                    // Last first, so a key written twice ends as it was before the first write.
                    for (key, old) in found.into_iter().rev() {
                        match old {
                            Some(old) => self.records.insert(old),
                            None => self.records.remove(key),
                        };
                    }
                    (self.topics, self.expiring) = before;
                    return Err(ApplyError::InTxn {
                        op: i as u32,
                        what: format!("{} {}", op.kind(), op.name()),
                        source: Box::new(err),
                    });
                }
            }
        }
        Ok(Applied {
            result: OpResult::Txn {
                succeeded: failed.is_none(),
                failed_compare: failed.map(|i| i as u32),
                results,
            },
            changed,
            events,
        })
    }

    /// Applies one operation; `found` is the record its key held before it (expired or not),
    /// looked up once by the caller for the undo list.
    fn txn_op(
        &mut self,
        e: &Entry,
        op: &TxnOp,
        found: Option<&Rec>,
        events: &mut Vec<KvEvent>,
    ) -> Result<(TxnResult, bool), ApplyError> {
        let now = e.ts_ms;
        Ok(match op {
            TxnOp::Put { key, value, ttl_ms } => {
                let expires_at_ms = ttl_ms.map(|t| now.saturating_add(t));
                let created = found.filter(|r| r.live_at(now)).map(Rec::created_ms);
                let ev = self.write_record(e, key, value, expires_at_ms, |_| created);
                let version = ev.version();
                events.push(ev);
                (
                    TxnResult::Put {
                        version,
                        expires_at_ms,
                    },
                    true,
                )
            }
            TxnOp::Delete { key } => {
                if self.get(key, now).is_none() {
                    return Ok((TxnResult::Delete { deleted: false }, false));
                }
                events.push(self.erase_record(e, key, KvEventKind::Delete));
                (TxnResult::Delete { deleted: true }, true)
            }
            TxnOp::Incr {
                key,
                delta,
                min,
                max,
            } => {
                let (value, ev) = self.incr(e, key, *delta, *min, *max)?;
                let version = ev.version();
                events.push(ev);
                (TxnResult::Incr { value, version }, true)
            }
            TxnOp::Publish { topic, value } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or(ApplyError::TopicNotFound)?;
                let offset = t.next_offset();
                t.messages.push_back(Message {
                    value: value.clone(),
                    published_at_ms: now,
                    index: e.index,
                });
                t.enforce_retention(now);
                (TxnResult::Publish { offset }, true)
            }
        })
    }
}

#[cfg(test)]
#[path = "txn_tests.rs"]
mod tests;
