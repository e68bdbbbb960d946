//! Streams over several shards: a watch whose prefixes span shards, a stream over topics of several
//! shards. Each shard's part is served by this node (its own shard) or relayed from the shard's
//! primary or a member, and the parts are merged into one stream whose ids hold every part's
//! position, so one resume point resumes every shard where it stopped.

use super::fanout::shard_target;
use super::forward::{open_stream, relay};
use super::stream::{Ev, sse, watch_local};
use super::{ApiError, Ctx, Req};
use crate::answer::Response;
use rcluster_client::transport::Streamed;
use rcluster_proto::{SessionToken, ShardId};
use tokio::sync::mpsc;

/// A merged stream's position: one part per shard, shown as one event id.
pub trait Positions: Send + 'static {
    /// Takes in a part's event id (an id it cannot read changes nothing).
    fn observe(&mut self, shard: ShardId, id: &str);
    /// The id of everything observed so far.
    fn id(&self) -> String;
}

impl Positions for SessionToken {
    fn observe(&mut self, shard: ShardId, id: &str) {
        // A part's id is its shard's position, plain or as a token naming the shard.
        if let Ok(index) = id.parse::<u64>() {
            SessionToken::observe(self, shard, index);
        } else if let Ok(token) = id.parse::<SessionToken>() {
            SessionToken::observe(self, shard, token.get(shard));
        }
    }
    fn id(&self) -> String {
        self.to_string()
    }
}

/// A part this node produces itself: the producer and what it produces.
pub type LocalPart = (
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    mpsc::Receiver<Ev>,
);

/// One shard's part of a merged stream.
pub enum Source {
    /// Served by this node.
    Local(LocalPart),
    /// Relayed from another shard.
    Remote(Box<rcluster_client::transport::EventStream>),
}

/// A watch over several shards: each shard's committed changes in its log order, ids holding the
/// position reached in every shard, so a client resumes all of them at once.
pub async fn watch_everywhere(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let prefixes = super::stream::prefixes(req)?;
    // A watch without a resume point starts where the log is as it is asked for, not where it
    // is once the stream's task first runs: a write the client makes right after the stream
    // opened must be in it.
    let from = super::stream::watch_start(ctx, req)?;
    let local_from = from.unwrap_or_else(|| ctx.engine.commit_index());
    let mine = ctx.routing.shard;
    let mut parts = Vec::new();
    for shard in ctx.routing.shards() {
        if shard == mine {
            let (tx, rx) = mpsc::channel(256);
            let at = (mine, ctx.routing.epoch());
            let local = watch_local(ctx.engine.clone(), at, prefixes.clone(), local_from, tx);
            parts.push((shard, Source::Local((Box::pin(local), rx))));
            continue;
        }
        let target = shard_target(ctx, shard)?;
        match open_stream(ctx, req, &target, &req.path_and_query()).await? {
            Streamed::Events(events) => parts.push((shard, Source::Remote(Box::new(events)))),
            Streamed::Response(r) => return Ok(refusal(r)),
        }
    }
    Ok(sse(move |out| merge(parts, SessionToken::new(), out)))
}

/// A part's answer that was not a stream, passed on as it is.
pub fn refusal(r: rcluster_client::transport::Response) -> Response {
    let mut refused = Response::new(r.body.into());
    *refused.status_mut() = r.status;
    *refused.headers_mut() = r.headers;
    refused
}

/// Merges the parts' events into `out`, each part in its own order. The merged stream opens once
/// every part has reported where it starts (its first event: `progress` or `reset`), so even its
/// first id names every shard. The changes of one log entry stay together (a part's events marked
/// `more` wait for the entry's last one), so a merged stream cut anywhere resumes each shard at an
/// entry boundary. It ends when any part ends (its node gone): the client resumes elsewhere.
pub async fn merge<P: Positions>(
    parts: Vec<(ShardId, Source)>,
    mut position: P,
    out: mpsc::Sender<Ev>,
) {
    let (tx, mut rx) = mpsc::channel::<(ShardId, Ev)>(256);
    // Dropped when the merge ends, which stops every part.
    let mut tasks = tokio::task::JoinSet::new();
    let count = parts.len();
    for (shard, part) in parts {
        let mut part_rx = match part {
            Source::Local((produce, rx)) => {
                tasks.spawn(produce);
                rx
            }
            Source::Remote(events) => {
                let (part_tx, part_rx) = mpsc::channel::<Ev>(256);
                tasks.spawn(relay(*events, part_tx, Some));
                part_rx
            }
        };
        let tx = tx.clone();
        tasks.spawn(async move {
            while let Some(ev) = part_rx.recv().await {
                if tx.send((shard, ev)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut started = std::collections::BTreeSet::new();
    let mut early = Vec::new();
    let mut reset: Option<String> = None;
    let mut pending: std::collections::BTreeMap<ShardId, Vec<Ev>> = Default::default();
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            // Any part ending (its node gone) ends the whole stream.
            Some(_) = tasks.join_next() => return,
        };
        let Some((shard, ev)) = next else { return };
        if ev.event == "moved" {
            // A part's range moved to another shard: the whole stream ends where it stands, and
            // the client resumes it over the new map. Before the stream opened there is no
            // position to give: it simply ends (the client resumes where it was).
            if started.len() == count {
                let _ = out.send(moved(&ev, position.id())).await;
            }
            return;
        }
        if started.len() < count {
            if started.insert(shard) {
                if let Some(id) = &ev.id {
                    position.observe(shard, id);
                }
                if ev.event == "reset" && reset.is_none() {
                    reset = Some(ev.data);
                }
            } else {
                early.push((shard, ev));
            }
            if started.len() < count {
                continue;
            }
            let opening = match reset.take() {
                Some(data) => Ev::new("reset", Some(position.id()), data),
                None => Ev::new("progress", Some(position.id()), "{}".into()),
            };
            if out.send(opening).await.is_err() {
                return;
            }
            for (shard, ev) in std::mem::take(&mut early) {
                if !pass(shard, ev, &mut position, &mut pending, &out).await {
                    return;
                }
            }
            continue;
        }
        if !pass(shard, ev, &mut position, &mut pending, &out).await {
            return;
        }
    }
}

/// A part's `moved` event, resuming at the merged position.
fn moved(part: &Ev, resume: String) -> Ev {
    let mut data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&part.data).unwrap_or_default();
    data.insert("resume".into(), resume.clone().into());
    Ev::new(
        "moved",
        Some(resume),
        serde_json::Value::Object(data).to_string(),
    )
}

/// Sends one part's event on with the merged id; false when the client is gone.
async fn pass<P: Positions>(
    shard: ShardId,
    ev: Ev,
    position: &mut P,
    pending: &mut std::collections::BTreeMap<ShardId, Vec<Ev>>,
    out: &mpsc::Sender<Ev>,
) -> bool {
    if ev.has_more() {
        pending.entry(shard).or_default().push(ev);
        return true;
    }
    let mut entry = pending.remove(&shard).unwrap_or_default();
    entry.push(ev);
    for mut ev in entry {
        if let Some(id) = &ev.id {
            position.observe(shard, id);
        }
        ev.id = Some(position.id());
        if out.send(ev).await.is_err() {
            return false;
        }
    }
    true
}
