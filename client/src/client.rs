//! The client: endpoint choice, primary redirects, session tokens and retries.
//! The typed per-API methods are in `api.rs`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::calls::Call;
use crate::error::Error;
use crate::identity::{self, Identity};
use crate::notice::{Notice, NoticeFn};
use crate::random;
use crate::retry::{Decision, RetryPolicy, RetryState};
use crate::routing::{Direct, Routes};
use crate::transport::Transport;
use crate::transport::TransportErrorKind;
use crate::types::Consistency;
use rcluster_proto::SessionToken;

pub use rcluster_proto::headers::{
    IDEMPOTENCY_KEY as IDEMPOTENCY_HEADER, PRIMARY as PRIMARY_HEADER, TOKEN as TOKEN_HEADER,
};

/// The primary a node names in its answer, when it is a usable endpoint (both the request and the
/// stream paths follow it, so both must refuse a malformed one).
fn primary_hint(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(PRIMARY_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|p| normalize_endpoint(p).is_ok())
        .map(|p| p.trim().trim_end_matches('/').to_string())
}

/// How long an attempt may go unanswered before a notice handler hears of it.
const SLOW_AFTER: Duration = Duration::from_secs(1);

/// A successful response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// The body (`null` when empty).
    pub json: Value,
    /// The `Rcluster-Token` of this response, if any.
    pub token: Option<SessionToken>,
    /// The base URL that answered.
    pub endpoint: String,
}

impl Reply {
    /// The body as a typed value.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(&self.json).map_err(|e| {
            Error::InvalidResponse(format!("unexpected response body ({e}): {}", self.json))
        })
    }
}

/// How often one call follows a stale route's correction (`moved`, a new primary) before it lets
/// any node forward it instead.
const MAX_CORRECTIONS: u32 = 3;

/// The rcluster client. Cheap to clone; clones share connections, the known primary and
/// the session token.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) transport: Transport,
    /// The configured endpoints, then members learned from `/v1/status` and redirects.
    endpoints: Mutex<Vec<String>>,
    pub(crate) discover: bool,
    /// Discovery ran (or is running); reset when it failed, so it is tried again.
    discovered: AtomicBool,
    pub(crate) current: AtomicUsize,
    /// The primary a `not_primary` answer named; preferred until it fails.
    primary: Mutex<Option<String>>,
    /// The newest position seen on every shard.
    token: Mutex<SessionToken>,
    retry: RetryPolicy,
    pub(crate) identity: Identity,
    /// `Bearer TOKEN`, sent with every request when the client has an access token.
    authorization: Option<HeaderValue>,
    /// The cluster map, for sending requests straight to the shard that owns them.
    pub(crate) routes: Routes,
    pub(crate) locate: bool,
    /// `locate` ran (or runs) for this client.
    pub(crate) located: AtomicBool,
    unreachable_deadline: Option<Duration>,
    notify: Option<NoticeFn>,
    /// Keep the cluster stream open (`cluster_stream.rs`).
    pub(crate) follow_cluster: bool,
    /// The cluster stream runs (or is starting) for this client.
    pub(crate) following: AtomicBool,
    /// What the cluster stream last announced for a cluster of one shard: (term, primary URL).
    pub(crate) announced: Mutex<(u64, Option<String>)>,
}

impl Client {
    /// A client with default timeouts and retries.
    pub fn new<I, S>(endpoints: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(endpoints).build()
    }

    pub fn builder<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(endpoints)
    }

    /// The session token: the newest log position seen on every shard (empty before any).
    pub fn token(&self) -> SessionToken {
        self.inner.token.lock().unwrap().clone()
    }

    /// Raises the remembered token (e.g. one handed over from another client); positions never
    /// go back.
    pub fn observe_token(&self, token: &SessionToken) {
        self.inner.token.lock().unwrap().merge(token);
    }

    /// The cluster this client talks to: configured, or learned from the first node naming one.
    pub fn cluster_id(&self) -> Option<String> {
        self.inner.identity.id()
    }

    /// The primary learned from a `not_primary` redirect, if any.
    pub fn known_primary(&self) -> Option<String> {
        self.inner
            .primary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The base URL the next request goes to.
    pub fn current_endpoint(&self) -> String {
        if let Some(p) = self.known_primary() {
            return p;
        }
        let endpoints = self.endpoint_list();
        let i = self.inner.current.load(Ordering::Relaxed) % endpoints.len();
        endpoints[i].clone()
    }

    pub(crate) fn endpoint_list(&self) -> MutexGuard<'_, Vec<String>> {
        self.inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Every endpoint the client may use: the configured ones and those it learned.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoint_list().clone()
    }

    /// Adds endpoints not known yet; returns how many were new.
    pub(crate) fn learn<I: IntoIterator<Item = String>>(&self, urls: I) -> usize {
        let mut list = self.endpoint_list();
        let mut added = 0;
        for url in urls {
            if let Ok(u) = normalize_endpoint(&url)
                && !list.contains(&u)
            {
                list.push(u);
                added += 1;
            }
        }
        added
    }

    /// Asks the nodes for the cluster's members (`/v1/status`, `members[].url`) and adds them
    /// to the endpoints. Tries each known endpoint once; returns how many endpoints were new.
    pub async fn discover(&self) -> Result<usize, Error> {
        let mut last = Error::InvalidArgument("no endpoint given".into());
        for endpoint in self.endpoints() {
            if self.inner.identity.is_foreign(&endpoint) {
                continue;
            }
            let url = format!("{endpoint}/v1/status");
            let mut headers = self.auth_headers();
            self.inner.identity.add_header(&mut headers);
            let resp = match self
                .inner
                .transport
                .request(http::Method::GET, &url, headers, None, None)
                .await
            {
                // Members are learned only from a node of this client's cluster.
                Ok(r) if r.status.is_success() => {
                    match self.inner.identity.check(&endpoint, &r.headers) {
                        Ok(()) => r,
                        Err(e) => {
                            last = e;
                            continue;
                        }
                    }
                }
                Ok(r) => {
                    last = Error::from_response(r.status.as_u16(), &r.body);
                    if identity::is_mismatch(&last) {
                        self.inner.identity.mark_foreign(&endpoint);
                    }
                    continue;
                }
                Err(e) => {
                    last = Error::Transport(e);
                    continue;
                }
            };
            let status: Value = serde_json::from_slice(&resp.body)
                .map_err(|e| Error::InvalidResponse(format!("{url}: body is not JSON: {e}")))?;
            let urls: Vec<String> = status
                .get("members")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| m.get("url").and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            // Every shard's members too: any of them serves any request.
            let _ = self.refresh_map(&endpoint).await;
            let shards = self.inner.routes.member_urls();
            return Ok(self.learn(urls.into_iter().chain(shards)));
        }
        Err(last)
    }

    /// Fetches the cluster map from `endpoint` (`GET /v1/cluster`) and merges it into the cached
    /// one; only a node of this client's cluster is believed.
    pub(crate) async fn refresh_map(&self, endpoint: &str) -> Result<(), Error> {
        let url = format!("{endpoint}/v1/cluster");
        let mut headers = HeaderMap::new();
        self.inner.identity.add_header(&mut headers);
        let resp = self
            .inner
            .transport
            .request(http::Method::GET, &url, headers, None, None)
            .await
            .map_err(Error::Transport)?;
        if !resp.status.is_success() {
            return Err(Error::from_response(resp.status.as_u16(), &resp.body));
        }
        self.inner.identity.check(endpoint, &resp.headers)?;
        let map: rcluster_proto::ClusterMap = serde_json::from_slice(&resp.body)
            .map_err(|e| Error::InvalidResponse(format!("{url}: not a cluster map: {e}")))?;
        self.inner.routes.learn(map);
        Ok(())
    }

    /// After an answer to a request sent straight to a shard: where to send it next, if the
    /// answer said nothing was applied because the route was stale (`421 moved`: the map is
    /// refreshed from the node that answered; `503 not_primary` naming the shard's primary).
    /// `None`: the answer stands (or the direct route is given up, see the caller).
    async fn reroute(
        &self,
        direct: &Direct,
        name: &str,
        status: u16,
        headers: &HeaderMap,
        err: &Error,
    ) -> Option<Direct> {
        match (status, err.code()) {
            (421, _) => {
                let _ = self.refresh_map(&direct.url).await;
                self.inner.routes.direct(name)
            }
            (503, Some("not_primary")) => {
                let hint = primary_hint(headers)?;
                self.inner
                    .routes
                    .primary_moved(direct.shard, &hint)
                    .then(|| self.inner.routes.direct(name))
                    .flatten()
            }
            _ => None,
        }
    }

    /// A node routing by a newer slot map than the client's: fetch it (in the background).
    fn note_epoch(&self, headers: &HeaderMap) {
        let newer = headers
            .get(rcluster_proto::headers::EPOCH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|e| e > self.inner.routes.epoch());
        if newer {
            self.discover_soon_again();
        }
    }

    /// Runs discovery again soon (the cluster map or the members changed).
    fn discover_soon_again(&self) {
        self.inner.discovered.store(false, Ordering::Relaxed);
        self.discover_soon();
    }

    /// Runs discovery in the background after the first answer from the cluster.
    fn discover_soon(&self) {
        if !self.inner.discover || self.inner.discovered.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.inner.discovered.store(false, Ordering::Relaxed);
            return;
        };
        let client = self.clone();
        rt.spawn(async move {
            if client.discover().await.is_err() {
                client.inner.discovered.store(false, Ordering::Relaxed);
            }
        });
    }

    pub(crate) fn set_primary(&self, url: Option<String>) {
        *self.inner.primary.lock().unwrap_or_else(|p| p.into_inner()) = url;
    }

    /// Moves away from `tried` after it failed.
    fn rotate(&self, tried: &str) {
        if self.known_primary().as_deref() == Some(tried) {
            self.set_primary(None);
        }
        let endpoints = self.endpoint_list();
        let n = endpoints.len();
        let i = self.inner.current.load(Ordering::Relaxed) % n;
        if endpoints[i] == tried {
            // The next endpoint not known to be in another cluster (if any is left).
            let next = (1..=n)
                .map(|k| (i + k) % n)
                .find(|j| !self.inner.identity.is_foreign(&endpoints[*j]))
                .unwrap_or((i + 1) % n);
            // A lost race with another task's rotation only skips one endpoint.
            let _ =
                self.inner
                    .current
                    .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Every endpoint turned out to belong to another cluster: nothing left to try.
    fn all_foreign(&self) -> bool {
        let id = &self.inner.identity;
        self.endpoint_list().iter().all(|e| id.is_foreign(e))
            && self.known_primary().is_none_or(|p| id.is_foreign(&p))
    }

    /// The access token's header, when there is one.
    pub(crate) fn auth_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = &self.inner.authorization {
            h.insert(http::header::AUTHORIZATION, v.clone());
        }
        h
    }

    fn headers(&self, call: &Call, idempotency_key: Option<&str>) -> HeaderMap {
        let mut h = self.auth_headers();
        if let Some(k) = idempotency_key.and_then(|k| HeaderValue::from_str(k).ok()) {
            h.insert(HeaderName::from_static(IDEMPOTENCY_HEADER), k);
        }
        if call.consistency == Some(Consistency::Session)
            && let token = self.token()
            && !token.is_empty()
            && let Ok(v) = HeaderValue::from_str(&token.to_string())
        {
            h.insert(HeaderName::from_static(TOKEN_HEADER), v);
        }
        h
    }

    fn observe_headers(&self, headers: &HeaderMap) -> Option<SessionToken> {
        let token = headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<SessionToken>().ok());
        if let Some(t) = &token {
            self.observe_token(t);
        }
        token
    }

    /// Sends a call, following `not_primary` redirects and retrying per the policy.
    /// Writes carry an idempotency key (the call's, or a fresh one) on every attempt.
    pub async fn execute(&self, call: &Call) -> Result<Reply, Error> {
        let key = call.write.then(|| {
            call.idempotency_key
                .clone()
                .unwrap_or_else(random::idempotency_key)
        });
        self.locate_once().await;
        let headers = self.headers(call, key.as_deref());
        let timeout = self.inner.transport.config().request_timeout + call.extra_timeout;
        let mut state = self.retry_state();
        // Straight to the owning shard when the map says where (several shards); a stale route
        // costs a refusal that applied nothing, and is corrected a bounded number of times.
        let name = call.route.as_deref().unwrap_or_default();
        let mut direct = call
            .route
            .as_deref()
            .and_then(|n| self.inner.routes.direct(n));
        let mut corrections = 0;
        let mut target = direct
            .as_ref()
            .map_or_else(|| self.current_endpoint(), |d| d.url.clone());
        loop {
            let url = format!("{target}{}", call.path);
            // The cluster id may have been learned by an earlier attempt of this call.
            let mut headers = headers.clone();
            self.inner.identity.add_header(&mut headers);
            if direct.is_some() {
                headers.insert(
                    HeaderName::from_static(rcluster_proto::headers::DIRECT),
                    HeaderValue::from_static("1"),
                );
            }
            let request = self.inner.transport.request(
                call.method.clone(),
                &url,
                headers,
                call.body.clone(),
                Some(timeout),
            );
            let result = self.noting_slow(call.api, &target, request).await;
            let mut last_headers = HeaderMap::new();
            let (err, primary) = match result {
                Ok(resp) => {
                    let (err, primary) = if resp.status.is_success() {
                        (None, None)
                    } else {
                        // Only a refusal is rerouted by its headers.
                        last_headers = resp.headers.clone();
                        let e = Error::from_response(resp.status.as_u16(), &resp.body);
                        (Some(e), primary_hint(&resp.headers))
                    };
                    let (err, primary) =
                        self.inner
                            .identity
                            .screen(&target, &resp.headers, err, primary);
                    if err.as_ref().is_some_and(identity::is_mismatch) {
                        (err.unwrap_or_else(|| unreachable!()), None)
                    } else {
                        let token = self.observe_headers(&resp.headers);
                        self.note_epoch(&resp.headers);
                        match err {
                            Some(e) => (e, primary),
                            None => {
                                let json = if resp.body.is_empty() || !call.parse_reply {
                                    Value::Null
                                } else {
                                    serde_json::from_slice(&resp.body).map_err(|e| {
                                        Error::InvalidResponse(format!(
                                            "{url}: body is not JSON: {e}"
                                        ))
                                    })?
                                };
                                self.discover_soon();
                                return Ok(Reply {
                                    status: resp.status.as_u16(),
                                    json,
                                    token,
                                    endpoint: target,
                                });
                            }
                        }
                    }
                }
                Err(t) => {
                    // A shard's primary that cannot be reached: any node forwards the request
                    // (and the map is fetched again on the way).
                    if direct.take().is_some() && t.kind == TransportErrorKind::Connect {
                        self.discover_soon_again();
                        target = self.current_endpoint();
                        continue;
                    }
                    (Error::Transport(t), None)
                }
            };
            if identity::is_mismatch(&err) && self.all_foreign() {
                return Err(err);
            }
            if let Some(d) = direct.take() {
                if let Error::Api { status, .. } = &err
                    && corrections < MAX_CORRECTIONS
                    && let Some(next) = self.reroute(&d, name, *status, &last_headers, &err).await
                {
                    corrections += 1;
                    target = next.url.clone();
                    direct = Some(next);
                    continue;
                }
                // A route still stale after the corrections: any node forwards the request. (Both
                // answers applied nothing; every other answer goes to the retry policy below.)
                if matches!(err.code(), Some("moved" | "not_primary")) {
                    target = self.current_endpoint();
                    continue;
                }
            }
            match state.next(
                &err,
                &target,
                primary.as_deref(),
                Instant::now(),
                random::unit(),
            ) {
                Decision::Redirect(p) => {
                    self.learn([p.clone()]);
                    self.set_primary(Some(p.clone()));
                    target = p;
                }
                Decision::Retry { after, rotate } => {
                    let wait = (after, rotate);
                    target = self.back_off(call.api, &target, &err, &state, wait).await;
                }
                Decision::GiveUp => return Err(self.give_up(call, key, &state, err)),
            }
        }
    }

    fn retry_state(&self) -> RetryState {
        RetryState::new(self.inner.retry.clone(), Instant::now())
            .give_up_unreachable_after(self.inner.unreachable_deadline)
    }

    /// Awaits one attempt; with a notice handler, says so when it has had no answer for a while.
    async fn noting_slow<T>(
        &self,
        api: &str,
        endpoint: &str,
        attempt: impl std::future::Future<Output = T>,
    ) -> T {
        let Some(notify) = &self.inner.notify else {
            return attempt.await;
        };
        let mut attempt = std::pin::pin!(attempt);
        match tokio::time::timeout(SLOW_AFTER, &mut attempt).await {
            Ok(v) => v,
            Err(_) => {
                notify(&Notice::Slow {
                    api,
                    endpoint,
                    waited: SLOW_AFTER,
                });
                attempt.await
            }
        }
    }

    /// Before another attempt of a call or a stream: tells the notice hook, moves off `endpoint`
    /// when the retry decision says so, waits `after`, and returns the endpoint to try next.
    async fn back_off(
        &self,
        api: &str,
        endpoint: &str,
        error: &Error,
        state: &RetryState,
        (after, rotate): (Duration, bool),
    ) -> String {
        if let Some(notify) = &self.inner.notify {
            notify(&Notice::Retrying {
                api,
                endpoint,
                error,
                attempt: state.attempts(),
                after,
            });
        }
        if rotate {
            self.rotate(endpoint);
        }
        tokio::time::sleep(after).await;
        self.current_endpoint()
    }

    fn give_up(&self, call: &Call, key: Option<String>, state: &RetryState, err: Error) -> Error {
        let retryable = matches!(err, Error::Transport(_))
            || matches!(
                err,
                Error::Api {
                    status: 503 | 429,
                    ..
                }
            );
        match key {
            Some(k) if call.write && retryable && state.maybe_applied() => Error::OutcomeUnknown {
                idempotency_key: k,
                message: err.to_string(),
            },
            _ => err,
        }
    }
}

#[path = "client_builder.rs"]
mod builder;
#[path = "client_streams.rs"]
mod streams;
pub use builder::{ClientBuilder, normalize_endpoint};

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
