//! Primary/replica replication, as rules without I/O: what goes over the wire, the terms of a log,
//! this node's role and how it changes, log matching, and which index each ack level has reached.
//! The engine performs what these rules decide; the shipper carries the log to the replicas.

pub mod commit;
mod matching;
mod node;
mod progress;
mod terms;
mod wire;

pub use commit::AckLevel;
pub use matching::{Contact, Matching, Refusal};
pub use node::{Cause, Entered, Node, RoleChange, RoleError, RoleRecord, initial_role};
pub use progress::{PeerProgress, Progress};
pub use terms::TermRuns;
pub use wire::{AppendHeader, AppendResponse, Cluster, Members, RoleCommand};

#[cfg(test)]
mod node_tests;

#[cfg(test)]
mod matching_tests;

#[cfg(test)]
mod progress_tests;
