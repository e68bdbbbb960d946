//! Forwarding: a request this node should not serve itself (a slot of another shard, or a write
//! reaching a replica) goes to the primary that should, and its answer comes back unchanged. Plain
//! HTTP clients can then use any node, or one Kubernetes Service in front of all of them.
//!
//! Outcomes stay unambiguous: a request that could not be sent at all answers `503
//! shard_unavailable` (nothing applied), while a write whose forwarded copy got no answer answers
//! `503 outcome_unknown` (retry with the same Idempotency-Key). A forwarded request carries
//! `Rcluster-Direct`, so the receiver never forwards it again.

use super::stream::Ev;
use super::{ApiError, Ctx, Req};
use crate::answer::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use rcluster_client::transport::{Streamed, TransportErrorKind};
use rcluster_proto::{ShardId, headers};
use std::time::Duration;

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), plus those the
/// transport sets itself.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Extra time a forwarded request may take beyond the longest wait the receiver may do itself.
const FORWARD_SLACK: Duration = Duration::from_secs(3);

/// Where a forwarded request goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub shard: ShardId,
    /// Base URLs to try in order: the primary first when known.
    pub urls: Vec<String>,
}

/// Sends `req` to the target and returns its answer.
pub async fn forward(ctx: &Ctx, req: &Req, target: Target) -> Result<Response, ApiError> {
    let write = req.method != Method::GET && req.method != Method::HEAD;
    let timeout = ctx.engine.cfg.ack_timeout.max(ctx.engine.cfg.session_wait)
        + wait_param(req)
        + FORWARD_SLACK;
    let path_and_query = req.path_and_query();
    let mut headers = forwarded_headers(ctx, &req.headers);
    headers.insert(
        HeaderName::from_static(headers::DIRECT),
        HeaderValue::from_static("1"),
    );
    let mut urls = target.urls.clone();
    let mut tried = Vec::new();
    while let Some(base) = urls.first().cloned() {
        urls.remove(0);
        if tried.contains(&base) {
            continue;
        }
        tried.push(base.clone());
        let url = format!("{base}{path_and_query}");
        let sent = ctx
            .engine
            .transport
            .request(
                req.method.clone(),
                &url,
                headers.clone(),
                Some(req.body.clone()),
                Some(timeout),
            )
            .await;
        ctx.engine
            .metrics
            .forwarded
            .with_label_values(&[&target.shard.to_string()])
            .inc();
        match sent {
            Ok(resp) => {
                // A replica of the target shard: nothing was applied; go where it points, once.
                if resp.status == StatusCode::SERVICE_UNAVAILABLE
                    && let Some(p) = resp
                        .headers
                        .get(headers::PRIMARY)
                        .and_then(|v| v.to_str().ok())
                    && target.urls.iter().any(|u| u == p)
                    && !tried.iter().any(|u| u == p)
                {
                    urls.insert(0, p.to_string());
                    continue;
                }
                return Ok(passthrough(resp.status, &resp.headers, resp.body));
            }
            // Not sent (no connection, or a certificate that did not verify): the next member.
            Err(e)
                if matches!(
                    e.kind,
                    TransportErrorKind::Connect | TransportErrorKind::Tls
                ) =>
            {
                continue;
            }
            Err(e) if write && e.maybe_sent() => {
                return Err(ApiError::unavailable(
                    "outcome_unknown",
                    format!(
                        "forwarded to shard {} at {base} but got no answer ({e}); the write may \
                         or may not have been applied: retry with the same Idempotency-Key",
                        target.shard
                    ),
                ));
            }
            Err(e) => {
                return Err(ApiError::unavailable(
                    "shard_unavailable",
                    format!("shard {} did not answer at {base}: {e}", target.shard),
                ));
            }
        }
    }
    Err(ApiError::unavailable(
        "shard_unavailable",
        format!(
            "no member of shard {} could be reached ({}); nothing was applied",
            target.shard,
            if tried.is_empty() {
                "its members are unknown".to_string()
            } else {
                tried.join(", ")
            }
        ),
    ))
}

/// A long poll's own wait (`wait_ms`), which the forwarding timeout must cover.
fn wait_param(req: &Req) -> Duration {
    req.param("wait_ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::ZERO, |ms| Duration::from_millis(ms.min(60_000)))
}

/// The client's headers minus hop-by-hop ones, plus this node's cluster id: a node never sends a
/// client's request into another cluster (a stale address now used by another cluster's node
/// refuses it with `cluster_mismatch`).
fn forwarded_headers(ctx: &Ctx, given: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(given.len() + 2);
    for (k, v) in given {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out.append(k.clone(), v.clone());
        }
    }
    if let Some(id) = ctx.engine.cluster.id.as_deref()
        && let Ok(v) = HeaderValue::from_str(id)
    {
        out.insert(super::CLUSTER_ID_HEADER, v);
    }
    out
}

fn passthrough(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    for (k, v) in headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            r.headers_mut().append(k.clone(), v.clone());
        }
    }
    r
}

/// Opens the same event stream on the target and relays its events unchanged. The relay ends when
/// the upstream does; the client reconnects as it would after any node loss.
pub async fn forward_stream(ctx: &Ctx, req: &Req, target: Target) -> Result<Response, ApiError> {
    let upstream = open_stream(ctx, req, &target, &req.path_and_query()).await?;
    let events = match upstream {
        Streamed::Events(events) => events,
        Streamed::Response(r) => return Ok(passthrough(r.status, &r.headers, r.body)),
    };
    Ok(super::stream::sse(move |tx| relay(events, tx, Some)))
}

/// Connects to the first reachable URL of `target` for `path_and_query` (the stream `req` asks
/// for, or the part of it that shard serves), with the client's headers.
pub async fn open_stream(
    ctx: &Ctx,
    req: &Req,
    target: &Target,
    path_and_query: &str,
) -> Result<Streamed, ApiError> {
    let mut headers = forwarded_headers(ctx, &req.headers);
    headers.insert(
        HeaderName::from_static(headers::DIRECT),
        HeaderValue::from_static("1"),
    );
    // The map the stream is merged by: a part reports every move newer than it (see
    // `stream::Handoffs`).
    headers.insert(
        HeaderName::from_static(headers::EPOCH),
        HeaderValue::from(ctx.routing.epoch()),
    );
    let mut last = String::from("its members are unknown");
    for base in &target.urls {
        let url = format!("{base}{path_and_query}");
        match ctx
            .engine
            .transport
            .stream(&url, headers.clone(), Some(ctx.engine.cfg.ack_timeout))
            .await
        {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(ApiError::unavailable(
        "shard_unavailable",
        format!("shard {} could not open the stream: {last}", target.shard),
    ))
}

/// Copies events from an upstream stream to `tx`, mapped by `map` (`None` drops one), until either
/// side ends.
pub async fn relay(
    mut events: rcluster_client::transport::EventStream,
    tx: tokio::sync::mpsc::Sender<Ev>,
    mut map: impl FnMut(Ev) -> Option<Ev>,
) {
    while let Some(Ok(e)) = events.next().await {
        let ev = Ev {
            event: e.event,
            id: e.id,
            data: e.data,
        };
        if let Some(ev) = map(ev)
            && tx.send(ev).await.is_err()
        {
            return;
        }
    }
}
