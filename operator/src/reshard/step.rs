//! The migration state machine, pure: given the record and both shards' slot states, the next
//! step. Each step is idempotent on the nodes (a repeated begin, fence, end or handoff changes
//! nothing), so after any interruption — a crashed coordinator, a failover in either shard —
//! asking again and doing what it says finishes or undoes the migration cleanly.

use rcluster_proto::migration::{Incoming, Migration, Outgoing, Phase, SlotState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Target: start importing the range.
    Begin,
    /// Copy the range from the source into the target (a fresh, consistent copy).
    Copy,
    /// Target: take the source's log for the range after `from`.
    CatchUp { from: u64 },
    /// Source: refuse writes to the range (the short pause starts here).
    Fence,
    /// Target: take the source's log up to the fence.
    Drain { from: u64, until: u64 },
    /// Save the record with this phase before going on (with `Owned`, the slot map naming the
    /// target: the caller chooses the epoch as its map's epoch + 1).
    Record(Phase),
    /// Source: stop serving the range; the owner is the target from `epoch` on.
    Handoff { epoch: u64 },
    /// Target: serve the range (it is the owner from `epoch` on).
    End { epoch: u64 },
    /// Source: forget its copy of the range.
    Drop,
    /// Target: forget a partial import.
    Abort,
    /// Source: take writes to the range again.
    Unfence,
    /// Nothing left: the caller clears the record.
    Finished,
}

fn incoming<'a>(m: &Migration, target: &'a SlotState) -> Option<&'a Incoming> {
    target
        .incoming
        .as_ref()
        .filter(|i| (i.start, i.end, i.from) == (m.start, m.end, m.from))
}

fn outgoing<'a>(m: &Migration, source: &'a SlotState) -> Option<&'a Outgoing> {
    source.outgoing(m.start, m.end)
}

/// The next step. `caught_up`: the last catch-up round reached the source's commit index, so
/// fencing now pauses writes only for the few entries still in flight.
pub fn next_step(m: &Migration, source: &SlotState, target: &SlotState, caught_up: bool) -> Step {
    let inc = incoming(m, target);
    let out = outgoing(m, source);
    match m.phase {
        Phase::Copying => match inc {
            None => Step::Begin,
            Some(i) if !i.copied => Step::Copy,
            Some(i) if !caught_up => Step::CatchUp {
                from: i.source_index,
            },
            Some(_) => Step::Record(Phase::Fencing),
        },
        Phase::Fencing => match (inc, out) {
            // The target lost its import (it cannot, short of losing its log): start over.
            (None, _) => Step::Record(Phase::Aborting),
            (Some(i), _) if !i.copied => Step::Record(Phase::Aborting),
            (_, None) => Step::Fence,
            (Some(i), Some(o)) if i.source_index < o.fence_index => Step::Drain {
                from: i.source_index,
                until: o.fence_index,
            },
            (Some(_), Some(_)) => Step::Record(Phase::Owned { epoch: 0 }),
        },
        // The source stops serving before the target starts: a stale reader at the source must
        // not see the value from before a write the target acknowledged.
        Phase::Owned { epoch } => {
            if out.is_none_or(|o| o.handed_off.is_none()) {
                Step::Handoff { epoch }
            } else if inc.is_some() {
                Step::End { epoch }
            } else {
                Step::Record(Phase::Dropping { epoch })
            }
        }
        Phase::Dropping { .. } => match out {
            Some(_) => Step::Drop,
            None => Step::Finished,
        },
        Phase::Aborting => {
            if target
                .incoming
                .as_ref()
                .is_some_and(|i| (i.start, i.end) == (m.start, m.end))
            {
                Step::Abort
            } else if out.is_some_and(|o| o.handed_off.is_none()) {
                Step::Unfence
            } else {
                Step::Finished
            }
        }
    }
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
