//! Builders for the table tests: short enough that each case reads as one line per member.

use super::*;

pub fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

pub fn view(n: usize, ack: AckLevel) -> ClusterView {
    ClusterView {
        settings: Settings {
            members: names(n),
            ack,
            detection_window_ms: 5_000,
            allow_lossy_promotion: false,
            switchover_timeout_ms: 60_000,
        },
        coordinator: Coordinator::default(),
        observations: Vec::new(),
        now_ms: 100_000,
    }
}

pub trait ViewExt {
    fn coord(self, term: u64, primary: Option<&str>) -> Self;
    fn with(self, obs: Observation) -> Self;
    fn lossy(self) -> Self;
    fn now(self, ms: u64) -> Self;
}

impl ViewExt for ClusterView {
    fn coord(mut self, term: u64, primary: Option<&str>) -> Self {
        self.coordinator.term = term;
        self.coordinator.primary = primary.map(str::to_string);
        self
    }
    fn with(mut self, obs: Observation) -> Self {
        self.observations.push(obs);
        self
    }
    fn lossy(mut self) -> Self {
        self.settings.allow_lossy_promotion = true;
        self
    }
    fn now(mut self, ms: u64) -> Self {
        self.now_ms = ms;
        self
    }
}

fn node(name: &str, role: Role, term: u64) -> Observation {
    Observation {
        name: name.to_string(),
        reachable: true,
        role,
        term,
        last_log_term: term,
        last_log_index: 0,
        applied_index: 0,
        following: None,
        unhealthy_since_ms: None,
        gone: false,
        members: Vec::new(),
        term_start: 0,
        commit_by_ack: None,
    }
}

/// Primary of `term` whose last entry is (term, index).
pub fn primary(name: &str, term: u64, index: u64) -> Observation {
    node(name, Role::Primary, term).log(term, index)
}

/// Replica in `term` following `of`, last entry (term, index).
pub fn replica(name: &str, term: u64, index: u64, of: &str) -> Observation {
    let mut o = node(name, Role::Replica, term).log(term, index);
    o.following = Some(of.to_string());
    o
}

/// Fenced in `term`, with its log ending at (last_term, index).
pub fn fenced(name: &str, term: u64, last_term: u64, index: u64) -> Observation {
    node(name, Role::Fenced, term).log(last_term, index)
}

/// Did not answer; nothing remembered.
pub fn down(name: &str) -> Observation {
    let mut o = node(name, Role::Unknown, 0);
    o.reachable = false;
    o
}

pub trait ObsExt {
    fn log(self, last_term: u64, index: u64) -> Self;
    fn unhealthy(self, since_ms: u64) -> Self;
    fn unreachable(self) -> Self;
    fn gone(self) -> Self;
}

impl ObsExt for Observation {
    fn log(mut self, last_term: u64, index: u64) -> Self {
        self.last_log_term = last_term;
        self.last_log_index = index;
        self.applied_index = index;
        self
    }
    fn unhealthy(mut self, since_ms: u64) -> Self {
        self.unhealthy_since_ms = Some(since_ms);
        self
    }
    fn unreachable(mut self) -> Self {
        self.reachable = false;
        self
    }
    fn gone(mut self) -> Self {
        self.gone = true;
        self
    }
}

pub fn bump(to: u64) -> Action {
    Action::BumpTerm { to }
}

pub fn fence(nodes: &[&str], term: u64) -> Action {
    Action::Fence {
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        term,
    }
}

pub fn promote(node: &str, term: u64) -> Action {
    Action::Promote {
        node: node.to_string(),
        term,
    }
}

pub fn follow(node: &str, primary: &str, term: u64) -> Action {
    Action::Follow {
        node: node.to_string(),
        primary: primary.to_string(),
        term,
    }
}

pub fn wait(reason: WaitReason) -> Action {
    Action::Wait { reason }
}
