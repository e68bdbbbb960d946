//! `rcluster-operator stop-operators`: scales the operator's Deployment to zero and waits until
//! its pods are gone. The Helm chart runs it as a `pre-delete` hook, so at `helm uninstall` every
//! operator stops (and the leader releases its Lease) while the chart's RBAC still exists; without
//! it Helm deletes the Role and the Deployment at once, and the stopping operators' last requests
//! (the Lease release among them) are refused.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tokio::time::Instant;

use super::error::is_status;
use crate::resources::FIELD_MANAGER;

#[derive(clap::Args, Debug, Clone)]
pub struct StopArgs {
    /// The operator's Deployment.
    #[arg(long)]
    pub deployment: String,
    /// Its namespace. Default: the pod's own (POD_NAMESPACE), else the client's.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// How long to wait for the operator pods to go.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

/// How often the pods are listed while waiting.
const POLL: Duration = Duration::from_secs(1);

/// What stopping did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The Deployment does not exist: nothing runs that could be stopped.
    NoDeployment,
    /// Scaled to zero, and none of its pods is left.
    PodsGone,
}

/// Scales `deployment` to zero and waits (at most `timeout`) until no pod its selector selects
/// exists, terminating ones included: a terminating operator may still release its Lease.
pub async fn stop(
    client: Client,
    namespace: &str,
    deployment: &str,
    timeout: Duration,
) -> Result<Stopped, String> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(found) = deployments
        .get_opt(deployment)
        .await
        .map_err(|e| format!("cannot read deployment {namespace}/{deployment}: {e}"))?
    else {
        return Ok(Stopped::NoDeployment);
    };
    let selector = found
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .ok_or_else(|| {
            format!("deployment {namespace}/{deployment} has no matchLabels selector")
        })?;
    let scale = serde_json::json!({"spec": {"replicas": 0}});
    match deployments
        .patch_scale(
            deployment,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            },
            &Patch::Merge(&scale),
        )
        .await
    {
        Ok(_) => {}
        // Deleted meanwhile: its pods go with it; wait for them all the same.
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(format!("cannot scale {namespace}/{deployment} to 0: {e}")),
    }
    tracing::info!(%namespace, %deployment, "scaled to 0; waiting for the operator pods to stop");
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let left = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| format!("cannot list the pods of {namespace}/{deployment}: {e}"))?;
        if left.items.is_empty() {
            return Ok(Stopped::PodsGone);
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = left.items.iter().map(|p| p.name_any()).collect();
            return Err(format!(
                "the pods of {namespace}/{deployment} are still there after {timeout:?}: {}",
                names.join(", ")
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn run(args: StopArgs) -> Result<(), String> {
    super::telemetry::init_tracing("info", false)?;
    let client = Client::try_default()
        .await
        .map_err(|e| format!("cannot configure the Kubernetes client: {e}"))?;
    let namespace = args
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    match stop(client, &namespace, &args.deployment, timeout).await? {
        Stopped::NoDeployment => {
            tracing::info!(%namespace, deployment = %args.deployment, "no such deployment: nothing to stop")
        }
        Stopped::PodsGone => {
            tracing::info!(%namespace, deployment = %args.deployment, "operators stopped")
        }
    }
    Ok(())
}

pub fn main(args: StopArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rcluster-operator: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcluster-operator: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[path = "stop_tests.rs"]
mod tests;
