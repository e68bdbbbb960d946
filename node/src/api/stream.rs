//! Server-sent event streams: new messages of a topic, and record changes under prefixes. Both send
//! only committed data, in log order, and every event carries an `id:` a client can resume from
//! (`from=` or the `Last-Event-ID` header, on any node): exactly after it, with no gap and no
//! duplicate, or with an explicit `reset` event when that history is gone here.
//!
//! Watch ids are log positions: everything matching up to the id has been sent. A `progress` event
//! opens every watch (and follows when the log moved on without a matching change), so a client has
//! a position to resume from before the first change. The changes of one log entry (a transaction,
//! an expiry) are sent together; all but the last carry `"more":true` and the id of the position
//! before the entry, so a stream cut inside an entry resumes at the entry's start.

use super::render::{self, Obj};
use super::{ApiError, Ctx, Req};
use crate::answer::Response;
use crate::engine::Engine;
use crate::state::KvEvent;
use rcluster_proto::migration::within;
use rcluster_proto::{SessionToken, ShardId};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use warp::Reply;
use warp::sse::Event;

const READ_BATCH: usize = 256;
/// Most prefixes of one watch, topics of one stream, prefixes of one merged read.
pub const MAX_SOURCES: usize = 128;
/// A quiet watch reports how far the log moved on at most this often, so a resume never has to
/// start from (possibly evicted) history it has already looked at.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// A stream with nothing to send sends its position this often anyway: a client that hears
/// nothing for several of these knows its node stopped (a paused or cut-off node keeps the
/// connection open) and resumes elsewhere.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// One server-sent event before it is encoded (warp's `Event` cannot be read back, and a merged
/// stream must read ids to rewrite them).
#[derive(Debug, Clone)]
pub struct Ev {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl Ev {
    pub fn new(event: &str, id: Option<String>, data: String) -> Ev {
        Ev {
            event: event.to_string(),
            id,
            data,
        }
    }

    /// An event that is not the last of its log entry (`"more":true`).
    pub fn has_more(&self) -> bool {
        self.data.ends_with(",\"more\":true}")
    }
}

tokio::task_local! {
    /// The in-flight gauge of the request being dispatched: a stream counts as in flight until
    /// its body is dropped, not only while its handler runs.
    pub static IN_FLIGHT: prometheus::IntGauge;
}

/// One open stream in its API's in-flight gauge.
struct Flight(prometheus::IntGauge);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Runs `produce` in its own task feeding a bounded channel, so a slow client applies back
/// pressure and a disconnected one stops the producer even while it waits for new data.
pub fn sse<F, Fut>(produce: F) -> Response
where
    F: FnOnce(mpsc::Sender<Ev>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let flight = IN_FLIGHT
        .try_with(|g| {
            g.inc();
            Flight(g.clone())
        })
        .ok();
    let (tx, rx) = mpsc::channel(READ_BATCH);
    let closed = tx.clone();
    let work = produce(tx);
    tokio::spawn(async move {
        tokio::select! {
            _ = work => {}
            _ = closed.closed() => {}
        }
    });
    let keep_alive = warp::sse::keep_alive().interval(Duration::from_secs(10));
    let events = Events {
        rx,
        _flight: flight,
    };
    warp::sse::reply(keep_alive.stream(events))
        .into_response()
        .map(crate::answer::Body::stream)
}

/// The stream's events; it leaves the in-flight gauge when dropped (with the response body).
struct Events {
    rx: mpsc::Receiver<Ev>,
    _flight: Option<Flight>,
}

impl futures_util::Stream for Events {
    type Item = Result<Event, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|e| {
            e.map(|e| {
                let mut out = Event::default().event(e.event).data(e.data);
                if let Some(id) = e.id {
                    out = out.id(id);
                }
                Ok(out)
            })
        })
    }
}

/// Where a client asks to resume: the `Last-Event-ID` header (what an SSE client sends when it
/// reconnects) wins over the `from` parameter it may still have in its URL.
pub fn resume_point(req: &Req) -> Option<&str> {
    req.headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .or_else(|| req.param("from").filter(|v| !v.is_empty()))
}

fn history_gone(message: String, extra: Obj) -> String {
    extra
        .str("code", "history_gone")
        .str("message", &message)
        .done()
}

pub async fn topic_stream(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let topic = super::topics::topic(ctx, req)?;
    let bad = |v: &str, what: &str| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("{what} must be a message offset, got {v:?}"),
        )
    };
    // `from` is the first offset to send; `Last-Event-ID` the last offset received.
    let requested = match req
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
    {
        Some(id) if !id.trim().is_empty() => {
            let id = id.trim();
            let last: u64 = id.parse().map_err(|_| bad(id, "Last-Event-ID"))?;
            Some(last.saturating_add(1))
        }
        _ => req.parse::<u64>("from")?,
    };
    let next = {
        let core = ctx.engine.core_view();
        let t =
            core.state.topics.get(&topic).ok_or_else(|| {
                ApiError::not_found("topic_not_found", format!("no topic {topic:?}"))
            })?;
        requested.unwrap_or(t.next_offset())
    };
    let engine = ctx.engine.clone();
    Ok(sse(move |tx| async move {
        let mut next = next;
        let (mut changed, mut durable) = (engine.changed_watch(), engine.durable_watch());
        loop {
            changed.borrow_and_update();
            durable.borrow_and_update();
            let (batch, first, seen, moved) = {
                let core = engine.core_view();
                let moved = Moved::of(&core.state, &topic);
                match core.state.topics.get(&topic) {
                    Some(t) => (
                        t.read(next, READ_BATCH),
                        t.first_offset,
                        core.applied_entry(),
                        moved,
                    ),
                    // Dropped here after its handoff: the new owner has it, same offsets.
                    None if moved.is_some() => (Vec::new(), next, core.applied_entry(), moved),
                    // Deleted: the stream ends.
                    None => return,
                }
            };
            // Retention dropped messages the client has not had: say so, then go on.
            if next < first {
                let data = history_gone(
                    format!("messages {next}..{first} of {topic:?} are gone (retention)"),
                    Obj::new().num("from", next).num("first_offset", first),
                );
                let ev = Ev::new("reset", Some((first - 1).to_string()), data);
                if tx.send(ev).await.is_err() {
                    return;
                }
                next = first;
            }
            if batch.is_empty()
                && let Some(m) = moved
            {
                // Every message this shard applied was sent; the handoff must be committed
                // before the client goes elsewhere (a failover may undo an uncommitted one).
                if engine.wait_read_committed(seen).await {
                    // The id stays a message offset (the last one sent), for Last-Event-ID.
                    let id = next.checked_sub(1).map(|o| o.to_string());
                    let _ = tx.send(m.event(&next.to_string(), id)).await;
                }
                return;
            }
            if batch.is_empty() {
                if !engine.progress_changed(&mut changed, &mut durable).await {
                    return;
                }
                continue;
            }
            if !engine.wait_read_committed(seen).await {
                return;
            }
            for (offset, m) in &batch {
                let ev = Ev::new(
                    "message",
                    Some(offset.to_string()),
                    render::message(*offset, m),
                );
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            next = batch.last().map_or(next, |(o, _)| o + 1);
        }
    }))
}

/// A topic of a stream whose slot this shard handed off: the stream ends with a `moved` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub topic: String,
    pub shard: ShardId,
    pub epoch: u64,
}

impl Moved {
    /// The handoff of `name`'s slot in this shard's log, if it was handed off.
    pub fn of(state: &crate::state::State, name: &str) -> Option<Moved> {
        let slot = rcluster_proto::slot_of(name, rcluster_proto::DEFAULT_SLOTS);
        state
            .slots
            .outgoing
            .iter()
            .filter(|o| rcluster_proto::migration::within(slot, o.start, o.end))
            .find_map(|o| {
                o.handed_off.map(|epoch| Moved {
                    topic: name.to_string(),
                    shard: o.to,
                    epoch,
                })
            })
    }

    /// The last event of a stream: where to resume (`resume`: what `from=` takes), at which
    /// shard.
    pub fn event(&self, resume: &str, id: Option<String>) -> Ev {
        let data = Obj::new()
            .str("topic", &self.topic)
            .num("shard", u64::from(self.shard))
            .num("epoch", self.epoch)
            .str("resume", resume)
            .done();
        Ev::new("moved", id, data)
    }
}
/// The prefixes of a watch or merged read (`prefix`, repeatable; none or `""` means every key).
pub fn prefixes(req: &Req) -> Result<Vec<String>, ApiError> {
    let given = req.params("prefix");
    if given.len() > MAX_SOURCES {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("at most {MAX_SOURCES} prefixes, got {}", given.len()),
        ));
    }
    if given.contains(&"") {
        return Ok(Vec::new());
    }
    Ok(given.into_iter().map(str::to_string).collect())
}

/// The position a watch starts after on this node's shard: the client's resume point, or the
/// commit index now.
pub fn watch_start(ctx: &Ctx, req: &Req) -> Result<Option<u64>, ApiError> {
    match resume_point(req) {
        None => Ok(None),
        Some(p) => {
            let token: rcluster_proto::SessionToken = p.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!(
                        "a watch resumes from an event id (a log position, or SHARD:POSITION,… \
                         for a watch over several shards), got {:?}",
                        p.chars().take(64).collect::<String>()
                    ),
                )
            })?;
            Ok(Some(token.get(ctx.routing.shard)))
        }
    }
}

pub async fn watch(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let prefixes = prefixes(req)?;
    let from = watch_start(ctx, req)?;
    let engine = ctx.engine.clone();
    // A part of a watch merged elsewhere goes by the merging node's map when it is older.
    let merged_by = req
        .headers
        .get(rcluster_proto::headers::EPOCH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let epoch = ctx.routing.epoch().min(merged_by.unwrap_or(u64::MAX));
    let shard = ctx.routing.shard;
    // Decided now, before the answer's head goes out, not when the stream's task first runs: a
    // write the client makes as soon as the stream opened must be in it.
    let from = from.unwrap_or_else(|| engine.commit_index());
    Ok(sse(move |tx| {
        watch_local(engine, (shard, epoch), prefixes, from, tx)
    }))
}

/// Sends this node's committed record changes under `prefixes` after log position `from`, until
/// the receiver goes away, or until this shard hands off a range the
/// prefixes may touch: then a last `moved` event says where to resume (see `Handoffs`).
///
/// Ids are positions in `shard`'s log as a session token (`SHARD:POSITION`, a plain position on
/// shard 0), so a resume anywhere, even at another shard after a move, reads them right.
/// `map_epoch`: the epoch of the map the watch was opened with (see `Handoffs`).
pub async fn watch_local(
    engine: Arc<Engine>,
    (shard, map_epoch): (ShardId, u64),
    prefixes: Vec<String>,
    from: u64,
    tx: mpsc::Sender<Ev>,
) {
    let mut after = from;
    let pos = |at: u64| Some(SessionToken::at(shard, at).to_string());
    let progress = |at: u64| Ev::new("progress", pos(at), "{}".into());
    let mut handoffs = Handoffs::new(&engine, &prefixes, map_epoch);
    if tx.send(progress(after)).await.is_err() {
        return;
    }
    // `reported`: the position the client last got as an id; `sent`: when it last got anything.
    let (mut reported, mut sent) = (after, Instant::now());
    let (mut changed, mut durable) = (engine.changed_watch(), engine.durable_watch());
    loop {
        changed.borrow_and_update();
        durable.borrow_and_update();
        let Some((events, upto)) = engine.events_after(after, &prefixes) else {
            // Changes after `after` are not kept here (evicted, or before this node's start):
            // tell the client to re-read, then go on from the present.
            let now = engine.commit_index().max(after).max(engine.history_start());
            let data = history_gone(
                format!(
                    "changes after position {after} are no longer kept on this node; re-read \
                     what you watch (at position {now} or later), then apply the events that follow"
                ),
                Obj::new().num("from", after).num("position", now),
            );
            if tx.send(Ev::new("reset", pos(now), data)).await.is_err() {
                return;
            }
            (after, reported, sent) = (now, now, Instant::now());
            continue;
        };
        for (i, e) in events.iter().enumerate() {
            let more = events.get(i + 1).is_some_and(|n| n.index == e.index);
            let id = if more { e.index - 1 } else { e.index };
            let ev = Ev::new(e.kind.as_str(), pos(id), change(e, more));
            if tx.send(ev).await.is_err() {
                return;
            }
            (reported, sent) = (id, Instant::now());
        }
        after = after.max(upto);
        if !events.is_empty() {
            continue;
        }
        if let Some(moved) = handoffs.check(&engine, after) {
            // Every change up to `after` was sent, and the range's last one is before its
            // handoff, which is committed by now.
            let resume = SessionToken::at(shard, after).to_string();
            let _ = tx.send(moved.event(&resume)).await;
            return;
        }
        let moved_on = after > reported && sent.elapsed() >= PROGRESS_EVERY;
        if moved_on || sent.elapsed() >= HEARTBEAT {
            if tx.send(progress(after)).await.is_err() {
                return;
            }
            (reported, sent) = (after, Instant::now());
        }
        // Wake for new changes, or when a progress report or a heartbeat falls due.
        let due = if after > reported {
            PROGRESS_EVERY
        } else {
            HEARTBEAT
        };
        let wait = engine.progress_changed(&mut changed, &mut durable);
        if let Ok(false) = tokio::time::timeout(due.saturating_sub(sent.elapsed()), wait).await {
            return;
        }
    }
}

/// The ranges this shard hands off while a watch runs. The watch ends with `moved` once it has
/// sent every change up to the handoff (the range's last change is before its fence), so the client
/// resumes at the new owner: the resume point names only this shard's position, so the new owner
/// sends its own changes of the range from the start of its history, and it has none before it
/// took the range in (an import is silent: the watchers heard those changes here).
///
/// A handoff already in the log when the watch opened concerns it only if the map it was opened
/// with is older: a watch over shards opened then has no part at the new owner (this node did not
/// know it), so it must end at once and be opened again once the map names the new owner.
struct Handoffs {
    /// Handoffs the watch's map already knew (their ranges are not served here).
    known: Vec<(u32, u32, u64)>,
    /// A new handoff that concerns the watch, and the applied index when it was seen.
    due: Option<(WatchMoved, u64)>,
    /// The slots of the prefixes when each holds a whole hash tag; `None`: keys anywhere.
    slots: Option<Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchMoved {
    pub shard: ShardId,
    pub epoch: u64,
    pub start: u32,
    pub end: u32,
}

impl WatchMoved {
    pub fn event(&self, resume: &str) -> Ev {
        let data = Obj::new()
            .num("shard", u64::from(self.shard))
            .num("epoch", self.epoch)
            .num("start", u64::from(self.start))
            .num("end", u64::from(self.end))
            .str("resume", resume)
            .done();
        Ev::new("moved", Some(resume.to_string()), data)
    }
}

fn handed_off(engine: &Engine) -> (Vec<(u32, u32, u64, ShardId)>, u64) {
    let core = engine.core_view();
    let list = core
        .state
        .slots
        .outgoing
        .iter()
        .filter_map(|o| o.handed_off.map(|e| (o.start, o.end, e, o.to)))
        .collect();
    (list, core.state.applied_index)
}

impl Handoffs {
    fn new(engine: &Engine, prefixes: &[String], map_epoch: u64) -> Handoffs {
        let slots = (!prefixes.is_empty()
            && prefixes
                .iter()
                .all(|p| rcluster_proto::slots::hash_tag(p).len() < p.len()))
        .then(|| {
            prefixes
                .iter()
                .map(|p| rcluster_proto::slot_of(p, rcluster_proto::DEFAULT_SLOTS))
                .collect()
        });
        let (list, _) = handed_off(engine);
        Handoffs {
            known: list
                .into_iter()
                .filter(|(_, _, ep, _)| *ep <= map_epoch)
                .map(|(s, e, ep, _)| (s, e, ep))
                .collect(),
            due: None,
            slots,
        }
    }

    /// The handoff to report once the watch has sent everything up to `after`.
    fn check(&mut self, engine: &Engine, after: u64) -> Option<WatchMoved> {
        if self.due.is_none() {
            let (list, applied) = handed_off(engine);
            self.due = list
                .into_iter()
                .filter(|(s, e, ep, _)| !self.known.contains(&(*s, *e, *ep)))
                .find(|(s, e, _, _)| match &self.slots {
                    None => true,
                    Some(slots) => slots.iter().any(|x| within(*x, *s, *e)),
                })
                .map(|(start, end, epoch, shard)| {
                    let m = WatchMoved {
                        shard,
                        epoch,
                        start,
                        end,
                    };
                    (m, applied)
                });
        }
        match &self.due {
            Some((m, seen)) if after >= *seen => Some(m.clone()),
            _ => None,
        }
    }
}

/// A change's data: the record as it is after the change (`value` and `created_ms` for puts).
fn change(e: &KvEvent, more: bool) -> String {
    let mut data = Obj::new().str("key", e.key()).num("version", e.version());
    if let Some(v) = e.value() {
        data = data.raw("value", v);
    }
    data = data.num("modified_ms", e.modified_ms());
    if let Some(c) = e.created_ms() {
        data = data.num("created_ms", c);
    }
    if more {
        data = data.bool("more", true);
    }
    data.done()
}
