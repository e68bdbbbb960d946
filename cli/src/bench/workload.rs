//! What one bench request is, per API, and the unmeasured work that keeps a run honest: a
//! `delete` deletes a key that exists (the worker puts it first when it has none left), a
//! `delete_topic` or `unsubscribe` removes what the worker created, a `pull` finds messages (the
//! backlog is topped up by batch publishes), and `stream`/`watch` measure from the write to its
//! delivery on the worker's own open stream.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use rcluster_client::calls::{self, Call};
use rcluster_client::types::*;
use rcluster_client::{
    Client, Error, TopicEvent, TopicStream, WatchEvent, WatchOptions, WatchStream, random,
};

use super::api::{BenchApi, Mix};

/// The shared subscription `pull` drains.
pub const SUBSCRIPTION: &str = "bench";
/// Messages per refill of the `pull` backlog (one log entry).
const REFILL_BATCH: usize = 100;
/// Key spaces up to this size get every request of a keyed API built before the run (a few
/// tens of megabytes at most); larger ones build each request when it is sent.
const PREBUILT_KEYS: u64 = 50_000;

/// Everything fixed for the run.
pub struct Plan {
    pub mix: Mix,
    /// Each value, serialized once.
    pub value: Value,
    pub keys: u64,
    pub key_prefix: String,
    pub topic: String,
    pub pull_max: u32,
    pub ack: Option<AckLevel>,
    pub consistency: Option<Consistency>,
    /// How long `stream` and `watch` wait for a delivery.
    pub delivery_timeout: Duration,
    /// Messages believed to wait on the `pull` subscription (may go below 0 in a race).
    pub backlog: AtomicI64,
    /// Unmeasured requests made to keep the run honest, by kind.
    pub refills: Refills,
    /// The requests of [`Plan::call`], built before the run ([`Plan::prebuild`]): per API, one
    /// per key, or the one request of an API without a key.
    pub prebuilt: BTreeMap<BenchApi, Vec<Call>>,
}

#[derive(Debug, Default)]
pub struct Refills {
    pub puts_for_delete: AtomicU64,
    pub publishes_for_pull: AtomicU64,
    pub creates_for_delete_topic: AtomicU64,
    pub subscribes_for_unsubscribe: AtomicU64,
}

impl Refills {
    pub fn to_json(&self) -> Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "puts_for_delete": n(&self.puts_for_delete),
            "publish_batches_for_pull": n(&self.publishes_for_pull),
            "creates_for_delete_topic": n(&self.creates_for_delete_topic),
            "subscribes_for_unsubscribe": n(&self.subscribes_for_unsubscribe),
        })
    }
}

impl Plan {
    /// The key of record `i` for `api`: counters live apart from the other records, so `incr`
    /// never meets a string.
    pub fn key(&self, api: BenchApi, i: u64) -> String {
        match api {
            BenchApi::Incr => format!("{}n/{i}", self.key_prefix),
            // One hash tag per transaction's pair of keys (`/v` and `/n` are appended).
            BenchApi::Txn => format!("{{{}t{i}}}", self.key_prefix),
            _ => format!("{}{i}", self.key_prefix),
        }
    }

    fn write(&self) -> WriteOptions {
        WriteOptions {
            ack: self.ack,
            idempotency_key: None,
        }
    }

    fn put_opts(&self) -> PutOptions {
        PutOptions {
            write: self.write(),
            ..Default::default()
        }
    }

    /// The request of an API that needs no state of the worker, for a random key: built before
    /// the run when it could be.
    pub fn call(&self, api: BenchApi) -> Result<Cow<'_, Call>, Error> {
        let i = random::next_u64() % self.keys;
        match self.prebuilt.get(&api) {
            Some(calls) if !calls.is_empty() => Ok(Cow::Borrowed(&calls[i as usize % calls.len()])),
            _ => self.build(api, i).map(Cow::Owned),
        }
    }

    /// Builds the requests of [`Plan::call`] for the APIs of the mix, so that the workers only
    /// send them: per key for the keyed APIs (when there are at most [`PREBUILT_KEYS`]), once for
    /// the others. Values share one body. An API whose request cannot be built is left to fail
    /// when it is sent.
    pub fn prebuild(&mut self) {
        use BenchApi::*;
        let mut prebuilt = BTreeMap::new();
        for (api, _) in &self.mix.0 {
            let keys = match api {
                Put | Get | Incr | Txn if self.keys <= PREBUILT_KEYS => self.keys,
                List | ListTopics | Publish | Read | Status => 1,
                _ => continue,
            };
            // The first request's body, shared by every later one that has the same.
            let mut shared = None;
            let built: Result<Vec<Call>, Error> = (0..keys)
                .map(|i| {
                    let mut c = self.build(*api, i)?;
                    match &shared {
                        None => shared = c.body.clone(),
                        Some(b) if c.body.as_ref() == Some(b) => c.body = Some(b.clone()),
                        Some(_) => {}
                    }
                    Ok(c)
                })
                .collect();
            if let Ok(calls) = built {
                prebuilt.insert(*api, calls);
            }
        }
        self.prebuilt = prebuilt;
    }

    /// The request of `api` for key `i`. Only its status matters: the body is not decoded.
    fn build(&self, api: BenchApi, i: u64) -> Result<Call, Error> {
        let key = self.key(api, i);
        let w = self.write();
        let mut call = match api {
            BenchApi::Put => calls::put(&key, &self.value, &self.put_opts()),
            BenchApi::Get => calls::get(&key, self.consistency),
            BenchApi::Incr => calls::incr(&key, 1, None, None, &w),
            BenchApi::List => Ok(calls::list(&ListOptions {
                prefix: Some(self.key_prefix.clone()),
                start_after: None,
                limit: Some(10),
                consistency: self.consistency,
            })),
            BenchApi::ListTopics => Ok(calls::list_topics()),
            BenchApi::Publish => calls::publish(&self.topic, &self.value, &w),
            BenchApi::Read => calls::read(&self.topic, None, Some(10), self.consistency),
            BenchApi::Status => Ok(calls::status()),
            BenchApi::Txn => calls::txn(
                &rcluster_client::Txn::new()
                    .then(rcluster_client::TxnOp::put(
                        &format!("{key}/v"),
                        self.value.clone(),
                    ))
                    .then(rcluster_client::TxnOp::incr(&format!("{key}/n"), 1)),
                &w,
            ),
            other => Err(Error::InvalidArgument(format!(
                "{} needs the worker's state",
                other.name()
            ))),
        }?;
        call.parse_reply = false;
        Ok(call)
    }
}

/// One worker's state: what it created and may remove, its open streams.
pub struct Worker {
    pub id: usize,
    pub client: Client,
    plan: Arc<Plan>,
    seq: u64,
    keys_to_delete: Vec<String>,
    topics_to_delete: Vec<String>,
    subscriptions: Vec<String>,
    stream: Option<TopicStream>,
    stream_topic_ready: bool,
    watch: Option<WatchStream>,
}

/// The time one measured request took, or why it failed.
pub type Measured = (Duration, Result<(), Error>);

impl Worker {
    pub fn new(id: usize, client: Client, plan: Arc<Plan>) -> Worker {
        Worker {
            id,
            client,
            plan,
            seq: 0,
            keys_to_delete: Vec::new(),
            topics_to_delete: Vec::new(),
            subscriptions: Vec::new(),
            stream: None,
            stream_topic_ready: false,
            watch: None,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Does the unmeasured preparation `api` needs, then one measured request. `since` is when the
    /// request was due (open loop): the latency counts from then when the worker is late.
    pub async fn step(&mut self, api: BenchApi, since: Option<Instant>) -> Measured {
        if let Err(e) = self.prepare(api).await {
            return (Duration::ZERO, Err(e));
        }
        let started = Instant::now();
        let result = self.measured(api).await;
        let from = since.map_or(started, |s| s.min(started));
        (from.elapsed(), result)
    }

    /// The unmeasured part: something to delete, messages to pull, an open stream.
    async fn prepare(&mut self, api: BenchApi) -> Result<(), Error> {
        let plan = self.plan.clone();
        let w = plan.write();
        match api {
            BenchApi::Delete if self.keys_to_delete.is_empty() => {
                let seq = self.next_seq();
                let key = format!("{}d/{}/{seq}", plan.key_prefix, self.id);
                self.client.put(&key, &plan.value, &plan.put_opts()).await?;
                plan.refills.puts_for_delete.fetch_add(1, Ordering::Relaxed);
                self.keys_to_delete.push(key);
            }
            BenchApi::DeleteTopic if self.topics_to_delete.is_empty() => {
                let name = self.topic_name();
                self.client
                    .create_topic(&name, &Retention::default(), &w)
                    .await?;
                plan.refills
                    .creates_for_delete_topic
                    .fetch_add(1, Ordering::Relaxed);
                self.topics_to_delete.push(name);
            }
            BenchApi::Unsubscribe if self.subscriptions.is_empty() => {
                let name = self.subscription_name();
                self.client
                    .subscribe(&plan.topic, &name, Some(Start::Latest), &w)
                    .await?;
                plan.refills
                    .subscribes_for_unsubscribe
                    .fetch_add(1, Ordering::Relaxed);
                self.subscriptions.push(name);
            }
            BenchApi::Pull => {
                // Keep enough waiting that every worker's next pull finds a full batch.
                let low = i64::from(plan.pull_max) * 2;
                if plan.backlog.load(Ordering::Relaxed) < low {
                    let batch = vec![plan.value.clone(); REFILL_BATCH];
                    self.client.publish_batch(&plan.topic, &batch, &w).await?;
                    plan.backlog
                        .fetch_add(REFILL_BATCH as i64, Ordering::Relaxed);
                    plan.refills
                        .publishes_for_pull
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            BenchApi::Stream if self.stream.is_none() => {
                let topic = self.stream_topic();
                if !self.stream_topic_ready {
                    self.client
                        .create_topic(&topic, &Retention::default(), &w)
                        .await?;
                    self.stream_topic_ready = true;
                }
                // From the start of the worker's own topic: the stream connects on its first
                // read, after the publish it waits for.
                self.stream = Some(self.client.stream(&topic, Some(0)));
            }
            BenchApi::Watch if self.watch.is_none() => {
                let prefix = self.watch_prefix();
                // From the start of the log: the watch connects on its first read, after the put
                // it waits for.
                self.watch = Some(self.client.watch_with(WatchOptions {
                    prefixes: vec![prefix],
                    from: Some("0".into()),
                }));
            }
            _ => {}
        }
        Ok(())
    }

    fn topic_name(&mut self) -> String {
        let seq = self.next_seq();
        format!("{}-t{}-{seq}", self.plan.topic, self.id)
    }

    fn subscription_name(&mut self) -> String {
        let seq = self.next_seq();
        format!("b{}-{seq}", self.id)
    }

    fn stream_topic(&self) -> String {
        format!("{}-s{}", self.plan.topic, self.id)
    }

    fn watch_prefix(&self) -> String {
        format!("{}w/{}/", self.plan.key_prefix, self.id)
    }

    async fn measured(&mut self, api: BenchApi) -> Result<(), Error> {
        let plan = self.plan.clone();
        let w = plan.write();
        match api {
            BenchApi::Delete => {
                let key = self.keys_to_delete.pop().unwrap_or_default();
                let opts = DeleteOptions {
                    if_version: None,
                    write: w,
                };
                self.client.delete(&key, &opts).await.map(drop)
            }
            BenchApi::CreateTopic => {
                let name = self.topic_name();
                let r = self
                    .client
                    .create_topic(&name, &Retention::default(), &w)
                    .await;
                if r.is_ok() {
                    self.topics_to_delete.push(name);
                }
                r.map(drop)
            }
            BenchApi::DeleteTopic => {
                let name = self.topics_to_delete.pop().unwrap_or_default();
                self.client.delete_topic(&name, &w).await.map(drop)
            }
            BenchApi::Subscribe => {
                let name = self.subscription_name();
                let r = self
                    .client
                    .subscribe(&plan.topic, &name, Some(Start::Latest), &w)
                    .await;
                if r.is_ok() {
                    self.subscriptions.push(name);
                }
                r.map(drop)
            }
            BenchApi::Unsubscribe => {
                let name = self.subscriptions.pop().unwrap_or_default();
                self.client
                    .unsubscribe(&plan.topic, &name, &w)
                    .await
                    .map(drop)
            }
            BenchApi::Pull => {
                let pulled = self
                    .client
                    .pull(&plan.topic, SUBSCRIPTION, Some(plan.pull_max), Some(0), &w)
                    .await?;
                let n = pulled.messages.len() as i64;
                plan.backlog.fetch_sub(n, Ordering::Relaxed);
                Ok(())
            }
            BenchApi::Stream => self.stream_once().await,
            BenchApi::Watch => self.watch_once().await,
            other => {
                let call = plan.call(other)?;
                self.client.execute(&call).await.map(drop)
            }
        }
    }

    /// Publishes a numbered message and waits for it on the worker's own topic stream.
    async fn stream_once(&mut self) -> Result<(), Error> {
        let seq = self.next_seq();
        let topic = self.stream_topic();
        let w = self.plan.write();
        let value = json!({ "seq": seq, "pad": self.plan.value });
        self.client.publish(&topic, &value, &w).await?;
        let timeout = self.plan.delivery_timeout;
        let Some(stream) = self.stream.as_mut() else {
            return Err(Error::InvalidArgument("no open stream".into()));
        };
        let delivered = tokio::time::timeout(timeout, async {
            loop {
                match stream.next().await {
                    Ok(TopicEvent::Message { message, .. })
                        if message.value.get("seq") == Some(&json!(seq)) =>
                    {
                        return Ok(());
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        self.delivered(delivered, timeout, true)
    }

    /// Puts a key under the worker's watched prefix and waits for its change event.
    async fn watch_once(&mut self) -> Result<(), Error> {
        let seq = self.next_seq();
        let key = format!("{}{}", self.watch_prefix(), seq % 100);
        let value = json!({ "seq": seq, "pad": self.plan.value });
        let put = self.client.put(&key, &value, &self.plan.put_opts()).await?;
        let timeout = self.plan.delivery_timeout;
        let Some(watch) = self.watch.as_mut() else {
            return Err(Error::InvalidArgument("no open watch".into()));
        };
        let delivered = tokio::time::timeout(timeout, async {
            loop {
                match watch.next().await {
                    Ok(WatchEvent::Change(c)) if c.key == key && c.version >= put.version => {
                        return Ok(());
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        self.delivered(delivered, timeout, false)
    }

    /// A stream that failed or timed out is dropped: the next request opens a new one.
    fn delivered(
        &mut self,
        r: Result<Result<(), Error>, tokio::time::error::Elapsed>,
        timeout: Duration,
        stream: bool,
    ) -> Result<(), Error> {
        let r = r.unwrap_or_else(|_| {
            Err(Error::Timeout(format!(
                "no delivery within {:.1} s",
                timeout.as_secs_f64()
            )))
        });
        if r.is_err() {
            if stream {
                self.stream = None;
            } else {
                self.watch = None;
            }
        }
        r
    }

    /// Removes what the worker created and still holds (topics, subscriptions), within `limit`.
    /// Returns how many could not be removed in time.
    pub async fn clean_up(&mut self, limit: Instant) -> usize {
        let w = self.plan.write();
        while let Some(t) = self.topics_to_delete.pop() {
            if Instant::now() > limit {
                return self.topics_to_delete.len() + 1 + self.subscriptions.len();
            }
            let _ = self.client.delete_topic(&t, &w).await;
        }
        while let Some(s) = self.subscriptions.pop() {
            if Instant::now() > limit {
                return self.subscriptions.len() + 1;
            }
            let _ = self.client.unsubscribe(&self.plan.topic, &s, &w).await;
        }
        if self.stream_topic_ready && Instant::now() <= limit {
            let _ = self.client.delete_topic(&self.stream_topic(), &w).await;
        }
        0
    }
}

/// The label under which an error is counted.
pub fn error_label(e: &Error) -> String {
    match e {
        Error::Api { code, .. } => code.clone(),
        Error::Transport(_) => "transport".into(),
        Error::OutcomeUnknown { .. } => "outcome_unknown".into(),
        Error::InvalidResponse(_) => "invalid_response".into(),
        Error::InvalidArgument(_) => "invalid_argument".into(),
        Error::Timeout(_) => "timeout".into(),
    }
}
