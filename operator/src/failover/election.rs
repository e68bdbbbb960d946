//! Failure detection, elections and steady-state repairs.

use super::steps::{best_candidate, follow_others, start_election};
use super::switchover::{self, Progress};
use super::types::{Action, ClusterView, Observation, Role, WaitReason};
use super::view::Members;

/// What to do now. An empty list means the cluster is healthy and nothing needs doing.
///
/// When the list contains a term change ([`Action::new_term`]) it is the first action.
pub fn decide(view: &ClusterView) -> Vec<Action> {
    match Members::new(view) {
        Ok(members) => decide_for(&members),
        Err(problem) => vec![Action::Wait {
            reason: WaitReason::InvalidInput { problem },
        }],
    }
}

fn decide_for(m: &Members) -> Vec<Action> {
    // A term the coordinator never handed out: someone else acted (a second operator, a
    // lost status). Nothing it did can be trusted, so run a fresh election above it.
    if m.max_observed_term() > m.term() {
        return start_election(m);
    }
    if let Some(sw) = &m.coordinator.switchover {
        return match switchover::resume(m, sw) {
            Progress::Act(actions) | Progress::Abandon(_, actions) => actions,
        };
    }
    match &m.coordinator.primary {
        None if m.term() == 0 => start_election(m),
        None => elect(m),
        Some(primary) => steady(m, primary),
    }
}

fn steady(m: &Members, primary: &str) -> Vec<Action> {
    let term = m.term();
    if !m.is_member(primary) {
        // Removed from the spec while primary: nobody will ever bring it back.
        return start_election(m);
    }
    let Some(p) = m.get(primary) else {
        return failing_primary(m, primary, None);
    };
    // The detection window guards against false failovers on a primary that may come back (a
    // pause, a slow probe). One that is certainly gone (its pod is being deleted or gone, its
    // process is not running) will not come back as primary, so waiting only prolongs the
    // outage; the election fences it like any other member, so it is as safe as a late one.
    if p.gone {
        return start_election(m);
    }
    if !p.reachable {
        return failing_primary(m, primary, p.unhealthy_since_ms);
    }
    // From here on it answers, and each of these answers is certain, not a symptom that may
    // pass: they are acted on at once, ready or not.
    if p.term < term {
        // It answers but lost the term it was promoted in: its durable state is gone.
        return start_election(m);
    }
    let rival = m
        .reachable()
        .any(|o| o.name != primary && o.term == term && o.role == Role::Primary);
    if rival {
        return start_election(m);
    }
    if p.role != Role::Primary {
        // Not acting as primary in the term it was promoted in: its process restarted, or the
        // promote never arrived. It is not promoted again in the same term: an entry of this
        // term it lost before its fsync may sit on a replica that does not answer now, and a
        // new entry at that index would give one (term, index) two different contents. A new
        // election names the entries anew and chooses among a quorum of responders (often this
        // very member again, when its log is the longest).
        return start_election(m);
    }
    if p.unhealthy_since_ms.is_some() {
        return failing_primary(m, primary, p.unhealthy_since_ms);
    }
    follow_others(m, primary)
}

fn failing_primary(m: &Members, primary: &str, since: Option<u64>) -> Vec<Action> {
    // Unreachable without a start time: the failure starts being counted now.
    let elapsed = m.now_ms.saturating_sub(since.unwrap_or(m.now_ms));
    let window = m.settings.detection_window_ms;
    if elapsed >= window {
        return start_election(m);
    }
    vec![Action::Wait {
        reason: WaitReason::WithinDetectionWindow {
            primary: primary.to_string(),
            remaining_ms: window - elapsed,
        },
    }]
}

/// An election is in progress in the coordinator's term: choose once enough members answer in it.
fn elect(m: &Members) -> Vec<Action> {
    let term = m.term();
    let claimants: Vec<&Observation> = m
        .reachable()
        .filter(|o| o.term == term && o.role == Role::Primary)
        .collect();
    match claimants.as_slice() {
        // Our promote reached it but the record was lost: record it again.
        [only] => return promote(m, only, None),
        [] => {}
        _ => return start_election(m),
    }
    let stale: Vec<String> = m
        .reachable_any()
        .filter(|o| o.term < term)
        .map(|o| o.name.clone())
        .collect();
    // Members going away are left out when the others alone are enough: the quorum argument
    // then holds among those who stay, and the new primary is not deposed again at once.
    let (mut have, mut need) = responders(m, term, false);
    let with_going = have < need;
    if with_going {
        (have, need) = responders(m, term, true);
    }
    let candidates: Vec<&Observation> = m
        .reachable_any()
        .filter(|o| o.term == term && (with_going || !o.gone))
        .collect();
    let lossy = m.settings.allow_lossy_promotion && m.settings.ack.may_lose_writes();

    // While waiting, members still in an older term get the term, so they answer next time.
    // Once a candidate is chosen their Follow carries the term instead.
    let waiting = |reason: WaitReason| {
        let mut actions = Vec::new();
        if !stale.is_empty() {
            actions.push(Action::Fence {
                nodes: stale.clone(),
                term,
            });
        }
        actions.push(Action::Wait { reason });
        actions
    };
    let Some(best) = best_candidate(m, &candidates) else {
        return waiting(WaitReason::TooFewResponders { have: 0, need });
    };
    if have < need && !lossy {
        return waiting(WaitReason::TooFewResponders { have, need });
    }
    if have < need && !stale.is_empty() {
        // Lossy promotion is a last resort: first hear from everyone who can answer.
        return waiting(WaitReason::FencePending {
            nodes: stale.clone(),
        });
    }
    let longest_known = m.known().map(|o| o.last_log_index).max().unwrap_or(0);
    if best.last_log_index == 0 && longest_known > 0 {
        return waiting(WaitReason::OnlyEmptyLogs { longest_known });
    }
    let loss = (have < need).then(|| possible_loss(m, best, term));
    if !m.is_member(&best.name) {
        return revert_members(m, best, loss);
    }
    promote(m, best, loss)
}

/// How many members answer in `term` and how many must (leaving `gone` members out
/// unless `with_going`). While a member change is uncommitted, an acknowledged entry may sit on
/// a write quorum of either list, so enough members of each must answer, and the candidate may
/// be a leaving member: the list that falls short is reported.
fn responders(m: &Members, term: u64, with_going: bool) -> (usize, usize) {
    let counts = |o: &Observation| o.term == term && (with_going || !o.gone);
    let have = m.reachable().filter(|o| counts(o)).count();
    let need = m.failover_quorum();
    match m.previous_responders(counts) {
        Some((prev_have, prev_need)) if have >= need && prev_have < prev_need => {
            (prev_have, prev_need)
        }
        _ => (have, need),
    }
}

/// The most advanced responder left the member list in a change that never committed (no entry
/// of the change's term reached a write quorum of the new list, or a new member would be
/// ahead): go back to the previous list, led by it. Its term is the election's; no node was
/// promoted in it yet. A lossy promotion's report goes right before the promote, so the term
/// change stays the first action.
fn revert_members(m: &Members, best: &Observation, loss: Option<Action>) -> Vec<Action> {
    let Some((previous, _)) = &m.previous else {
        return Vec::new();
    };
    let term = m.term();
    let mut actions = vec![Action::ChangeMembers {
        from: m.config.to_vec(),
        members: previous.to_vec(),
        term,
    }];
    actions.extend(loss);
    actions.push(Action::Promote {
        node: best.name.clone(),
        term,
    });
    for o in m.reachable_any() {
        if o.name != best.name && previous.contains(&o.name) {
            actions.push(Action::Follow {
                node: o.name.clone(),
                primary: best.name.clone(),
                term,
            });
        }
    }
    actions
}

/// What a lossy promotion of `best` may discard, from the positions members that did not
/// answer in `term` were last seen at.
fn possible_loss(m: &Members, best: &Observation, term: u64) -> Action {
    let longest = m
        .known()
        .filter(|o| !(o.reachable && o.term == term) && o.last_log_index > 0)
        .max_by_key(|o| (o.last_log_index, std::cmp::Reverse(m.rank(&o.name))));
    Action::ReportPossibleLoss {
        promoted: best.name.clone(),
        longest: longest.map(|o| o.name.clone()),
        entries: longest.map(|o| o.last_log_index.saturating_sub(best.last_log_index)),
    }
}

fn promote(m: &Members, node: &Observation, loss: Option<Action>) -> Vec<Action> {
    let mut actions: Vec<Action> = loss.into_iter().collect();
    actions.push(Action::Promote {
        node: node.name.clone(),
        term: m.term(),
    });
    actions.extend(follow_others(m, &node.name));
    actions
}
