//! A small HTTP/1.1 client: a keep-alive pool, a short connect timeout (so an unreachable
//! node is noticed in about a second, never after the kernel's SYN retries) and a timeout
//! on every request. Plus a streaming variant for server-sent events. `https://` URLs go over TLS
//! with the configured [`Trust`].

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::sse::{Event, SseParser};
use crate::tls::{self, Trust};

/// Connection and timeout settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub connect_timeout: Duration,
    /// Whole request: connect, send, and receive the full response.
    pub request_timeout: Duration,
    /// Idle connections are dropped after this; kept below the node's idle timeout (60 s by
    /// default), so a connection is not reused just as the node closes it.
    pub pool_idle_timeout: Duration,
    pub max_idle_per_host: usize,
    /// Server certificates accepted on `https://` URLs.
    pub trust: Trust,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(30),
            max_idle_per_host: 32,
            trust: Trust::System,
        }
    }
}

/// Why a request got no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// The TCP connection could not be made: the request was certainly not sent.
    Connect,
    /// The TLS handshake failed (e.g. a server certificate no trusted CA issued): nothing was
    /// sent, and trying again will not help until the trust or the certificate changes.
    Tls,
    /// No complete response in time: the request may or may not have been applied.
    Timeout,
    /// The connection failed after the request may have been sent.
    Io,
    /// The URL could not be used (bad endpoint): nothing was sent.
    InvalidUrl,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub message: String,
    /// The host answered that nothing listens on the port (a `Connect` error): the server's
    /// process is not running there, which a timeout cannot tell.
    pub refused: bool,
}

impl TransportError {
    fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            refused: false,
        }
    }

    /// True when the server may have received (and applied) the request.
    pub fn maybe_sent(&self) -> bool {
        matches!(
            self.kind,
            TransportErrorKind::Timeout | TransportErrorKind::Io
        )
    }
}

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The answer to a streaming request: events when the server said 2xx, else the response.
pub enum Streamed {
    Events(EventStream),
    Response(Response),
}

/// Server-sent events read from a response body.
pub struct EventStream {
    headers: HeaderMap,
    body: Incoming,
    parser: SseParser,
    pending: VecDeque<Event>,
    done: bool,
}

impl EventStream {
    /// The headers of the response that opened the stream.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Result<Event, TransportError>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(TransportError::new(
                        TransportErrorKind::Io,
                        format!("event stream broken: {e}"),
                    )));
                }
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.pending.extend(self.parser.feed(data));
                    }
                }
            }
        }
    }
}

/// The pooled HTTP client. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Transport {
    client: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    config: TransportConfig,
}

impl Transport {
    pub fn new(config: TransportConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(config.trust.client_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self { client, config }
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Sends one request and reads the whole response, within `timeout`
    /// (the configured request timeout when `None`).
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Response, TransportError> {
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        let req = build_request(method, url, headers, body)?;
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| hyper_error(url, e))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| {
                    TransportError::new(TransportErrorKind::Io, format!("reading response: {e}"))
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(url, timeout)),
        }
    }

    /// Opens a server-sent event stream. `timeout` bounds the wait for the response
    /// headers (and for the body of an error response), not the stream itself.
    pub async fn stream(
        &self,
        url: &str,
        mut headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<Streamed, TransportError> {
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let req = build_request(Method::GET, url, headers, None)?;
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| hyper_error(url, e))?;
            let (parts, body) = resp.into_parts();
            if parts.status.is_success() {
                return Ok(Streamed::Events(EventStream {
                    headers: parts.headers,
                    body,
                    parser: SseParser::new(),
                    pending: VecDeque::new(),
                    done: false,
                }));
            }
            let body = body
                .collect()
                .await
                .map_err(|e| {
                    TransportError::new(TransportErrorKind::Io, format!("reading response: {e}"))
                })?
                .to_bytes();
            Ok(Streamed::Response(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            }))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(url, timeout)),
        }
    }
}

fn build_request(
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: Option<Bytes>,
) -> Result<Request<Full<Bytes>>, TransportError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| TransportError::new(TransportErrorKind::InvalidUrl, format!("{url}: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(TransportError::new(
            TransportErrorKind::InvalidUrl,
            format!("{url}: expected http://HOST:PORT or https://HOST:PORT"),
        ));
    }
    let has_body = body.is_some();
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| TransportError::new(TransportErrorKind::InvalidUrl, e.to_string()))?;
    *req.headers_mut() = headers;
    if has_body && !req.headers().contains_key(header::CONTENT_TYPE) {
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Ok(req)
}

fn hyper_error(url: &str, e: hyper_util::client::legacy::Error) -> TransportError {
    let kind = if tls::is_tls_error(&e) {
        TransportErrorKind::Tls
    } else if e.is_connect() {
        TransportErrorKind::Connect
    } else {
        TransportErrorKind::Io
    };
    // The useful part (e.g. "Connection refused") is at the end of the source chain.
    let mut message = url.to_string();
    let mut refused = false;
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        refused |= s
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        source = s.source();
    }
    TransportError {
        refused: refused && kind == TransportErrorKind::Connect,
        ..TransportError::new(kind, message)
    }
}

fn timed_out(url: &str, timeout: Duration) -> TransportError {
    TransportError::new(
        TransportErrorKind::Timeout,
        format!("{url}: no response within {:.1}s", timeout.as_secs_f64()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        // Bound but not listening: connections are refused, and no other test can be given
        // the port while the socket lives.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let t = Transport::new(TransportConfig::default());
        let url = format!("http://{}/v1/status", held.local_addr().unwrap());
        let err = t
            .request(Method::GET, &url, HeaderMap::new(), None, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Connect, "{err}");
        assert!(err.refused, "nothing listens there: {err}");
        assert!(!err.maybe_sent());
    }

    #[tokio::test]
    async fn silent_server_times_out_as_maybe_sent() {
        // Accepts connections but never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                conns.push(s);
            }
        });
        let t = Transport::new(TransportConfig::default());
        let url = format!("http://{addr}/v1/kv/a");
        let err = t
            .request(
                Method::PUT,
                &url,
                HeaderMap::new(),
                Some(Bytes::from_static(b"1")),
                Some(Duration::from_millis(200)),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Timeout, "{err}");
        assert!(err.maybe_sent());
        holder.abort();
    }

    #[tokio::test]
    async fn bad_urls_are_rejected_before_sending() {
        let t = Transport::new(TransportConfig::default());
        for url in ["not a url", "ftp://127.0.0.1:1/", "/relative"] {
            let err = t
                .request(Method::GET, url, HeaderMap::new(), None, None)
                .await
                .unwrap_err();
            assert_eq!(err.kind, TransportErrorKind::InvalidUrl, "{url}: {err}");
        }
    }
}
