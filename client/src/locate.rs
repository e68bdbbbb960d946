//! Finding a node that answers, and the primary, before the first request: every endpoint is
//! asked for its status at once, so a hung (SIGSTOPped) or dead node early in the endpoint list
//! costs nothing, where trying the endpoints in turn would wait for a timeout on each.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::HeaderMap;
use rcluster_proto::NodeStatus;

use crate::client::{Client, normalize_endpoint};
use crate::identity;

/// The longest the status round waits for any answer.
const LOCATE_WAIT: Duration = Duration::from_secs(2);
/// After the first answer, how long other answers may still arrive: a node that heard of a newer
/// term than the first one to answer knows better where the primary is.
const STRAGGLERS: Duration = Duration::from_millis(100);

/// What the status round found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Endpoints that answered, first answer first.
    pub answered: Vec<String>,
    /// The primary the answer of the highest term names, if any.
    pub primary: Option<String>,
    pub term: u64,
}

impl Client {
    /// Runs [`Client::locate`] once per client, when enabled and no primary is known yet; starts
    /// the cluster stream (which then picks a node other than the located primary).
    pub(crate) async fn locate_once(&self) {
        let inner = &self.inner;
        if inner.locate
            && !inner.located.swap(true, Ordering::Relaxed)
            && self.known_primary().is_none()
        {
            let _ = self.locate().await;
        }
        self.follow_cluster_once();
    }

    /// Asks every endpoint for `/v1/status` at once. Afterwards the endpoints that answered come
    /// first (in the order they answered), the members they list are known endpoints, and the
    /// primary named by the answer of the highest term is where writes go first. Waits at most
    /// about two seconds, and only [`STRAGGLERS`] after the first answer.
    pub async fn locate(&self) -> Option<Located> {
        let inner = &self.inner;
        let endpoints: Vec<String> = self
            .endpoints()
            .into_iter()
            .filter(|e| !inner.identity.is_foreign(e))
            .collect();
        let timeout = inner.transport.config().request_timeout.min(LOCATE_WAIT);
        let mut asks = tokio::task::JoinSet::new();
        for endpoint in endpoints {
            let transport = inner.transport.clone();
            let mut headers = HeaderMap::new();
            inner.identity.add_header(&mut headers);
            asks.spawn(async move {
                let url = format!("{endpoint}/v1/status");
                let answer = transport
                    .request(http::Method::GET, &url, headers, None, Some(timeout))
                    .await;
                (endpoint, answer)
            });
        }
        let mut answers: Vec<(String, NodeStatus)> = Vec::new();
        let mut until: Option<Instant> = None;
        loop {
            let next = match until {
                None => asks.join_next().await,
                Some(t) => tokio::time::timeout_at(t.into(), asks.join_next())
                    .await
                    .unwrap_or(None),
            };
            let Some(joined) = next else { break };
            let Ok((endpoint, Ok(resp))) = joined else {
                continue;
            };
            if !resp.status.is_success() {
                let e = crate::Error::from_response(resp.status.as_u16(), &resp.body);
                if identity::is_mismatch(&e) {
                    inner.identity.mark_foreign(&endpoint);
                }
                continue;
            }
            if inner.identity.check(&endpoint, &resp.headers).is_err() {
                continue;
            }
            if let Ok(status) = serde_json::from_slice::<NodeStatus>(&resp.body) {
                answers.push((endpoint, status));
                until.get_or_insert_with(|| Instant::now() + STRAGGLERS);
            }
        }
        // Dropping the set aborts the asks still waiting (the hung nodes).
        drop(asks);
        if answers.is_empty() {
            return None;
        }
        self.learn(
            answers
                .iter()
                .flat_map(|(_, s)| s.members.iter().map(|m| m.url.clone())),
        );
        let answered: Vec<String> = answers.iter().map(|(e, _)| e.clone()).collect();
        {
            // Responsive endpoints first, so reads and rotations try them before the others.
            let mut list = self.endpoint_list();
            list.sort_by_key(|e| answered.iter().position(|a| a == e).unwrap_or(usize::MAX));
        }
        inner.current.store(0, Ordering::Relaxed);
        let newest = answers.iter().max_by_key(|(_, s)| s.term).map(|(_, s)| s);
        let term = newest.map_or(0, |s| s.term);
        let primary = newest
            .and_then(|s| s.primary_url.as_deref())
            .and_then(|p| normalize_endpoint(p).ok())
            .filter(|p| !inner.identity.is_foreign(p));
        if let Some(p) = &primary {
            self.learn([p.clone()]);
            self.set_primary(Some(p.clone()));
        }
        Some(Located {
            answered,
            primary,
            term,
        })
    }
}
