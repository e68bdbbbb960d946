//! The socket guard: timeouts, eviction, hyper's automatic answers in our shape, fragments, and
//! the lingering close (see the parent module).

use super::{ConnMetrics, Shared, Timeouts, clock_ms, instant_at};
use crate::fds;
use bytes::Bytes;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

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
    /// Feeds bytes; true when the target holds a `#`. Looks for the byte that ends each part
    /// rather than stepping a state per byte (a request line is some 30 bytes, every request).
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        loop {
            let found = match *self {
                LineScan::Done => return false,
                LineScan::Start => rest.iter().position(|&b| b != b'\r' && b != b'\n'),
                LineScan::Method => rest.iter().position(|&b| matches!(b, b' ' | b'\r' | b'\n')),
                LineScan::Target => rest
                    .iter()
                    .position(|&b| matches!(b, b' ' | b'\r' | b'\n' | b'#')),
            };
            let Some(i) = found else {
                return false;
            };
            let b = rest[i];
            rest = &rest[i + 1..];
            match *self {
                // That byte begins the method.
                LineScan::Start => *self = LineScan::Method,
                LineScan::Method if b == b' ' => *self = LineScan::Target,
                _ => {
                    *self = LineScan::Done;
                    return b == b'#';
                }
            }
        }
    }
}

/// A connection's byte stream: the TCP socket itself, or TLS over it. The guard reaches the
/// socket underneath for the lingering close.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn tcp(&self) -> &TcpStream;
    fn into_tcp(self) -> TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn into_tcp(self) -> TcpStream {
        self
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
    fn into_tcp(self) -> TcpStream {
        self.into_inner().0
    }
}

/// The socket as hyper sees it.
pub struct GuardedIo<S: Socket> {
    stream: Option<S>,
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
    /// The deadline `timer` is set for (`clock_ms`), 0 when it is not set or has fired. A later
    /// deadline leaves it alone: it wakes early and is set again then. Resetting a timer takes
    /// the timer wheel's lock, and the idle deadline moves with every request.
    armed: u64,
    /// `timer` holds the waker of its last poll, which was this task's: it wakes the task when
    /// it fires, without being polled at every wait for a request (a poll registers the waker
    /// anew, some 200 instructions). False until a poll that registered, and again once fired.
    listening: bool,
    /// An answer of our own being written, and how much of it went out.
    out: Option<(Bytes, usize)>,
    /// After `out`, hyper reads the end of the stream and the connection closes.
    close_after_out: bool,
    peer_closed: bool,
}

impl<S: Socket> GuardedIo<S> {
    pub fn new(
        stream: S,
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
            armed: 0,
            listening: false,
            out: None,
            close_after_out: false,
            peer_closed: false,
        }
    }

    /// The HTTP/1.1 path serves the connection from here on (`Shared::own_path`): its heads'
    /// request lines are not scanned (it hands a target with a `#` to hyper, through `unread`).
    pub fn own_path(&mut self) {
        self.shared.own_path.store(true, Ordering::Relaxed);
    }

    /// Bytes read from the socket but not consumed: what is read next, before the socket. From
    /// the HTTP/1.1 path, they begin a head it leaves to hyper, which serves the rest: scanned
    /// as they are read again.
    pub fn unread(&mut self, bytes: Bytes) {
        if self.shared.own_path.swap(false, Ordering::Relaxed) {
            self.line = LineScan::Start;
        }
        if self.prefix.is_empty() {
            self.prefix = bytes;
        } else {
            let mut joined = bytes.to_vec();
            joined.extend_from_slice(&self.prefix);
            self.prefix = joined.into();
        }
    }

    fn stream(&mut self) -> &mut S {
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
        if !self.shared.own_path.load(Ordering::Relaxed) && self.line.feed(bytes) {
            self.shared.fragment.store(true, Ordering::Relaxed);
        }
    }

    /// With nothing to read and no request in service: close on eviction or a passed deadline,
    /// otherwise arm the timer for the deadline. `same_waker`: the task's waker is the one the
    /// timer was last polled with.
    fn check_deadline(&mut self, cx: &mut Context<'_>, same_waker: bool) -> bool {
        // Read before it is swapped: a swap is a locked instruction, on every wait for a request.
        if self.shared.evict.load(Ordering::Relaxed)
            && self.shared.evict.swap(false, Ordering::Relaxed)
        {
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
        let reset = self.armed == 0 || deadline < self.armed;
        if reset {
            self.timer.as_mut().reset(instant_at(deadline).into());
            self.armed = deadline;
        }
        if reset || !self.listening || !same_waker || self.timer.is_elapsed() {
            // A poll without budget left answers Pending without registering the waker.
            let budget = tokio::task::coop::has_budget_remaining();
            if self.timer.as_mut().poll(cx).is_ready() {
                self.armed = 0;
                self.listening = false;
                cx.waker().wake_by_ref();
            } else {
                self.listening = budget;
            }
        }
        false
    }
}

impl<S: Socket> AsyncRead for GuardedIo<S> {
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
                        this.observe_head(new);
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let mut waker = this.shared.waker.lock().unwrap();
                    let same_waker = waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
                    if !same_waker {
                        *waker = Some(cx.waker().clone());
                    }
                    drop(waker);
                    if free && this.check_deadline(cx, same_waker) {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<S: Socket> AsyncWrite for GuardedIo<S> {
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

impl<S: Socket> Drop for GuardedIo<S> {
    fn drop(&mut self) {
        self.metrics.open.dec();
        if let Some(stream) = self.stream.take()
            && !self.peer_closed
            && unread_input(stream.tcp())
        {
            linger(stream.into_tcp());
        }
    }
}

/// Whether the client sent bytes we have not read (closing now would send a reset).
pub fn unread_input(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    matches!(stream.try_read(&mut buf), Ok(n) if n > 0)
}

static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// A place among the few connections being closed slowly (lingering, or refused over TLS, which
/// takes a handshake to say why): bounded, so such closes cannot use up descriptors.
pub struct ClosingSlot(());

impl ClosingSlot {
    pub fn take() -> Option<ClosingSlot> {
        if LINGERING.fetch_add(1, Ordering::Relaxed) >= fds::LINGERING {
            LINGERING.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ClosingSlot(()))
    }
}

impl Drop for ClosingSlot {
    fn drop(&mut self) {
        LINGERING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Closes our side and drains what the client still sends for a moment before releasing the
/// socket: closing with unread input makes the kernel send a reset, which can destroy the
/// answer before the client reads it. Bounded in count, time and bytes; without a free slot
/// it reads what already arrived and closes.
pub fn linger(stream: TcpStream) {
    let Some(slot) = ClosingSlot::take() else {
        for _ in 0..16 {
            if !unread_input(&stream) {
                break;
            }
        }
        return;
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let _slot = slot;
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), drain(&mut stream)).await;
    });
}

/// Ends our side of the stream, then reads (and drops) what the client still sends, up to 1 MiB.
pub async fn drain<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 16 << 10];
    let mut left = 1usize << 20;
    while left > 0 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
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
    // Every response passes here: decide on the status alone for all but the three hyper writes,
    // before scanning the head (that scan cost 3,000 instructions a request).
    let status = match rest.get(..4)? {
        b"400 " => 400,
        b"414 " => 414,
        b"431 " => 431,
        _ => return None,
    };
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
        // Split anywhere: in the method, before the `#`, with empty reads between.
        assert!(scan(&[b"G", b"", b"ET /a", b"#b HTTP/1.1\r\n"]));
        assert!(scan(&[b"\r\n", b"\n", b"PUT ", b"#"]));
        assert!(!scan(&[b"GET /a HTTP/1.1#\r\n"]));
        assert!(!scan(&[b"GET /a", b" HTTP/1.1\r\n", b"#"]));
        assert!(!scan(&[b"GET\r\n/a#b"]));
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
