//! Where a coordinator keeps its record, and what a step reports.

use super::plan::Plan;
use super::stats::{Completed, History};
use crate::failover::Coordinator;
use crate::nodes::CommandResult;

/// What the store is asked to keep.
pub struct Write<'a> {
    /// The record the decision was made from (what the store held at the probe).
    pub before: &'a Coordinator,
    /// The record to keep from now on.
    pub record: &'a Coordinator,
    pub plan: &'a Plan,
    /// The statistics, for a store that keeps them with the record.
    pub history: &'a History,
    /// A failover started and its promotion is not done yet.
    pub failing_over: bool,
}

/// Where one replica group's coordinator record lives: the ReplicatedCluster's status on
/// Kubernetes, the state file in the playground, a variable in the simulation.
pub trait RecordStore {
    type Error;

    /// Stores `write.record` durably, with optimistic concurrency: when the stored record changed
    /// since `write.before` was read (someone else acted), nothing is written.
    fn store(
        &mut self,
        write: &Write<'_>,
    ) -> impl Future<Output = Result<Stored, Self::Error>> + Send;

    /// Whether the stored form must be written although the record did not change (a status
    /// written before it carried the member list).
    fn stale(&self) -> bool {
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Written,
    /// The stored record changed since the probe: nothing is sent, and the next step decides
    /// again on fresh data.
    Changed,
}

/// Why a step sent nothing.
#[derive(Debug)]
pub enum Unsent<E> {
    /// The stored record changed since the probe.
    Conflict,
    /// The record could not be stored.
    Store(E),
}

/// What a step did.
#[derive(Debug)]
pub struct Stepped {
    /// The record in force after the step.
    pub record: Coordinator,
    /// The record was written.
    pub stored: bool,
    pub results: Vec<CommandResult>,
    /// Used-up requests that could not be cleared (they are cleared again next time).
    pub clear_errors: Vec<(String, String)>,
    pub completed: Completed,
}
