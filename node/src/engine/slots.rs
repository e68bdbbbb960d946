//! The source side of a slot migration: a consistent copy of a range, and the committed log
//! entries that touch it (docs/SHARDS.md "Resharding"). The target side is the state machine
//! (`slot_state.rs`); the coordinator moves the data between them.

use super::{Engine, EngineError};
use crate::log::{self, Entry, ImportedIdem, ImportedRecord, ImportedTopic};
use crate::slot_state::entry_in_range;
use crate::state::State;
use crate::wal;

/// A committed clone of the state, kept while a range is copied from it.
pub(super) struct Export {
    start: u32,
    end: u32,
    at: u64,
    state: State,
}

/// One page of a range's copy.
pub struct CopyPage {
    /// The source log index the copy is consistent at.
    pub at: u64,
    pub records: Vec<ImportedRecord>,
    pub topics: Vec<ImportedTopic>,
    pub idem: Vec<ImportedIdem>,
    /// The key to continue after; `None` on the last page.
    pub next: Option<String>,
}

/// The entries of a log stretch that touch a range.
pub struct RangeEntries {
    pub entries: Vec<Entry>,
    /// The last source index looked at: the target holds the range's effects up to here once it
    /// applied `entries`.
    pub upto: u64,
    /// The version offset the source stamped these entries with ([`crate::state::State`]'s
    /// `version_offset`): constant while the range moves, since a shard giving a range away
    /// imports nothing (one migration at a time).
    pub offset: u64,
}

impl Engine {
    /// A page of the copy of slots `start..=end`. Without `at` a new copy starts from the
    /// committed state; with it, the page continues that copy. `Conflict` when that copy is gone
    /// (this node restarted or another copy started): the caller starts over.
    pub async fn export_page(
        &self,
        start: u32,
        end: u32,
        at: Option<u64>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<CopyPage, EngineError> {
        if at.is_none() {
            // Only committed effects may be copied: an entry a failover takes back must not
            // reach the target.
            let applied = self.core().state.applied_index;
            if !self.wait_committed(applied).await {
                return Err(EngineError::Unconfirmed);
            }
            let core = self.core();
            if !core.leads() {
                return Err(EngineError::NotPrimary {
                    primary: super::primary_url(&core.node),
                });
            }
            *self.export.lock().unwrap() = Some(Export {
                start,
                end,
                at: core.state.applied_index,
                state: core.state.clone(),
            });
        }
        let export = self.export.lock().unwrap();
        let Some(x) = export
            .as_ref()
            .filter(|x| (x.start, x.end) == (start, end) && at.is_none_or(|a| a == x.at))
        else {
            return Err(EngineError::Conflict(format!(
                "no copy of slots {start}-{end} at {at:?} here any more; start a new copy"
            )));
        };
        let (records, topics, idem, next) = x.state.export_range(start, end, after, limit);
        Ok(CopyPage {
            at: x.at,
            records,
            topics,
            idem,
            next,
        })
    }

    /// Ends the copy of a range (its memory is released).
    pub fn export_done(&self) {
        *self.export.lock().unwrap() = None;
    }

    /// The committed entries after `from` (at most `max`) that touch slots `start..=end`.
    /// `Conflict` when that part of the log is only in a snapshot now: the caller copies again.
    pub fn range_entries(
        &self,
        start: u32,
        end: u32,
        from: u64,
        max: usize,
    ) -> Result<RangeEntries, EngineError> {
        const MAX_BYTES: usize = 4 << 20;
        let cached = {
            let core = self.core();
            if !core.leads() {
                return Err(EngineError::NotPrimary {
                    primary: super::primary_url(&core.node),
                });
            }
            core.cached_from(from + 1, max, MAX_BYTES)
        };
        let commit = self.commit_index();
        let offset = self.core().state.version_offset;
        if from >= commit {
            return Ok(RangeEntries {
                entries: Vec::new(),
                upto: from,
                offset,
            });
        }
        let read: Vec<Entry> = match cached {
            Some(items) => items
                .into_iter()
                .map(|c| {
                    log::decode::<Entry>(&c.payload)
                        .map_err(|e| EngineError::Io(format!("entry {}: {e}", c.index)))
                })
                .collect::<Result<_, _>>()?,
            None => wal::read_range(&self.cfg.wal.dir, from + 1, max, MAX_BYTES)
                .map_err(|e| {
                    EngineError::Conflict(format!(
                        "entries after {from} are no longer in the log ({e}); copy again"
                    ))
                })?
                .into_iter()
                .map(|(e, _)| e)
                .collect(),
        };
        let mut entries = Vec::new();
        let mut upto = from;
        for e in read {
            if e.index > commit {
                break;
            }
            if e.index != upto + 1 {
                return Err(EngineError::Conflict(format!(
                    "entry {} missing after {upto}; copy again",
                    upto + 1
                )));
            }
            upto = e.index;
            entries.extend(entry_in_range(&e, start, end));
        }
        Ok(RangeEntries {
            entries,
            upto,
            offset,
        })
    }
}
