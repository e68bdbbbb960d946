//! The replica side of replication, performed: appends from the primary (the core matches them
//! with the log; a divergent suffix is truncated without the core lock; nothing is acknowledged
//! before it is durable) and snapshots installed in place of the log.

use super::disk::{self, Writer};
use super::{Core, Engine, EngineError};
use crate::log::{self, Entry, FrameRead};
use crate::replication::{AppendHeader, AppendResponse, Contact, Matching, Refusal};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An append's header and its entries with their encoded bytes.
type Batch = (AppendHeader, Vec<(Entry, Vec<u8>)>);

fn parse_append(body: &[u8]) -> Result<Batch, EngineError> {
    let bad = |why: &str| EngineError::Conflict(format!("malformed append: {why}"));
    let mut r = body;
    let FrameRead::Frame(head) = log::read_frame(&mut r).map_err(|e| bad(&e.to_string()))? else {
        return Err(bad("no header"));
    };
    let header: AppendHeader = log::decode(&head).map_err(|_| bad("header"))?;
    let mut entries = Vec::new();
    loop {
        match log::read_frame(&mut r).map_err(|e| bad(&e.to_string()))? {
            FrameRead::End => break,
            FrameRead::Bad(why) => return Err(bad(why)),
            FrameRead::Frame(p) => {
                let e: Entry = log::decode(&p).map_err(|_| bad("entry"))?;
                entries.push((e, p));
            }
        }
    }
    Ok((header, entries))
}

fn io(e: std::io::Error) -> EngineError {
    EngineError::Io(e.to_string())
}

/// Matching passes per append: a truncation shortens the log, after which the entries match.
const MATCH_PASSES: usize = 3;

impl Engine {
    fn reply(&self, core: &Core, ok: bool) -> AppendResponse {
        AppendResponse {
            term: core.node.term,
            ok,
            last_index: core.node.last_index,
            durable_index: self.durable_index(),
            applied_index: core.state.applied_index,
            ..Default::default()
        }
    }

    fn refuse(&self, core: &Core, refusal: Refusal) -> AppendResponse {
        let mut r = self.reply(core, false);
        match refusal {
            Refusal::Error(why) => r.error = Some(why),
            Refusal::RetryFrom(from) => r.retry_from = Some(from),
            Refusal::NeedSnapshot => r.need_snapshot = true,
        }
        r
    }

    fn writer(&self) -> Writer<'_> {
        Writer {
            cfg: &self.cfg.wal,
            durable: &self.durable,
            metrics: &self.metrics,
            standalone: &self.standalone,
        }
    }

    /// Handles one append request from a primary.
    pub async fn handle_append(&self, body: Bytes) -> Result<AppendResponse, EngineError> {
        let (h, entries) = parse_append(&body)?;
        // Batches are pipelined: one may overtake the batch before it. Give that one a moment to
        // land instead of rejecting and making the primary resend both.
        if self.core().node.append_is_ahead(&h) {
            let mut applied = self.applied.subscribe();
            let wait = applied.wait_for(|v| *v >= h.prev_index);
            let _ = tokio::time::timeout(Duration::from_millis(200), wait).await;
        }
        let upto = match self.append(&h, entries)? {
            Ok(upto) => upto,
            Err(refused) => return Ok(refused),
        };
        self.bump();
        // Acknowledge only what is durable here.
        let mut durable = self.durable.subscribe();
        let wait = durable.wait_for(|d| *d >= upto);
        let _ = tokio::time::timeout(self.cfg.ack_timeout, wait).await;
        let core = self.core();
        let mut r = self.reply(&core, true);
        r.durable_index = self.durable_index().min(upto);
        Ok(r)
    }

    /// Applies the term rules and log matching to an append and performs what they decide.
    /// Returns the index matched through, or the refusal to answer with.
    fn append(
        &self,
        h: &AppendHeader,
        mut entries: Vec<(Entry, Vec<u8>)>,
    ) -> Result<Result<u64, AppendResponse>, EngineError> {
        let _steps = self.steps();
        let contact = self.core().node.contact(h)?;
        match contact {
            Contact::Refuse(refusal) => return Ok(Err(self.refuse(&self.core(), refusal))),
            Contact::Accept(Some(change)) => self.change_role(change)?,
            Contact::Accept(None) => {}
        }
        let ids: Vec<(u64, u64)> = entries.iter().map(|(e, _)| (e.index, e.term)).collect();
        for _ in 0..MATCH_PASSES {
            let mut core = self.core();
            core.last_contact = Some(Instant::now());
            core.primary_last_index = h.primary_last_index;
            match core.node.match_append(h, &ids) {
                Matching::Refuse(refusal) => return Ok(Err(self.refuse(&core, refusal))),
                Matching::Truncate(from) => {
                    drop(core);
                    if let Some(refusal) = self.truncate_from(from)? {
                        return Ok(Err(self.refuse(&self.core(), refusal)));
                    }
                }
                Matching::Append { new, matched } => {
                    for (e, payload) in entries.drain(new) {
                        let events = match core.state.apply_logged(&e) {
                            Ok(a) => a.events,
                            Err(err) => {
                                tracing::warn!(index = e.index, error = %err, "replicated entry did not apply cleanly");
                                Vec::new()
                            }
                        };
                        core.last_ts = core.last_ts.max(e.ts_ms);
                        core.append(&e, payload, events);
                    }
                    core.node.matched(h.commit, matched);
                    self.update_gauges(&core);
                    self.metrics.commit_index.set(core.node.known_commit as i64);
                    self.publish_applied(core.state.applied_index);
                    return Ok(Ok(matched));
                }
            }
        }
        Err(EngineError::Conflict(
            "the log did not match the append after truncating".into(),
        ))
    }

    /// Discards entries from `index` on: a suffix written by an old primary that the new
    /// primary's log replaced (the core checked it holds nothing known to be committed).
    fn truncate_from(&self, index: u64) -> Result<Option<Refusal>, EngineError> {
        let (wal, old_last) = {
            let core = self.core();
            (core.wal.clone(), core.node.last_index)
        };
        let (loaded, new_wal) =
            disk::truncate_from(&self.writer(), &wal, index, self.cfg.accept_data_loss)
                .map_err(io)?;
        let discarded = old_last.saturating_sub(loaded.last_index);
        let mut core = self.core();
        core.wal = Arc::new(new_wal);
        core.state = loaded.state;
        let refusal = core.node.truncated(index, loaded.last_index, loaded.runs);
        if loaded.last_index + 1 == index {
            core.truncate_caches(index, old_last);
        } else {
            // Rebuilt from less than the entries before `index` (started empty to fetch a
            // snapshot): nothing cached is the log's any more.
            core.reset_caches(old_last);
        }
        core.discarded_total += discarded;
        self.publish_applied(core.state.applied_index);
        self.update_gauges(&core);
        self.metrics.entries_discarded.inc_by(discarded);
        tracing::warn!(
            discarded,
            from = index,
            last_index = core.node.last_index,
            "discarded divergent log entries"
        );
        Ok(refusal)
    }

    /// Replaces this replica's state and log with the primary's snapshot.
    pub async fn install_snapshot(
        &self,
        term: u64,
        from: &str,
        body: Bytes,
    ) -> Result<AppendResponse, EngineError> {
        {
            let _steps = self.steps();
            let change = self.core().node.snapshot_contact(term, from)?;
            if let Some(change) = change {
                self.change_role(change)?;
            }
        }
        let dir = self.cfg.wal.dir.clone();
        let (tmp, state) = tokio::task::spawn_blocking(move || disk::receive_snapshot(&dir, &body))
            .await
            .map_err(|e| EngineError::Io(e.to_string()))?
            .map_err(|e| EngineError::Conflict(format!("bad snapshot: {e}")))?;
        let index = state.applied_index;
        let _steps = self.steps();
        let (wal, old_last) = {
            let core = self.core();
            if let Err(e) = core.node.check_snapshot(term, from, index) {
                disk::discard_received(&tmp);
                return Err(e.into());
            }
            (core.wal.clone(), core.node.last_index)
        };
        let new_wal = disk::install_snapshot(&self.writer(), &wal, &tmp, index).map_err(io)?;
        let mut core = self.core();
        core.node.installed(index, state.applied_term);
        core.state = state;
        core.wal = Arc::new(new_wal);
        core.reset_caches(old_last);
        self.publish_applied(core.state.applied_index);
        self.update_gauges(&core);
        self.metrics.snapshot_index.set(index as i64);
        tracing::info!(index, from, "installed a snapshot from the primary");
        Ok(self.reply(&core, true))
    }
}
