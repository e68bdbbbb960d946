//! The coordinator runtime around the pure failover decisions (`failover`), one instance per
//! replica group, the same for the Kubernetes controller, the playground and the property tests'
//! simulation:
//!
//! 1. [`Runtime::observe`] takes in a probe round ([`Probe`]): the failure clocks, the last answer
//!    of every member ([`Memory`]: a member that stops answering keeps its last term and log
//!    position) and the measurements of a failover in progress;
//! 2. [`plan`] chooses the switchover request to act on (requests are plain input: the
//!    annotation, a scale-down or rollout that must move the primary, a request recorded on the
//!    primary node), asks `failover::coordinate`, and lists the requests it used up;
//! 3. [`Runtime::step`] stores the record after the decision ([`RecordStore`]: optimistic
//!    concurrency) before any node command, sends the commands (`nodes::NodeCommands`), clears
//!    the used-up requests, and keeps the failover and switchover statistics ([`History`]).
//!
//! What is left to each runtime is truly its own: pods, the API server and Events for the
//! controller; processes, a state file and a terminal for the playground.

mod members;
mod memory;
mod plan;
mod runtime;
mod stats;
mod store;

pub use members::keep_running;
pub use memory::{Memory, Probe, Seen};
pub use plan::{Plan, Request, Source, plan, select, used_node_requests};
pub use runtime::Runtime;
pub use stats::{Completed, FailoverCount, History, LastFailover, LastSwitchover, Measured};
pub use store::{RecordStore, Stepped, Stored, Unsent, Write};
