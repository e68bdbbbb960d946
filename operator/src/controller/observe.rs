//! Observe stage: member pods (by label) and each node's `/v1/status`, turned into the failover
//! module's [`ClusterView`].

use std::collections::BTreeMap;

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::context::{Context, MemberAddress};
use crate::coordinator::{Probe, keep_running};
use crate::crd::{AckMode, ROLE_LABEL, ReplicatedClusterSpec, ReplicatedClusterStatus};
use crate::failover::{
    AckLevel, ClusterView, Coordinator, Observation, Settings, Switchover,
    default_switchover_timeout_ms,
};
use crate::nodes::{NodeClient, NodeStatus};
use crate::resources::{ordinal, pod_name, pod_selector_string};

/// The label the StatefulSet controller puts on each pod: the name of the revision (the
/// ControllerRevision) of the template it was created from, as in `status.updateRevision`.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// What the controller needs from a member pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    /// The pod's `Ready` condition (the kubelet's view of `/readyz`).
    pub ready: bool,
    pub ip: Option<String>,
    /// Current value of the `rcluster.dev/role` label.
    pub role_label: Option<String>,
    /// Being deleted: it is going away, whatever it answers.
    pub terminating: bool,
    /// The StatefulSet revision the pod was created from (`controller-revision-hash`).
    pub revision: Option<String>,
    pub uid: Option<String>,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        PodInfo {
            name: pod.name_any(),
            ready,
            ip: status.and_then(|s| s.pod_ip.clone()),
            role_label: pod.labels().get(ROLE_LABEL).cloned(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            revision: pod.labels().get(REVISION_LABEL).cloned(),
            uid: pod.metadata.uid.clone(),
        }
    }
}

/// One member as observed in this reconcile.
#[derive(Clone, Debug, Default)]
pub struct Member {
    pub name: String,
    pub pod: Option<PodInfo>,
    pub url: Option<String>,
    /// The node's status; `None` when it did not answer.
    pub node: Option<NodeStatus>,
    /// Why the probe failed, for logs and status messages.
    pub error: Option<String>,
    /// Nothing listened at the pod's address: its process is not running.
    pub refused: bool,
}

impl Member {
    /// Answers, reports ready, and its pod is not going away.
    pub fn healthy(&self) -> bool {
        self.node.as_ref().is_some_and(|n| n.ready)
            && !self.pod.as_ref().is_some_and(|p| p.terminating)
    }

    /// Certain not to serve on: its pod is being deleted or does not exist, or its process is
    /// not running (a restarted process comes back without its role).
    pub fn gone(&self) -> bool {
        self.refused || self.pod.as_ref().is_none_or(|p| p.terminating)
    }

    /// Ready for clients: the node says so and so does the pod (the Services route on the latter).
    pub fn ready(&self) -> bool {
        self.healthy() && self.pod.as_ref().is_some_and(|p| p.ready)
    }

    /// This probe as the coordinator runtime takes it in (probed at `now_ms`).
    pub fn probe(&self, now_ms: u64) -> Probe {
        Probe {
            name: self.name.clone(),
            status: self.node.clone(),
            error: self.error.clone(),
            healthy: self.healthy(),
            gone: self.gone(),
            sent_ms: now_ms,
            answered_ms: now_ms,
            restarts: 0,
        }
    }
}

pub async fn list_pods(
    client: &Client,
    ns: &str,
    cluster: &str,
) -> Result<Vec<PodInfo>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&pod_selector_string(cluster)))
        .await?;
    Ok(list.items.iter().map(PodInfo::from_pod).collect())
}

/// How many pods the cluster has now: the spec's count, except that a scale-down never removes
/// the primary (it is switched over first) nor a member of the list in force or of an
/// uncommitted change (it may hold the only copy of acknowledged entries; it goes once the
/// change that removes it is committed), and never shrinks the cluster while it has no primary.
pub fn effective_replicas(
    cluster: &str,
    spec_replicas: i32,
    record: &Coordinator,
    pods: &[PodInfo],
) -> i32 {
    let spec = spec_replicas.max(1);
    let desired = member_names(cluster, spec);
    let running: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
    keep_running(&desired, record, &running)
        .into_iter()
        .filter_map(|m| ordinal(cluster, m))
        .map(|o| o + 1)
        .fold(spec, i32::max)
}

/// The member list the nodes run with when the status has none: a new cluster's nodes start
/// with the spec's; a status written before member lists were recorded had the pods that exist
/// (each node read the list when it started).
pub fn initial_members(
    cluster: &str,
    spec_replicas: i32,
    status: Option<&ReplicatedClusterStatus>,
    pods: &[PodInfo],
) -> Vec<String> {
    let spec = spec_replicas.max(1);
    let running = status.is_some_and(|s| s.term > 0);
    let n = if running {
        pods.iter()
            .filter_map(|p| ordinal(cluster, &p.name))
            .map(|o| o + 1)
            .chain(
                status
                    .and_then(|s| s.primary.as_deref())
                    .and_then(|p| ordinal(cluster, p))
                    .map(|o| o + 1),
            )
            .fold(spec, i32::max)
    } else {
        spec
    };
    member_names(cluster, n)
}

pub fn member_names(cluster: &str, replicas: i32) -> Vec<String> {
    (0..replicas.max(0)).map(|i| pod_name(cluster, i)).collect()
}

/// Probes every member's node concurrently. Members without a pod or an address are not probed.
pub async fn probe(
    ctx: &Context,
    nodes: &NodeClient,
    ns: &str,
    cluster: &str,
    tls: bool,
    names: &[String],
    pods: &[PodInfo],
) -> Vec<Member> {
    let by_name: BTreeMap<&str, &PodInfo> = pods.iter().map(|p| (p.name.as_str(), p)).collect();
    let probes = names.iter().map(|name| {
        let pod = by_name.get(name.as_str()).map(|p| (*p).clone());
        let url = pod.as_ref().and_then(|p| {
            (ctx.node_url)(&MemberAddress {
                namespace: ns,
                cluster,
                pod: name,
                pod_ip: p.ip.as_deref(),
                tls,
            })
        });
        async move {
            let mut m = Member {
                name: name.clone(),
                pod,
                url,
                ..Member::default()
            };
            match (&m.pod, &m.url) {
                (None, _) => m.error = Some("no pod".into()),
                (Some(_), None) => m.error = Some("pod has no IP yet".into()),
                (Some(_), Some(url)) => match nodes.status(url).await {
                    Ok(s) => m.node = Some(s),
                    Err(e) => {
                        m.refused = e.refused();
                        m.error = Some(e.to_string());
                    }
                },
            }
            m
        }
    });
    join_all(probes).await
}

pub fn ack_level(ack: AckMode) -> AckLevel {
    ack.into()
}

pub fn settings(spec: &ReplicatedClusterSpec, members: Vec<String>) -> Settings {
    let window: std::time::Duration = spec.failover.detection_window.into();
    Settings {
        members,
        ack: ack_level(spec.replication.ack),
        detection_window_ms: window.as_millis() as u64,
        allow_lossy_promotion: spec.failover.allow_data_loss,
        switchover_timeout_ms: default_switchover_timeout_ms(),
    }
}

/// The coordinator's record, from the resource status. A status without a member list (a new
/// cluster) starts with `initial_members`: the members the nodes were started with.
pub fn coordinator(
    status: Option<&ReplicatedClusterStatus>,
    initial_members: &[String],
) -> Coordinator {
    let Some(s) = status else {
        return Coordinator {
            members: initial_members.to_vec(),
            ..Coordinator::default()
        };
    };
    Coordinator {
        term: s.term.max(0) as u64,
        primary: s.primary.clone(),
        switchover: s.switchover.as_ref().map(|sw| Switchover {
            from: sw.from.clone(),
            to: sw.to.clone(),
            started_ms: sw.started_ms.max(0) as u64,
        }),
        members: if s.member_list.is_empty() {
            initial_members.to_vec()
        } else {
            s.member_list.clone()
        },
        previous_members: s.previous_member_list.clone(),
    }
}

/// Everything the decision looks at. The settings' members (the desired list) are those the
/// spec keeps; `observations` come from the coordinator runtime's probe round.
pub fn view(
    cluster: &str,
    spec: &ReplicatedClusterSpec,
    coordinator: Coordinator,
    observations: Vec<Observation>,
    now_ms: u64,
) -> ClusterView {
    let desired = member_names(cluster, spec.replicas.max(1));
    ClusterView {
        settings: settings(spec, desired),
        coordinator,
        observations,
        now_ms,
    }
}

#[cfg(test)]
#[path = "observe_tests.rs"]
pub(crate) mod tests;
