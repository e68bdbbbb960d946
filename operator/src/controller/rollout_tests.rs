use super::*;
use crate::controller::observe::tests::{member, node};
use crate::failover::Switchover;

const NEW: &str = "demo-new";
const OLD: &str = "demo-old";

fn record(primary: Option<&str>, n: usize) -> Coordinator {
    Coordinator {
        term: 3,
        primary: primary.map(str::to_string),
        members: (0..n).map(|i| format!("demo-{i}")).collect(),
        ..Coordinator::default()
    }
}

/// `demo-0..n`, demo-0 the primary, each ready and on the revision `revisions[i]`.
fn members(revisions: &[&str]) -> Vec<Member> {
    revisions
        .iter()
        .enumerate()
        .map(|(i, rev)| {
            let name = format!("demo-{i}");
            let role = if i == 0 { "primary" } else { "replica" };
            let mut m = member(&name, Some(node(&name, role, 3, 10, true)));
            let pod = m.pod.as_mut().unwrap();
            pod.revision = Some(rev.to_string());
            pod.uid = Some(format!("uid-{i}"));
            m
        })
        .collect()
}

fn restart(i: usize) -> Step {
    Step::Restart {
        pod: format!("demo-{i}"),
        uid: Some(format!("uid-{i}")),
    }
}

fn waiting(names: &[&str]) -> Step {
    Step::Waiting {
        outdated: names.iter().map(|n| n.to_string()).collect(),
    }
}

#[test]
fn replicas_restart_one_at_a_time_highest_ordinal_first_then_the_primary_hands_over() {
    let r = record(Some("demo-0"), 3);
    let s = |revs: &[&str]| step("demo", Some(NEW), &r, &members(revs), true);
    assert_eq!(s(&[OLD, OLD, OLD]), restart(2));
    assert_eq!(s(&[OLD, OLD, NEW]), restart(1));
    assert_eq!(
        s(&[OLD, NEW, NEW]),
        Step::Switchover {
            from: "demo-0".into()
        }
    );
    assert_eq!(s(&[NEW, NEW, NEW]), Step::UpToDate);
}

#[test]
fn after_the_switchover_the_old_primary_restarts_as_a_replica() {
    let r = record(Some("demo-1"), 3);
    let mut ms = members(&[OLD, NEW, NEW]);
    ms[0].node.as_mut().unwrap().role = "replica".into();
    ms[1].node.as_mut().unwrap().role = "primary".into();
    assert_eq!(step("demo", Some(NEW), &r, &ms, true), restart(0));
}

#[test]
fn a_lone_primary_restarts_in_place() {
    let r = record(Some("demo-0"), 1);
    assert_eq!(
        step("demo", Some(NEW), &r, &members(&[OLD]), true),
        restart(0)
    );
}

#[test]
fn nothing_happens_until_the_revision_is_known() {
    let r = record(Some("demo-0"), 3);
    assert_eq!(
        step("demo", None, &r, &members(&[OLD, OLD, OLD]), true),
        Step::UpToDate
    );
}

#[test]
fn nothing_restarts_unless_the_cluster_is_settled() {
    let r = record(Some("demo-0"), 3);
    let outdated = waiting(&["demo-0", "demo-1", "demo-2"]);
    let all_old = members(&[OLD, OLD, OLD]);

    // The failover plan has work to do.
    assert_eq!(step("demo", Some(NEW), &r, &all_old, false), outdated);
    // No primary.
    assert_eq!(
        step("demo", Some(NEW), &record(None, 3), &all_old, true),
        outdated
    );
    // A switchover runs.
    let mut sw = r.clone();
    sw.switchover = Some(Switchover {
        from: "demo-0".into(),
        to: "demo-1".into(),
        started_ms: 1,
    });
    assert_eq!(step("demo", Some(NEW), &sw, &all_old, true), outdated);
    // A member change is not committed.
    let mut change = r.clone();
    change.previous_members = Some(vec!["demo-0".into(), "demo-1".into()]);
    assert_eq!(step("demo", Some(NEW), &change, &all_old, true), outdated);

    // A member is down, not ready, lagging or going away: a restart would take a second one.
    let mut ms = members(&[OLD, OLD, NEW]);
    ms[2].pod.as_mut().unwrap().ready = false;
    assert_eq!(
        step("demo", Some(NEW), &r, &ms, true),
        waiting(&["demo-0", "demo-1"])
    );
    let mut ms = members(&[OLD, OLD, NEW]);
    ms[2].node.as_mut().unwrap().ready = false;
    assert!(matches!(
        step("demo", Some(NEW), &r, &ms, true),
        Step::Waiting { .. }
    ));
    let mut ms = members(&[OLD, OLD, NEW]);
    ms[2].node = None;
    assert!(matches!(
        step("demo", Some(NEW), &r, &ms, true),
        Step::Waiting { .. }
    ));
    let mut ms = members(&[OLD, OLD, NEW]);
    ms[1].pod.as_mut().unwrap().terminating = true;
    assert!(matches!(
        step("demo", Some(NEW), &r, &ms, true),
        Step::Waiting { .. }
    ));
    // A member's pod does not exist (deleted, not recreated yet).
    let ms = members(&[OLD, OLD]);
    assert!(matches!(
        step("demo", Some(NEW), &r, &ms, true),
        Step::Waiting { .. }
    ));
}

#[test]
fn pods_outside_the_member_list_are_not_rolled() {
    // demo-3 is joining (not in the list yet): it does not count, and is never restarted here.
    let r = record(Some("demo-0"), 3);
    let ms = members(&[NEW, NEW, NEW, OLD]);
    assert_eq!(step("demo", Some(NEW), &r, &ms, true), Step::UpToDate);
    assert_eq!(updated(Some(NEW), &r, &ms), Some(3));
    assert_eq!(updated(None, &r, &ms), None);
}

#[test]
fn the_revision_counts_once_the_statefulset_controller_saw_the_spec() {
    let sts = |generation: i64, observed: i64| {
        serde_json::from_value::<k8s_openapi::api::apps::v1::StatefulSet>(serde_json::json!({
            "metadata": {"name": "demo", "generation": generation},
            "status": {"replicas": 3, "observedGeneration": observed, "updateRevision": NEW}
        }))
        .unwrap()
    };
    assert_eq!(update_revision(&sts(2, 2)), Some(NEW.to_string()));
    assert_eq!(update_revision(&sts(3, 2)), None);
    let fresh: k8s_openapi::api::apps::v1::StatefulSet =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "demo"}})).unwrap();
    assert_eq!(update_revision(&fresh), None);
}
