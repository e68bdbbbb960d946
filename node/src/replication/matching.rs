//! The replica's rules for a primary's append and snapshot: whose term counts, where the local log
//! matches the primary's, what to truncate (never below what is known to be committed) and what
//! to append. Pure: the engine performs the truncation and the appends these rules ask for.

use super::node::{Node, RoleChange, RoleError};
use super::terms::TermRuns;
use super::wire::AppendHeader;
use rcluster_proto::Role;

/// An append refused without touching the log; the primary reads it from the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A stale term, another primary, or a divergence below the known commit: back off.
    Error(String),
    /// The logs do not match at the append's start: resend from this index.
    RetryFrom(u64),
    /// The replica cannot continue from its log: send a snapshot.
    NeedSnapshot,
}

/// What the term rules say about an append.
#[derive(Debug, Clone, PartialEq)]
pub enum Contact {
    Refuse(Refusal),
    /// Go on matching, after entering this role change (when there is one).
    Accept(Option<RoleChange>),
}

/// The outcome of matching an append's entries with the local log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matching {
    Refuse(Refusal),
    /// The local entries from this index on diverge from the primary's: discard them, then match
    /// again.
    Truncate(u64),
    /// Append the entries at these positions of the batch; the local log then holds every entry
    /// through `matched` as the primary has it.
    Append {
        new: std::ops::Range<usize>,
        matched: u64,
    },
}

impl Node {
    /// Batches are pipelined, so one may overtake the one before it: this one starts past the end
    /// of the local log, in a term the node accepts.
    pub fn append_is_ahead(&self, h: &AppendHeader) -> bool {
        h.term >= self.term && h.prev_index > self.last_index
    }

    /// The term rules for an append from `h.from`: an older term is refused, and so is a second
    /// primary of this node's term; a newer term (or the term's primary, named for the first
    /// time) is adopted.
    pub fn contact(&self, h: &AppendHeader) -> Result<Contact, RoleError> {
        if h.term < self.term {
            let why = format!("stale term {} < {}", h.term, self.term);
            return Ok(Contact::Refuse(Refusal::Error(why)));
        }
        let other_primary = self.primary.as_ref().is_some_and(|p| *p != h.from);
        if h.term == self.term && (self.role == Role::Primary || other_primary) {
            let why = format!("{:?} leads term {}", self.primary, h.term);
            return Ok(Contact::Refuse(Refusal::Error(why)));
        }
        Ok(Contact::Accept(self.observe_term(h.term, Some(&h.from))?))
    }

    /// Matches an append starting after `(h.prev_index, h.prev_term)` whose entries have these
    /// (index, term) with the local log. The primary sends consecutive entries; matching stops at
    /// the first entry that does not continue the log.
    pub fn match_append(&self, h: &AppendHeader, entries: &[(u64, u64)]) -> Matching {
        if h.prev_index > self.last_index {
            return Matching::Refuse(Refusal::RetryFrom(self.last_index + 1));
        }
        match self.term_at(h.prev_index) {
            Some(t) if t != h.prev_term => {
                let from = self.runs.run_start(h.prev_index).min(h.prev_index);
                return Matching::Refuse(Refusal::RetryFrom(from));
            }
            // Below our snapshot: committed, and so equal to the primary's.
            _ => {}
        }
        let mut matched = h.prev_index;
        let mut last = self.last_index;
        let mut new: Option<std::ops::Range<usize>> = None;
        for (i, &(index, term)) in entries.iter().enumerate() {
            if new.is_none() && index <= self.last_index {
                match self.term_at(index) {
                    Some(t) if t != term => {
                        if index <= self.known_commit {
                            let why =
                                format!("entry {index} is committed here; refusing to discard it");
                            return Matching::Refuse(Refusal::Error(why));
                        }
                        return Matching::Truncate(index);
                    }
                    // The same entry, or one below our snapshot (committed, so the same).
                    _ => {
                        matched = index;
                        continue;
                    }
                }
            }
            if index != last + 1 {
                break;
            }
            new.get_or_insert(i..i).end = i + 1;
            (last, matched) = (index, index);
        }
        let new = new.unwrap_or(entries.len()..entries.len());
        Matching::Append { new, matched }
    }

    /// After a truncation from `from` (the log now ends where the rebuilt state does): a replica
    /// left with nothing cannot take the entries after `from` and needs a snapshot.
    pub fn truncated(&mut self, from: u64, last_index: u64, runs: TermRuns) -> Option<Refusal> {
        self.last_index = last_index;
        self.runs = runs;
        (last_index == 0 && from > 1).then_some(Refusal::NeedSnapshot)
    }

    /// The append matched through `matched`; the primary's commit index was `commit`.
    pub fn matched(&mut self, commit: u64, matched: u64) {
        self.known_commit = self.known_commit.max(commit.min(matched));
        // Entries after `matched` are not confirmed by the primary: after a restart they may be
        // a divergent suffix of an old primary, which must never be read. In sync only once the
        // log ends where the primary's match does.
        if matched >= self.last_index {
            self.synced = true;
        }
    }

    /// The term rules for a snapshot from `from` in `term`: an older term is refused.
    pub fn snapshot_contact(&self, term: u64, from: &str) -> Result<Option<RoleChange>, RoleError> {
        if term < self.term {
            return Err(RoleError::StaleTerm {
                given: term,
                current: self.term,
            });
        }
        self.observe_term(term, Some(from))
    }

    /// Whether a snapshot at `index` received from `from` in `term` may replace the log: the
    /// sender must still be the primary of the current term, and the snapshot must hold every
    /// entry known to be committed here.
    pub fn check_snapshot(&self, term: u64, from: &str, index: u64) -> Result<(), RoleError> {
        if self.term != term || self.primary.as_deref() != Some(from) {
            return Err(RoleError::Conflict(
                "the primary changed during the transfer".into(),
            ));
        }
        if index < self.known_commit {
            return Err(RoleError::Conflict(format!(
                "snapshot at {index} is older than the committed index {} here",
                self.known_commit
            )));
        }
        Ok(())
    }

    /// The log now starts from a snapshot at `index` of `term`.
    pub fn installed(&mut self, index: u64, term: u64) {
        self.runs = TermRuns::new(index, term);
        self.last_index = index;
        self.known_commit = self.known_commit.max(index);
        self.synced = true;
    }
}
