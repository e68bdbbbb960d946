//! Raw sockets for probing a node's HTTP layer the way a hostile or broken client would:
//! partial heads, bodies that never end, many connections, bytes no HTTP library would send.
//! Plus the node's memory as the kernel reports it.
#![allow(dead_code)]

use crate::common::{DEADLINE, Resp};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const MIB: u64 = 1 << 20;

pub fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the node");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Sends `bytes` on a fresh connection and reads until the node closes it.
pub fn raw(addr: &str, bytes: &[u8]) -> Resp {
    let mut s = connect(addr);
    // A node may answer and stop reading before all of a bad request arrived.
    let _ = s.write_all(bytes);
    let raw = read_until_closed(&mut s).expect("the node closes the connection");
    parse(&raw).unwrap_or_else(|| panic!("not an HTTP response: {:?}", lossy(&raw)))
}

/// Reads until EOF; an error (read timeout included) when the node keeps the connection open.
pub fn read_until_closed(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the answer still ends the connection.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// Reads exactly one response (by its Content-Length) and leaves the connection open.
pub fn read_one(s: &mut TcpStream) -> std::io::Result<Resp> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(r) = parse_complete(&raw) {
            return Ok(r);
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "closed after {:?}",
                lossy(&raw)
            )));
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse_complete(raw: &[u8]) -> Option<Resp> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let r = parse(raw)?;
    let len: usize = r.header("content-length")?.parse().ok()?;
    (raw.len() >= split + 4 + len).then_some(r)
}

/// Parses one response with a Content-Length body (or everything after the head).
pub fn parse(raw: &[u8]) -> Option<Resp> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(rest.len())
        .min(rest.len());
    Some(Resp {
        status,
        headers,
        body: lossy(&rest[..len]),
    })
}

/// The answer to a request whose body the client keeps sending, and how much of the body had
/// been sent when the answer came.
pub struct BodyProbe {
    pub resp: Resp,
    pub sent: u64,
}

/// Sends a request declaring a `declared`-byte body and streams zeros (at most `max_send`
/// bytes) while waiting for the answer. A node that checks before it reads answers long before
/// the body is complete.
pub fn send_large_body(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    declared: u64,
    max_send: u64,
) -> BodyProbe {
    let mut s = connect(addr);
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {declared}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut w = s.try_clone().unwrap();
    let counter = sent.clone();
    let writer = std::thread::spawn(move || {
        let chunk = vec![0u8; MIB as usize];
        while counter.load(std::sync::atomic::Ordering::Relaxed) < max_send {
            if w.write_all(&chunk).is_err() {
                return;
            }
            counter.fetch_add(MIB, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let resp = read_one(&mut s).unwrap_or_else(|e| panic!("no answer to {method} {path}: {e}"));
    let at_answer = sent.load(std::sync::atomic::Ordering::Relaxed);
    // Closing our side ends the writer (its writes fail once the node has closed too).
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    BodyProbe {
        resp,
        sent: at_answer,
    }
}

/// A `/proc/PID/status` field in KiB (`VmRSS`: resident now; `VmHWM`: the peak).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A connection that sent part of a request head and nothing more.
pub fn slow_connection(addr: &str) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: slow\r\n")
        .unwrap();
    s
}

/// Whether the node closed `s` (EOF or reset) within `wait`, reading and dropping what it sent.
pub fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}
