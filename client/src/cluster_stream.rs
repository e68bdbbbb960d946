//! Learning a new primary the moment it is announced (push, not poll).
//!
//! A client keeps one `GET /v1/cluster/stream` open to a node of its cluster, preferably not the
//! primary (a primary that dies or hangs takes its stream with it, a replica's stream stays up
//! through the failover and carries the announcement). Every `cluster` event is the whole cluster
//! map; the client takes what it teaches — the member list, each shard's primary in a newer term —
//! so after a failover its next write goes straight to the new primary instead of waiting out a
//! timeout against the old one. A map of an older term (from a node cut off from the coordinator)
//! never moves the client back.
//!
//! The stream lives in a background task that holds the client only weakly: it ends when the last
//! clone of the client is dropped (at the latest one idle timeout later). When its node ends the
//! stream, breaks it, or goes silent (the node resends the map every second), the task connects to
//! another endpoint, at once the first time and then with capped backoff.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::HeaderMap;
use rcluster_proto::ClusterMap;

use crate::client::{Client, Inner, normalize_endpoint};
use crate::transport::Streamed;

/// A stream that delivers nothing for this long is taken as lost (the node sends the map every
/// second).
const IDLE: Duration = Duration::from_secs(3);
/// The longest wait for a node to open the stream.
const OPEN: Duration = Duration::from_secs(2);
/// The longest pause between two connection attempts in a row that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the stream last announced for a cluster of one shard: (term, primary URL).
type Announced = Mutex<(u64, Option<String>)>;

/// Whether (`term`, `primary`) is news after `last`: a newer term, or the primary of a term in
/// which none was known yet (a node is fenced first and told the new primary after). Takes it.
fn news(last: &Announced, term: u64, primary: Option<&str>) -> bool {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    let news = term > last.0 || (term == last.0 && last.1.is_none() && primary.is_some());
    if news {
        *last = (term, primary.map(str::to_string));
    }
    news
}

impl Client {
    /// Starts the cluster stream once per client (when enabled and a runtime runs).
    pub(crate) fn follow_cluster_once(&self) {
        let inner = &self.inner;
        if !inner.follow_cluster || inner.following.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            inner.following.store(false, Ordering::Relaxed);
            return;
        };
        rt.spawn(follow(Arc::downgrade(&self.inner)));
    }

    /// The endpoint to stream from: not `avoid` (it just failed), not a node of another cluster,
    /// and not the known primary while another node is there.
    fn stream_endpoint(&self, avoid: Option<&str>) -> Option<String> {
        let primary = self.known_primary();
        let candidates: Vec<String> = self
            .endpoints()
            .into_iter()
            .filter(|e| !self.inner.identity.is_foreign(e))
            .collect();
        let pick = |skip_primary: bool| {
            candidates
                .iter()
                .filter(|e| Some(e.as_str()) != avoid)
                .find(|e| !skip_primary || primary.as_deref() != Some(e.as_str()))
                .cloned()
        };
        pick(true)
            .or_else(|| pick(false))
            .or_else(|| candidates.first().cloned())
    }

    /// Takes one pushed map; false when it is not one (then the stream is left).
    fn pushed(&self, data: &str) -> bool {
        let Ok(map) = serde_json::from_str::<ClusterMap>(data) else {
            return false;
        };
        if map.validate().is_err() {
            return false;
        }
        if self.inner.discover {
            self.learn(map.shards.iter().flat_map(|s| s.members.values().cloned()));
        }
        if let [shard] = map.shards.as_slice()
            && map.slots.shards <= 1
        {
            let primary = shard
                .primary_url()
                .and_then(|p| normalize_endpoint(p).ok())
                .filter(|p| !self.inner.identity.is_foreign(p));
            if news(&self.inner.announced, shard.term, primary.as_deref()) {
                // A term without a primary yet: the old one is fenced, so stop preferring it.
                self.set_primary(primary);
            }
        }
        self.inner.routes.learn(map);
        true
    }
}

/// The background task: one stream at a time, to one endpoint after another.
async fn follow(client: Weak<Inner>) {
    let mut failures: u32 = 0;
    let mut avoid: Option<String> = None;
    loop {
        let (transport, endpoint, headers) = {
            let Some(inner) = client.upgrade() else {
                return;
            };
            let c = Client { inner };
            let Some(endpoint) = c.stream_endpoint(avoid.as_deref()) else {
                return;
            };
            let mut headers: HeaderMap = c.auth_headers();
            c.inner.identity.add_header(&mut headers);
            (c.inner.transport.clone(), endpoint, headers)
        };
        let url = format!("{endpoint}/v1/cluster/stream");
        let mut delivered = false;
        if let Ok(Streamed::Events(mut events)) = transport.stream(&url, headers, Some(OPEN)).await
        {
            let believed = match client.upgrade() {
                Some(inner) => inner.identity.check(&endpoint, events.headers()).is_ok(),
                None => return,
            };
            // Only a node of this client's cluster is believed.
            while let (true, Ok(Some(Ok(ev)))) =
                (believed, tokio::time::timeout(IDLE, events.next()).await)
            {
                let Some(inner) = client.upgrade() else {
                    return;
                };
                if ev.event == "cluster" {
                    if !(Client { inner }).pushed(&ev.data) {
                        break;
                    }
                    delivered = true;
                }
            }
        }
        // A stream that delivered was a working one: reconnect at once, elsewhere.
        failures = if delivered { 0 } else { failures + 1 };
        avoid = Some(endpoint);
        if failures > 0 {
            let backoff = Duration::from_millis(50 << failures.min(7)).min(MAX_BACKOFF);
            tokio::time::sleep(backoff).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_newer_term_or_a_first_primary_is_news() {
        let a = Announced::default();
        assert!(news(&a, 3, Some("http://n1")));
        assert!(!news(&a, 3, Some("http://n1")), "the same again");
        assert!(!news(&a, 2, Some("http://n2")), "an older term");
        assert!(news(&a, 4, None), "fenced in a newer term");
        assert!(news(&a, 4, Some("http://n2")), "then told the primary");
        assert!(!news(&a, 4, None));
        assert!(!news(&a, 4, Some("http://n3")), "one primary per term");
    }
}
