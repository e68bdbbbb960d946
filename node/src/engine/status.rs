//! The node's view of itself and its cluster, for `/v1/status`, `/readyz` and the coordinator.

use super::{Engine, Role};
use crate::replication::{AckLevel, commit};
use serde_json::{Value, json};
use std::time::Instant;

impl Engine {
    /// A primary that has not heard from a quorum within its lease: it may have been replaced.
    pub fn isolated(&self) -> bool {
        if self.standalone() {
            return false;
        }
        let need = commit::quorum(self.members().len()) - 1;
        let lease = self.cluster.lease;
        let fresh = self
            .progress
            .lock()
            .unwrap()
            .peers
            .values()
            .filter(|p| p.acked_sent_at.is_some_and(|t| t.elapsed() < lease))
            .count();
        fresh < need
    }

    /// Ready: a standalone node; a primary that is not isolated; a replica that matched its log with
    /// the primary recently and is within the lag bound.
    pub fn ready(&self) -> bool {
        let core = self.core();
        match core.role {
            Role::Standalone => true,
            Role::Primary => {
                drop(core);
                !self.isolated()
            }
            Role::Replica => {
                core.synced
                    && core
                        .last_contact
                        .is_some_and(|t| t.elapsed() < self.cluster.lease * 2)
                    && core.primary_last_index.saturating_sub(core.last_index)
                        <= self.cluster.ready_lag
            }
            Role::Fenced => false,
        }
    }

    pub fn status(&self, with_digest: bool) -> (Value, u64) {
        let ready = self.ready();
        let isolated = self.core().role == Role::Primary && self.isolated();
        let commits: serde_json::Map<String, Value> = AckLevel::ALL
            .iter()
            .map(|a| (a.as_str().to_string(), json!(self.commit_for(*a))))
            .collect();
        let commit = self.commit_index();
        let (progress, term_start): (Vec<(String, super::PeerProgress)>, u64) = {
            let p = self.progress.lock().unwrap();
            let peers = p
                .peers
                .iter()
                .map(|(n, p)| (n.clone(), p.clone()))
                .collect();
            (peers, p.term_start)
        };
        self.metrics.ready.set(i64::from(ready));
        let core = self.core();
        let s = &core.state;
        let leads = core.role == Role::Primary;
        let mut members = Vec::new();
        for (name, url) in core.members.iter() {
            let mut m = json!({"name": name, "url": url});
            if *name == self.cluster.me {
                m["role"] = json!(core.role.as_str());
                m["durable_index"] = json!(self.durable_index());
                m["applied_index"] = json!(s.applied_index);
                m["lag_entries"] = json!(0);
            } else if leads && let Some((_, p)) = progress.iter().find(|(n, _)| n == name) {
                m["role"] = json!("replica");
                m["durable_index"] = json!(p.durable);
                m["applied_index"] = json!(p.applied);
                m["lag_entries"] = json!(core.last_index.saturating_sub(p.durable));
                m["lag_seconds"] = json!(
                    core.entry_ts(p.durable + 1)
                        .filter(|_| p.durable < core.last_index)
                        .map_or(0.0, |ts| super::now_ms().saturating_sub(ts) as f64 / 1000.0)
                );
                m["last_ack_ms"] = json!(
                    p.acked_sent_at
                        .map(|t| Instant::now().duration_since(t).as_millis() as u64)
                );
                m["error"] = json!(p.error);
            }
            members.push(m);
        }
        let mut v = json!({
            "node": self.cluster.me,
            "role": core.role.as_str(),
            "term": core.term,
            "primary": core.primary,
            "following": if core.role == Role::Replica { core.primary.clone() } else { None },
            "primary_url": core.primary.as_deref().and_then(|p| core.members.get(p)),
            "last_log_index": core.last_index,
            "last_log_term": core.term_at(core.last_index).unwrap_or(0),
            "commit_index": commit,
            // The index of this term's first entry: once it is committed at the cluster's ack
            // level, so is the member list this node was promoted with.
            "term_start": if leads { term_start } else { 0 },
            "commit_by_ack": if leads || core.role == Role::Standalone { Value::Object(commits) } else { Value::Null },
            "durable_index": self.durable_index(),
            "applied_index": s.applied_index,
            "known_commit": core.known_commit,
            "snapshot_index": self.newest_snapshot_index(),
            "wal_segments": core.wal.segment_count(),
            "records": s.records.len(),
            "topics": s.topics.len(),
            "ready": ready,
            "isolated": isolated,
            "synced": core.synced,
            "entries_discarded": core.discarded_total,
            "default_ack": self.cluster.default_ack.as_str(),
            "members": members,
        });
        if let Some((to, at_ms)) = self.switchover_request.lock().unwrap().clone() {
            v["switchover_request"] = json!({"to": to, "at_ms": at_ms});
        }
        if with_digest {
            v["digest"] = json!(format!("{:016x}", s.digest()));
        }
        let report = self.recovery_report();
        if !report.is_empty() {
            v["recovery"] = json!(report);
        }
        (v, s.applied_index)
    }
}
