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

/// Runs `produce` in its own task feeding a bounded channel, so a slow client applies back
/// pressure and a disconnected one stops the producer even while it waits for new data.
fn sse<F, Fut>(produce: F) -> Response
where
    F: FnOnce(mpsc::Sender<Event>) -> Fut,
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

struct Events(mpsc::Receiver<Event>);

impl futures_util::Stream for Events {
    type Item = Result<Event, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
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
                let ev = Event::default()
                    .event("message")
                    .id(offset.to_string())
                    .data(render::message(*offset, m));
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
    let mut after = engine.commit_index();
    Ok(sse(move |tx| async move {
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
                let _ = tx.send(Event::default().event("error").data(data)).await;
                return;
            };
            for e in &events {
                let mut data = Obj::new().str("key", &e.key).num("version", e.index);
                if let Some(v) = &e.value {
                    data = data.raw("value", v);
                }
                let ev = Event::default()
                    .event(e.kind.as_str())
                    .id(e.index.to_string())
                    .data(data.done());
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            after = after.max(upto);
            if events.is_empty() && !engine.progress_changed(&mut changed, &mut durable).await {
                return;
            }
        }
    }))
}
