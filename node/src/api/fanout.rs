//! Reads that span shards: `list` by prefix and `list topics` ask every shard (this node's own
//! directly, the others through [`forward`]) and merge the answers in key order. Paging stays
//! exact: each shard returns its first `limit` keys after `start_after`, the merged page is the
//! first `limit` of their union, and any key a shard did not return sorts after the page's last.
//! A shard that cannot answer fails the whole read: a silently partial list would look complete.

use super::forward::{Target, forward, open_stream, relay};
use super::render::{self, Obj};
use super::stream::{Ev, sse, watch_local};
use super::{ApiError, Ctx, Req, error_response, json_response};
use futures_util::future::join_all;
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use rcluster_client::transport::Streamed;
use rcluster_proto::{SessionToken, ShardId, headers};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use warp::reply::Response;

/// One shard's answer, parsed.
struct Part {
    items: Vec<(String, Box<RawValue>)>,
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
}

/// What is merged: records (`items`, by `key`, paged) or topics (`topics`, by `name`, whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Records,
    Topics,
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
        Ok::<_, ApiError>(parse(resp, *s).await)
    }));
    let here = async {
        if !serve_here {
            return None;
        }
        Some(match local().await {
            Ok(resp) => Ok(parse(resp, mine).await),
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
async fn parse(resp: Response, shard: ShardId) -> Result<Part, Response> {
    let status = resp.status();
    let token = resp
        .headers()
        .get(headers::TOKEN)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<SessionToken>().ok())
        .unwrap_or_default();
    let unexpected = |e: String| {
        error_response(&ApiError::unavailable(
            "shard_unavailable",
            format!("shard {shard} answered an unexpected list: {e}"),
        ))
    };
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| unexpected(e.to_string()))?
        .to_bytes();
    if status != StatusCode::OK {
        let mut refused = Response::new(bytes.into());
        *refused.status_mut() = status;
        *refused.headers_mut() = parts.headers;
        return Err(refused);
    }
    let body: ListBody = serde_json::from_slice(&bytes).map_err(|e| unexpected(e.to_string()))?;
    let mut items = Vec::with_capacity(body.items.len());
    for raw in body.items {
        let key = serde_json::from_str::<Sortable>(raw.get())
            .map(|s| s.key)
            .map_err(|e| unexpected(e.to_string()))?;
        items.push((key, raw));
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
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let body = match listing {
        Listing::Topics => Obj::new()
            .raw(
                "topics",
                &render::array(items.iter().map(|(_, r)| r.get().to_string())),
            )
            .done(),
        Listing::Records => {
            more |= items.len() > limit;
            items.truncate(limit);
            let next = items.last().map(|(k, _)| k.clone()).filter(|_| more);
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
    if let Ok(v) = HeaderValue::from_str(&token.to_string()) {
        r.headers_mut().insert(headers::TOKEN, v);
    }
    r
}

/// A watch over every shard: each shard's committed changes, as they arrive, in each shard's log
/// order. An event's `id` is a session token holding the position reached in every shard, so a
/// client can resume all of them at once. The stream ends when any shard's part ends (a lost node):
/// the client reconnects as after any node loss.
pub async fn watch_everywhere(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let prefix = req.param("prefix").unwrap_or_default().to_string();
    let mine = ctx.routing.shard;
    let mut sources = Vec::new();
    for shard in ctx.routing.shards() {
        if shard == mine {
            continue;
        }
        let target = shard_target(ctx, shard)?;
        match open_stream(ctx, req, &target).await? {
            Streamed::Events(events) => sources.push((shard, events)),
            Streamed::Response(r) => {
                let mut refused = Response::new(r.body.into());
                *refused.status_mut() = r.status;
                *refused.headers_mut() = r.headers;
                return Ok(refused);
            }
        }
    }
    let engine = ctx.engine.clone();
    let after = engine.commit_index();
    Ok(sse(move |out| async move {
        let (tx, mut rx) = mpsc::channel::<(ShardId, Ev)>(256);
        let mut parts = tokio::task::JoinSet::new();
        {
            let (local_tx, mut local_rx) = mpsc::channel::<Ev>(256);
            let tx = tx.clone();
            parts.spawn(watch_local(engine, prefix, after, local_tx));
            parts.spawn(async move {
                while let Some(ev) = local_rx.recv().await {
                    if tx.send((mine, ev)).await.is_err() {
                        return;
                    }
                }
            });
        }
        for (shard, events) in sources {
            let (part_tx, mut part_rx) = mpsc::channel::<Ev>(256);
            let tx = tx.clone();
            parts.spawn(relay(events, part_tx, Some));
            parts.spawn(async move {
                while let Some(ev) = part_rx.recv().await {
                    if tx.send((shard, ev)).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut position = SessionToken::new();
        loop {
            tokio::select! {
                next = rx.recv() => {
                    let Some((shard, mut ev)) = next else { return };
                    if let Some(index) = ev.id.as_deref().and_then(|i| i.parse::<u64>().ok()) {
                        position.observe(shard, index);
                        ev.id = Some(position.to_string());
                    }
                    let ended = ev.event == "error";
                    if out.send(ev).await.is_err() || ended {
                        return;
                    }
                }
                // Any part ending (its node gone) ends the whole stream.
                Some(_) = parts.join_next() => return,
            }
        }
    }))
}
