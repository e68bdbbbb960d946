//! This node's replication state and the rules that change its role: fence, promote and follow
//! from the failover coordinator, and adopting a newer term seen in a primary's message.
//!
//! Pure, in the manner of raft-rs's `Ready`: a rule reads plain data and returns a [`RoleChange`]
//! (the role record to persist) or a refusal; the engine writes the record, then calls
//! [`Node::enter`], which returns what entering asks for (a first entry and shippers for a new
//! primary, a hello to the primary followed). The record is on disk before anything acts in the
//! new term, and the rules are tested without files, sockets or clocks.

use super::terms::TermRuns;
use super::wire::Members;
use rcluster_proto::Role;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The role record, persisted (`role.json`) before every change of term, role, primary or member
/// list takes effect, so a restarted node never accepts an older term again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleRecord {
    pub term: u64,
    pub role: Option<Role>,
    pub primary: Option<String>,
    #[serde(default)]
    pub known_commit: u64,
    /// The member list the coordinator gave with the last promote or follow.
    #[serde(default)]
    pub members: Option<Members>,
}

/// A rule's refusal; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleError {
    StaleTerm { given: u64, current: u64 },
    Conflict(String),
}

/// What brought a role change about; entering differs by cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Fence,
    Promote,
    /// `url`: the primary's, to say hello to.
    Follow {
        url: String,
    },
    /// A repeated follow that only brings the member list this node missed.
    MemberList,
    /// A primary's append or snapshot carried a newer term, or named the term's primary.
    Contact,
    /// A replica answered this primary with a newer term.
    StepDown,
}

/// A decided role change: persist `record` (when `persist`), then [`Node::enter`] it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleChange {
    pub cause: Cause,
    /// The role record after the change.
    pub record: RoleRecord,
    /// The record differs from the one on disk.
    pub persist: bool,
}

/// What entering a role change asks of the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entered {
    /// The term, role or primary changed (metrics, a log line).
    pub changed: bool,
    /// This node led and no longer does in that term (a warning).
    pub stepped_down: bool,
    /// The member list changed.
    pub members_changed: bool,
    /// Waiters on the role must look again.
    pub wake: bool,
    /// A new primary: write the term's first entry (a no-op), then ship the log to these peers
    /// (name, URL).
    pub lead: Option<Vec<(String, String)>>,
    /// A new replica: tell the primary at this URL, so it sends at once instead of after its
    /// backoff.
    pub hello: Option<String>,
}

/// This node's place in its replica group and the shape of its log: everything the replication
/// rules decide on. The engine keeps it behind its mutex, beside the state machine and the log.
#[derive(Debug, Clone)]
pub struct Node {
    pub me: String,
    pub term: u64,
    pub role: Role,
    pub primary: Option<String>,
    /// The member list in force (this node included); changes only with promote and follow.
    pub members: Arc<Members>,
    /// The term this node last led. A fenced former primary keeps shipping its log under that term
    /// (refusing new writes), so a planned switchover's target can fetch every acknowledged entry.
    pub led_term: Option<u64>,
    /// Replica: it has matched its log with the current primary since it started following.
    pub synced: bool,
    /// Highest index this node knows to be committed (computed as primary, learned as replica).
    pub known_commit: u64,
    pub last_index: u64,
    pub runs: TermRuns,
}

impl Node {
    /// The node as it starts: its role from the role record (see [`initial_role`]) and its log's
    /// shape from recovery.
    pub fn start(
        me: &str,
        members: Arc<Members>,
        record: &RoleRecord,
        log: (u64, TermRuns),
        applied_term: u64,
    ) -> Node {
        let (role, term, primary) = initial_role(me, &members, record, applied_term);
        let (last_index, runs) = log;
        Node {
            me: me.to_string(),
            term,
            role,
            primary,
            members,
            led_term: None,
            synced: false,
            known_commit: record.known_commit.min(last_index),
            last_index,
            runs,
        }
    }

    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.runs.term_at(index, self.last_index)
    }

    pub fn leads(&self) -> bool {
        matches!(self.role, Role::Primary | Role::Standalone)
    }

    /// An entry of `term` was appended at `index`.
    pub fn appended(&mut self, index: u64, term: u64) {
        self.runs.push(index, term);
        self.last_index = index;
    }

    /// The role record as it stands.
    pub fn record(&self) -> RoleRecord {
        RoleRecord {
            term: self.term,
            role: Some(self.role),
            primary: self.primary.clone(),
            known_commit: self.known_commit,
            members: Some(self.members.as_ref().clone()),
        }
    }

    fn check_term(&self, term: u64) -> Result<(), RoleError> {
        if term < self.term {
            return Err(RoleError::StaleTerm {
                given: term,
                current: self.term,
            });
        }
        Ok(())
    }

    /// A member list from the coordinator must name this node (and `primary`), with no empty
    /// name or URL.
    fn check_members(&self, members: &Members, primary: Option<&str>) -> Result<(), RoleError> {
        if !members.contains_key(&self.me) {
            return Err(RoleError::Conflict(format!(
                "the member list does not contain this node ({})",
                self.me
            )));
        }
        if let Some(p) = primary.filter(|p| !members.contains_key(*p)) {
            return Err(RoleError::Conflict(format!("{p} is not a member")));
        }
        if let Some((name, _)) = members.iter().find(|(n, u)| n.is_empty() || u.is_empty()) {
            return Err(RoleError::Conflict(format!(
                "member {name:?} has an empty name or URL"
            )));
        }
        Ok(())
    }

    /// The change to `(term, role, primary)` with `members` (unchanged when `None`).
    fn change(
        &self,
        cause: Cause,
        term: u64,
        role: Role,
        primary: Option<String>,
        members: Option<Members>,
    ) -> RoleChange {
        let members_changed = members.as_ref().is_some_and(|m| *m != *self.members);
        let persist =
            members_changed || self.term != term || self.role != role || self.primary != primary;
        RoleChange {
            cause,
            record: RoleRecord {
                term,
                role: Some(role),
                primary,
                known_commit: self.known_commit,
                members: Some(members.unwrap_or_else(|| self.members.as_ref().clone())),
            },
            persist,
        }
    }

    /// Adopt `term`, stop leading or following, refuse older terms from now on.
    pub fn fence(&self, term: u64) -> Result<RoleChange, RoleError> {
        self.check_term(term)?;
        Ok(self.change(Cause::Fence, term, Role::Fenced, None, None))
    }

    /// Become primary for `term` (`members`, when given, is the member list from this term on).
    /// `None`: already primary of `term` with that list.
    pub fn promote(
        &self,
        term: u64,
        members: Option<Members>,
    ) -> Result<Option<RoleChange>, RoleError> {
        if let Some(m) = &members {
            self.check_members(m, None)?;
        }
        self.check_term(term)?;
        if self.role == Role::Primary && self.term == term {
            if members.as_ref().is_some_and(|m| *m != *self.members) {
                return Err(RoleError::Conflict(format!(
                    "already primary in term {term} with another member list; use a newer term"
                )));
            }
            return Ok(None);
        }
        if self.term == term && self.primary.as_ref().is_some_and(|p| *p != self.me) {
            return Err(RoleError::Conflict(format!(
                "{} is already primary in term {term}; use a newer term",
                self.primary.as_deref().unwrap_or_default()
            )));
        }
        let me = Some(self.me.clone());
        Ok(Some(self.change(
            Cause::Promote,
            term,
            Role::Primary,
            me,
            members,
        )))
    }

    /// Become a replica of `primary` in `term` (`members`, when given, is the member list from
    /// this term on). `None`: already following it in `term` with that list.
    pub fn follow(
        &self,
        term: u64,
        primary: &str,
        members: Option<Members>,
    ) -> Result<Option<RoleChange>, RoleError> {
        if primary == self.me {
            return Err(RoleError::Conflict(
                "a node cannot follow itself; promote it instead".into(),
            ));
        }
        if let Some(m) = &members {
            self.check_members(m, Some(primary))?;
        }
        self.check_term(term)?;
        let list = members.as_ref().unwrap_or(self.members.as_ref());
        let Some(url) = list.get(primary).cloned() else {
            return Err(RoleError::Conflict(format!("{primary} is not a member")));
        };
        if self.term == term && self.role == Role::Primary {
            return Err(RoleError::Conflict(format!(
                "this node is primary in term {term}; fence it with a newer term first"
            )));
        }
        let primary = Some(primary.to_string());
        if self.term == term && self.primary == primary && self.role == Role::Replica {
            let c = self.change(Cause::MemberList, term, Role::Replica, primary, members);
            return Ok(c.persist.then_some(c));
        }
        let cause = Cause::Follow { url };
        Ok(Some(self.change(
            cause,
            term,
            Role::Replica,
            primary,
            members,
        )))
    }

    /// A primary's message carried `term` (`primary`: the sender, when it claims to lead it).
    ///
    /// A node that never had a term (a new member, or one whose disk was emptied) adopts no
    /// primary that merely contacts it: it waits for the coordinator's follow. Otherwise a stale
    /// primary, cut off from the coordinator since before a later election, could count such
    /// nodes (listed in its old term) towards a write quorum the elections never fenced.
    pub fn observe_term(
        &self,
        term: u64,
        primary: Option<&str>,
    ) -> Result<Option<RoleChange>, RoleError> {
        if self.term == 0 && primary.is_some() {
            return Err(RoleError::Conflict(format!(
                "{} has no term yet; it follows a primary once the coordinator tells it",
                self.me
            )));
        }
        let adopts = term == self.term && self.primary.is_none() && primary.is_some();
        if term <= self.term && !adopts {
            return Ok(None);
        }
        let role = if primary.is_some() {
            Role::Replica
        } else {
            Role::Fenced
        };
        let primary = primary.map(str::to_string);
        Ok(Some(self.change(Cause::Contact, term, role, primary, None)))
    }

    /// A replica answered with `term`: a newer term means another primary may lead; stop.
    pub fn step_down(&self, term: u64) -> Option<RoleChange> {
        (term > self.term).then(|| self.change(Cause::StepDown, term, Role::Fenced, None, None))
    }

    /// Enters a decided change (after its record was persisted). The engine's lock on this node
    /// was held from the decision on, so nothing it depends on moved meanwhile.
    pub fn enter(&mut self, c: RoleChange) -> Entered {
        let RoleChange { cause, record, .. } = c;
        let mut out = Entered::default();
        if let Some(m) = record.members
            && m != *self.members
        {
            self.members = Arc::new(m);
            out.members_changed = true;
        }
        if cause == Cause::MemberList {
            return out;
        }
        let (term, role) = (record.term, record.role.unwrap_or(Role::Fenced));
        if let Cause::Follow { .. } = cause {
            self.synced = false;
        }
        out.changed = self.term != term || self.role != role || self.primary != record.primary;
        out.stepped_down =
            self.role == Role::Primary && (role != Role::Primary || term != self.term);
        out.wake = true;
        self.term = term;
        self.role = role;
        if role == Role::Replica {
            self.led_term = None;
        }
        self.primary = record.primary;
        if role != Role::Replica {
            self.synced = false;
        }
        match cause {
            Cause::Promote => {
                self.synced = true;
                self.led_term = Some(term);
                let peers = self
                    .members
                    .iter()
                    .filter(|(n, _)| **n != self.me)
                    .map(|(n, u)| (n.clone(), u.clone()))
                    .collect();
                out.lead = Some(peers);
            }
            Cause::Follow { url } => out.hello = Some(url),
            _ => {}
        }
        out
    }
}

/// The role a node starts in. A former primary comes back fenced: it must not accept writes in a
/// term in which another node may have been promoted meanwhile; the coordinator re-assigns it.
pub fn initial_role(
    me: &str,
    members: &Members,
    record: &RoleRecord,
    log_term: u64,
) -> (Role, u64, Option<String>) {
    let term = record.term.max(log_term);
    if members.len() <= 1 && record.role.is_none_or(|r| r == Role::Standalone) {
        return (Role::Standalone, term.max(1), Some(me.to_string()));
    }
    match (record.role, &record.primary) {
        (Some(Role::Replica), Some(p)) if record.term == term => {
            (Role::Replica, term, Some(p.clone()))
        }
        _ => (Role::Fenced, term, None),
    }
}
