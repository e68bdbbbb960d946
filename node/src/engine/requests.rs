//! A client's requests: a write is applied and queued under the core lock, then waits for its
//! ack level outside it; a read waits for what its consistency level promises.

use super::{Consistency, Core, Engine, EngineError, Proposed, Role, now_ms, primary_url};
use crate::log::{Entry, IdemTag, Op};
use crate::replication::{AckLevel, commit};
use crate::state::KvEvent;
use std::sync::Weak;
use std::time::Instant;

impl Engine {
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
                let primary = primary_url(&core.node);
                return Err(EngineError::NotPrimary { primary });
            }
            let term = core.node.term;
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
                let term = self.core_view().node.term_at(observed).unwrap_or(0);
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
        match self.core_view().node.term_at(index) {
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
            if rec.fingerprint() != tag.fingerprint {
                return Err((EngineError::IdempotencyKeyReused, observed));
            }
            // Never fails: the block holds what `Idem::new` encoded.
            let Some(result) = rec.result() else {
                let why = format!(
                    "the stored result of idempotency key {:?} is unreadable",
                    tag.key
                );
                return Err((EngineError::Io(why), observed));
            };
            let p = Proposed {
                result,
                index: rec.index(),
            };
            let term = core.node.term_at(rec.index()).unwrap_or(0);
            return Ok((p, term, true));
        }
        let ts = now_ms().max(core.last_ts);
        let e = Entry {
            term: core.node.term,
            index: core.node.last_index + 1,
            ts_ms: ts,
            idem,
            op,
        };
        let applied = core
            .state
            .apply_op(&e)
            .map_err(|err| (err.into(), observed))?;
        if !applied.changed {
            let term = core.node.term_at(observed).unwrap_or(0);
            let p = Proposed {
                result: applied.result,
                index: observed,
            };
            return Ok((p, term, false));
        }
        core.state.finish(&e, &applied.result);
        core.last_ts = ts;
        core.append_new(&e, applied.events);
        self.update_gauges(core);
        self.publish_applied(e.index);
        Ok((
            Proposed {
                result: applied.result,
                index: e.index,
            },
            e.term,
            true,
        ))
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
        // Already there (a read's position, mostly): nothing to register, no release to miss.
        if let Some(done) = self.acked(index, term, ack) {
            return done;
        }
        let deadline = tokio::time::Instant::now() + self.cfg.ack_timeout;
        loop {
            // Registered before the checks, so a release between them is not missed.
            let released = self.acks.wait(ack, index, deadline);
            if let Some(done) = self.acked(index, term, ack) {
                return done;
            }
            {
                let core = self.core_view();
                if !core.leads() || core.node.term != lead_term {
                    let primary = primary_url(&core.node);
                    return Err(EngineError::NotPrimary { primary });
                }
            }
            // Released when the entry reaches `ack`, when the role or term changes, or soon
            // after the deadline (`release_acks`). No look at the clock before: the deadline was
            // set just before the first wait, and every later wait follows the look below.
            released.await;
            // Looked at before waiting again: a release mostly means it is there.
            if let Some(done) = self.acked(index, term, ack) {
                return done;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::AckTimeout {
                    index,
                    ack: ack.as_str(),
                    timeout: self.cfg.ack_timeout,
                });
            }
        }
    }

    /// The outcome of a wait for `index` (written in `term`) at `ack`, once it has reached it.
    fn acked(&self, index: u64, term: u64, ack: AckLevel) -> Option<Result<(), EngineError>> {
        if self.commit_for(ack) < index {
            return None;
        }
        let core = self.core_view();
        // Compacted entries were committed; otherwise the entry must still be ours.
        Some(match core.node.term_at(index) {
            Some(t) if t != term => Err(EngineError::Discarded { index }),
            _ => Ok(()),
        })
    }

    /// Before a read: a linearizable read needs this node to lead and (in a cluster) a quorum to
    /// confirm it still does; a session read waits for the client's token; an eventual read needs
    /// a node that is not serving a stale log.
    pub async fn before_read(&self, c: Consistency, token: u64) -> Result<(), EngineError> {
        let (role, synced) = {
            let core = self.core_view();
            (core.node.role, core.node.synced)
        };
        // Only a refusal names the primary: a copy of its URL is not made for every read.
        let primary = || primary_url(&self.core_view().node);
        match c {
            Consistency::Linearizable => match role {
                Role::Standalone => Ok(()),
                Role::Primary => self.confirm_primary().await,
                _ => Err(EngineError::NotPrimary { primary: primary() }),
            },
            Consistency::Session | Consistency::Eventual => {
                if matches!(role, Role::Fenced) || (role == Role::Replica && !synced) {
                    return Err(EngineError::NotSynced { primary: primary() });
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
        // Mostly committed already: the entry's term and the commit read under one hold of the
        // lock, which no truncation can cross, settle it without the second look `acked` takes.
        // Each hold is two atomic writes to a line every request thread writes.
        let (term, lead_term) = {
            let core = self.core_view();
            let term = core.node.term_at(seen).unwrap_or(0);
            if self.commit_for(AckLevel::Quorum) >= seen {
                return Ok(());
            }
            (term, core.node.term)
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
            let confirmed = 1 + self.progress.lock().unwrap().confirmed_since(start);
            if confirmed >= need {
                return Ok(());
            }
            if !self.core_view().leads() {
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
        let core = self.core_view();
        let events = core.events_between(after, commit, prefixes)?;
        Some((events, commit.min(core.node.last_index).max(after)))
    }

    /// The oldest position a watch can resume from here: changes up to it are not kept.
    pub fn history_start(&self) -> u64 {
        self.core_view().history_start()
    }
}

/// Releases the writes waiting in `wait_ack` (see `AckWaiters`): after every change of the
/// replication progress, the durable index or the roles, each level that has waiters is woken up
/// to its commit index; a change of the role or the term wakes them all to look again; and the
/// waiters whose deadline passed are woken to time out. Ends with the engine.
pub(super) async fn release_acks(engine: Weak<Engine>) {
    let Some((mut changed, mut durable, mut roles, rearm)) = engine.upgrade().map(|e| {
        (
            e.changed.subscribe(),
            e.durable.subscribe(),
            e.roles.subscribe(),
            e.acks.rearm(),
        )
    }) else {
        return;
    };
    let mut lead = None;
    // Sleeps until the earliest deadline of a waiter, to wake those whose time is up; reset
    // only when that deadline moves (about once per ack timeout on a busy node).
    let mut expiry = std::pin::pin!(tokio::time::sleep_until(tokio::time::Instant::now()));
    let mut armed = None;
    loop {
        {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            // Marked seen before reading the positions: a change after this wakes us again.
            changed.borrow_and_update();
            durable.borrow_and_update();
            roles.borrow_and_update();
            let now = {
                let core = engine.core_view();
                (core.leads(), core.node.term)
            };
            if lead.replace(now) != Some(now) {
                engine.acks.release_all();
            }
            for level in engine.acks.levels() {
                engine.acks.release(level, engine.commit_for(level));
            }
            let next = engine.acks.expire(tokio::time::Instant::now());
            if next != armed {
                if let Some(at) = next {
                    expiry.as_mut().reset(at);
                }
                armed = next;
            }
        }
        let alive = tokio::select! {
            r = changed.changed() => r.is_ok(),
            r = durable.changed() => r.is_ok(),
            r = roles.changed() => r.is_ok(),
            _ = rearm.notified() => true,
            _ = &mut expiry, if armed.is_some() => true,
        };
        if !alive {
            return;
        }
    }
}
