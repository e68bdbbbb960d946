//! Failover decisions (DESIGN.md "Failover"): observed members + cluster settings ⇒ actions.
//!
//! Pure and sans-IO: no clock reads, no network. The runtime (controller or playground) probes
//! every member, builds a [`ClusterView`], calls [`decide`] (or [`plan_switchover`] while a
//! planned switchover is requested), persists [`Coordinator::after`] durably and then runs the
//! node commands in order. It calls again on the next probe; every call is level-based, so a
//! runtime that crashed half-way simply repeats the missing steps.
//!
//! An election takes two calls on purpose. The first bumps the term and fences every reachable
//! member; the candidate is chosen only from members that already answer in the new term. A
//! fenced member rejects the old primary, so the log positions it reports can no longer grow
//! behind the coordinator's back (a partitioned old primary could otherwise commit an entry to
//! a replica between the probe and the promotion).
//!
//! Safety argument: an entry acknowledged at the cluster's ack level is on `write_quorum`
//! members. A candidate is chosen only when at least `members - write_quorum + 1` members answer
//! in the new term, so one of them holds that entry, and the member with the highest (last log
//! term, last log index) holds everything any responder holds (the log-matching property the
//! node keeps by truncating divergent suffixes).
//!
//! Interface assumptions for the node (all hold for `rcluster-node` today):
//! - Terms are durable; a node never lowers its term and rejects messages of an older term.
//! - A new primary commits an entry of its own term before counting replicas for older entries
//!   (Raft §5.4.2): `promote` appends an empty entry at once.
//! - `write_quorum` matches the node's commit rule for the cluster's ack level, `all` meaning
//!   every member. Writes acknowledged at a weaker level than the cluster's are not protected.
//! - A fenced node stops accepting writes. A fenced former primary keeps shipping the log it
//!   has to the replicas of its old term (a switchover target catches up that way), and a write
//!   waiting there is acknowledged if that completes its quorum: its replicas' logs are final
//!   only once they are fenced too.
//! - A node that never had a term adopts no primary that contacts it; it waits for `follow`.

mod coordinate;
mod describe;
mod election;
mod membership;
mod switchover;
mod types;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests_decide;
#[cfg(test)]
mod tests_membership;
#[cfg(test)]
mod tests_switchover;

pub use coordinate::{Decision, SwitchoverOutcome, coordinate, handover_target};
pub use types::*;

/// What to do now. An empty list means the cluster is healthy and nothing needs doing.
///
/// When the list contains a term change ([`Action::new_term`]) it is the first action.
pub fn decide(view: &ClusterView) -> Vec<Action> {
    match Members::new(view) {
        Ok(members) => election::decide(&members),
        Err(problem) => vec![Action::Wait {
            reason: WaitReason::InvalidInput { problem },
        }],
    }
}

/// One step of a planned switchover to `target` (`None`: the most advanced replica). Call it
/// again after running the actions until it returns `Done`, `Abandoned` or `Rejected`. Pass the
/// target recorded in the first step's [`Action::BeginSwitchover`]: with `None` and a healthy
/// primary a new switchover starts. While a switchover is recorded, [`decide`] continues it too.
pub fn plan_switchover(view: &ClusterView, target: Option<&str>) -> SwitchoverStep {
    match Members::new(view) {
        Ok(members) => switchover::plan(&members, target),
        Err(problem) => SwitchoverStep::Rejected {
            problem: SwitchoverProblem::InvalidInput { problem },
        },
    }
}

/// The member change to make now, if any (call it when [`decide`] has nothing to do): record a
/// new member list in a new term and re-promote the primary with it, or record that the last
/// change is committed. Members join once they answer; the primary never leaves (a runtime
/// switches over first).
pub fn plan_members(view: &ClusterView) -> Vec<Action> {
    match Members::new(view) {
        Ok(members) => membership::plan(&members, &view.settings.members),
        Err(problem) => vec![Action::Wait {
            reason: WaitReason::InvalidInput { problem },
        }],
    }
}

/// The view, validated and indexed by member (observations of non-members are ignored).
struct Members<'a> {
    settings: &'a Settings,
    coordinator: &'a Coordinator,
    now_ms: u64,
    /// The member list in force: the coordinator's, or the settings' before the first change.
    config: &'a [String],
    /// One slot per member of `config`, in order.
    observed: Vec<Option<&'a Observation>>,
    /// While a member change is not committed: the previous list, one slot per member.
    previous: Option<(&'a [String], Vec<Option<&'a Observation>>)>,
    all: &'a [Observation],
}

/// Whether two member lists name the same members (nodes list them sorted by name).
fn same_members(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

fn check_list(list: &[String]) -> Result<(), String> {
    if list.is_empty() {
        return Err("the cluster has no members".into());
    }
    for (i, name) in list.iter().enumerate() {
        if name.is_empty() {
            return Err(format!("member {i} has an empty name"));
        }
        if list[..i].contains(name) {
            return Err(format!("member {name} is listed twice"));
        }
    }
    Ok(())
}

impl<'a> Members<'a> {
    fn new(view: &'a ClusterView) -> Result<Self, String> {
        let settings = &view.settings;
        let co = &view.coordinator;
        let config: &[String] = if co.members.is_empty() {
            &settings.members
        } else {
            &co.members
        };
        check_list(config)?;
        for (i, obs) in view.observations.iter().enumerate() {
            if view.observations[..i].iter().any(|o| o.name == obs.name) {
                return Err(format!("member {} is observed twice", obs.name));
            }
        }
        let slots = |list: &[String]| -> Vec<Option<&'a Observation>> {
            list.iter()
                .map(|name| view.observations.iter().find(|o| o.name == *name))
                .collect()
        };
        let previous = match &co.previous_members {
            Some(list) => {
                check_list(list)?;
                Some((list.as_slice(), slots(list)))
            }
            None => None,
        };
        Ok(Members {
            settings,
            coordinator: co,
            now_ms: view.now_ms,
            config,
            observed: slots(config),
            previous,
            all: &view.observations,
        })
    }

    fn term(&self) -> u64 {
        self.coordinator.term
    }

    fn get(&self, name: &str) -> Option<&'a Observation> {
        let i = self.config.iter().position(|m| m == name)?;
        self.observed[i]
    }

    fn is_member(&self, name: &str) -> bool {
        self.config.iter().any(|m| m == name)
    }

    /// Members of the previous list that left in the uncommitted change and answered.
    fn leaving_reachable(&self) -> impl Iterator<Item = &'a Observation> + '_ {
        self.previous
            .iter()
            .flat_map(|(_, slots)| slots.iter().flatten().copied())
            .filter(|o| o.reachable && !self.is_member(&o.name))
    }

    /// Every member of the current and the previous list that answered.
    fn reachable_any(&self) -> impl Iterator<Item = &'a Observation> + '_ {
        self.reachable().chain(self.leaving_reachable())
    }

    /// Observations of the current and the previous list, answering or remembered.
    fn known(&self) -> impl Iterator<Item = &'a Observation> + '_ {
        self.all
            .iter()
            .filter(|o| self.is_member(&o.name) || self.was_member(&o.name))
    }

    fn was_member(&self, name: &str) -> bool {
        self.previous
            .as_ref()
            .is_some_and(|(list, _)| list.iter().any(|m| m == name))
    }

    fn reachable_get(&self, name: &str) -> Option<&'a Observation> {
        self.get(name).filter(|o| o.reachable)
    }

    /// Members that answered this probe, in member order.
    fn reachable(&self) -> impl Iterator<Item = &'a Observation> + '_ {
        self.observed
            .iter()
            .flatten()
            .copied()
            .filter(|o| o.reachable)
    }

    fn reachable_names(&self) -> Vec<String> {
        self.reachable_any().map(|o| o.name.clone()).collect()
    }

    /// Position of `name` in the member list (then in the previous one): lower wins ties.
    fn rank(&self, name: &str) -> usize {
        let previous = self.previous.iter().flat_map(|(list, _)| list.iter());
        self.config
            .iter()
            .chain(previous)
            .position(|m| m == name)
            .unwrap_or(usize::MAX)
    }

    /// Highest term any member reported, including remembered ones.
    fn max_observed_term(&self) -> u64 {
        self.known().map(|o| o.term).max().unwrap_or(0)
    }

    /// A term above the coordinator's and every observed one.
    fn next_term(&self) -> u64 {
        self.term().max(self.max_observed_term()) + 1
    }

    fn failover_quorum(&self) -> usize {
        self.settings.ack.failover_quorum(self.config.len())
    }

    /// While a member change is uncommitted: how many members of the previous list answer in
    /// `term`, and how many must.
    fn previous_responders(&self, term: u64) -> Option<(usize, usize)> {
        let (list, slots) = self.previous.as_ref()?;
        let have = slots
            .iter()
            .flatten()
            .filter(|o| o.reachable && o.term == term)
            .count();
        Some((have, self.settings.ack.failover_quorum(list.len())))
    }
}
