//! Incremental parser for server-sent events (the `text/event-stream` format).
//!
//! Bytes arrive in arbitrary chunks, so the parser keeps the unfinished line and the
//! event being assembled between calls to [`SseParser::feed`].

use serde_json::Value;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `message` when the server sent none (as the SSE spec says).
    pub event: String,
    /// The last `id:` field seen on the stream (ids persist across events per the spec).
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl Event {
    /// The data parsed as JSON.
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.data)
    }
}

/// Turns a byte stream into [`Event`]s.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// A `\r` ended the previous chunk: a `\n` starting the next chunk belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    last_id: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk and returns the events it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out);
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<Event>) {
        let raw = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&raw);
        if line.is_empty() {
            if let Some(ev) = self.dispatch() {
                out.push(ev);
            }
            return;
        }
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            // An id containing NUL must be ignored per the spec.
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            _ => {} // `retry` and unknown fields do not matter to this client
        }
    }

    fn dispatch(&mut self) -> Option<Event> {
        let event = self.event.take();
        // The spec drops an event without data lines.
        let data = self.data.take()?;
        Some(Event {
            event: event
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "message".into()),
            id: self.last_id.clone(),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, id: Option<&str>, data: &str) -> Event {
        Event {
            event: event.into(),
            id: id.map(Into::into),
            data: data.into(),
        }
    }

    #[test]
    fn parses_typed_events_with_ids() {
        let mut p = SseParser::new();
        let got = p.feed(
            b"event: put\nid: 7\ndata: {\"key\":\"a\"}\n\nevent: delete\nid: 8\ndata: {}\n\n",
        );
        assert_eq!(
            got,
            vec![
                ev("put", Some("7"), "{\"key\":\"a\"}"),
                ev("delete", Some("8"), "{}")
            ]
        );
        assert_eq!(got[0].json().unwrap()["key"], "a");
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_events() {
        let input = b"event: message\r\nid: 3\r\ndata: {\"offset\":3}\r\n\r\n: ping\n\ndata:x\n\n";
        let whole = SseParser::new().feed(input);
        assert_eq!(whole.len(), 2);
        for split in 0..input.len() {
            let mut p = SseParser::new();
            let mut got = p.feed(&input[..split]);
            got.extend(p.feed(&input[split..]));
            assert_eq!(got, whole, "split at {split}");
        }
        // Byte-by-byte as well.
        let mut p = SseParser::new();
        let got: Vec<Event> = input.iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(got, whole);
    }

    #[test]
    fn multi_line_data_default_event_and_sticky_id() {
        let mut p = SseParser::new();
        let got = p.feed(b"id: 1\ndata: a\ndata: b\n\ndata:c\n\n");
        assert_eq!(
            got,
            vec![
                ev("message", Some("1"), "a\nb"),
                ev("message", Some("1"), "c")
            ]
        );
    }

    #[test]
    fn comments_and_empty_events_are_skipped() {
        let mut p = SseParser::new();
        assert!(p.feed(b": keep-alive\n\n\n\nevent: put\n\n").is_empty());
        // The event name without data was dropped and does not leak into the next event.
        assert_eq!(p.feed(b"data: 1\n\n"), vec![ev("message", None, "1")]);
    }

    #[test]
    fn incomplete_event_waits_for_blank_line() {
        let mut p = SseParser::new();
        assert!(p.feed(b"event: put\ndata: {}\n").is_empty());
        assert_eq!(p.feed(b"\n"), vec![ev("put", None, "{}")]);
    }

    #[test]
    fn utf8_split_across_chunks_is_kept_intact() {
        let input = "data: \"héllo\"\n\n".as_bytes();
        let mut p = SseParser::new();
        let mut got = p.feed(&input[..8]);
        got.extend(p.feed(&input[8..]));
        assert_eq!(got, vec![ev("message", None, "\"héllo\"")]);
    }
}
