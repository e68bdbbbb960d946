//! One client connection, between the socket and hyper. hyper parses requests; this layer adds
//! what hyper leaves out or does differently from the rest of the API:
//! - the header timeout (a request head must arrive in time, counted from its first byte, or
//!   from the connection's start for its first request) and the idle timeout between requests,
//!   answered with a JSON 408 or a quiet close;
//! - hyper's own answers to unparsable requests (400/414/431 with an empty body) rewritten in
//!   the JSON error shape;
//! - a `#fragment` in the request target, which hyper drops silently, reported to the API;
//! - eviction: the admission registry may ask a connection that is idle or still sending its
//!   head to give way to a newcomer;
//! - a lingering close, so a client whose request we refused before reading all of it gets the
//!   answer rather than a reset.

use crate::fds;
use bytes::Bytes;
use http::{Request, Response};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Largest request head (request line and headers) hyper buffers; larger heads get 431. Also
/// bounds the memory a connection that sends headers forever can take.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// The API reads this request extension: the raw request target had a `#fragment`.
#[derive(Clone, Copy, Debug)]
pub struct FragmentInTarget;

/// Milliseconds on a process-wide clock, never 0 (0 means "not set" in the atomics below).
pub fn clock_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

fn instant_at(ms: u64) -> Instant {
    let now = clock_ms();
    let now_i = Instant::now();
    if ms >= now {
        now_i + Duration::from_millis(ms - now)
    } else {
        now_i
    }
}

/// State one connection shares between its socket guard, its requests and the admission
/// registry. Everything but `evict` and the waker is written from the connection's own task.
#[derive(Default)]
pub struct Shared {
    /// Request heads completed (requests handed to the API).
    requests: AtomicU64,
    /// Requests in service, until their response body is dropped.
    busy: AtomicUsize,
    /// Since when the connection is without a request in service (`clock_ms`; 0 while busy).
    free_since: AtomicU64,
    /// It is receiving a request head (as opposed to waiting idle between requests).
    head_pending: AtomicBool,
    fragment: AtomicBool,
    evict: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        let s = Shared::default();
        s.free_since.store(clock_ms(), Ordering::Relaxed);
        s.head_pending.store(true, Ordering::Relaxed);
        Arc::new(s)
    }

    /// When it started waiting without a request in service, and whether it is receiving a
    /// head: what eviction decides on. `None` while a request is in service.
    pub fn evictable(&self) -> Option<(bool, u64)> {
        if self.evict.load(Ordering::Relaxed) || self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.free_since.load(Ordering::Relaxed) {
            0 => None,
            t => Some((self.head_pending.load(Ordering::Relaxed), t)),
        }
    }

    /// Asks the connection to close as soon as it has no request in service.
    pub fn evict(&self) {
        self.evict.store(true, Ordering::Relaxed);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    #[cfg(test)]
    pub fn begin_request_for_test(self: &Arc<Self>) -> BusyGuard {
        self.begin_request().0
    }

    fn begin_request(self: &Arc<Self>) -> (BusyGuard, bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.free_since.store(0, Ordering::Relaxed);
        self.head_pending.store(false, Ordering::Relaxed);
        let fragment = self.fragment.swap(false, Ordering::Relaxed);
        (BusyGuard(self.clone()), fragment)
    }
}

/// Counts a request as in service until its response body is dropped (sent or abandoned).
pub struct BusyGuard(Arc<Shared>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.free_since.store(clock_ms(), Ordering::Relaxed);
            // hyper does not read again by itself after a response; the idle clock must start.
            if let Some(w) = self.0.waker.lock().unwrap().as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// Connection counters, registered with the node's metrics.
#[derive(Clone)]
pub struct ConnMetrics {
    /// Connections being served (the reserved lane included).
    pub open: prometheus::IntGauge,
    /// Connections the node closed, by reason.
    pub closed: prometheus::IntCounterVec,
}

impl ConnMetrics {
    pub const REASONS: &[&str] = &[
        "too_many_connections",
        "evicted",
        "header_timeout",
        "idle_timeout",
        "bad_request",
    ];

    pub fn register(registry: &prometheus::Registry) -> ConnMetrics {
        let open = prometheus::IntGauge::new(
            "rcluster_connections_open",
            "Client connections being served",
        )
        .expect("a valid metric");
        let closed = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "rcluster_connections_closed_total",
                "Connections the node closed: refused at the limit, evicted for a newcomer, \
                 timed out, or unparsable",
            ),
            &["reason"],
        )
        .expect("a valid metric");
        for r in Self::REASONS {
            closed.with_label_values(&[r]);
        }
        let _ = registry.register(Box::new(open.clone()));
        let _ = registry.register(Box::new(closed.clone()));
        ConnMetrics { open, closed }
    }

    pub fn closed(&self, reason: &str) {
        self.closed.with_label_values(&[reason]).inc();
    }
}

/// Scans the request line of a head as it arrives, for a `#` in the request target.
#[derive(Default, Clone, Copy)]
enum LineScan {
    #[default]
    Start,
    Method,
    Target,
    Done,
}

impl LineScan {
    /// Feeds bytes; true when the target holds a `#`.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut found = false;
        for &b in bytes {
            *self = match (*self, b) {
                (LineScan::Done, _) => return found,
                (LineScan::Start, b'\r' | b'\n') => LineScan::Start,
                (LineScan::Start, _) => LineScan::Method,
                (LineScan::Method, b' ') => LineScan::Target,
                (LineScan::Method, b'\r' | b'\n') => LineScan::Done,
                (LineScan::Method, _) => LineScan::Method,
                (LineScan::Target, b' ' | b'\r' | b'\n') => LineScan::Done,
                (LineScan::Target, b'#') => {
                    found = true;
                    LineScan::Done
                }
                (LineScan::Target, _) => LineScan::Target,
            };
        }
        found
    }
}

/// The socket as hyper sees it.
pub struct GuardedIo {
    stream: Option<TcpStream>,
    /// Bytes read before hyper took over (the reserved lane reads a head to classify it).
    prefix: Bytes,
    shared: Arc<Shared>,
    timeouts: Timeouts,
    metrics: ConnMetrics,
    /// `shared.requests` when this guard last looked: a change means a head completed.
    seen_requests: u64,
    /// When the head being received started (`clock_ms`), 0 when none is.
    head_started: u64,
    line: LineScan,
    timer: Pin<Box<Sleep>>,
    /// An answer of our own being written, and how much of it went out.
    out: Option<(Bytes, usize)>,
    /// After `out`, hyper reads the end of the stream and the connection closes.
    close_after_out: bool,
    peer_closed: bool,
}

impl GuardedIo {
    pub fn new(
        stream: TcpStream,
        prefix: Bytes,
        shared: Arc<Shared>,
        timeouts: Timeouts,
        metrics: ConnMetrics,
    ) -> Self {
        metrics.open.inc();
        GuardedIo {
            metrics,
            stream: Some(stream),
            prefix,
            seen_requests: shared.requests.load(Ordering::Relaxed),
            head_started: clock_ms(),
            shared,
            timeouts,
            line: LineScan::Start,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            out: None,
            close_after_out: false,
            peer_closed: false,
        }
    }

    fn stream(&mut self) -> &mut TcpStream {
        self.stream
            .as_mut()
            .expect("the stream is taken only on drop")
    }

    /// Answers with our own JSON error, then ends the connection.
    fn close_with(&mut self, status: u16, code: &str, message: &str) {
        self.out = Some((error_bytes(status, code, message), 0));
        self.close_after_out = true;
    }

    fn close_quietly(&mut self) {
        self.out = None;
        self.close_after_out = true;
    }

    fn drain_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, off)) = self.out.take() {
            if off >= bytes.len() {
                break;
            }
            let n = match Pin::new(self.stream()).poll_write(cx, &bytes[off..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.out = Some((bytes, off));
                    return Poll::Pending;
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out = Some((bytes, off + n));
        }
        Poll::Ready(Ok(()))
    }

    /// Catches up with requests handed to the API since the last look.
    fn sync(&mut self) {
        let r = self.shared.requests.load(Ordering::Relaxed);
        if r != self.seen_requests {
            self.seen_requests = r;
            self.head_started = 0;
            self.line = LineScan::Start;
        }
    }

    /// Bytes of a request head arrived while no request is in service.
    fn observe_head(&mut self, bytes: &[u8]) {
        if self.head_started == 0 {
            self.head_started = clock_ms();
            self.shared.head_pending.store(true, Ordering::Relaxed);
        }
        if self.line.feed(bytes) {
            self.shared.fragment.store(true, Ordering::Relaxed);
        }
    }

    /// With nothing to read and no request in service: close on eviction or a passed deadline,
    /// otherwise arm the timer for the deadline.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        if self.shared.evict.swap(false, Ordering::Relaxed) {
            self.metrics.closed("evicted");
            if self.head_started != 0 {
                self.close_with(
                    503,
                    "too_many_connections",
                    "the node is at its connection limit; this connection gave way to another",
                );
            } else {
                self.close_quietly();
            }
            return true;
        }
        let deadline = if self.head_started != 0 {
            self.head_started + self.timeouts.header.as_millis() as u64
        } else {
            let free = self.shared.free_since.load(Ordering::Relaxed).max(1);
            free + self.timeouts.idle.as_millis() as u64
        };
        if clock_ms() >= deadline {
            if self.head_started != 0 {
                self.metrics.closed("header_timeout");
                self.close_with(
                    408,
                    "header_timeout",
                    &format!(
                        "the request head did not arrive within {} ms",
                        self.timeouts.header.as_millis()
                    ),
                );
            } else {
                self.metrics.closed("idle_timeout");
                self.close_quietly();
            }
            return true;
        }
        self.timer.as_mut().reset(instant_at(deadline).into());
        if self.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        false
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.close_after_out {
                ready!(this.drain_out(cx))?;
                return Poll::Ready(Ok(()));
            }
            this.sync();
            let free = this.shared.busy.load(Ordering::Relaxed) == 0;
            if !this.prefix.is_empty() {
                let n = this.prefix.len().min(buf.remaining());
                let bytes = this.prefix.split_to(n);
                if free {
                    this.observe_head(&bytes);
                }
                buf.put_slice(&bytes);
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            match Pin::new(this.stream()).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    let new = &buf.filled()[before..];
                    if new.is_empty() {
                        this.peer_closed = true;
                    } else if free {
                        let new = new.to_vec();
                        this.observe_head(&new);
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    *this.shared.waker.lock().unwrap() = Some(cx.waker().clone());
                    if free && this.check_deadline(cx) {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain_out(cx))?;
        if this.shared.busy.load(Ordering::Relaxed) == 0
            && let Some((status, code, message)) = automatic_error(buf)
        {
            // hyper answered a request it could not parse; say why, in our shape. hyper writes
            // nothing more on this connection and closes it.
            this.metrics.closed("bad_request");
            this.out = Some((error_bytes(status, code, message), 0));
            let _ = this.drain_out(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(this.stream()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain_out(cx))?;
        Pin::new(this.stream()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain_out(cx))?;
        Pin::new(this.stream()).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        // One contiguous buffer per write, so an automatic answer is recognised whole.
        false
    }
}

impl Drop for GuardedIo {
    fn drop(&mut self) {
        self.metrics.open.dec();
        if let Some(stream) = self.stream.take()
            && !self.peer_closed
            && unread_input(&stream)
        {
            linger(stream);
        }
    }
}

/// Whether the client sent bytes we have not read (closing now would send a reset).
fn unread_input(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    matches!(stream.try_read(&mut buf), Ok(n) if n > 0)
}

static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Closes our side and drains what the client still sends for a moment before releasing the
/// socket: closing with unread input makes the kernel send a reset, which can destroy the
/// answer before the client reads it. Bounded in count, time and bytes; without a free slot
/// it reads what already arrived and closes.
pub fn linger(stream: TcpStream) {
    if LINGERING.fetch_add(1, Ordering::Relaxed) >= fds::LINGERING {
        LINGERING.fetch_sub(1, Ordering::Relaxed);
        for _ in 0..16 {
            if !unread_input(&stream) {
                break;
            }
        }
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        LINGERING.fetch_sub(1, Ordering::Relaxed);
        return;
    };
    rt.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let drain = async {
            let _ = stream.shutdown().await;
            let mut buf = vec![0u8; 16 << 10];
            let mut left = 1usize << 20;
            while left > 0 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        LINGERING.fetch_sub(1, Ordering::Relaxed);
    });
}

/// A complete JSON error response that closes the connection.
pub fn error_bytes(status: u16, code: &str, message: &str) -> Bytes {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    Bytes::from(format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// Recognises the answers hyper writes by itself for requests it cannot parse: a bare status
/// line with `content-length: 0` and no other header of ours (every answer of the API has a
/// content type).
fn automatic_error(buf: &[u8]) -> Option<(u16, &'static str, &'static str)> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let status = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &buf[..head_end];
    let has = |h: &[u8]| head.windows(h.len()).any(|w| w.eq_ignore_ascii_case(h));
    if !has(b"\r\ncontent-length: 0") || has(b"\r\ncontent-type:") {
        return None;
    }
    match status {
        400 => Some((
            400,
            "bad_request",
            "malformed request: the request line or a header could not be parsed",
        )),
        414 => Some((414, "uri_too_long", "the request target is too long")),
        431 => Some((
            431,
            "headers_too_large",
            "the request head is too large (at most 100 headers and 64 KiB)",
        )),
        _ => None,
    }
}

/// The API service with each request counted as in service until its response is sent.
pub struct Guarded<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, shared: Arc<Shared>) -> Self {
        Guarded { inner, shared }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, E> hyper::service::Service<Request<hyper::body::Incoming>> for Guarded<S>
where
    S: hyper::service::Service<Request<hyper::body::Incoming>, Response = Response<B>, Error = E>,
    S::Future: Send + 'static,
    B: 'static,
    E: 'static,
{
    type Response = Response<GuardedBody<B>>;
    type Error = E;
    type Future = BoxFuture<Result<Self::Response, E>>;

    fn call(&self, mut req: Request<hyper::body::Incoming>) -> Self::Future {
        let (guard, fragment) = self.shared.begin_request();
        if fragment {
            req.extensions_mut().insert(FragmentInTarget);
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| GuardedBody {
                inner,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its request counted as in service until it is dropped.
pub struct GuardedBody<B> {
    inner: B,
    _guard: BusyGuard,
}

impl<B: http_body::Body + Unpin> http_body::Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_are_found_in_the_target_only() {
        let scan = |parts: &[&[u8]]| {
            let mut s = LineScan::Start;
            parts.iter().any(|p| s.feed(p))
        };
        assert!(scan(&[b"GET /a#b HTTP/1.1\r\n"]));
        assert!(scan(&[b"\r\nGET /a", b"b#c HTTP/1.1\r\n"]));
        assert!(!scan(&[b"GET /a HTTP/1.1\r\nx-h: #1\r\n\r\n"]));
        assert!(!scan(&[b"GET /a?b=%23 HTTP/1.1\r\n"]));
    }

    #[test]
    fn only_hyper_s_bare_answers_are_rewritten() {
        let bare =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(
            automatic_error(bare).map(|e| e.1),
            Some("headers_too_large")
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_error(ours), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_error(ok), None);
        let body = b"{\"a\":1}";
        assert_eq!(automatic_error(body), None);
    }

    #[test]
    fn error_answers_are_complete_json_responses() {
        let b = error_bytes(408, "header_timeout", "slow");
        let text = std::str::from_utf8(&b).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "header_timeout");
    }
}
