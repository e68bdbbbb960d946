//! Inputs and outputs of the failover decision: plain serde types, read from node `/v1/status`
//! answers and stored in the coordinator's durable record (resource status or playground state file).

use serde::{Deserialize, Serialize};

/// Write acknowledgement level of the cluster (DESIGN.md "Consistency"), from the wire contract,
/// with the quorum arithmetic the node's commit rule uses too.
///
/// The failover rules are safe for writes acknowledged at this level or a stronger one. A
/// request that asks for a weaker level than the cluster's is not protected by the quorum rule.
pub use rcluster_proto::AckLevel;
/// Roles a node reports in `/v1/status`, and `commit_by_ack` of a primary's status.
pub use rcluster_proto::{CommitByAck, Role};

/// Cluster settings the decision depends on (from the resource spec or the playground flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Member names, in ordinal order; the order breaks ties (the first member wins).
    pub members: Vec<String>,
    pub ack: AckLevel,
    /// How long the primary must be unreachable or unhealthy before a failover starts.
    pub detection_window_ms: u64,
    /// `async`/`one` only: promote the best responder even when too few answered, and report
    /// the possible loss. Ignored for `quorum` and `all`.
    #[serde(default)]
    pub allow_lossy_promotion: bool,
    /// How long writes may stay stopped for a planned switchover whose target still lacks
    /// acknowledged entries; then it is abandoned and an ordinary election runs (which keeps
    /// the old primary if it is still the best).
    #[serde(default = "default_switchover_timeout_ms")]
    pub switchover_timeout_ms: u64,
}

/// Default for [`Settings::switchover_timeout_ms`].
pub fn default_switchover_timeout_ms() -> u64 {
    10_000
}

/// What the coordinator observed about one member. A member without an observation counts as
/// unreachable.
///
/// For an unreachable member the caller may keep the log position it saw last: it is used only
/// to estimate a possible loss and to refuse promoting an empty log, never to choose a candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    #[serde(alias = "node")]
    pub name: String,
    #[serde(default = "yes")]
    pub reachable: bool,
    #[serde(default)]
    pub role: Role,
    /// The node's durable current term.
    #[serde(default)]
    pub term: u64,
    #[serde(default)]
    pub last_log_term: u64,
    #[serde(default)]
    pub last_log_index: u64,
    #[serde(default)]
    pub applied_index: u64,
    /// The primary this node replicates from (`/v1/status` calls it `primary`; a primary names
    /// itself there).
    #[serde(default, alias = "primary")]
    pub following: Option<String>,
    /// Since when (caller's clock, ms) the node has been unreachable or not ready; `None` when
    /// healthy. The runtime must remember the first failed probe: an unreachable primary without
    /// it counts as failing only from now on. Matters for the primary (detection window) and
    /// breaks ties between equally advanced candidates.
    #[serde(default)]
    pub unhealthy_since_ms: Option<u64>,
    /// Certain not to serve on, whatever it answers: its pod is being deleted or gone, or
    /// nothing listens at its address (its process is not running). No detection window is
    /// waited out for such a primary, and a member going away that still answers is promoted
    /// only when too few other members answer to elect without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
    /// The member list the node was given (empty: unknown).
    #[serde(default)]
    pub members: Vec<String>,
    /// A primary: the index of its term's first entry.
    #[serde(default)]
    pub term_start: u64,
    /// A primary: the highest index acknowledged at each ack level.
    #[serde(default)]
    pub commit_by_ack: Option<CommitByAck>,
}

fn yes() -> bool {
    true
}

impl Observation {
    /// Position of the node's last entry; the higher one holds more of the history
    /// (a higher last term wins, then a longer log).
    pub fn log_position(&self) -> (u64, u64) {
        (self.last_log_term, self.last_log_index)
    }
}

/// A planned switchover in progress: writes on `from` are stopped, `to` catches up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switchover {
    pub from: String,
    pub to: String,
    /// When writes on `from` were stopped (caller's clock, ms).
    pub started_ms: u64,
}

/// The coordinator's durable record. It changes only through [`Coordinator::after`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinator {
    /// The highest term the coordinator has handed out.
    pub term: u64,
    /// The node promoted in `term`; `None` while an election or switchover is in progress.
    #[serde(default)]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<Switchover>,
    /// The member list in force: what the nodes were given in `term`. Empty: the settings'
    /// members (a record written before the first member change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// While a member change is not known to be committed: the list before it. Until then an
    /// acknowledged entry may be held only by a write quorum of the old list, so elections must
    /// hear from enough members of both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_members: Option<Vec<String>>,
}

/// Everything a decision looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub settings: Settings,
    pub coordinator: Coordinator,
    pub observations: Vec<Observation>,
    /// The caller's clock, in the same unit and origin as the `*_ms` fields.
    pub now_ms: u64,
}

/// One step for the runtime. Before the first node command, persist
/// `coordinator.after(&actions)` (with optimistic concurrency: when the record changed since the
/// probe, run nothing and decide again). Then send the node commands in order; one that fails
/// is simply repeated by a later decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Record a new term and forget the primary (and any switchover): an election starts.
    BumpTerm { to: u64 },
    /// Record a new term and a switchover in progress (a planned change of primary).
    BeginSwitchover {
        from: String,
        to: String,
        term: u64,
        started_ms: u64,
    },
    /// Send `term` to these nodes: they stop accepting writes and stop following anyone of an
    /// older term.
    Fence { nodes: Vec<String>, term: u64 },
    /// Make `node` primary of `term`; recorded as the coordinator's primary.
    Promote { node: String, term: u64 },
    /// Make `node` replicate from `primary` in `term`. A node whose log diverges (an old
    /// primary's unreplicated suffix) truncates back to the common entry and re-fetches.
    Follow {
        node: String,
        primary: String,
        term: u64,
    },
    /// Record `members` as the member list from `term` on (and `from`, the list before, until
    /// the change is committed). The promote and follow commands that follow carry the list.
    ChangeMembers {
        from: Vec<String>,
        members: Vec<String>,
        term: u64,
    },
    /// The primary committed an entry of the term that changed the members at the cluster's
    /// ack level: the old list no longer matters.
    MembersCommitted,
    /// Nothing safe to do yet; retry later.
    Wait { reason: WaitReason },
    /// A lossy promotion (`allow_lossy_promotion`) of `promoted`: acknowledged entries may be
    /// lost. `entries` is how many entries `longest` (a member that did not answer) was last
    /// seen holding beyond `promoted`, a lower bound; `None` when no such position is known.
    ReportPossibleLoss {
        promoted: String,
        longest: Option<String>,
        entries: Option<u64>,
    },
}

impl Action {
    /// The term this action records durably, if it is one of the term-changing actions.
    pub fn new_term(&self) -> Option<u64> {
        match self {
            Action::BumpTerm { to } => Some(*to),
            Action::BeginSwitchover { term, .. } => Some(*term),
            Action::ChangeMembers { term, .. } => Some(*term),
            _ => None,
        }
    }
}

/// Why a decision waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum WaitReason {
    /// The settings or observations are unusable.
    InvalidInput { problem: String },
    /// The primary is failing but not yet for the whole detection window.
    WithinDetectionWindow { primary: String, remaining_ms: u64 },
    /// Too few members acknowledged the current term to be sure every acknowledged entry is
    /// among them.
    TooFewResponders { have: usize, need: usize },
    /// Every responder has an empty log while some member is known to hold entries: an empty
    /// log never wins a promotion.
    OnlyEmptyLogs { longest_known: u64 },
    /// Lossy promotion waits until every reachable member has acknowledged the term, so that
    /// the best of them is chosen.
    FencePending { nodes: Vec<String> },
    /// The switchover target is not ready yet (before the fence), or still lacks entries that
    /// may have been acknowledged (after it).
    SwitchoverCatchingUp {
        target: String,
        target_index: u64,
        primary_index: u64,
    },
    /// The old primary has not acknowledged the switchover's term yet.
    SwitchoverFencing { primary: String },
    /// A member change waits until the primary commits its term's first entry.
    MembersCommitting { term_start: u64, committed: u64 },
}

/// Result of one call to [`plan_switchover`](super::plan_switchover).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum SwitchoverStep {
    /// Run these actions (as for `decide`) and call again.
    Proceed { actions: Vec<Action> },
    /// The target is the primary.
    Done { primary: String, term: u64 },
    /// The switchover was given up; `actions` start an ordinary election (which keeps the old
    /// primary when it is still the best). Go back to `decide`.
    Abandoned {
        problem: SwitchoverProblem,
        actions: Vec<Action>,
    },
    /// The switchover cannot start; nothing changes.
    Rejected { problem: SwitchoverProblem },
}

/// Why a switchover cannot start or go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SwitchoverProblem {
    InvalidInput {
        problem: String,
    },
    /// There is no healthy primary to hand over from; failover handles this cluster.
    NoHealthyPrimary,
    NotAMember {
        node: String,
    },
    Unreachable {
        node: String,
    },
    /// The target does not replicate from the current primary, so it would never catch up.
    TargetNotFollowing {
        target: String,
    },
    /// No reachable replica of the current primary could take over.
    NoCandidate,
    /// Another switchover is in progress.
    OtherSwitchoverInProgress {
        to: String,
    },
    /// The target did not catch up within `switchover_timeout_ms`.
    TimedOut {
        target: String,
        behind: u64,
    },
    /// The old primary answers in the switchover's term but still claims to be primary.
    PrimaryNotFenced {
        primary: String,
    },
}

impl Coordinator {
    /// The durable record after `actions` (what the runtime persists before acting).
    pub fn after(&self, actions: &[Action]) -> Coordinator {
        let mut next = self.clone();
        for action in actions {
            match action {
                Action::BumpTerm { to } => {
                    next.term = *to;
                    next.primary = None;
                    next.switchover = None;
                }
                Action::BeginSwitchover {
                    from,
                    to,
                    term,
                    started_ms,
                } => {
                    next.term = *term;
                    next.primary = None;
                    next.switchover = Some(Switchover {
                        from: from.clone(),
                        to: to.clone(),
                        started_ms: *started_ms,
                    });
                }
                Action::Promote { node, .. } => {
                    next.primary = Some(node.clone());
                    next.switchover = None;
                }
                Action::ChangeMembers {
                    from,
                    members,
                    term,
                } => {
                    next.term = *term;
                    next.primary = None;
                    next.switchover = None;
                    next.members = members.clone();
                    next.previous_members = Some(from.clone());
                }
                Action::MembersCommitted => next.previous_members = None,
                _ => {}
            }
        }
        next
    }
}
