//! The API's answers: a body, and the protocol headers this node sets on it kept as plain values.
//!
//! Every answer carries a content type, the shard that served it and, mostly, a session token and
//! the cluster id. Put into the `http::HeaderMap` of each response, those cost about 1,500
//! instructions an answer (callgrind): the map's two allocations on the first insert, a token's
//! value allocated, each name hashed, then all of it dropped. So they stay values in [`Meta`]
//! until the answer is sent: the node's own HTTP/1.1 path writes them straight into its output
//! ([`Meta::write`]), and the hyper path turns them into headers at its boundary
//! ([`Meta::insert_into`]). The response's header map holds only what is rarer (an error's
//! `retry-after`, a stream's headers, an answer relayed from another node as it came).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use rcluster_proto::{SessionToken, ShardId, headers};
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An answer of the API.
pub type Response = http::Response<Body>;

pub const JSON: &str = "application/json";

/// An answer's session token (`Rcluster-Token`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Token {
    #[default]
    None,
    /// A log position of the shard that served the answer, as the handler observed it. Sent as
    /// is only by shard 0 to a client without a token of its own (the plain form of a token);
    /// otherwise the API makes it a [`Token::Session`] with the shard named.
    Observed(u64),
    /// A whole token: the client's, merged with what was observed.
    Session(SessionToken),
}

impl Token {
    /// The token as a client would read it, for an answer served by `shard`.
    pub fn session(&self, shard: ShardId) -> SessionToken {
        match self {
            Token::None => SessionToken::new(),
            Token::Observed(i) => SessionToken::at(shard, *i),
            Token::Session(t) => t.clone(),
        }
    }
}

/// The protocol headers of an answer this node made, as values.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub content_type: Option<&'static str>,
    pub token: Token,
    pub shard: Option<ShardId>,
    /// The cluster map's epoch the answer was routed by (sent when a map is in force).
    pub epoch: Option<u64>,
    pub cluster_id: Option<&'static str>,
}

impl Meta {
    /// Calls `f` with each header's name and value, in the order they are sent: the one list of
    /// them, for both ways of sending an answer.
    fn each(&self, mut f: impl FnMut(&'static str, &[u8])) {
        if let Some(t) = self.content_type {
            f("content-type", t.as_bytes());
        }
        match &self.token {
            Token::None => {}
            Token::Observed(i) => f(headers::TOKEN, itoa::Buffer::new().format(*i).as_bytes()),
            Token::Session(t) => f(headers::TOKEN, t.to_string().as_bytes()),
        }
        if let Some(s) = self.shard {
            f(headers::SHARD, itoa::Buffer::new().format(s).as_bytes());
        }
        if let Some(e) = self.epoch {
            f(headers::EPOCH, itoa::Buffer::new().format(e).as_bytes());
        }
        if let Some(id) = self.cluster_id {
            f(rcluster_client::CLUSTER_ID_HEADER, id.as_bytes());
        }
    }

    /// Appends the headers as HTTP/1.1 header lines.
    pub fn write(&self, out: &mut Vec<u8>) {
        self.each(|name, value| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        });
    }

    /// Whether a header named `name` is one of these (sent from here, in place of the map's).
    /// Asked only of the headers an answer's map holds, which nearly every answer has none of.
    pub fn covers(&self, name: &HeaderName) -> bool {
        let mut covered = false;
        self.each(|n, _| covered |= n == name.as_str());
        covered
    }

    /// Puts the headers into `h` (replacing any of the same names): hyper's path.
    pub fn insert_into(&self, h: &mut HeaderMap) {
        self.each(|name, value| {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        });
    }
}

/// An answer's body: whole (nearly every answer), or a stream (events, a relayed body).
pub struct Body {
    content: Content,
    pub meta: Meta,
}

enum Content {
    /// The bytes a handler rendered, as it rendered them. Not made `Bytes`: a `Vec` with room to
    /// spare becomes `Bytes` through an allocation of its own (a shared header), and the node's
    /// HTTP/1.1 path only copies the body into its output.
    Owned(Vec<u8>),
    Shared(Bytes),
    Stream(BoxBody<Bytes, BoxError>),
}

impl Body {
    fn with(content: Content) -> Body {
        Body {
            content,
            meta: Meta::default(),
        }
    }

    pub fn stream<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Body::with(Content::Stream(body.map_err(Into::into).boxed()))
    }

    pub fn empty() -> Body {
        Body::with(Content::Owned(Vec::new()))
    }

    /// The whole body, when it is whole (not a stream), as it is now.
    pub fn whole(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Owned(v) => Some(v),
            Content::Shared(b) => Some(b),
            Content::Stream(_) => None,
        }
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::with(Content::Owned(s.into_bytes()))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Body::with(Content::Shared(Bytes::from_static(s.as_bytes())))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body::with(Content::Owned(v))
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::with(Content::Shared(b))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let data = match &mut self.get_mut().content {
            Content::Stream(s) => return Pin::new(s).poll_frame(cx),
            Content::Owned(v) => Bytes::from(std::mem::take(v)),
            Content::Shared(b) => std::mem::take(b),
        };
        Poll::Ready((!data.is_empty()).then(|| Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.content {
            Content::Owned(v) => v.is_empty(),
            Content::Shared(b) => b.is_empty(),
            Content::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.content {
            Content::Owned(v) => http_body::SizeHint::with_exact(v.len() as u64),
            Content::Shared(b) => http_body::SizeHint::with_exact(b.len() as u64),
            Content::Stream(s) => s.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole body reads as its bytes on both paths: whole for the HTTP/1.1 path, framed for
    /// hyper's, with the length it announces.
    #[test]
    fn whole_bodies_read_as_their_bytes() {
        use futures_util::FutureExt;
        use http_body::Body as _;
        let bodies = [
            (
                Body::from(String::with_capacity(64) + "{\"a\":1}"),
                &b"{\"a\":1}"[..],
            ),
            (Body::from(b"xyz".to_vec()), b"xyz"),
            (Body::from(Bytes::from_static(b"bytes")), b"bytes"),
            (Body::from("static"), b"static"),
            (Body::empty(), b""),
        ];
        for (body, want) in bodies {
            assert_eq!(body.whole(), Some(want));
            assert_eq!(body.size_hint().exact(), Some(want.len() as u64));
            assert_eq!(body.is_end_stream(), want.is_empty());
            let got = body.collect().now_or_never().unwrap().unwrap().to_bytes();
            assert_eq!(&got[..], want);
        }
    }

    fn meta() -> Meta {
        Meta {
            content_type: Some(JSON),
            token: Token::Session(SessionToken::at(3, 17)),
            shard: Some(3),
            epoch: Some(9),
            cluster_id: Some("prod"),
        }
    }

    /// Both ways of sending an answer send the same headers: the lines the HTTP/1.1 path writes
    /// parse to the map the hyper path is given.
    #[test]
    fn written_lines_and_headers_agree() {
        for m in [
            meta(),
            Meta::default(),
            Meta {
                token: Token::Observed(42),
                ..Meta::default()
            },
        ] {
            let mut out = Vec::new();
            m.write(&mut out);
            out.extend_from_slice(b"\r\n");
            let mut parsed = [httparse::EMPTY_HEADER; 8];
            let n = match httparse::parse_headers(&out, &mut parsed) {
                Ok(httparse::Status::Complete((_, h))) => h.len(),
                other => panic!("{other:?}: {}", String::from_utf8_lossy(&out)),
            };
            let written: Vec<(String, Vec<u8>)> = parsed[..n]
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect();
            let mut h = HeaderMap::new();
            m.insert_into(&mut h);
            let mapped: Vec<(String, Vec<u8>)> = h
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                .collect();
            assert_eq!(written, mapped);
            // The names the HTTP/1.1 path skips in the map are exactly those it wrote.
            for name in h.keys() {
                assert!(m.covers(name), "{name}");
            }
            assert!(!m.covers(&http::header::RETRY_AFTER));
            if h.is_empty() {
                assert!(!m.covers(&http::header::CONTENT_TYPE));
            }
        }
        let mut out = Vec::new();
        meta().write(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "content-type: application/json\r\nrcluster-token: 3:17\r\nrcluster-shard: 3\r\n\
             rcluster-epoch: 9\r\nrcluster-cluster-id: prod\r\n"
        );
    }
}
