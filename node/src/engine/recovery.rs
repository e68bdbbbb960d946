//! Rebuilding the state from disk: the newest intact snapshot plus the log after it.
//!
//! Nothing that may have been acknowledged is dropped without the operator's say-so: a torn log
//! tail is cut (it holds no acknowledged write), a damaged snapshot is replaced by an older one
//! only when the log still holds every entry it covered, and anything else stops the node with a
//! message naming the file and offset, unless `accept_loss` (`--accept-data-loss`) is given.

use crate::replication::TermRuns;
use crate::snapshot::{self, Damaged};
use crate::state::{KvEvent, State};
use crate::wal::{self, RecoverError, Recovery, Truncation};
use std::collections::VecDeque;
use std::io;
use std::path::Path;

pub struct Loaded {
    pub state: State,
    pub runs: TermRuns,
    pub last_index: u64,
    pub recovery: Recovery,
    pub report: Report,
    pub replayed: u64,
    /// The record changes of the replayed entries (the newest `EVENT_BUFFER`), so a watch can
    /// resume on a restarted node from any position since its snapshot.
    pub events: VecDeque<KvEvent>,
    /// Changes up to this index are not in `events`.
    pub events_from: u64,
}

/// What recovery had to repair, shown in `/v1/status` under `recovery`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncation: Option<Truncation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damaged_snapshots: Vec<Damaged>,
    /// Intact data was dropped because `--accept-data-loss` allowed it.
    pub data_loss: bool,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.truncation.is_none() && self.damaged_snapshots.is_empty()
    }
}

const ACCEPT_HINT: &str = "refusing to start, as that could drop acknowledged writes \
    (start with --accept-data-loss to cut there and go on with what remains)";

pub fn load(dir: &Path, accept_loss: bool) -> io::Result<Loaded> {
    std::fs::create_dir_all(dir)?;
    snapshot::prune(dir, usize::MAX)?;
    let (state, damaged) = snapshot::load_newest(dir)?;
    let mut state = state.unwrap_or_default();
    let snap_index = state.applied_index;
    // What stands in for a damaged snapshot, for messages.
    let fallback = || match snap_index {
        0 => "an empty state".to_string(),
        i => format!("the snapshot at index {i}"),
    };
    let mut runs = TermRuns::new(snap_index, state.applied_term);
    let mut replayed = 0u64;
    let mut events: VecDeque<KvEvent> = VecDeque::new();
    let mut events_from = snap_index;
    let recovered = wal::recover(dir, snap_index, accept_loss, |e| {
        runs.push(e.index, e.term);
        match state.apply_logged(&e) {
            Ok(applied) => {
                for ev in applied.events {
                    if events.len() == super::locked::EVENT_BUFFER
                        && let Some(old) = events.pop_front()
                    {
                        events_from = old.index;
                    }
                    events.push_back(ev);
                }
            }
            Err(err) => {
                tracing::warn!(index = e.index, error = %err, "log entry did not apply cleanly")
            }
        }
        replayed += 1;
    });
    let recovery = match recovered {
        Ok(r) => r,
        Err(RecoverError::Io(e)) => return Err(e),
        Err(RecoverError::Damaged(d)) => {
            let msg = match damaged.first() {
                Some(s) => format!(
                    "damaged snapshot: {}; {} and the log cannot stand in for it: {d}; {ACCEPT_HINT}",
                    s.error,
                    fallback()
                ),
                None => format!("{d}; {ACCEPT_HINT}"),
            };
            return Err(io::Error::other(msg));
        }
    };
    let mut report = Report {
        data_loss: recovery.truncation.as_ref().is_some_and(|t| t.data_loss),
        truncation: recovery.truncation.clone(),
        damaged_snapshots: damaged,
    };
    if let Some(newest) = report.damaged_snapshots.first() {
        let reached = recovery.last_index.max(snap_index);
        if reached < newest.index {
            if !accept_loss {
                return Err(io::Error::other(format!(
                    "damaged snapshot: {}; {} and the log reach only index {reached}, so entries {}..={} would be lost; {ACCEPT_HINT}",
                    newest.error,
                    fallback(),
                    reached + 1,
                    newest.index
                )));
            }
            report.data_loss = true;
        }
        snapshot::set_aside(dir, &report.damaged_snapshots)?;
        for s in &report.damaged_snapshots {
            tracing::warn!(file = %s.file, error = %s.error, "set a damaged snapshot aside");
        }
    }
    if let Some(t) = &report.truncation {
        if t.data_loss {
            tracing::error!(
                segment = %t.segment, offset = t.offset, bytes_removed = t.bytes_removed,
                segments_removed = t.segments_removed, reason = %t.reason,
                last_valid_index = t.last_valid_index,
                "cut the log at damaged data and dropped intact entries after it (--accept-data-loss)"
            );
        } else {
            tracing::warn!(
                segment = %t.segment, offset = t.offset, bytes_removed = t.bytes_removed,
                reason = %t.reason, last_valid_index = t.last_valid_index,
                "cut a torn log tail"
            );
        }
    }
    if report.data_loss {
        tracing::error!(
            last_index = recovery.last_index.max(snap_index),
            "started after dropping data (--accept-data-loss): acknowledged writes may be lost"
        );
    }
    let last_index = recovery.last_index.max(snap_index);
    tracing::info!(
        snapshot_index = snap_index,
        replayed,
        last_index,
        "recovered"
    );
    Ok(Loaded {
        state,
        runs,
        last_index,
        recovery,
        report,
        replayed,
        events,
        events_from,
    })
}
