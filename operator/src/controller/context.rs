//! What every reconcile shares: the API client, metrics, the event recorder, how to reach a
//! node, the clock, and the controller's memory of each cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::Client;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;

use crate::crd::ReplicatedCluster;

use rcluster_proto::{ClusterMap, ShardId};

use crate::coordinator::{FailoverCount, History, Runtime};
use crate::crd::SecurityStatus;
use crate::metrics::Metrics;
use crate::resources::NODE_PORT;

/// Where a member pod is, for building the URL of its node.
#[derive(Clone, Copy, Debug)]
pub struct MemberAddress<'a> {
    pub namespace: &'a str,
    pub cluster: &'a str,
    pub pod: &'a str,
    pub pod_ip: Option<&'a str>,
    /// The cluster's nodes serve https (`spec.tls`).
    pub tls: bool,
}

/// Base URL of a member's node (`http://host:port`, no trailing slash); `None`: not reachable.
pub type NodeUrl = Arc<dyn Fn(&MemberAddress) -> Option<String> + Send + Sync>;
/// URL other nodes reach a member at (what promote and follow carry in the member list).
pub type PeerUrl = Arc<dyn Fn(&MemberAddress) -> Option<String> + Send + Sync>;

/// The default: the pod's stable DNS name under the headless Service, as in the ConfigMap.
pub fn headless_url(addr: &MemberAddress) -> Option<String> {
    crate::resources::member_of(addr.cluster, addr.pod)?;
    Some(crate::resources::member_url(
        addr.cluster,
        addr.namespace,
        addr.pod,
        addr.tls,
    ))
}

/// Milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The default: the pod IP and the node port. The headless DNS name would also work inside the
/// cluster, but a pod without an IP has no running node, and DNS adds a lookup (and its failure
/// modes) to every probe. With TLS, the headless DNS name all the same (still only for a pod with
/// an IP): the certificate names the hosts, not the pod IPs, which are not known when it is issued.
pub fn pod_ip_url(addr: &MemberAddress) -> Option<String> {
    let ip = addr.pod_ip.filter(|ip| !ip.is_empty())?;
    if addr.tls {
        return headless_url(addr);
    }
    Some(if ip.contains(':') {
        format!("http://[{ip}]:{NODE_PORT}")
    } else {
        format!("http://{ip}:{NODE_PORT}")
    })
}

pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// Timeouts of node calls. Short on purpose: a dead node must cost a reconcile at most this long
/// (no reliance on TCP retries), and probes run concurrently.
#[derive(Clone, Copy, Debug)]
pub struct NodeTimeouts {
    pub probe: Duration,
    pub command: Duration,
}

impl Default for NodeTimeouts {
    fn default() -> Self {
        NodeTimeouts {
            probe: Duration::from_millis(1000),
            command: Duration::from_millis(3000),
        }
    }
}

/// What the controller remembers about one cluster between reconciles. Lost on restart, which
/// costs little: failure timers start again (a failover waits one more detection window). The
/// term, primary, member list and a switchover in progress live in the resource status.
#[derive(Debug, Default)]
pub struct ClusterMemory {
    /// Per shard, the coordinator runtime of its replica group: failure clocks, last answers, the
    /// failover being measured.
    pub shards: BTreeMap<ShardId, ShardMemory>,
    /// The disabled ServiceMonitor is known to be gone (deleted, or never there).
    pub service_monitor_gone: bool,
    /// The cluster map each node took, by pod, with the pod's uid: a new pod (or a changed map)
    /// is sent it again.
    pub pushed: BTreeMap<String, (String, ClusterMap)>,
    /// The resharding's task and its mover.
    pub reshard: crate::reshard::ReshardMemory,
}

/// What the controller remembers about one shard.
#[derive(Debug)]
pub struct ShardMemory {
    pub runtime: Runtime,
    /// Lasting situations the last reconcile reported (`events::lasting`): each gets one
    /// event when it begins, not one per reconcile.
    pub reported: Vec<String>,
}

impl Default for ShardMemory {
    fn default() -> Self {
        ShardMemory {
            // The nodes ran before this controller did: a primary that fails before it was seen
            // healthy is a failover all the same.
            runtime: Runtime::new(FailoverCount::Always, History::default()),
            reported: Vec::new(),
        }
    }
}

/// One cluster's memory, held by its reconcile for the whole reconcile (kube runs one reconcile
/// of an object at a time, so nothing ever waits on it).
pub type SharedMemory = Arc<tokio::sync::Mutex<ClusterMemory>>;

pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    /// Who publishes events. A recorder is made per reconcile: kube's recorder folds events with
    /// the same reason into one series that keeps the first note, which would hide what changed.
    pub reporter: Reporter,
    pub node_url: NodeUrl,
    pub peer_url: PeerUrl,
    pub clock: Clock,
    pub timeouts: NodeTimeouts,
    /// TLS and tokens of a new cluster whose spec does not say (`crd::security`): on.
    pub security_default: SecurityStatus,
    /// Keyed by `namespace/name`, with the uid of the cluster it belongs to.
    pub memory: Mutex<BTreeMap<String, (String, SharedMemory)>>,
    /// Asks for a cluster's reconcile now (a migration task finished): every controller hears
    /// it and reconciles the clusters it watches.
    pub wake: tokio::sync::broadcast::Sender<ObjectRef<ReplicatedCluster>>,
}

/// Name of the operator in events (`reportingController`).
pub const REPORTER: &str = "rcluster-operator";

impl Context {
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Context {
        let reporter = Reporter {
            controller: REPORTER.to_string(),
            instance,
        };
        Context {
            reporter,
            client,
            metrics,
            node_url: Arc::new(pod_ip_url),
            peer_url: Arc::new(headless_url),
            clock: system_clock(),
            timeouts: NodeTimeouts::default(),
            security_default: SecurityStatus::ON,
            memory: Mutex::new(BTreeMap::new()),
            wake: tokio::sync::broadcast::channel(64).0,
        }
    }

    /// A function that asks for `cluster`'s reconcile now.
    pub fn waker(&self, cluster: &ReplicatedCluster) -> impl Fn() + Send + 'static {
        let wake = self.wake.clone();
        let obj = ObjectRef::from_obj(cluster);
        move || {
            // No receiver (a test without controllers): the periodic requeue does it.
            let _ = wake.send(obj.clone());
        }
    }

    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// The memory of `key`, afresh when `uid` changed: a cluster deleted and created again
    /// under the same name starts anew.
    pub fn memory_of(&self, key: &str, uid: &str) -> SharedMemory {
        let mut all = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let entry = all
            .entry(key.to_string())
            .or_insert_with(|| (uid.to_string(), SharedMemory::default()));
        if entry.0 != uid {
            *entry = (uid.to_string(), SharedMemory::default());
        }
        entry.1.clone()
    }

    /// Drops the memory of clusters that no longer exist.
    pub fn retain_memory(&self, keep: impl Fn(&str) -> bool) {
        let mut all = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: Option<&str>) -> MemberAddress<'_> {
        MemberAddress {
            namespace: "shop",
            cluster: "demo",
            pod: "demo-0",
            pod_ip: ip,
            tls: false,
        }
    }

    #[test]
    fn node_url_uses_the_pod_ip() {
        assert_eq!(
            pod_ip_url(&addr(Some("10.1.2.3"))).as_deref(),
            Some("http://10.1.2.3:7000")
        );
        assert_eq!(
            pod_ip_url(&addr(Some("fd00::5"))).as_deref(),
            Some("http://[fd00::5]:7000")
        );
        assert_eq!(pod_ip_url(&addr(None)), None);
        assert_eq!(pod_ip_url(&addr(Some(""))), None);
        // With TLS, the name the certificate is valid for, once the pod has an IP.
        let tls = |ip| MemberAddress {
            tls: true,
            ..addr(ip)
        };
        assert_eq!(
            pod_ip_url(&tls(Some("10.1.2.3"))).as_deref(),
            Some("https://demo-0.demo-headless.shop.svc:7000")
        );
        assert_eq!(pod_ip_url(&tls(None)), None);
    }
}
