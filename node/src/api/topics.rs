//! Topic APIs: create, delete, list, publish, read, subscribe, unsubscribe, pull.

use super::kv::{after_read, before_read, write};
use super::render::{self, Obj};
use super::request::{json_text, validate_name};
use super::{ApiError, Ctx, Req, ok_with_token};
use crate::answer::Response;
use crate::log::{Json, Op, Retention, Start};
use crate::state::OpResult;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::{Duration, Instant};

const MAX_WAIT_MS: u64 = 30_000;

pub(super) fn topic(ctx: &Ctx, req: &Req) -> Result<String, ApiError> {
    let name = req.segment(2)?;
    validate_name("topic", &name, ctx.limits.max_name_bytes)?;
    Ok(name)
}

fn subscription(ctx: &Ctx, req: &Req) -> Result<String, ApiError> {
    let name = req.segment(4)?;
    validate_name("subscription", &name, ctx.limits.max_name_bytes)?;
    Ok(name)
}

fn batch_limit(ctx: &Ctx, req: &Req, name: &str, default: usize) -> Result<usize, ApiError> {
    let max = ctx.limits.max_batch;
    let n = req.parse::<usize>(name)?.unwrap_or(default.min(max));
    if n == 0 || n > max {
        return Err(ApiError::too_large(
            "batch_too_large",
            format!("{name} must be 1..={max}, got {n}"),
        ));
    }
    Ok(n)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TopicBody {
    max_messages: Option<u64>,
    max_age_secs: Option<u64>,
}

pub async fn create(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let topic = topic(ctx, req)?;
    let body: TopicBody = req.json_body()?;
    if body.max_messages == Some(0) || body.max_age_secs == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "max_messages and max_age_secs must be positive when set",
        ));
    }
    let max_age_ms = match body.max_age_secs {
        None => None,
        Some(secs) => Some(secs.checked_mul(1000).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                format!(
                    "max_age_secs must be at most {}, got {secs}",
                    u64::MAX / 1000
                ),
            )
        })?),
    };
    let retention = Retention {
        max_messages: body.max_messages,
        max_age_ms,
    };
    write(ctx, req, Op::CreateTopic { topic, retention }, "").await
}

pub async fn delete(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let topic = topic(ctx, req)?;
    write(ctx, req, Op::DeleteTopic { topic }, "").await
}

pub async fn list(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let c = before_read(ctx, req).await?;
    let (topics, observed) = {
        let core = ctx.engine.core_view();
        let items: Vec<String> = core
            .state
            .topics
            .iter()
            .filter(|(name, _)| core.state.serves(name))
            .map(|(name, t)| {
                let subs = t
                    .subscriptions
                    .iter()
                    .map(|(s, cursor)| Obj::new().str("name", s).num("cursor", *cursor).done());
                Obj::new()
                    .str("name", name)
                    .raw("retention", &render::retention(&t.retention))
                    .num("first_offset", t.first_offset)
                    .num("next_offset", t.next_offset())
                    .raw("subscriptions", &render::array(subs))
                    .done()
            })
            .collect();
        (items, core.state.applied_index)
    };
    after_read(ctx, c, observed).await?;
    let body = Obj::new().raw("topics", &render::array(topics)).done();
    Ok(ok_with_token(body, observed))
}

pub async fn publish(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let topic = topic(ctx, req)?;
    let max_value = ctx.limits.max_value_bytes;
    let values: Vec<Json> = if req.flag("batch")? {
        let items: Vec<&RawValue> = serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("a batch must be a JSON array: {e}"))
        })?;
        if items.is_empty() || items.len() > ctx.limits.max_batch {
            return Err(ApiError::too_large(
                "batch_too_large",
                format!(
                    "a batch holds 1..={} messages, got {}",
                    ctx.limits.max_batch,
                    items.len()
                ),
            ));
        }
        items
            .iter()
            .map(|v| json_text(v.get().as_bytes(), max_value))
            .collect::<Result<_, _>>()?
    } else {
        vec![req.json_value(max_value)?]
    };
    write(ctx, req, Op::Publish { topic, values }, "").await
}

pub async fn subscribe(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let topic = topic(ctx, req)?;
    let name = subscription(ctx, req)?;
    let start = match req.param("start") {
        None | Some("latest") => Start::Latest,
        Some("earliest") => Start::Earliest,
        Some(v) => Start::Offset(v.parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("start must be earliest, latest or an offset, got {v:?}"),
            )
        })?),
    };
    write(ctx, req, Op::Subscribe { topic, name, start }, "").await
}

pub async fn unsubscribe(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let topic = topic(ctx, req)?;
    let name = subscription(ctx, req)?;
    write(ctx, req, Op::Unsubscribe { topic, name }, "").await
}

pub async fn pull(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let topic = topic(ctx, req)?;
    let name = subscription(ctx, req)?;
    let max = batch_limit(ctx, req, "max", 100)? as u32;
    let wait_ms = req.parse::<u64>("wait_ms")?.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("wait_ms must be at most {MAX_WAIT_MS}"),
        ));
    }
    let idem = req.idempotency()?;
    let ack = req.ack(ctx.engine.cluster.default_ack)?;
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut applied = ctx.engine.applied_watch();
    loop {
        applied.borrow_and_update();
        let op = Op::Pull {
            topic: topic.clone(),
            name: name.clone(),
            max,
        };
        let p = ctx.engine.propose(op, idem.clone(), ack).await?;
        let empty = matches!(&p.result, OpResult::Pull { messages, .. } if messages.is_empty());
        let left = deadline.saturating_duration_since(Instant::now());
        if !empty || left.is_zero() {
            return Ok(ok_with_token(render::result(&p.result, ""), p.index));
        }
        // Any new entry may be a publish to this topic; an empty pull costs no log entry.
        let _ = tokio::time::timeout(left, applied.changed()).await;
    }
}

pub async fn read(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let topic = topic(ctx, req)?;
    let limit = batch_limit(ctx, req, "limit", 100)?;
    let from = req.parse::<u64>("from")?;
    let c = before_read(ctx, req).await?;
    let (found, observed) = {
        let core = ctx.engine.core_view();
        let found = core.state.topics.get(&topic).map(|t| {
            let from = from.unwrap_or(t.first_offset).max(t.first_offset);
            (from, t.read(from, limit), t.first_offset, t.next_offset())
        });
        (found, core.state.applied_index)
    };
    after_read(ctx, c, observed).await?;
    let Some((from, messages, first, end)) = found else {
        return Err(ApiError::not_found(
            "topic_not_found",
            format!("no topic {topic:?}"),
        ));
    };
    // The next page starts after the last message returned; `end_offset` is where the topic ends.
    let next = messages.last().map_or(from, |(o, _)| o + 1);
    let body = Obj::new()
        .raw(
            "messages",
            &render::array(messages.iter().map(|(o, m)| render::message(*o, m))),
        )
        .num("first_offset", first)
        .num("next_offset", next)
        .num("end_offset", end)
        .done();
    Ok(ok_with_token(body, observed))
}
