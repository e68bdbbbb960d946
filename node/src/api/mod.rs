//! HTTP routing: one catch-all warp filter hands every request to `dispatch`, which parses and
//! validates it and calls the engine. Routing by hand gives exact 404/405 answers as JSON and keeps
//! compile times low; per-API metrics are recorded in one place.

mod error;
mod fanout;
mod forward;
mod internal;
mod kv;
mod render;
mod request;
mod route;
mod stream;
mod topics;

pub use error::ApiError;
pub use request::Req;

use crate::config::Limits;
use crate::engine::{Consistency, Engine};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Method, StatusCode};
use std::sync::Arc;
use std::time::Instant;
use warp::Filter;
use warp::reply::Response;

pub use rcluster_proto::headers::{IDEMPOTENCY_KEY as IDEMPOTENCY_HEADER, TOKEN as TOKEN_HEADER};

pub struct Ctx {
    pub engine: Arc<Engine>,
    /// Which shard owns what, and how to reach it.
    pub routing: Arc<crate::routing::Routing>,
    pub limits: Limits,
    /// Read consistency when a request does not say.
    pub consistency: Consistency,
}

/// Internal bodies carry log batches and whole snapshots.
const INTERNAL_BODY_LIMIT: usize = 1 << 30;

/// The single warp filter serving every route.
pub fn routes(
    ctx: Arc<Ctx>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(move |method, path, query, headers, body| {
            handle(ctx.clone(), method, path, query, headers, body)
        })
}

async fn handle<S, B>(
    ctx: Arc<Ctx>,
    method: Method,
    path: warp::path::FullPath,
    query: String,
    headers: http::HeaderMap,
    body: S,
) -> Response
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let started = Instant::now();
    let limit = if path.as_str().starts_with("/internal/") {
        INTERNAL_BODY_LIMIT
    } else {
        ctx.limits.max_body_bytes
    };
    let req = match read_body(body, limit).await {
        Ok(body) => Req::new(method, path.as_str(), &query, headers, body),
        Err(e) => Err(e),
    };
    let (api, result) = match req {
        Ok(req) => dispatch(&ctx, req).await,
        Err(e) => (None, Err(e)),
    };
    finish(&ctx, api, started, result)
}

async fn read_body<S, B>(body: S, limit: usize) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::bad_request("bad_request", e.to_string()))?;
        if out.len() + chunk.remaining() > limit {
            return Err(ApiError::too_large(
                "body_too_large",
                format!("request body exceeds {limit} bytes"),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(Bytes::from(out))
}

fn finish(
    ctx: &Ctx,
    api: Option<&'static str>,
    started: Instant,
    result: Result<Response, ApiError>,
) -> Response {
    let (outcome, resp) = match result {
        Ok(r) => ("ok", r),
        Err(e) => (e.code, error_response(&e)),
    };
    if let Some(api) = api {
        let m = &ctx.engine.metrics;
        m.requests.with_label_values(&[api, outcome]).inc();
        m.request_duration
            .with_label_values(&[api])
            .observe(started.elapsed().as_secs_f64());
    }
    resp
}

pub fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.status, e.body());
    for (k, v) in &e.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
    r
}

pub fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A 200 JSON response carrying the session token of the position the client observed.
pub fn ok_with_token(body: String, token: u64) -> Response {
    let mut r = json_response(StatusCode::OK, body);
    r.headers_mut()
        .insert(TOKEN_HEADER, HeaderValue::from(token));
    r
}

type Routed = (Option<&'static str>, Result<Response, ApiError>);

fn method_not_allowed(allowed: &str) -> Routed {
    let mut e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route allows {allowed}"),
    );
    e.headers.push(("allow", allowed.to_string()));
    (None, Err(e))
}

async fn dispatch(ctx: &Ctx, req: Req) -> Routed {
    let segs: Vec<&str> = req.segments();
    let m = &req.method;
    macro_rules! api {
        ($name:literal, $call:expr) => {{
            let gauge = ctx.engine.metrics.in_flight.with_label_values(&[$name]);
            gauge.inc();
            let out = match route::route(ctx, &req).await {
                Some(answer) => answer,
                None => served_here(ctx, &req, $call.await),
            };
            gauge.dec();
            (Some($name), out)
        }};
    }
    match segs.as_slice() {
        ["livez"] if m == Method::GET => (
            None,
            Ok(json_response(StatusCode::OK, r#"{"status":"ok"}"#.into())),
        ),
        ["readyz"] if m == Method::GET => (None, Ok(readyz(ctx))),
        ["metrics"] if m == Method::GET => (None, Ok(metrics(ctx))),
        ["livez"] | ["readyz"] | ["metrics"] => method_not_allowed("GET"),
        ["v1", "status"] if m == Method::GET => api!("status", status(ctx, &req)),
        ["v1", "status"] => method_not_allowed("GET"),
        ["v1", "cluster"] if m == Method::GET => api!("cluster", cluster(ctx)),
        ["v1", "cluster"] => method_not_allowed("GET"),
        ["v1", "switchover"] if m == Method::POST => api!("switchover", switchover(ctx, &req)),
        ["v1", "switchover"] => method_not_allowed("POST"),
        ["v1", "kv"] if m == Method::GET => api!("list", kv::list(ctx, &req)),
        ["v1", "kv"] => method_not_allowed("GET"),
        ["v1", "kv", ..] => match *m {
            Method::PUT => api!("put", kv::put(ctx, &req)),
            Method::GET => api!("get", kv::get(ctx, &req)),
            Method::DELETE => api!("delete", kv::delete(ctx, &req)),
            Method::POST if segs.last() == Some(&"incr") && segs.len() > 3 => {
                api!("incr", kv::incr(ctx, &req))
            }
            _ => method_not_allowed("GET, PUT, DELETE, POST (…/incr)"),
        },
        ["v1", "topics"] if m == Method::GET => api!("list_topics", topics::list(ctx, &req)),
        ["v1", "topics"] => method_not_allowed("GET"),
        ["v1", "topics", _] => match *m {
            Method::PUT => api!("create_topic", topics::create(ctx, &req)),
            Method::DELETE => api!("delete_topic", topics::delete(ctx, &req)),
            _ => method_not_allowed("PUT, DELETE"),
        },
        ["v1", "topics", _, "messages"] => match *m {
            Method::POST => api!("publish", topics::publish(ctx, &req)),
            Method::GET => api!("read", topics::read(ctx, &req)),
            _ => method_not_allowed("GET, POST"),
        },
        ["v1", "topics", _, "stream"] if m == Method::GET => {
            api!("stream", stream::topic_stream(ctx, &req))
        }
        ["v1", "topics", _, "stream"] => method_not_allowed("GET"),
        ["v1", "topics", _, "subscriptions", _] => match *m {
            Method::PUT => api!("subscribe", topics::subscribe(ctx, &req)),
            Method::DELETE => api!("unsubscribe", topics::unsubscribe(ctx, &req)),
            _ => method_not_allowed("PUT, DELETE"),
        },
        ["v1", "topics", _, "subscriptions", _, "pull"] if m == Method::POST => {
            api!("pull", topics::pull(ctx, &req))
        }
        ["v1", "topics", _, "subscriptions", _, "pull"] => method_not_allowed("POST"),
        ["v1", "watch"] if m == Method::GET => api!("watch", stream::watch(ctx, &req)),
        ["v1", "watch"] => method_not_allowed("GET"),
        ["internal", "v1", op] => (None, internal::handle(ctx, &req, op).await),
        _ => (
            None,
            Err(ApiError::not_found(
                "route_not_found",
                format!("no route for {} {}", req.method, req.path),
            )),
        ),
    }
}

/// Marks an answer this node produced itself: which shard served it, and the session token as
/// the client's token plus what this node's shard observed (handlers set the latter as a plain
/// log position).
fn served_here(
    ctx: &Ctx,
    req: &Req,
    out: Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    let mut r = out?;
    let shard = ctx.routing.shard;
    let h = r.headers_mut();
    h.insert(rcluster_proto::headers::SHARD, HeaderValue::from(shard));
    let epoch = ctx.routing.epoch();
    if epoch > 0 {
        h.insert(rcluster_proto::headers::EPOCH, HeaderValue::from(epoch));
    }
    let observed = h
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(index) = observed {
        let mut token = req.session_token().unwrap_or_default();
        token.observe(shard, index);
        if let Ok(v) = HeaderValue::from_str(&token.to_string()) {
            h.insert(TOKEN_HEADER, v);
        }
    }
    Ok(r)
}

/// The node's report: the engine's view plus which shard the node serves.
pub fn node_status(ctx: &Ctx, digest: bool) -> (rcluster_proto::NodeStatus, u64) {
    let (mut report, token) = ctx.engine.status(digest);
    report.shard = ctx.routing.shard;
    (report, token)
}

/// `GET /v1/cluster`: the cluster map as this node knows it.
async fn cluster(ctx: &Ctx) -> Result<Response, ApiError> {
    let (members, primary, term) = {
        let core = ctx.engine.core();
        let members = if core.members.is_empty() {
            // A single node by hand: itself, at the address it was reached on is unknown here,
            // so by name only; clients keep using the endpoint they were given.
            std::collections::BTreeMap::new()
        } else {
            (*core.members).clone()
        };
        (members, core.primary.clone(), core.term)
    };
    let map = ctx.routing.view(members, primary, term);
    Ok(json_response(StatusCode::OK, to_json(&map)))
}

fn readyz(ctx: &Ctx) -> Response {
    let ready = ctx.engine.ready();
    ctx.engine.metrics.ready.set(i64::from(ready));
    if ready {
        json_response(StatusCode::OK, r#"{"status":"ready"}"#.into())
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"not ready"}"#.into(),
        )
    }
}

fn metrics(ctx: &Ctx) -> Response {
    let engine = &ctx.engine;
    engine.metrics.ready.set(i64::from(engine.ready()));
    // Derived from several sources, so refreshed when scraped rather than on every write.
    engine
        .metrics
        .commit_index
        .set(engine.commit_index() as i64);
    let mut r = Response::new(ctx.engine.metrics.render().into());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn status(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let (body, token) = node_status(ctx, req.flag("digest")?);
    Ok(ok_with_token(to_json(&body), token))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SwitchoverBody {
    to: Option<String>,
}

/// Asks the failover coordinator for a planned switchover (to a named replica, or the most
/// advanced one). Answers at once; `/v1/status` shows the primary when it is done.
async fn switchover(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let body: SwitchoverBody = req.json_body()?;
    ctx.engine.request_switchover(body.to.clone())?;
    let reply = serde_json::json!({"requested": true, "to": body.to});
    Ok(json_response(StatusCode::ACCEPTED, reply.to_string()))
}

/// A response body from a serializable type. Serializing our own types cannot fail (no maps with
/// non-string keys, no failing `Serialize` impls).
pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
