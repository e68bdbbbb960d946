//! A topic's messages as the state holds them: retained in offset order, trimmed by retention.

use crate::log::{Json, Retention};
use crate::op_result::Pulled;
use imbl::{OrdMap, Vector};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub value: Json,
    pub published_at_ms: u64,
    /// The log index of the entry that published it: orders messages of different topics of
    /// one shard (a multi-topic stream delivers them in log order). 0 when loaded from a
    /// snapshot written before messages kept it.
    pub index: u64,
}

impl Message {
    pub fn pulled(&self) -> Pulled {
        Pulled {
            value: self.value.clone(),
            published_at_ms: self.published_at_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub retention: Retention,
    pub first_offset: u64,
    pub messages: Vector<Message>,
    pub subscriptions: OrdMap<String, u64>,
}

impl Topic {
    pub fn next_offset(&self) -> u64 {
        self.first_offset + self.messages.len() as u64
    }

    /// Messages `[from, from+limit)` that are still retained.
    pub fn read(&self, from: u64, limit: usize) -> Vec<(u64, Message)> {
        let start = from.max(self.first_offset);
        let skip = (start - self.first_offset) as usize;
        self.messages
            .iter()
            .skip(skip)
            .take(limit)
            .enumerate()
            .map(|(i, m)| (start + i as u64, m.clone()))
            .collect()
    }

    pub(crate) fn enforce_retention(&mut self, now_ms: u64) -> u64 {
        let mut dropped = 0;
        if let Some(max) = self.retention.max_messages {
            while self.messages.len() as u64 > max {
                self.messages.pop_front();
                self.first_offset += 1;
                dropped += 1;
            }
        }
        if let Some(age) = self.retention.max_age_ms {
            while self
                .messages
                .front()
                .is_some_and(|m| m.published_at_ms.saturating_add(age) <= now_ms)
            {
                self.messages.pop_front();
                self.first_offset += 1;
                dropped += 1;
            }
        }
        dropped
    }
}
