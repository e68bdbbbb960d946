//! The state's topic operations: create, delete, publish, trim, subscriptions and pulls. None of
//! them changes a record, so none has a watch event.

use super::{Applied, ApplyError, Message, OpResult, State, Topic, unchanged};
use crate::log::{Entry, Op, Start};
use crate::op_result::Pulled;
use imbl::{OrdMap, Vector};

impl State {
    /// Applies a topic operation; `apply_data_as` routes them here.
    pub(super) fn apply_topic_op(&mut self, e: &Entry) -> Result<Applied, ApplyError> {
        let now = e.ts_ms;
        let result = match &e.op {
            Op::CreateTopic { topic, retention } => {
                let created = match self.topics.get_mut(topic) {
                    Some(t) if t.retention == *retention => {
                        return unchanged(OpResult::CreateTopic {
                            topic: topic.clone(),
                            created: false,
                            retention: *retention,
                        });
                    }
                    Some(t) => {
                        t.retention = *retention;
                        t.enforce_retention(now);
                        false
                    }
                    None => {
                        let t = Topic {
                            retention: *retention,
                            first_offset: 0,
                            messages: Vector::new(),
                            subscriptions: OrdMap::new(),
                        };
                        self.topics.insert(topic.clone(), t);
                        true
                    }
                };
                OpResult::CreateTopic {
                    topic: topic.clone(),
                    created,
                    retention: *retention,
                }
            }
            Op::DeleteTopic { topic } => {
                self.topics.remove(topic).ok_or(ApplyError::TopicNotFound)?;
                OpResult::DeleteTopic {
                    topic: topic.clone(),
                }
            }
            Op::Publish { topic, values } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or(ApplyError::TopicNotFound)?;
                let first_offset = t.next_offset();
                for v in values {
                    t.messages.push_back(Message {
                        value: v.clone(),
                        published_at_ms: now,
                        index: e.index,
                    });
                }
                t.enforce_retention(now);
                OpResult::Publish {
                    first_offset,
                    count: values.len() as u64,
                }
            }
            Op::Trim { topic } => {
                let t = self.topics.get(topic).ok_or(ApplyError::TopicNotFound)?;
                let mut trimmed = t.clone();
                let dropped = trimmed.enforce_retention(now);
                if dropped == 0 {
                    return unchanged(OpResult::Trimmed { dropped });
                }
                self.topics.insert(topic.clone(), trimmed);
                OpResult::Trimmed { dropped }
            }
            Op::Subscribe { topic, name, start } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or(ApplyError::TopicNotFound)?;
                if let Some(cursor) = t.subscriptions.get(name) {
                    return unchanged(OpResult::Subscribe {
                        topic: topic.clone(),
                        name: name.clone(),
                        cursor: *cursor,
                        created: false,
                    });
                }
                let cursor = match start {
                    Start::Earliest => t.first_offset,
                    Start::Latest => t.next_offset(),
                    Start::Offset(o) if *o > t.next_offset() => {
                        return Err(ApplyError::OffsetOutOfRange {
                            start: *o,
                            next: t.next_offset(),
                        });
                    }
                    Start::Offset(o) => *o,
                };
                t.subscriptions.insert(name.clone(), cursor);
                OpResult::Subscribe {
                    topic: topic.clone(),
                    name: name.clone(),
                    cursor,
                    created: true,
                }
            }
            Op::Unsubscribe { topic, name } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or(ApplyError::TopicNotFound)?;
                t.subscriptions
                    .remove(name)
                    .ok_or(ApplyError::SubscriptionNotFound)?;
                OpResult::Unsubscribe {
                    topic: topic.clone(),
                    name: name.clone(),
                }
            }
            Op::Pull { topic, name, max } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or(ApplyError::TopicNotFound)?;
                let cursor = *t
                    .subscriptions
                    .get(name)
                    .ok_or(ApplyError::SubscriptionNotFound)?;
                let messages: Vec<(u64, Pulled)> = t
                    .read(cursor, *max as usize)
                    .into_iter()
                    .map(|(o, m)| (o, m.pulled()))
                    .collect();
                let Some((last, _)) = messages.last() else {
                    return unchanged(OpResult::Pull {
                        messages,
                        cursor: cursor.max(t.first_offset),
                    });
                };
                let cursor = last + 1;
                t.subscriptions.insert(name.clone(), cursor);
                OpResult::Pull { messages, cursor }
            }
            // `apply_data_as` routes only the operations above here.
            _ => return unchanged(OpResult::Noop),
        };
        Ok(Applied {
            result,
            changed: true,
            events: Vec::new(),
        })
    }
}
