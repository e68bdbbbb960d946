//! Resumable push: watches and topic streams that survive the loss of their node.
//!
//! A stream keeps the id of the last event it delivered (its position). When the connection ends,
//! breaks, or goes silent for longer than the idle timeout (the server sends at least a
//! `progress` event every few seconds), it reconnects — to another node when the silent one
//! stopped answering — and asks to resume after that position: no gap and no duplicate, across
//! failovers too. When the server no longer has that history it says `reset`, which the stream
//! hands to the application (re-read what you watch, then go on).
//!
//! The changes of one log entry (a transaction) are delivered together: the server marks all but
//! the last with `more`, and the stream holds them until the last arrives, so a connection cut
//! inside an entry delivers nothing of it and the resumed stream sends the whole entry.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::calls::{self, Call};
use crate::client::Client;
use crate::error::Error;
use crate::sse::Event;
use crate::transport::EventStream;
use crate::types::{Message, WatchData};

/// A stream with no event for this long is taken as lost (the server sends one every 5 s).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A record changed.
    Change(Change),
    /// Changes after the stream's position are gone on the server (compacted, or before the
    /// node's start). Re-read what you watch (with session consistency at `position`, say), then
    /// keep reading: the stream goes on after `position`.
    Reset { position: String, message: String },
}

/// One record change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `put`, `delete` or `expire`.
    pub kind: String,
    pub key: String,
    /// The value after a put.
    pub value: Option<Value>,
    pub version: u64,
    /// When the change was made (the primary's clock).
    pub modified_ms: u64,
    /// After a put: when the key was created.
    pub created_ms: Option<u64>,
    /// The stream's position up to this change: resume after it with `WatchOptions::from`. For
    /// all but the last change of a transaction it is the position before the transaction.
    pub position: String,
}

/// What a topic stream delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicEvent {
    Message {
        topic: String,
        message: Message,
        /// The stream's position (every topic's next offset) after this message.
        position: String,
    },
    /// Retention dropped messages of `topic` the stream had not delivered; it goes on at
    /// `first_offset`.
    Reset {
        topic: String,
        first_offset: u64,
        message: String,
        position: String,
    },
}

/// Which keys a watch follows and where it starts.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Key prefixes (none: every key).
    pub prefixes: Vec<String>,
    /// Resume after this position (a `Change::position` or `WatchStream::position`); `None`
    /// starts at the present.
    pub from: Option<String>,
}

/// Record changes, resumed across node losses.
pub struct WatchStream {
    inner: Resumable,
}

/// Topic messages, resumed across node losses.
pub struct TopicStream {
    inner: Resumable,
}

#[derive(Deserialize)]
struct ResetData {
    #[serde(default)]
    message: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    first_offset: u64,
}

#[derive(Deserialize)]
struct TopicMessage {
    topic: String,
    #[serde(flatten)]
    message: Message,
}

fn parse<T: serde::de::DeserializeOwned>(ev: &Event) -> Result<T, Error> {
    serde_json::from_str(&ev.data)
        .map_err(|e| Error::InvalidResponse(format!("bad {} event ({e}): {}", ev.event, ev.data)))
}

impl WatchStream {
    pub(crate) fn new(client: Client, opts: WatchOptions) -> WatchStream {
        let prefixes = opts.prefixes;
        let call = move |from: Option<&str>| calls::watch_from(&prefixes, from);
        WatchStream {
            inner: Resumable::new(client, Box::new(call), opts.from),
        }
    }

    /// The next change or reset. It waits as long as nothing changes; an error means no node
    /// could be reached within the retry deadline (calling again tries again).
    pub async fn next(&mut self) -> Result<WatchEvent, Error> {
        let ev = self.inner.next().await?;
        let position = ev.id.clone().unwrap_or_default();
        if ev.event == "reset" {
            let r: ResetData = parse(&ev)?;
            return Ok(WatchEvent::Reset {
                position,
                message: r.message,
            });
        }
        let d: WatchData = parse(&ev)?;
        Ok(WatchEvent::Change(Change {
            kind: ev.event,
            key: d.key,
            value: d.value,
            version: d.version,
            modified_ms: d.modified_ms,
            created_ms: d.created_ms,
            position,
        }))
    }

    /// Where the stream stands: resume after it later with `WatchOptions::from`.
    pub fn position(&self) -> Option<&str> {
        self.inner.position.as_deref()
    }

    /// The node serving the stream now (`None` between connections).
    pub fn endpoint(&self) -> Option<&str> {
        self.inner.endpoint()
    }

    /// Connects and waits for the stream's first position: changes made after this returns are
    /// delivered (a watch without `from` starts at the present, which is only fixed once open).
    pub async fn wait_open(&mut self) -> Result<(), Error> {
        self.inner.wait_open().await
    }

    /// How long a silent connection is trusted before the stream moves to another node.
    pub fn idle_timeout(mut self, d: Duration) -> WatchStream {
        self.inner.idle = d;
        self
    }
}

impl TopicStream {
    pub(crate) fn new(client: Client, topics: Vec<String>, from: Option<String>) -> TopicStream {
        let call = move |from: Option<&str>| calls::streams(&topics, from);
        TopicStream {
            inner: Resumable::new(client, Box::new(call), from),
        }
    }

    /// The next message or reset (see [`WatchStream::next`]).
    pub async fn next(&mut self) -> Result<TopicEvent, Error> {
        let ev = self.inner.next().await?;
        let position = ev.id.clone().unwrap_or_default();
        if ev.event == "reset" {
            let r: ResetData = parse(&ev)?;
            return Ok(TopicEvent::Reset {
                topic: r.topic,
                first_offset: r.first_offset,
                message: r.message,
                position,
            });
        }
        let m: TopicMessage = parse(&ev)?;
        Ok(TopicEvent::Message {
            topic: m.topic,
            message: m.message,
            position,
        })
    }

    /// Every topic's next offset (`a:18,b:5`): resume there later with `Client::stream_topics`.
    pub fn position(&self) -> Option<&str> {
        self.inner.position.as_deref()
    }

    /// The node serving the stream now (`None` between connections).
    pub fn endpoint(&self) -> Option<&str> {
        self.inner.endpoint()
    }

    pub fn idle_timeout(mut self, d: Duration) -> TopicStream {
        self.inner.idle = d;
        self
    }
}

type MakeCall = Box<dyn Fn(Option<&str>) -> Result<Call, Error> + Send + Sync>;

/// The reconnecting event reader under both streams.
struct Resumable {
    client: Client,
    call: MakeCall,
    position: Option<String>,
    /// The open stream and the endpoint serving it.
    open: Option<(EventStream, String)>,
    idle: Duration,
    /// Changes of a log entry whose last change has not arrived.
    partial: Vec<Event>,
    ready: VecDeque<Event>,
    /// Connections in a row that ended before delivering anything.
    fruitless: u32,
    fruitless_since: Option<Instant>,
    /// The server said the stream's range moved to another shard: reconnect.
    moved: bool,
    /// `moved` events in a row with nothing delivered between them (the node that answers has
    /// not heard of the new owner yet): the reconnections back off.
    moves: u32,
}

impl Resumable {
    fn new(client: Client, call: MakeCall, from: Option<String>) -> Resumable {
        Resumable {
            client,
            call,
            position: from,
            open: None,
            idle: DEFAULT_IDLE_TIMEOUT,
            partial: Vec::new(),
            ready: VecDeque::new(),
            fruitless: 0,
            fruitless_since: None,
            moved: false,
            moves: 0,
        }
    }

    async fn wait_open(&mut self) -> Result<(), Error> {
        while self.position.is_none() && self.ready.is_empty() {
            if self.open.is_none() {
                let call = (self.call)(None)?;
                self.open = Some(self.client.open_stream_at(&call).await?);
            }
            let Some((events, _)) = self.open.as_mut() else {
                continue;
            };
            match tokio::time::timeout(self.idle, events.next()).await {
                Ok(Some(Ok(ev))) => {
                    self.take(ev);
                    if self.moved {
                        self.follow_move().await;
                    }
                }
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(None) | Err(_) => {
                    return Err(Error::Timeout(
                        "the stream closed or stayed silent before its first event".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn endpoint(&self) -> Option<&str> {
        self.open.as_ref().map(|(_, e)| e.as_str())
    }

    /// The next complete event other than `progress` (which only moves the position).
    async fn next(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(ev);
            }
            if self.open.is_none() {
                self.pause_after_fruitless().await?;
                let call = (self.call)(self.position.as_deref())?;
                let opened = self.client.open_stream_at(&call).await?;
                self.fruitless += 1;
                self.open = Some(opened);
            }
            let Some((events, _)) = self.open.as_mut() else {
                continue;
            };
            match tokio::time::timeout(self.idle, events.next()).await {
                Ok(Some(Ok(ev))) => {
                    (self.fruitless, self.fruitless_since) = (0, None);
                    self.take(ev);
                    if self.moved {
                        self.follow_move().await;
                    }
                }
                // Ended or broken: resume (the node's loss shows when reconnecting).
                Ok(Some(Err(_)) | None) => self.lost(),
                // Silent: the node stopped without closing; go elsewhere.
                Err(_) => {
                    if let Some((_, endpoint)) = self.open.take() {
                        self.client.move_away_from(&endpoint);
                    }
                    self.lost();
                }
            }
        }
    }

    fn take(&mut self, ev: Event) {
        if ev.event == "moved" {
            // The shard gave the stream's range away after sending everything it had of it:
            // resume exactly there, at the new owner (nothing of an unfinished entry is pending:
            // the event follows whole entries).
            #[derive(Deserialize)]
            struct Moved {
                resume: String,
            }
            if let Ok(m) = serde_json::from_str::<Moved>(&ev.data) {
                self.position = Some(m.resume);
            } else if ev.id.is_some() {
                self.position = ev.id;
            }
            self.moved = true;
            return;
        }
        if ev.event == "progress" {
            self.position = ev.id;
            return;
        }
        if has_more(&ev) {
            self.partial.push(ev);
            return;
        }
        self.moves = 0;
        self.position = ev.id.clone();
        self.ready.extend(self.partial.drain(..));
        self.ready.push_back(ev);
    }

    /// After a `moved` event: learns the new owner from the node that said so, then reconnects
    /// (any node routes the stream to the range's owner; the map only saves a hop).
    async fn follow_move(&mut self) {
        self.moved = false;
        self.moves += 1;
        if let Some((_, endpoint)) = self.open.take() {
            let _ = self.client.refresh_map(&endpoint).await;
        }
        self.lost();
        if self.moves > 1 {
            let policy = self.client.retry_policy();
            tokio::time::sleep(policy.backoff(self.moves - 1, crate::random::unit())).await;
        }
    }

    /// The connection is gone: what was held of an unfinished entry comes again on resuming.
    fn lost(&mut self) {
        self.open = None;
        self.partial.clear();
    }

    /// Connections that end at once must not turn into a busy loop: back off, and give up after
    /// the client's retry deadline without a single event.
    async fn pause_after_fruitless(&mut self) -> Result<(), Error> {
        if self.fruitless == 0 {
            return Ok(());
        }
        let since = *self.fruitless_since.get_or_insert_with(Instant::now);
        let policy = self.client.retry_policy();
        if since.elapsed() > policy.deadline {
            self.fruitless_since = None;
            self.fruitless = 0;
            return Err(Error::Timeout(format!(
                "the stream's connections kept ending without an event for {:?}",
                policy.deadline
            )));
        }
        tokio::time::sleep(policy.backoff(self.fruitless, crate::random::unit())).await;
        Ok(())
    }
}

/// Whether an event is not the last change of its log entry.
fn has_more(ev: &Event) -> bool {
    #[derive(Deserialize)]
    struct More {
        #[serde(default)]
        more: bool,
    }
    ev.data.contains("\"more\"") && serde_json::from_str::<More>(&ev.data).is_ok_and(|m| m.more)
}
