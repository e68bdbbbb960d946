//! The decision's view of the cluster, validated and indexed by member: the member list in
//! force (and the previous one while a change is uncommitted), one observation slot per member.

use super::types::{ClusterView, Coordinator, Observation, Settings};

/// The view, validated and indexed by member (observations of non-members are ignored).
pub(super) struct Members<'a> {
    pub(super) settings: &'a Settings,
    pub(super) coordinator: &'a Coordinator,
    pub(super) now_ms: u64,
    /// The member list in force: the coordinator's, or the settings' before the first change.
    pub(super) config: &'a [String],
    /// One slot per member of `config`, in order.
    pub(super) observed: Vec<Option<&'a Observation>>,
    /// While a member change is not committed: the previous list, one slot per member.
    pub(super) previous: Option<(&'a [String], Vec<Option<&'a Observation>>)>,
    pub(super) all: &'a [Observation],
}

/// Whether two member lists name the same members (nodes list them sorted by name).
pub(super) fn same_members(a: &[String], b: &[String]) -> bool {
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
    pub(super) fn new(view: &'a ClusterView) -> Result<Self, String> {
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

    pub(super) fn term(&self) -> u64 {
        self.coordinator.term
    }

    pub(super) fn get(&self, name: &str) -> Option<&'a Observation> {
        let i = self.config.iter().position(|m| m == name)?;
        self.observed[i]
    }

    pub(super) fn is_member(&self, name: &str) -> bool {
        self.config.iter().any(|m| m == name)
    }

    /// Members of the previous list that left in the uncommitted change and answered.
    pub(super) fn leaving_reachable(&self) -> impl Iterator<Item = &'a Observation> + '_ {
        self.previous
            .iter()
            .flat_map(|(_, slots)| slots.iter().flatten().copied())
            .filter(|o| o.reachable && !self.is_member(&o.name))
    }

    /// Every member of the current and the previous list that answered.
    pub(super) fn reachable_any(&self) -> impl Iterator<Item = &'a Observation> + '_ {
        self.reachable().chain(self.leaving_reachable())
    }

    /// Observations of the current and the previous list, answering or remembered.
    pub(super) fn known(&self) -> impl Iterator<Item = &'a Observation> + '_ {
        self.all
            .iter()
            .filter(|o| self.is_member(&o.name) || self.was_member(&o.name))
    }

    pub(super) fn was_member(&self, name: &str) -> bool {
        self.previous
            .as_ref()
            .is_some_and(|(list, _)| list.iter().any(|m| m == name))
    }

    pub(super) fn reachable_get(&self, name: &str) -> Option<&'a Observation> {
        self.get(name).filter(|o| o.reachable)
    }

    /// Members that answered this probe, in member order.
    pub(super) fn reachable(&self) -> impl Iterator<Item = &'a Observation> + '_ {
        self.observed
            .iter()
            .flatten()
            .copied()
            .filter(|o| o.reachable)
    }

    pub(super) fn reachable_names(&self) -> Vec<String> {
        self.reachable_any().map(|o| o.name.clone()).collect()
    }

    /// Position of `name` in the member list (then in the previous one): lower wins ties.
    pub(super) fn rank(&self, name: &str) -> usize {
        let previous = self.previous.iter().flat_map(|(list, _)| list.iter());
        self.config
            .iter()
            .chain(previous)
            .position(|m| m == name)
            .unwrap_or(usize::MAX)
    }

    /// Highest term any member reported, including remembered ones.
    pub(super) fn max_observed_term(&self) -> u64 {
        self.known().map(|o| o.term).max().unwrap_or(0)
    }

    /// A term above the coordinator's and every observed one.
    pub(super) fn next_term(&self) -> u64 {
        self.term().max(self.max_observed_term()) + 1
    }

    pub(super) fn failover_quorum(&self) -> usize {
        self.settings.ack.failover_quorum(self.config.len())
    }

    /// While a member change is uncommitted: how many members of the previous list answer and
    /// `count`, and how many must.
    pub(super) fn previous_responders(
        &self,
        count: impl Fn(&Observation) -> bool,
    ) -> Option<(usize, usize)> {
        let (list, slots) = self.previous.as_ref()?;
        let have = slots
            .iter()
            .flatten()
            .filter(|o| o.reachable && count(o))
            .count();
        Some((have, self.settings.ack.failover_quorum(list.len())))
    }
}
