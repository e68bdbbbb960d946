//! Resharding stage (docs/SHARDS.md "Resharding"): a changed `spec.shards` moves slots, one range
//! at a time, with the same state machine and record as the playground (`crate::reshard`).
//!
//! - Growing: the slot map gets room for the new shards first (recorded), so their StatefulSets
//!   are applied and elect primaries; then ranges move to them until the counts are even.
//! - Shrinking: ranges move off the shards that go; once they own nothing the map drops them
//!   (recorded), and only then are their objects and volumes deleted ([`remove_shards`]); the
//!   record is cleared after that, so an operator that stops in between deletes them next time.
//! - Every phase change is written to `status.reshard` (with `Owned`, the slot map naming the
//!   target) before any node acts on it: a migration task is started only for the record as read
//!   from the server. The task runs beside the reconciles (a copy of many keys must not hold up
//!   a shard's failover) and wakes the cluster's reconcile when it is done.

use futures_util::FutureExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::events::{Event, EventType};
use kube::{Client, ResourceExt};
use rcluster_proto::{ShardId, SlotMap};

use super::error::Error;
use crate::crd::{ReshardStatus, SHARD_LABEL};
use crate::reshard::{Advance, Mover, Moving, Next, ReshardMemory, Resharding, progress};
use crate::resources;

/// `reason` of the events this stage emits.
pub mod reason {
    pub const RESHARD_STARTED: &str = "ReshardStarted";
    pub const RESHARD_STEP: &str = "ReshardStep";
    pub const RESHARD_FINISHED: &str = "ReshardFinished";
    pub const RESHARD_STEP_FAILED: &str = "ReshardStepFailed";
    pub const SHARD_REMOVED: &str = "ShardRemoved";
}

mod events {
    use super::{Event, EventType, reason};

    fn event(type_: EventType, reason: &str, note: String) -> Event {
        Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reshard".to_string(),
            secondary: None,
        }
    }

    /// A resharding began (`"Started"`), recorded a step (`"Step"`) or ended (`"Finished"`).
    pub fn reshard(what: &str, note: String) -> Event {
        let reason = match what {
            "Started" => reason::RESHARD_STARTED,
            "Finished" => reason::RESHARD_FINISHED,
            _ => reason::RESHARD_STEP,
        };
        event(EventType::Normal, reason, note)
    }

    /// A migration step failed; it is tried again from what the nodes' logs say.
    pub fn reshard_failed(note: String) -> Event {
        event(EventType::Warning, reason::RESHARD_STEP_FAILED, note)
    }

    /// A shard that a resharding emptied was deleted: its StatefulSet, Services, ConfigMap, PDB
    /// and volumes.
    pub fn shard_removed(shard: u32) -> Event {
        event(
            EventType::Normal,
            reason::SHARD_REMOVED,
            format!(
                "shard {shard} owns no slot any more: its StatefulSet, Services and volumes are deleted"
            ),
        )
    }
}

pub use events::shard_removed;

/// What the stage sees.
pub struct Input<'a> {
    /// `status.reshard` as read from the server.
    pub read: Option<&'a ReshardStatus>,
    /// The recorded slot map (as read).
    pub slots: &'a SlotMap,
    /// `spec.shards`.
    pub wanted: u32,
    /// Each running shard's primary URL, where a primary is known.
    pub primaries: &'a [Option<String>],
    pub now: &'a Time,
}

/// What the stage decided: the slot map and `status.reshard` to record, and what to tell.
pub struct Decided {
    pub slots: SlotMap,
    pub record: Option<ReshardStatus>,
    pub events: Vec<Event>,
    /// A task runs or a record changed: look again soon.
    pub acting: bool,
    /// Every slot is where it belongs and the map has only the shards asked for: delete the
    /// objects of shards beyond it, then record the end (`record` is `None`).
    pub finished: bool,
}

/// Decides the resharding's next record from what was read and the last task's outcome, and
/// starts the next task when the record as read says what to do. `start` runs a phase (the
/// migration, the source's and the target's primary URLs).
pub fn decide(
    input: &Input,
    mem: &mut ReshardMemory,
    start: impl FnOnce(Mover, rcluster_proto::Migration, String, String) -> Moving,
    mover: impl FnOnce() -> Mover,
) -> Result<Decided, String> {
    let read = input.read.map(ReshardStatus::to_resharding).transpose()?;
    let unchanged = Decided {
        slots: input.slots.clone(),
        record: input.read.cloned(),
        events: Vec::new(),
        acting: false,
        finished: false,
    };
    let mut events = Vec::new();
    let mut r = match &read {
        Some(r) => r.clone(),
        None if !progress::needed(input.slots, input.wanted) => return Ok(unchanged),
        None => {
            events.push(events::reshard(
                "Started",
                format!(
                    "resharding from {} to {} shards: slots move one range at a time while the cluster serves",
                    input.slots.shards, input.wanted
                ),
            ));
            Resharding::new(input.slots.shards, input.wanted)
        }
    };
    r.shards = input.wanted;
    let mut map = r.grown(input.slots).map_err(|e| e.to_string())?;
    let mut said = None;
    let mut stepped = false;
    let mut done = false;
    if let Some(h) = mem.moving.as_mut().filter(|h| h.is_finished()) {
        let outcome = h.now_or_never();
        mem.moving = None;
        match outcome {
            Some(Ok((m, result))) => {
                mem.mover = Some(m);
                match result {
                    Ok(step) => {
                        mem.failures = 0;
                        stepped = true;
                        if let Advance::Save(s) =
                            r.advance(&mut map, &step).map_err(|e| e.to_string())?
                        {
                            said = Some(s);
                        }
                    }
                    Err(e) => {
                        mem.failures += 1;
                        if mem.failures == 1 {
                            let m = r.migration.as_ref().map(ToString::to_string);
                            events.push(events::reshard_failed(format!(
                                "{}: {e} (retrying)",
                                m.unwrap_or_default()
                            )));
                        }
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "the migration task failed"),
            None => {}
        }
    } else if mem.moving.is_none() && read.as_ref().map(|x| &x.migration) == Some(&r.migration) {
        match r.migration.clone() {
            None => match r.next(&map).map_err(|e| e.to_string())? {
                Next::Move(m) => said = Some(format!("resharding: {m}")),
                Next::Done(m) if m == map => done = true,
                Next::Done(m) => {
                    said = Some(format!(
                        "resharding: the slot map keeps {} shards; the others own nothing",
                        m.shards
                    ));
                    map = m;
                }
            },
            Some(m) => {
                let url = |s: ShardId| input.primaries.get(s as usize).cloned().flatten();
                // A shard without a primary (or a new shard not up yet): its failover comes
                // first, the migration waits.
                if let (Some(source), Some(target)) = (url(m.from), url(m.to)) {
                    let mv = mem.mover.take().unwrap_or_else(mover);
                    mem.moving = Some(start(mv, m, source, target));
                }
            }
        }
    }
    if let Some(s) = &said {
        events.push(events::reshard("Step", s.clone()));
    }
    let started = input
        .read
        .and_then(|x| x.started.clone())
        .or_else(|| Some(input.now.clone()));
    let last_step = if said.is_some() || stepped || read.is_none() {
        Some(input.now.clone())
    } else {
        input.read.and_then(|x| x.last_step.clone())
    };
    let record = if done {
        events.push(events::reshard(
            "Finished",
            format!(
                "resharding done: {} shards, {} slots moved",
                r.shards, r.moved_slots
            ),
        ));
        None
    } else {
        Some(ReshardStatus::new(&r, &map, started, last_step))
    };
    // Just begun: the first move is chosen once the record is saved.
    let acting = mem.moving.is_some() || said.is_some() || done || read.is_none();
    Ok(Decided {
        slots: map,
        record,
        events,
        acting,
        finished: done,
    })
}

/// Deletes the objects and volumes of shards at or beyond `running` (the slot map's shard count
/// at the end of a resharding): they own nothing. Returns the shards found.
pub async fn remove_shards(
    client: &Client,
    ns: &str,
    name: &str,
    running: u32,
) -> Result<Vec<ShardId>, Error> {
    let selector = resources::pod_selector_string(name);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let gone: Vec<ShardId> = sets
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .filter_map(|s| s.labels().get(SHARD_LABEL)?.parse::<ShardId>().ok())
        .filter(|k| *k >= running && *k > 0)
        .collect();
    for &k in &gone {
        let set = resources::statefulset_name(name, k);
        delete(&sets, &set).await?;
        let services: Api<Service> = Api::namespaced(client.clone(), ns);
        delete(&services, &resources::rw_service_name(name, k)).await?;
        delete(&services, &resources::ro_service_name(name, k)).await?;
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        delete(&maps, &resources::config_map_name(name, k)).await?;
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
        delete(&pdbs, &resources::pdb_name(name, k)).await?;
        // The volumes too: a shard added later must start empty, not on this shard's old log.
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let claim_set = format!("{}-{set}", resources::statefulset::DATA_VOLUME);
        let list = claims
            .list(&ListParams::default().labels(&selector))
            .await?;
        for c in list.items {
            let n = c.name_any();
            if resources::ordinal(&claim_set, &n).is_some() {
                delete(&claims, &n).await?;
            }
        }
    }
    Ok(gone)
}

async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

#[cfg(test)]
#[path = "reshard_tests.rs"]
mod tests;
