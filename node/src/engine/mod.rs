//! The engine: the driver around the replication core. It keeps the core, the state machine and
//! the in-memory ends of the log behind one short critical section, performs what the core's rules
//! decide (role records, truncations, snapshots: always without the core lock), and lets requests
//! wait for their ack level or consistency.
//!
//! On the primary a write is validated, applied to the in-memory state and queued to the WAL and
//! the replicas' shipping cache under the core lock (so log order = apply order), then waits
//! outside the lock until its ack level is met. Reads that observed state newer than the commit
//! index wait for it too, so nothing is returned that a failover or crash could take back (except
//! `eventual` reads, which promise nothing).

mod disk;
mod locked;
mod maintenance;
mod outbound;
mod recovery;
mod replica;
mod requests;
mod roles;
mod ship;
mod slots;
mod status;

pub use locked::{Cached, Core, CoreGuard, CoreView, assert_unlocked};
pub use outbound::{Outbound, Work};
pub use rcluster_client::types::Consistency;
pub use rcluster_proto::Role;

use crate::ack_waiters::AckWaiters;
use crate::metrics::Metrics;
use crate::replication::{AckLevel, Cluster, Members, Node, Progress, RoleError};
use crate::state::{ApplyError, OpResult};
use crate::wal::{Wal, WalConfig};
use rcluster_client::transport::{Transport, TransportConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, mpsc, watch};

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
    /// Certificates this node accepts from other nodes on `https://` member URLs (`--tls-ca`).
    pub trust: rcluster_client::tls::Trust,
    /// Idempotency keys older than this are forgotten (`--idempotency-ttl-ms`; primary only).
    pub idempotency_ttl_ms: u64,
    /// Idempotency keys beyond this many are forgotten, oldest first (`--idempotency-max-keys`).
    pub idempotency_max_keys: usize,
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

impl From<RoleError> for EngineError {
    fn from(e: RoleError) -> Self {
        match e {
            RoleError::StaleTerm { given, current } => EngineError::StaleTerm { given, current },
            RoleError::Conflict(why) => EngineError::Conflict(why),
        }
    }
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

pub struct Engine {
    pub cfg: EngineConfig,
    pub cluster: Cluster,
    /// The member list has at most one member: no replication at all. Mirrors the core's member
    /// list for the hot paths that must not take the core lock, and for the log writer (which
    /// gathers larger batches only in a node that replicates).
    standalone: Arc<AtomicBool>,
    core: RwLock<Core>,
    /// Held by every step that decides under the core lock and then does I/O without it (a role
    /// change and its record, an append and a truncation, a snapshot install): what was decided
    /// cannot change before it is performed. Taken before the core lock, never under it.
    steps: Mutex<()>,
    durable: Arc<watch::Sender<u64>>,
    applied: watch::Sender<u64>,
    /// Bumped whenever replication progress or the role changes; commit waiters re-check then.
    changed: watch::Sender<u64>,
    /// Writes waiting for their ack level, released by one task (`release_acks`) that watches
    /// `changed`, `durable` and `roles` for them.
    acks: AckWaiters,
    /// Bumped only when the term, the primary or the member list changes: what the cluster
    /// stream (`GET /v1/cluster/stream`) pushes to clients, without waking on every write.
    roles: watch::Sender<u64>,
    progress: Mutex<Progress>,
    pub metrics: Arc<Metrics>,
    recovery: recovery::Report,
    snapshot_running: Mutex<bool>,
    /// The HTTP client for the other members, shared by the shipper and request forwarding. The
    /// engine itself sends nothing.
    pub transport: Transport,
    /// Wakes the log shippers (new entries, or a read that needs a heartbeat round).
    poke: Notify,
    /// What the engine asks of the shipper (ship the log of a new term, say hello to a primary).
    outbound: mpsc::UnboundedSender<Outbound>,
    outbound_rx: Mutex<Option<mpsc::UnboundedReceiver<Outbound>>>,
    /// A planned switchover a client asked for (`POST /v1/switchover`), shown in the status until
    /// the failover coordinator carries it out and clears it. Not replicated: it is a request to
    /// the coordinator, not cluster state.
    pub switchover_request: Mutex<Option<(Option<String>, u64)>>,
    /// The committed state a slot range is being copied from (one migration at a time): every
    /// page of one copy comes from this one clone, so the copy is consistent at its index.
    export: Mutex<Option<slots::Export>>,
    /// The data folder's lock (`disk::lock_folder`), held for the engine's life.
    _folder: std::fs::File,
}

impl Engine {
    /// Recovers the state from disk and starts the log writer and the task that releases writes
    /// waiting for their ack level (so it must run inside a Tokio runtime). The role comes from
    /// the persisted role record; a former primary comes back fenced and waits to be told its role.
    pub fn open(
        cfg: EngineConfig,
        cluster: Cluster,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<Engine>> {
        let dir = cfg.wal.dir.clone();
        let folder = disk::lock_folder(&dir)?;
        disk::discard_partial_receptions(&dir)?;
        let loaded = recovery::load(&dir, cfg.accept_data_loss)?;
        let durable = Arc::new(watch::channel(0).0);
        let standalone = Arc::new(AtomicBool::new(true));
        let wal = Wal::start(
            cfg.wal.clone(),
            loaded.recovery.log_end,
            loaded.last_index,
            durable.clone(),
            metrics.clone(),
            standalone.clone(),
        )?;
        let record = disk::load_record(&dir)?;
        // The coordinator's member list outlives the one the node was started with.
        let members = Arc::new(
            record
                .members
                .clone()
                .unwrap_or_else(|| cluster.members.clone()),
        );
        standalone.store(members.len() <= 1, Ordering::Relaxed);
        let applied_term = loaded.state.applied_term;
        let log = (loaded.last_index, loaded.runs);
        let node = Node::start(&cluster.me, members, &record, log, applied_term);
        let core = Core::new(node, loaded.state, wal, loaded.replayed)
            .with_events(loaded.events, loaded.events_from);
        let (outbound, outbound_rx) = mpsc::unbounded_channel();
        let transport = Transport::new(TransportConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(30),
            max_idle_per_host: 4,
            trust: cfg.trust.clone(),
        });
        let engine = Arc::new(Engine {
            cfg,
            cluster,
            standalone,
            core: RwLock::new(core),
            steps: Mutex::new(()),
            durable,
            applied: watch::channel(loaded.last_index).0,
            changed: watch::channel(0).0,
            roles: watch::channel(0).0,
            acks: AckWaiters::default(),
            progress: Mutex::new(Progress::default()),
            metrics,
            recovery: loaded.report,
            snapshot_running: Mutex::new(false),
            transport,
            poke: Notify::new(),
            outbound,
            outbound_rx: Mutex::new(Some(outbound_rx)),
            switchover_request: Mutex::new(None),
            export: Mutex::new(None),
            _folder: folder,
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
        engine.update_gauges(&engine.core_view());
        tokio::spawn(requests::release_acks(Arc::downgrade(&engine)));
        Ok(engine)
    }

    /// The core lock. Hold it briefly and do no file I/O under it.
    pub fn core(&self) -> CoreGuard<'_> {
        CoreGuard::lock(&self.core)
    }

    /// The core lock for reading only, shared with other readers (as briefly, no file I/O).
    pub fn core_view(&self) -> CoreView<'_> {
        CoreView::read(&self.core)
    }

    /// Serializes decide-then-perform steps (see `steps`); taken before the core lock.
    fn steps(&self) -> std::sync::MutexGuard<'_, ()> {
        self.steps.lock().unwrap()
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
        self.core_view().node.members.clone()
    }

    /// This node's term.
    pub fn term(&self) -> u64 {
        self.core_view().node.term
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// The index reached by `ack` (primary); a replica's known commit; a standalone's durable index.
    pub fn commit_for(&self, ack: AckLevel) -> u64 {
        let own = self.durable_index();
        // The flag changes under the core lock, not this one: looked at before taking it, so a
        // standalone node's reads and writes take no lock shared by every request here.
        if self.standalone() {
            return own;
        }
        let p = self.progress.lock().unwrap();
        p.commit_for(ack, own)
    }

    /// The quorum commit index as this node knows it.
    pub fn commit_index(&self) -> u64 {
        let (leads, known) = {
            let core = self.core_view();
            (core.leads(), core.node.known_commit)
        };
        if leads {
            self.commit_for(AckLevel::Quorum)
        } else {
            known
        }
    }

    /// Makes `index` the applied position. Those who wait on it are told; with nobody
    /// subscribed the value changes quietly: tokio's watch would otherwise lock its eight
    /// notification shards on every write (about 560 of a durable put's 30,000 instructions,
    /// callgrind). The count is read under the value's write lock, and a receiver reads the
    /// value under the read lock after it subscribed: one that read before this saw the count,
    /// one that reads after sees the value.
    fn publish_applied(&self, index: u64) {
        self.applied.send_if_modified(|v| {
            *v = index;
            self.applied.receiver_count() > 0
        });
    }

    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    pub fn changed_watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Changes when the term, the primary or the member list may have changed.
    pub fn role_watch(&self) -> watch::Receiver<u64> {
        self.roles.subscribe()
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

    /// `wait_committed` for what was read from the state at `Core::applied_entry`: also `false` when
    /// the log no longer holds that entry (this node discarded it as a divergent suffix, so what
    /// was read from it must never be sent).
    pub async fn wait_read_committed(&self, (index, term): (u64, Option<u64>)) -> bool {
        if !self.wait_committed(index).await {
            return false;
        }
        // `None`: compacted into a snapshot, which holds only committed entries.
        self.core_view()
            .term_at(index)
            .is_none_or(|t| Some(t) == term)
    }

    /// The primary's URL when this node is not the primary but knows who is.
    pub fn primary_if_elsewhere(&self) -> Option<String> {
        Engine::primary_elsewhere(&self.core_view())
    }

    /// `primary_if_elsewhere`, for a caller that holds the core lock already.
    pub fn primary_elsewhere(core: &Core) -> Option<String> {
        if core.leads() || core.node.role == Role::Fenced {
            return None;
        }
        primary_url(&core.node)
    }

    fn update_gauges(&self, core: &Core) {
        let m = &self.metrics;
        m.last_index.set(core.node.last_index as i64);
        m.applied_index.set(core.state.applied_index as i64);
        m.records.set(core.state.records.len() as i64);
        m.topics.set(core.state.topics.len() as i64);
        m.term.set(core.node.term as i64);
    }

    /// Records a switchover request on the primary (`to`: a replica, or the most advanced one).
    pub fn request_switchover(&self, to: Option<String>) -> Result<(), EngineError> {
        let members = {
            let core = self.core_view();
            if core.node.role != Role::Primary {
                let primary = primary_url(&core.node);
                return Err(EngineError::NotPrimary { primary });
            }
            core.node.members.clone()
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
        let wal = self.core_view().wal.clone();
        wal.close();
    }
}

/// The URL of the primary `node` knows, if it is a member.
fn primary_url(node: &Node) -> Option<String> {
    node.primary
        .as_deref()
        .and_then(|p| node.members.get(p))
        .cloned()
}
