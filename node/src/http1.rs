//! The simple requests' own HTTP/1.1 path. Nearly every request of the data API is a small GET,
//! PUT, POST or DELETE answered with a body of known length. For those, hyper's dispatcher (its
//! state machine, buffers, header encoding) cost about 11,000 of the 32,000 instructions of a get.
//! This path parses such a request with httparse, calls the same guarded service, and writes the
//! answer in one write (a stream, chunked as it comes).
//!
//! Anything else goes to hyper, with every byte read so far, for the rest of the connection:
//! HTTP/1.0, `Expect`, `Upgrade`, `Connection` other than keep-alive, a chunked body or one over
//! 1 MiB, a target that is not a plain path, a head httparse or `http` refuses. hyper stays the
//! reference for the unusual, and the socket guard rewrites its answers as before. The guard also
//! stays under this path: header and idle timeouts, eviction and the in-service count work the
//! same for both.

use crate::connection::{
    Guarded, GuardedBody, GuardedIo, RequestBody, Socket, body_timeout_message, error_bytes,
};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the connection continues after this path.
pub enum Next {
    /// The peer closed, or the connection must end.
    Closed,
    /// hyper serves the rest, starting with these bytes.
    Hyper(Bytes),
}

/// A request this path takes: a body up to this size (larger ones are hyper's, with its body
/// timeout and streaming).
const MAX_BODY: usize = 1 << 20;
/// Room made for each read; a head is hyper's past this many bytes without completing.
const READ_CHUNK: usize = 16 << 10;
const MAX_HEAD: usize = 16 << 10;
/// Headers httparse is given room for; more go to hyper (which allows 100).
const MAX_HEADERS: usize = 32;

/// A parsed head: where its parts are in the buffer (offsets, so the buffer can be frozen).
struct Head {
    len: usize,
    method: Method,
    target: (u32, u32),
    headers: [((u32, u32), (u32, u32)); MAX_HEADERS],
    count: usize,
    body: usize,
}

enum Parsed {
    Simple,
    Partial,
    /// hyper's to serve.
    Other,
}

/// Parses into `head` (reused across requests: it is a kilobyte, and moving it costs copies).
fn parse(buf: &[u8], head: &mut Head) -> Parsed {
    // Left uninitialised: httparse writes the ones it fills (a kilobyte of headers zeroed for
    // every request otherwise).
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("PUT") => Method::PUT,
        Some("POST") => Method::POST,
        Some("DELETE") => Method::DELETE,
        _ => return Parsed::Other,
    };
    let path = req.path.unwrap_or_default();
    if req.version != Some(1) || !path.starts_with('/') || path.contains('#') {
        return Parsed::Other;
    }
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        (start as u32, (start + s.len()) as u32)
    };
    head.len = len;
    head.method = method;
    head.target = at(path.as_bytes());
    head.count = 0;
    let mut length = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        // Every header of every request passes here: its length picks the one name to compare.
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            14 if is(b"content-length") => {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<usize>().ok());
                match (length, n) {
                    (None, Some(n)) if n <= MAX_BODY => length = Some(n),
                    _ => return Parsed::Other,
                }
                // Not handed on (nor `host`, nor a keep-alive `connection`): the body is whole
                // and exactly as long as declared, the connection is kept alive, and the host is
                // a name this node answers to whatever it says. The API reads none of them, and
                // forwarding drops them (`forward::HOP_BY_HOP`). Nearly every request carries
                // `Host` alone, and a map with nothing in it costs no allocation, nor a name and a
                // value parsed, hashed, stored and dropped.
                continue;
            }
            10 if is(b"connection") => {
                if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                    return Parsed::Other;
                }
                continue;
            }
            4 if is(b"host") => continue,
            17 if is(b"transfer-encoding") => return Parsed::Other,
            6 if is(b"expect") => return Parsed::Other,
            7 if is(b"upgrade") => return Parsed::Other,
            _ => {}
        }
        head.headers[head.count] = (at(name), at(h.value));
        head.count += 1;
    }
    head.body = length.unwrap_or(0);
    Parsed::Simple
}

impl Head {
    fn new() -> Head {
        Head {
            len: 0,
            method: Method::GET,
            target: (0, 0),
            headers: [((0, 0), (0, 0)); MAX_HEADERS],
            count: 0,
            body: 0,
        }
    }
}

/// The request, taken out of the buffer without copying.
fn request(head: &Head, bytes: Bytes) -> Option<Request<RequestBody>> {
    let slice = |(a, b): (u32, u32)| bytes.slice(a as usize..b as usize);
    let uri = Uri::from_maybe_shared(slice(head.target)).ok()?;
    let mut headers = if head.count == 0 {
        HeaderMap::new()
    } else {
        HeaderMap::with_capacity(head.count)
    };
    for &(name, value) in &head.headers[..head.count] {
        let name = HeaderName::from_bytes(&bytes[name.0 as usize..name.1 as usize]).ok()?;
        let value = HeaderValue::from_maybe_shared(slice(value)).ok()?;
        headers.append(name, value);
    }
    let body = bytes.slice(head.len..head.len + head.body);
    let mut req = Request::new(RequestBody::Whole(body));
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

/// Serves simple requests until the peer leaves or a request is hyper's.
pub async fn serve<S, Svc>(
    io: &mut GuardedIo<S>,
    svc: &Guarded<Svc>,
    body_timeout: Duration,
) -> Next
where
    S: Socket,
    Svc: hyper::service::Service<
            Request<RequestBody>,
            Response = crate::answer::Response,
            Error = std::convert::Infallible,
        >,
    Svc::Future: Send + 'static,
{
    let mut buf = BytesMut::new();
    let mut out = Vec::with_capacity(1024);
    let mut head = Head::new();
    // A target with a `#` is hyper's (`parse`), and the guard scans it when it gets there; each
    // answer is followed by a read here, which starts the idle clock.
    io.own_path();
    loop {
        loop {
            if !buf.is_empty() {
                match parse(&buf, &mut head) {
                    Parsed::Simple => break,
                    Parsed::Partial if buf.len() < MAX_HEAD => {}
                    _ => return Next::Hyper(buf.freeze()),
                }
            }
            buf.reserve(READ_CHUNK);
            match io.read_buf(&mut buf).await {
                Ok(0) if buf.is_empty() => return Next::Closed,
                Ok(0) => return Next::Hyper(buf.freeze()),
                Ok(_) => {}
                Err(_) => return Next::Closed,
            }
        }
        // The body, within the body timeout; the request counts as in service meanwhile.
        let whole = head.len + head.body;
        let reading = (buf.len() < whole).then(|| svc.begin_body());
        if reading.is_some() {
            let rest = async {
                while buf.len() < whole {
                    buf.reserve(whole - buf.len());
                    if !matches!(io.read_buf(&mut buf).await, Ok(n) if n > 0) {
                        return false;
                    }
                }
                true
            };
            match tokio::time::timeout(body_timeout, rest).await {
                Ok(true) => {}
                Ok(false) => return Next::Closed,
                Err(_) => {
                    let answer =
                        error_bytes(408, "body_timeout", &body_timeout_message(body_timeout));
                    let _ = io.write_all(&answer).await;
                    return Next::Closed;
                }
            }
        }
        let taken = buf.split_to(whole).freeze();
        let Some(req) = request(&head, taken.clone()) else {
            // A target or header httparse passes but `http` refuses (`<` in a path): hyper
            // judges the request, and answers it as it would have from the start.
            let mut all = BytesMut::from(&taken[..]);
            all.extend_from_slice(&buf);
            return Next::Hyper(all.freeze());
        };
        let write = req.method() != Method::GET;
        let call = svc.call_with(req);
        // A write whose client has already gone is not started, as hyper does not start it: a
        // deposed primary's append still queued at a paused replica must not apply when the
        // replica resumes after that primary died. Reads skip the check (a system call).
        if write
            && buf.is_empty()
            && let Some(Ok(0) | Err(_)) = io.read_buf(&mut buf).now_or_never()
        {
            return Next::Closed;
        }
        tokio::pin!(call);
        // A peer that leaves while its request is served cancels it, as with hyper.
        let resp = loop {
            tokio::select! {
                biased;
                r = &mut call => break r,
                n = io.read_buf(&mut buf), if buf.len() < MAX_HEAD => match n {
                    Ok(0) | Err(_) => return Next::Closed,
                    Ok(_) => {}
                },
            }
        };
        let Ok(resp) = resp;
        drop(reading);
        // A whole answer (nearly all) is written from here, without a future of its own; the
        // request counts as in service until it is written, as its body is dropped after.
        let sent = match whole_answer(&mut out, &resp) {
            Some(keep_alive) => io.write_all(&out).await.ok().map(|()| keep_alive),
            None => respond(io, &mut buf, &mut out, resp).await,
        };
        match sent {
            Some(true) => {}
            Some(false) => {
                let _ = io.shutdown().await;
                return Next::Closed;
            }
            None => return Next::Closed,
        }
    }
}

/// Puts the status line and the headers into `out` (emptied first); whether the connection
/// stays open after the answer.
fn head(
    out: &mut Vec<u8>,
    status: http::StatusCode,
    headers: &HeaderMap,
    body: &GuardedBody,
) -> bool {
    out.clear();
    // By hand rather than `write!`: formatting machinery cost about 1,000 instructions a response.
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let meta = &body.inner.meta;
    meta.write(out);
    let mut keep_alive = true;
    for (name, value) in headers {
        // An answer relayed from another node keeps that node's headers, but states this node's
        // cluster id and date: one value per name, as on hyper's path (`HeaderMap::insert`, and
        // hyper adds a date only to an answer without one).
        if name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::DATE
            || meta.covers(name)
        {
            continue;
        }
        if name == http::header::CONNECTION && value.as_bytes().eq_ignore_ascii_case(b"close") {
            keep_alive = false;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    date(out);
    keep_alive
}

/// Answers without a body of their own, whatever the body says.
fn bodiless(status: http::StatusCode) -> bool {
    status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
}

/// The end of a head that announces a body of `n` bytes (none for a bodiless status).
fn end_head(out: &mut Vec<u8>, n: u64, bodiless: bool) {
    if !bodiless {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A whole answer, head and body, into `out`; `Some(keep_alive)`, or `None` when its body is a
/// stream (`respond` writes that one).
fn whole_answer(out: &mut Vec<u8>, resp: &Response<GuardedBody>) -> Option<bool> {
    let body = resp.body();
    let whole = body.inner.whole()?;
    let keep_alive = head(out, resp.status(), resp.headers(), body);
    let bodiless = bodiless(resp.status());
    end_head(out, whole.len() as u64, bodiless);
    if !bodiless {
        out.extend_from_slice(whole);
    }
    Some(keep_alive)
}

/// Writes a response: in one write when its length is known, chunked as it comes otherwise.
/// `Some(keep_alive)` once it is sent, `None` when the connection failed.
async fn respond<S: Socket>(
    io: &mut GuardedIo<S>,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    resp: Response<GuardedBody>,
) -> Option<bool> {
    let (parts, mut body) = resp.into_parts();
    let keep_alive = head(out, parts.status, &parts.headers, &body);
    let bodiless = bodiless(parts.status);
    if let Some(n) = body.size_hint().exact() {
        end_head(out, n, bodiless);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return None };
            if let Ok(mut data) = frame.into_data()
                && !bodiless
            {
                while data.has_remaining() {
                    let chunk = data.chunk();
                    out.extend_from_slice(chunk);
                    let n = chunk.len();
                    data.advance(n);
                }
            }
        }
        io.write_all(out).await.ok()?;
        return Some(keep_alive);
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    io.write_all(out).await.ok()?;
    io.flush().await.ok()?;
    // A stream (a watch, a topic's messages) lasts until its body ends or the peer leaves; what
    // the peer sends meanwhile waits in the buffer.
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            n = io.read_buf(buf), if buf.len() < MAX_HEAD => match n {
                Ok(0) | Err(_) => return None,
                Ok(_) => continue,
            },
        };
        match frame {
            None => break,
            Some(Err(_)) => return None,
            Some(Ok(frame)) => {
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                if !data.has_remaining() {
                    continue;
                }
                out.clear();
                let _ = write!(out, "{:x}\r\n", data.remaining());
                while data.has_remaining() {
                    let chunk = data.chunk();
                    out.extend_from_slice(chunk);
                    let n = chunk.len();
                    data.advance(n);
                }
                out.extend_from_slice(b"\r\n");
                io.write_all(out).await.ok()?;
                io.flush().await.ok()?;
            }
        }
    }
    io.write_all(b"0\r\n\r\n").await.ok()?;
    io.flush().await.ok()?;
    Some(keep_alive)
}

/// The `date` header hyper would send, formatted once a second per thread.
fn date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let secs = wall_secs();
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            let at = UNIX_EPOCH + Duration::from_secs(secs);
            *c = (secs, httpdate::fmt_http_date(at));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(c.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// Seconds since the epoch. Every answer asks, for its `date`: on Linux from the coarse clock,
/// which the kernel keeps in memory (a few milliseconds behind at most, nothing to a date of
/// whole seconds); the precise clock reads the hypervisor's clock page and the time-stamp
/// counter.
fn wall_secs() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write; the clock id is a constant Linux has had
        // since 2.6.32.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            return ts.tv_sec as u64;
        }
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(raw: &[u8]) -> Option<Request<RequestBody>> {
        let mut h = Head::new();
        match parse(raw, &mut h) {
            Parsed::Simple => request(&h, Bytes::copy_from_slice(raw)),
            _ => None,
        }
    }

    #[test]
    fn plain_requests_are_taken_whole() {
        let req = simple(b"PUT /v1/kv/a%2Fb?ack=one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\n\"v\"")
            .expect("a simple request");
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(req.uri().path(), "/v1/kv/a%2Fb");
        assert_eq!(req.uri().query(), Some("ack=one"));
        let all: Vec<_> = req.headers().get_all("x-a").iter().collect();
        assert_eq!(all, ["1", "2"]);
        // What only the connection needed is not handed on.
        assert_eq!(req.headers().len(), 2, "{:?}", req.headers());
        let bare = simple(b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            .expect("a simple request");
        assert!(bare.headers().is_empty(), "{:?}", bare.headers());
        match req.into_body() {
            RequestBody::Whole(b) => assert_eq!(&b[..], b"\"v\""),
            RequestBody::Streamed(_) => panic!("a whole body"),
        }
    }

    /// The date line is an HTTP date of now (the coarse clock is milliseconds behind at most).
    #[test]
    fn the_date_is_now() {
        let mut out = Vec::new();
        date(&mut out);
        let line = String::from_utf8(out).unwrap();
        let value = line
            .strip_prefix("date: ")
            .and_then(|l| l.strip_suffix("\r\n"))
            .unwrap_or_else(|| panic!("{line:?}"));
        let at = httpdate::parse_http_date(value).unwrap();
        let now = SystemTime::now();
        let apart = now.duration_since(at).unwrap_or_else(|e| e.duration());
        assert!(apart < Duration::from_secs(2), "{value} against {now:?}");
    }

    #[test]
    fn the_unusual_is_left_to_hyper() {
        let other = |raw: &[u8]| matches!(parse(raw, &mut Head::new()), Parsed::Other);
        assert!(other(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(other(b"HEAD / HTTP/1.1\r\n\r\n"));
        assert!(other(b"GET /a#b HTTP/1.1\r\n\r\n"));
        assert!(other(b"GET http://x/a HTTP/1.1\r\n\r\n"));
        assert!(other(
            b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(other(b"PUT /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"));
        assert!(other(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(other(
            b"PUT /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(other(b"PUT /a HTTP/1.1\r\nContent-Length: +1\r\n\r\n"));
        assert!(other(
            b"PUT /a HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"
        ));
        assert!(other(b"GET /a HTTP/1.1\r\nBad Header: x\r\n\r\n"));
        assert!(matches!(
            parse(b"GET /a HTTP/1.1\r\nHost", &mut Head::new()),
            Parsed::Partial
        ));
    }
}
