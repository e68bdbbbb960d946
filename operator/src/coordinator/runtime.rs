//! One replica group's coordinator: its memory of the members and its statistics, and the step
//! that carries a decision out.

use super::memory::{Memory, Probe};
use super::plan::Plan;
use super::stats::{FailoverCount, History, Measured, Stats};
use super::store::{RecordStore, Stepped, Stored, Unsent, Write};
use crate::failover::{AckLevel, Coordinator, Observation};
use crate::nodes::{NodeCommands, run_commands};

/// The coordinator runtime of one replica group. Everything it keeps is about that group only;
/// the record it acts on lives in a [`RecordStore`], the nodes are reached through
/// [`NodeCommands`], and every input (probes, requests, the clock) is passed in.
#[derive(Debug)]
pub struct Runtime {
    memory: Memory,
    stats: Stats,
}

impl Runtime {
    /// `history`: the statistics kept from an earlier run, if the runtime keeps them.
    pub fn new(count: FailoverCount, history: History) -> Runtime {
        Runtime {
            memory: Memory::default(),
            stats: Stats::new(count, history),
        }
    }

    /// Takes in one probe round: the failure clocks and last answers, and the measurements of a
    /// failover in progress (at the cluster's ack level). Returns the observations to decide on.
    pub fn observe(
        &mut self,
        probes: &[Probe],
        ack: AckLevel,
        now_ms: u64,
    ) -> (Vec<Observation>, Measured) {
        let observations = self.memory.observe(probes);
        let measured = self.stats.measure(probes, ack, now_ms);
        (observations, measured)
    }

    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    pub fn history(&self) -> &History {
        &self.stats.history
    }

    /// A failover started and its promotion is not done yet.
    pub fn failing_over(&self) -> bool {
        self.stats.failing_over()
    }

    /// Carries out `plan`, decided from the stored record `record` at `now_ms`: stores the record
    /// after it (before any node command), sends the node commands in order, clears the used-up
    /// switchover requests, and updates the statistics. A failed command is simply decided again
    /// by a later step; nothing here depends on this process surviving until the end.
    pub async fn step<S: RecordStore, N: NodeCommands>(
        &mut self,
        record: &Coordinator,
        plan: &Plan,
        store: &mut S,
        nodes: &N,
        now_ms: u64,
    ) -> Result<Stepped, Unsent<S::Error>> {
        let next = record.after(&plan.actions);
        self.stats.decided(record, plan, &self.memory, now_ms);
        let stored = next != *record || store.stale();
        if stored {
            let write = Write {
                before: record,
                record: &next,
                plan,
                history: &self.stats.history,
                failing_over: self.stats.failing_over(),
            };
            match store.store(&write).await {
                Ok(Stored::Written) => {}
                Ok(Stored::Changed) => return Err(Unsent::Conflict),
                Err(e) => return Err(Unsent::Store(e)),
            }
        }
        let results = run_commands(nodes, &plan.actions).await;
        let mut clear_errors = Vec::new();
        for node in &plan.clear {
            // Harmless when it fails: a request left on a node that is no longer the primary, or
            // whose switchover is recorded, is never acted on again, and is cleared next time.
            if let Err(e) = nodes.clear_switchover(node, next.term).await {
                tracing::warn!(%node, error = %e, "cannot clear the switchover request");
                clear_errors.push((node.clone(), e));
            }
        }
        for r in results
            .iter()
            .filter(|r| r.op == "promote" && r.outcome.is_ok())
        {
            self.memory.forget_failures(&r.node);
        }
        let completed = self.stats.promoted(record, &results, now_ms);
        Ok(Stepped {
            record: next,
            stored,
            results,
            clear_errors,
            completed,
        })
    }
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
