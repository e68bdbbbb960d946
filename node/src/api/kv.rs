//! Record APIs: put, get, delete, incr, list.

use super::render::{self, Obj};
use super::{ApiError, Ctx, Req, ok_with_token};
use crate::answer::Response;
use crate::engine::{Consistency, now_ms};
use crate::log::Op;
use serde::Deserialize;

const MAX_TTL_SECS: f64 = 10.0 * 365.0 * 86400.0;

pub async fn put(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let key = req.key_ref(0, ctx.limits.max_key_bytes)?;
    let value = req.json_value(ctx.limits.max_value_bytes)?;
    let ttl_ms = req.parse::<f64>("ttl")?.map(ttl_ms).transpose()?;
    let op = Op::Put {
        key: key.to_string(),
        value,
        ttl_ms,
        if_version: req.parse("if_version")?,
    };
    write(ctx, req, op, &key).await
}

/// A time to live in seconds (fractions allowed) as milliseconds.
pub fn ttl_ms(t: f64) -> Result<u64, ApiError> {
    if t > 0.0 && t <= MAX_TTL_SECS {
        Ok((t * 1000.0).ceil() as u64)
    } else {
        Err(ApiError::bad_request(
            "invalid_parameter",
            format!("ttl must be > 0 and at most {MAX_TTL_SECS} seconds, got {t}"),
        ))
    }
}

pub async fn delete(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let key = req.key_ref(0, ctx.limits.max_key_bytes)?;
    let op = Op::Delete {
        key: key.to_string(),
        if_version: req.parse("if_version")?,
    };
    write(ctx, req, op, &key).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrBody {
    #[serde(default = "one")]
    delta: i64,
    min: Option<i64>,
    max: Option<i64>,
}

fn one() -> i64 {
    1
}

impl Default for IncrBody {
    fn default() -> Self {
        IncrBody {
            delta: 1,
            min: None,
            max: None,
        }
    }
}

pub async fn incr(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let key = req.key_ref(1, ctx.limits.max_key_bytes)?;
    let body: IncrBody = req.json_body()?;
    if let (Some(lo), Some(hi)) = (body.min, body.max)
        && lo > hi
    {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "min must not exceed max",
        ));
    }
    let op = Op::Incr {
        key: key.to_string(),
        delta: body.delta,
        min: body.min,
        max: body.max,
    };
    write(ctx, req, op, &key).await
}

/// Proposes a write and renders its result (or the first result, for a retried idempotency key);
/// `key` is the record's key the answer names (none for topics' operations).
pub async fn write(ctx: &Ctx, req: &Req, op: Op, key: &str) -> Result<Response, ApiError> {
    let ack = req.ack(ctx.engine.cluster.default_ack)?;
    let p = ctx.engine.propose(op, req.idempotency()?, ack).await?;
    Ok(ok_with_token(render::result(&p.result, key), p.index))
}

/// Waits as the read's consistency requires before reading.
pub async fn before_read(ctx: &Ctx, req: &Req) -> Result<Consistency, ApiError> {
    let c = req.consistency(ctx.consistency)?;
    let token = req.session_token()?.get(ctx.routing.shard);
    ctx.engine.before_read(c, token).await?;
    Ok(c)
}

/// After reading state that reflects log position `seen`: a linearizable read may only answer
/// once that position is committed.
pub async fn after_read(ctx: &Ctx, c: Consistency, seen: u64) -> Result<(), ApiError> {
    ctx.engine.after_read(c, seen).await?;
    Ok(())
}

pub async fn get(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    // Borrowed: routing decoded it already, and a read needs no copy of its own.
    let key = req.key_ref(0, ctx.limits.max_key_bytes)?;
    let c = before_read(ctx, req).await?;
    let (record, observed) = {
        let core = ctx.engine.core_view();
        let r = core.state.get(&key, now_ms()).cloned();
        (r, core.state.applied_index)
    };
    // Rendered now, so the record's header is decoded once for its version and its answer.
    let rendered = record.as_ref().map(|r| {
        let v = r.view();
        (v.version, render::view(&v))
    });
    // A present record only needs its own write committed; an absent one, everything seen. A
    // version is at least its write's log index, but may be more (versions keep growing across
    // a slot migration, and an imported record keeps the source's): never wait past `observed`.
    // An imported record was committed here before its slot was served.
    let seen = rendered
        .as_ref()
        .map_or(observed, |(version, _)| (*version).min(observed));
    after_read(ctx, c, seen).await?;
    match rendered {
        Some((_, body)) => Ok(ok_with_token(body, observed)),
        None => Err(ApiError::not_found(
            "not_found",
            format!("no record with key {key:?}"),
        )),
    }
}

pub async fn list(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let prefix = req.param("prefix").unwrap_or_default();
    let start_after = req.param("start_after").filter(|s| !s.is_empty());
    let max = ctx.limits.max_batch;
    let limit = req.parse::<usize>("limit")?.unwrap_or(100.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::too_large(
            "batch_too_large",
            format!("limit must be 1..={max}, got {limit}"),
        ));
    }
    let c = before_read(ctx, req).await?;
    let ((items, more), observed) = {
        let core = ctx.engine.core_view();
        let page = core.state.list(prefix, start_after, limit, now_ms());
        (page, core.state.applied_index)
    };
    after_read(ctx, c, observed).await?;
    let next = if more {
        items.last().map(|r| r.key().to_string())
    } else {
        None
    };
    let mut body = Obj::new().raw("items", &render::array(items.iter().map(render::record)));
    body = match next {
        Some(k) => body.str("next", &k),
        None => body.raw("next", "null"),
    };
    Ok(ok_with_token(body.done(), observed))
}
