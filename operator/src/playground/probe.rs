//! Probing every running node's `/v1/status` at once, sub-second, into the probe round the
//! coordinator runtime takes in (which keeps the failure clocks).

use futures_util::future::join_all;

use super::{Member, now_ms};
use crate::coordinator::Probe;
use crate::nodes::NodeClient;

/// Probes all members at once, with the node client's short timeout.
pub struct Prober {
    client: NodeClient,
}

impl Prober {
    pub fn new(client: NodeClient) -> Prober {
        Prober { client }
    }

    /// One round over `members`, in their order. `restarts`: how often the playground restarted
    /// each node's process.
    pub async fn probe(&self, members: &[Member], restarts: impl Fn(&str) -> u64) -> Vec<Probe> {
        let sent_ms = now_ms();
        let client = &self.client;
        let answers = join_all(members.iter().map(|m| async move {
            let answer = client.status(&m.url).await;
            (answer, now_ms())
        }))
        .await;
        members
            .iter()
            .zip(answers)
            .map(|(m, (answer, answered_ms))| {
                let (status, error, refused) = match answer {
                    Ok(s) => (Some(s), None, false),
                    Err(e) => (None, Some(e.to_string()), e.refused()),
                };
                Probe {
                    name: m.name.clone(),
                    healthy: status.as_ref().is_some_and(|s| s.ready),
                    // Killed or stopped: a restarted process would come back without its role.
                    gone: refused,
                    status,
                    error,
                    sent_ms,
                    answered_ms,
                    restarts: restarts(&m.name),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_node_that_does_not_answer_is_unhealthy_with_the_reason() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let member = Member {
            name: "n1".into(),
            url: format!("http://127.0.0.1:{port}"),
            port,
            shard: 0,
        };
        let prober = Prober::new(NodeClient::new("s", Duration::from_millis(500)));
        let probes = prober.probe(&[member], |_| 2).await;
        let p = &probes[0];
        assert_eq!((p.name.as_str(), p.healthy, p.restarts), ("n1", false, 2));
        assert!(p.status.is_none() && p.error.is_some());
        assert!(p.sent_ms <= p.answered_ms);
    }
}
