//! The client: endpoint choice, primary redirects, session tokens and retries.
//! The typed per-API methods are in `api.rs`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::calls::Call;
use crate::error::Error;
use crate::random;
use crate::retry::{Decision, RetryPolicy, RetryState};
use crate::transport::{EventStream, Streamed, Transport, TransportConfig};
use crate::types::Consistency;

/// Response header naming the primary on `503 not_primary`.
pub const PRIMARY_HEADER: &str = "rcluster-primary";
/// Session token header (request and response).
pub const TOKEN_HEADER: &str = "rcluster-token";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A successful response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// The body (`null` when empty).
    pub json: Value,
    /// The `Rcluster-Token` of this response, if any.
    pub token: Option<u64>,
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
        }
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
                endpoints,
                current: AtomicUsize::new(0),
                primary: Mutex::new(None),
                token: AtomicU64::new(0),
                retry,
            }),
        })
    }
}

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
    endpoints: Vec<String>,
    current: AtomicUsize,
    /// The primary a `not_primary` answer named; preferred until it fails.
    primary: Mutex<Option<String>>,
    /// Highest session token seen.
    token: AtomicU64,
    retry: RetryPolicy,
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

    /// The highest `Rcluster-Token` seen (0 before any).
    pub fn token(&self) -> u64 {
        self.inner.token.load(Ordering::Relaxed)
    }

    /// Raises the remembered token (e.g. one handed over from another client).
    pub fn observe_token(&self, token: u64) {
        self.inner.token.fetch_max(token, Ordering::Relaxed);
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
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len();
        self.inner.endpoints[i].clone()
    }

    fn set_primary(&self, url: Option<String>) {
        *self.inner.primary.lock().unwrap_or_else(|p| p.into_inner()) = url;
    }

    /// Moves away from `tried` after it failed.
    fn rotate(&self, tried: &str) {
        if self.known_primary().as_deref() == Some(tried) {
            self.set_primary(None);
        }
        let n = self.inner.endpoints.len();
        let i = self.inner.current.load(Ordering::Relaxed) % n;
        if self.inner.endpoints[i] == tried {
            // A lost race with another task's rotation only skips one endpoint.
            let _ = self.inner.current.compare_exchange(
                i,
                (i + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn headers(&self, call: &Call, idempotency_key: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(k) = idempotency_key.and_then(|k| HeaderValue::from_str(k).ok()) {
            h.insert(HeaderName::from_static(IDEMPOTENCY_HEADER), k);
        }
        let token = self.token();
        if call.consistency == Some(Consistency::Session) && token > 0 {
            h.insert(
                HeaderName::from_static(TOKEN_HEADER),
                HeaderValue::from(token),
            );
        }
        h
    }

    fn observe_headers(&self, headers: &HeaderMap) -> Option<u64> {
        let token = headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(t) = token {
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
        let mut target = self.current_endpoint();
        loop {
            let url = format!("{target}{}", call.path);
            let result = self
                .inner
                .transport
                .request(
                    call.method.clone(),
                    &url,
                    headers.clone(),
                    call.body.clone(),
                    Some(timeout),
                )
                .await;
            let (err, primary) = match result {
                Ok(resp) => {
                    let token = self.observe_headers(&resp.headers);
                    if resp.status.is_success() {
                        let json = if resp.body.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(&resp.body).map_err(|e| {
                                Error::InvalidResponse(format!("{url}: body is not JSON: {e}"))
                            })?
                        };
                        return Ok(Reply {
                            status: resp.status.as_u16(),
                            json,
                            token,
                            endpoint: target,
                        });
                    }
                    let primary = resp
                        .headers
                        .get(PRIMARY_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .filter(|p| normalize_endpoint(p).is_ok())
                        .map(|p| p.trim().trim_end_matches('/').to_string());
                    (
                        Error::from_response(resp.status.as_u16(), &resp.body),
                        primary,
                    )
                }
                Err(t) => (Error::Transport(t), None),
            };
            match state.next(
                &err,
                &target,
                primary.as_deref(),
                Instant::now(),
                random::unit(),
            ) {
                Decision::Redirect(p) => {
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
            let (err, primary) = match self
                .inner
                .transport
                .stream(&url, headers.clone(), None)
                .await
            {
                Ok(Streamed::Events(events)) => return Ok(events),
                Ok(Streamed::Response(resp)) => {
                    let primary = resp
                        .headers
                        .get(PRIMARY_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(|p| p.trim().trim_end_matches('/').to_string());
                    (
                        Error::from_response(resp.status.as_u16(), &resp.body),
                        primary,
                    )
                }
                Err(t) => (Error::Transport(t), None),
            };
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
        c.observe_token(5);
        c.observe_token(3);
        assert_eq!(c.token(), 5);
    }
}
