//! One function per API that turns typed arguments into a [`Call`]: method, path and
//! query, body, and whether it is a write. The [`crate::Client`] sends calls; the CLI
//! builds them here too, so that `--json` can print the raw response.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::error::Error;
use crate::txn::Txn;
use crate::types::*;

/// A request to the API, independent of the endpoint it is sent to.
#[derive(Debug, Clone)]
pub struct Call {
    /// The API name (the `api` metric label): `put`, `get`...
    pub api: &'static str,
    pub method: Method,
    /// Path and query, starting with `/v1/`.
    pub path: String,
    pub body: Option<Bytes>,
    /// Writes get an idempotency key and an outcome-unknown report when retries run out.
    pub write: bool,
    pub idempotency_key: Option<String>,
    /// Session reads send the client's token.
    pub consistency: Option<Consistency>,
    /// Added to the request timeout (a long-polling `pull` waits on the server).
    pub extra_timeout: Duration,
    /// The record key or topic the call is about: the client sends it straight to the shard
    /// that owns it.
    pub route: Option<String>,
    /// Whether the client decodes a successful answer's body (else [`crate::Reply::json`] is
    /// `null`): a caller that needs only the status, such as the load generator, saves the work.
    pub parse_reply: bool,
}

impl Call {
    fn new(api: &'static str, method: Method, path: String) -> Self {
        Self {
            api,
            method,
            path,
            body: None,
            write: false,
            idempotency_key: None,
            consistency: None,
            extra_timeout: Duration::ZERO,
            route: None,
            parse_reply: true,
        }
    }

    /// The call is about `name` (a key or a topic).
    fn about(mut self, name: &str) -> Self {
        self.route = Some(name.to_string());
        self
    }

    fn write(mut self, opts: &WriteOptions, query: &mut Query) -> Self {
        self.write = true;
        self.idempotency_key = opts.idempotency_key.clone();
        query.opt("ack", opts.ack.map(AckLevel::as_str));
        self
    }

    fn json(mut self, body: &Value) -> Self {
        self.body = Some(Bytes::from(body.to_string()));
        self
    }

    fn finish(mut self, query: Query) -> Self {
        self.path.push_str(&query.0);
        self
    }
}

/// Percent-encodes everything except RFC 3986 unreserved characters (and `/` when
/// `keep_slash`, since keys such as `users/42` keep their slashes in the path).
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string under construction.
#[derive(Default)]
struct Query(String);

impl Query {
    fn opt(&mut self, name: &str, value: Option<impl ToString>) {
        if let Some(v) = value {
            self.0.push(if self.0.is_empty() { '?' } else { '&' });
            self.0.push_str(name);
            self.0.push('=');
            self.0.push_str(&encode(&v.to_string(), false));
        }
    }
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".into()));
    }
    Ok(())
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} name {name:?}: expected 1..=128 characters of [A-Za-z0-9._-]"
        )))
    }
}

fn kv_path(key: &str) -> Result<String, Error> {
    check_key(key)?;
    Ok(format!("/v1/kv/{}", encode(key, true)))
}

fn topic_path(topic: &str) -> Result<String, Error> {
    check_name("topic", topic)?;
    Ok(format!("/v1/topics/{topic}"))
}

fn sub_path(topic: &str, sub: &str) -> Result<String, Error> {
    check_name("subscription", sub)?;
    Ok(format!("{}/subscriptions/{sub}", topic_path(topic)?))
}

pub fn put(key: &str, value: &Value, opts: &PutOptions) -> Result<Call, Error> {
    let mut q = Query::default();
    if let Some(ttl) = opts.ttl.filter(|t| !(t.is_finite() && *t > 0.0)) {
        return Err(Error::InvalidArgument(format!(
            "ttl must be > 0, got {ttl}"
        )));
    }
    q.opt("ttl", opts.ttl);
    q.opt("if_version", opts.if_version);
    Ok(Call::new("put", Method::PUT, kv_path(key)?)
        .about(key)
        .write(&opts.write, &mut q)
        .json(value)
        .finish(q))
}

pub fn get(key: &str, consistency: Option<Consistency>) -> Result<Call, Error> {
    let mut q = Query::default();
    q.opt("consistency", consistency.map(Consistency::as_str));
    let mut c = Call::new("get", Method::GET, kv_path(key)?).about(key);
    c.consistency = consistency;
    Ok(c.finish(q))
}

pub fn delete(key: &str, opts: &DeleteOptions) -> Result<Call, Error> {
    let mut q = Query::default();
    q.opt("if_version", opts.if_version);
    Ok(Call::new("delete", Method::DELETE, kv_path(key)?)
        .about(key)
        .write(&opts.write, &mut q)
        .finish(q))
}

pub fn incr(
    key: &str,
    delta: i64,
    min: Option<i64>,
    max: Option<i64>,
    opts: &WriteOptions,
) -> Result<Call, Error> {
    let mut q = Query::default();
    let mut body = json!({ "delta": delta });
    if let Some(m) = min {
        body["min"] = json!(m);
    }
    if let Some(m) = max {
        body["max"] = json!(m);
    }
    let path = format!("{}/incr", kv_path(key)?);
    Ok(Call::new("incr", Method::POST, path)
        .about(key)
        .write(opts, &mut q)
        .json(&body)
        .finish(q))
}

pub fn list(opts: &ListOptions) -> Call {
    let mut q = Query::default();
    q.opt("prefix", opts.prefix.as_deref());
    q.opt("start_after", opts.start_after.as_deref());
    q.opt("limit", opts.limit);
    q.opt("consistency", opts.consistency.map(Consistency::as_str));
    let mut c = Call::new("list", Method::GET, "/v1/kv".into());
    c.consistency = opts.consistency;
    c.finish(q)
}

pub fn create_topic(
    topic: &str,
    retention: &Retention,
    opts: &WriteOptions,
) -> Result<Call, Error> {
    let mut q = Query::default();
    let body =
        serde_json::to_value(retention).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok(Call::new("create_topic", Method::PUT, topic_path(topic)?)
        .about(topic)
        .write(opts, &mut q)
        .json(&body)
        .finish(q))
}

pub fn delete_topic(topic: &str, opts: &WriteOptions) -> Result<Call, Error> {
    let mut q = Query::default();
    Ok(
        Call::new("delete_topic", Method::DELETE, topic_path(topic)?)
            .about(topic)
            .write(opts, &mut q)
            .finish(q),
    )
}

pub fn list_topics() -> Call {
    Call::new("list_topics", Method::GET, "/v1/topics".into())
}

pub fn publish(topic: &str, value: &Value, opts: &WriteOptions) -> Result<Call, Error> {
    let mut q = Query::default();
    let path = format!("{}/messages", topic_path(topic)?);
    Ok(Call::new("publish", Method::POST, path)
        .about(topic)
        .write(opts, &mut q)
        .json(value)
        .finish(q))
}

pub fn publish_batch(topic: &str, values: &[Value], opts: &WriteOptions) -> Result<Call, Error> {
    let mut q = Query::default();
    q.opt("batch", Some("true"));
    let path = format!("{}/messages", topic_path(topic)?);
    Ok(Call::new("publish", Method::POST, path)
        .about(topic)
        .write(opts, &mut q)
        .json(&Value::Array(values.to_vec()))
        .finish(q))
}

pub fn subscribe(
    topic: &str,
    sub: &str,
    start: Option<Start>,
    opts: &WriteOptions,
) -> Result<Call, Error> {
    let mut q = Query::default();
    q.opt("start", start);
    Ok(Call::new("subscribe", Method::PUT, sub_path(topic, sub)?)
        .about(topic)
        .write(opts, &mut q)
        .finish(q))
}

pub fn unsubscribe(topic: &str, sub: &str, opts: &WriteOptions) -> Result<Call, Error> {
    let mut q = Query::default();
    Ok(
        Call::new("unsubscribe", Method::DELETE, sub_path(topic, sub)?)
            .about(topic)
            .write(opts, &mut q)
            .finish(q),
    )
}

pub fn pull(
    topic: &str,
    sub: &str,
    max: Option<u32>,
    wait_ms: Option<u64>,
    opts: &WriteOptions,
) -> Result<Call, Error> {
    let mut q = Query::default();
    q.opt("max", max);
    q.opt("wait_ms", wait_ms);
    let path = format!("{}/pull", sub_path(topic, sub)?);
    let mut c = Call::new("pull", Method::POST, path)
        .about(topic)
        .write(opts, &mut q);
    c.extra_timeout = Duration::from_millis(wait_ms.unwrap_or(0));
    Ok(c.finish(q))
}

pub fn read(
    topic: &str,
    from: Option<u64>,
    limit: Option<u32>,
    consistency: Option<Consistency>,
) -> Result<Call, Error> {
    let mut q = Query::default();
    q.opt("from", from);
    q.opt("limit", limit);
    q.opt("consistency", consistency.map(Consistency::as_str));
    let mut c = Call::new(
        "read",
        Method::GET,
        format!("{}/messages", topic_path(topic)?),
    )
    .about(topic);
    c.consistency = consistency;
    Ok(c.finish(q))
}

pub fn stream(topic: &str, from: Option<u64>) -> Result<Call, Error> {
    let mut q = Query::default();
    q.opt("from", from);
    Ok(Call::new(
        "stream",
        Method::GET,
        format!("{}/stream", topic_path(topic)?),
    )
    .about(topic)
    .finish(q))
}

pub fn watch(prefix: Option<&str>) -> Call {
    let mut q = Query::default();
    q.opt("prefix", prefix);
    Call::new("watch", Method::GET, "/v1/watch".into()).finish(q)
}

/// A watch over `prefixes` (every key when empty) resuming after `from` (a position the
/// stream gave).
pub fn watch_from(prefixes: &[String], from: Option<&str>) -> Result<Call, Error> {
    let mut q = Query::default();
    for p in prefixes {
        q.opt("prefix", Some(p));
    }
    q.opt("from", from);
    Ok(Call::new("watch", Method::GET, "/v1/watch".into()).finish(q))
}

/// One stream over several topics, from `from` (a position the stream gave: every topic's next
/// offset, `a:18,b:5`).
pub fn streams(topics: &[String], from: Option<&str>) -> Result<Call, Error> {
    if topics.is_empty() {
        return Err(Error::InvalidArgument("name at least one topic".into()));
    }
    let mut q = Query::default();
    for t in topics {
        check_name("topic", t)?;
        q.opt("topic", Some(t));
    }
    q.opt("from", from);
    Ok(Call::new("stream", Method::GET, "/v1/stream".into()).finish(q))
}

/// A transaction, sent to the shard of its first key or topic (the node routes it the same way;
/// all of them must share one hash slot).
pub fn txn(txn: &Txn, opts: &WriteOptions) -> Result<Call, Error> {
    let mut q = Query::default();
    let body = serde_json::to_value(txn).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let mut call = Call::new("txn", Method::POST, "/v1/txn".into())
        .write(opts, &mut q)
        .json(&body);
    if let Some(first) = txn.first_name() {
        call = call.about(first);
    }
    Ok(call.finish(q))
}

/// The records under several prefixes, newest first (one page).
pub fn merged(opts: &MergedOptions) -> Result<Call, Error> {
    if opts.prefixes.is_empty() {
        return Err(Error::InvalidArgument("name at least one prefix".into()));
    }
    let mut q = Query::default();
    for p in &opts.prefixes {
        q.opt("prefix", Some(p));
    }
    q.opt("order", opts.order.map(MergeOrder::as_str));
    q.opt("limit", opts.limit);
    q.opt("cursor", opts.cursor.as_deref());
    q.opt("consistency", opts.consistency.map(Consistency::as_str));
    let mut c = Call::new("merged", Method::GET, "/v1/merged".into());
    c.consistency = opts.consistency;
    Ok(c.finish(q))
}

pub fn status() -> Call {
    Call::new("status", Method::GET, "/v1/status".into())
}

/// `GET /v1/cluster`: the cluster map (slots, shards, members, primaries) as the node knows it.
pub fn cluster() -> Call {
    Call::new("cluster", Method::GET, "/v1/cluster".into())
}

/// Asks the primary for a planned switchover (to `to`, or the most advanced replica). Not a
/// write: it only records a request, so repeating it is harmless.
pub fn switchover(to: Option<&str>) -> Result<Call, Error> {
    if let Some(t) = to {
        check_name("member", t)?;
    }
    let body = match to {
        Some(t) => json!({ "to": t }),
        None => json!({}),
    };
    Ok(Call::new("switchover", Method::POST, "/v1/switchover".into()).json(&body))
}

/// `POST /reshard?shards=N` at a playground's control endpoint (not a node): reshard to N shards
/// while serving. Not a write: asking again for the same N changes nothing.
pub fn playground_reshard(shards: u16) -> Call {
    Call::new("reshard", Method::POST, format!("/reshard?shards={shards}"))
}

/// `GET /status` at a playground's control endpoint: members, records, the resharding.
pub fn playground_status() -> Call {
    Call::new("playground_status", Method::GET, "/status".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_slashes_and_encode_the_rest() {
        assert_eq!(encode("users/42", true), "users/42");
        assert_eq!(encode("a b?c#d%é", true), "a%20b%3Fc%23d%25%C3%A9");
        assert_eq!(encode("a/b", false), "a%2Fb");
    }

    #[test]
    fn put_builds_query_and_marks_a_write() {
        let opts = PutOptions {
            ttl: Some(1.5),
            if_version: Some(0),
            write: WriteOptions {
                ack: Some(AckLevel::Quorum),
                idempotency_key: Some("k1".into()),
            },
        };
        let c = put("users/42", &json!({"n":1}), &opts).unwrap();
        assert_eq!(c.method, Method::PUT);
        assert_eq!(c.path, "/v1/kv/users/42?ttl=1.5&if_version=0&ack=quorum");
        assert!(c.write);
        assert_eq!(c.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(c.body.as_deref(), Some(&b"{\"n\":1}"[..]));
    }

    #[test]
    fn reads_are_not_writes() {
        let c = get("a", Some(Consistency::Session)).unwrap();
        assert_eq!(c.path, "/v1/kv/a?consistency=session");
        assert!(!c.write);
        let c = list(&ListOptions {
            prefix: Some("a/b c".into()),
            limit: Some(5),
            ..Default::default()
        });
        assert_eq!(c.path, "/v1/kv?prefix=a%2Fb%20c&limit=5");
    }

    #[test]
    fn incr_and_pull_bodies_and_timeouts() {
        let c = incr("n", -3, Some(0), None, &WriteOptions::default()).unwrap();
        assert_eq!(c.path, "/v1/kv/n/incr");
        let body: Value = serde_json::from_slice(c.body.as_ref().unwrap()).unwrap();
        assert_eq!(body, json!({"delta":-3,"min":0}));
        let c = pull("t", "s", Some(10), Some(2500), &WriteOptions::default()).unwrap();
        assert_eq!(
            c.path,
            "/v1/topics/t/subscriptions/s/pull?max=10&wait_ms=2500"
        );
        assert_eq!(c.extra_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn bad_names_and_empty_keys_are_rejected() {
        assert!(get("", None).is_err());
        assert!(publish("bad/topic", &json!(1), &WriteOptions::default()).is_err());
        assert!(subscribe("t", "", None, &WriteOptions::default()).is_err());
        assert!(
            put(
                "k",
                &json!(1),
                &PutOptions {
                    ttl: Some(0.0),
                    ..Default::default()
                }
            )
            .is_err()
        );
        let c = subscribe(
            "t.1",
            "s-1",
            Some(Start::Offset(4)),
            &WriteOptions::default(),
        )
        .unwrap();
        assert_eq!(c.path, "/v1/topics/t.1/subscriptions/s-1?start=4");
    }
}
