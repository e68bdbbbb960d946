//! `POST /v1/txn`: comparisons and two branches of operations, applied atomically as one log entry
//! (the state machine side is `crate::txn`). Everything a transaction names — compared keys,
//! written keys, topics — must share one hash slot, so that it is served by one shard today and
//! after any resharding; otherwise `400 cross_slot` names two that differ.

use super::kv::ttl_ms;
use super::render;
use super::request::{json_text, validate_key, validate_name};
use super::{ApiError, Ctx, Req, ok_with_token};
use crate::answer::Response;
use crate::log::{Json, Op};
use crate::txn::{Compare, TxnOp};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Most comparisons, and most operations in each branch (as etcd's default `max-txn-ops`).
pub const MAX_TXN_ITEMS: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnBody {
    #[serde(default)]
    compare: Vec<CompareBody>,
    #[serde(default)]
    success: Vec<OpBody>,
    #[serde(default)]
    failure: Vec<OpBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareBody {
    key: String,
    exists: Option<bool>,
    version: Option<u64>,
    value: Option<Box<RawValue>>,
    min: Option<i64>,
    max: Option<i64>,
}

/// One operation as sent: which fields an `op` needs is checked by hand, so a missing or
/// misplaced field gets a message naming the operation (serde's tagged enums cannot keep the
/// values' raw text).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpBody {
    op: String,
    key: Option<String>,
    topic: Option<String>,
    value: Option<Box<RawValue>>,
    ttl: Option<f64>,
    delta: Option<i64>,
    min: Option<i64>,
    max: Option<i64>,
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_txn", message)
}

/// The first key or topic a transaction body names: where placement sends it. `None` when the
/// body does not parse or names nothing (the handler then refuses it).
pub fn first_name(body: &[u8]) -> Option<String> {
    let t: TxnBody = serde_json::from_slice(body).ok()?;
    let from_ops = t.success.iter().chain(&t.failure).find_map(|o| {
        let name = if o.op == "publish" { &o.topic } else { &o.key };
        name.clone()
    });
    t.compare.first().map(|c| c.key.clone()).or(from_ops)
}

pub async fn txn(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let body: TxnBody = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid transaction: {e}")))?;
    let too_many = |what: &str, n: usize| {
        ApiError::too_large(
            "batch_too_large",
            format!("a transaction holds at most {MAX_TXN_ITEMS} {what}, got {n}"),
        )
    };
    if body.compare.len() > MAX_TXN_ITEMS {
        return Err(too_many("comparisons", body.compare.len()));
    }
    for branch in [&body.success, &body.failure] {
        if branch.len() > MAX_TXN_ITEMS {
            return Err(too_many("operations in a branch", branch.len()));
        }
    }
    let compare = body
        .compare
        .into_iter()
        .enumerate()
        .map(|(i, c)| comparison(ctx, i, c))
        .collect::<Result<Vec<_>, _>>()?;
    let branch = |name: &str, ops: Vec<OpBody>| {
        ops.into_iter()
            .enumerate()
            .map(|(i, o)| operation(ctx, name, i, o))
            .collect::<Result<Vec<_>, _>>()
    };
    let success = branch("success", body.success)?;
    let failure = branch("failure", body.failure)?;
    one_slot(ctx, &compare, &success, &failure)?;
    let ack = req.ack(ctx.engine.cluster.default_ack)?;
    // Values are shared (`Arc<str>`): the copies kept to name each result cost no value bytes.
    let op = Op::Txn {
        compare,
        success: success.clone(),
        failure: failure.clone(),
    };
    let p = ctx.engine.propose(op, req.idempotency()?, ack).await?;
    let succeeded = matches!(
        p.result,
        crate::state::OpResult::Txn {
            succeeded: true,
            ..
        }
    );
    let ran = if succeeded { &success } else { &failure };
    Ok(ok_with_token(render::txn(&p.result, ran), p.index))
}

fn value(ctx: &Ctx, raw: &RawValue) -> Result<Json, ApiError> {
    json_text(raw.get().as_bytes(), ctx.limits.max_value_bytes)
}

fn comparison(ctx: &Ctx, i: usize, c: CompareBody) -> Result<Compare, ApiError> {
    validate_key(&c.key, ctx.limits.max_key_bytes)?;
    let tests = [
        c.exists.is_some(),
        c.version.is_some(),
        c.value.is_some(),
        c.min.is_some() || c.max.is_some(),
    ];
    if !tests.contains(&true) {
        return Err(invalid(format!(
            "comparison {i} ({:?}) tests nothing: give exists, version, value, min or max",
            c.key
        )));
    }
    if let (Some(lo), Some(hi)) = (c.min, c.max)
        && lo > hi
    {
        return Err(invalid(format!("comparison {i}: min must not exceed max")));
    }
    Ok(Compare {
        key: c.key,
        exists: c.exists,
        version: c.version,
        value: c.value.as_deref().map(|v| value(ctx, v)).transpose()?,
        min: c.min,
        max: c.max,
    })
}

fn operation(ctx: &Ctx, branch: &str, i: usize, o: OpBody) -> Result<TxnOp, ApiError> {
    let at = format!("{branch} operation {i} ({})", o.op);
    // Fields an operation does not take are refused: a misplaced `ttl` must not vanish silently.
    let given = [
        ("key", o.key.is_some()),
        ("topic", o.topic.is_some()),
        ("value", o.value.is_some()),
        ("ttl", o.ttl.is_some()),
        ("delta", o.delta.is_some()),
        ("min", o.min.is_some()),
        ("max", o.max.is_some()),
    ];
    let (needs, takes): (&[&str], &[&str]) = match o.op.as_str() {
        "put" => (&["key", "value"], &["key", "value", "ttl"]),
        "delete" => (&["key"], &["key"]),
        "incr" => (&["key"], &["key", "delta", "min", "max"]),
        "publish" => (&["topic", "value"], &["topic", "value"]),
        other => {
            return Err(invalid(format!(
                "{branch} operation {i}: unknown op {other:?} (put, delete, incr or publish)"
            )));
        }
    };
    for (field, present) in given {
        if present && !takes.contains(&field) {
            return Err(invalid(format!("{at}: takes no {field}")));
        }
        if !present && needs.contains(&field) {
            return Err(invalid(format!("{at}: needs {field}")));
        }
    }
    let key = || -> Result<String, ApiError> {
        let k = o.key.clone().unwrap_or_default();
        validate_key(&k, ctx.limits.max_key_bytes)?;
        Ok(k)
    };
    let val = || match o.value.as_deref() {
        Some(v) => value(ctx, v),
        None => Err(invalid(format!("{at}: needs value"))),
    };
    Ok(match o.op.as_str() {
        "put" => TxnOp::Put {
            key: key()?,
            value: val()?,
            ttl_ms: o.ttl.map(ttl_ms).transpose()?,
        },
        "delete" => TxnOp::Delete { key: key()? },
        "incr" => {
            if let (Some(lo), Some(hi)) = (o.min, o.max)
                && lo > hi
            {
                return Err(invalid(format!("{at}: min must not exceed max")));
            }
            TxnOp::Incr {
                key: key()?,
                delta: o.delta.unwrap_or(1),
                min: o.min,
                max: o.max,
            }
        }
        _ => {
            let topic = o.topic.clone().unwrap_or_default();
            validate_name("topic", &topic, ctx.limits.max_name_bytes)?;
            TxnOp::Publish {
                topic,
                value: val()?,
            }
        }
    })
}

/// Every key and topic of the transaction in one hash slot, and at least one of them.
fn one_slot(
    ctx: &Ctx,
    compare: &[Compare],
    success: &[TxnOp],
    failure: &[TxnOp],
) -> Result<(), ApiError> {
    let names =
        compare
            .iter()
            .map(|c| ("key", c.key.as_str()))
            .chain(success.iter().chain(failure).map(|o| {
                let what = if matches!(o, TxnOp::Publish { .. }) {
                    "topic"
                } else {
                    "key"
                };
                (what, o.name())
            }));
    let mut first: Option<(&str, &str, u32)> = None;
    for (what, name) in names {
        let slot = ctx.routing.slot_of(name);
        match first {
            None => first = Some((what, name, slot)),
            Some((w, n, s)) if s != slot => {
                return Err(ApiError::bad_request(
                    "cross_slot",
                    format!(
                        "{w} {n:?} (hash slot {s}) and {what} {name:?} (hash slot {slot}) are in \
                         different hash slots; the keys and topics of one transaction must share \
                         one slot (and so one shard): put them under one {{tag}}"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if first.is_none() {
        return Err(invalid(
            "a transaction must name at least one key or topic".into(),
        ));
    }
    Ok(())
}
