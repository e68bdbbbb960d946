//! The replica side of replication: accept appends from the primary (matching, truncating a
//! divergent suffix, persisting before acknowledging) and install snapshots.

use super::{Core, Engine, EngineError, Role, recovery};
use crate::log::{self, Entry, FrameRead};
use crate::replication::{AppendHeader, AppendResponse, TermRuns};
use crate::snapshot;
use crate::wal::{self, Wal};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// An append's header and its entries with their encoded bytes.
type Batch = (AppendHeader, Vec<(Entry, Vec<u8>)>);

fn parse_append(body: &[u8]) -> Result<Batch, EngineError> {
    let bad = |why: &str| EngineError::Conflict(format!("malformed append: {why}"));
    let mut r = body;
    let FrameRead::Frame(head) = log::read_frame(&mut r).map_err(|e| bad(&e.to_string()))? else {
        return Err(bad("no header"));
    };
    let header: AppendHeader = log::decode(&head).map_err(|_| bad("header"))?;
    let mut entries = Vec::new();
    loop {
        match log::read_frame(&mut r).map_err(|e| bad(&e.to_string()))? {
            FrameRead::End => break,
            FrameRead::Bad(why) => return Err(bad(why)),
            FrameRead::Frame(p) => {
                let e: Entry = log::decode(&p).map_err(|_| bad("entry"))?;
                entries.push((e, p));
            }
        }
    }
    Ok((header, entries))
}

impl Engine {
    fn reply(&self, core: &Core, ok: bool) -> AppendResponse {
        AppendResponse {
            term: core.term,
            ok,
            last_index: core.last_index,
            durable_index: self.durable_index(),
            applied_index: core.state.applied_index,
            ..Default::default()
        }
    }

    /// Handles one append request from a primary.
    pub async fn handle_append(
        self: &Arc<Self>,
        body: Bytes,
    ) -> Result<AppendResponse, EngineError> {
        let (h, entries) = parse_append(&body)?;
        // Batches are pipelined: one may overtake the batch before it. Give that one a moment to
        // land instead of rejecting and making the primary resend both.
        let ahead = {
            let core = self.core();
            h.term >= core.term && h.prev_index > core.last_index
        };
        if ahead {
            let mut applied = self.applied.subscribe();
            let wait = applied.wait_for(|v| *v >= h.prev_index);
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), wait).await;
        }
        let upto = {
            let mut core = self.core();
            if h.term < core.term {
                let mut r = self.reply(&core, false);
                r.error = Some(format!("stale term {} < {}", h.term, core.term));
                return Ok(r);
            }
            let other_primary = core.primary.as_ref().is_some_and(|p| *p != h.from);
            if h.term == core.term && (core.role == Role::Primary || other_primary) {
                let mut r = self.reply(&core, false);
                r.error = Some(format!("{:?} leads term {}", core.primary, h.term));
                return Ok(r);
            }
            self.observe_term(&mut core, h.term, Some(h.from.clone()))?;
            core.last_contact = Some(Instant::now());
            core.primary_last_index = h.primary_last_index;
            if h.prev_index > core.last_index {
                let mut r = self.reply(&core, false);
                r.retry_from = Some(core.last_index + 1);
                return Ok(r);
            }
            match core.term_at(h.prev_index) {
                Some(t) if t != h.prev_term => {
                    let mut r = self.reply(&core, false);
                    r.retry_from = Some(core.runs.run_start(h.prev_index).min(h.prev_index));
                    return Ok(r);
                }
                // Below our snapshot: committed, and so equal to the primary's.
                _ => {}
            }
            let mut matched = h.prev_index;
            for (e, payload) in entries {
                if e.index <= core.last_index {
                    match core.term_at(e.index) {
                        Some(t) if t != e.term => {
                            if let Some(refusal) = self.truncate_from(&mut core, e.index)? {
                                return Ok(refusal);
                            }
                            if core.last_index == 0 && e.index > 1 {
                                let mut r = self.reply(&core, false);
                                r.need_snapshot = true;
                                return Ok(r);
                            }
                        }
                        _ => {
                            matched = e.index;
                            continue;
                        }
                    }
                }
                if e.index != core.last_index + 1 {
                    break;
                }
                let applied = match core.state.apply_logged(&e) {
                    Ok(a) => a.events,
                    Err(err) => {
                        tracing::warn!(index = e.index, error = %err, "replicated entry did not apply cleanly");
                        Vec::new()
                    }
                };
                core.last_ts = core.last_ts.max(e.ts_ms);
                core.append(&e, payload, applied);
                matched = e.index;
            }
            let commit = h.commit.min(matched);
            if commit > core.known_commit {
                core.known_commit = commit;
            }
            core.synced = true;
            self.update_gauges(&core);
            self.metrics.commit_index.set(core.known_commit as i64);
            self.applied.send_replace(core.state.applied_index);
            matched
        };
        self.bump();
        // Acknowledge only what is durable here.
        let mut durable = self.durable.subscribe();
        let wait = durable.wait_for(|d| *d >= upto);
        let _ = tokio::time::timeout(self.cfg.ack_timeout, wait).await;
        let core = self.core();
        let mut r = self.reply(&core, true);
        r.durable_index = self.durable_index().min(upto);
        Ok(r)
    }

    /// Discards entries from `index` on: a suffix written by an old primary that the new primary's
    /// log replaced. Refuses to discard anything known to be committed. The state is rebuilt from
    /// the newest snapshot before `index` and the log; without one the replica starts empty and
    /// asks for a snapshot.
    fn truncate_from(
        &self,
        core: &mut Core,
        index: u64,
    ) -> Result<Option<AppendResponse>, EngineError> {
        if index <= core.known_commit {
            tracing::error!(
                index,
                known_commit = core.known_commit,
                "refusing to discard committed entries"
            );
            let mut r = self.reply(core, false);
            r.error = Some(format!(
                "entry {index} is committed here; refusing to discard it"
            ));
            return Ok(Some(r));
        }
        let io = |e: std::io::Error| EngineError::Io(e.to_string());
        let dir = self.cfg.wal.dir.clone();
        let old_last = core.last_index;
        core.wal.close();
        // Snapshots holding the suffix go first: a crash between the two steps then leaves the
        // suffix in the log, to be discarded again, never in a snapshot above a shorter log.
        for (i, p) in snapshot::list(&dir).map_err(io)? {
            if i >= index {
                std::fs::remove_file(p).map_err(io)?;
            }
        }
        wal::sync_dir(&dir).map_err(io)?;
        wal::truncate_after(&dir, index - 1).map_err(io)?;
        let loaded = match recovery::load(&dir, self.cfg.accept_data_loss) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot rebuild below the snapshot; starting empty to fetch a snapshot");
                wal::remove_all(&dir).map_err(io)?;
                for (_, p) in snapshot::list(&dir).map_err(io)? {
                    std::fs::remove_file(p).map_err(io)?;
                }
                recovery::load(&dir, self.cfg.accept_data_loss).map_err(io)?
            }
        };
        let discarded = old_last - loaded.last_index;
        core.wal = Wal::start(
            self.cfg.wal.clone(),
            loaded.recovery.log_end,
            loaded.last_index,
            self.durable.clone(),
            self.metrics.clone(),
        )
        .map_err(io)?;
        core.state = loaded.state;
        core.runs = loaded.runs;
        core.last_index = loaded.last_index;
        self.reset_caches(core, old_last);
        core.discarded_total += discarded;
        self.metrics.entries_discarded.inc_by(discarded);
        tracing::warn!(
            discarded,
            from = index,
            last_index = core.last_index,
            "discarded divergent log entries"
        );
        Ok(None)
    }

    fn reset_caches(&self, core: &mut Core, old_last: u64) {
        core.cache.clear();
        core.cache_bytes = 0;
        core.events.clear();
        // Every watcher is behind this point and must resync.
        core.events_evicted_upto = old_last.max(core.last_index) + 1;
        core.entries_since_snapshot = 0;
        self.applied.send_replace(core.state.applied_index);
        self.update_gauges(core);
    }

    /// Replaces this replica's state and log with the primary's snapshot.
    pub async fn install_snapshot(
        &self,
        term: u64,
        from: &str,
        body: Bytes,
    ) -> Result<AppendResponse, EngineError> {
        {
            let mut core = self.core();
            if term < core.term {
                return Err(EngineError::StaleTerm {
                    given: term,
                    current: core.term,
                });
            }
            self.observe_term(&mut core, term, Some(from.to_string()))?;
        }
        let io = |e: std::io::Error| EngineError::Io(e.to_string());
        let dir = self.cfg.wal.dir.clone();
        let tmp = dir.join("incoming.snap.part");
        let state = {
            let (tmp, body) = (tmp.clone(), body.clone());
            tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                std::fs::write(&tmp, &body)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                snapshot::load(&tmp)
            })
            .await
            .map_err(|e| EngineError::Io(e.to_string()))?
            .map_err(|e| EngineError::Conflict(format!("bad snapshot: {e}")))?
        };
        let index = state.applied_index;
        let mut core = self.core();
        if core.term != term || core.primary.as_deref() != Some(from) {
            return Err(EngineError::Conflict(
                "the primary changed during the transfer".into(),
            ));
        }
        if index < core.known_commit {
            return Err(EngineError::Conflict(format!(
                "snapshot at {index} is older than the committed index {} here",
                core.known_commit
            )));
        }
        let old_last = core.last_index;
        core.wal.close();
        // The new snapshot is in place (and the folder fsynced) before anything old goes: a
        // crash in between must not leave a replica without the entries it acknowledged.
        let path = snapshot::snapshot_path(&dir, index);
        std::fs::rename(&tmp, &path).map_err(io)?;
        wal::sync_dir(&dir).map_err(io)?;
        wal::remove_all(&dir).map_err(io)?;
        for (_, p) in snapshot::list(&dir).map_err(io)? {
            if p != path {
                std::fs::remove_file(p).map_err(io)?;
            }
        }
        wal::sync_dir(&dir).map_err(io)?;
        core.runs = TermRuns::new(index, state.applied_term);
        core.state = state;
        core.last_index = index;
        core.wal = Wal::start(
            self.cfg.wal.clone(),
            0,
            index,
            self.durable.clone(),
            self.metrics.clone(),
        )
        .map_err(io)?;
        core.known_commit = core.known_commit.max(index);
        core.synced = true;
        self.reset_caches(&mut core, old_last);
        self.metrics.snapshot_index.set(index as i64);
        tracing::info!(index, from, "installed a snapshot from the primary");
        Ok(self.reply(&core, true))
    }

    /// Called by a replica on the primary: answer a poke so its shipper reconnects now.
    pub fn hello_from(&self, term: u64) {
        let core = self.core();
        if core.role == Role::Primary && core.term == term {
            self.poke.notify_waiters();
        }
    }
}
