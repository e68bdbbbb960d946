//! Parsing and validation of one request: path, query, headers and body. Every failure here is a
//! 4xx `ApiError`; handlers receive only well-formed input.

use super::{ApiError, IDEMPOTENCY_HEADER, TOKEN_HEADER};
use crate::config::parse_consistency;
use crate::engine::Consistency;
use crate::headers::header;
use crate::log::{Fnv, IdemTag, Json};
use crate::replication::AckLevel;
use crate::value::{self, ValueError};
use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use rcluster_proto::SessionToken;
use std::borrow::Cow;
use std::str::FromStr;

pub struct Req {
    pub method: Method,
    /// The target as it arrived: its path still percent-encoded, its query as sent (forwarded
    /// requests carry both unchanged). Kept whole rather than copied into strings of their own.
    uri: Uri,
    query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The key as decoded by the first `key` call, with its `strip_suffix`: keyed requests read
    /// it twice (placement, then the handler), and decoding costs a walk and an allocation.
    decoded_key: std::sync::OnceLock<(usize, String)>,
}

impl Req {
    pub fn new(method: Method, uri: Uri, query: Query, headers: HeaderMap, body: Bytes) -> Req {
        Req {
            method,
            uri,
            query,
            headers,
            body,
            decoded_key: std::sync::OnceLock::new(),
        }
    }

    /// The raw (still percent-encoded) path.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query string as it arrived.
    pub fn raw_query(&self) -> &str {
        self.uri.query().unwrap_or_default()
    }

    /// The path and query as they arrived.
    pub fn path_and_query(&self) -> String {
        match self.raw_query() {
            "" => self.path().to_string(),
            query => format!("{}?{query}", self.path()),
        }
    }

    /// Raw path segments without the leading slash.
    pub fn segments(&self) -> Segments<'_> {
        segments(self.path())
    }

    /// The decoded segment at `i` (a topic or subscription name position).
    pub fn segment(&self, i: usize) -> Result<String, ApiError> {
        let raw = self.segments().get(i).copied().unwrap_or_default();
        decode(raw)
    }

    /// Everything after `/v1/kv/`, decoded, minus `strip_suffix` segments at the end.
    pub fn key(&self, strip_suffix: usize, max_len: usize) -> Result<String, ApiError> {
        self.key_ref(strip_suffix, max_len).map(Cow::into_owned)
    }

    /// As `key`, borrowed from the request when it can be.
    pub fn key_ref(&self, strip_suffix: usize, max_len: usize) -> Result<Cow<'_, str>, ApiError> {
        let key = match self.decoded_key.get() {
            Some((strip, key)) if *strip == strip_suffix => Cow::Borrowed(key.as_str()),
            _ => {
                // The segments after the first two, less `strip_suffix` at the end, as one slice
                // of the path.
                let mut raw = after_two_segments(self.path());
                for _ in 0..strip_suffix {
                    raw = raw.rsplit_once('/').map_or("", |(head, _)| head);
                }
                match self.decoded_key.set((strip_suffix, decode(raw)?)) {
                    Ok(()) => Cow::Borrowed(self.decoded_key.get().map_or("", |(_, k)| k.as_str())),
                    // Another suffix was decoded first (no route asks for two): not kept.
                    Err((_, key)) => Cow::Owned(key),
                }
            }
        };
        validate_key(&key, max_len)?;
        Ok(key)
    }

    /// The query's pairs, in the order given.
    pub fn pairs(&self) -> Pairs<'_> {
        self.query.pairs(self.raw_query())
    }

    /// The value of parameter `name`: the last one given (a repeatable one's others are in
    /// `params`; any other is refused given twice).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.last(self.raw_query(), name)
    }

    /// Every value of a repeatable parameter, in the order given.
    pub fn params(&self, name: &str) -> Vec<&str> {
        self.pairs()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .collect()
    }

    pub fn parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.param(name) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("invalid value for {name}: {v:?}"),
                )
            }),
        }
    }

    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.param(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("") | Some("true") | Some("1") => Ok(true),
            Some(v) => Err(ApiError::bad_request(
                "invalid_parameter",
                format!("{name} must be true or false, got {v:?}"),
            )),
        }
    }

    /// The write's ack level: the `ack` parameter, or the node's default.
    pub fn ack(&self, default: AckLevel) -> Result<AckLevel, ApiError> {
        match self.param("ack") {
            None | Some("") => Ok(default),
            Some(v) => AckLevel::parse(v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("ack must be async, one, quorum or all, got {v:?}"),
                )
            }),
        }
    }

    /// The read's consistency: the `consistency` parameter, or the node's default.
    pub fn consistency(&self, default: Consistency) -> Result<Consistency, ApiError> {
        match self.param("consistency") {
            None | Some("") => Ok(default),
            Some(v) => parse_consistency(v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("consistency must be linearizable, session or eventual, got {v:?}"),
                )
            }),
        }
    }

    /// The client's session token (`Rcluster-Token`): the positions it observed, per shard.
    pub fn session_token(&self) -> Result<SessionToken, ApiError> {
        match header(&self.headers, &TOKEN_HEADER) {
            None => Ok(SessionToken::new()),
            Some(v) => v.to_str().ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_request",
                    "Rcluster-Token must be a token a response gave (INDEX or SHARD:INDEX,…)",
                )
            }),
        }
    }

    /// The idempotency tag for a write: the client's key plus a fingerprint of the request, so a
    /// key reused for a different request is refused instead of silently returning another result.
    pub fn idempotency(&self) -> Result<Option<IdemTag>, ApiError> {
        let Some(v) = header(&self.headers, &IDEMPOTENCY_HEADER) else {
            return Ok(None);
        };
        let key = v
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 256)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_request",
                    "Idempotency-Key must be 1..=256 visible ASCII characters",
                )
            })?;
        let mut h = Fnv::default();
        h.write_field(self.method.as_str().as_bytes());
        h.write_field(self.path().as_bytes());
        let mut params: Vec<_> = self
            .pairs()
            .filter(|(k, _)| *k != "ack" && *k != "wait_ms")
            .collect();
        params.sort();
        for (k, v) in params {
            h.write_field(k.as_bytes());
            h.write_field(v.as_bytes());
        }
        h.write_field(&self.body);
        Ok(Some(IdemTag {
            key: key.to_string(),
            fingerprint: h.finish(),
        }))
    }

    /// The body as one JSON value, kept as its text.
    pub fn json_value(&self, max_value: usize) -> Result<Json, ApiError> {
        json_text(&self.body, max_value)
    }

    /// The body deserialized as `T`; an empty body gives `T::default()`.
    pub fn json_body<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("invalid request body: {e}"))
        })
    }
}

/// A path's segments: on the stack up to eight, which every route's fixed part fits in (a key with
/// more slashes spills to the heap). A request splits its path two or three times.
pub type Segments<'a> = smallvec::SmallVec<[&'a str; 8]>;

/// Raw segments of `path` without the leading slash.
pub fn segments(path: &str) -> Segments<'_> {
    // By byte rather than `split('/')`, whose searcher cost about 250 instructions a call on
    // paths this short. A `/` byte is always a character boundary.
    let path = path.trim_start_matches('/');
    let mut out = Segments::new();
    let mut start = 0;
    for (i, b) in path.bytes().enumerate() {
        if b == b'/' {
            out.push(&path[start..i]);
            start = i + 1;
        }
    }
    out.push(&path[start..]);
    out
}

/// What follows the first two segments of `path` (`/v1/kv/` for a key), raw.
fn after_two_segments(path: &str) -> &str {
    let path = path.trim_start_matches('/');
    let mut slashes = path.bytes().enumerate().filter(|&(_, b)| b == b'/');
    match slashes.nth(1) {
        Some((i, _)) => &path[i + 1..],
        None => "",
    }
}

pub fn json_text(bytes: &[u8], max_value: usize) -> Result<Json, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("invalid_json", "the body is not UTF-8"))?
        .trim();
    if text.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON value",
        ));
    }
    if text.len() > max_value {
        return Err(ApiError::too_large(
            "value_too_large",
            format!(
                "the value has {} bytes; the limit is {max_value}",
                text.len()
            ),
        ));
    }
    value::check(text).map_err(|e| match e {
        ValueError::TooDeep => ApiError::bad_request("json_too_deep", e.to_string()),
        ValueError::Invalid(_) => {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        }
    })?;
    Ok(text.into())
}

/// A request's query parameters. Nearly every query has nothing to decode (`ack=quorum`): its
/// pairs are then kept as places in the target, not copied into strings of their own (a vector
/// and two strings per pair, allocated and freed, cost some 400 instructions a request). A query
/// with an escape anywhere is decoded once, whole.
#[derive(Debug, PartialEq, Eq)]
pub enum Query {
    /// Each pair's name and value as byte ranges of the raw query: `[name start, name end,
    /// value start, value end]`.
    Raw(smallvec::SmallVec<[[u32; 4]; 4]>),
    Decoded(Vec<(String, String)>),
}

impl Default for Query {
    fn default() -> Query {
        Query::Raw(smallvec::SmallVec::new())
    }
}

impl Query {
    /// Reads `raw` (the query as it arrived). It cannot fail: any bytes are some pairs of
    /// strings, as `application/x-www-form-urlencoded` decodes them: `name=value` or `name`
    /// alone (an empty value), split at `&`, empty pairs skipped.
    pub fn parse(raw: &str) -> Query {
        let bytes = raw.as_bytes();
        if bytes.len() >= u32::MAX as usize {
            return Query::decode(raw);
        }
        let mut pairs = smallvec::SmallVec::new();
        // One pass by byte rather than `split('&')` and `split_once('=')`, whose searchers cost
        // more than a query this short. `&` and `=` are always character boundaries.
        let (mut start, mut eq) = (0, None);
        for i in 0..=bytes.len() {
            match bytes.get(i).copied().unwrap_or(b'&') {
                b'%' | b'+' => return Query::decode(raw),
                b'=' if eq.is_none() => eq = Some(i),
                b'&' => {
                    if i > start {
                        let (name_end, value_start) = eq.map_or((i, i), |e| (e, e + 1));
                        pairs.push([start, name_end, value_start, i].map(|at| at as u32));
                    }
                    (start, eq) = (i + 1, None);
                }
                _ => {}
            }
        }
        Query::Raw(pairs)
    }

    fn decode(raw: &str) -> Query {
        Query::Decoded(
            form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The last value given of parameter `name`. Not `pairs` filtered: every lookup would slice
    /// every pair's value, through the iterator's two kinds (about 250 instructions a put, which
    /// looks up three names).
    fn last<'a>(&'a self, raw: &'a str, name: &str) -> Option<&'a str> {
        match self {
            Query::Raw(places) => places
                .iter()
                .rev()
                .find(|&&[a, b, ..]| {
                    raw.as_bytes().get(a as usize..b as usize) == Some(name.as_bytes())
                })
                .and_then(|&[_, _, c, d]| raw.get(c as usize..d as usize)),
            Query::Decoded(pairs) => pairs
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
    }

    /// The pairs, in the order given; `raw` is the query `parse` was given.
    pub fn pairs<'a>(&'a self, raw: &'a str) -> Pairs<'a> {
        match self {
            Query::Raw(places) => Pairs::Raw(places.iter(), raw),
            Query::Decoded(pairs) => Pairs::Decoded(pairs.iter()),
        }
    }
}

/// The pairs of a `Query`, as `(name, value)`.
pub enum Pairs<'a> {
    Raw(std::slice::Iter<'a, [u32; 4]>, &'a str),
    Decoded(std::slice::Iter<'a, (String, String)>),
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        match self {
            Pairs::Raw(places, raw) => places.next().map(|&[a, b, c, d]| {
                let at =
                    |from: u32, to: u32| raw.get(from as usize..to as usize).unwrap_or_default();
                (at(a, b), at(c, d))
            }),
            Pairs::Decoded(pairs) => pairs.next().map(|(k, v)| (k.as_str(), v.as_str())),
        }
    }
}

/// Refuses parameters the route does not know, and any given twice (which one would win is
/// not something a client should have to guess).
pub fn only_params(
    query: Pairs<'_>,
    allowed: &[&str],
    repeatable: &[&str],
) -> Result<(), ApiError> {
    // Seen names, on the stack: a route takes at most five.
    let mut seen = smallvec::SmallVec::<[&str; 8]>::new();
    for (name, _) in query {
        if !allowed.contains(&name) {
            let known = if allowed.is_empty() {
                "this route takes no parameters".to_string()
            } else {
                format!("this route takes {}", allowed.join(", "))
            };
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("unknown parameter {name:?}: {known}"),
            ));
        }
        if !repeatable.contains(&name) && seen.contains(&name) {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("parameter {name:?} is given more than once"),
            ));
        }
        seen.push(name);
    }
    Ok(())
}

fn decode(raw: &str) -> Result<String, ApiError> {
    // Most keys arrive without escapes: the percent decoder's byte-by-byte walk and its UTF-8
    // check cost several hundred instructions a request for nothing then.
    if !raw.contains('%') {
        return Ok(raw.to_string());
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            ApiError::bad_request("invalid_key", "the path is not valid UTF-8 after decoding")
        })
}

pub fn validate_key(key: &str, max_len: usize) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_key",
            "the key must not be empty",
        ));
    }
    if key.len() > max_len {
        return Err(ApiError::too_large(
            "key_too_long",
            format!("the key has {} bytes; the limit is {max_len}", key.len()),
        ));
    }
    // ASCII keys by byte (the common case); others by character, for the C1 controls.
    let control = if key.is_ascii() {
        key.bytes().any(|b| b.is_ascii_control())
    } else {
        key.chars().any(char::is_control)
    };
    if control {
        return Err(ApiError::bad_request(
            "invalid_key",
            "the key must not contain control characters",
        ));
    }
    Ok(())
}

/// Topic and subscription names: `[A-Za-z0-9._-]`, 1..=max bytes.
pub fn validate_name(what: &str, name: &str, max_len: usize) -> Result<(), ApiError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > max_len || !ok_chars {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("{what} names are 1..={max_len} characters of A-Z a-z 0-9 . _ -, got {name:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key decoded once is kept for the same suffix only: another suffix decodes anew.
    #[test]
    fn a_kept_key_answers_only_its_own_suffix() {
        let req = Req::new(
            Method::POST,
            Uri::from_static("/v1/kv/a%2Fb/c/incr"),
            Query::default(),
            HeaderMap::new(),
            Bytes::new(),
        );
        assert_eq!(req.key(1, 100).unwrap(), "a/b/c");
        assert_eq!(req.key(0, 100).unwrap(), "a/b/c/incr");
        assert_eq!(req.key(1, 100).unwrap(), "a/b/c");
        assert_eq!(req.key(2, 100).unwrap(), "a/b");
        // The kept key is still checked against each caller's limit.
        assert_eq!(req.key(1, 4).unwrap_err().code, "key_too_long");
        let bad = Req::new(
            Method::GET,
            Uri::from_static("/v1/kv/%FF"),
            Query::default(),
            HeaderMap::new(),
            Bytes::new(),
        );
        assert!(bad.key(0, 100).is_err());
        assert!(bad.key(0, 100).is_err());
    }

    /// The byte splitters must cut where `split('/')` and `splitn(3, '/')` cut.
    #[test]
    fn paths_split_as_the_std_splitters_split_them() {
        let paths = [
            "",
            "/",
            "//",
            "///",
            "/v1",
            "/v1/",
            "/v1/kv",
            "/v1/kv/",
            "/v1/kv/k1",
            "v1/kv/k1",
            "/v1/kv/a/b/c",
            "/v1/kv//x/",
            "//v1/kv/k",
            "/v1/kv/é/ü",
            "/v1/topics/t/stream",
            "/a/b/c/d/e/f/g/h/i/j",
        ];
        for p in paths {
            let trimmed = p.trim_start_matches('/');
            let want: Vec<&str> = trimmed.split('/').collect();
            assert_eq!(segments(p).as_slice(), want.as_slice(), "{p:?}");
            let rest = trimmed.splitn(3, '/').nth(2).unwrap_or_default();
            assert_eq!(after_two_segments(p), rest, "{p:?}");
        }
    }

    /// Pairs read where they lie must be what the decoder gives, and a parameter the last value
    /// given of its name.
    #[test]
    fn queries_parse_as_the_form_decoder_parses_them() {
        let queries = [
            "",
            "ack=quorum",
            "ack=quorum&consistency=session",
            "a=1&&b=2&",
            "flag",
            "flag=",
            "=v",
            "k=a=b",
            "prefix=a%2Fb&limit=10",
            "prefix=a+b",
            "x=%ZZ&y=%C3%A9",
            "%61ck=quorum",
        ];
        for q in queries {
            let want: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let query = Query::parse(q);
            let got: Vec<(String, String)> = query
                .pairs(q)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "{q:?}");
            let req = Req::new(
                Method::GET,
                Uri::try_from(format!("/v1/kv?{q}")).expect("a target"),
                query,
                HeaderMap::new(),
                Bytes::new(),
            );
            for name in ["ack", "flag", "k", "prefix", "x", "y", "a", "b", ""] {
                let last = want.iter().rev().find(|(k, _)| k == name);
                assert_eq!(
                    req.param(name),
                    last.map(|(_, v)| v.as_str()),
                    "{q:?} {name}"
                );
            }
        }
    }

    /// A name given twice is refused unless the route repeats it; a name it does not take, always.
    #[test]
    fn parameters_are_checked_against_the_route() {
        let check = |q: &str, repeatable: &[&str]| {
            only_params(Query::parse(q).pairs(q), &["a", "b"], repeatable).map_err(|e| e.message)
        };
        assert!(check("a=1&b=2", &[]).is_ok());
        assert!(check("a=1&&b", &[]).is_ok());
        assert!(check("a=1&a=2", &["a"]).is_ok());
        assert!(
            check("a=1&b=1&a=2", &[])
                .unwrap_err()
                .contains("more than once")
        );
        assert!(
            check("a=1&%61=2", &[])
                .unwrap_err()
                .contains("more than once")
        );
        assert!(
            check("a=1&c=2", &["c"])
                .unwrap_err()
                .contains("unknown parameter \"c\"")
        );
    }

    #[test]
    fn keys_decode_with_and_without_escapes() {
        assert_eq!(decode("k12345").expect("plain"), "k12345");
        assert_eq!(decode("a%2Fb%20c").expect("escaped"), "a/b c");
        assert_eq!(decode("caf%C3%A9").expect("utf-8"), "café");
        assert!(decode("%FF").is_err(), "not UTF-8 once decoded");
    }

    #[test]
    fn control_characters_are_refused_in_ascii_and_other_keys() {
        for bad in ["a\u{0}b", "tab\there", "del\u{7f}", "é\u{85}", "\u{9f}"] {
            let e = validate_key(bad, 100).expect_err(bad);
            assert_eq!(e.code, "invalid_key", "{bad:?}");
        }
        for good in ["k1", "a b/c", "café", "日本"] {
            validate_key(good, 100).expect(good);
        }
    }
}
