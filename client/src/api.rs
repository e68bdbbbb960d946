//! Typed methods for every API of docs/API.md.

use serde_json::Value;

use crate::calls;
use crate::client::Client;
use crate::error::Error;
use crate::push::{TopicStream, WatchOptions, WatchStream};
use crate::txn::{Txn, TxnResult};
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

    /// Streams a topic's committed messages from offset `from` (its end when `None`), resumed
    /// across node losses.
    pub fn stream(&self, topic: &str, from: Option<u64>) -> TopicStream {
        TopicStream::new(
            self.clone(),
            vec![topic.to_string()],
            from.map(|f| format!("{topic}:{f}")),
        )
    }

    /// One stream over several topics, in log order, from `from` (a position a stream gave:
    /// `TopicStream::position`), resumed across node losses.
    pub fn stream_topics(&self, topics: &[&str], from: Option<&str>) -> TopicStream {
        TopicStream::new(
            self.clone(),
            topics.iter().map(|t| t.to_string()).collect(),
            from.map(str::to_string),
        )
    }

    /// Streams changes to keys under `prefix` (all keys when `None`) from now on, resumed
    /// across node losses.
    pub fn watch(&self, prefix: Option<&str>) -> WatchStream {
        self.watch_with(WatchOptions {
            prefixes: prefix.map(str::to_string).into_iter().collect(),
            from: None,
        })
    }

    /// A watch over several prefixes, or resumed from a position.
    pub fn watch_with(&self, opts: WatchOptions) -> WatchStream {
        WatchStream::new(self.clone(), opts)
    }

    /// Applies a transaction (see [`Txn`]).
    pub async fn txn(&self, txn: &Txn, opts: &WriteOptions) -> Result<TxnResult, Error> {
        self.execute(&calls::txn(txn, opts)?).await?.parse()
    }

    /// One page of the records under several prefixes, newest first.
    pub async fn merged(&self, opts: &MergedOptions) -> Result<MergedPage, Error> {
        self.execute(&calls::merged(opts)?).await?.parse()
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
