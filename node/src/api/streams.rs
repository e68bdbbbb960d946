//! `GET /v1/stream?topic=a&topic=b`: one stream over several topics, their committed messages in
//! log order (within a shard; topics of several shards are merged like a watch over shards).
//!
//! The stream's position is the next offset of every topic, and every event's `id` is that whole
//! position (`a:18,b:5`). `from=` (or `Last-Event-ID`) takes such an id: each topic resumes at its
//! own offset, so a stream cut anywhere — even between two messages of one transaction — resumes
//! with no gap and no duplicate, on any node. A topic the position does not name starts at its end.
//! The topics a node does not own are streamed from their shards and merged here (the position
//! needs no shard numbers: topic names are unique in the cluster).

use super::fanout::shard_target;
use super::multistream::{Positions, Source, merge, refusal};
use super::render::{self, Obj};
use super::request::validate_name;
use super::stream::{Ev, HEARTBEAT, MAX_SOURCES, Moved, resume_point, sse};
use super::{ApiError, Ctx, Req};
use crate::answer::Response;
use crate::engine::Engine;
use crate::state::Message;
use http::StatusCode;
use rcluster_client::transport::Streamed;
use rcluster_proto::{ShardId, headers};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

const READ_BATCH: usize = 256;

/// The next offset of each topic: a multi-topic stream's position and event id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPositions(BTreeMap<String, u64>);

impl fmt::Display for TopicPositions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (topic, next)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{topic}:{next}")?;
        }
        Ok(())
    }
}

impl FromStr for TopicPositions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = BTreeMap::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (topic, next) = part
                .trim()
                .rsplit_once(':')
                .ok_or_else(|| format!("{part:?} is not TOPIC:OFFSET"))?;
            let next: u64 = next
                .parse()
                .map_err(|_| format!("{part:?}: {next:?} is not an offset"))?;
            if out.len() == MAX_SOURCES {
                return Err(format!("more than {MAX_SOURCES} topics"));
            }
            out.insert(topic.to_string(), next);
        }
        Ok(TopicPositions(out))
    }
}

impl Positions for TopicPositions {
    fn observe(&mut self, _shard: ShardId, id: &str) {
        if let Ok(p) = id.parse::<TopicPositions>() {
            for (topic, next) in p.0 {
                let at = self.0.entry(topic).or_insert(0);
                *at = (*at).max(next);
            }
        }
    }

    fn id(&self) -> String {
        self.to_string()
    }
}

pub async fn streams(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let mut topics = Vec::new();
    for t in req.params("topic") {
        validate_name("topic", t, ctx.limits.max_name_bytes)?;
        if !topics.iter().any(|x| x == t) {
            topics.push(t.to_string());
        }
    }
    if topics.is_empty() || topics.len() > MAX_SOURCES {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!(
                "name 1..={MAX_SOURCES} topics (topic=A&topic=B), got {}",
                topics.len()
            ),
        ));
    }
    let from = match resume_point(req) {
        None => TopicPositions::default(),
        Some(p) => p.parse().map_err(|e| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("a stream resumes from an event id (TOPIC:OFFSET,…): {e}"),
            )
        })?,
    };
    let mine = ctx.routing.shard;
    let mut by_shard: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
    for t in &topics {
        // This shard's own record of a handoff is newer than its map: a stream reopened after a
        // `moved` event goes to the new owner even before the map names it.
        by_shard.entry(owner(ctx, t)).or_default().push(t.clone());
    }
    let direct = crate::headers::header(&req.headers, &super::DIRECT_HEADER).is_some();
    if let Some((owner, names)) = by_shard.iter().find(|(s, _)| **s != mine)
        && direct
    {
        return Err(moved(ctx, &names[0], *owner));
    }
    let mut sources = Vec::new();
    for (shard, names) in by_shard {
        if shard == mine {
            let start = local_start(&ctx.engine, &names, &from)?;
            let (tx, rx) = mpsc::channel(READ_BATCH);
            let local = stream_local(ctx.engine.clone(), start, tx);
            sources.push((shard, Source::Local((Box::pin(local), rx))));
            continue;
        }
        let mut path = String::from("/v1/stream?");
        for n in &names {
            path.push_str(&format!("topic={n}&"));
        }
        path.push_str(&format!("from={from}"));
        let target = shard_target(ctx, shard)?;
        match super::forward::open_stream(ctx, req, &target, &path).await? {
            Streamed::Events(events) => sources.push((shard, Source::Remote(Box::new(events)))),
            Streamed::Response(r) => return Ok(refusal(r)),
        }
    }
    if sources.len() == 1
        && let Some((_, Source::Local((produce, mut rx)))) = sources.pop()
    {
        // One local source: no merging needed.
        return Ok(sse(move |out| async move {
            let relay = async move {
                while let Some(ev) = rx.recv().await {
                    if out.send(ev).await.is_err() {
                        return;
                    }
                }
            };
            tokio::join!(produce, relay);
        }));
    }
    Ok(sse(move |out| merge(sources, from, out)))
}

/// The topic's shard by the map, or by this shard's own newer record of handing it off.
fn owner(ctx: &Ctx, topic: &str) -> ShardId {
    let slot = rcluster_proto::slot_of(topic, rcluster_proto::DEFAULT_SLOTS);
    let (mine, epoch) = (ctx.routing.shard, ctx.routing.epoch());
    let newer = ctx
        .engine
        .core_view()
        .state
        .slots
        .owner_after(slot, epoch, mine);
    newer.unwrap_or_else(|| ctx.routing.owner_of(topic))
}

fn moved(ctx: &Ctx, topic: &str, owner: ShardId) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "moved",
        format!(
            "topic {topic:?} belongs to shard {owner}; nothing was done: refresh the map \
             (GET /v1/cluster)"
        ),
    );
    e.headers.push((headers::SHARD, owner.to_string()));
    e.headers
        .push((headers::EPOCH, ctx.routing.epoch().to_string()));
    e
}

/// Where each of this node's topics starts: the position given, else its end now. Every topic
/// must exist.
fn local_start(
    engine: &Engine,
    topics: &[String],
    from: &TopicPositions,
) -> Result<TopicPositions, ApiError> {
    let core = engine.core_view();
    let mut start = BTreeMap::new();
    for name in topics {
        let t =
            core.state.topics.get(name).ok_or_else(|| {
                ApiError::not_found("topic_not_found", format!("no topic {name:?}"))
            })?;
        start.insert(
            name.clone(),
            from.0.get(name).copied().unwrap_or(t.next_offset()),
        );
    }
    Ok(TopicPositions(start))
}

/// Sends the committed messages of this node's topics from `at`, in log order, until the client
/// goes away or a topic is deleted.
async fn stream_local(engine: Arc<Engine>, mut at: TopicPositions, tx: mpsc::Sender<Ev>) {
    let id = |at: &TopicPositions| Some(at.to_string());
    if tx
        .send(Ev::new("progress", id(&at), "{}".into()))
        .await
        .is_err()
    {
        return;
    }
    let (mut changed, mut durable) = (engine.changed_watch(), engine.durable_watch());
    let mut sent = Instant::now();
    loop {
        changed.borrow_and_update();
        durable.borrow_and_update();
        let Some((batch, resets, seen, moved)) = read(&engine, &at) else {
            return;
        };
        for (topic, first) in resets {
            let from = at.0.insert(topic.clone(), first).unwrap_or(0);
            let data = Obj::new()
                .str("topic", &topic)
                .str("code", "history_gone")
                .str(
                    "message",
                    &format!("messages {from}..{first} of {topic:?} are gone (retention)"),
                )
                .num("from", from)
                .num("first_offset", first)
                .done();
            if tx.send(Ev::new("reset", id(&at), data)).await.is_err() {
                return;
            }
        }
        if batch.is_empty()
            && let Some(m) = moved
        {
            // Everything this shard applied of the topic has been sent; the handoff must be
            // committed before the client is told to go on elsewhere (an uncommitted one may
            // still be undone by a failover).
            if engine.wait_read_committed(seen).await {
                let _ = tx
                    .send(m.event(&at.to_string(), Some(at.to_string())))
                    .await;
            }
            return;
        }
        if batch.is_empty() {
            if sent.elapsed() >= HEARTBEAT {
                if tx
                    .send(Ev::new("progress", id(&at), "{}".into()))
                    .await
                    .is_err()
                {
                    return;
                }
                sent = Instant::now();
            }
            let wait = engine.progress_changed(&mut changed, &mut durable);
            let left = HEARTBEAT.saturating_sub(sent.elapsed());
            if let Ok(false) = tokio::time::timeout(left, wait).await {
                return;
            }
            continue;
        }
        if !engine.wait_read_committed(seen).await {
            return;
        }
        sent = Instant::now();
        for (topic, offset, m) in batch {
            at.0.insert(topic.clone(), offset + 1);
            let data = render::topic_message(&topic, offset, &m);
            if tx.send(Ev::new("message", id(&at), data)).await.is_err() {
                return;
            }
        }
    }
}

type Batch = Vec<(String, u64, Message)>;

/// Topics whose position retention passed, with their first offset now.
type Resets = Vec<(String, u64)>;

/// A read's batch, its resets, the applied entry it reflects and a handoff (see `read`).
type Read = (Batch, Resets, (u64, Option<u64>), Option<Moved>);

/// The next messages of every topic in log order, the topics whose position retention passed
/// (with their first offset), the applied entry (index, term) they reflect, and a topic this shard handed off.
/// `None` when a topic is gone (deleted, or dropped here before its handoff was seen).
fn read(engine: &Engine, at: &TopicPositions) -> Option<Read> {
    let core = engine.core_view();
    let moved = at.0.keys().find_map(|t| Moved::of(&core.state, t));
    if moved.is_some() && at.0.keys().any(|t| !core.state.topics.contains_key(t)) {
        // Dropped here already: the new owner has every message with the same offsets.
        return Some((Vec::new(), Vec::new(), core.applied_entry(), moved));
    }
    let mut resets = Vec::new();
    let mut parts = Vec::new();
    // A topic that returned a full batch may have more: nothing logged after its batch may go
    // before the rest of it (its highest index: that topic's batch always goes out whole, so the
    // stream never stalls).
    let mut cutoff = u64::MAX;
    for (name, next) in &at.0 {
        let t = core.state.topics.get(name)?;
        if *next < t.first_offset {
            resets.push((name.clone(), t.first_offset));
        }
        let batch = t.read(*next, READ_BATCH);
        if batch.len() == READ_BATCH
            && let Some(highest) = batch.iter().map(|(_, m)| m.index).max()
        {
            cutoff = cutoff.min(highest);
        }
        parts.push((name, batch.into_iter().peekable()));
    }
    // Each topic in offset order, the topics merged by log index. A topic imported from another
    // shard keeps that shard's indices on the messages it brought, so indices need not grow
    // along a topic: a sort by index would reorder it, and the cutoff must end a topic's part,
    // never skip a message inside it.
    let mut all = Vec::new();
    loop {
        let head = parts
            .iter_mut()
            .filter_map(|(name, b)| b.peek().map(|(o, m)| (m.index, name.as_str(), *o)))
            .filter(|(index, _, _)| *index <= cutoff)
            .min();
        let Some((_, name, _)) = head else { break };
        let Some((_, part)) = parts.iter_mut().find(|(n, _)| n.as_str() == name) else {
            break;
        };
        let Some((offset, m)) = part.next() else {
            break;
        };
        all.push((name.to_string(), offset, m));
    }
    Some((all, resets, core.applied_entry(), moved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Op;
    use crate::state::{State, entry};

    /// The handoff in the source's log is what ends a stream of a topic of the range, with the
    /// new owner, the epoch and the resume point; a fence alone (the move may still be aborted)
    /// and a topic outside the range do not.
    #[test]
    fn a_handed_off_topic_ends_its_stream_with_moved() {
        let slot = rcluster_proto::slot_of("t", rcluster_proto::DEFAULT_SLOTS);
        let other = (0..)
            .map(|i| format!("o{i}"))
            .find(|n| rcluster_proto::slot_of(n, rcluster_proto::DEFAULT_SLOTS) != slot);
        let other = other.unwrap();
        let mut s = State::default();
        let (start, end) = (slot, slot);
        let fence = Op::SlotsFence { start, end, to: 2 };
        assert!(s.apply_op(&entry(1, 1, fence)).unwrap().changed);
        assert_eq!(Moved::of(&s, "t"), None, "fenced only: no move yet");
        let handoff = Op::SlotsHandoff {
            start,
            end,
            to: 2,
            epoch: 7,
        };
        assert!(s.apply_op(&entry(2, 1, handoff)).unwrap().changed);
        let m = Moved::of(&s, "t").expect("handed off");
        assert_eq!(
            m,
            Moved {
                topic: "t".into(),
                shard: 2,
                epoch: 7,
            }
        );
        assert_eq!(Moved::of(&s, &other), None, "another slot stays");
        let ev = m.event("t:18", Some("t:18".into()));
        assert_eq!(ev.event, "moved");
        assert_eq!(ev.id.as_deref(), Some("t:18"));
        let data: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"topic": "t", "shard": 2, "epoch": 7, "resume": "t:18"})
        );
    }

    #[test]
    fn positions_round_trip_and_merge() {
        let mut p: TopicPositions = "b:5,a:18".parse().unwrap();
        assert_eq!(p.to_string(), "a:18,b:5");
        p.observe(1, "a:3,c:7");
        assert_eq!(p.id(), "a:18,b:5,c:7", "positions never go back");
        assert_eq!("".parse::<TopicPositions>(), Ok(TopicPositions::default()));
        for bad in ["a", "a:x", "a:-1", ":"] {
            assert!(bad.parse::<TopicPositions>().is_err(), "{bad}");
        }
    }
}
