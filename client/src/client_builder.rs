//! Building a client: endpoints, timeouts, retries, trust and identity, checked once.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;

use super::{Client, Inner};
use crate::error::Error;
use crate::identity::Identity;
use crate::notice::{Notice, NoticeFn};
use crate::retry::RetryPolicy;
use crate::routing::Routes;
use crate::tls::Trust;
use crate::transport::{Transport, TransportConfig};
use rcluster_proto::SessionToken;

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    transport: TransportConfig,
    retry: RetryPolicy,
    discover: bool,
    cluster_id: Option<String>,
    locate: bool,
    unreachable_deadline: Option<Duration>,
    notify: Option<NoticeFn>,
    access_token: Option<Redacted>,
    follow_cluster: bool,
}

/// A secret that `Debug` output does not show.
#[derive(Clone)]
struct Redacted(String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl ClientBuilder {
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            transport: TransportConfig::default(),
            retry: RetryPolicy::default(),
            discover: true,
            cluster_id: None,
            locate: false,
            unreachable_deadline: None,
            notify: None,
            access_token: None,
            follow_cluster: true,
        }
    }

    /// Keep one stream of cluster map changes open (`GET /v1/cluster/stream`, see
    /// `cluster_stream.rs`) and switch the write target the moment a new primary is announced.
    /// On by default; started with the first call. Off suits a client that makes one call and
    /// exits.
    pub fn follow_cluster(mut self, on: bool) -> Self {
        self.follow_cluster = on;
        self
    }

    /// Before its first request, ask every endpoint for its status at once and start with the
    /// primary they name and a node that answered (see [`Client::locate`]): a hung or dead node
    /// early in the endpoint list then costs nothing. Off by default.
    pub fn locate_primary(mut self, on: bool) -> Self {
        self.locate = on;
        self
    }

    /// Gives up on a call after `d` when no attempt reached any node (every connection refused
    /// or unanswered), instead of retrying for the whole retry deadline.
    pub fn give_up_unreachable_after(mut self, d: Duration) -> Self {
        self.unreachable_deadline = Some(d);
        self
    }

    /// Called when a call waits: before each retry, and when an attempt has had no answer for a
    /// second (see [`Notice`]). A command line prints these so that a wait is never silent.
    pub fn on_notice(mut self, f: impl Fn(&Notice<'_>) + Send + Sync + 'static) -> Self {
        self.notify = Some(NoticeFn(Arc::new(f)));
        self
    }

    /// The access token sent with every request (`Authorization: Bearer TOKEN`), for nodes
    /// started with `--auth-file`. Its role decides what the client may do.
    pub fn access_token(mut self, token: Option<String>) -> Self {
        self.access_token = token.filter(|t| !t.trim().is_empty()).map(Redacted);
        self
    }

    /// The server certificates accepted on `https://` endpoints (default: the system's CAs).
    pub fn trust(mut self, trust: Trust) -> Self {
        self.transport.trust = trust;
        self
    }

    /// The cluster the client may talk to. Without one, the client takes the cluster of the
    /// first node that names one. Either way it never sends to, or follows a redirect to, a node
    /// of another cluster.
    pub fn cluster_id(mut self, id: Option<String>) -> Self {
        self.cluster_id = id;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.transport.connect_timeout = d;
        self
    }

    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.transport.request_timeout = d;
        self
    }

    /// Idle connections kept per endpoint (1 gives a worker its own connection).
    pub fn max_idle_per_host(mut self, n: usize) -> Self {
        self.transport.max_idle_per_host = n;
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How long one call keeps retrying (across a failover, say) before it gives up.
    pub fn retry_deadline(mut self, d: Duration) -> Self {
        self.retry.deadline = d;
        self
    }

    /// Whether to add the cluster members a node lists in `/v1/status` to the endpoints (on by
    /// default): a client given one endpoint then survives the loss of that node.
    pub fn discover_members(mut self, on: bool) -> Self {
        self.discover = on;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::InvalidArgument("no endpoint given".into()));
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        let mut retry = self.retry;
        retry.attempts = retry.attempts.max(1);
        let authorization = match &self.access_token {
            Some(Redacted(t)) => {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", t.trim())).map_err(|_| {
                        Error::InvalidArgument(
                            "the access token must be visible ASCII characters".into(),
                        )
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                transport: Transport::new(self.transport),
                endpoints: Mutex::new(endpoints),
                discover: self.discover,
                discovered: AtomicBool::new(false),
                current: AtomicUsize::new(0),
                primary: Mutex::new(None),
                token: Mutex::new(SessionToken::new()),
                retry,
                identity: Identity::new(self.cluster_id),
                authorization,
                routes: Routes::default(),
                locate: self.locate,
                located: AtomicBool::new(false),
                unreachable_deadline: self.unreachable_deadline,
                notify: self.notify,
                follow_cluster: self.follow_cluster,
                following: AtomicBool::new(false),
                announced: Mutex::default(),
            }),
        })
    }
}

/// Checks an endpoint is `HOST:PORT`, `http://HOST:PORT` or `https://HOST:PORT` (optionally
/// with a trailing `/`) and returns it with its scheme (`http://` when none was given).
pub fn normalize_endpoint(e: &str) -> Result<String, Error> {
    let raw = e.trim();
    // The scheme is looked for before trailing slashes go: `http://` alone is no endpoint.
    let has_scheme = raw.contains("://");
    let e = raw.trim_end_matches('/');
    let bad = || {
        Error::InvalidArgument(format!(
            "endpoint {e:?}: expected HOST:PORT, http://HOST:PORT or https://HOST:PORT"
        ))
    };
    // A bare `HOST:PORT` means plain HTTP; any other scheme is refused below.
    let full = if has_scheme {
        e.to_string()
    } else {
        format!("http://{e}")
    };
    let rest = full
        .strip_prefix("http://")
        .or_else(|| full.strip_prefix("https://"))
        .ok_or_else(bad)?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(bad());
    }
    let uri: http::Uri = full.parse().map_err(|_| bad())?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(full)
}
