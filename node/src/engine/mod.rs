//! The engine: the state machine, the log and the node's role behind one short critical section.
//!
//! On the primary a write is validated, applied to the in-memory state and queued to the WAL and
//! the replicas' shipping cache under the core lock (so log order = apply order), then waits
//! outside the lock until its ack level is met. Reads that observed state newer than the commit
//! index wait for it too, so nothing is returned that a failover or crash could take back (except
//! `eventual` reads, which promise nothing).

mod maintenance;
mod recovery;
mod replica;
mod roles;
mod status;

pub use roles::Role;

use crate::log::{self, Entry, IdemTag, Op};
use crate::metrics::Metrics;
use crate::replication::{AckLevel, Cluster, Members, TermRuns, commit};
use crate::state::{ApplyError, KvEvent, OpResult, State};
use crate::wal::{Wal, WalConfig};
use bytes::Bytes;
use rcluster_client::transport::Transport;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, watch};

/// Record changes kept for watchers that fall behind briefly.
const EVENT_BUFFER: usize = 65_536;
/// Encoded entries kept in memory for shipping to replicas without reading the WAL files.
const CACHE_BYTES: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub wal: WalConfig,
    /// Take a snapshot after this many entries...
    pub snapshot_entries: u64,
    /// ...or after this many WAL bytes since the last one.
    pub snapshot_bytes: u64,
    /// How long a write waits for its acknowledgement before answering 503 ack_timeout.
    pub ack_timeout: Duration,
    /// How long a session read waits for this node to reach the client's token.
    pub session_wait: Duration,
    /// Recovery may cut damaged data even when intact entries follow it (`--accept-data-loss`).
    pub accept_data_loss: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("this idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// Outcome unknown: the entry is in the log and may still commit, or may not.
    #[error(
        "outcome unknown: entry {index} is in the log but did not reach ack level {ack} within {timeout:?}; the log decides whether it is applied (retry with the same Idempotency-Key)"
    )]
    AckTimeout {
        index: u64,
        ack: &'static str,
        timeout: Duration,
    },
    /// Outcome unknown: the entry is in this node's log, but the node stopped leading before the
    /// entry reached its ack level; whether it is applied depends on the new primary's log.
    #[error(
        "outcome unknown: entry {index} is in this node's log, but the node stopped leading before the entry reached its ack level; the new primary's log decides whether it is applied (retry with the same Idempotency-Key)"
    )]
    OutcomeUnknown { index: u64, primary: Option<String> },
    #[error("this node has not reached log position {token} within {timeout:?}")]
    SessionTimeout { token: u64, timeout: Duration },
    /// Nothing was applied: the request never reached the log.
    #[error("this node is not the primary")]
    NotPrimary { primary: Option<String> },
    #[error("this node has not caught up with the primary since it started")]
    NotSynced { primary: Option<String> },
    #[error("entry {index} was discarded: a new primary's log replaced it")]
    Discarded { index: u64 },
    #[error("could not confirm with a quorum that this node is still the primary")]
    Unconfirmed,
    #[error("term {given} is older than this node's term {current}")]
    StaleTerm { given: u64, current: u64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Io(String),
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

/// An encoded entry kept for shipping.
#[derive(Clone)]
pub struct Cached {
    pub index: u64,
    pub term: u64,
    pub ts_ms: u64,
    pub payload: Bytes,
}

pub struct Core {
    pub state: State,
    pub term: u64,
    pub role: Role,
    pub primary: Option<String>,
    /// The member list in force (this node included); changes only with promote and follow.
    pub members: Arc<Members>,
    pub last_index: u64,
    pub runs: TermRuns,
    /// Highest index this node knows to be committed (computed as primary, learned as replica).
    pub known_commit: u64,
    /// Replica: it has matched its log with the current primary since it started following.
    pub synced: bool,
    pub primary_last_index: u64,
    pub last_contact: Option<Instant>,
    pub discarded_total: u64,
    /// The term this node last led. A fenced former primary keeps shipping its log under that term
    /// (refusing new writes), so a planned switchover's target can fetch every acknowledged entry.
    pub led_term: Option<u64>,
    wal: Wal,
    cache: VecDeque<Cached>,
    cache_bytes: usize,
    last_ts: u64,
    events: VecDeque<KvEvent>,
    /// Highest index of an event that fell out of `events`; watchers behind it must resync.
    events_evicted_upto: u64,
    entries_since_snapshot: u64,
    bytes_since_snapshot: u64,
}

impl Core {
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.runs.term_at(index, self.last_index)
    }

    pub fn leads(&self) -> bool {
        matches!(self.role, Role::Primary | Role::Standalone)
    }

    fn append(&mut self, e: &Entry, payload: Vec<u8>, events: Vec<KvEvent>) {
        self.wal.append(e.index, &payload);
        self.runs.push(e.index, e.term);
        self.last_index = e.index;
        self.entries_since_snapshot += 1;
        self.bytes_since_snapshot += payload.len() as u64;
        self.cache_bytes += payload.len();
        self.cache.push_back(Cached {
            index: e.index,
            term: e.term,
            ts_ms: e.ts_ms,
            payload: payload.into(),
        });
        while self.cache_bytes > CACHE_BYTES
            && let Some(old) = self.cache.pop_front()
        {
            self.cache_bytes -= old.payload.len();
        }
        for ev in events {
            if self.events.len() == EVENT_BUFFER
                && let Some(old) = self.events.pop_front()
            {
                self.events_evicted_upto = old.index;
            }
            self.events.push_back(ev);
        }
    }

    /// Cached entries from `from`, or `None` when `from` is older than the cache.
    pub fn cached_from(&self, from: u64, max: usize, max_bytes: usize) -> Option<Vec<Cached>> {
        let first = self.cache.front().map_or(self.last_index + 1, |c| c.index);
        if from < first && from <= self.last_index {
            return None;
        }
        let skip = from.saturating_sub(first) as usize;
        let mut bytes = 0;
        Some(
            self.cache
                .iter()
                .skip(skip)
                .take(max)
                .take_while(|c| {
                    bytes += c.payload.len();
                    bytes <= max_bytes || bytes == c.payload.len()
                })
                .cloned()
                .collect(),
        )
    }

    pub fn entry_ts(&self, index: u64) -> Option<u64> {
        let first = self.cache.front()?.index;
        self.cache
            .get(index.checked_sub(first)? as usize)
            .map(|c| c.ts_ms)
    }
}

/// What the primary knows about one replica.
#[derive(Debug, Clone, Default)]
pub struct PeerProgress {
    pub durable: u64,
    pub applied: u64,
    pub last_index: u64,
    /// When the newest request that got a successful answer was sent: proves this replica still
    /// followed us at that moment (linearizable reads, leases).
    pub acked_sent_at: Option<Instant>,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Progress {
    pub term: u64,
    pub term_start: u64,
    pub peers: BTreeMap<String, PeerProgress>,
}

pub struct Engine {
    pub cfg: EngineConfig,
    pub cluster: Cluster,
    /// The member list has at most one member: no replication at all. Mirrors `core.members`
    /// for the hot paths that must not take the core lock.
    standalone: AtomicBool,
    core: Mutex<Core>,
    durable: Arc<watch::Sender<u64>>,
    applied: watch::Sender<u64>,
    /// Bumped whenever replication progress or the role changes; commit waiters re-check then.
    changed: watch::Sender<u64>,
    pub(crate) progress: Mutex<Progress>,
    pub metrics: Arc<Metrics>,
    recovery: recovery::Report,
    snapshot_running: Mutex<bool>,
    pub(crate) transport: Transport,
    /// Wakes the log shippers (new entries, or a read that needs a heartbeat round).
    pub(crate) poke: Notify,
    /// A planned switchover a client asked for (`POST /v1/switchover`), shown in the status until
    /// the failover coordinator carries it out and clears it. Not replicated: it is a request to
    /// the coordinator, not cluster state.
    pub switchover_request: Mutex<Option<(Option<String>, u64)>>,
}

impl Engine {
    /// Recovers the state from disk and starts the log writer. The role comes from the persisted
    /// role file; a former primary comes back fenced and waits to be told its role.
    pub fn open(
        cfg: EngineConfig,
        cluster: Cluster,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<Engine>> {
        let dir = cfg.wal.dir.clone();
        let loaded = recovery::load(&dir, cfg.accept_data_loss)?;
        let durable = Arc::new(watch::channel(0).0);
        let wal = Wal::start(
            cfg.wal.clone(),
            loaded.recovery.log_end,
            loaded.last_index,
            durable.clone(),
            metrics.clone(),
        )?;
        let meta = roles::load_meta(&dir)?;
        // The coordinator's member list outlives the one the node was started with.
        let members = Arc::new(
            meta.members
                .clone()
                .unwrap_or_else(|| cluster.members.clone()),
        );
        let (role, term, primary) =
            roles::initial_role(&cluster.me, &members, &meta, loaded.state.applied_term);
        let standalone = AtomicBool::new(members.len() <= 1);
        let core = Core {
            term,
            role,
            primary,
            members,
            known_commit: meta.known_commit.min(loaded.last_index),
            synced: false,
            primary_last_index: 0,
            last_contact: None,
            discarded_total: 0,
            led_term: None,
            runs: loaded.runs,
            last_ts: 0,
            last_index: loaded.last_index,
            state: loaded.state,
            wal,
            cache: VecDeque::new(),
            cache_bytes: 0,
            events: loaded.events,
            events_evicted_upto: loaded.events_from,
            entries_since_snapshot: loaded.replayed,
            bytes_since_snapshot: 0,
        };
        let transport = Transport::new(rcluster_client::transport::TransportConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(30),
            max_idle_per_host: 4,
        });
        let engine = Arc::new(Engine {
            cfg,
            cluster,
            standalone,
            core: Mutex::new(core),
            durable,
            applied: watch::channel(loaded.last_index).0,
            changed: watch::channel(0).0,
            progress: Mutex::new(Progress::default()),
            metrics,
            recovery: loaded.report,
            snapshot_running: Mutex::new(false),
            transport,
            poke: Notify::new(),
            switchover_request: Mutex::new(None),
        });
        engine
            .metrics
            .snapshot_index
            .set(engine.newest_snapshot_index() as i64);
        let report = &engine.recovery;
        let cut = report.truncation.as_ref().map_or(0, |t| t.bytes_removed);
        engine.metrics.recovery_cut_bytes.set(cut as i64);
        engine
            .metrics
            .recovery_data_loss
            .set(i64::from(report.data_loss));
        engine.update_gauges(&engine.core());
        Ok(engine)
    }

    pub fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap()
    }

    /// What recovery repaired when this node started.
    pub fn recovery_report(&self) -> &recovery::Report {
        &self.recovery
    }

    pub fn durable_index(&self) -> u64 {
        *self.durable.borrow()
    }

    /// A single-member cluster: commits on local durability, replicates nothing.
    pub fn standalone(&self) -> bool {
        self.standalone.load(Ordering::Relaxed)
    }

    pub fn members(&self) -> Arc<Members> {
        self.core().members.clone()
    }

    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// The index reached by `ack` (primary); a replica's known commit; a standalone's durable index.
    pub fn commit_for(&self, ack: AckLevel) -> u64 {
        let own = self.durable_index();
        let p = self.progress.lock().unwrap();
        if self.standalone() {
            return own;
        }
        let others: Vec<u64> = p.peers.values().map(|x| x.durable).collect();
        commit::commit_index(ack, own, &others, p.term_start)
    }

    /// The quorum commit index as this node knows it.
    pub fn commit_index(&self) -> u64 {
        let (leads, known) = {
            let core = self.core();
            (core.leads(), core.known_commit)
        };
        if leads {
            self.commit_for(AckLevel::Quorum)
        } else {
            known
        }
    }

    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    pub fn changed_watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Returns when the commit index, the durable index or the role may have changed.
    pub async fn progress_changed(
        &self,
        changed: &mut watch::Receiver<u64>,
        durable: &mut watch::Receiver<u64>,
    ) -> bool {
        tokio::select! {
            r = changed.changed() => r.is_ok(),
            r = durable.changed() => r.is_ok(),
        }
    }

    pub fn durable_watch(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Waits (bounded by the ack timeout) until `index` is committed as this node knows it.
    pub async fn wait_committed(&self, index: u64) -> bool {
        let deadline = tokio::time::Instant::now() + self.cfg.ack_timeout;
        let (mut changed, mut durable) = (self.changed_watch(), self.durable_watch());
        loop {
            changed.borrow_and_update();
            durable.borrow_and_update();
            if self.commit_index() >= index {
                return true;
            }
            tokio::select! {
                _ = self.progress_changed(&mut changed, &mut durable) => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// The primary's URL when this node is not the primary but knows who is.
    pub fn primary_if_elsewhere(&self) -> Option<String> {
        let core = self.core();
        if core.leads() || core.role == Role::Fenced {
            return None;
        }
        self.primary_url(&core)
    }

    fn primary_url(&self, core: &Core) -> Option<String> {
        core.primary
            .as_deref()
            .and_then(|p| core.members.get(p))
            .cloned()
    }

    /// Appends `op` to the log and returns once `ack` is met.
    pub async fn propose(
        &self,
        op: Op,
        idem: Option<IdemTag>,
        ack: AckLevel,
    ) -> Result<Proposed, EngineError> {
        let (outcome, lead_term) = {
            let mut core = self.core();
            if !core.leads() {
                let primary = self.primary_url(&core);
                return Err(EngineError::NotPrimary { primary });
            }
            let term = core.term;
            (self.propose_locked(&mut core, op, idem), term)
        };
        if !self.standalone() {
            self.poke.notify_waiters();
        }
        match outcome {
            Ok((p, term, in_log)) => {
                let waited = self.wait_ack(p.index, term, ack, lead_term).await;
                match waited {
                    Err(EngineError::NotPrimary { primary }) if in_log => {
                        Err(self.fate_after_stepping_down(p.index, term, primary))
                    }
                    Err(e) => Err(e),
                    Ok(()) => Ok(p),
                }
            }
            Err((err, observed)) => {
                // A refusal is based on state that may not be committed yet; wait so a client is
                // never refused because of a write that a failover or crash could still take back.
                let term = self.core().term_at(observed).unwrap_or(0);
                self.wait_ack(observed, term, ack, lead_term).await?;
                Err(err)
            }
        }
    }

    /// What to answer for a write whose entry (`index`, `term`) is in the log when this node
    /// stops leading: discarded when a newer term already replaced it, else unknown. Never
    /// `NotPrimary`, which tells a client that nothing was applied.
    fn fate_after_stepping_down(
        &self,
        index: u64,
        term: u64,
        primary: Option<String>,
    ) -> EngineError {
        match self.core().term_at(index) {
            Some(t) if t != term => EngineError::Discarded { index },
            _ => EngineError::OutcomeUnknown { index, primary },
        }
    }

    /// Applies and logs `op`. On success returns the answer, the term of the entry it waits for
    /// and whether that entry holds the request (a new entry, or the first one of a retried
    /// idempotency key) rather than merely the state the answer observed.
    #[allow(clippy::type_complexity)]
    fn propose_locked(
        &self,
        core: &mut Core,
        op: Op,
        idem: Option<IdemTag>,
    ) -> Result<(Proposed, u64, bool), (EngineError, u64)> {
        let observed = core.state.applied_index;
        if let Some(tag) = &idem
            && let Some(rec) = core.state.idempotent_result(&tag.key)
        {
            if rec.fingerprint != tag.fingerprint {
                return Err((EngineError::IdempotencyKeyReused, observed));
            }
            let p = Proposed {
                result: rec.result.clone(),
                index: rec.index,
            };
            let term = core.term_at(rec.index).unwrap_or(0);
            return Ok((p, term, true));
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
            let term = core.term_at(observed).unwrap_or(0);
            let p = Proposed {
                result: applied.result,
                index: observed,
            };
            return Ok((p, term, false));
        }
        core.state.finish(&e, &applied.result);
        core.last_ts = ts;
        core.append(&e, log::encode(&e), applied.events);
        self.update_gauges(core);
        self.applied.send_replace(e.index);
        Ok((
            Proposed {
                result: applied.result,
                index: e.index,
            },
            e.term,
            true,
        ))
    }

    fn update_gauges(&self, core: &Core) {
        let m = &self.metrics;
        m.last_index.set(core.last_index as i64);
        m.applied_index.set(core.state.applied_index as i64);
        m.records.set(core.state.records.len() as i64);
        m.topics.set(core.state.topics.len() as i64);
        m.term.set(core.term as i64);
    }

    /// Waits until entry `index` of `term` reaches `ack`, while this node leads in `lead_term`.
    /// `NotPrimary` when it stops leading first: callers whose request is in the log must not
    /// pass that on as it is (see `fate_after_stepping_down`).
    pub async fn wait_ack(
        &self,
        index: u64,
        term: u64,
        ack: AckLevel,
        lead_term: u64,
    ) -> Result<(), EngineError> {
        let deadline = tokio::time::Instant::now() + self.cfg.ack_timeout;
        let mut changed = self.changed.subscribe();
        let mut durable = self.durable.subscribe();
        loop {
            changed.borrow_and_update();
            durable.borrow_and_update();
            if self.commit_for(ack) >= index {
                let core = self.core();
                // Compacted entries were committed; otherwise the entry must still be ours.
                return match core.term_at(index) {
                    Some(t) if t != term => Err(EngineError::Discarded { index }),
                    _ => Ok(()),
                };
            }
            {
                let core = self.core();
                if !core.leads() || core.term != lead_term {
                    let primary = self.primary_url(&core);
                    return Err(EngineError::NotPrimary { primary });
                }
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = durable.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(EngineError::AckTimeout { index, ack: ack.as_str(), timeout: self.cfg.ack_timeout });
                }
            }
        }
    }

    /// Before a read: a linearizable read needs this node to lead and (in a cluster) a quorum to
    /// confirm it still does; a session read waits for the client's token; an eventual read needs
    /// a node that is not serving a stale log.
    pub async fn before_read(&self, c: Consistency, token: u64) -> Result<(), EngineError> {
        let (role, synced, primary) = {
            let core = self.core();
            (core.role, core.synced, self.primary_url(&core))
        };
        match c {
            Consistency::Linearizable => match role {
                Role::Standalone => Ok(()),
                Role::Primary => self.confirm_primary().await,
                _ => Err(EngineError::NotPrimary { primary }),
            },
            Consistency::Session | Consistency::Eventual => {
                if matches!(role, Role::Fenced) || (role == Role::Replica && !synced) {
                    return Err(EngineError::NotSynced { primary });
                }
                if c == Consistency::Session {
                    self.wait_applied(token).await?;
                }
                Ok(())
            }
        }
    }

    /// After a read that saw log position `seen`: a linearizable read answers only once that
    /// position is committed at quorum.
    pub async fn after_read(&self, c: Consistency, seen: u64) -> Result<(), EngineError> {
        if c != Consistency::Linearizable {
            return Ok(());
        }
        let (term, lead_term) = {
            let core = self.core();
            (core.term_at(seen).unwrap_or(0), core.term)
        };
        self.wait_ack(seen, term, AckLevel::Quorum, lead_term).await
    }

    /// A heartbeat round: returns once a quorum answered a request sent after this call began.
    async fn confirm_primary(&self) -> Result<(), EngineError> {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + self.cfg.ack_timeout;
        let need = commit::quorum(self.members().len());
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let confirmed = 1 + self
                .progress
                .lock()
                .unwrap()
                .peers
                .values()
                .filter(|p| p.acked_sent_at.is_some_and(|t| t >= start))
                .count();
            if confirmed >= need {
                return Ok(());
            }
            if !self.core().leads() {
                return Err(EngineError::NotPrimary { primary: None });
            }
            self.poke.notify_waiters();
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Err(EngineError::Unconfirmed),
            }
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

    /// Committed record changes after `after` whose key starts with one of `prefixes` (any key when
    /// there are none), and the position they reach. `None` when changes after `after` are no longer
    /// kept: they fell out of the buffer, or this node started (or rebuilt its log) after them.
    pub fn events_after(&self, after: u64, prefixes: &[String]) -> Option<(Vec<KvEvent>, u64)> {
        let commit = self.commit_index();
        let core = self.core();
        if after < core.events_evicted_upto {
            return None;
        }
        let start = core.events.partition_point(|e| e.index <= after);
        let events = core
            .events
            .range(start..)
            .take_while(|e| e.index <= commit)
            .filter(|e| prefixes.is_empty() || prefixes.iter().any(|p| e.key.starts_with(p)))
            .cloned()
            .collect();
        Some((events, commit.min(core.last_index).max(after)))
    }

    /// The oldest position a watch can resume from here: changes up to it are not kept.
    pub fn history_start(&self) -> u64 {
        self.core().events_evicted_upto
    }

    /// Records a switchover request on the primary (`to`: a replica, or the most advanced one).
    pub fn request_switchover(&self, to: Option<String>) -> Result<(), EngineError> {
        let members = {
            let core = self.core();
            if core.role != Role::Primary {
                let primary = self.primary_url(&core);
                return Err(EngineError::NotPrimary { primary });
            }
            core.members.clone()
        };
        if let Some(t) = &to
            && (t == &self.cluster.me || !members.contains_key(t))
        {
            return Err(EngineError::Conflict(format!(
                "{t} is not a replica of this cluster"
            )));
        }
        *self.switchover_request.lock().unwrap() = Some((to, now_ms()));
        Ok(())
    }

    /// Flushes the log; called on shutdown.
    pub fn close(&self) {
        self.core().wal.close();
    }
}

pub use rcluster_client::types::Consistency;
