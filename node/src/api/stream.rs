//! Server-sent event streams: new messages of a topic, and record changes under a prefix. Both
//! send only committed data, in log order.

use super::render::{self, Obj};
use super::{ApiError, Ctx, Req};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use warp::Reply;
use warp::reply::Response;
use warp::sse::Event;

const READ_BATCH: usize = 256;

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
}

/// Runs `produce` in its own task feeding a bounded channel, so a slow client applies back
/// pressure and a disconnected one stops the producer even while it waits for new data.
pub fn sse<F, Fut>(produce: F) -> Response
where
    F: FnOnce(mpsc::Sender<Ev>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
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
    warp::sse::reply(keep_alive.stream(Events(rx))).into_response()
}

struct Events(mpsc::Receiver<Ev>);

impl futures_util::Stream for Events {
    type Item = Result<Event, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| {
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

pub async fn topic_stream(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let topic = super::topics::topic(ctx, req)?;
    let from = req.parse::<u64>("from")?;
    let next = {
        let core = ctx.engine.core();
        let t =
            core.state.topics.get(&topic).ok_or_else(|| {
                ApiError::not_found("topic_not_found", format!("no topic {topic:?}"))
            })?;
        from.unwrap_or(t.next_offset())
    };
    let engine = ctx.engine.clone();
    Ok(sse(move |tx| async move {
        let mut next = next;
        let (mut changed, mut durable) = (engine.changed_watch(), engine.durable_watch());
        loop {
            changed.borrow_and_update();
            durable.borrow_and_update();
            let (batch, seen) = {
                let core = engine.core();
                // The topic was deleted: end the stream.
                let Some(t) = core.state.topics.get(&topic) else {
                    return;
                };
                (t.read(next, READ_BATCH), core.state.applied_index)
            };
            if batch.is_empty() {
                if !engine.progress_changed(&mut changed, &mut durable).await {
                    return;
                }
                continue;
            }
            if !engine.wait_committed(seen).await {
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

pub async fn watch(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let prefix = req.param("prefix").unwrap_or_default().to_string();
    let engine = ctx.engine.clone();
    let after = engine.commit_index();
    Ok(sse(move |tx| watch_local(engine, prefix, after, tx)))
}

/// Sends this node's committed record changes under `prefix` after log position `after`, ids being
/// log indexes, until the receiver goes away or the watcher lags too far (an `error` event).
pub async fn watch_local(
    engine: std::sync::Arc<crate::engine::Engine>,
    prefix: String,
    mut after: u64,
    tx: mpsc::Sender<Ev>,
) {
    let (mut changed, mut durable) = (engine.changed_watch(), engine.durable_watch());
    loop {
        changed.borrow_and_update();
        durable.borrow_and_update();
        let Some((events, upto)) = engine.events_after(after, &prefix) else {
            // Changes were dropped while this watcher lagged: tell the client to resync
            // (list, then watch again) rather than silently skipping them.
            let data = Obj::new()
                .str("code", "lagged")
                .str("message", "changes were dropped; list and watch again")
                .done();
            let _ = tx.send(Ev::new("error", None, data)).await;
            return;
        };
        for e in &events {
            let mut data = Obj::new().str("key", &e.key).num("version", e.index);
            if let Some(v) = &e.value {
                data = data.raw("value", v);
            }
            let ev = Ev::new(e.kind.as_str(), Some(e.index.to_string()), data.done());
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        after = after.max(upto);
        if events.is_empty() && !engine.progress_changed(&mut changed, &mut durable).await {
            return;
        }
    }
}
