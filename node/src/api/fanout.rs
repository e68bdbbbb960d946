//! Reads that span shards: `list` by prefix, `list topics` and the merged read ask every shard
//! (this node's own directly, the others through [`forward`]) and merge the answers in key order
//! (the merged read: newest first). Paging stays exact: each shard returns its first `limit` items
//! after the cursor, the merged page is the first `limit` of their union, and any item a shard did
//! not return sorts after the page's last. A shard that cannot answer fails the whole read: a
//! silently partial list would look complete.

use super::forward::{Target, forward};
use super::merged::{Cursor, Order};
use super::render::{self, Obj};
use super::{ApiError, Ctx, Req, error_response, json_response};
use crate::answer::{Response, Token};
use futures_util::future::join_all;
use http::StatusCode;
use http_body_util::BodyExt;
use rcluster_proto::{SessionToken, ShardId, headers};
use serde::Deserialize;
use serde_json::value::RawValue;

/// One shard's answer, parsed: each item with its sort value (merged reads) and key.
struct Part {
    items: Vec<((u64, String), Box<RawValue>)>,
    more: bool,
    token: SessionToken,
}

#[derive(Deserialize)]
struct ListBody {
    #[serde(alias = "topics")]
    items: Vec<Box<RawValue>>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct Sortable {
    #[serde(alias = "name")]
    key: String,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    modified_ms: u64,
}

/// What is merged: records (`items`, by `key`, paged), topics (`topics`, by `name`, whole) or a
/// merged read (`items`, newest first by the order, paged by cursor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Records,
    Topics,
    Merged(Order),
}

/// Asks every shard and merges. `local` serves this node's shard when `serve_here` (a replica asked
/// for a linearizable listing sends its own shard's part to its primary like any other).
pub async fn gather<F, Fut>(
    ctx: &Ctx,
    req: &Req,
    listing: Listing,
    limit: usize,
    serve_here: bool,
    local: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let mine = ctx.routing.shard;
    let others: Vec<ShardId> = ctx
        .routing
        .shards()
        .into_iter()
        .filter(|s| *s != mine || !serve_here)
        .collect();
    let remote = join_all(others.iter().map(|s| async move {
        let target = shard_target(ctx, *s)?;
        let resp = forward(ctx, req, target).await?;
        Ok::<_, ApiError>(parse(resp, *s, listing).await)
    }));
    let here = async {
        if !serve_here {
            return None;
        }
        Some(match local().await {
            Ok(resp) => Ok(parse(resp, mine, listing).await),
            Err(e) => Err(e),
        })
    };
    let (here, remote) = tokio::join!(here, remote);
    let mut parts = Vec::with_capacity(others.len() + 1);
    for part in here.into_iter().chain(remote) {
        match part? {
            Ok(p) => parts.push(p),
            // A shard's own error (JSON, with its code) is the answer, as it is.
            Err(refused) => return Ok(refused),
        }
    }
    Ok(merge(parts, listing, limit))
}

/// Where to send a shard's part: its primary first, then its other members.
pub fn shard_target(ctx: &Ctx, shard: ShardId) -> Result<Target, ApiError> {
    if shard == ctx.routing.shard
        && let Some(primary) = ctx.engine.primary_if_elsewhere()
    {
        return Ok(Target {
            shard,
            urls: vec![primary],
        });
    }
    let info = ctx.routing.shard_info(shard).ok_or_else(|| {
        ApiError::unavailable(
            "shard_unavailable",
            format!("shard {shard} is not in this node's cluster map yet"),
        )
    })?;
    let mut urls: Vec<String> = info.primary_url().map(str::to_string).into_iter().collect();
    urls.extend(info.members.values().cloned());
    Ok(Target { shard, urls })
}

/// A shard's part, or (`Err`) its refusal to pass on unchanged.
async fn parse(resp: Response, shard: ShardId, listing: Listing) -> Result<Part, Response> {
    let status = resp.status();
    // This node's own part carries its token as a value (a position of this shard, which the
    // plain form would attribute to shard 0); another shard's, as the header it sent.
    let token = match &resp.body().meta.token {
        Token::None => resp
            .headers()
            .get(headers::TOKEN)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<SessionToken>().ok())
            .unwrap_or_default(),
        own => own.session(shard),
    };
    let unexpected = |e: String| {
        error_response(&ApiError::unavailable(
            "shard_unavailable",
            format!("shard {shard} answered an unexpected list: {e}"),
        ))
    };
    let (parts, mut body) = resp.into_parts();
    let meta = std::mem::take(&mut body.meta);
    let bytes = body
        .collect()
        .await
        .map_err(|e| unexpected(e.to_string()))?
        .to_bytes();
    if status != StatusCode::OK {
        let mut refused = Response::new(bytes.into());
        refused.body_mut().meta = meta;
        *refused.status_mut() = status;
        *refused.headers_mut() = parts.headers;
        return Err(refused);
    }
    let body: ListBody = serde_json::from_slice(&bytes).map_err(|e| unexpected(e.to_string()))?;
    let mut items = Vec::with_capacity(body.items.len());
    for raw in body.items {
        let s =
            serde_json::from_str::<Sortable>(raw.get()).map_err(|e| unexpected(e.to_string()))?;
        let value = match listing {
            Listing::Merged(Order::Modified) => s.modified_ms,
            Listing::Merged(Order::Version) => s.version,
            _ => 0,
        };
        items.push(((value, s.key), raw));
    }
    Ok(Part {
        items,
        more: body.next.is_some(),
        token,
    })
}

fn merge(parts: Vec<Part>, listing: Listing, limit: usize) -> Response {
    let mut token = SessionToken::new();
    let mut more = false;
    let mut items = Vec::new();
    for p in parts {
        token.merge(&p.token);
        more |= p.more;
        items.extend(p.items);
    }
    match listing {
        Listing::Merged(_) => items.sort_by(|a, b| b.0.cmp(&a.0)),
        _ => items.sort_by(|a, b| a.0.1.cmp(&b.0.1)),
    }
    let body = match listing {
        Listing::Topics => Obj::new()
            .raw(
                "topics",
                &render::array(items.iter().map(|(_, r)| r.get().to_string())),
            )
            .done(),
        Listing::Records | Listing::Merged(_) => {
            more |= items.len() > limit;
            items.truncate(limit);
            let next = items
                .last()
                .filter(|_| more)
                .map(|((value, key), _)| match listing {
                    Listing::Merged(order) => Cursor {
                        value: *value,
                        key: key.clone(),
                    }
                    .text(order),
                    _ => key.clone(),
                });
            let body = Obj::new().raw(
                "items",
                &render::array(items.iter().map(|(_, r)| r.get().to_string())),
            );
            match next {
                Some(k) => body.str("next", &k),
                None => body.raw("next", "null"),
            }
            .done()
        }
    };
    let mut r = json_response(StatusCode::OK, body);
    r.body_mut().meta.token = Token::Session(token);
    r
}
