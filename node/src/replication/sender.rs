//! The primary's log shipper: one task per replica that streams batches of entries over a
//! keep-alive connection, sends heartbeats when idle, backs a replica up to the last common entry,
//! and falls back to a snapshot when the replica needs entries the primary no longer has.

use super::{AppendHeader, AppendResponse, commit::AckLevel};
use crate::api::CLUSTER_ID_HEADER;
use crate::config::Limits;
use crate::engine::{Cached, Engine, Role};
use crate::log;
use crate::snapshot;
use crate::wal;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
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

enum Work {
    Entries { prev_term: u64, items: Vec<Cached> },
    Snapshot,
}

impl Engine {
    pub(crate) fn internal_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(secret) = &self.cluster.secret
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {secret}"))
        {
            h.insert(http::header::AUTHORIZATION, v);
        }
        // The receiver refuses our messages if it belongs to another cluster.
        if let Some(id) = &self.cluster.id
            && let Ok(v) = HeaderValue::from_str(id)
        {
            h.insert(CLUSTER_ID_HEADER, v);
        }
        h
    }

    /// Replica → primary: "I follow you now", so the primary retries at once.
    pub(crate) async fn hello(&self, primary_url: &str, term: u64) {
        let body = serde_json::json!({"term": term, "primary": self.cluster.me}).to_string();
        let url = format!("{primary_url}/internal/v1/hello");
        let _ = self
            .transport
            .request(
                Method::POST,
                &url,
                self.internal_headers(),
                Some(body.into()),
                None,
            )
            .await;
    }

    /// Whether the shipper of `term` goes on: while this node leads `term`, and after it was fenced
    /// (draining its log to the replicas of that term) until it follows someone or leads again.
    fn still_ships(&self, term: u64) -> bool {
        let core = self.core();
        match core.role {
            Role::Primary => core.term == term,
            Role::Fenced => core.led_term == Some(term),
            _ => false,
        }
    }

    /// What to send to a replica whose next entry is `next`.
    fn work_for(&self, next: u64, peer_last: Option<u64>) -> Work {
        let (prev_term, cached, last) = {
            let core = self.core();
            let prev_term = core.term_at(next - 1);
            (
                prev_term,
                core.cached_from(next, MAX_BATCH, MAX_BATCH_BYTES),
                core.last_index,
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
        match wal::read_range(&self.cfg.wal.dir, next, MAX_BATCH, MAX_BATCH_BYTES) {
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

    fn record_progress(&self, peer: &str, term: u64, sent_at: Instant, r: &AppendResponse) {
        {
            let mut p = self.progress.lock().unwrap();
            if p.term != term {
                return;
            }
            if let Some(pp) = p.peers.get_mut(peer) {
                pp.durable = pp.durable.max(r.durable_index);
                pp.applied = r.applied_index;
                pp.last_index = r.last_index;
                pp.acked_sent_at = Some(sent_at);
                pp.error = None;
            }
        }
        let commit = self.commit_for(AckLevel::Quorum);
        let (lag, lag_secs) = {
            let mut core = self.core();
            core.known_commit = core.known_commit.max(commit);
            let lag = core.last_index.saturating_sub(r.durable_index);
            let secs = core
                .entry_ts(r.durable_index + 1)
                .filter(|_| lag > 0)
                .map_or(0.0, |ts| {
                    crate::engine::now_ms().saturating_sub(ts) as f64 / 1000.0
                });
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

    fn record_error(&self, peer: &str, error: String) {
        if let Some(pp) = self.progress.lock().unwrap().peers.get_mut(peer) {
            pp.error = Some(error);
        }
        self.bump();
    }

    async fn send_append(
        &self,
        url: &str,
        term: u64,
        next: u64,
        prev_term: u64,
        items: &[Cached],
    ) -> Result<AppendResponse, String> {
        let (commit, last) = (self.commit_for(AckLevel::Quorum), self.core().last_index);
        let header = AppendHeader {
            term,
            from: self.cluster.me.clone(),
            prev_index: next - 1,
            prev_term,
            commit,
            primary_last_index: last,
        };
        let mut body =
            Vec::with_capacity(items.iter().map(|c| c.payload.len() + 8).sum::<usize>() + 64);
        log::put_frame(&mut body, &log::encode(&header));
        for c in items {
            log::put_frame(&mut body, &c.payload);
        }
        let url = format!("{url}/internal/v1/append");
        self.post_internal(&url, Bytes::from(body), None).await
    }

    /// POSTs to another member's internal endpoint and decodes its JSON answer.
    async fn post_internal(
        &self,
        url: &str,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<AppendResponse, String> {
        let resp = self
            .transport
            .request(
                Method::POST,
                url,
                self.internal_headers(),
                Some(body),
                timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        if resp.status != StatusCode::OK {
            return Err(format!(
                "{url} answered {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ));
        }
        // A member that says it is in another cluster is not ours, whatever it answered.
        let theirs = resp.headers.get(CLUSTER_ID_HEADER).map(|v| v.as_bytes());
        if let (Some(ours), Some(theirs)) = (&self.cluster.id, theirs)
            && ours.as_bytes() != theirs
        {
            return Err(format!(
                "{url}: cluster_mismatch: it belongs to cluster {:?}, not {ours:?}",
                String::from_utf8_lossy(theirs)
            ));
        }
        serde_json::from_slice(&resp.body).map_err(|e| format!("bad answer from {url}: {e}"))
    }

    async fn send_snapshot(
        self: &Arc<Self>,
        url: &str,
        term: u64,
    ) -> Result<AppendResponse, String> {
        if self.newest_snapshot_index() == 0 {
            self.snapshot_now()
                .await
                .map_err(|e| format!("snapshot: {e}"))?;
        }
        let dir = self.cfg.wal.dir.clone();
        let (index, path) = snapshot::list(&dir)
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .ok_or("no snapshot to send")?;
        let body = tokio::fs::read(&path).await.map_err(|e| e.to_string())?;
        tracing::info!(index, bytes = body.len(), to = url, "sending a snapshot");
        let url = format!(
            "{url}/internal/v1/install-snapshot?term={term}&from={}",
            self.cluster.me
        );
        self.post_internal(&url, body.into(), Some(Duration::from_secs(120)))
            .await
    }
}

/// What to do after an answer from the replica.
enum Verdict {
    /// Confirmed through `after - 1`.
    Advanced(u64),
    /// Resend from this index (a mismatch, or a snapshot is needed when 0).
    Resend(u64),
    /// The request failed: back off, then resend what is unconfirmed.
    Backoff,
    /// The replica knows a newer term.
    StepDown,
}

fn judge(
    engine: &Engine,
    peer: &str,
    term: u64,
    sent_at: Instant,
    after: u64,
    result: Result<AppendResponse, String>,
    peer_last: &mut Option<u64>,
) -> Verdict {
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(peer, error = %e, "replication request failed");
            engine.record_error(peer, e);
            return Verdict::Backoff;
        }
    };
    *peer_last = Some(resp.last_index);
    if resp.term > term {
        tracing::warn!(
            peer,
            their_term = resp.term,
            term,
            "a replica knows a newer term"
        );
        engine.step_down(resp.term);
        return Verdict::StepDown;
    }
    if resp.ok {
        engine.record_progress(peer, term, sent_at, &resp);
        return Verdict::Advanced(after.max(resp.last_index + 1));
    }
    if resp.need_snapshot {
        *peer_last = Some(0);
        return Verdict::Resend(0);
    }
    if let Some(e) = resp.error {
        engine.record_error(peer, e);
        return Verdict::Backoff;
    }
    match resp.retry_from {
        Some(from) => Verdict::Resend(from.max(1).min(resp.last_index + 1)),
        None => Verdict::Backoff,
    }
}

/// Batches in flight to one replica at once: the next batch goes out while the previous one is
/// still being persisted there (replicas apply them in order).
const WINDOW: usize = 4;

/// Ships the log to `peer` for as long as this node is primary in `term` (or drains it after a
/// fence). Batches are pipelined; an idle primary sends heartbeats, and reads that need a quorum
/// round poke it to send one at once.
pub async fn run(engine: Arc<Engine>, peer: String, url: String, term: u64) {
    let start = engine.core().last_index;
    // `next`: the first entry not yet sent; `acked`: the first entry not yet confirmed.
    let (mut next, mut acked) = (start, start);
    let mut peer_last: Option<u64> = None;
    let mut backoff = MIN_BACKOFF;
    let mut poked = true;
    let heartbeat = engine.cluster.heartbeat;
    let mut inflight = FuturesOrdered::new();
    while engine.still_ships(term) {
        let notified = engine.poke.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut want_snapshot = false;
        while inflight.len() < WINDOW {
            let from = next.max(1);
            let Work::Entries { prev_term, items } = engine.work_for(from, peer_last) else {
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
            let (e, u) = (&engine, &url);
            inflight.push_back(async move {
                let sent_at = Instant::now();
                let r = e.send_append(u, term, from, prev_term, &items).await;
                (sent_at, after, r)
            });
            if heartbeat_only {
                break;
            }
        }
        let verdict = if inflight.is_empty() {
            if want_snapshot {
                let sent_at = Instant::now();
                let r = engine.send_snapshot(&url, term).await;
                let after = r.as_ref().map_or(0, |resp| resp.last_index + 1);
                judge(&engine, &peer, term, sent_at, after, r, &mut peer_last)
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
                Some((sent_at, after, r)) = inflight.next() => {
                    judge(&engine, &peer, term, sent_at, after, r, &mut peer_last)
                }
                _ = &mut notified, if inflight.len() < WINDOW => {
                    poked = true;
                    continue;
                }
            }
        };
        match verdict {
            Verdict::Advanced(after) => {
                acked = after;
                backoff = MIN_BACKOFF;
            }
            Verdict::Resend(from) => {
                inflight = FuturesOrdered::new();
                (next, acked) = (from, from);
            }
            Verdict::Backoff => {
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
            Verdict::StepDown => return,
        }
    }
}
