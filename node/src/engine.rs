//! The engine: the state machine, the log writer and snapshots behind one short critical section.
//!
//! A write is validated and applied to the in-memory state and queued to the WAL under the core
//! lock (so log order = apply order), then waits outside the lock until its index is durable. Reads
//! that observed state newer than the durable index wait for it too, so nothing is returned that a
//! crash could take back (except `eventual` reads, which promise nothing).

use crate::log::{self, Entry, IdemTag, Op};
use crate::metrics::Metrics;
use crate::snapshot;
use crate::state::{ApplyError, KvEvent, OpResult, State};
use crate::wal::{self, Recovery, Wal, WalConfig};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Record changes kept for watchers that fall behind briefly.
const EVENT_BUFFER: usize = 65_536;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub wal: WalConfig,
    /// Take a snapshot after this many entries...
    pub snapshot_entries: u64,
    /// ...or after this many WAL bytes since the last one.
    pub snapshot_bytes: u64,
    /// How long a write waits for its acknowledgement before answering 503.
    pub ack_timeout: Duration,
    /// How long a session read waits for this node to reach the client's token.
    pub session_wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("this idempotency key was used for a different request")]
    IdempotencyKeyReused,
    #[error("entry {index} was not acknowledged within {timeout:?}; its fate is decided by the log (retry with the same Idempotency-Key)")]
    AckTimeout { index: u64, timeout: Duration },
    #[error("this node has not reached log position {token} within {timeout:?}")]
    SessionTimeout { token: u64, timeout: Duration },
}

pub struct Proposed {
    pub result: OpResult,
    /// The log position the client has observed: the entry's index, or the state it saw.
    pub index: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct Core {
    pub state: State,
    pub term: u64,
    pub last_index: u64,
    last_ts: u64,
    events: VecDeque<KvEvent>,
    /// Highest index of an event that fell out of `events`; watchers behind it must resync.
    events_evicted_upto: u64,
    entries_since_snapshot: u64,
    bytes_since_snapshot: u64,
}

pub struct Engine {
    pub cfg: EngineConfig,
    core: Mutex<Core>,
    wal: Wal,
    durable: watch::Receiver<u64>,
    applied: watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
    pub recovery: Recovery,
    snapshot_running: Mutex<bool>,
}

impl Engine {
    /// Loads the newest valid snapshot, replays the log after it (cutting a damaged tail) and starts
    /// the log writer.
    pub fn open(cfg: EngineConfig, metrics: Arc<Metrics>) -> std::io::Result<Arc<Engine>> {
        let dir = &cfg.wal.dir;
        std::fs::create_dir_all(dir)?;
        snapshot::prune(dir, usize::MAX)?;
        let mut state = snapshot::load_newest(dir)?.unwrap_or_default();
        let snap_index = state.applied_index;
        let mut replayed = 0u64;
        let recovery = wal::recover(dir, snap_index, |e| {
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
        tracing::info!(snapshot_index = snap_index, replayed, last_index, "recovered");
        let wal = Wal::start(cfg.wal.clone(), recovery.log_end, last_index, metrics.clone())?;
        let durable = wal.durable();
        metrics.snapshot_index.set(snap_index as i64);
        let (applied, _) = watch::channel(last_index);
        let core = Core {
            term: state.applied_term.max(1),
            last_ts: 0,
            last_index,
            state,
            events: VecDeque::new(),
            events_evicted_upto: last_index,
            entries_since_snapshot: replayed,
            bytes_since_snapshot: 0,
        };
        let engine = Arc::new(Engine {
            cfg,
            core: Mutex::new(core),
            wal,
            durable,
            applied,
            metrics,
            recovery,
            snapshot_running: Mutex::new(false),
        });
        engine.update_gauges(&engine.core());
        Ok(engine)
    }

    pub fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap()
    }

    pub fn commit_index(&self) -> u64 {
        *self.durable.borrow()
    }

    pub fn commit_watch(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Appends `op` to the log and returns once it is acknowledged.
    pub async fn propose(&self, op: Op, idem: Option<IdemTag>) -> Result<Proposed, EngineError> {
        let outcome = {
            let mut core = self.core();
            self.propose_locked(&mut core, op, idem)
        };
        match outcome {
            Ok(p) => {
                self.wait_commit(p.index).await?;
                Ok(p)
            }
            Err((err, observed)) => {
                // A refusal is based on state that may not be durable yet; wait so a client is never
                // refused because of a write that a crash could still take back.
                self.wait_commit(observed).await?;
                Err(err)
            }
        }
    }

    fn propose_locked(
        &self,
        core: &mut Core,
        op: Op,
        idem: Option<IdemTag>,
    ) -> Result<Proposed, (EngineError, u64)> {
        let observed = core.state.applied_index;
        if let Some(tag) = &idem
            && let Some(rec) = core.state.idempotent_result(&tag.key)
        {
            return if rec.fingerprint == tag.fingerprint {
                Ok(Proposed {
                    result: rec.result.clone(),
                    index: rec.index,
                })
            } else {
                Err((EngineError::IdempotencyKeyReused, observed))
            };
        }
        let ts = now_ms().max(core.last_ts);
        let e = Entry {
            term: core.term,
            index: core.last_index + 1,
            ts_ms: ts,
            idem,
            op,
        };
        let applied = core
            .state
            .apply_op(&e)
            .map_err(|err| (err.into(), observed))?;
        if !applied.changed {
            return Ok(Proposed {
                result: applied.result,
                index: observed,
            });
        }
        core.state.finish(&e, &applied.result);
        let payload = log::encode(&e);
        self.wal.append(e.index, &payload);
        core.last_index = e.index;
        core.last_ts = ts;
        core.entries_since_snapshot += 1;
        core.bytes_since_snapshot += payload.len() as u64;
        for ev in applied.events {
            if core.events.len() == EVENT_BUFFER
                && let Some(old) = core.events.pop_front()
            {
                core.events_evicted_upto = old.index;
            }
            core.events.push_back(ev);
        }
        self.update_gauges(core);
        self.applied.send_replace(e.index);
        Ok(Proposed {
            result: applied.result,
            index: e.index,
        })
    }

    fn update_gauges(&self, core: &Core) {
        let m = &self.metrics;
        m.last_index.set(core.last_index as i64);
        m.applied_index.set(core.state.applied_index as i64);
        m.records.set(core.state.records.len() as i64);
        m.topics.set(core.state.topics.len() as i64);
        m.term.set(core.term as i64);
    }

    /// Waits until `index` is committed (durable by the fsync policy).
    pub async fn wait_commit(&self, index: u64) -> Result<(), EngineError> {
        if *self.durable.borrow() >= index {
            return Ok(());
        }
        let mut rx = self.durable.clone();
        let timeout = self.cfg.ack_timeout;
        match tokio::time::timeout(timeout, rx.wait_for(|v| *v >= index)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(EngineError::AckTimeout { index, timeout }),
        }
    }

    /// Waits until this node has applied `token` (session consistency).
    pub async fn wait_applied(&self, token: u64) -> Result<(), EngineError> {
        let mut rx = self.applied.subscribe();
        let timeout = self.cfg.session_wait;
        match tokio::time::timeout(timeout, rx.wait_for(|v| *v >= token)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(EngineError::SessionTimeout { token, timeout }),
        }
    }

    /// Committed record changes after `after` whose key starts with `prefix`. `Err(())` when the
    /// watcher fell so far behind that changes were dropped from the buffer.
    pub fn events_after(&self, after: u64, prefix: &str) -> Result<(Vec<KvEvent>, u64), ()> {
        let commit = self.commit_index();
        let core = self.core();
        if after < core.events_evicted_upto {
            return Err(());
        }
        let start = core.events.partition_point(|e| e.index <= after);
        let events = core
            .events
            .range(start..)
            .take_while(|e| e.index <= commit)
            .filter(|e| e.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok((events, commit.min(core.last_index)))
    }

    /// Background duties of a primary: purge expired records and age-expired messages through the
    /// log, and take snapshots. Runs until the engine is dropped.
    pub async fn run_maintenance(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = now_ms();
            let (expired, topics) = {
                let core = self.core();
                (core.state.expired_keys(now, 1000), core.state.topics_to_trim(now))
            };
            if !expired.is_empty()
                && let Err(e) = self.propose(Op::Expire { keys: expired }, None).await
            {
                tracing::debug!(error = %e, "expiry purge deferred");
            }
            for topic in topics {
                let _ = self.propose(Op::Trim { topic }, None).await;
            }
            self.clone().maybe_snapshot().await;
        }
    }

    async fn maybe_snapshot(self: Arc<Self>) {
        let due = {
            let core = self.core();
            core.entries_since_snapshot >= self.cfg.snapshot_entries
                || core.bytes_since_snapshot >= self.cfg.snapshot_bytes
        };
        if due {
            if let Err(e) = self.snapshot_now().await {
                tracing::error!(error = %e, "snapshot failed");
            }
        }
    }

    /// Writes a snapshot of the current state once it is durable, then drops older snapshots and
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
        let state = {
            let mut core = self.core();
            core.entries_since_snapshot = 0;
            core.bytes_since_snapshot = 0;
            core.state.clone()
        };
        let index = state.applied_index;
        // The snapshot must never contain an entry the log could still lose.
        let mut durable = self.durable.clone();
        durable
            .wait_for(|v| *v >= index)
            .await
            .map_err(|_| std::io::Error::other("log writer stopped"))?;
        let dir: PathBuf = self.cfg.wal.dir.clone();
        let engine = self.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let started = std::time::Instant::now();
            snapshot::write(&dir, &state)?;
            snapshot::prune(&dir, 2)?;
            let removed = engine.wal.compact(index)?;
            engine.metrics.snapshots.inc();
            engine.metrics.snapshot_index.set(index as i64);
            tracing::info!(index, removed_segments = removed, took_ms = started.elapsed().as_millis() as u64, "snapshot written");
            Ok(index)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    pub fn snapshot_index(&self) -> u64 {
        self.metrics.snapshot_index.get() as u64
    }

    pub fn segment_count(&self) -> usize {
        self.wal.segment_count()
    }

    /// Flushes the log; called on shutdown.
    pub fn close(&self) {
        self.wal.close();
    }
}
