//! Roles and terms: fence, promote and follow commands from the failover coordinator, stepping
//! down on a newer term, and the role file that makes the term survive restarts.

use super::{Core, Engine, EngineError, Progress};
use crate::log::{self, Entry, Op};
use crate::replication::{Members, sender};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The wire contract's roles; a node is never `Unknown` itself (that is for readers of a newer
/// node's report).
pub use rcluster_proto::Role;

/// Persisted in `role.json` whenever the term or role changes, so a restarted node never accepts
/// an older term again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    pub term: u64,
    pub role: Option<Role>,
    pub primary: Option<String>,
    #[serde(default)]
    pub known_commit: u64,
    /// The member list the coordinator gave with the last promote or follow.
    #[serde(default)]
    pub members: Option<Members>,
}

const META_FILE: &str = "role.json";

pub fn load_meta(dir: &Path) -> std::io::Result<Meta> {
    match std::fs::read(dir.join(META_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Meta::default()),
        Err(e) => Err(e),
    }
}

fn save_meta(dir: &Path, meta: &Meta) -> std::io::Result<()> {
    let tmp = dir.join("role.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(meta).map_err(std::io::Error::other)?,
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(META_FILE))?;
    crate::wal::sync_dir(dir)
}

/// The role a node starts in. A former primary comes back fenced: it must not accept writes in a
/// term in which another node may have been promoted meanwhile; the coordinator re-assigns it.
pub fn initial_role(
    me: &str,
    members: &Members,
    meta: &Meta,
    log_term: u64,
) -> (Role, u64, Option<String>) {
    let term = meta.term.max(log_term);
    if members.len() <= 1 && meta.role.is_none_or(|r| r == Role::Standalone) {
        return (Role::Standalone, term.max(1), Some(me.to_string()));
    }
    match (meta.role, &meta.primary) {
        (Some(Role::Replica), Some(p)) if meta.term == term => {
            (Role::Replica, term, Some(p.clone()))
        }
        _ => (Role::Fenced, term, None),
    }
}

impl Engine {
    fn persist(&self, core: &Core) -> Result<(), EngineError> {
        let meta = Meta {
            term: core.term,
            role: Some(core.role),
            primary: core.primary.clone(),
            known_commit: core.known_commit,
            members: Some(core.members.as_ref().clone()),
        };
        save_meta(&self.cfg.wal.dir, &meta).map_err(|e| EngineError::Io(e.to_string()))
    }

    fn set_role(
        &self,
        core: &mut Core,
        term: u64,
        role: Role,
        primary: Option<String>,
    ) -> Result<(), EngineError> {
        let changed = core.term != term || core.role != role || core.primary != primary;
        if core.role == Role::Primary && (role != Role::Primary || term != core.term) {
            tracing::warn!(
                old_term = core.term,
                new_term = term,
                "stepping down as primary"
            );
        }
        core.term = term;
        core.role = role;
        if role == Role::Replica {
            core.led_term = None;
        }
        core.primary = primary;
        if role != Role::Replica {
            core.synced = false;
        }
        if changed {
            self.persist(core)?;
            self.metrics.set_role(role.as_str());
            self.metrics.term.set(term as i64);
            tracing::info!(term, role = role.as_str(), primary = ?core.primary, "role changed");
        }
        self.bump();
        Ok(())
    }

    fn check_term(core: &Core, term: u64) -> Result<(), EngineError> {
        if term < core.term {
            return Err(EngineError::StaleTerm {
                given: term,
                current: core.term,
            });
        }
        Ok(())
    }

    /// Adopt `term`, stop leading or following, refuse older terms from now on.
    pub fn fence(&self, term: u64) -> Result<(), EngineError> {
        let mut core = self.core();
        Self::check_term(&core, term)?;
        self.set_role(&mut core, term, Role::Fenced, None)
    }

    /// Checks a member list from the coordinator: it must name this node (and `primary`).
    fn check_members(&self, members: &Members, primary: Option<&str>) -> Result<(), EngineError> {
        let me = &self.cluster.me;
        if !members.contains_key(me) {
            return Err(EngineError::Conflict(format!(
                "the member list does not contain this node ({me})"
            )));
        }
        if let Some(p) = primary.filter(|p| !members.contains_key(*p)) {
            return Err(EngineError::Conflict(format!("{p} is not a member")));
        }
        if let Some((name, _)) = members.iter().find(|(n, u)| n.is_empty() || u.is_empty()) {
            return Err(EngineError::Conflict(format!(
                "member {name:?} has an empty name or URL"
            )));
        }
        Ok(())
    }

    /// Puts `members` in force; returns whether it changed anything. Only promote and follow call
    /// it, whose term the coordinator gave out with this very list, so the nodes of one term agree
    /// on it (a follow in the same term repairs a node that missed the list).
    fn adopt_members(&self, core: &mut Core, members: Option<Members>) -> bool {
        match members {
            Some(m) if *core.members != m => {
                tracing::info!(members = ?m.keys().collect::<Vec<_>>(), "member list changed");
                self.standalone.store(m.len() <= 1, Ordering::Relaxed);
                core.members = Arc::new(m);
                true
            }
            _ => false,
        }
    }

    /// Become primary for `term`: write the term's first entry and start shipping the log to
    /// every other member (`members`, when given, is the member list from this term on).
    pub fn promote(
        self: &Arc<Self>,
        term: u64,
        members: Option<Members>,
    ) -> Result<(), EngineError> {
        if let Some(m) = &members {
            self.check_members(m, None)?;
        }
        let mut core = self.core();
        Self::check_term(&core, term)?;
        if core.role == Role::Primary && core.term == term {
            if members.as_ref().is_some_and(|m| *m != *core.members) {
                return Err(EngineError::Conflict(format!(
                    "already primary in term {term} with another member list; use a newer term"
                )));
            }
            return Ok(());
        }
        if core.term == term && core.primary.as_ref().is_some_and(|p| *p != self.cluster.me) {
            return Err(EngineError::Conflict(format!(
                "{} is already primary in term {term}; use a newer term",
                core.primary.as_deref().unwrap_or_default()
            )));
        }
        let me = self.cluster.me.clone();
        let members_changed = self.adopt_members(&mut core, members);
        self.set_role(&mut core, term, Role::Primary, Some(me))?;
        if members_changed {
            self.persist(&core)?;
        }
        let noop = Entry {
            term,
            index: core.last_index + 1,
            ts_ms: super::now_ms().max(core.last_ts),
            idem: None,
            op: Op::Noop,
        };
        core.state
            .apply_logged(&noop)
            .map_err(|e| EngineError::Io(e.to_string()))?;
        core.append(&noop, log::encode(&noop), Vec::new());
        core.synced = true;
        core.led_term = Some(term);
        let peers: Vec<(String, String)> = core
            .members
            .iter()
            .filter(|(n, _)| **n != self.cluster.me)
            .map(|(n, u)| (n.clone(), u.clone()))
            .collect();
        {
            let mut p = self.progress.lock().unwrap();
            *p = Progress {
                term,
                term_start: noop.index,
                peers: peers
                    .iter()
                    .map(|(n, _)| (n.clone(), Default::default()))
                    .collect(),
            };
        }
        self.update_gauges(&core);
        self.applied.send_replace(noop.index);
        drop(core);
        for (name, url) in peers {
            tokio::spawn(sender::run(self.clone(), name, url, term));
        }
        tracing::info!(term, first_index = noop.index, "promoted to primary");
        Ok(())
    }

    /// Become a replica of `primary` in `term` (`members`, when given, is the member list from
    /// this term on); the primary's log shipper reconnects at once.
    pub fn follow(
        self: &Arc<Self>,
        term: u64,
        primary: &str,
        members: Option<Members>,
    ) -> Result<(), EngineError> {
        if primary == self.cluster.me {
            return Err(EngineError::Conflict(
                "a node cannot follow itself; promote it instead".into(),
            ));
        }
        if let Some(m) = &members {
            self.check_members(m, Some(primary))?;
        }
        let url = {
            let mut core = self.core();
            Self::check_term(&core, term)?;
            let list = members.as_ref().unwrap_or(core.members.as_ref());
            let Some(url) = list.get(primary).cloned() else {
                return Err(EngineError::Conflict(format!("{primary} is not a member")));
            };
            if core.term == term && core.role == Role::Primary {
                return Err(EngineError::Conflict(format!(
                    "this node is primary in term {term}; fence it with a newer term first"
                )));
            }
            let members_changed = self.adopt_members(&mut core, members);
            if core.term == term
                && core.primary.as_deref() == Some(primary)
                && core.role == Role::Replica
            {
                if members_changed {
                    self.persist(&core)?;
                }
                return Ok(());
            }
            core.synced = false;
            self.set_role(&mut core, term, Role::Replica, Some(primary.to_string()))?;
            if members_changed {
                self.persist(&core)?;
            }
            url
        };
        // Tell the primary we are here so it retries now instead of after its backoff.
        let engine = self.clone();
        tokio::spawn(async move { engine.hello(&url, term).await });
        Ok(())
    }

    /// A newer term was seen (a replica answered with it, or an append carried it).
    ///
    /// A node that never had a term (a new member, or one whose disk was emptied) adopts no
    /// primary that merely contacts it: it waits for the coordinator's follow. Otherwise a stale
    /// primary, cut off from the coordinator since before a later election, could count such
    /// nodes (listed in its old term) towards a write quorum the elections never fenced.
    pub(crate) fn observe_term(
        &self,
        core: &mut Core,
        term: u64,
        primary: Option<String>,
    ) -> Result<(), EngineError> {
        if core.term == 0 && primary.is_some() {
            return Err(EngineError::Conflict(format!(
                "{} has no term yet; it follows a primary once the coordinator tells it",
                self.cluster.me
            )));
        }
        if term > core.term || (term == core.term && core.primary.is_none() && primary.is_some()) {
            let role = if primary.is_some() {
                Role::Replica
            } else {
                Role::Fenced
            };
            self.set_role(core, term, role, primary)?;
        }
        Ok(())
    }

    pub(crate) fn step_down(&self, term: u64) {
        let mut core = self.core();
        if term > core.term
            && let Err(e) = self.set_role(&mut core, term, Role::Fenced, None)
        {
            tracing::error!(error = %e, "could not persist the role change");
        }
    }

    pub(crate) fn persist_known_commit(&self) {
        let core = self.core();
        if let Err(e) = self.persist(&core) {
            tracing::warn!(error = %e, "could not persist the commit index");
        }
    }
}
