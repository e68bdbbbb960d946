//! JSON rendering of results. Values are stored as JSON text and spliced in as-is, never re-parsed.

use crate::log::Retention;
use crate::record::{Rec, View};
use crate::state::{Message, OpResult};
use crate::txn::{TxnOp, TxnResult};

/// A tiny JSON object writer for hot paths.
pub struct Obj(String);

impl Obj {
    pub fn new() -> Self {
        // Room for a result of a short key without growing (each growth copies).
        Self::with_capacity(192)
    }
    pub fn with_capacity(bytes: usize) -> Self {
        let mut s = String::with_capacity(bytes);
        s.push('{');
        Obj(s)
    }
    fn sep(&mut self, name: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(name);
        self.0.push_str("\":");
    }
    pub fn str(mut self, name: &str, v: &str) -> Self {
        self.sep(name);
        // Most keys need no escaping: copied as they are, without serde's writer.
        if v.bytes()
            .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
        {
            self.0.reserve(v.len() + 2);
            self.0.push('"');
            self.0.push_str(v);
            self.0.push('"');
        } else {
            self.0
                .push_str(&serde_json::to_string(v).expect("strings always serialize"));
        }
        self
    }
    pub fn raw(mut self, name: &str, json: &str) -> Self {
        self.sep(name);
        self.0.push_str(json);
        self
    }
    pub fn num(mut self, name: &str, v: impl itoa::Integer) -> Self {
        self.sep(name);
        self.0.push_str(itoa::Buffer::new().format(v));
        self
    }
    pub fn opt(self, name: &str, v: Option<u64>) -> Self {
        match v {
            Some(v) => self.num(name, v),
            None => self,
        }
    }
    pub fn bool(self, name: &str, v: bool) -> Self {
        self.raw(name, if v { "true" } else { "false" })
    }
    pub fn done(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

pub fn array(items: impl IntoIterator<Item = String>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item);
    }
    out.push(']');
    out
}

pub fn record(r: &Rec) -> String {
    view(&r.view())
}

/// A record already decoded (a get reads its version from the same view).
pub fn view(r: &View) -> String {
    // The names, four numbers of up to 20 digits and the quotes: under 160 bytes.
    Obj::with_capacity(r.key.len() + r.value.len() + 160)
        .str("key", r.key)
        .raw("value", r.value)
        .num("version", r.version)
        .opt("expires_at_ms", r.expires_at_ms)
        .num("created_ms", r.created_ms)
        .num("modified_ms", r.modified_ms)
        .done()
}

pub fn message(offset: u64, m: &Message) -> String {
    message_obj(offset, &m.value, m.published_at_ms).done()
}

/// A message as a multi-topic stream sends it: with its topic.
pub fn topic_message(topic: &str, offset: u64, m: &Message) -> String {
    message_obj(offset, &m.value, m.published_at_ms)
        .str("topic", topic)
        .done()
}

fn message_obj(offset: u64, value: &str, published_at_ms: u64) -> Obj {
    Obj::new()
        .num("offset", offset)
        .raw("value", value)
        .num("published_at_ms", published_at_ms)
}

pub fn retention(r: &Retention) -> String {
    Obj::new()
        .opt("max_messages", r.max_messages)
        .opt("max_age_secs", r.max_age_ms.map(|ms| ms / 1000))
        .done()
}

/// Renders a result; `key` is the record key of the request, for record operations.
pub fn result(r: &OpResult, key: &str) -> String {
    match r {
        OpResult::Noop => "{}".into(),
        OpResult::Put {
            version,
            expires_at_ms,
        } => Obj::new()
            .str("key", key)
            .num("version", *version)
            .opt("expires_at_ms", *expires_at_ms)
            .done(),
        OpResult::Delete { version } => Obj::new().str("key", key).num("version", *version).done(),
        OpResult::Incr { value, version } => Obj::new()
            .str("key", key)
            .num("value", *value)
            .num("version", *version)
            .done(),
        OpResult::Expired { count } => Obj::new().num("expired", *count).done(),
        OpResult::CreateTopic {
            topic,
            created,
            retention: ret,
        } => Obj::new()
            .str("topic", topic)
            .bool("created", *created)
            .raw("retention", &retention(ret))
            .done(),
        OpResult::DeleteTopic { topic } => {
            Obj::new().str("topic", topic).bool("deleted", true).done()
        }
        OpResult::Publish {
            first_offset,
            count,
        } => Obj::new()
            .num("offset", *first_offset)
            .raw(
                "offsets",
                &array((0..*count).map(|i| (first_offset + i).to_string())),
            )
            .done(),
        OpResult::Trimmed { dropped } => Obj::new().num("dropped", *dropped).done(),
        OpResult::Forgotten { count } => Obj::new().num("forgotten", *count).done(),
        OpResult::Subscribe {
            topic,
            name,
            cursor,
            created,
        } => Obj::new()
            .str("topic", topic)
            .str("subscription", name)
            .num("cursor", *cursor)
            .bool("created", *created)
            .done(),
        OpResult::Unsubscribe { topic, name } => Obj::new()
            .str("topic", topic)
            .str("subscription", name)
            .bool("deleted", true)
            .done(),
        OpResult::Pull { messages, cursor } => Obj::new()
            .raw(
                "messages",
                &array(
                    messages
                        .iter()
                        .map(|(o, m)| message_obj(*o, &m.value, m.published_at_ms).done()),
                ),
            )
            .num("cursor", *cursor)
            .done(),
        OpResult::Txn { .. } => txn(r, &[]),
    }
}

/// A transaction's answer; `ops` are the operations of the branch that ran (for their names).
pub fn txn(r: &OpResult, ops: &[TxnOp]) -> String {
    let OpResult::Txn {
        succeeded,
        failed_compare,
        results,
    } = r
    else {
        return "{}".into();
    };
    let items = results.iter().zip(ops).map(|(r, op)| {
        let o = Obj::new().str("op", op.kind());
        let o = match op {
            TxnOp::Publish { topic, .. } => o.str("topic", topic),
            _ => o.str("key", op.name()),
        };
        match r {
            TxnResult::Put {
                version,
                expires_at_ms,
            } => o
                .num("version", *version)
                .opt("expires_at_ms", *expires_at_ms),
            TxnResult::Delete { deleted } => o.bool("deleted", *deleted),
            TxnResult::Incr { value, version } => o.num("value", *value).num("version", *version),
            TxnResult::Publish { offset } => o.num("offset", *offset),
        }
        .done()
    });
    let body = Obj::new()
        .bool("succeeded", *succeeded)
        .str("branch", if *succeeded { "success" } else { "failure" });
    match failed_compare {
        Some(i) => body.num("failed_compare", *i),
        None => body,
    }
    .raw("results", &array(items))
    .done()
}
