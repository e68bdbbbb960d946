//! A connection held open to every node (its cluster stream, `GET /v1/cluster/stream`), so the
//! loop hears of a node at once instead of at its next probe: when a connection opens (a node
//! came up) and when one that worked ends (the node's process died and the kernel closed its
//! socket, or its stream went silent for [`IDLE`]). Each wakes the loop, which probes every node
//! and decides as always: a link only says *look now*, never what happened, so a node that
//! hangs is still judged by the probes and the detection window. The node resends the map once a
//! second, which is the heartbeat a silent link is measured against.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::nodes::NodeClient;

/// A link that delivers nothing for this long is taken as broken (the node sends every second).
const IDLE: Duration = Duration::from_secs(3);
/// The longest pause between two failed attempts to open a link (the node is restarting).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The links of every node the loop coordinates.
pub struct Links {
    client: NodeClient,
    wake: Arc<Notify>,
    open: BTreeMap<String, JoinHandle<()>>,
}

impl Links {
    pub fn new(client: NodeClient) -> Links {
        Links {
            client,
            wake: Arc::new(Notify::new()),
            open: BTreeMap::new(),
        }
    }

    /// Notified when a link opened or broke.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Holds a link to each of `urls` and to no other node.
    pub fn keep(&mut self, urls: BTreeSet<String>) {
        self.open.retain(|url, task| {
            let keep = urls.contains(url);
            if !keep {
                task.abort();
            }
            keep
        });
        for url in urls {
            if !self.open.contains_key(&url) {
                let task = tokio::spawn(hold(self.client.clone(), url.clone(), self.wake.clone()));
                self.open.insert(url, task);
            }
        }
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        for task in self.open.values() {
            task.abort();
        }
    }
}

/// One node's link, opened again and again until aborted.
async fn hold(client: NodeClient, url: String, wake: Arc<Notify>) {
    let mut failures: u32 = 0;
    loop {
        if let Ok(mut events) = client.cluster_stream(&url).await {
            let mut heard = false;
            while let Ok(Some(Ok(_))) = tokio::time::timeout(IDLE, events.next()).await {
                if !heard {
                    heard = true;
                    failures = 0;
                    wake.notify_one();
                }
            }
            if heard {
                wake.notify_one();
                // A working link broke: try again at once (a restarted node is back soon).
                continue;
            }
        }
        failures = failures.saturating_add(1);
        let backoff = Duration::from_millis(25 << failures.min(6)).min(MAX_BACKOFF);
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A node that serves its cluster stream once: one event, then, when `die` fires, its process
    /// "dies" (the connection closes without ending the stream, nothing listens any more).
    async fn node_that_dies(die: tokio::sync::oneshot::Receiver<()>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            let event = "event: cluster\ndata: {}\n\n";
            let chunk = format!("{:x}\r\n{event}\r\n", event.len());
            conn.write_all(head.as_bytes()).await.unwrap();
            conn.write_all(chunk.as_bytes()).await.unwrap();
            let _ = die.await;
            drop(conn);
            drop(listener);
        });
        url
    }

    #[tokio::test]
    async fn a_link_wakes_the_loop_when_it_opens_and_when_it_breaks() {
        let (kill, die) = tokio::sync::oneshot::channel();
        let url = node_that_dies(die).await;
        let mut links = Links::new(NodeClient::new("s", Duration::from_millis(500)));
        let wake = links.wake();
        links.keep([url.clone()].into());
        let deadline = Duration::from_secs(30);
        tokio::time::timeout(deadline, wake.notified())
            .await
            .expect("woken when the link opened");
        kill.send(()).unwrap();
        tokio::time::timeout(deadline, wake.notified())
            .await
            .expect("woken when the link broke");
        links.keep(BTreeSet::new());
        assert!(
            links.open.is_empty(),
            "a node no longer coordinated has no link"
        );
    }
}
