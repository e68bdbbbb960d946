//! What the coordinator runtime acts on in the simulation: the record (a variable, with the same
//! optimistic concurrency as the resource status) and the simulated nodes, commanded in-process.
//! Nothing here ever waits, so the runtime's step completes on its first poll.

use std::convert::Infallible;
use std::sync::Mutex;

use futures_util::FutureExt;
use proptest::prelude::*;
use rcluster_operator::coordinator::{Plan, RecordStore, Stored, Write};
use rcluster_operator::failover::{Action, ClusterView};
use rcluster_operator::nodes::{NodeCommands, NodeStatus};

use super::Sim;

/// Carries `plan` (decided on `view`) out through the runtime's step.
pub fn step(sim: &mut Sim, view: &ClusterView, plan: &Plan) -> Result<(), TestCaseError> {
    let lossy = plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::ReportPossibleLoss { .. }));
    let mut runtime = sim.runtime.take().expect("the runtime");
    let now = sim.now;
    {
        let shared = Mutex::new(&mut *sim);
        let mut store = Record(&shared);
        let nodes = Nodes {
            sim: &shared,
            lossy,
        };
        // A conflict sends nothing; the next reconcile decides again.
        let _ = runtime
            .step(&view.coordinator, plan, &mut store, &nodes, now)
            .now_or_never()
            .expect("the simulation never waits");
    }
    sim.runtime = Some(runtime);
    match sim.violation.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Record<'a, 'b>(&'a Mutex<&'b mut Sim>);

impl RecordStore for Record<'_, '_> {
    type Error = Infallible;

    async fn store(&mut self, write: &Write<'_>) -> Result<Stored, Infallible> {
        let mut sim = self.0.lock().unwrap();
        if sim.coordinator != *write.before {
            return Ok(Stored::Changed);
        }
        sim.coordinator = write.record.clone();
        Ok(Stored::Written)
    }
}

struct Nodes<'a, 'b> {
    sim: &'a Mutex<&'b mut Sim>,
    /// The plan reports a possible loss: acknowledged entries may be gone once it promotes.
    lossy: bool,
}

fn violated(sim: &mut Sim, e: TestCaseError) {
    sim.violation.get_or_insert(e);
}

impl NodeCommands for Nodes<'_, '_> {
    async fn command(
        &self,
        node: &str,
        op: &'static str,
        term: u64,
        primary: Option<&str>,
    ) -> Result<NodeStatus, String> {
        let mut guard = self.sim.lock().unwrap();
        let sim = &mut **guard;
        let i = sim.index(node);
        if op == "promote" {
            // Whether or not it arrives: a promote names the one node of its term.
            if let Some(&other) = sim.promoted.get(&term)
                && other != i
            {
                let e = TestCaseError::fail(format!(
                    "two nodes promoted in term {term}: {} and {node}",
                    sim.names[other]
                ));
                violated(sim, e);
            }
            sim.promoted.insert(term, i);
            sim.lossy_happened |= self.lossy;
            if let Err(e) = sim.check_holds_acked(i, "promoted") {
                violated(sim, e);
            }
        }
        if !sim.nodes[i].reachable() {
            return Err(format!("{node} does not answer"));
        }
        // Promote and follow carry the record's member list.
        let list = sim.coordinator.members.clone();
        let done = match op {
            "fence" => sim.nodes[i].fence(term),
            "promote" => {
                let promoted = sim.nodes[i].promote(node, term, &list);
                if promoted {
                    sim.update_acks(i);
                }
                promoted
            }
            "follow" => {
                let name = primary.expect("follow names a primary");
                let p = sim.index(name);
                sim.nodes[i].follow(node, (p, name), term, &list)
            }
            other => panic!("unknown command {other}"),
        };
        if done {
            Ok(sim.status_of(i))
        } else {
            Err(format!("{node} refused {op} in term {term}"))
        }
    }

    async fn clear_switchover(&self, _node: &str, _term: u64) -> Result<(), String> {
        Ok(())
    }
}
