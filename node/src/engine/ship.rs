//! The narrow API the log shipper calls: what to send a replica next, what it answered, whether
//! the shipper's term goes on. The engine never calls into the shipper, so the two do not depend
//! on each other both ways.

use super::{Cached, Engine, Outbound, Role, Work, now_ms};
use crate::replication::{AckLevel, AppendResponse};
use crate::wal;
use std::time::Instant;
use tokio::sync::futures::Notified;
use tokio::sync::mpsc;

impl Engine {
    /// The shipper's inbox. `None` once taken: one shipper per engine.
    pub fn take_outbound(&self) -> Option<mpsc::UnboundedReceiver<Outbound>> {
        self.outbound_rx.lock().unwrap().take()
    }

    /// Resolves at the next poke (new entries, a read that needs a heartbeat round, a replica's
    /// hello). Enable it before checking for work, so a poke in between is not missed.
    pub fn poked(&self) -> Notified<'_> {
        self.poke.notified()
    }

    pub fn last_index(&self) -> u64 {
        self.core().node.last_index
    }

    /// Whether the shipper of `term` goes on: while this node leads `term`, and after it was fenced
    /// (draining its log to the replicas of that term) until it follows someone or leads again.
    pub fn still_ships(&self, term: u64) -> bool {
        let core = self.core();
        match core.node.role {
            Role::Primary => core.node.term == term,
            Role::Fenced => core.node.led_term == Some(term),
            _ => false,
        }
    }

    /// What to send to a replica whose next entry is `next` (`peer_last`: its last index, once
    /// known), at most `max` entries and about `max_bytes`.
    pub fn work_for(
        &self,
        next: u64,
        peer_last: Option<u64>,
        max: usize,
        max_bytes: usize,
    ) -> Work {
        let (prev_term, cached, last) = {
            let core = self.core();
            (
                core.node.term_at(next - 1),
                core.cached_from(next, max, max_bytes),
                core.node.last_index,
            )
        };
        // An empty replica gets the snapshot rather than the whole history, when there is one.
        if peer_last == Some(0) && next <= 1 && last > 0 && self.newest_snapshot_index() > 0 {
            return Work::Snapshot;
        }
        let Some(prev_term) = prev_term else {
            return Work::Snapshot;
        };
        if let Some(items) = cached {
            return Work::Entries { prev_term, items };
        }
        match wal::read_range(&self.cfg.wal.dir, next, max, max_bytes) {
            Ok(entries) => {
                let items = entries
                    .into_iter()
                    .map(|(e, p)| Cached {
                        index: e.index,
                        term: e.term,
                        ts_ms: e.ts_ms,
                        payload: p.into(),
                    })
                    .collect();
                Work::Entries { prev_term, items }
            }
            Err(_) => Work::Snapshot,
        }
    }

    /// The primary's commit index and last index, for an append's header.
    pub fn append_position(&self) -> (u64, u64) {
        (self.commit_for(AckLevel::Quorum), self.last_index())
    }

    /// `peer` answered a request of `term` sent at `sent_at` with success.
    pub fn record_ack(&self, peer: &str, term: u64, sent_at: Instant, r: &AppendResponse) {
        if !self
            .progress
            .lock()
            .unwrap()
            .record_ack(peer, term, sent_at, r)
        {
            return;
        }
        let commit = self.commit_for(AckLevel::Quorum);
        let (lag, lag_secs) = {
            let mut core = self.core();
            core.node.known_commit = core.node.known_commit.max(commit);
            let lag = core.node.last_index.saturating_sub(r.durable_index);
            let secs = core
                .entry_ts(r.durable_index + 1)
                .filter(|_| lag > 0)
                .map_or(0.0, |ts| now_ms().saturating_sub(ts) as f64 / 1000.0);
            (lag, secs)
        };
        self.metrics.commit_index.set(commit as i64);
        self.metrics
            .replication_lag_entries
            .with_label_values(&[peer])
            .set(lag as i64);
        self.metrics
            .replication_lag_seconds
            .with_label_values(&[peer])
            .set(lag_secs);
        self.bump();
    }

    /// A request to `peer` failed, or it refused it with `error`.
    pub fn record_error(&self, peer: &str, error: String) {
        self.progress.lock().unwrap().record_error(peer, error);
        self.bump();
    }

    /// A replica says it follows this node in `term`: ship to it now rather than after a backoff.
    pub fn hello_from(&self, term: u64) {
        let core = self.core();
        if core.node.role == Role::Primary && core.node.term == term {
            self.poke.notify_waiters();
        }
    }
}
