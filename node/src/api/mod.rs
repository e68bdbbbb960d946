//! HTTP routing: one catch-all warp filter hands every request to `handle`. Everything that can be
//! decided from the request head is decided before a byte of the body is read (the target, the
//! cluster id, the route from `routes.rs`, the secret of internal calls or the access token's
//! role, the parameters); then
//! the body is read within its route's limit and time, and `dispatch` calls the handler. Routing
//! by hand gives exact 404/405 answers as JSON and keeps compile times low; per-API metrics are
//! recorded in one place.

mod cluster;
mod error;
mod fanout;
mod forward;
mod internal;
mod kv;
mod merged;
mod multistream;
mod placement;
mod render;
mod request;
mod routes;
mod slots;
mod stream;
mod streams;
mod topics;
mod txn;

pub use error::ApiError;
pub use request::Req;

use crate::answer::{Response, Token};
use crate::config::Limits;
use crate::connection::{FragmentInTarget, RequestBody};
use crate::engine::{Consistency, Engine};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use routes::{Route, route};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use rcluster_client::CLUSTER_MISMATCH;

// The protocol's header names, parsed once: finding or inserting a header by `&str` parses and
// validates the name again on every request (about 400 instructions each, several a request).
/// Request: the cluster the client means to talk to. Response: the cluster this node is in.
pub const CLUSTER_ID_HEADER: HeaderName =
    HeaderName::from_static(rcluster_client::CLUSTER_ID_HEADER);
pub const IDEMPOTENCY_HEADER: HeaderName =
    HeaderName::from_static(rcluster_proto::headers::IDEMPOTENCY_KEY);
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static(rcluster_proto::headers::TOKEN);
pub const DIRECT_HEADER: HeaderName = HeaderName::from_static(rcluster_proto::headers::DIRECT);

pub struct Ctx {
    pub engine: Arc<Engine>,
    /// Access tokens and their roles (open when the node has no `--auth-file`).
    pub auth: Arc<crate::auth::Auth>,
    /// Which shard owns what, and how to reach it.
    pub routing: Arc<crate::routing::Routing>,
    pub limits: Limits,
    /// A request body must arrive within this time.
    pub body_timeout: Duration,
    /// Read consistency when a request does not say.
    pub consistency: Consistency,
    /// The cluster's id, as every answer states it (it never changes: kept for the process).
    pub cluster_id: Option<&'static str>,
}

/// Longest request target (path and query) accepted, at least: room for two percent-encoded
/// keys (a path and `start_after`) at the key limit.
const MIN_TARGET_LIMIT: usize = 8 << 10;

/// The one service answering every request. A plain function of the request rather than a warp
/// filter chain: the chain cloned the header map, allocated a rejection for every request without
/// a query, and polled a future per filter (about 4,000 instructions a request).
pub fn service(
    ctx: Arc<Ctx>,
) -> impl hyper::service::Service<
    http::Request<RequestBody>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    // The future is `handle`'s own: wrapped in a block that awaited it, the request and then the
    // answer were each copied once more.
    hyper::service::service_fn(move |req: http::Request<RequestBody>| handle(ctx.clone(), req))
}

async fn handle(
    ctx: Arc<Ctx>,
    req: http::Request<RequestBody>,
) -> Result<Response, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let (method, headers) = (parts.method, parts.headers);
    let fragment = parts.extensions.get::<FragmentInTarget>().copied();
    let uri = parts.uri;
    let (path, raw_query) = (uri.path(), uri.query().unwrap_or_default());
    let started = Instant::now();
    let prepared = prepare(&ctx, &method, path, raw_query, &headers, fragment);
    let (api, result) = match prepared {
        Ok((route, query)) => {
            let limit = route.body_limit(&ctx, path);
            // A body read whole by the HTTP/1.1 path (nearly all) is taken without an await.
            let body = match whole_body(body, &headers, limit) {
                Ok(Ok(whole)) => Ok(whole),
                Ok(Err(streamed)) => read_body(streamed, &headers, limit, ctx.body_timeout).await,
                Err(e) => Err(e),
            };
            match body {
                Ok(body) => {
                    let req = Req::new(method, uri, query, headers, body);
                    dispatch(&ctx, route, &req).await
                }
                Err(e) => (route.api(), Err(e)),
            }
        }
        Err(e) => (None, Err(e)),
    };
    // Counted by reference and answered where it lies: an answer is some 200 bytes, and each
    // move of one through a function is a copy (about 40 instructions).
    record(&ctx, api, started, &result);
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    resp.body_mut().meta.cluster_id = ctx.cluster_id;
    Ok(resp)
}

/// Everything decided from the request head alone, before a byte of the body is read: the
/// target, the cluster, the route, the secret of internal calls and the parameters.
fn prepare(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    query: &str,
    headers: &http::HeaderMap,
    fragment: Option<FragmentInTarget>,
) -> Result<(Route, request::Query), ApiError> {
    if fragment.is_some() {
        return Err(ApiError::bad_request(
            "invalid_path",
            "the request target has a #fragment; fragments are not part of a request (encode # as %23 in keys)",
        ));
    }
    let target_limit = MIN_TARGET_LIMIT.max(6 * ctx.limits.max_key_bytes + 1024);
    if path.len() + query.len() > target_limit {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target exceeds {target_limit} bytes"),
        ));
    }
    check_cluster(ctx, headers)?;
    let segs = request::segments(path);
    let route = route(method, &segs)?;
    if route == Route::Internal && !internal::authorized(ctx, headers) {
        return Err(internal::unauthorized());
    }
    if let Some(need) = route.role() {
        ctx.auth.check(headers, need).map_err(refused)?;
    }
    let parsed = request::Query::parse(query);
    let allowed = match route {
        Route::Internal => internal::params(segs.get(2).copied().unwrap_or_default()),
        r => r.params(),
    };
    request::only_params(parsed.pairs(query), allowed, route.repeatable())?;
    Ok((route, parsed))
}

/// A request naming another cluster (`Rcluster-Cluster-Id`) is refused before anything is done:
/// it reached this node by mistake (a stale address, a redirect into another cluster).
fn check_cluster(ctx: &Ctx, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(wanted) = crate::headers::header(headers, &CLUSTER_ID_HEADER) else {
        return Ok(());
    };
    let wanted = String::from_utf8_lossy(wanted.as_bytes());
    let ours = ctx.engine.cluster.id.as_deref();
    if ours == Some(wanted.as_ref()) {
        return Ok(());
    }
    let message = match ours {
        Some(id) => format!("this node belongs to cluster {id:?}, not {wanted:?}"),
        None => format!("this node has no cluster id; the request is for cluster {wanted:?}"),
    };
    Err(ApiError::new(
        StatusCode::CONFLICT,
        CLUSTER_MISMATCH,
        message,
    ))
}

/// 403 for a known token whose role is too low; otherwise 401 with the scheme to use.
fn refused(r: crate::auth::Refusal) -> ApiError {
    if let crate::auth::Refusal::RoleTooLow { .. } = r {
        return ApiError::new(StatusCode::FORBIDDEN, r.code(), r.message());
    }
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, r.code(), r.message());
    e.headers
        .push(("www-authenticate", "Bearer realm=\"rcluster\"".into()));
    e
}

/// Whether an `Authorization` header value carries the cluster secret (`Bearer <secret>`),
/// compared in constant time so the secret cannot be guessed byte by byte from timings.
pub fn bearer_matches(secret: Option<&str>, header: &[u8]) -> bool {
    let Some(secret) = secret else {
        return false;
    };
    let given = header.strip_prefix(b"Bearer ").unwrap_or_default();
    crate::auth::constant_time_eq(given, secret.as_bytes())
}

fn body_too_large(limit: usize) -> ApiError {
    ApiError::too_large(
        "body_too_large",
        if limit == 0 {
            "this route takes no request body".to_string()
        } else {
            format!("request body exceeds {limit} bytes")
        },
    )
}

/// A body's length declared in its head (`None` for one read whole by the HTTP/1.1 path, which
/// does not hand the header on).
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    crate::headers::header(headers, &http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The body if it is already whole, within `limit`; `Ok(Err(_))` for one still to be read.
fn whole_body(
    body: RequestBody,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<Result<Bytes, hyper::body::Incoming>, ApiError> {
    // A declared length over the limit is refused before anything is read.
    if declared_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(body_too_large(limit));
    }
    match body {
        RequestBody::Whole(b) if b.len() > limit => Err(body_too_large(limit)),
        RequestBody::Whole(b) => Ok(Ok(b)),
        RequestBody::Streamed(b) => Ok(Err(b)),
    }
}

/// Reads a streamed body within `limit` and `timeout`.
async fn read_body(
    body: hyper::body::Incoming,
    headers: &http::HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || body_too_large(limit);
    let declared = declared_length(headers);
    let read = async {
        let mut body = body;
        // A body that arrives in one piece is kept as it came; only a split one is copied.
        let mut first: Option<Bytes> = None;
        let mut rest: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::bad_request("bad_request", e.to_string()))?;
            // Trailers carry nothing the API reads.
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let had = first.as_ref().map_or(0, Bytes::len) + rest.len();
            if had + chunk.len() > limit {
                return Err(too_large());
            }
            if first.is_none() && rest.is_empty() {
                first = Some(chunk);
            } else {
                if let Some(f) = first.take() {
                    rest.reserve(declared.unwrap_or(0) as usize);
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&chunk);
            }
        }
        Ok(first.unwrap_or_else(|| Bytes::from(rest)))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => {
            let mut e = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                crate::connection::body_timeout_message(timeout),
            );
            e.headers.push(("connection", "close".into()));
            Err(e)
        }
    }
}

/// Counts a request's outcome and time in the API's metrics.
fn record(
    ctx: &Ctx,
    api: Option<&'static str>,
    started: Instant,
    result: &Result<Response, ApiError>,
) {
    let Some(api) = api else {
        return;
    };
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    let m = &ctx.engine.metrics;
    let elapsed = started.elapsed().as_secs_f64();
    match m.api(api) {
        Some(s) => {
            if outcome == "ok" {
                s.ok.inc();
            } else {
                m.requests.with_label_values(&[api, outcome]).inc();
            }
            s.duration.observe(elapsed);
        }
        None => {
            m.requests.with_label_values(&[api, outcome]).inc();
            m.request_duration
                .with_label_values(&[api])
                .observe(elapsed);
        }
    }
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
    r.body_mut().meta.content_type = Some(crate::answer::JSON);
    r
}

/// A 200 JSON response carrying the session token of the position the client observed.
pub fn ok_with_token(body: String, token: u64) -> Response {
    let mut r = json_response(StatusCode::OK, body);
    r.body_mut().meta.token = Token::Observed(token);
    r
}

type Routed = (Option<&'static str>, Result<Response, ApiError>);

async fn dispatch(ctx: &Ctx, route: Route, req: &Req) -> Routed {
    let Some(api) = route.api() else {
        let out = match route {
            Route::Livez => Ok(json_response(StatusCode::OK, r#"{"status":"ok"}"#.into())),
            Route::Readyz => Ok(readyz(ctx)),
            Route::Metrics => Ok(metrics(ctx)),
            _ => {
                let op = req
                    .segments()
                    .get(2)
                    .copied()
                    .unwrap_or_default()
                    .to_string();
                // Boxed: a rare call, and every request's future is as large as the largest
                // it may await.
                Box::pin(internal::handle(ctx, req, &op)).await
            }
        };
        return (None, out);
    };
    let gauge = match ctx.engine.metrics.api(api) {
        Some(s) => s.in_flight.clone(),
        None => ctx.engine.metrics.in_flight.with_label_values(&[api]),
    };
    gauge.inc();
    // Another node's to serve (another shard's slot, or a write reaching a replica): forwarded.
    if let Some(elsewhere) = placement::route(ctx, route, req) {
        let answer = elsewhere.await;
        gauge.dec();
        return (Some(api), answer);
    }
    // A stream the handler opens adds itself to the gauge for as long as it is open; other
    // routes skip the task-local (it costs every poll of the handler).
    let mut out = if route.streams() {
        // Boxed, so the task-local's copy of the handler's future is not part of every request.
        Box::pin(stream::IN_FLIGHT.scope(gauge.clone(), serve_here(ctx, route, req))).await
    } else {
        serve_here(ctx, route, req).await
    };
    gauge.dec();
    if let Ok(r) = &mut out {
        served_here(ctx, req, r);
    }
    (Some(api), out)
}

/// The handler of `route`, on this node. An async fn awaited where it is called, rather than an
/// async block bound to a name and awaited later: moving the block into place copied its whole
/// state (the largest handler's, some 760 bytes) on every request.
async fn serve_here(ctx: &Ctx, route: Route, req: &Req) -> Result<Response, ApiError> {
    match route {
        Route::Status => status(ctx, req).await,
        Route::Cluster => cluster::cluster(ctx).await,
        Route::ClusterStream => cluster::cluster_stream(ctx).await,
        Route::Switchover => switchover(ctx, req).await,
        Route::List => kv::list(ctx, req).await,
        Route::Put => kv::put(ctx, req).await,
        Route::Get => kv::get(ctx, req).await,
        Route::Delete => kv::delete(ctx, req).await,
        Route::Incr => kv::incr(ctx, req).await,
        Route::ListTopics => topics::list(ctx, req).await,
        Route::CreateTopic => topics::create(ctx, req).await,
        Route::DeleteTopic => topics::delete(ctx, req).await,
        Route::Publish => topics::publish(ctx, req).await,
        Route::Read => topics::read(ctx, req).await,
        Route::Subscribe => topics::subscribe(ctx, req).await,
        Route::Unsubscribe => topics::unsubscribe(ctx, req).await,
        Route::Pull => topics::pull(ctx, req).await,
        Route::Stream => stream::topic_stream(ctx, req).await,
        Route::Watch => stream::watch(ctx, req).await,
        Route::Txn => txn::txn(ctx, req).await,
        Route::Merged => merged::merged(ctx, req).await,
        // Boxed: its future is the largest of the handlers' (1.5 KB), and every request's
        // future is as large as the largest it may await.
        Route::Streams => Box::pin(streams::streams(ctx, req)).await,
        Route::Livez | Route::Readyz | Route::Metrics | Route::Internal => {
            unreachable!("routes without an api label are handled above")
        }
    }
}

/// Marks an answer this node produced itself: which shard served it, and the session token as
/// the client's token plus what this node's shard observed (handlers set the latter as a plain
/// log position).
fn served_here(ctx: &Ctx, req: &Req, r: &mut Response) {
    let shard = ctx.routing.shard;
    let meta = &mut r.body_mut().meta;
    meta.shard = Some(shard);
    let epoch = ctx.routing.epoch();
    if epoch > 0 {
        meta.epoch = Some(epoch);
    }
    // The common case: shard 0 and a client without a token of its own. The token is then the
    // plain position the handler set.
    if shard == 0 && crate::headers::header(&req.headers, &TOKEN_HEADER).is_none() {
        return;
    }
    if let Token::Observed(index) = meta.token {
        let mut token = req.session_token().unwrap_or_default();
        token.observe(shard, index);
        meta.token = Token::Session(token);
    }
}

/// A response body from a serializable type. Serializing our own types cannot fail (no maps with
/// non-string keys, no failing `Serialize` impls).
pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
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
    r.body_mut().meta.content_type = Some("text/plain; version=0.0.4");
    r
}

/// The node's report: the engine's view plus the cluster and the shard the node serves.
pub fn node_status(ctx: &Ctx, digest: bool) -> (rcluster_proto::NodeStatus, u64) {
    let (mut report, token) = ctx.engine.status(digest);
    report.shard = ctx.routing.shard;
    report.cluster_id = ctx.engine.cluster.id.clone();
    (report, token)
}

fn status_body(ctx: &Ctx, digest: bool) -> (String, u64) {
    let (report, token) = node_status(ctx, digest);
    (to_json(&report), token)
}

async fn status(ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    let (body, token) = status_body(ctx, req.flag("digest")?);
    Ok(ok_with_token(body, token))
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
