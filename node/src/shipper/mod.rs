//! The primary's log shipper: one task per replica that streams batches of entries over a
//! keep-alive connection, sends heartbeats when idle, backs a replica up to the last common entry,
//! and falls back to a snapshot when the replica needs entries the primary no longer has.
//!
//! The engine asks for shipping with an [`Outbound`] message and answers the shipper's narrow
//! calls (`work_for`, `record_ack`, `step_down`, ...); it never calls the shipper.

mod link;
mod wire;

use crate::config::Limits;
use crate::engine::{Engine, Outbound, Work};
use crate::log;
use crate::replication::{AppendHeader, AppendResponse};
use crate::snapshot;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use link::Link;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_BATCH: usize = 2000;
const MAX_BATCH_BYTES: usize = 4 << 20;

/// The largest append body a replica accepts: a full batch, plus the one entry that may take it
/// over (a write as large as a client body with its key, or an expiry purge naming up to 1000
/// keys), plus the frame headers and the append header. Every member needs the same limits.
pub fn max_append_bytes(limits: &Limits) -> usize {
    let key = limits.max_key_bytes + 16;
    let largest_entry = limits.max_body_bytes.max(1000 * key) + key + 1024;
    MAX_BATCH_BYTES + largest_entry + (MAX_BATCH + 1) * log::FRAME_HEADER + 4096
}
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Batches in flight to one replica at once: the next batch goes out while the previous one is
/// still being persisted there (replicas apply them in order).
const WINDOW: usize = 4;

/// Carries out the engine's outbound messages until the engine is gone: a shipper per peer for
/// each term this node leads, a hello for each primary it follows.
pub async fn run(engine: Arc<Engine>) {
    let Some(mut outbound) = engine.take_outbound() else {
        return;
    };
    let link = Arc::new(Link::new(&engine.cluster, engine.transport.clone()));
    while let Some(msg) = outbound.recv().await {
        match msg {
            Outbound::Ship { term, peers } => {
                for (peer, url) in peers {
                    let s = Shipper::new(engine.clone(), link.clone(), peer, url, term);
                    tokio::spawn(s.run());
                }
            }
            Outbound::Hello { url, term } => {
                let link = link.clone();
                tokio::spawn(async move { link.hello(&url, term).await });
            }
        }
    }
}

/// What to do after an answer from the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Confirmed through `after - 1`.
    Advanced(u64),
    /// Resend from this index (0: the replica needs a snapshot).
    Resend(u64),
    /// Back off, then resend what is unconfirmed (with the replica's refusal, when it gave one).
    Backoff(Option<String>),
    /// The replica knows this newer term.
    StepDown(u64),
}

/// Judges a replica's answer to a request of `term` that would confirm entries before `after`.
fn judge(term: u64, after: u64, r: &AppendResponse) -> Verdict {
    if r.term > term {
        return Verdict::StepDown(r.term);
    }
    if r.ok {
        return Verdict::Advanced(after.max(r.last_index + 1));
    }
    if r.need_snapshot {
        return Verdict::Resend(0);
    }
    if let Some(e) = &r.error {
        return Verdict::Backoff(Some(e.clone()));
    }
    match r.retry_from {
        Some(from) => Verdict::Resend(from.max(1).min(r.last_index + 1)),
        None => Verdict::Backoff(None),
    }
}

/// Ships the log to one replica for as long as this node is primary in `term` (or drains it
/// after a fence).
struct Shipper {
    engine: Arc<Engine>,
    link: Arc<Link>,
    peer: String,
    url: String,
    term: u64,
}

impl Shipper {
    fn new(engine: Arc<Engine>, link: Arc<Link>, peer: String, url: String, term: u64) -> Self {
        Shipper {
            engine,
            link,
            peer,
            url,
            term,
        }
    }

    /// Performs the verdict on an answer (or a failed request): progress, errors, stepping down.
    /// `peer_last`: the replica's last index, from its latest answer (0 once it asked for a
    /// snapshot).
    fn answer(
        &self,
        peer_last: &mut Option<u64>,
        sent_at: Instant,
        after: u64,
        result: Result<AppendResponse, String>,
    ) -> Verdict {
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(peer = self.peer, error = %e, "replication request failed");
                self.engine.record_error(&self.peer, e);
                return Verdict::Backoff(None);
            }
        };
        *peer_last = Some(r.last_index);
        let verdict = judge(self.term, after, &r);
        match &verdict {
            Verdict::StepDown(theirs) => {
                tracing::warn!(
                    peer = self.peer,
                    their_term = theirs,
                    term = self.term,
                    "a replica knows a newer term"
                );
                self.engine.step_down(*theirs);
            }
            Verdict::Advanced(_) => self.engine.record_ack(&self.peer, self.term, sent_at, &r),
            Verdict::Resend(0) => *peer_last = Some(0),
            Verdict::Backoff(Some(e)) => self.engine.record_error(&self.peer, e.clone()),
            Verdict::Resend(_) | Verdict::Backoff(None) => {}
        }
        verdict
    }

    async fn send_append(
        &self,
        next: u64,
        prev_term: u64,
        items: &[crate::engine::Cached],
    ) -> Result<AppendResponse, String> {
        let (commit, last) = self.engine.append_position();
        let header = AppendHeader {
            term: self.term,
            from: self.link.me().to_string(),
            prev_index: next - 1,
            prev_term,
            commit,
            primary_last_index: last,
        };
        self.link.append(&self.url, &header, items).await
    }

    async fn send_snapshot(&self) -> Result<AppendResponse, String> {
        if self.engine.newest_snapshot_index() == 0 {
            self.engine
                .snapshot_now()
                .await
                .map_err(|e| format!("snapshot: {e}"))?;
        }
        let (index, path) = snapshot::list(&self.engine.cfg.wal.dir)
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .ok_or("no snapshot to send")?;
        let body = tokio::fs::read(&path).await.map_err(|e| e.to_string())?;
        tracing::info!(
            index,
            bytes = body.len(),
            to = self.url,
            "sending a snapshot"
        );
        self.link.snapshot(&self.url, self.term, body).await
    }

    /// Batches are pipelined; an idle primary sends heartbeats, and reads that need a quorum
    /// round poke it to send one at once.
    async fn run(self) {
        let engine = self.engine.clone();
        let start = engine.last_index();
        let mut peer_last = None;
        // `next`: the first entry not yet sent; `acked`: the first entry not yet confirmed.
        let (mut next, mut acked) = (start, start);
        let mut backoff = MIN_BACKOFF;
        let mut poked = true;
        let heartbeat = engine.cluster.heartbeat;
        let mut inflight = FuturesOrdered::new();
        while engine.still_ships(self.term) {
            let notified = engine.poked();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut want_snapshot = false;
            while inflight.len() < WINDOW {
                let from = next.max(1);
                let work = engine.work_for(from, peer_last, MAX_BATCH, MAX_BATCH_BYTES);
                let Work::Entries { prev_term, items } = work else {
                    want_snapshot = true;
                    break;
                };
                if items.is_empty() && !(inflight.is_empty() && poked) {
                    break;
                }
                poked = false;
                let heartbeat_only = items.is_empty();
                next = from + items.len() as u64;
                let after = next;
                let this = &self;
                inflight.push_back(async move {
                    let sent_at = Instant::now();
                    let r = this.send_append(from, prev_term, &items).await;
                    (sent_at, after, r)
                });
                if heartbeat_only {
                    break;
                }
            }
            let answered = if inflight.is_empty() {
                if want_snapshot {
                    let sent_at = Instant::now();
                    let r = self.send_snapshot().await;
                    let after = r.as_ref().map_or(0, |resp| resp.last_index + 1);
                    Some((sent_at, after, r))
                } else {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(heartbeat) => {}
                    }
                    poked = true;
                    continue;
                }
            } else {
                tokio::select! {
                    Some(answer) = inflight.next() => Some(answer),
                    _ = &mut notified, if inflight.len() < WINDOW => None,
                }
            };
            let Some((sent_at, after, r)) = answered else {
                poked = true;
                continue;
            };
            match self.answer(&mut peer_last, sent_at, after, r) {
                Verdict::Advanced(after) => {
                    acked = after;
                    backoff = MIN_BACKOFF;
                }
                Verdict::Resend(from) => {
                    inflight = FuturesOrdered::new();
                    (next, acked) = (from, from);
                }
                Verdict::Backoff(_) => {
                    inflight = FuturesOrdered::new();
                    next = acked;
                    // Capped backoff; a poke (new entries, a replica saying hello) cuts it short.
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    poked = true;
                }
                Verdict::StepDown(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod judge_tests;
