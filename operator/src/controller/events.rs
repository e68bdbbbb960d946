//! Events stage: one Kubernetes Event per decision, so `kubectl describe` tells the story of a
//! failover. Built by a pure function; published at the end of a reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use super::context::Context;
use super::status::wait_message;
use crate::coordinator::Plan;
use crate::crd::ReplicatedCluster;
use crate::failover::{Action, Coordinator, SwitchoverOutcome as Outcome, WaitReason};
use crate::nodes::CommandResult;

/// `reason` of every event the controller emits.
pub mod reason {
    pub const ELECTION_STARTED: &str = "ElectionStarted";
    pub const FAILOVER_STARTED: &str = "FailoverStarted";
    pub const PRIMARY_UNHEALTHY: &str = "PrimaryUnhealthy";
    pub const PROMOTED: &str = "Promoted";
    pub const REPLICA_REFETCHING: &str = "ReplicaRefetching";
    pub const WAITING_FOR_QUORUM: &str = "WaitingForQuorum";
    pub const WAITING_FOR_DATA: &str = "WaitingForData";
    pub const WAITING_FOR_FENCE: &str = "WaitingForFence";
    pub const POSSIBLE_DATA_LOSS: &str = "PossibleDataLoss";
    pub const INVALID_CLUSTER: &str = "InvalidCluster";
    pub const NODE_COMMAND_FAILED: &str = "NodeCommandFailed";
    pub const FAILOVER_DISABLED: &str = "FailoverDisabled";
    pub const SWITCHOVER_STARTED: &str = "SwitchoverStarted";
    pub const SWITCHOVER_WAITING: &str = "SwitchoverWaiting";
    pub const SWITCHOVER_COMPLETED: &str = "SwitchoverCompleted";
    pub const SWITCHOVER_REJECTED: &str = "SwitchoverRejected";
    pub const SWITCHOVER_ABANDONED: &str = "SwitchoverAbandoned";
    pub const APPLY_FAILED: &str = "ApplyFailed";
    pub const MEMBERS_CHANGING: &str = "MembersChanging";
    pub const MEMBERS_CHANGED: &str = "MembersChanged";
    pub const RESTARTING: &str = "RollingUpdate";
    pub const RESTART_FAILED: &str = "RollingUpdateFailed";
}

fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    }
}

/// The member pod an event is about (`related`), so events about different members stay apart.
fn about_pod(mut ev: Event, ns: &str, pod: &str) -> Event {
    ev.secondary = Some(ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Pod".to_string()),
        name: Some(pod.to_string()),
        namespace: Some(ns.to_string()),
        ..ObjectReference::default()
    });
    ev
}

/// Identifies a wait across reconciles.
fn wait_key(w: &WaitReason) -> String {
    match w {
        WaitReason::WithinDetectionWindow { primary, .. } => format!("detection/{primary}"),
        WaitReason::SwitchoverCatchingUp { target, .. } => format!("catching-up/{target}"),
        other => json(other),
    }
}

fn normal(reason: &str, action: &str, note: String) -> Event {
    event(EventType::Normal, reason, action, note)
}

fn warning(reason: &str, action: &str, note: String) -> Event {
    event(EventType::Warning, reason, action, note)
}

/// Keys of the situations in this decision that can last over many reconciles (waits, a
/// disabled failover, a refused switchover, a failing node command). Each is reported once, in
/// the reconcile where it begins, not every few seconds while it lasts.
pub fn lasting(plan: &Plan, results: &[CommandResult], apply_failures: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = plan.waits().map(wait_key).collect();
    if plan.failover_disabled {
        keys.push("failover-disabled".into());
    }
    if let Outcome::Rejected(problem) = &plan.switchover {
        keys.push(format!("rejected/{}", json(problem)));
    }
    for r in results.iter().filter(|r| r.outcome.is_err()) {
        keys.push(failure_key(r));
    }
    keys.extend(apply_failures.iter().map(|f| format!("apply/{f}")));
    keys
}

fn failure_key(r: &CommandResult) -> String {
    format!("failed/{}/{}/{}", r.op, r.node, r.term)
}

/// The events of one reconcile, in the order things happened. `results` holds the node commands
/// that ran (none when the record could not be written); `reported` the [`lasting`] keys the
/// previous reconcile reported.
pub fn for_decision(
    ns: &str,
    before: &Coordinator,
    plan: &Plan,
    results: &[CommandResult],
    apply_failures: &[String],
    reported: &[String],
) -> Vec<Event> {
    let mut out = Vec::new();
    let new = |key: String| !reported.contains(&key);
    if plan.failover_disabled && new("failover-disabled".into()) {
        out.push(warning(
            reason::FAILOVER_DISABLED,
            "Failover",
            format!(
                "primary {} is failing; spec.failover.enabled is false, so nothing is done",
                before.primary.as_deref().unwrap_or("?")
            ),
        ));
    }
    match &plan.switchover {
        Outcome::Started { from, to } => out.push(normal(
            reason::SWITCHOVER_STARTED,
            "Switchover",
            format!(
                "switching over from {from} to {to}: writes on {from} stop while {to} catches up"
            ),
        )),
        Outcome::Rejected(problem) if new(format!("rejected/{}", json(problem))) => {
            out.push(warning(
                reason::SWITCHOVER_REJECTED,
                "Switchover",
                format!("switchover refused: {problem}"),
            ))
        }
        Outcome::Abandoned(problem) => out.push(warning(
            reason::SWITCHOVER_ABANDONED,
            "Switchover",
            format!("switchover given up, electing the best member instead: {problem}"),
        )),
        _ => {}
    }
    for action in &plan.actions {
        match action {
            Action::BumpTerm { to } => out.push(match &before.primary {
                Some(p) => warning(
                    reason::FAILOVER_STARTED,
                    "Failover",
                    format!("primary {p} failed; term {to} begins and the reachable members are fenced"),
                ),
                None => normal(
                    reason::ELECTION_STARTED,
                    "Election",
                    format!("electing a primary in term {to}"),
                ),
            }),
            Action::ChangeMembers { from, members, term } => out.push(normal(
                reason::MEMBERS_CHANGING,
                "Scale",
                format!(
                    "member list [{}] becomes [{}] in term {term}; new members fetch the data before they are ready",
                    from.join(", "),
                    members.join(", ")
                ),
            )),
            Action::MembersCommitted => out.push(normal(
                reason::MEMBERS_CHANGED,
                "Scale",
                format!(
                    "member list [{}] is committed; members that left may be removed",
                    before.members.join(", ")
                ),
            )),
            Action::Wait { reason } if new(wait_key(reason)) => {
                out.push(wait_event(reason))
            }
            Action::ReportPossibleLoss {
                promoted,
                longest,
                entries,
            } => out.push(warning(
                reason::POSSIBLE_DATA_LOSS,
                "Failover",
                format!(
                    "promoting {promoted} without enough responders (allowDataLoss): {} may hold {} entries it lacks",
                    longest.as_deref().unwrap_or("a member that did not answer"),
                    entries.map_or("an unknown number of".to_string(), |e| e.to_string())
                ),
            )),
            _ => {}
        }
    }
    for r in results
        .iter()
        .filter(|r| r.outcome.is_ok() || new(failure_key(r)))
    {
        out.extend(command_event(r).map(|ev| about_pod(ev, ns, &r.node)));
    }
    // Whoever asked (annotation, node request, scale-down, rollout): the switchover ends with
    // its target's promotion. A request already satisfied (`Done`) has nothing to announce.
    if let Outcome::Continuing { to } = &plan.switchover
        && let Some(r) = results
            .iter()
            .find(|r| r.op == "promote" && &r.node == to && r.outcome.is_ok())
    {
        out.push(normal(
            reason::SWITCHOVER_COMPLETED,
            "Switchover",
            format!("{to} is the primary in term {}", r.term),
        ));
    }
    for f in apply_failures.iter().filter(|f| new(format!("apply/{f}"))) {
        out.push(warning(reason::APPLY_FAILED, "Apply", f.clone()));
    }
    out
}

/// `spec.shards` asks for `spec` shards; the cluster keeps the `running` it was created with.
/// A member pod deleted so that the StatefulSet recreates it from the current template; or the
/// delete that failed.
pub fn restart(ns: &str, pod: &str, revision: &str, outcome: Result<(), String>) -> Event {
    let ev = match outcome {
        Ok(()) => normal(
            reason::RESTARTING,
            "Restart",
            format!(
                "restarting {pod} on revision {revision}; it keeps its volume and catches up before it is ready"
            ),
        ),
        Err(e) => warning(
            reason::RESTART_FAILED,
            "Restart",
            format!("cannot restart {pod}: {e}"),
        ),
    };
    about_pod(ev, ns, pod)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn wait_event(w: &WaitReason) -> Event {
    let note = wait_message(Some(w));
    match w {
        WaitReason::TooFewResponders { .. } => {
            warning(reason::WAITING_FOR_QUORUM, "Failover", note)
        }
        WaitReason::OnlyEmptyLogs { .. } => warning(reason::WAITING_FOR_DATA, "Failover", note),
        WaitReason::FencePending { .. } => normal(reason::WAITING_FOR_FENCE, "Failover", note),
        WaitReason::WithinDetectionWindow { .. } => {
            warning(reason::PRIMARY_UNHEALTHY, "Failover", note)
        }
        WaitReason::InvalidInput { .. } => warning(reason::INVALID_CLUSTER, "Failover", note),
        WaitReason::SwitchoverCatchingUp { .. } | WaitReason::SwitchoverFencing { .. } => {
            normal(reason::SWITCHOVER_WAITING, "Switchover", note)
        }
        WaitReason::MembersCommitting { .. } => normal(reason::MEMBERS_CHANGING, "Scale", note),
    }
}

fn command_event(r: &CommandResult) -> Option<Event> {
    if let Err(e) = &r.outcome {
        return Some(warning(
            reason::NODE_COMMAND_FAILED,
            "NodeCommand",
            format!("{} {} in term {}: {e}", r.op, r.node, r.term),
        ));
    }
    match r.op {
        "promote" => Some(normal(
            reason::PROMOTED,
            "Promote",
            format!("{} is the primary of term {}", r.node, r.term),
        )),
        "follow" => Some(normal(
            reason::REPLICA_REFETCHING,
            "Follow",
            format!(
                "{} follows {} in term {}; it truncates any divergent entries and re-fetches what it lacks",
                r.node,
                r.primary.as_deref().unwrap_or("?"),
                r.term
            ),
        )),
        _ => None,
    }
}

/// Publishes `events` about `cluster`. A failure is logged, never fatal: events inform, the
/// status is the record.
pub async fn publish(ctx: &Context, cluster: &ReplicatedCluster, events: &[Event]) {
    let reference = cluster.object_ref(&());
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    for ev in events {
        if let Err(e) = recorder.publish(ev, &reference).await {
            tracing::warn!(reason = %ev.reason, error = %e, "cannot publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(actions: Vec<Action>) -> Plan {
        Plan {
            actions,
            switchover: Outcome::None,
            failover_disabled: false,
            request: None,
            clear: Vec::new(),
        }
    }

    fn result(op: &'static str, node: &str, ok: bool) -> CommandResult {
        CommandResult {
            op,
            node: node.to_string(),
            term: 4,
            primary: (op == "follow").then(|| "demo-1".to_string()),
            outcome: if ok {
                Ok(crate::nodes::NodeStatus::default())
            } else {
                Err("connection refused".to_string())
            },
        }
    }

    fn reasons(evs: &[Event]) -> Vec<&str> {
        evs.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn a_failover_tells_its_story_in_order() {
        let before = Coordinator {
            term: 3,
            primary: Some("demo-0".into()),
            ..Coordinator::default()
        };
        let p = plan(vec![
            Action::BumpTerm { to: 4 },
            Action::Fence {
                nodes: vec!["demo-1".into()],
                term: 4,
            },
        ]);
        let evs = for_decision(
            "shop",
            &before,
            &p,
            &[result("fence", "demo-1", true)],
            &[],
            &[],
        );
        assert_eq!(reasons(&evs), [reason::FAILOVER_STARTED]);
        assert!(matches!(evs[0].type_, EventType::Warning));

        let elected = Coordinator {
            primary: None,
            ..before
        };
        let p = plan(vec![Action::Promote {
            node: "demo-1".into(),
            term: 4,
        }]);
        let results = [
            result("promote", "demo-1", true),
            result("follow", "demo-2", true),
        ];
        let evs = for_decision("shop", &elected, &p, &results, &[], &[]);
        assert_eq!(
            reasons(&evs),
            [reason::PROMOTED, reason::REPLICA_REFETCHING]
        );
        let related = evs[1].secondary.as_ref().unwrap();
        assert_eq!(
            (related.kind.as_deref(), related.name.as_deref()),
            (Some("Pod"), Some("demo-2"))
        );
        assert!(
            evs[1]
                .note
                .as_deref()
                .unwrap()
                .contains("follows demo-1 in term 4")
        );
    }

    #[test]
    fn lasting_situations_are_reported_once() {
        let before = Coordinator::default();
        let p = plan(vec![Action::Wait {
            reason: WaitReason::TooFewResponders { have: 1, need: 2 },
        }]);
        let failed = [result("fence", "demo-2", false)];
        let apply = ["cannot apply StatefulSet demo: denied".to_string()];
        let first = for_decision("shop", &before, &p, &failed, &apply, &[]);
        assert_eq!(
            reasons(&first),
            [
                reason::WAITING_FOR_QUORUM,
                reason::NODE_COMMAND_FAILED,
                reason::APPLY_FAILED
            ]
        );
        let reported = lasting(&p, &failed, &apply);
        assert!(for_decision("shop", &before, &p, &failed, &apply, &reported).is_empty());
        // A different wait is news.
        let other = plan(vec![Action::Wait {
            reason: WaitReason::TooFewResponders { have: 0, need: 2 },
        }]);
        assert_eq!(
            reasons(&for_decision("shop", &before, &other, &[], &[], &reported)),
            [reason::WAITING_FOR_QUORUM]
        );
        // The detection-window countdown is one wait, however much time remains.
        let window = |ms| {
            plan(vec![Action::Wait {
                reason: WaitReason::WithinDetectionWindow {
                    primary: "demo-0".into(),
                    remaining_ms: ms,
                },
            }])
        };
        let reported = lasting(&window(900), &[], &[]);
        assert!(for_decision("shop", &before, &window(400), &[], &[], &reported).is_empty());
    }

    #[test]
    fn switchover_outcomes_and_a_disabled_failover_are_reported() {
        let before = Coordinator {
            term: 3,
            primary: Some("demo-0".into()),
            ..Coordinator::default()
        };
        let mut p = plan(vec![]);
        p.failover_disabled = true;
        p.switchover = Outcome::Rejected(crate::failover::SwitchoverProblem::NotAMember {
            node: "demo-9".into(),
        });
        let evs = for_decision("shop", &before, &p, &[], &[], &[]);
        assert_eq!(
            reasons(&evs),
            [reason::FAILOVER_DISABLED, reason::SWITCHOVER_REJECTED]
        );
        assert!(evs[1].note.as_deref().unwrap().contains("demo-9"));
        p.failover_disabled = false;
        p.switchover = Outcome::Done {
            primary: "demo-2".into(),
        };
        assert!(reasons(&for_decision("shop", &before, &p, &[], &[], &[])).is_empty());
        p.switchover = Outcome::Continuing {
            to: "demo-1".into(),
        };
        let promoted = [
            result("promote", "demo-1", true),
            result("follow", "demo-0", true),
        ];
        assert_eq!(
            reasons(&for_decision("shop", &before, &p, &promoted, &[], &[])),
            [
                reason::PROMOTED,
                reason::REPLICA_REFETCHING,
                reason::SWITCHOVER_COMPLETED
            ]
        );
        let failed = [result("promote", "demo-1", false)];
        assert!(
            !reasons(&for_decision("shop", &before, &p, &failed, &[], &[]))
                .contains(&reason::SWITCHOVER_COMPLETED)
        );
    }
}
