//! One client connection, between the socket and the HTTP parser: the node's own path for simple
//! requests (`crate::http1`), then hyper for whatever is not simple. This layer adds what the
//! parsers leave out or do differently from the rest of the API:
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
//!
//! `io.rs` is the socket guard; this file holds what it shares with the requests (the in-service
//! count, eviction) and the service wrapper that keeps that count.

mod io;

pub use io::{ClosingSlot, GuardedIo, Socket, drain, error_bytes, linger, unread_input};

use crate::answer;
use http::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Largest request head (request line and headers) hyper buffers; larger heads get 431. Also
/// bounds the memory a connection that sends headers forever can take.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// The API reads this request extension: the raw request target had a `#fragment`.
#[derive(Clone, Copy, Debug)]
pub struct FragmentInTarget;

/// Milliseconds on a process-wide clock, never 0 (0 means "not set" in the atomics below).
///
/// Read about three times a request, for timeouts of a second or more: on Linux the coarse
/// monotonic clock (a few milliseconds of resolution), which the kernel keeps in memory. The
/// precise one reads the hypervisor's clock page and the time-stamp counter, several times the
/// cost on a VM.
pub fn clock_ms() -> u64 {
    #[cfg(target_os = "linux")]
    {
        static EPOCH: OnceLock<u64> = OnceLock::new();
        let now = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid timespec to write; the clock id is a constant Linux has
            // had since 2.6.32.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
            ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
        };
        let epoch = *EPOCH.get_or_init(now);
        now().saturating_sub(epoch) + 1
    }
    #[cfg(not(target_os = "linux"))]
    {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
    }
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
    /// The node's HTTP/1.1 path serves the connection (`http1::serve`): it parses every head
    /// itself and reads again right after each answer. hyper does neither.
    own_path: AtomicBool,
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

    /// Resolves once the admission registry asked the connection to give way. Awaited while a
    /// TLS handshake runs, before the socket guard (which watches the request otherwise) exists.
    pub async fn evicted(&self) {
        std::future::poll_fn(|cx| {
            if self.evict.load(Ordering::Relaxed) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.evict.load(Ordering::Relaxed) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
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
        let shared = &self.0;
        if shared.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            shared.free_since.store(clock_ms(), Ordering::Relaxed);
            // hyper does not read again by itself after a response; the idle clock must start.
            // The HTTP/1.1 path's loop reads next anyway, and its read starts the clock: woken,
            // its task was polled a second time per request, to find nothing to read.
            if !shared.own_path.load(Ordering::Relaxed)
                && let Some(w) = shared.waker.lock().unwrap().as_ref()
            {
                w.wake_by_ref();
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    /// A request body must arrive within this time after its head.
    pub body: Duration,
}

/// The answer to a body that did not arrive in time (the API's and the simple path's).
pub fn body_timeout_message(timeout: Duration) -> String {
    format!(
        "the request body did not arrive within {} ms",
        timeout.as_millis()
    )
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
        "tls_handshake",
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
                 timed out, unparsable, or a failed TLS handshake",
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

/// A request's body as the API receives it: streamed by hyper, or already read whole by the
/// simple requests' path.
pub enum RequestBody {
    Streamed(hyper::body::Incoming),
    Whole(bytes::Bytes),
}

impl http_body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Streamed(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Whole(b) if b.is_empty() => Poll::Ready(None),
            RequestBody::Whole(b) => {
                Poll::Ready(Some(Ok(http_body::Frame::data(std::mem::take(b)))))
            }
        }
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

impl<S> Guarded<S> {
    /// Counts a request as in service from the end of its head, while its body is read: the
    /// head's deadline no longer applies, and eviction passes the connection by.
    pub fn begin_body(&self) -> BusyGuard {
        self.shared.begin_request().0
    }

    /// Serves one request, counted from here until its response body is dropped.
    pub fn call_with<E>(&self, mut req: Request<RequestBody>) -> GuardedCall<S::Future>
    where
        S: hyper::service::Service<Request<RequestBody>, Response = answer::Response, Error = E>,
    {
        let (guard, fragment) = self.shared.begin_request();
        if fragment {
            req.extensions_mut().insert(FragmentInTarget);
        }
        // Boxed where it is made: the API's future is kilobytes, and each move of it is a copy.
        // Allocated before it is made, so the compiler builds it in the box:
        // `Box::pin(call)` made it on the stack and copied it over (about 270 instructions a
        // request, callgrind).
        GuardedCall {
            fut: Box::into_pin(Box::write(Box::new_uninit(), self.inner.call(req))),
            guard: Some(guard),
        }
    }
}

/// A request in service: its answer, with the request counted until the answer's body is dropped.
/// A future of its own rather than an async block around the call, which was a second allocation
/// and a second future to poll, every request.
pub struct GuardedCall<F> {
    fut: Pin<Box<F>>,
    guard: Option<BusyGuard>,
}

impl<F, E> Future for GuardedCall<F>
where
    F: Future<Output = Result<answer::Response, E>>,
{
    type Output = Result<Response<GuardedBody>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = std::task::ready!(self.fut.as_mut().poll(cx))?;
        let guard = self
            .guard
            .take()
            .expect("a call is polled to its answer once");
        Poll::Ready(Ok(resp.map(|inner| GuardedBody {
            inner,
            _guard: guard,
        })))
    }
}

/// hyper's path: the answer's protocol headers become headers here (`answer::Meta`).
impl<S, E> hyper::service::Service<Request<hyper::body::Incoming>> for Guarded<S>
where
    S: hyper::service::Service<Request<RequestBody>, Response = answer::Response, Error = E>,
    S::Future: Send + 'static,
    E: 'static,
{
    type Response = Response<GuardedBody>;
    type Error = E;
    type Future = BoxFuture<Result<Self::Response, E>>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        let answer = self.call_with(req.map(RequestBody::Streamed));
        Box::pin(async move {
            let mut resp = answer.await?;
            let meta = std::mem::take(&mut resp.body_mut().inner.meta);
            meta.insert_into(resp.headers_mut());
            Ok(resp)
        })
    }
}

/// A response body that keeps its request counted as in service until it is dropped.
pub struct GuardedBody {
    pub inner: answer::Body,
    _guard: BusyGuard,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = answer::BoxError;

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
