//! Resharding: moving slot ranges between shards on a live cluster (docs/SHARDS.md
//! "Resharding"). [`step`] decides, from the coordinator's [`Migration`] record and what the two
//! shards' logs say, the one next thing to do; [`mover`] does it against real nodes. The caller
//! (the playground, the controller) saves the record whenever the phase changes, before anything
//! acts on the new phase, and owns the slot map.

pub mod mover;
pub mod progress;
pub mod step;

pub use mover::{MoveError, Mover, Moving, ReshardMemory};
pub use progress::{Advance, Next, Resharding};
pub use rcluster_proto::migration::{Migration, Phase, SlotState};
pub use step::{Step, next_step};
