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
use crate::random;
use crate::retry::{Decision, RetryPolicy, RetryState};
use crate::routing::{Direct, Routes};
use crate::transport::TransportErrorKind;
use crate::transport::{EventStream, Streamed, Transport, TransportConfig};
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

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    transport: TransportConfig,
    retry: RetryPolicy,
    discover: bool,
    cluster_id: Option<String>,
}

impl ClientBuilder {
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            transport: TransportConfig::default(),
            retry: RetryPolicy::default(),
            discover: true,
            cluster_id: None,
        }
    }

    /// The cluster the client may talk to. Without one, the client takes the cluster of the
    /// first node that names one. Either way it never sends to, or follows a redirect to, a node
    /// of another cluster.
    pub fn cluster_id(mut self, id: Option<String>) -> Self {
        self.cluster_id = id;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.transport.connect_timeout = d;
        self
    }

    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.transport.request_timeout = d;
        self
    }

    /// Idle connections kept per endpoint (1 gives a worker its own connection).
    pub fn max_idle_per_host(mut self, n: usize) -> Self {
        self.transport.max_idle_per_host = n;
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How long one call keeps retrying (across a failover, say) before it gives up.
    pub fn retry_deadline(mut self, d: Duration) -> Self {
        self.retry.deadline = d;
        self
    }

    /// Whether to add the cluster members a node lists in `/v1/status` to the endpoints (on by
    /// default): a client given one endpoint then survives the loss of that node.
    pub fn discover_members(mut self, on: bool) -> Self {
        self.discover = on;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::InvalidArgument("no endpoint given".into()));
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        let mut retry = self.retry;
        retry.attempts = retry.attempts.max(1);
        Ok(Client {
            inner: Arc::new(Inner {
                transport: Transport::new(self.transport),
                endpoints: Mutex::new(endpoints),
                discover: self.discover,
                discovered: AtomicBool::new(false),
                current: AtomicUsize::new(0),
                primary: Mutex::new(None),
                token: Mutex::new(SessionToken::new()),
                retry,
                identity: Identity::new(self.cluster_id),
                routes: Routes::default(),
            }),
        })
    }
}

/// How often one call follows a stale route's correction (`moved`, a new primary) before it lets
/// any node forward it instead.
const MAX_CORRECTIONS: u32 = 3;

/// Checks an endpoint is `http://HOST:PORT` (optionally with a trailing `/`).
pub fn normalize_endpoint(e: &str) -> Result<String, Error> {
    let e = e.trim().trim_end_matches('/');
    let bad = || Error::InvalidArgument(format!("endpoint {e:?}: expected http://HOST:PORT"));
    let rest = e.strip_prefix("http://").ok_or_else(bad)?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(bad());
    }
    let uri: http::Uri = e.parse().map_err(|_| bad())?;
    if uri.host().is_none() {
        return Err(bad());
    }
    Ok(e.to_string())
}

/// The rcluster client. Cheap to clone; clones share connections, the known primary and
/// the session token.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    /// The configured endpoints, then members learned from `/v1/status` and redirects.
    endpoints: Mutex<Vec<String>>,
    discover: bool,
    /// Discovery ran (or is running); reset when it failed, so it is tried again.
    discovered: AtomicBool,
    current: AtomicUsize,
    /// The primary a `not_primary` answer named; preferred until it fails.
    primary: Mutex<Option<String>>,
    /// The newest position seen on every shard.
    token: Mutex<SessionToken>,
    retry: RetryPolicy,
    identity: Identity,
    /// The cluster map, for sending requests straight to the shard that owns them.
    routes: Routes,
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

    fn endpoint_list(&self) -> MutexGuard<'_, Vec<String>> {
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
    fn learn<I: IntoIterator<Item = String>>(&self, urls: I) -> usize {
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
            let mut headers = HeaderMap::new();
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
    async fn refresh_map(&self, endpoint: &str) -> Result<(), Error> {
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

    fn set_primary(&self, url: Option<String>) {
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

    fn headers(&self, call: &Call, idempotency_key: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(k) = idempotency_key.and_then(|k| HeaderValue::from_str(k).ok()) {
            h.insert(HeaderName::from_static(IDEMPOTENCY_HEADER), k);
        }
        let token = self.token();
        if call.consistency == Some(Consistency::Session)
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
        let headers = self.headers(call, key.as_deref());
        let timeout = self.inner.transport.config().request_timeout + call.extra_timeout;
        let mut state = RetryState::new(self.inner.retry.clone(), Instant::now());
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
            let result = self
                .inner
                .transport
                .request(
                    call.method.clone(),
                    &url,
                    headers,
                    call.body.clone(),
                    Some(timeout),
                )
                .await;
            let mut last_headers = HeaderMap::new();
            let (err, primary) = match result {
                Ok(resp) => {
                    last_headers = resp.headers.clone();
                    let (err, primary) = if resp.status.is_success() {
                        (None, None)
                    } else {
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
                                let json = if resp.body.is_empty() {
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
                    if rotate {
                        self.rotate(&target);
                    }
                    tokio::time::sleep(after).await;
                    target = self.current_endpoint();
                }
                Decision::GiveUp => return Err(self.give_up(call, key, &state, err)),
            }
        }
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

    /// Opens a server-sent event stream (`stream` or `watch` calls). Connecting is retried
    /// like a read; a stream that breaks later is not reopened.
    pub async fn open_stream(&self, call: &Call) -> Result<EventStream, Error> {
        let headers = self.headers(call, None);
        let mut state = RetryState::new(self.inner.retry.clone(), Instant::now());
        let mut target = self.current_endpoint();
        loop {
            let url = format!("{target}{}", call.path);
            let mut headers = headers.clone();
            self.inner.identity.add_header(&mut headers);
            let (err, primary) = match self.inner.transport.stream(&url, headers, None).await {
                Ok(Streamed::Events(events)) => {
                    match self
                        .inner
                        .identity
                        .screen(&target, events.headers(), None, None)
                    {
                        (None, _) => return Ok(events),
                        (Some(e), p) => (e, p),
                    }
                }
                Ok(Streamed::Response(resp)) => {
                    let e = Error::from_response(resp.status.as_u16(), &resp.body);
                    let (e, primary) = self.inner.identity.screen(
                        &target,
                        &resp.headers,
                        Some(e),
                        primary_hint(&resp.headers),
                    );
                    (e.unwrap_or_else(|| unreachable!()), primary)
                }
                Err(t) => (Error::Transport(t), None),
            };
            if identity::is_mismatch(&err) && self.all_foreign() {
                return Err(err);
            }
            match state.next(
                &err,
                &target,
                primary.as_deref(),
                Instant::now(),
                random::unit(),
            ) {
                Decision::Redirect(p) => target = p,
                Decision::Retry { after, rotate } => {
                    if rotate {
                        self.rotate(&target);
                    }
                    tokio::time::sleep(after).await;
                    target = self.current_endpoint();
                }
                Decision::GiveUp => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_validated() {
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:7001/").unwrap(),
            "http://127.0.0.1:7001"
        );
        assert_eq!(
            normalize_endpoint(" http://node-0.svc:7000 ").unwrap(),
            "http://node-0.svc:7000"
        );
        for bad in [
            "127.0.0.1:7001",
            "https://a:1",
            "http://",
            "http://a:1/v1",
            "http:// a",
        ] {
            assert!(normalize_endpoint(bad).is_err(), "{bad}");
        }
        assert!(Client::new(Vec::<String>::new()).is_err());
    }

    #[test]
    fn rotation_walks_the_endpoints_and_forgets_a_failed_primary() {
        let c = Client::new(["http://127.0.0.1:1", "http://127.0.0.1:2"]).unwrap();
        assert_eq!(c.current_endpoint(), "http://127.0.0.1:1");
        c.rotate("http://127.0.0.1:1");
        assert_eq!(c.current_endpoint(), "http://127.0.0.1:2");
        c.set_primary(Some("http://127.0.0.1:3".into()));
        assert_eq!(c.current_endpoint(), "http://127.0.0.1:3");
        c.rotate("http://127.0.0.1:3");
        assert_eq!(c.known_primary(), None);
        assert_eq!(c.current_endpoint(), "http://127.0.0.1:2");
        c.rotate("http://127.0.0.1:2");
        assert_eq!(c.current_endpoint(), "http://127.0.0.1:1");
    }

    #[test]
    fn token_only_grows() {
        let c = Client::new(["http://127.0.0.1:1"]).unwrap();
        c.observe_token(&SessionToken::at(0, 5));
        c.observe_token(&SessionToken::at(0, 3));
        c.observe_token(&SessionToken::at(2, 1));
        assert_eq!(c.token().to_string(), "0:5,2:1");
    }
}
