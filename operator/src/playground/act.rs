//! The two halves of acting on a probe: choosing what to do (a planned switchover when the
//! primary carries a request, else the failover decision) and sending the node commands.

use super::probe::Health;
use crate::failover::{Action, ClusterView, Coordinator, SwitchoverStep, decide, plan_switchover};

/// What one cycle decided.
pub struct Choice {
    pub actions: Vec<Action>,
    pub note: Option<String>,
    /// Nodes whose switchover request is consumed (cleared once the decision is persisted).
    pub clear: Vec<String>,
}

/// A switchover request on the recorded primary (with none in progress) is planned; requests
/// anywhere else are consumed and ignored. A request whose target is not ready yet stays, and
/// the ordinary decision keeps the cluster repaired meanwhile.
pub fn choose(view: &ClusterView, health: &[Health], co: &Coordinator) -> Choice {
    let mut clear = Vec::new();
    let mut note = None;
    let mut planned: Option<(String, Option<String>)> = None;
    for h in health {
        let Some(req) = h
            .status
            .as_ref()
            .and_then(|s| s.switchover_request.as_ref())
        else {
            continue;
        };
        if co.primary.as_deref() == Some(h.name.as_str()) && co.switchover.is_none() {
            planned = Some((h.name.clone(), req.to.clone()));
        } else {
            clear.push(h.name.clone());
            note = Some(format!(
                "ignored a switchover request on {}: it is not the primary, or a switchover is in progress",
                h.name
            ));
        }
    }
    let Some((primary, to)) = planned else {
        return Choice {
            actions: decide(view),
            note,
            clear,
        };
    };
    let target = to
        .as_deref()
        .unwrap_or("the most advanced replica")
        .to_string();
    let mut consumed = |note: String, actions: Vec<Action>| {
        clear.push(primary.clone());
        Choice {
            actions,
            note: Some(note),
            clear: std::mem::take(&mut clear),
        }
    };
    match plan_switchover(view, to.as_deref()) {
        SwitchoverStep::Proceed { actions } if actions.iter().any(|a| a.new_term().is_some()) => {
            consumed(
                format!("switchover requested on {primary} to {target}"),
                actions,
            )
        }
        SwitchoverStep::Proceed { actions } => {
            // The target is not ready yet: keep the request and the cluster repaired.
            let mut all = decide(view);
            all.extend(actions);
            Choice {
                actions: all,
                note,
                clear,
            }
        }
        SwitchoverStep::Done { primary: p, term } => consumed(
            format!("switchover request: {p} is already the primary (term {term})"),
            decide(view),
        ),
        SwitchoverStep::Abandoned { problem, actions } => {
            consumed(format!("switchover abandoned: {problem}"), actions)
        }
        SwitchoverStep::Rejected { problem } => consumed(
            format!("switchover to {target} rejected: {problem}"),
            decide(view),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::{AckLevel, Settings};
    use crate::nodes::{NodeStatus, SwitchoverRequest};

    fn health(name: &str, role: &str, to: Option<Option<&str>>) -> Health {
        Health {
            name: name.into(),
            url: format!("http://127.0.0.1:1/{name}"),
            status: Some(NodeStatus {
                node: name.into(),
                role: role.into(),
                term: 2,
                following: (role == "replica").then(|| "n1".to_string()),
                last_log_term: 2,
                last_log_index: 10,
                ready: true,
                switchover_request: to.map(|t| SwitchoverRequest {
                    to: t.map(str::to_string),
                    at_ms: 1,
                }),
                ..NodeStatus::default()
            }),
            ..Health::default()
        }
    }

    fn view(health: &[Health]) -> (ClusterView, Coordinator) {
        let co = Coordinator {
            term: 2,
            primary: Some("n1".into()),
            ..Coordinator::default()
        };
        let v = ClusterView {
            settings: Settings {
                members: vec!["n1".into(), "n2".into(), "n3".into()],
                ack: AckLevel::Quorum,
                detection_window_ms: 1000,
                allow_lossy_promotion: false,
                switchover_timeout_ms: 10_000,
            },
            coordinator: co.clone(),
            observations: health.iter().map(Health::observation).collect(),
            now_ms: 1_000,
        };
        (v, co)
    }

    #[test]
    fn a_request_on_the_primary_starts_a_switchover_and_is_consumed() {
        let hs = [
            health("n1", "primary", Some(Some("n3"))),
            health("n2", "replica", None),
            health("n3", "replica", None),
        ];
        let (v, co) = view(&hs);
        let c = choose(&v, &hs, &co);
        assert!(
            matches!(&c.actions[0], Action::BeginSwitchover { from, to, .. } if from == "n1" && to == "n3"),
            "{:?}",
            c.actions
        );
        assert_eq!(c.clear, ["n1"]);
    }

    #[test]
    fn requests_elsewhere_or_for_the_primary_itself_are_consumed_without_a_switchover() {
        let hs = [
            health("n1", "primary", Some(Some("n1"))),
            health("n2", "replica", Some(None)),
            health("n3", "replica", None),
        ];
        let (v, co) = view(&hs);
        let c = choose(&v, &hs, &co);
        assert!(
            c.actions.iter().all(|a| a.new_term().is_none()),
            "{:?}",
            c.actions
        );
        let mut cleared = c.clear.clone();
        cleared.sort();
        assert_eq!(cleared, ["n1", "n2"]);
        assert!(c.note.unwrap().contains("already the primary"));
    }

    #[test]
    fn a_request_for_a_non_member_is_rejected() {
        let hs = [
            health("n1", "primary", Some(Some("n9"))),
            health("n2", "replica", None),
            health("n3", "replica", None),
        ];
        let (v, co) = view(&hs);
        let c = choose(&v, &hs, &co);
        assert!(c.actions.is_empty(), "{:?}", c.actions);
        assert!(c.note.unwrap().contains("rejected"));
        assert_eq!(c.clear, ["n1"]);
    }
}
