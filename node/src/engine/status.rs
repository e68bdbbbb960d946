//! The node's view of itself and its cluster, for `/v1/status`, `/readyz` and the coordinator.

use super::{Engine, Role};
use crate::replication::{PeerProgress, commit};
use rcluster_proto::{CommitByAck, MemberReport, NodeStatus, SwitchoverRequest};
use std::time::Instant;

impl Engine {
    /// A primary that has not heard from a quorum within its lease: it may have been replaced.
    pub fn isolated(&self) -> bool {
        if self.standalone() {
            return false;
        }
        let need = commit::quorum(self.members().len()) - 1;
        let fresh = self
            .progress
            .lock()
            .unwrap()
            .fresh(Instant::now(), self.cluster.lease);
        fresh < need
    }

    /// Ready: a standalone node; a primary that is not isolated; a replica that matched its log with
    /// the primary recently and is within the lag bound.
    pub fn ready(&self) -> bool {
        let core = self.core();
        match core.node.role {
            Role::Standalone => true,
            Role::Primary => {
                drop(core);
                !self.isolated()
            }
            Role::Replica => {
                core.node.synced
                    && core
                        .last_contact
                        .is_some_and(|t| t.elapsed() < self.cluster.lease * 2)
                    && core.primary_last_index.saturating_sub(core.node.last_index)
                        <= self.cluster.ready_lag
            }
            Role::Fenced | Role::Unknown => false,
        }
    }

    /// The `/v1/status` report and the log position it reflects (the session token).
    pub fn status(&self, with_digest: bool) -> (NodeStatus, u64) {
        let ready = self.ready();
        let isolated = self.core().node.role == Role::Primary && self.isolated();
        let commits = CommitByAck::from_fn(|a| self.commit_for(a));
        let commit = self.commit_index();
        // Listed before the core lock: no file access under it.
        let snapshot_index = self.newest_snapshot_index();
        let (progress, term_start): (Vec<(String, PeerProgress)>, u64) = {
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
        let node = &core.node;
        let leads = node.role == Role::Primary;
        let mut members = Vec::new();
        for (name, url) in node.members.iter() {
            let mut m = MemberReport {
                name: name.clone(),
                url: url.clone(),
                ..MemberReport::default()
            };
            if *name == self.cluster.me {
                m.role = Some(node.role);
                m.durable_index = Some(self.durable_index());
                m.applied_index = Some(s.applied_index);
                m.lag_entries = Some(0);
            } else if leads && let Some((_, p)) = progress.iter().find(|(n, _)| n == name) {
                m.role = Some(Role::Replica);
                m.durable_index = Some(p.durable);
                m.applied_index = Some(p.applied);
                m.lag_entries = Some(node.last_index.saturating_sub(p.durable));
                m.lag_seconds = Some(
                    core.entry_ts(p.durable + 1)
                        .filter(|_| p.durable < node.last_index)
                        .map_or(0.0, |ts| super::now_ms().saturating_sub(ts) as f64 / 1000.0),
                );
                m.last_ack_ms = p
                    .acked_sent_at
                    .map(|t| Instant::now().duration_since(t).as_millis() as u64);
                m.error = p.error.clone();
            }
            members.push(m);
        }
        let report = NodeStatus {
            node: self.cluster.me.clone(),
            cluster_id: self.cluster.id.clone(),
            shard: 0,
            role: node.role,
            term: node.term,
            primary: node.primary.clone(),
            following: if node.role == Role::Replica {
                node.primary.clone()
            } else {
                None
            },
            primary_url: super::primary_url(node),
            last_log_index: node.last_index,
            last_log_term: node.term_at(node.last_index).unwrap_or(0),
            commit_index: commit,
            term_start: if leads { term_start } else { 0 },
            commit_by_ack: (leads || node.role == Role::Standalone).then_some(commits),
            durable_index: self.durable_index(),
            applied_index: s.applied_index,
            known_commit: node.known_commit,
            snapshot_index,
            wal_segments: core.wal.segment_count() as u64,
            records: s.records.len() as u64,
            topics: s.topics.len() as u64,
            ready,
            isolated,
            synced: node.synced,
            entries_discarded: core.discarded_total,
            default_ack: Some(self.cluster.default_ack),
            members,
            switchover_request: self
                .switchover_request
                .lock()
                .unwrap()
                .clone()
                .map(|(to, at_ms)| SwitchoverRequest { to, at_ms }),
            digest: with_digest.then(|| format!("{:016x}", s.digest())),
            recovery: {
                let report = self.recovery_report();
                (!report.is_empty()).then(|| serde_json::json!(report))
            },
            slot_state: s.slots.clone(),
        };
        (report, s.applied_index)
    }
}
