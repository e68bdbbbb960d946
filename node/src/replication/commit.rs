//! Which log index each write-acknowledgement level has reached: the wire contract's rule, so the
//! node's commits and the coordinator's failover quorums come from one definition.

pub use rcluster_proto::{AckLevel, commit_index, majority as quorum};
