//! A blocking server-sent events client for tests: opens a stream (with any headers, such as
//! `Last-Event-ID`), decodes chunked framing and hands each event to the test through a channel, so
//! a test can wait for the next event with a deadline and see when the node ends the stream.
#![allow(dead_code)]

use crate::common::{DEADLINE, Resp};
use rcluster_client::sse::SseParser;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

/// One event as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub event: String,
    /// The event's `id:` (the SSE "last event id" in force for it).
    pub id: Option<String>,
    pub data: Value,
}

impl Ev {
    /// A string field of the data.
    pub fn s(&self, field: &str) -> &str {
        self.data[field].as_str().unwrap_or("")
    }
}

pub struct Sse {
    rx: Receiver<Option<Ev>>,
    conn: TcpStream,
    /// The response headers (lower-case names).
    pub headers: Vec<(String, String)>,
}

/// Opens `path` on `addr` as an event stream. `Err` carries the node's answer when it is not a
/// stream (a refusal, with its status and JSON body).
pub fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<Sse, Resp> {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).expect("send the request");
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut status_line = String::new();
    r.read_line(&mut status_line).expect("status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut hs = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            hs.push((k.trim().to_lowercase(), v.trim().to_string()));
        }
    }
    let chunked = hs
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if status != 200 {
        let len = hs
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        let _ = r.read_exact(&mut body);
        return Err(Resp {
            status,
            headers: hs,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut parser = SseParser::new();
        let mut feed = |bytes: &[u8]| {
            for e in parser.feed(bytes) {
                let data = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data));
                let ev = Ev {
                    event: e.event,
                    id: e.id,
                    data,
                };
                if tx.send(Some(ev)).is_err() {
                    return false;
                }
            }
            true
        };
        loop {
            let mut buf = vec![0u8; 8192];
            let got = if chunked {
                let mut size = String::new();
                if r.read_line(&mut size).unwrap_or(0) == 0 {
                    break;
                }
                let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                    break;
                };
                if n == 0 {
                    break;
                }
                buf.resize(n + 2, 0);
                if r.read_exact(&mut buf).is_err() {
                    break;
                }
                buf.truncate(n);
                n
            } else {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                }
            };
            if !feed(&buf[..got]) {
                return;
            }
        }
        let _ = tx.send(None);
    });
    Ok(Sse {
        rx,
        conn,
        headers: hs,
    })
}

impl Sse {
    /// The next event; `None` when the node ended the stream. Fails the test after the deadline.
    pub fn next(&self) -> Option<Ev> {
        match self.rx.recv_timeout(DEADLINE) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => panic!("no event within {DEADLINE:?}"),
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The next event other than `progress`. Fails the test after the deadline: heartbeats keep
    /// coming, so waiting for each event alone would wait forever for a change that never comes.
    pub fn next_change(&self) -> Option<Ev> {
        let end = std::time::Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Some(e)) if e.event == "progress" => continue,
                Ok(e) => return e,
                Err(RecvTimeoutError::Timeout) => panic!("no change within {DEADLINE:?}"),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// The next event if one arrives within `wait`; `Err(())` when none did.
    pub fn next_within(&self, wait: Duration) -> Result<Option<Ev>, ()> {
        match self.rx.recv_timeout(wait) {
            Ok(e) => Ok(e),
            Err(RecvTimeoutError::Timeout) => Err(()),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
        }
    }

    pub fn close(self) {
        let _ = self.conn.shutdown(Shutdown::Both);
    }
}
