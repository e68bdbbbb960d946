//! Probing every node's `/v1/status` and remembering, per node, since when it has been failing
//! (unreachable or not ready) and when it last answered ready. The failover decision needs the
//! first; the failover report measures from the second.

use futures_util::future::join_all;

use super::now_ms;
use crate::failover::Observation;
use crate::nodes::{self, NodeClient, NodeStatus};

/// What the playground knows about one node after the latest probe.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub name: String,
    pub url: String,
    /// The latest answer; `None` when the latest probe failed.
    pub status: Option<NodeStatus>,
    /// The last answer ever received (log positions of a node that went silent).
    pub last_status: Option<NodeStatus>,
    pub error: Option<String>,
    /// When the first failing probe in the current run of failures was sent.
    pub unhealthy_since_ms: Option<u64>,
    /// When a probe last found the node answering and ready.
    pub last_ok_ms: Option<u64>,
}

impl Health {
    pub fn reachable(&self) -> bool {
        self.status.is_some()
    }

    pub fn ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.ready)
    }

    /// The failover input. An unreachable node keeps the log position it was last seen at.
    pub fn observation(&self) -> Observation {
        match &self.status {
            Some(s) => s.observation(&self.name, self.unhealthy_since_ms),
            None => {
                let mut o = nodes::unreachable(&self.name, self.unhealthy_since_ms);
                if let Some(last) = &self.last_status {
                    o.last_log_index = last.last_log_index;
                    o.last_log_term = last.last_log_term;
                    o.applied_index = last.applied_index;
                }
                o
            }
        }
    }

    fn record(&mut self, sent_ms: u64, answered_ms: u64, result: Result<NodeStatus, String>) {
        match result {
            Ok(s) => {
                if s.ready {
                    self.unhealthy_since_ms = None;
                    self.last_ok_ms = Some(answered_ms);
                } else {
                    self.unhealthy_since_ms.get_or_insert(sent_ms);
                }
                self.error = None;
                self.last_status = Some(s.clone());
                self.status = Some(s);
            }
            Err(e) => {
                self.unhealthy_since_ms.get_or_insert(sent_ms);
                self.error = Some(e);
                self.status = None;
            }
        }
    }
}

/// Probes all members at once, with the node client's short timeout.
pub struct Prober {
    client: NodeClient,
    pub health: Vec<Health>,
}

impl Prober {
    /// `members`: (name, base URL) in member order.
    pub fn new(client: NodeClient, members: &[(String, String)]) -> Prober {
        let health = members
            .iter()
            .map(|(name, url)| Health {
                name: name.clone(),
                url: url.clone(),
                ..Health::default()
            })
            .collect();
        Prober { client, health }
    }

    pub async fn probe(&mut self) {
        let sent = now_ms();
        let client = &self.client;
        let answers = join_all(self.health.iter().map(|h| async move {
            let r = client.status(&h.url).await.map_err(|e| e.to_string());
            (r, now_ms())
        }))
        .await;
        for (h, (result, answered)) in self.health.iter_mut().zip(answers) {
            h.record(sent, answered, result);
        }
    }

    /// Starts `name`'s failure clock afresh: a node just promoted is judged from its promotion,
    /// not from the failures it had while fenced during the election (or it would be deposed
    /// at once if it is not ready at the very next probe).
    pub fn forget_failures(&mut self, name: &str) {
        if let Some(h) = self.health.iter_mut().find(|h| h.name == name) {
            h.unhealthy_since_ms = None;
        }
    }

    pub fn get(&self, name: &str) -> Option<&Health> {
        self.health.iter().find(|h| h.name == name)
    }

    pub fn observations(&self) -> Vec<Observation> {
        self.health.iter().map(Health::observation).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(ready: bool, index: u64) -> NodeStatus {
        NodeStatus {
            node: "n1".into(),
            role: "primary".into(),
            term: 2,
            last_log_term: 2,
            last_log_index: index,
            ready,
            ..NodeStatus::default()
        }
    }

    #[test]
    fn failures_are_timed_from_the_first_failing_probe() {
        let mut h = Health {
            name: "n1".into(),
            ..Health::default()
        };
        h.record(100, 105, Ok(status(true, 7)));
        assert_eq!((h.unhealthy_since_ms, h.last_ok_ms), (None, Some(105)));
        h.record(200, 300, Err("refused".into()));
        h.record(300, 301, Ok(status(false, 7)));
        h.record(400, 401, Err("refused".into()));
        assert_eq!((h.unhealthy_since_ms, h.last_ok_ms), (Some(200), Some(105)));
        let o = h.observation();
        assert!(!o.reachable);
        assert_eq!(
            (o.log_position(), o.unhealthy_since_ms),
            ((2, 7), Some(200))
        );
        h.record(500, 502, Ok(status(true, 9)));
        assert_eq!((h.unhealthy_since_ms, h.last_ok_ms), (None, Some(502)));
        assert!(h.observation().reachable);
    }

    #[test]
    fn a_promoted_node_starts_with_a_clean_slate() {
        let members = [("n1".to_string(), "http://127.0.0.1:1".to_string())];
        let mut p = Prober::new(
            NodeClient::new("s", std::time::Duration::from_secs(1)),
            &members,
        );
        p.health[0].record(100, 101, Ok(status(false, 1)));
        assert_eq!(p.get("n1").unwrap().unhealthy_since_ms, Some(100));
        p.forget_failures("n1");
        assert_eq!(p.get("n1").unwrap().unhealthy_since_ms, None);
        p.health[0].record(300, 301, Ok(status(false, 1)));
        assert_eq!(p.get("n1").unwrap().unhealthy_since_ms, Some(300));
    }
}
