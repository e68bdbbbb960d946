//! Background duties: purging expired records and aged messages through the log (primary only),
//! snapshots and log compaction (every node).

use super::{Engine, Role, assert_unlocked};
use crate::log::Op;
use crate::replication::AckLevel;
use crate::snapshot;
use std::sync::Arc;
use std::time::Duration;

/// At 10,000 keys a batch and 5 ticks a second: up to 500,000 keys a second, above any write rate.
const FORGET_BATCHES_PER_TICK: usize = 10;

impl Engine {
    /// Runs until the process ends.
    pub async fn run_maintenance(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut persisted_commit = 0;
        loop {
            tick.tick().await;
            let now = super::now_ms();
            let (leads, expired, topics, known_commit) = {
                let core = self.core();
                let leads = core.leads();
                let expired = if leads {
                    core.state.expired_keys(now, 1000)
                } else {
                    Vec::new()
                };
                let topics = if leads {
                    core.state.topics_to_trim(now)
                } else {
                    Vec::new()
                };
                (leads, expired, topics, core.node.known_commit)
            };
            if leads && !expired.is_empty() {
                let ack = self.cluster.default_ack;
                if let Err(e) = self.propose(Op::Expire { keys: expired }, None, ack).await {
                    tracing::debug!(error = %e, "expiry purge deferred");
                }
            }
            if leads {
                self.forget_idempotency_keys(now).await;
            }
            for topic in topics {
                let _ = self
                    .propose(Op::Trim { topic }, None, self.cluster.default_ack)
                    .await;
            }
            // The commit index guards a replica against discarding committed entries after a
            // restart; persisting it now and then (not per entry) keeps that guard cheap.
            if !self.standalone() && known_commit > persisted_commit + 1000 {
                // A file written, two fsyncs and a rename, five times a second under load: on the
                // blocking pool, not on a thread that serves requests (with one worker thread,
                // every request would wait for them).
                let engine = self.clone();
                if let Err(e) =
                    tokio::task::spawn_blocking(move || engine.persist_known_commit()).await
                {
                    tracing::error!(error = %e, "persisting the commit index failed");
                }
                persisted_commit = known_commit;
            }
            self.clone().maybe_snapshot().await;
        }
    }

    /// Logs which idempotency keys every node forgets, by this primary's retention settings, a
    /// bounded number of batches per tick.
    async fn forget_idempotency_keys(&self, now: u64) {
        for _ in 0..FORGET_BATCHES_PER_TICK {
            let below = self.core().state.idem_forget_below(
                now,
                self.cfg.idempotency_ttl_ms,
                self.cfg.idempotency_max_keys,
            );
            let Some(below_index) = below else { return };
            let ack = self.cluster.default_ack;
            if let Err(e) = self
                .propose(Op::ForgetIdem { below_index }, None, ack)
                .await
            {
                tracing::debug!(error = %e, "forgetting idempotency keys deferred");
                return;
            }
        }
    }

    async fn maybe_snapshot(self: Arc<Self>) {
        let due = {
            let core = self.core();
            core.entries_since_snapshot >= self.cfg.snapshot_entries
                || core.bytes_since_snapshot >= self.cfg.snapshot_bytes
        };
        if due && let Err(e) = self.snapshot_now().await {
            tracing::warn!(error = %e, "snapshot deferred");
        }
    }

    /// Writes a snapshot of the current state once it is committed, then drops older snapshots and
    /// the log segments it covers. Returns the snapshot's index.
    pub async fn snapshot_now(self: &Arc<Self>) -> std::io::Result<u64> {
        {
            let mut running = self.snapshot_running.lock().unwrap();
            if *running {
                return Ok(0);
            }
            *running = true;
        }
        let result = self.clone().snapshot_inner().await;
        *self.snapshot_running.lock().unwrap() = false;
        result
    }

    async fn snapshot_inner(self: Arc<Self>) -> std::io::Result<u64> {
        let (state, role) = {
            let mut core = self.core();
            core.entries_since_snapshot = 0;
            core.bytes_since_snapshot = 0;
            (core.state.clone(), core.node.role)
        };
        let index = state.applied_index;
        // A snapshot must never hold an entry that could still be discarded: wait until it is
        // durable here and (in a cluster) committed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut changed = self.changed_watch();
        let mut durable = self.durable.subscribe();
        loop {
            let committed = match role {
                Role::Standalone => self.durable_index(),
                Role::Primary => self.commit_for(AckLevel::Quorum).min(self.durable_index()),
                _ => self.core().node.known_commit.min(self.durable_index()),
            };
            if committed >= index {
                break;
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = durable.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(std::io::Error::other(format!("entry {index} not committed yet")));
                }
            }
        }
        let dir = self.cfg.wal.dir.clone();
        let engine = self.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let started = std::time::Instant::now();
            snapshot::write(&dir, &state)?;
            snapshot::prune(&dir, 2)?;
            let removed = engine.compact(index)?;
            engine.metrics.snapshots.inc();
            engine.metrics.snapshot_index.set(index as i64);
            tracing::info!(
                index,
                removed_segments = removed,
                took_ms = started.elapsed().as_millis() as u64,
                "snapshot written"
            );
            Ok(index)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Drops the log segments a snapshot at `index` covers. Serialized with truncations and
    /// snapshot installs, which replace the log files.
    fn compact(&self, index: u64) -> std::io::Result<usize> {
        let _steps = self.steps();
        // Only a snapshot still on disk stands for the segments it covers: a snapshot from the
        // primary installed since this one was written replaced the log and removed it.
        if !snapshot::snapshot_path(&self.cfg.wal.dir, index).exists() {
            return Ok(0);
        }
        let wal = self.core().wal.clone();
        assert_unlocked("compacting the log");
        wal.compact(index)
    }

    pub fn newest_snapshot_index(&self) -> u64 {
        assert_unlocked("listing snapshots");
        snapshot::list(&self.cfg.wal.dir)
            .ok()
            .and_then(|l| l.first().map(|(i, _)| *i))
            .unwrap_or(0)
    }

    pub fn segment_count(&self) -> usize {
        self.core().wal.segment_count()
    }
}
