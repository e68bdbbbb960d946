use std::sync::Mutex;

use futures_util::FutureExt;

use super::*;
use crate::coordinator::{Completed, Plan};
use crate::failover::{Action, SwitchoverOutcome};
use crate::nodes::NodeStatus;

/// What the store and the nodes saw, in order.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct Store<'a> {
    log: &'a Log,
    answer: Result<Stored, String>,
}

impl RecordStore for Store<'_> {
    type Error = String;

    async fn store(&mut self, write: &Write<'_>) -> Result<Stored, String> {
        let primary = write.record.primary.as_deref().unwrap_or("-");
        let line = format!("store term {} primary {primary}", write.record.term);
        self.log.push(line);
        self.answer.clone()
    }
}

struct Nodes<'a> {
    log: &'a Log,
    refuse: &'a [&'a str],
}

impl NodeCommands for Nodes<'_> {
    async fn command(
        &self,
        node: &str,
        op: &'static str,
        term: u64,
        _primary: Option<&str>,
    ) -> Result<NodeStatus, String> {
        self.log.push(format!("{op} {node}"));
        if self.refuse.contains(&node) {
            return Err("refused".into());
        }
        Ok(NodeStatus {
            node: node.into(),
            role: if op == "promote" { "primary" } else { "fenced" }.into(),
            term,
            last_log_term: term,
            last_log_index: 5,
            ready: true,
            ..NodeStatus::default()
        })
    }

    async fn clear_switchover(&self, node: &str, _term: u64) -> Result<(), String> {
        self.log.push(format!("clear {node}"));
        Ok(())
    }
}

fn plan(actions: Vec<Action>, clear: &[&str]) -> Plan {
    Plan {
        actions,
        switchover: SwitchoverOutcome::None,
        failover_disabled: false,
        request: None,
        clear: clear.iter().map(|n| n.to_string()).collect(),
    }
}

fn led_by_n1() -> Coordinator {
    Coordinator {
        term: 3,
        primary: Some("n1".into()),
        ..Coordinator::default()
    }
}

fn bump_and_fence() -> Vec<Action> {
    vec![
        Action::BumpTerm { to: 4 },
        Action::Fence {
            nodes: vec!["n2".into(), "n3".into()],
            term: 4,
        },
    ]
}

fn step(
    rt: &mut Runtime,
    record: &Coordinator,
    plan: &Plan,
    answer: Result<Stored, String>,
    refuse: &[&str],
    log: &Log,
) -> Result<Stepped, Unsent<String>> {
    let mut store = Store { log, answer };
    let nodes = Nodes { log, refuse };
    rt.step(record, plan, &mut store, &nodes, 10_000)
        .now_or_never()
        .expect("nothing here waits")
}

fn runtime() -> Runtime {
    Runtime::new(FailoverCount::Always, History::default())
}

#[test]
fn the_record_is_stored_before_any_command_and_used_requests_are_cleared_last() {
    let log = Log::default();
    let p = plan(bump_and_fence(), &["n2"]);
    let done = step(
        &mut runtime(),
        &led_by_n1(),
        &p,
        Ok(Stored::Written),
        &[],
        &log,
    )
    .unwrap();
    assert_eq!(
        log.lines(),
        ["store term 4 primary -", "fence n2", "fence n3", "clear n2"]
    );
    assert!(done.stored);
    assert_eq!((done.record.term, done.record.primary), (4, None));
}

#[test]
fn nothing_is_sent_when_the_record_changed_or_could_not_be_stored() {
    let p = plan(bump_and_fence(), &["n2"]);
    let log = Log::default();
    let changed = step(
        &mut runtime(),
        &led_by_n1(),
        &p,
        Ok(Stored::Changed),
        &[],
        &log,
    );
    assert!(matches!(changed, Err(Unsent::Conflict)));
    assert_eq!(log.lines(), ["store term 4 primary -"]);
    let log = Log::default();
    let failed = step(
        &mut runtime(),
        &led_by_n1(),
        &p,
        Err("disk full".into()),
        &[],
        &log,
    );
    assert!(matches!(failed, Err(Unsent::Store(e)) if e == "disk full"));
    assert_eq!(log.lines(), ["store term 4 primary -"]);
}

#[test]
fn an_unchanged_record_is_not_written_again() {
    let log = Log::default();
    let follow = Action::Follow {
        node: "n3".into(),
        primary: "n1".into(),
        term: 3,
    };
    let p = plan(vec![follow], &[]);
    let done = step(
        &mut runtime(),
        &led_by_n1(),
        &p,
        Ok(Stored::Changed),
        &[],
        &log,
    )
    .unwrap();
    assert_eq!(log.lines(), ["follow n3"]);
    assert!(!done.stored);
}

#[test]
fn a_failed_promotion_sends_no_follows() {
    let log = Log::default();
    let record = Coordinator {
        term: 4,
        ..Coordinator::default()
    };
    let p = plan(
        vec![
            Action::Promote {
                node: "n2".into(),
                term: 4,
            },
            Action::Follow {
                node: "n3".into(),
                primary: "n2".into(),
                term: 4,
            },
        ],
        &[],
    );
    let done = step(
        &mut runtime(),
        &record,
        &p,
        Ok(Stored::Written),
        &["n2"],
        &log,
    )
    .unwrap();
    assert_eq!(log.lines(), ["store term 4 primary n2", "promote n2"]);
    assert_eq!(done.completed, Completed::default());
}

#[test]
fn a_failover_ends_with_the_promotion_which_restarts_the_new_primarys_failure_clock() {
    let mut rt = runtime();
    let probe = |name: &str, up: bool, at: u64| Probe {
        name: name.into(),
        status: up.then(|| NodeStatus {
            role: "replica".into(),
            ready: true,
            ..NodeStatus::default()
        }),
        healthy: up,
        sent_ms: at,
        answered_ms: at,
        ..Probe::default()
    };
    // n1 (the primary) fails at 1 000; n2 was not ready while fenced during the election.
    rt.observe(
        &[probe("n1", true, 500), probe("n2", true, 500)],
        AckLevel::Quorum,
        500,
    );
    rt.observe(
        &[probe("n1", false, 1_000), probe("n2", false, 1_000)],
        AckLevel::Quorum,
        1_000,
    );
    let log = Log::default();
    let p = plan(bump_and_fence(), &[]);
    step(&mut rt, &led_by_n1(), &p, Ok(Stored::Written), &[], &log).unwrap();
    assert!(rt.failing_over());
    let elected = Coordinator {
        term: 4,
        ..Coordinator::default()
    };
    let promote = plan(
        vec![Action::Promote {
            node: "n2".into(),
            term: 4,
        }],
        &[],
    );
    let done = step(&mut rt, &elected, &promote, Ok(Stored::Written), &[], &log).unwrap();
    let f = done.completed.failover.expect("the failover completed");
    assert_eq!((f.from.as_str(), f.to.as_deref()), ("n1", Some("n2")));
    assert_eq!(f.duration_ms(), Some(9_000), "from the first failed probe");
    assert!(!rt.failing_over());
    assert_eq!(rt.history().failovers_total, 1);
    assert_eq!(rt.memory().get("n2").unwrap().unhealthy_since_ms, None);
    assert_eq!(
        rt.memory().get("n1").unwrap().unhealthy_since_ms,
        Some(1_000)
    );
}
