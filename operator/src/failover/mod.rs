//! Failover decisions (DESIGN.md "Failover"): observed members + cluster settings ⇒ actions.
//!
//! Pure and sans-IO: no clock reads, no network. The coordinator runtime (`crate::coordinator`,
//! the same for the controller, the playground and the simulation) probes every member, builds a
//! [`ClusterView`], calls [`coordinate`] (which runs [`decide`], [`plan_switchover`] or
//! [`plan_members`]), persists [`Coordinator::after`] durably and then runs the node commands in
//! order. It calls again on the next probe; every call is level-based, so a runtime that crashed
//! half-way simply repeats the missing steps.
//!
//! An election takes two calls on purpose. The first bumps the term and fences every reachable
//! member; the candidate is chosen only from members that already answer in the new term. A
//! fenced member rejects the old primary, so the log positions it reports can no longer grow
//! behind the coordinator's back (a partitioned old primary could otherwise commit an entry to
//! a replica between the probe and the promotion).
//!
//! Safety argument: an entry acknowledged at the cluster's ack level is on `write_quorum`
//! members. A candidate is chosen only when at least `members - write_quorum + 1` members answer
//! in the new term, so one of them holds that entry, and the member with the highest (last log
//! term, last log index) holds everything any responder holds (the log-matching property the
//! node keeps by truncating divergent suffixes).
//!
//! Interface assumptions for the node (all hold for `rcluster-node` today):
//! - Terms are durable; a node never lowers its term and rejects messages of an older term.
//! - A new primary commits an entry of its own term before counting replicas for older entries
//!   (Raft §5.4.2): `promote` appends an empty entry at once.
//! - `write_quorum` matches the node's commit rule for the cluster's ack level, `all` meaning
//!   every member. Writes acknowledged at a weaker level than the cluster's are not protected.
//! - A fenced node stops accepting writes. A fenced former primary keeps shipping the log it
//!   has to the replicas of its old term (a switchover target catches up that way), and a write
//!   waiting there is acknowledged if that completes its quorum: its replicas' logs are final
//!   only once they are fenced too.
//! - A node that never had a term adopts no primary that contacts it; it waits for `follow`.

mod coordinate;
mod describe;
mod election;
mod membership;
mod steps;
mod switchover;
mod types;
mod view;

#[cfg(test)]
mod election_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod switchover_tests;

pub use coordinate::{Decision, SwitchoverOutcome, coordinate, handover_target};
pub use election::decide;
pub use membership::plan_members;
pub use switchover::plan_switchover;
pub use types::*;
