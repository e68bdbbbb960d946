//! Talking to rcluster nodes: probing `/v1/status` into failover observations, and sending the
//! internal role commands (fence, promote, follow) through [`NodeCommands`], which the coordinator
//! runtime drives the same way for the playground, the controller and the simulation.

pub use crate::failover::CommitByAck;
use crate::failover::{Action, Observation, Role};
use futures_util::future::join_all;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use rcluster_client::tls::Trust;
use rcluster_client::transport::{Transport, TransportConfig};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a node's `/v1/status` says: the wire contract's report.
pub use rcluster_proto::{NodeStatus, SwitchoverRequest};

/// The failover input for a node that answered. `unhealthy_since_ms` is the caller's to track.
pub fn observation(
    status: &NodeStatus,
    name: &str,
    unhealthy_since_ms: Option<u64>,
) -> Observation {
    Observation {
        name: name.to_string(),
        reachable: true,
        role: status.role,
        term: status.term,
        last_log_term: status.last_log_term,
        last_log_index: status.last_log_index,
        applied_index: status.applied_index,
        following: status.following.clone(),
        unhealthy_since_ms,
        gone: false,
        members: status.member_names(),
        term_start: status.term_start,
        commit_by_ack: status.commit_by_ack,
    }
}

/// An observation of a member that did not answer.
pub fn unreachable(name: &str, unhealthy_since_ms: Option<u64>) -> Observation {
    Observation {
        name: name.to_string(),
        reachable: false,
        role: Role::Unknown,
        term: 0,
        last_log_term: 0,
        last_log_index: 0,
        applied_index: 0,
        following: None,
        unhealthy_since_ms,
        gone: false,
        members: Vec::new(),
        term_start: 0,
        commit_by_ack: None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{url}: {message}")]
    Transport {
        url: String,
        message: String,
        /// Nothing listens at the address: the node's process is not running there.
        refused: bool,
    },
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
}

impl NodeError {
    /// Nothing listens at the node's address: its process is not running (a failure that a
    /// detection window cannot undo, unlike a timeout).
    pub fn refused(&self) -> bool {
        matches!(self, NodeError::Transport { refused: true, .. })
    }
}

/// A client for node status and role commands. Short timeouts: a coordinator must never wait on a
/// dead node for long (no reliance on TCP retries).
#[derive(Clone)]
pub struct NodeClient {
    transport: Transport,
    auth: HeaderMap,
}

impl NodeClient {
    /// A client for nodes on plain `http://` URLs (or `https://` ones the system's CAs verify).
    pub fn new(secret: &str, timeout: Duration) -> NodeClient {
        Self::with_trust(secret, timeout, Trust::System)
    }

    /// A client that verifies `https://` nodes against `trust` (the cluster's CA).
    pub fn with_trust(secret: &str, timeout: Duration, trust: Trust) -> NodeClient {
        let transport = Transport::new(TransportConfig {
            connect_timeout: timeout.min(Duration::from_millis(500)),
            request_timeout: timeout,
            pool_idle_timeout: Duration::from_secs(30),
            max_idle_per_host: 2,
            trust,
        });
        let mut auth = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {secret}")) {
            auth.insert(http::header::AUTHORIZATION, v);
        }
        NodeClient { transport, auth }
    }

    /// One request; any answer but 200 is an error carrying the node's body.
    async fn call(
        &self,
        method: Method,
        url: String,
        auth: bool,
        body: Option<String>,
    ) -> Result<bytes::Bytes, NodeError> {
        let headers = if auth {
            self.auth.clone()
        } else {
            HeaderMap::new()
        };
        let resp = self
            .transport
            .request(method, &url, headers, body.map(Into::into), None)
            .await
            .map_err(|e| NodeError::Transport {
                url: url.clone(),
                refused: e.refused,
                message: e.to_string(),
            })?;
        if resp.status != StatusCode::OK {
            return Err(NodeError::Refused {
                url,
                status: resp.status.as_u16(),
                body: String::from_utf8_lossy(&resp.body).into_owned(),
            });
        }
        Ok(resp.body)
    }

    /// Opens the node's cluster stream (`GET /v1/cluster/stream`): a connection the coordinator
    /// holds open to notice at once when the node's process goes away.
    pub async fn cluster_stream(
        &self,
        base_url: &str,
    ) -> Result<rcluster_client::transport::EventStream, NodeError> {
        use rcluster_client::transport::Streamed;
        let url = format!("{base_url}/v1/cluster/stream");
        match self.transport.stream(&url, self.auth.clone(), None).await {
            Ok(Streamed::Events(events)) => Ok(events),
            Ok(Streamed::Response(resp)) => Err(NodeError::Refused {
                url,
                status: resp.status.as_u16(),
                body: String::from_utf8_lossy(&resp.body).into_owned(),
            }),
            Err(e) => Err(NodeError::Transport {
                url,
                refused: e.refused,
                message: e.to_string(),
            }),
        }
    }

    async fn call_status(
        &self,
        method: Method,
        url: String,
        auth: bool,
        body: Option<String>,
    ) -> Result<NodeStatus, NodeError> {
        let bytes = self.call(method, url.clone(), auth, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| NodeError::Transport {
            url,
            refused: false,
            message: format!("bad status: {e}"),
        })
    }

    pub async fn status(&self, base_url: &str) -> Result<NodeStatus, NodeError> {
        // The secret counts as an admin token on nodes that require access tokens.
        self.call_status(Method::GET, format!("{base_url}/v1/status"), true, None)
            .await
    }

    /// `op` is `fence`, `promote` or `follow` (`primary` is needed for follow; `members`, the
    /// member list from `term` on, goes with promote and follow). Returns the node's status after
    /// the command.
    pub async fn command(
        &self,
        base_url: &str,
        op: &str,
        term: u64,
        primary: Option<&str>,
        members: Option<&MemberUrls>,
    ) -> Result<NodeStatus, NodeError> {
        let mut body = serde_json::json!({"term": term, "primary": primary});
        if let Some(m) = members.filter(|_| op != "fence") {
            body["members"] = serde_json::json!(m);
        }
        let body = body.to_string();
        self.call_status(
            Method::POST,
            format!("{base_url}/internal/v1/{op}"),
            true,
            Some(body),
        )
        .await
    }

    /// Tells the node the switchover it recorded is finished (or given up), so it stops asking.
    /// The node refuses it from a coordinator of an older `term` than its own.
    pub async fn clear_switchover(&self, base_url: &str, term: u64) -> Result<(), NodeError> {
        let url = format!("{base_url}/internal/v1/clear-switchover");
        let body = serde_json::json!({ "term": term }).to_string();
        self.call(Method::POST, url, true, Some(body))
            .await
            .map(|_| ())
    }

    /// Sends the node the cluster map (slot map, shards, their primaries). The node keeps the
    /// newest it has heard of, so a repeated or late push changes nothing.
    pub async fn push_cluster_map(
        &self,
        base_url: &str,
        map: &rcluster_proto::ClusterMap,
    ) -> Result<(), NodeError> {
        let url = format!("{base_url}/internal/v1/cluster-map");
        let body = serde_json::to_string(map).map_err(|e| NodeError::Transport {
            refused: false,
            url: url.clone(),
            message: e.to_string(),
        })?;
        self.call(Method::POST, url, true, Some(body))
            .await
            .map(|_| ())
    }
}

impl NodeClient {
    /// An internal call whose answer's headers matter too (slot migration): `op_query` is
    /// `slots-copy?start=…`; `body` is sent as it is. Any answer but 200 is an error.
    pub async fn internal(
        &self,
        base_url: &str,
        op_query: &str,
        body: Option<bytes::Bytes>,
        timeout: Duration,
    ) -> Result<rcluster_client::transport::Response, NodeError> {
        let url = format!("{base_url}/internal/v1/{op_query}");
        let resp = self
            .transport
            .request(Method::POST, &url, self.auth.clone(), body, Some(timeout))
            .await
            .map_err(|e| NodeError::Transport {
                url: url.clone(),
                refused: e.refused,
                message: e.to_string(),
            })?;
        if resp.status != StatusCode::OK {
            return Err(NodeError::Refused {
                url,
                status: resp.status.as_u16(),
                body: String::from_utf8_lossy(&resp.body).into_owned(),
            });
        }
        Ok(resp)
    }
}

/// Member name → the URL other nodes reach it at.
pub type MemberUrls = BTreeMap<String, String>;

/// Where a coordinator's role commands go: the node client with the members' addresses
/// ([`Addressed`]), or the simulated nodes of the property tests.
pub trait NodeCommands {
    /// Sends `op` (`fence`, `promote` or `follow`; `primary` with follow) in `term` to `node`.
    /// Returns the node's status after the command, or why it failed.
    fn command(
        &self,
        node: &str,
        op: &'static str,
        term: u64,
        primary: Option<&str>,
    ) -> impl Future<Output = Result<NodeStatus, String>> + Send;

    /// Tells `node` that the switchover it recorded is finished (or given up), so it stops asking.
    fn clear_switchover(
        &self,
        node: &str,
        term: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// The node client and where one replica group's members are.
pub struct Addressed<'a> {
    pub client: &'a NodeClient,
    /// Member name → base URL of its node.
    pub urls: &'a BTreeMap<String, String>,
    /// The member list promote and follow carry (`None`: the nodes keep theirs).
    pub members: Option<&'a MemberUrls>,
}

impl Addressed<'_> {
    fn url(&self, node: &str) -> Result<&str, String> {
        self.urls
            .get(node)
            .map(String::as_str)
            .ok_or_else(|| "no address".to_string())
    }
}

impl NodeCommands for Addressed<'_> {
    async fn command(
        &self,
        node: &str,
        op: &'static str,
        term: u64,
        primary: Option<&str>,
    ) -> Result<NodeStatus, String> {
        let url = self.url(node)?;
        self.client
            .command(url, op, term, primary, self.members)
            .await
            .map_err(|e| e.to_string())
    }

    async fn clear_switchover(&self, node: &str, term: u64) -> Result<(), String> {
        let url = self.url(node)?;
        self.client
            .clear_switchover(url, term)
            .await
            .map_err(|e| e.to_string())
    }
}

/// One node command and how it went.
#[derive(Clone, Debug)]
pub struct CommandResult {
    pub op: &'static str,
    pub node: String,
    pub term: u64,
    pub primary: Option<String>,
    /// The node's status after the command, or why it failed.
    pub outcome: Result<NodeStatus, String>,
}

/// Sends the node commands of `actions` in order; the fences and the follows of one step go out
/// together. A failed command is reported and repeated by a later decision; a failed promotion
/// skips the follows after it (they would point at a node that is not primary).
pub async fn run_commands(nodes: &impl NodeCommands, actions: &[Action]) -> Vec<CommandResult> {
    let mut results = Vec::new();
    let mut promote_failed = false;
    let mut i = 0;
    while i < actions.len() {
        let mut batch: Vec<(&'static str, &String, u64, Option<&String>)> = Vec::new();
        match &actions[i] {
            Action::Fence { nodes, term } => {
                batch.extend(nodes.iter().map(|n| ("fence", n, *term, None)));
            }
            Action::Promote { node, term } => batch.push(("promote", node, *term, None)),
            Action::Follow { .. } => {
                while let Some(Action::Follow {
                    node,
                    primary,
                    term,
                }) = actions.get(i)
                {
                    if !promote_failed {
                        batch.push(("follow", node, *term, Some(primary)));
                    }
                    i += 1;
                }
                i -= 1;
            }
            _ => {}
        }
        i += 1;
        let done = join_all(
            batch
                .into_iter()
                .map(|(op, node, term, primary)| async move {
                    let outcome = nodes
                        .command(node, op, term, primary.map(String::as_str))
                        .await;
                    match &outcome {
                        Ok(_) => tracing::info!(op, %node, term, "node command done"),
                        Err(e) => {
                            tracing::warn!(op, %node, term, error = %e, "node command failed")
                        }
                    }
                    CommandResult {
                        op,
                        node: node.clone(),
                        term,
                        primary: primary.cloned(),
                        outcome,
                    }
                }),
        )
        .await;
        promote_failed |= done.iter().any(|r| r.op == "promote" && r.outcome.is_err());
        results.extend(done);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::AckLevel;

    #[test]
    fn status_json_becomes_an_observation() {
        let s: NodeStatus = serde_json::from_str(
            r#"{"node":"n2","role":"replica","term":3,"primary":"n1","following":"n1","last_log_index":40,
                "last_log_term":3,"applied_index":40,"ready":true,"switchover_request":{"to":"n3","at_ms":5},
                "commit_by_ack":{"async":40,"one":40,"quorum":39,"all":38}}"#,
        )
        .unwrap();
        let o = observation(&s, "n2", None);
        assert_eq!(
            (o.role, o.term, o.log_position(), o.following.as_deref()),
            (Role::Replica, 3, (3, 40), Some("n1"))
        );
        assert_eq!(
            s.switchover_request,
            Some(SwitchoverRequest {
                to: Some("n3".into()),
                at_ms: 5
            })
        );
        assert_eq!(s.commit_by_ack.map(|c| c.at(AckLevel::Quorum)), Some(39));
        assert!(!unreachable("n1", Some(1)).reachable);
    }
}
