//! The route table: which endpoint a method and path name, the query parameters each accepts,
//! and the largest body each can legitimately need. Decided from the request head alone, so
//! nothing is read for a request that will be refused.

use super::{ApiError, Ctx};
use crate::auth::Role;
use crate::shipper;
use http::{Method, StatusCode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Livez,
    Readyz,
    Metrics,
    Status,
    /// `GET /v1/cluster`: the cluster map.
    Cluster,
    /// `GET /v1/cluster/stream`: the cluster map, pushed again at every change.
    ClusterStream,
    Switchover,
    List,
    Put,
    Get,
    Delete,
    Incr,
    ListTopics,
    CreateTopic,
    DeleteTopic,
    Publish,
    Read,
    Stream,
    Subscribe,
    Unsubscribe,
    Pull,
    Watch,
    /// `POST /v1/txn`: a transaction.
    Txn,
    /// `GET /v1/merged`: several prefixes in one page, newest first.
    Merged,
    /// `GET /v1/stream?topic=…`: one stream over several topics.
    Streams,
    /// `/internal/v1/{op}`: the operation decides parameters and body (see `internal.rs`).
    Internal,
}

/// Bodies of small JSON requests (incr, topic retention, switchover).
const SMALL_BODY: usize = 64 << 10;
/// Role commands carry a term and a member list.
const COMMAND_BODY: usize = 1 << 20;
/// A snapshot is installed only after the secret was checked; it holds the whole state.
const SNAPSHOT_BODY: usize = 1 << 30;

impl Route {
    /// The `api` label of the metrics; `None` for probes and internal calls.
    pub fn api(self) -> Option<&'static str> {
        Some(match self {
            Route::Livez | Route::Readyz | Route::Metrics | Route::Internal => return None,
            Route::Status => "status",
            Route::Cluster => "cluster",
            Route::ClusterStream => "cluster_stream",
            Route::Switchover => "switchover",
            Route::List => "list",
            Route::Put => "put",
            Route::Get => "get",
            Route::Delete => "delete",
            Route::Incr => "incr",
            Route::ListTopics => "list_topics",
            Route::CreateTopic => "create_topic",
            Route::DeleteTopic => "delete_topic",
            Route::Publish => "publish",
            Route::Read => "read",
            Route::Stream | Route::Streams => "stream",
            Route::Subscribe => "subscribe",
            Route::Unsubscribe => "unsubscribe",
            Route::Pull => "pull",
            Route::Watch => "watch",
            Route::Txn => "txn",
            Route::Merged => "merged",
        })
    }

    /// Routes answered with a server-sent event stream (`stream::sse`), which stays in flight
    /// until its client leaves.
    pub fn streams(self) -> bool {
        matches!(
            self,
            Route::Stream | Route::Watch | Route::Streams | Route::ClusterStream
        )
    }

    /// The least role a client's access token needs (`auth.rs`); `None` for the probes and
    /// `/metrics` (open to Kubernetes and Prometheus) and for internal calls (the cluster secret).
    pub fn role(self) -> Option<Role> {
        Some(match self {
            Route::Livez | Route::Readyz | Route::Metrics | Route::Internal => return None,
            Route::Status
            | Route::Cluster
            | Route::ClusterStream
            | Route::List
            | Route::Get
            | Route::ListTopics
            | Route::Read
            | Route::Stream
            | Route::Streams
            | Route::Merged
            | Route::Watch => Role::Read,
            Route::Put
            | Route::Delete
            | Route::Incr
            | Route::CreateTopic
            | Route::DeleteTopic
            | Route::Publish
            | Route::Subscribe
            | Route::Unsubscribe
            | Route::Pull
            | Route::Txn => Role::Write,
            Route::Switchover => Role::Admin,
        })
    }

    /// The query parameters the route accepts; any other is refused (a typo such as `?tll=60`
    /// must not silently drop the TTL).
    pub fn params(self) -> &'static [&'static str] {
        match self {
            Route::Livez
            | Route::Readyz
            | Route::Metrics
            | Route::Switchover
            | Route::Cluster
            | Route::ClusterStream => &[],
            Route::Internal => &[],
            Route::Status => &["digest"],
            Route::List => &["prefix", "start_after", "limit", "consistency"],
            Route::Put => &["ttl", "if_version", "ack"],
            Route::Get => &["consistency"],
            Route::Delete => &["if_version", "ack"],
            Route::Incr | Route::CreateTopic | Route::DeleteTopic | Route::Unsubscribe => &["ack"],
            Route::ListTopics => &["consistency"],
            Route::Publish => &["batch", "ack"],
            Route::Read => &["from", "limit", "consistency"],
            Route::Stream => &["from"],
            Route::Streams => &["topic", "from"],
            Route::Txn => &["ack"],
            Route::Merged => &["prefix", "order", "limit", "cursor", "consistency"],
            Route::Subscribe => &["start", "ack"],
            Route::Pull => &["max", "wait_ms", "ack"],
            Route::Watch => &["prefix", "from"],
        }
    }

    /// Parameters that may be given more than once (each adds a source).
    pub fn repeatable(self) -> &'static [&'static str] {
        match self {
            Route::Watch | Route::Merged => &["prefix"],
            Route::Streams => &["topic"],
            _ => &[],
        }
    }

    /// The largest body the route can need; 0 for routes that take none.
    pub fn body_limit(self, ctx: &Ctx, path: &str) -> usize {
        let max_body = ctx.limits.max_body_bytes;
        match self {
            Route::Put | Route::Publish | Route::Txn => max_body,
            Route::Incr | Route::CreateTopic | Route::Switchover => max_body.min(SMALL_BODY),
            Route::Internal => match path.rsplit('/').next().unwrap_or_default() {
                "append" | "slots-import" => shipper::max_append_bytes(&ctx.limits),
                "install-snapshot" => SNAPSHOT_BODY,
                _ => COMMAND_BODY,
            },
            _ => 0,
        }
    }
}

fn not_allowed(allowed: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route allows {allowed}"),
    );
    e.headers.push(("allow", allowed.to_string()));
    e
}

/// The route of a request. HEAD is answered like GET (without the body) wherever GET is.
pub fn route(method: &Method, segs: &[&str]) -> Result<Route, ApiError> {
    let m = if *method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let get = |r: Route| {
        if *m == Method::GET {
            Ok(r)
        } else {
            Err(not_allowed("GET, HEAD"))
        }
    };
    let post = |r: Route| {
        if *m == Method::POST {
            Ok(r)
        } else {
            Err(not_allowed("POST"))
        }
    };
    match segs {
        ["livez"] => get(Route::Livez),
        ["readyz"] => get(Route::Readyz),
        ["metrics"] => get(Route::Metrics),
        ["v1", "status"] => get(Route::Status),
        ["v1", "cluster"] => get(Route::Cluster),
        ["v1", "cluster", "stream"] => get(Route::ClusterStream),
        ["v1", "switchover"] => post(Route::Switchover),
        ["v1", "kv"] => get(Route::List),
        ["v1", "kv", ..] => match *m {
            Method::PUT => Ok(Route::Put),
            Method::GET => Ok(Route::Get),
            Method::DELETE => Ok(Route::Delete),
            Method::POST if segs.last() == Some(&"incr") && segs.len() > 3 => Ok(Route::Incr),
            _ => Err(not_allowed("GET, HEAD, PUT, DELETE, POST (…/incr)")),
        },
        ["v1", "topics"] => get(Route::ListTopics),
        ["v1", "topics", _] => match *m {
            Method::PUT => Ok(Route::CreateTopic),
            Method::DELETE => Ok(Route::DeleteTopic),
            _ => Err(not_allowed("PUT, DELETE")),
        },
        ["v1", "topics", _, "messages"] => match *m {
            Method::POST => Ok(Route::Publish),
            Method::GET => Ok(Route::Read),
            _ => Err(not_allowed("GET, HEAD, POST")),
        },
        ["v1", "topics", _, "stream"] => get(Route::Stream),
        ["v1", "topics", _, "subscriptions", _] => match *m {
            Method::PUT => Ok(Route::Subscribe),
            Method::DELETE => Ok(Route::Unsubscribe),
            _ => Err(not_allowed("PUT, DELETE")),
        },
        ["v1", "topics", _, "subscriptions", _, "pull"] => post(Route::Pull),
        ["v1", "watch"] => get(Route::Watch),
        ["v1", "txn"] => post(Route::Txn),
        ["v1", "merged"] => get(Route::Merged),
        ["v1", "stream"] => get(Route::Streams),
        ["internal", "v1", _] => post(Route::Internal),
        _ => Err(ApiError::not_found(
            "route_not_found",
            format!("no route for {method} /{}", segs.join("/")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: &str, path: &str) -> Result<Route, (u16, String)> {
        let segs = super::super::request::segments(path);
        let m = Method::from_bytes(m.as_bytes()).unwrap();
        route(&m, &segs).map_err(|e| {
            let allow = e.headers.iter().map(|(_, v)| v.clone()).collect();
            (e.status.as_u16(), allow)
        })
    }

    #[test]
    fn routes_and_their_refusals() {
        assert_eq!(r("GET", "/v1/kv/a/b"), Ok(Route::Get));
        assert_eq!(r("HEAD", "/v1/kv/a"), Ok(Route::Get));
        assert_eq!(r("POST", "/v1/kv/a/incr"), Ok(Route::Incr));
        assert_eq!(r("POST", "/v1/kv/incr").map_err(|e| e.0), Err(405));
        assert_eq!(r("HEAD", "/v1/switchover"), Err((405, "POST".into())));
        assert_eq!(r("BREW", "/v1/status"), Err((405, "GET, HEAD".into())));
        assert_eq!(r("GET", "/v2/x").map_err(|e| e.0), Err(404));
        assert_eq!(r("GET", "/internal/v1/status").map_err(|e| e.0), Err(405));
        assert_eq!(r("POST", "/internal/v1/append"), Ok(Route::Internal));
        assert_eq!(r("GET", "/v1/cluster/stream"), Ok(Route::ClusterStream));
    }

    #[test]
    fn routes_that_take_no_body_and_no_parameters() {
        for route in [
            Route::Livez,
            Route::Readyz,
            Route::Metrics,
            Route::Switchover,
        ] {
            assert!(route.params().is_empty(), "{route:?}");
        }
        assert!(Route::Put.params().contains(&"ttl"));
        assert!(!Route::Get.params().contains(&"ack"));
    }

    #[test]
    fn each_route_needs_its_role() {
        assert_eq!(Route::Get.role(), Some(Role::Read));
        assert_eq!(Route::Watch.role(), Some(Role::Read));
        assert_eq!(Route::Pull.role(), Some(Role::Write), "pull moves a cursor");
        assert_eq!(Route::Put.role(), Some(Role::Write));
        assert_eq!(Route::Switchover.role(), Some(Role::Admin));
        for open in [Route::Livez, Route::Readyz, Route::Metrics, Route::Internal] {
            assert_eq!(open.role(), None, "{open:?}");
        }
    }
}
