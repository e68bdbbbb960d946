//! Apply stage: every desired object from [`resources::build_all`], server-side applied under
//! one field manager with `force` (the operator owns these fields; a conflicting manual edit is
//! taken back). The ServiceMonitor is deleted when disabled.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Error, is_status};
use crate::crd::ReplicatedCluster;
use crate::resources::{
    self, BuildError, Desired, FIELD_MANAGER, secret, secret_name, service_monitor_name,
    servicemonitor,
};

/// The cluster Secret if it exists: its token is kept, never regenerated.
pub async fn existing_secret(
    client: &Client,
    ns: &str,
    cluster: &str,
) -> Result<Option<Secret>, kube::Error> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(&secret_name(cluster))
        .await
}

/// The desired objects for `replicas[k]` members in shard k (which may differ from the spec
/// while a scale-down waits for the primary to move).
pub fn desired(
    cluster: &ReplicatedCluster,
    replicas: &[i32],
    existing: Option<&Secret>,
) -> Result<Desired, BuildError> {
    resources::build_all(cluster, replicas, existing, secret::generate_token)
}

/// The cluster token the nodes were given.
pub fn token(desired: &Desired) -> String {
    secret::existing_token(Some(&desired.secret))
        .map(|t| String::from_utf8_lossy(&t.0).into_owned())
        .unwrap_or_default()
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

pub(super) async fn apply_one<K>(client: &Client, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug,
    K: Serialize + DeserializeOwned,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    Api::<K>::namespaced(client.clone(), ns)
        .patch(&name, &apply_params(), &Patch::Apply(obj))
        .await
        .map_err(|source| Error::Apply {
            object: format!("{} {name}", K::kind(&())),
            source,
        })
}

/// Applies every object, in an order where dependencies come first (the Secret and each shard's
/// ConfigMap the pods mount before the shard's StatefulSet). Keeps going after a failure so one bad object does
/// not block the others — nor the failover stage after it.
/// `delete_service_monitor`: whether a disabled ServiceMonitor may still exist (once it is known
/// to be gone, the delete is not repeated on every reconcile).
pub async fn apply_all(
    client: &Client,
    ns: &str,
    cluster: &str,
    d: &Desired,
    delete_service_monitor: bool,
) -> Applied {
    let mut results = vec![
        apply_one(client, ns, &d.secret).await.map(drop),
        apply_one(client, ns, &d.headless_service).await.map(drop),
        apply_one(client, ns, &d.client_service).await.map(drop),
    ];
    let mut statefulsets = Vec::new();
    for shard in &d.shards {
        results.extend([
            apply_one(client, ns, &shard.config_map).await.map(drop),
            apply_one(client, ns, &shard.rw_service).await.map(drop),
            apply_one(client, ns, &shard.ro_service).await.map(drop),
        ]);
        statefulsets.push(match apply_one(client, ns, &shard.statefulset).await {
            Ok(sts) => Some(sts),
            Err(e) => {
                results.push(Err(e));
                None
            }
        });
        results.push(apply_one(client, ns, &shard.pdb).await.map(drop));
    }
    results.push(
        service_monitor(
            client,
            ns,
            cluster,
            d.service_monitor.as_ref(),
            delete_service_monitor,
        )
        .await,
    );
    Applied {
        errors: results.into_iter().filter_map(Result::err).collect(),
        statefulsets,
    }
}

pub struct Applied {
    /// The objects that could not be applied.
    pub errors: Vec<Error>,
    /// Per shard, the StatefulSet as the API server returned it (its status carries the update
    /// revision).
    pub statefulsets: Vec<Option<StatefulSet>>,
}

/// Applies the ServiceMonitor, or deletes it when disabled. Without the prometheus-operator CRDs
/// the delete answers 404, which is the desired state.
async fn service_monitor(
    client: &Client,
    ns: &str,
    cluster: &str,
    sm: Option<&DynamicObject>,
    delete: bool,
) -> Result<(), Error> {
    let ar = servicemonitor::api_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let name = service_monitor_name(cluster);
    let object = format!("ServiceMonitor {name}");
    match sm {
        Some(sm) => api
            .patch(&name, &apply_params(), &Patch::Apply(sm))
            .await
            .map(|_| ())
            .map_err(|source| Error::Apply { object, source }),
        None if !delete => Ok(()),
        None => match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(source) => Err(Error::Apply { object, source }),
        },
    }
}
