//! The shipper's wire to the other members: POSTs to their internal endpoints with the cluster
//! secret and this cluster's id, and answers from members of another cluster refused.

use super::wire::Wire;
use crate::engine::Cached;
use crate::log;
use crate::replication::{AppendHeader, AppendResponse, Cluster};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use rcluster_client::CLUSTER_ID_HEADER;
use rcluster_client::transport::Transport;
use std::time::Duration;

pub struct Link {
    transport: Transport,
    /// Appends only: their own connections (see `wire`).
    wire: Wire,
    headers: HeaderMap,
    me: String,
    cluster_id: Option<String>,
}

impl Link {
    pub fn new(cluster: &Cluster, transport: Transport) -> Link {
        let mut headers = HeaderMap::new();
        if let Some(secret) = &cluster.secret
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {secret}"))
        {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        // The receiver refuses our messages if it belongs to another cluster.
        if let Some(id) = &cluster.id
            && let Ok(v) = HeaderValue::from_str(id)
        {
            headers.insert(CLUSTER_ID_HEADER, v);
        }
        Link {
            wire: Wire::new(transport.config().clone(), &headers),
            transport,
            headers,
            me: cluster.me.clone(),
            cluster_id: cluster.id.clone(),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Replica → primary: "I follow you now", so the primary retries at once.
    pub async fn hello(&self, primary_url: &str, term: u64) {
        let body = serde_json::json!({"term": term, "primary": self.me}).to_string();
        let url = format!("{primary_url}/internal/v1/hello");
        let headers = self.headers.clone();
        let _ = self
            .transport
            .request(Method::POST, &url, headers, Some(body.into()), None)
            .await;
    }

    /// Sends `items` after `header` to the member at `url`.
    pub async fn append(
        &self,
        url: &str,
        header: &AppendHeader,
        items: &[Cached],
    ) -> Result<AppendResponse, String> {
        let mut body =
            Vec::with_capacity(items.iter().map(|c| c.payload.len() + 8).sum::<usize>() + 64);
        log::put_frame(&mut body, &log::encode(header));
        for c in items {
            log::put_frame(&mut body, &c.payload);
        }
        let path = "/internal/v1/append";
        let answer = self.wire.post(url, path, &body).await?;
        self.answer(
            (url, path),
            answer.status,
            answer.cluster_id.as_deref(),
            &answer.body,
        )
    }

    /// Sends a snapshot file's bytes to the member at `url`, as the primary of `term`.
    pub async fn snapshot(
        &self,
        url: &str,
        term: u64,
        body: Vec<u8>,
    ) -> Result<AppendResponse, String> {
        let url = format!(
            "{url}/internal/v1/install-snapshot?term={term}&from={}",
            self.me
        );
        self.post(&url, body.into(), Some(Duration::from_secs(120)))
            .await
    }

    /// POSTs to another member's internal endpoint and decodes its JSON answer.
    async fn post(
        &self,
        url: &str,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<AppendResponse, String> {
        let headers = self.headers.clone();
        let resp = self
            .transport
            .request(Method::POST, url, headers, Some(body), timeout)
            .await
            .map_err(|e| e.to_string())?;
        let theirs = resp.headers.get(CLUSTER_ID_HEADER).map(|v| v.as_bytes());
        self.answer((url, ""), resp.status, theirs, &resp.body)
    }

    /// Decodes a member's answer to a request sent to `url` (its two parts, joined only for an
    /// error); refusals and answers from another cluster are errors.
    fn answer(
        &self,
        url: (&str, &str),
        status: StatusCode,
        theirs: Option<&[u8]>,
        body: &[u8],
    ) -> Result<AppendResponse, String> {
        let url = || format!("{}{}", url.0, url.1);
        if status != StatusCode::OK {
            return Err(format!(
                "{} answered {status}: {}",
                url(),
                String::from_utf8_lossy(body)
            ));
        }
        // A member that says it is in another cluster is not ours, whatever it answered.
        if let (Some(ours), Some(theirs)) = (&self.cluster_id, theirs)
            && ours.as_bytes() != theirs
        {
            return Err(format!(
                "{}: cluster_mismatch: it belongs to cluster {:?}, not {ours:?}",
                url(),
                String::from_utf8_lossy(theirs)
            ));
        }
        serde_json::from_slice(body).map_err(|e| format!("bad answer from {}: {e}", url()))
    }
}
