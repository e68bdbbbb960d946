//! Act stage: the resource status as the coordinator runtime's record store (written first, with
//! optimistic concurrency, before the runtime tells the nodes), then the pods relabelled so the
//! Services route to the new primary, the switchover annotation removed, a pod restarted.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::annotation::SWITCHOVER_ANNOTATION;
use super::error::{Error, is_status};
use super::observe::{Member, PodInfo};
use super::{shards, status};
use crate::coordinator::{RecordStore, Stored, Write};
use crate::crd::{
    MemberRole, ROLE_LABEL, ReplicatedCluster, ReplicatedClusterStatus, SecurityStatus,
};
use crate::resources::FIELD_MANAGER;
use rcluster_proto::{ShardId, SlotMap};

fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Result of a status write that must not overwrite a newer record.
#[derive(Debug)]
pub enum Written {
    Ok(Box<ReplicatedCluster>),
    /// The resource changed since it was read (409): decide again on fresh data.
    Conflict,
}

/// Replaces the status, carrying the `resourceVersion` of `cluster`: the API server refuses the
/// write when anyone changed the resource since, so a term is never handed out twice.
pub async fn write_status(
    client: &Client,
    cluster: &ReplicatedCluster,
    status: ReplicatedClusterStatus,
) -> Result<Written, Error> {
    let ns = cluster
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<ReplicatedCluster> = Api::namespaced(client.clone(), &ns);
    let mut next = cluster.clone();
    next.status = Some(status);
    // Named like the server-side applies, so the status fields are owned by the operator
    // (without it the API server records the manager "unknown").
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    match api
        .replace_status(&cluster.name_any(), &params, &next)
        .await
    {
        Ok(obj) => Ok(Written::Ok(Box::new(obj))),
        Err(e) if is_status(&e, 409) => Ok(Written::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// One shard's coordinator record in the ReplicatedCluster's status (with everything else the
/// status says about the shard at that moment). The shards of a cluster share the resource: each
/// writes its own entry over the resource as last read or written by any of them, so their writes
/// follow each other in this process, and a change by anyone else still fails the write (409).
pub struct StatusStore<'a> {
    pub client: &'a Client,
    pub shard: ShardId,
    pub slots: &'a SlotMap,
    /// The resource as last read or written: its resourceVersion guards the next write.
    pub current: &'a tokio::sync::Mutex<ReplicatedCluster>,
    pub members: &'a [Member],
    pub updated: Option<i32>,
    pub now_ms: u64,
    /// The shard's record was read without a member list.
    pub stale: bool,
    /// The cluster's TLS and tokens, recorded with the first record written.
    pub security: SecurityStatus,
}

impl RecordStore for StatusStore<'_> {
    type Error = Error;

    async fn store(&mut self, write: &Write<'_>) -> Result<Stored, Error> {
        let mut current = self.current.lock().await;
        let view = shards::cluster_view(&current, self.shard);
        let status = status::build(&status::Input {
            cluster: &view,
            record: write.record,
            members: self.members,
            plan: write.plan,
            failing_over: write.failing_over,
            last_failover: None,
            updated: self.updated,
            now: status::time_from_ms(self.now_ms),
        });
        let full = current.status.clone().unwrap_or_default();
        let mut status = shards::merge(&full, self.shard, status, self.slots);
        status.security = Some(self.security);
        match write_status(self.client, &current, status).await? {
            Written::Ok(obj) => {
                *current = *obj;
                Ok(Stored::Written)
            }
            Written::Conflict => Ok(Stored::Changed),
        }
    }

    /// A status written before it carried the member list (or none yet): the list the nodes
    /// run with is recorded before any of them hears of a term.
    fn stale(&self) -> bool {
        self.stale
    }
}

/// The `rcluster.dev/role` each pod should carry: `primary` on the recorded primary, `replica`
/// on every other pod (also during an election, so the read-write Service routes nowhere rather
/// than to a node that may have been deposed).
pub fn desired_roles(pods: &[PodInfo], primary: Option<&str>) -> Vec<(String, MemberRole)> {
    pods.iter()
        .map(|p| {
            let role = if Some(p.name.as_str()) == primary {
                MemberRole::Primary
            } else {
                MemberRole::Replica
            };
            (p.name.clone(), role)
        })
        .filter(|(name, role)| {
            let current = pods
                .iter()
                .find(|p| &p.name == name)
                .and_then(|p| p.role_label.as_deref());
            current != Some(role.as_str())
        })
        .collect()
}

/// Moves the role labels; pods already labelled correctly are not touched. Pods going away in
/// the meantime (404) are skipped.
pub async fn relabel(
    client: &Client,
    ns: &str,
    changes: &[(String, MemberRole)],
) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    for (pod, role) in changes {
        let patch = json!({"metadata": {"labels": {ROLE_LABEL: role.as_str()}}});
        match api.patch(pod, &merge_params(), &Patch::Merge(&patch)).await {
            Ok(_) => tracing::info!(%pod, role = role.as_str(), "pod relabelled"),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Deletes a member pod so that the StatefulSet recreates it from its current template. The uid
/// precondition makes sure it is the pod that was judged outdated, not a successor of the same
/// name. Gone already (404) or replaced (409) is fine: the next reconcile looks again.
pub async fn delete_pod(
    client: &Client,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = DeleteParams {
        preconditions: uid.map(|u| Preconditions {
            uid: Some(u.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(pod, &params).await {
        Ok(_) => {
            tracing::info!(%pod, "pod deleted for the rollout");
            Ok(())
        }
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the switchover annotation (JSON merge patch: `null` deletes the key).
pub async fn remove_switchover_annotation(
    client: &Client,
    cluster: &ReplicatedCluster,
) -> Result<(), Error> {
    let ns = cluster
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<ReplicatedCluster> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"metadata": {"annotations": {SWITCHOVER_ANNOTATION: null}}});
    match api
        .patch(&cluster.name_any(), &merge_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
