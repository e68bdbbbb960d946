//! What a primary knows about its replicas in its term, and what follows from it: the commit index
//! for each ack level, and whether a quorum still follows this primary. Time is an input.

use super::commit::{self, AckLevel};
use super::wire::AppendResponse;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the primary knows about one replica.
#[derive(Debug, Clone, Default)]
pub struct PeerProgress {
    pub durable: u64,
    pub applied: u64,
    pub last_index: u64,
    /// When the newest request that got a successful answer was sent: proves this replica still
    /// followed us at that moment (linearizable reads, leases).
    pub acked_sent_at: Option<Instant>,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Progress {
    pub term: u64,
    /// The index of the term's first entry: older entries count as committed only with it.
    pub term_start: u64,
    pub peers: BTreeMap<String, PeerProgress>,
}

impl Progress {
    /// A new term led from `term_start`, with nothing known about `peers` yet.
    pub fn new(term: u64, term_start: u64, peers: impl IntoIterator<Item = String>) -> Progress {
        Progress {
            term,
            term_start,
            peers: peers.into_iter().map(|n| (n, Default::default())).collect(),
        }
    }

    /// The index reached by `ack`, given this node's own durable index.
    pub fn commit_for(&self, ack: AckLevel, own: u64) -> u64 {
        let others = self.peers.values().map(|p| p.durable);
        commit::commit_index(ack, own, others, self.term_start)
    }

    /// A successful answer from `peer` to a request of `term` sent at `sent_at`. Ignored (false)
    /// when the term is over (a shipper of an older term still draining).
    pub fn record_ack(
        &mut self,
        peer: &str,
        term: u64,
        sent_at: Instant,
        r: &AppendResponse,
    ) -> bool {
        if self.term != term {
            return false;
        }
        if let Some(p) = self.peers.get_mut(peer) {
            p.durable = p.durable.max(r.durable_index);
            p.applied = r.applied_index;
            p.last_index = r.last_index;
            p.acked_sent_at = Some(sent_at);
            p.error = None;
        }
        true
    }

    pub fn record_error(&mut self, peer: &str, error: String) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.error = Some(error);
        }
    }

    /// Replicas whose answer proves they followed this primary at `since` or later.
    pub fn confirmed_since(&self, since: Instant) -> usize {
        self.peers
            .values()
            .filter(|p| p.acked_sent_at.is_some_and(|t| t >= since))
            .count()
    }

    /// Replicas that answered a request sent less than `lease` before `now`.
    pub fn fresh(&self, now: Instant, lease: Duration) -> usize {
        self.peers
            .values()
            .filter(|p| {
                p.acked_sent_at
                    .is_some_and(|t| now.duration_since(t) < lease)
            })
            .count()
    }
}
