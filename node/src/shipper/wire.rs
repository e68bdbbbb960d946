//! The appends' own connections: a few long-lived HTTP/1.1 connections per member, the request
//! written by hand in one write and the answer read with `httparse`. Appends are the primary's
//! hottest outbound path; the general client's pool, request building and dispatcher cost more
//! than the rest of a quorum write (hellos and snapshots stay on the general client).
//!
//! A connection carries one request at a time. It goes back to its member's idle list only after
//! a complete answer; any failure, a timeout, a cancelled request (the shipper dropping an append
//! it no longer waits for) or a `connection: close` answer drops it, and the next append opens a
//! new one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::StatusCode;
use rcluster_client::transport::TransportConfig;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Connections to one member at once: the shipper's window of batches in flight, plus room for
/// the shipper of the next term overlapping the last one's.
const MAX_CONNS: usize = 8;
/// The most an answer may take: appends are answered with a small JSON object.
const MAX_HEAD: usize = 16 << 10;
const MAX_BODY: usize = 1 << 20;
const MAX_HEADERS: usize = 32;

/// A member's answer to a request.
pub struct Answer {
    pub status: StatusCode,
    pub cluster_id: Option<Vec<u8>>,
    pub body: Vec<u8>,
}

/// The appends' connections to every member, opened as needed.
pub struct Wire {
    config: TransportConfig,
    /// Request headers after `host` (secret, cluster id, content type), rendered once.
    fixed: Vec<u8>,
    tls: OnceLock<TlsConnector>,
    /// Few members, looked up per append: a list beats hashing the URL.
    members: Mutex<Vec<(String, Arc<Member>)>>,
}

impl Wire {
    /// `headers`: the ones every internal request carries, as Link builds them.
    pub fn new(config: TransportConfig, headers: &http::HeaderMap) -> Wire {
        let mut fixed = Vec::new();
        for (name, value) in headers {
            fixed.extend_from_slice(name.as_str().as_bytes());
            fixed.extend_from_slice(b": ");
            fixed.extend_from_slice(value.as_bytes());
            fixed.extend_from_slice(b"\r\n");
        }
        // What the general client sends for a body without a content type.
        if !headers.contains_key(http::header::CONTENT_TYPE) {
            fixed.extend_from_slice(b"content-type: application/json\r\n");
        }
        Wire {
            config,
            fixed,
            tls: OnceLock::new(),
            members: Mutex::new(Vec::new()),
        }
    }

    /// POSTs `body` to `path` of the member at `base` (its URL) and reads the whole answer,
    /// within the general client's request timeout.
    pub async fn post(&self, base: &str, path: &str, body: &[u8]) -> Result<Answer, String> {
        let member = self.member(base, path)?;
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, self.exchange(&member, body)).await {
            Ok(r) => r.map_err(|e| format!("{}: {e}", member.url)),
            Err(_) => Err(format!(
                "{}: no response within {:.1}s",
                member.url,
                timeout.as_secs_f64()
            )),
        }
    }

    fn member(&self, base: &str, path: &str) -> Result<Arc<Member>, String> {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, m)) = members.iter().find(|(b, m)| b == base && m.path == path) {
            return Ok(m.clone());
        }
        let m = Arc::new(Member::new(base, path)?);
        members.push((base.to_string(), m.clone()));
        Ok(m)
    }

    async fn exchange(&self, member: &Member, body: &[u8]) -> io::Result<Answer> {
        // The permit bounds the member's connections; it is held until this request is over.
        let _permit = member
            .permits
            .acquire()
            .await
            .map_err(|_| io::Error::other("closed"))?;
        let mut conn = match member.take_idle(self.config.pool_idle_timeout) {
            Some(c) => c,
            None => self.connect(member).await?,
        };
        let mut req = Vec::with_capacity(member.head.len() + self.fixed.len() + 32 + body.len());
        req.extend_from_slice(&member.head);
        req.extend_from_slice(&self.fixed);
        req.extend_from_slice(b"content-length: ");
        req.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        req.extend_from_slice(b"\r\n\r\n");
        req.extend_from_slice(body);
        conn.stream.write_all(&req).await?;
        conn.stream.flush().await?;
        let (answer, reusable) = read_answer(&mut conn).await?;
        if reusable {
            member.put_idle(conn);
        }
        Ok(answer)
    }

    async fn connect(&self, member: &Member) -> io::Result<Conn> {
        let addr = (member.host.as_str(), member.port);
        let tcp = match tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(addr))
            .await
        {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            }
        };
        tcp.set_nodelay(true)?;
        let stream = match &member.tls_name {
            None => Stream::Plain(tcp),
            Some(name) => {
                let tls = self.tls.get_or_init(|| {
                    // The trust the general client verifies members with, and its ALPN.
                    let mut cfg: ClientConfig = self.config.trust.client_config();
                    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                    TlsConnector::from(Arc::new(cfg))
                });
                let handshake = tls.connect(name.clone(), tcp);
                match tokio::time::timeout(self.config.connect_timeout, handshake).await {
                    Ok(r) => Stream::Tls(Box::new(r?)),
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "TLS handshake timed out",
                        ));
                    }
                }
            }
        };
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(1024),
            idle_since: Instant::now(),
        })
    }
}

/// Where one member's appends go, and its idle connections.
struct Member {
    /// The full URL, for errors.
    url: String,
    path: String,
    host: String,
    port: u16,
    tls_name: Option<ServerName<'static>>,
    /// Request line and `host` header.
    head: Vec<u8>,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

impl Member {
    fn new(base: &str, path: &str) -> Result<Member, String> {
        let url = format!("{base}{path}");
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let bad = || format!("{url}: expected http://HOST:PORT or https://HOST:PORT");
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tls_name = if tls {
            let name = ServerName::try_from(host.clone()).map_err(|e| format!("{url}: {e}"))?;
            Some(name)
        } else {
            None
        };
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let head = format!("POST {target} HTTP/1.1\r\nhost: {authority}\r\n").into_bytes();
        Ok(Member {
            url,
            path: path.to_string(),
            host,
            port,
            tls_name,
            head,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_CONNS),
        })
    }

    /// The most recently used idle connection that is still open, if any.
    fn take_idle(&self, max_idle: Duration) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if c.idle_since.elapsed() < max_idle && c.still_open() {
                return Some(c);
            }
        }
        None
    }

    fn put_idle(&self, mut c: Conn) {
        c.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Never more than the permits allow; the check only guards against a logic slip.
        if idle.len() < MAX_CONNS {
            idle.push(c);
        }
    }
}

struct Conn {
    stream: Stream,
    /// Bytes read and not yet used (always empty between requests).
    buf: Vec<u8>,
    idle_since: Instant,
}

impl Conn {
    /// Whether the member has not closed the connection while it was idle (a restarted member
    /// did). Between requests nothing may arrive, so any byte or EOF means it is unusable.
    fn still_open(&self) -> bool {
        let tcp = match &self.stream {
            Stream::Plain(t) => t,
            Stream::Tls(t) => t.get_ref().0,
        };
        let mut probe = [0u8; 1];
        matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    async fn fill(&mut self) -> io::Result<()> {
        self.buf.reserve(4096);
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a complete answer",
            ));
        }
        Ok(())
    }
}

fn malformed(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads one answer; true with it when the connection may carry the next request.
async fn read_answer(conn: &mut Conn) -> io::Result<(Answer, bool)> {
    let (head_len, status, cluster_id, length, mut reusable) = loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&conn.buf) {
            Ok(httparse::Status::Complete(n)) => {
                let code = resp.code.unwrap_or(0);
                let status = StatusCode::from_u16(code)
                    .ok()
                    .filter(|s| !s.is_informational())
                    .ok_or_else(|| malformed(format!("unexpected status {code}")))?;
                let mut length = None;
                let mut chunked = false;
                let mut cluster_id = None;
                let mut reusable = resp.version == Some(1);
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let v = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .ok_or_else(|| malformed("bad content-length"))?;
                        if length.is_some_and(|l| l != v) {
                            return Err(malformed("two content-lengths"));
                        }
                        length = Some(v);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = true;
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        if h.value.eq_ignore_ascii_case(b"close") {
                            reusable = false;
                        }
                    } else if h
                        .name
                        .eq_ignore_ascii_case(rcluster_client::CLUSTER_ID_HEADER)
                    {
                        cluster_id = Some(h.value.to_vec());
                    }
                }
                // The node's server sends a length with every complete answer; anything else
                // is not an answer this wire reads.
                if chunked {
                    return Err(malformed("chunked answer"));
                }
                let length = length.ok_or_else(|| malformed("answer without content-length"))?;
                break (n, status, cluster_id, length, reusable);
            }
            Ok(httparse::Status::Partial) => {
                if conn.buf.len() > MAX_HEAD {
                    return Err(malformed("answer head too large"));
                }
                conn.fill().await?;
            }
            Err(e) => return Err(malformed(format!("bad answer head: {e}"))),
        }
    };
    if length > MAX_BODY {
        return Err(malformed(format!("answer of {length} bytes")));
    }
    while conn.buf.len() < head_len + length {
        conn.fill().await?;
    }
    // One request, one answer: bytes beyond it mean the connection is out of step.
    if conn.buf.len() > head_len + length {
        reusable = false;
    }
    let body = conn.buf[head_len..head_len + length].to_vec();
    conn.buf.clear();
    Ok((
        Answer {
            status,
            cluster_id,
            body,
        },
        reusable,
    ))
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
