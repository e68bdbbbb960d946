//! Performing role changes: the coordinator's fence, promote and follow, and stepping down on a
//! newer term. The replication core decides under the core lock; the role record is written
//! without it; then the core enters the change, and only then does the node act in the new term
//! (write the term's first entry, ship, answer the command).

use super::{Engine, EngineError, Outbound, disk, now_ms};
use crate::log::{Entry, Op};
use crate::replication::{Members, Progress, RoleChange};
use std::sync::atomic::Ordering;

impl Engine {
    /// Adopt `term`, stop leading or following, refuse older terms from now on.
    pub fn fence(&self, term: u64) -> Result<(), EngineError> {
        let _steps = self.steps();
        let change = self.core().node.fence(term)?;
        self.change_role(change)
    }

    /// Become primary for `term`: write the term's first entry and start shipping the log to
    /// every other member (`members`, when given, is the member list from this term on).
    pub fn promote(&self, term: u64, members: Option<Members>) -> Result<(), EngineError> {
        let _steps = self.steps();
        let Some(change) = self.core().node.promote(term, members)? else {
            return Ok(());
        };
        self.change_role(change)
    }

    /// Become a replica of `primary` in `term` (`members`, when given, is the member list from
    /// this term on); the primary's log shipper reconnects at once.
    pub fn follow(
        &self,
        term: u64,
        primary: &str,
        members: Option<Members>,
    ) -> Result<(), EngineError> {
        let _steps = self.steps();
        let Some(change) = self.core().node.follow(term, primary, members)? else {
            return Ok(());
        };
        self.change_role(change)
    }

    /// A replica answered this node with a newer term.
    pub fn step_down(&self, term: u64) {
        let _steps = self.steps();
        let Some(change) = self.core().node.step_down(term) else {
            return;
        };
        if let Err(e) = self.change_role(change) {
            tracing::error!(error = %e, "could not persist the role change");
        }
    }

    /// Persists the commit index now and then: it guards a replica against discarding committed
    /// entries after a restart.
    pub(super) fn persist_known_commit(&self) {
        let _steps = self.steps();
        let record = self.core().node.record();
        if let Err(e) = disk::save_record(&self.cfg.wal.dir, &record) {
            tracing::warn!(error = %e, "could not persist the commit index");
        }
    }

    /// Writes the change's role record (when it changed), then enters it and does what entering
    /// asks. The caller holds the steps lock from the decision on.
    pub(super) fn change_role(&self, change: RoleChange) -> Result<(), EngineError> {
        if change.persist {
            disk::save_record(&self.cfg.wal.dir, &change.record)
                .map_err(|e| EngineError::Io(e.to_string()))?;
        }
        let mut core = self.core();
        let old_term = core.node.term;
        let entered = core.node.enter(change);
        let (term, role) = (core.node.term, core.node.role);
        if entered.stepped_down {
            tracing::warn!(old_term, new_term = term, "stepping down as primary");
        }
        if entered.members_changed {
            let members = &core.node.members;
            tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "member list changed");
            self.standalone.store(members.len() <= 1, Ordering::Relaxed);
        }
        if entered.changed {
            self.metrics.set_role(role.as_str());
            self.metrics.term.set(term as i64);
            tracing::info!(term, role = role.as_str(), primary = ?core.node.primary, "role changed");
        }
        if let Some(peers) = entered.lead {
            // The term's first entry: entries of older terms count as committed only with it.
            let noop = Entry {
                term,
                index: core.node.last_index + 1,
                ts_ms: now_ms().max(core.last_ts),
                idem: None,
                op: Op::Noop,
            };
            core.state
                .apply_logged(&noop)
                .map_err(|e| EngineError::Io(e.to_string()))?;
            core.append_new(&noop, Vec::new());
            let names = peers.iter().map(|(n, _)| n.clone());
            *self.progress.lock().unwrap() = Progress::new(term, noop.index, names);
            self.update_gauges(&core);
            self.publish_applied(noop.index);
            drop(core);
            let _ = self.outbound.send(Outbound::Ship { term, peers });
            tracing::info!(term, first_index = noop.index, "promoted to primary");
        } else {
            drop(core);
        }
        if let Some(url) = entered.hello {
            let _ = self.outbound.send(Outbound::Hello { url, term });
        }
        if entered.wake {
            self.bump();
        }
        if entered.changed || entered.members_changed {
            self.roles.send_modify(|v| *v += 1);
        }
        Ok(())
    }
}
