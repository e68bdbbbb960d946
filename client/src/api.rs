//! Typed methods for every API of docs/API.md.

use serde_json::Value;

use crate::calls;
use crate::client::Client;
use crate::error::Error;
use crate::sse::Event;
use crate::transport::EventStream;
use crate::types::*;

impl Client {
    pub async fn put(
        &self,
        key: &str,
        value: &Value,
        opts: &PutOptions,
    ) -> Result<PutResult, Error> {
        self.execute(&calls::put(key, value, opts)?).await?.parse()
    }

    /// The record, or `Ok(None)` when the key does not exist (or expired).
    pub async fn get(
        &self,
        key: &str,
        consistency: Option<Consistency>,
    ) -> Result<Option<Record>, Error> {
        match self.execute(&calls::get(key, consistency)?).await {
            Ok(r) => r.parse().map(Some),
            Err(e) if e.code() == Some("not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&self, key: &str, opts: &DeleteOptions) -> Result<DeleteResult, Error> {
        self.execute(&calls::delete(key, opts)?).await?.parse()
    }

    pub async fn incr(
        &self,
        key: &str,
        delta: i64,
        min: Option<i64>,
        max: Option<i64>,
        opts: &WriteOptions,
    ) -> Result<IncrResult, Error> {
        self.execute(&calls::incr(key, delta, min, max, opts)?)
            .await?
            .parse()
    }

    /// One page; pass `next` back as `start_after` for the following one.
    pub async fn list(&self, opts: &ListOptions) -> Result<ListPage, Error> {
        self.execute(&calls::list(opts)).await?.parse()
    }

    pub async fn create_topic(
        &self,
        topic: &str,
        retention: &Retention,
        opts: &WriteOptions,
    ) -> Result<TopicCreated, Error> {
        self.execute(&calls::create_topic(topic, retention, opts)?)
            .await?
            .parse()
    }

    pub async fn delete_topic(
        &self,
        topic: &str,
        opts: &WriteOptions,
    ) -> Result<TopicDeleted, Error> {
        self.execute(&calls::delete_topic(topic, opts)?)
            .await?
            .parse()
    }

    pub async fn list_topics(&self) -> Result<TopicList, Error> {
        self.execute(&calls::list_topics()).await?.parse()
    }

    /// Publishes one message; returns its offset.
    pub async fn publish(
        &self,
        topic: &str,
        value: &Value,
        opts: &WriteOptions,
    ) -> Result<u64, Error> {
        let p: Published = self
            .execute(&calls::publish(topic, value, opts)?)
            .await?
            .parse()?;
        Ok(p.offset)
    }

    /// Publishes several messages in one log entry; returns their offsets.
    pub async fn publish_batch(
        &self,
        topic: &str,
        values: &[Value],
        opts: &WriteOptions,
    ) -> Result<Vec<u64>, Error> {
        let p: PublishedBatch = self
            .execute(&calls::publish_batch(topic, values, opts)?)
            .await?
            .parse()?;
        Ok(p.offsets)
    }

    pub async fn subscribe(
        &self,
        topic: &str,
        subscription: &str,
        start: Option<Start>,
        opts: &WriteOptions,
    ) -> Result<Subscribed, Error> {
        self.execute(&calls::subscribe(topic, subscription, start, opts)?)
            .await?
            .parse()
    }

    pub async fn unsubscribe(
        &self,
        topic: &str,
        subscription: &str,
        opts: &WriteOptions,
    ) -> Result<Unsubscribed, Error> {
        self.execute(&calls::unsubscribe(topic, subscription, opts)?)
            .await?
            .parse()
    }

    /// Takes up to `max` messages and advances the cursor. To get the same messages again
    /// after a lost response, retry with the same `opts.idempotency_key`.
    pub async fn pull(
        &self,
        topic: &str,
        subscription: &str,
        max: Option<u32>,
        wait_ms: Option<u64>,
        opts: &WriteOptions,
    ) -> Result<Pulled, Error> {
        self.execute(&calls::pull(topic, subscription, max, wait_ms, opts)?)
            .await?
            .parse()
    }

    pub async fn read(
        &self,
        topic: &str,
        from: Option<u64>,
        limit: Option<u32>,
        consistency: Option<Consistency>,
    ) -> Result<ReadResult, Error> {
        self.execute(&calls::read(topic, from, limit, consistency)?)
            .await?
            .parse()
    }

    /// Streams a topic's committed messages from `from` (the next offset when `None`).
    pub async fn stream(&self, topic: &str, from: Option<u64>) -> Result<MessageStream, Error> {
        let events = self.open_stream(&calls::stream(topic, from)?).await?;
        Ok(MessageStream { events })
    }

    /// Streams changes to keys under `prefix` (all keys when `None`).
    pub async fn watch(&self, prefix: Option<&str>) -> Result<WatchStream, Error> {
        let events = self.open_stream(&calls::watch(prefix)).await?;
        Ok(WatchStream { events })
    }

    pub async fn status(&self) -> Result<Status, Error> {
        self.execute(&calls::status()).await?.parse()
    }

    /// The cluster map as the node that answers knows it: which shard owns each slot, and every
    /// shard's members, primary and term.
    pub async fn cluster_map(&self) -> Result<rcluster_proto::ClusterMap, Error> {
        self.execute(&calls::cluster()).await?.parse()
    }
}

fn parse_event<T: serde::de::DeserializeOwned>(ev: &Event) -> Result<T, Error> {
    serde_json::from_str(&ev.data)
        .map_err(|e| Error::InvalidResponse(format!("bad {} event ({e}): {}", ev.event, ev.data)))
}

/// Messages of a topic stream.
pub struct MessageStream {
    events: EventStream,
}

impl MessageStream {
    /// The next message; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<Result<Message, Error>> {
        loop {
            let ev = match self.events.next().await? {
                Ok(ev) => ev,
                Err(e) => return Some(Err(e.into())),
            };
            if ev.event == "message" {
                return Some(parse_event(&ev));
            }
        }
    }

    /// The raw events underneath.
    pub fn into_events(self) -> EventStream {
        self.events
    }
}

/// What happened to a key, from `watch`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// `put`, `delete` or `expire`.
    pub kind: String,
    /// The log index (the event id).
    pub index: Option<u64>,
    pub data: WatchData,
}

/// Changes from `watch`.
pub struct WatchStream {
    events: EventStream,
}

impl WatchStream {
    /// The next change; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, Error>> {
        let ev = match self.events.next().await? {
            Ok(ev) => ev,
            Err(e) => return Some(Err(e.into())),
        };
        Some(parse_event(&ev).map(|data| WatchEvent {
            index: ev.id.as_deref().and_then(|i| i.parse().ok()),
            kind: ev.event,
            data,
        }))
    }

    pub fn into_events(self) -> EventStream {
        self.events
    }
}
