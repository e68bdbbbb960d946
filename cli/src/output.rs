//! Human-readable output of the CLI. Pure functions from responses to text (times relative to a
//! `now` they are given), except for [`print_events`], which drains a stream to stdout.

use std::fmt::Write as _;

use serde_json::{Value, json};

use rcluster_client::sse::Event;
use rcluster_client::transport::EventStream;
use rcluster_client::types::*;
use rcluster_client::{Error, Reply};

use crate::failure::Failure;
use crate::{term, time};

/// Compact JSON of a value.
fn v(value: &Value) -> String {
    value.to_string()
}

fn expiry(e: Option<u64>, now_ms: u64) -> String {
    e.map(|e| format!(", expires {}", time::moment(e, now_ms)))
        .unwrap_or_default()
}

fn record_line(r: &Record, now_ms: u64) -> String {
    format!(
        "{} = {} (version {}{})",
        r.key,
        v(&r.value),
        r.version,
        expiry(r.expires_at_ms, now_ms)
    )
}

fn message_line(m: &Message) -> String {
    format!("{}: {}", m.offset, v(&m.value))
}

/// The text for a single-request command's reply, by API name; times relative to `now_ms`.
pub fn human(api: &str, reply: &Reply, now_ms: u64) -> Result<String, Error> {
    Ok(match api {
        "put" => {
            let r: PutResult = reply.parse()?;
            format!(
                "put {} -> version {}{}",
                r.key,
                r.version,
                expiry(r.expires_at_ms, now_ms)
            )
        }
        "get" => record_line(&reply.parse()?, now_ms),
        "delete" => {
            let r: DeleteResult = reply.parse()?;
            format!("delete {} -> version {}", r.key, r.version)
        }
        "incr" => {
            let r: IncrResult = reply.parse()?;
            format!("incr {} -> {} (version {})", r.key, r.value, r.version)
        }
        "txn" => {
            let r: rcluster_client::TxnResult = reply.parse()?;
            let branch = if r.succeeded { "success" } else { "failure" };
            let mut out = format!("txn -> {branch}");
            if let Some(i) = r.failed_compare {
                let _ = write!(out, " (comparison {i} did not hold)");
            }
            for o in &r.results {
                let name = o.key.as_deref().or(o.topic.as_deref()).unwrap_or("");
                let _ = write!(out, "\n  {} {name}", o.op);
                if let Some(v) = o.value {
                    let _ = write!(out, " -> {v}");
                }
                if let Some(v) = o.version {
                    let _ = write!(out, " (version {v})");
                }
                if let Some(d) = o.deleted {
                    let _ = write!(out, " deleted: {d}");
                }
                if let Some(off) = o.offset {
                    let _ = write!(out, " -> offset {off}");
                }
            }
            out
        }
        "create_topic" => {
            let r: TopicCreated = reply.parse()?;
            let what = if r.created {
                "created"
            } else {
                "already exists"
            };
            format!("topic {} {what}{}", r.topic, retention(&r.retention))
        }
        "delete_topic" => {
            let r: TopicDeleted = reply.parse()?;
            format!("topic {} deleted", r.topic)
        }
        "list_topics" => topics_table(&reply.parse()?),
        "publish" => publish_line(&reply.json)?,
        "subscribe" => {
            let r: Subscribed = reply.parse()?;
            let what = if r.created { "created" } else { "exists" };
            format!(
                "subscription {} on {} {what} -> cursor {}",
                r.subscription, r.topic, r.cursor
            )
        }
        "unsubscribe" => {
            let r: Unsubscribed = reply.parse()?;
            format!("subscription {} on {} deleted", r.subscription, r.topic)
        }
        "pull" => {
            let r: Pulled = reply.parse()?;
            let mut out = String::new();
            for m in &r.messages {
                let _ = writeln!(out, "{}", message_line(m));
            }
            let _ = write!(out, "{} message(s), cursor {}", r.messages.len(), r.cursor);
            out
        }
        "read" => {
            let r: ReadResult = reply.parse()?;
            let mut out = String::new();
            for m in &r.messages {
                let _ = writeln!(out, "{}", message_line(m));
            }
            let _ = write!(
                out,
                "{} message(s); first_offset {}, next_offset {}",
                r.messages.len(),
                r.first_offset,
                r.next_offset
            );
            if let Some(end) = r.end_offset {
                let _ = write!(out, ", end_offset {end}");
            }
            out
        }
        "status" => status_text(&reply.json, now_ms),
        _ => reply.json.to_string(),
    })
}

fn retention(r: &Retention) -> String {
    let mut parts = Vec::new();
    if let Some(n) = r.max_messages {
        parts.push(format!("max_messages {n}"));
    }
    if let Some(s) = r.max_age_secs {
        parts.push(format!("max_age {s}s"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn publish_line(json: &Value) -> Result<String, Error> {
    // The node answers `offset` (the first) and `offsets` (all) to both kinds of publish.
    if let Ok(b) = serde_json::from_value::<PublishedBatch>(json.clone()) {
        return Ok(match b.offsets.as_slice() {
            [] => "published 0 messages".to_string(),
            [one] => format!("published -> offset {one}"),
            [a, .., z] => format!(
                "published {} messages -> offsets {a} to {z}",
                b.offsets.len()
            ),
        });
    }
    let p: Published = serde_json::from_value(json.clone()).map_err(|e| {
        Error::InvalidResponse(format!("unexpected publish response ({e}): {json}"))
    })?;
    Ok(format!("published -> offset {}", p.offset))
}

fn topics_table(list: &TopicList) -> String {
    if list.topics.is_empty() {
        return "no topics".into();
    }
    let width = list
        .topics
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = format!(
        "{:<width$}  {:>12}  {:>12}  SUBSCRIPTIONS",
        "TOPIC", "FIRST", "NEXT"
    );
    for t in &list.topics {
        let subs: Vec<String> = t
            .subscriptions
            .iter()
            .map(|s| format!("{}@{}", s.name, s.cursor))
            .collect();
        let _ = write!(
            out,
            "\n{:<width$}  {:>12}  {:>12}  {}{}",
            t.name,
            t.first_offset,
            t.next_offset,
            if subs.is_empty() {
                "-".into()
            } else {
                subs.join(",")
            },
            retention(&t.retention)
        );
    }
    out
}

/// A node's own report (`status --local`), known fields first; times are made readable.
pub fn status_text(json: &Value, now_ms: u64) -> String {
    const ORDER: [&str; 13] = [
        "node",
        "role",
        "term",
        "primary",
        "ready",
        "last_log_index",
        "last_log_term",
        "commit_index",
        "applied_index",
        "snapshot_index",
        "records",
        "topics",
        "digest",
    ];
    let Some(obj) = json.as_object() else {
        return json.to_string();
    };
    let show = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => readable_times(other, now_ms).to_string(),
    };
    let mut out = Vec::new();
    for k in ORDER {
        if let Some(val) = obj.get(k) {
            out.push(format!("{k}: {}", show(val)));
        }
    }
    for (k, val) in obj {
        if ORDER.contains(&k.as_str()) {
            continue;
        }
        match val.as_array() {
            Some(items) if items.is_empty() => out.push(format!("{k}: -")),
            Some(items) if k == "members" => {
                out.push(format!("{k}:"));
                out.extend(items.iter().map(|i| format!("  {}", member_line(i))));
            }
            Some(items) => {
                out.push(format!("{k}:"));
                out.extend(items.iter().map(|i| format!("  {}", show(i))));
            }
            None => out.push(format!("{k}: {}", show(val))),
        }
    }
    out.join("\n")
}

/// Replaces every `*_ms` number that is a point in time (after 2001) inside `v` by a readable
/// time; durations such as `last_ack_ms` stay numbers.
pub fn readable_times(v: &Value, now_ms: u64) -> Value {
    const AFTER_2001_MS: u64 = 1_000_000_000_000;
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, val)| {
                    let val = match val.as_u64() {
                        Some(ms) if k.ends_with("_ms") && ms > AFTER_2001_MS => {
                            Value::String(time::moment(ms, now_ms))
                        }
                        _ => readable_times(val, now_ms),
                    };
                    (k.clone(), val)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| readable_times(x, now_ms)).collect()),
        other => other.clone(),
    }
}

/// One member of a status: `n2  http://127.0.0.1:7002  replica  applied 40  lag 2`. A primary
/// knows its replicas' progress; other nodes list names and URLs only.
fn member_line(m: &Value) -> String {
    let Some(obj) = m.as_object() else {
        return m.to_string();
    };
    let mut parts: Vec<String> = ["name", "url", "role"]
        .iter()
        .filter_map(|k| obj.get(*k).and_then(Value::as_str).map(str::to_string))
        .collect();
    if let Some(a) = obj.get("applied_index").and_then(Value::as_u64) {
        parts.push(format!("applied {a}"));
    }
    if let Some(l) = obj.get("lag_entries").and_then(Value::as_u64) {
        parts.push(format!("lag {l}"));
    }
    if let Some(s) = obj
        .get("lag_seconds")
        .and_then(Value::as_f64)
        .filter(|s| *s > 0.0)
    {
        parts.push(format!("({s:.2} s behind)"));
    }
    if let Some(a) = obj.get("last_ack_ms").and_then(Value::as_u64) {
        parts.push(format!("last answer {} ago", time::span(a)));
    }
    if let Some(e) = obj.get("error").and_then(Value::as_str) {
        parts.push(format!("error: {e}"));
    }
    if parts.is_empty() {
        m.to_string()
    } else {
        parts.join("  ")
    }
}

/// The lines of a `list` page; with `show_next`, a final hint about the next page.
pub fn list_lines(page: &ListPage, show_next: bool, now_ms: u64) -> String {
    let mut out = String::new();
    for r in &page.items {
        let _ = writeln!(out, "{}", record_line(r, now_ms));
    }
    if let Some(n) = page.next.as_ref().filter(|_| show_next) {
        let _ = writeln!(out, "(more: --start-after {n})");
    }
    out
}

/// A topic stream event as text.
pub fn message_event_line(ev: &Event) -> Result<Option<String>, Error> {
    if ev.event != "message" {
        return Ok(None);
    }
    let m: Message = serde_json::from_str(&ev.data)
        .map_err(|e| Error::InvalidResponse(format!("bad message event ({e}): {}", ev.data)))?;
    Ok(Some(message_line(&m)))
}

/// A watch event as text: `put k = v (version N)`, `delete k (version N)`.
pub fn watch_line(ev: &Event) -> Result<Option<String>, Error> {
    match ev.event.as_str() {
        // Positions only (the opening one, heartbeats): nothing changed.
        "progress" => return Ok(None),
        "reset" => {
            let id = ev.id.as_deref().unwrap_or("?");
            return Ok(Some(format!(
                "reset at {id}: history before it is gone here; re-read what you watch"
            )));
        }
        _ => {}
    }
    let d: WatchData = serde_json::from_str(&ev.data).map_err(|e| {
        Error::InvalidResponse(format!("bad {} event ({e}): {}", ev.event, ev.data))
    })?;
    Ok(Some(match &d.value {
        Some(val) => format!(
            "{} {} = {} (version {})",
            ev.event,
            d.key,
            v(val),
            d.version
        ),
        None => format!("{} {} (version {})", ev.event, d.key, d.version),
    }))
}

/// An event as one JSON line: `{"event","id","data"}` (data parsed when it is JSON).
pub fn event_json(ev: &Event) -> Value {
    let data = ev.json().unwrap_or_else(|_| Value::String(ev.data.clone()));
    json!({ "event": ev.event, "id": ev.id, "data": data })
}

/// Prints events until `count` have been printed or the server ends the stream. Returns how many
/// it printed, and the resume point of a `moved` event that ended the stream (its range went to
/// another shard: the caller reopens the stream there).
pub async fn print_events(
    mut events: EventStream,
    count: Option<u64>,
    json: bool,
    line: fn(&Event) -> Result<Option<String>, Error>,
) -> Result<(u64, Option<String>), Failure> {
    let mut printed = 0u64;
    while count.is_none_or(|c| printed < c) {
        let Some(ev) = events.next().await else {
            return Ok((printed, None));
        };
        let ev = ev.map_err(Error::from)?;
        if ev.event == "moved" {
            let resume = ev
                .json()
                .ok()
                .and_then(|d| d.get("resume").and_then(Value::as_str).map(str::to_string));
            let resume = resume
                .ok_or_else(|| Error::InvalidResponse(format!("bad moved event: {}", ev.data)))?;
            return Ok((printed, Some(resume)));
        }
        let text = match line(&ev)? {
            Some(_) if json => event_json(&ev).to_string(),
            Some(t) => t,
            None => continue,
        };
        term::line(text)?;
        printed += 1;
    }
    Ok((printed, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(json: Value) -> Reply {
        Reply {
            status: 200,
            json,
            token: None,
            endpoint: "http://x:1".into(),
        }
    }

    #[test]
    fn record_commands() {
        let r = reply(json!({"key":"k","version":12}));
        assert_eq!(human("put", &r, 0).unwrap(), "put k -> version 12");
        let r = reply(json!({"key":"k","version":12,"expires_at_ms":1_795_954_049_970u64}));
        assert_eq!(
            human("put", &r, 1_795_954_049_970 - 3_600_000).unwrap(),
            "put k -> version 12, expires 2026-11-29 12:07:29 UTC (in 1h 0m)"
        );
        let r = reply(json!({"key":"k","value":"hi","version":3}));
        assert_eq!(human("get", &r, 0).unwrap(), "k = \"hi\" (version 3)");
        let r = reply(json!({"key":"n","value":-4,"version":7}));
        assert_eq!(human("incr", &r, 0).unwrap(), "incr n -> -4 (version 7)");
        assert!(human("put", &reply(json!({"unexpected":1})), 0).is_err());
    }

    #[test]
    fn topic_commands() {
        assert_eq!(
            human("publish", &reply(json!({"offset":3})), 0).unwrap(),
            "published -> offset 3"
        );
        // What the node answers to a single publish: no `0..=0` range.
        assert_eq!(
            human("publish", &reply(json!({"offset":0,"offsets":[0]})), 0).unwrap(),
            "published -> offset 0"
        );
        assert_eq!(
            human("publish", &reply(json!({"offset":4,"offsets":[4,5,6]})), 0).unwrap(),
            "published 3 messages -> offsets 4 to 6"
        );
        let r =
            reply(json!({"messages":[{"offset":0,"value":"a","published_at_ms":1}],"cursor":1}));
        assert_eq!(
            human("pull", &r, 0).unwrap(),
            "0: \"a\"\n1 message(s), cursor 1"
        );
        let r = reply(
            json!({"topics":[{"name":"t","retention":{"max_messages":5},"first_offset":0,
            "next_offset":2,"subscriptions":[{"name":"s","cursor":1}]}]}),
        );
        let table = human("list_topics", &r, 0).unwrap();
        assert!(
            table.contains("s@1") && table.contains("max_messages 5"),
            "{table}"
        );
    }

    #[test]
    fn events_as_lines() {
        let ev = Event {
            event: "put".into(),
            id: Some("9".into()),
            data: r#"{"key":"a","value":1,"version":9}"#.into(),
        };
        assert_eq!(watch_line(&ev).unwrap().unwrap(), "put a = 1 (version 9)");
        assert_eq!(
            event_json(&ev),
            json!({"event":"put","id":"9","data":{"key":"a","value":1,"version":9}})
        );
        let ev = Event {
            event: "delete".into(),
            id: None,
            data: r#"{"key":"a","version":10}"#.into(),
        };
        assert_eq!(watch_line(&ev).unwrap().unwrap(), "delete a (version 10)");
        let ev = Event {
            event: "message".into(),
            id: Some("2".into()),
            data: r#"{"offset":2,"value":"x"}"#.into(),
        };
        assert_eq!(message_event_line(&ev).unwrap().unwrap(), "2: \"x\"");
        let ev = Event {
            event: "ping".into(),
            id: None,
            data: "{}".into(),
        };
        assert_eq!(message_event_line(&ev).unwrap(), None);
    }

    #[test]
    fn status_lists_known_fields_first() {
        let text = status_text(
            &json!({"role":"primary","node":"n1","term":2,"members":[{"name":"n2"}],"zeta":1}),
            0,
        );
        assert_eq!(
            text,
            "node: n1\nrole: primary\nterm: 2\nmembers:\n  n2\nzeta: 1"
        );
        let text = status_text(
            &json!({"members":[
            {"name":"n1","url":"http://127.0.0.1:7001","role":"primary","applied_index":9,"lag_entries":0},
            {"name":"n2","url":"http://127.0.0.1:7002","role":"replica","applied_index":7,
             "lag_entries":2,"lag_seconds":0.25,"error":null}]}),
            0,
        );
        assert_eq!(
            text,
            "members:\n  n1  http://127.0.0.1:7001  primary  applied 9  lag 0\n  \
             n2  http://127.0.0.1:7002  replica  applied 7  lag 2  (0.25 s behind)"
        );
        // Points in time become readable; durations and small numbers stay.
        let text = status_text(
            &json!({"switchover_request":{"to":"n2","at_ms":1_795_954_049_970u64},
                    "recovery":{"took_ms":12}}),
            1_795_954_049_970 + 3_000,
        );
        assert!(
            text.contains("\"at_ms\":\"2026-11-29 12:07:29 UTC (3.0 s ago)\""),
            "{text}"
        );
        assert!(text.contains("\"took_ms\":12"), "{text}");
    }
}
