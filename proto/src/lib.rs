//! rcluster's wire contract, shared by the node (which serves it), the client library and the
//! operator (which read it): one definition of each concept.
//!
//! - [`AckLevel`] with the quorum arithmetic of commits and failovers, [`Consistency`], [`Role`];
//! - [`headers`]: the header names;
//! - [`NodeStatus`]: the `/v1/status` report;
//! - [`slots`]: hash slots and the [`SlotMap`] that places them on shards;
//! - [`ClusterMap`]: the slot map plus how to reach every shard;
//! - [`SessionToken`]: the log positions a client observed, one per shard.

pub mod ack;
pub mod cluster;
pub mod consistency;
pub mod headers;
pub mod idempotency;
pub mod migration;
pub mod role;
pub mod slots;
pub mod status;
pub mod token;

pub use ack::{AckLevel, CommitByAck, commit_index, majority};
pub use cluster::{ClusterMap, ShardInfo};
pub use consistency::Consistency;
pub use migration::{Migration, Phase, SlotState};
pub use role::Role;
pub use slots::{DEFAULT_SLOTS, ShardId, SlotMap, SlotMapError, SlotMove, SlotRange, slot_of};
pub use status::{MemberReport, NodeStatus, SwitchoverRequest};
pub use token::{BadToken, SessionToken};
