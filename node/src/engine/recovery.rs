//! Rebuilding the state from disk: the newest valid snapshot plus the log after it.

use crate::replication::TermRuns;
use crate::snapshot;
use crate::state::State;
use crate::wal::{self, Recovery};
use std::path::Path;

pub struct Loaded {
    pub state: State,
    pub runs: TermRuns,
    pub last_index: u64,
    pub recovery: Recovery,
    pub replayed: u64,
}

pub fn load(dir: &Path) -> std::io::Result<Loaded> {
    std::fs::create_dir_all(dir)?;
    snapshot::prune(dir, usize::MAX)?;
    let mut state = snapshot::load_newest(dir)?.unwrap_or_default();
    let snap_index = state.applied_index;
    let mut runs = TermRuns::new(snap_index, state.applied_term);
    let mut replayed = 0u64;
    let recovery = wal::recover(dir, snap_index, |e| {
        runs.push(e.index, e.term);
        if let Err(err) = state.apply_logged(&e) {
            tracing::warn!(index = e.index, error = %err, "log entry did not apply cleanly");
        }
        replayed += 1;
    })?;
    if let Some(t) = &recovery.truncation {
        tracing::warn!(
            segment = %t.segment, offset = t.offset, bytes_removed = t.bytes_removed,
            segments_removed = t.segments_removed, reason = %t.reason,
            last_valid_index = t.last_valid_index,
            "cut a torn or corrupt log tail"
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
        replayed,
    })
}
