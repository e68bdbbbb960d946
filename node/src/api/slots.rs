//! Internal endpoints of a slot migration (docs/SHARDS.md "Resharding"). The coordinator drives a
//! migration; the nodes hold its state in their logs:
//! - `slots?step=…` proposes a step on this shard's primary (begin/fence/unfence/handoff/end/
//!   abort/drop, or `show`) and answers the shard's slot state once the step is committed;
//! - `slots-copy` (source) answers a page of a consistent copy of a range and `slots-log` the
//!   committed entries touching it, both as a ready log operation (postcard) that the coordinator
//!   hands unchanged to the target's `slots-import`.

use super::{ApiError, Ctx, Req, json_response};
use crate::answer::Response;
use crate::log::{self, Op};
use crate::replication::AckLevel;
use http::StatusCode;
use rcluster_proto::DEFAULT_SLOTS;

/// Headers of a copy page and a log stretch (the body is the target's log operation).
pub const COPY_AT: &str = "rcluster-copy-at";
pub const COPY_NEXT: &str = "rcluster-copy-next";
pub const LOG_UPTO: &str = "rcluster-log-upto";
pub const LOG_ENTRIES: &str = "rcluster-log-entries";

pub fn params(op: &str) -> Option<&'static [&'static str]> {
    Some(match op {
        "slots" => &["step", "start", "end", "shard", "epoch"],
        "slots-copy" => &["start", "end", "at", "after", "limit"],
        "slots-log" => &["start", "end", "from", "max"],
        "slots-import" => &[],
        _ => return None,
    })
}

fn range(req: &Req) -> Result<(u32, u32), ApiError> {
    let start = req.parse::<u32>("start")?;
    let end = req.parse::<u32>("end")?;
    match (start, end) {
        (Some(s), Some(e)) if s <= e && e < DEFAULT_SLOTS => Ok((s, e)),
        _ => Err(ApiError::bad_request(
            "invalid_range",
            format!("start and end must name slots with start <= end < {DEFAULT_SLOTS}"),
        )),
    }
}

fn required<T: std::str::FromStr>(req: &Req, name: &str) -> Result<T, ApiError> {
    req.parse::<T>(name)?.ok_or_else(|| {
        ApiError::bad_request("missing_parameter", format!("this step needs {name}="))
    })
}

fn state_reply(ctx: &Ctx, index: u64) -> Response {
    let slots = ctx.engine.core_view().state.slots.clone();
    let body = serde_json::json!({ "index": index, "slots": slots });
    json_response(StatusCode::OK, body.to_string())
}

/// Proposes `op` and waits until a quorum of this shard holds it.
async fn propose(ctx: &Ctx, op: Op) -> Result<Response, ApiError> {
    let p = ctx.engine.propose(op, None, AckLevel::Quorum).await?;
    Ok(state_reply(ctx, p.index))
}

fn binary(op: &Op, headers: &[(&'static str, String)]) -> Response {
    let mut r = Response::new(log::encode(op).into());
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    for (name, value) in headers {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    r
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request("invalid_parameter", "after must be the hex a page gave");
    if !s.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, _>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

pub async fn handle(ctx: &Ctx, req: &Req, op: &str) -> Result<Response, ApiError> {
    match op {
        "slots" => step(ctx, req).await,
        "slots-copy" => {
            let (start, end) = range(req)?;
            let after = req.param("after").map(unhex).transpose()?;
            let limit = req.parse::<usize>("limit")?.unwrap_or(500).clamp(1, 10_000);
            let page = ctx
                .engine
                .export_page(start, end, req.parse("at")?, after.as_deref(), limit)
                .await?;
            let last = page.next.is_none();
            if last {
                ctx.engine.export_done();
            }
            let mut headers = vec![(COPY_AT, page.at.to_string())];
            if let Some(next) = &page.next {
                headers.push((COPY_NEXT, hex(next)));
            }
            let op = Op::ImportCopy {
                at: page.at,
                records: page.records,
                topics: page.topics,
                idem: page.idem,
                last,
            };
            Ok(binary(&op, &headers))
        }
        "slots-log" => {
            let (start, end) = range(req)?;
            let from = required::<u64>(req, "from")?;
            let max = req.parse::<usize>("max")?.unwrap_or(1000).clamp(1, 10_000);
            let r = ctx.engine.range_entries(start, end, from, max)?;
            let headers = [
                (LOG_UPTO, r.upto.to_string()),
                (LOG_ENTRIES, r.entries.len().to_string()),
            ];
            let op = Op::ImportTail {
                entries: r.entries,
                upto: r.upto,
                offset: r.offset,
            };
            Ok(binary(&op, &headers))
        }
        "slots-import" => {
            let op: Op = log::decode(&req.body).map_err(|e| {
                ApiError::bad_request("invalid_body", format!("expected an import page: {e}"))
            })?;
            if !matches!(
                op,
                Op::ImportCopy { .. } | Op::ImportEntries { .. } | Op::ImportTail { .. }
            ) {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "slots-import takes only what slots-copy or slots-log answered",
                ));
            }
            propose(ctx, op).await
        }
        _ => unreachable!("params() admits only these"),
    }
}

async fn step(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let name = req.param("step").unwrap_or_default().to_string();
    if name == "show" {
        return Ok(state_reply(ctx, ctx.engine.commit_index()));
    }
    let (start, end) = range(req)?;
    let op = match name.as_str() {
        "begin" => Op::ImportBegin {
            start,
            end,
            from: required(req, "shard")?,
        },
        "end" => Op::ImportEnd {
            start,
            end,
            epoch: required(req, "epoch")?,
        },
        "abort" => Op::ImportAbort { start, end },
        "fence" => Op::SlotsFence {
            start,
            end,
            to: required(req, "shard")?,
        },
        "unfence" => Op::SlotsUnfence { start, end },
        "handoff" => Op::SlotsHandoff {
            start,
            end,
            to: required(req, "shard")?,
            epoch: required(req, "epoch")?,
        },
        "drop" => Op::SlotsDrop { start, end },
        other => {
            return Err(ApiError::bad_request(
                "invalid_step",
                format!(
                    "unknown step {other:?}: one of show, begin, end, abort, fence, unfence, handoff, drop"
                ),
            ));
        }
    };
    propose(ctx, op).await
}
