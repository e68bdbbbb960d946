//! What goes over the wire between members, and the cluster settings a node starts with.

use super::commit::AckLevel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Cluster settings of this node, as it was started.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub me: String,
    /// Every member's client URL, including this node's, as given at start. Empty for a
    /// standalone node. The member list in force lives in the engine's core: the coordinator
    /// changes it with promote and follow, so it only ever changes together with the term.
    pub members: BTreeMap<String, String>,
    pub secret: Option<String>,
    /// The cluster's id; `None` for a node started without one (it takes no side).
    pub id: Option<String>,
    pub default_ack: AckLevel,
    /// How often an idle primary sends heartbeats.
    pub heartbeat: Duration,
    /// A primary that has not heard from a quorum for this long stops claiming to be primary for
    /// reads and reports not ready.
    pub lease: Duration,
    /// A replica further behind than this many entries reports not ready.
    pub ready_lag: u64,
}

impl Cluster {
    pub fn standalone(me: &str) -> Cluster {
        Cluster {
            me: me.to_string(),
            members: BTreeMap::new(),
            secret: None,
            id: None,
            default_ack: AckLevel::Quorum,
            heartbeat: Duration::from_millis(50),
            lease: Duration::from_millis(1000),
            ready_lag: 1000,
        }
    }
}

/// Header of an append request; the entries follow as checksummed frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppendHeader {
    pub term: u64,
    pub from: String,
    pub prev_index: u64,
    pub prev_term: u64,
    /// The primary's quorum commit index.
    pub commit: u64,
    pub primary_last_index: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppendResponse {
    pub term: u64,
    pub ok: bool,
    pub last_index: u64,
    pub durable_index: u64,
    pub applied_index: u64,
    /// Where the primary should resume after a mismatch.
    pub retry_from: Option<u64>,
    /// The replica cannot continue from its log: send a snapshot.
    pub need_snapshot: bool,
    pub error: Option<String>,
}

/// The member list: name → client URL, this node included.
pub type Members = BTreeMap<String, String>;

/// Body of fence / promote / follow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleCommand {
    pub term: u64,
    #[serde(default)]
    pub primary: Option<String>,
    /// promote / follow: the member list from this term on (absent: unchanged).
    #[serde(default)]
    pub members: Option<Members>,
}
