//! The role rules, on plain data: no files, sockets or clocks.

use super::*;
use rcluster_proto::Role;
use std::sync::Arc;

pub fn list(names: &[&str]) -> Members {
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                format!(
                    "http://127.0.0.1:{}",
                    7000 + n.len() as u32 * 100 + u32::from(n.as_bytes()[0])
                ),
            )
        })
        .collect()
}

/// Node `me` of members a, b, c with an empty log.
pub fn node(me: &str, term: u64, role: Role, primary: Option<&str>) -> Node {
    Node {
        me: me.into(),
        term,
        role,
        primary: primary.map(String::from),
        members: Arc::new(list(&["a", "b", "c"])),
        led_term: None,
        synced: false,
        known_commit: 0,
        last_index: 0,
        runs: TermRuns::new(0, 0),
    }
}

/// Appends entries of these terms after the last one.
pub fn with_log(mut n: Node, terms: &[u64]) -> Node {
    for t in terms {
        n.appended(n.last_index + 1, *t);
    }
    n
}

fn stale(given: u64, current: u64) -> RoleError {
    RoleError::StaleTerm { given, current }
}

#[test]
fn a_stale_term_is_refused_by_every_command() {
    let n = node("a", 5, Role::Replica, Some("b"));
    assert_eq!(n.fence(4), Err(stale(4, 5)));
    assert_eq!(n.promote(4, None), Err(stale(4, 5)));
    assert_eq!(n.follow(4, "c", None), Err(stale(4, 5)));
    assert_eq!(n.snapshot_contact(4, "b"), Err(stale(4, 5)));
    assert_eq!(n.step_down(4), None);
    assert_eq!(n.step_down(5), None);
}

#[test]
fn a_fence_is_persisted_before_it_is_entered() {
    let mut n = node("a", 5, Role::Primary, Some("a"));
    n.led_term = Some(5);
    let c = n.fence(6).unwrap();
    assert!(c.persist);
    assert_eq!(c.record.term, 6);
    assert_eq!(c.record.role, Some(Role::Fenced));
    assert_eq!(c.record.primary, None);
    // Deciding changed nothing: the node acts in term 6 only once the record is written.
    assert_eq!((n.term, n.role), (5, Role::Primary));
    let e = n.enter(c);
    assert!(e.changed && e.stepped_down && e.wake);
    assert_eq!(
        (n.term, n.role, n.primary.as_deref()),
        (6, Role::Fenced, None)
    );
    // A fenced former primary drains the log of the term it led.
    assert_eq!(n.led_term, Some(5));
    // Fencing again in the same term changes nothing on disk.
    let again = n.fence(6).unwrap();
    assert!(!again.persist);
    assert!(!n.enter(again).changed);
}

#[test]
fn promote_writes_the_record_then_leads_and_ships_to_the_others() {
    let mut n = with_log(node("a", 3, Role::Fenced, None), &[1, 2, 3]);
    let c = n.promote(4, None).unwrap().expect("a change");
    assert!(c.persist);
    assert_eq!(c.cause, Cause::Promote);
    assert_eq!(c.record.primary.as_deref(), Some("a"));
    let e = n.enter(c);
    assert_eq!(n.role, Role::Primary);
    assert_eq!(n.led_term, Some(4));
    assert!(n.synced);
    let peers: Vec<&str> = e
        .lead
        .as_ref()
        .unwrap()
        .iter()
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(peers, ["b", "c"]);
    // Promoting again in the same term is a no-op; with another member list it is refused.
    assert_eq!(n.promote(4, None), Ok(None));
    assert_eq!(n.promote(4, Some(list(&["a", "b", "c"]))), Ok(None));
    assert!(matches!(
        n.promote(4, Some(list(&["a", "b"]))),
        Err(RoleError::Conflict(_))
    ));
}

#[test]
fn promote_is_refused_when_another_node_leads_the_term_or_the_list_lacks_this_node() {
    let n = node("a", 4, Role::Replica, Some("b"));
    assert!(
        matches!(n.promote(4, None), Err(RoleError::Conflict(m)) if m.contains("b is already primary"))
    );
    assert!(n.promote(5, None).unwrap().is_some());
    let lacks = n.promote(5, Some(list(&["b", "c"])));
    assert!(
        matches!(lacks, Err(RoleError::Conflict(m)) if m.contains("does not contain this node"))
    );
    let mut empty = list(&["a", "b"]);
    empty.insert("c".into(), String::new());
    assert!(matches!(
        n.promote(5, Some(empty)),
        Err(RoleError::Conflict(_))
    ));
}

#[test]
fn promote_with_a_new_member_list_ships_to_the_new_members() {
    let mut n = node("a", 2, Role::Fenced, None);
    let c = n.promote(3, Some(list(&["a", "b", "d"]))).unwrap().unwrap();
    assert_eq!(c.record.members, Some(list(&["a", "b", "d"])));
    let e = n.enter(c);
    assert!(e.members_changed);
    let peers: Vec<&str> = e
        .lead
        .as_ref()
        .unwrap()
        .iter()
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(peers, ["b", "d"]);
}

#[test]
fn follow_says_hello_to_the_new_primary_and_is_not_synced_until_an_append_matches() {
    let mut n = node("a", 3, Role::Primary, Some("a"));
    n.synced = true;
    n.led_term = Some(3);
    let c = n.follow(4, "b", None).unwrap().unwrap();
    let e = n.enter(c);
    assert_eq!(e.hello.as_deref(), Some("http://127.0.0.1:7198"));
    assert!(e.stepped_down);
    assert_eq!((n.role, n.primary.as_deref()), (Role::Replica, Some("b")));
    assert!(!n.synced);
    // A replica stops draining the log it led.
    assert_eq!(n.led_term, None);
}

#[test]
fn follow_refuses_itself_strangers_and_a_primary_of_the_same_term() {
    let n = node("a", 3, Role::Primary, Some("a"));
    assert!(matches!(
        n.follow(4, "a", None),
        Err(RoleError::Conflict(_))
    ));
    assert!(
        matches!(n.follow(4, "z", None), Err(RoleError::Conflict(m)) if m.contains("z is not a member"))
    );
    assert!(
        matches!(n.follow(3, "b", None), Err(RoleError::Conflict(m)) if m.contains("fence it"))
    );
    let other = Some(list(&["a", "c"]));
    assert!(matches!(
        n.follow(4, "b", other),
        Err(RoleError::Conflict(_))
    ));
}

#[test]
fn a_repeated_follow_changes_nothing_but_a_missed_member_list() {
    let mut n = node("a", 4, Role::Replica, Some("b"));
    n.synced = true;
    assert_eq!(n.follow(4, "b", None), Ok(None));
    assert_eq!(n.follow(4, "b", Some(list(&["a", "b", "c"]))), Ok(None));
    let c = n
        .follow(4, "b", Some(list(&["a", "b", "c", "d"])))
        .unwrap()
        .unwrap();
    assert_eq!(c.cause, Cause::MemberList);
    assert!(c.persist);
    let e = n.enter(c);
    assert!(e.members_changed);
    assert!(!e.wake && !e.changed && e.hello.is_none());
    assert!(n.synced, "still matched with the same primary");
    assert_eq!(n.members.len(), 4);
}

#[test]
fn a_node_that_never_had_a_term_adopts_no_primary_by_contact() {
    let n = node("a", 0, Role::Fenced, None);
    assert!(
        matches!(n.observe_term(3, Some("b")), Err(RoleError::Conflict(m)) if m.contains("has no term yet"))
    );
    assert!(matches!(
        n.snapshot_contact(3, "b"),
        Err(RoleError::Conflict(_))
    ));
    // The coordinator's follow is how it joins.
    assert!(n.follow(3, "b", None).unwrap().is_some());
}

#[test]
fn a_newer_term_from_a_primary_makes_a_replica_of_it() {
    let mut n = node("a", 3, Role::Primary, Some("a"));
    n.led_term = Some(3);
    n.synced = true;
    let c = n.observe_term(4, Some("b")).unwrap().unwrap();
    assert_eq!(c.cause, Cause::Contact);
    assert!(c.persist);
    let e = n.enter(c);
    assert!(e.stepped_down && e.changed && e.hello.is_none() && e.lead.is_none());
    assert_eq!(
        (n.term, n.role, n.primary.as_deref()),
        (4, Role::Replica, Some("b"))
    );
    assert_eq!(n.led_term, None);
    // Same term, same primary: nothing to do. An older term: nothing either.
    assert_eq!(n.observe_term(4, Some("b")), Ok(None));
    assert_eq!(n.observe_term(3, Some("c")), Ok(None));
}

#[test]
fn a_fenced_node_adopts_the_primary_of_its_term_on_contact() {
    let mut n = node("a", 4, Role::Fenced, None);
    let c = n.observe_term(4, Some("b")).unwrap().unwrap();
    n.enter(c);
    assert_eq!((n.role, n.primary.as_deref()), (Role::Replica, Some("b")));
}

#[test]
fn a_primary_steps_down_on_a_newer_term_from_a_replica() {
    let mut n = node("a", 3, Role::Primary, Some("a"));
    n.led_term = Some(3);
    let c = n.step_down(5).unwrap();
    assert_eq!(c.record.role, Some(Role::Fenced));
    let e = n.enter(c);
    assert!(e.stepped_down);
    assert_eq!((n.term, n.role), (5, Role::Fenced));
}

#[test]
fn the_record_carries_what_a_restart_needs() {
    let mut n = node("a", 7, Role::Replica, Some("b"));
    n.known_commit = 42;
    let r = n.record();
    assert_eq!(
        (r.term, r.role, r.primary.as_deref()),
        (7, Some(Role::Replica), Some("b"))
    );
    assert_eq!(r.known_commit, 42);
    assert_eq!(r.members, Some(list(&["a", "b", "c"])));
}

#[test]
fn a_restarted_node_starts_fenced_unless_it_was_a_replica_of_its_latest_term() {
    let members = list(&["a", "b", "c"]);
    let rec = |term, role, primary: Option<&str>| RoleRecord {
        term,
        role,
        primary: primary.map(String::from),
        ..RoleRecord::default()
    };
    let primary = rec(4, Some(Role::Primary), Some("a"));
    assert_eq!(
        initial_role("a", &members, &primary, 4),
        (Role::Fenced, 4, None)
    );
    let replica = rec(4, Some(Role::Replica), Some("b"));
    assert_eq!(
        initial_role("a", &members, &replica, 4),
        (Role::Replica, 4, Some("b".into()))
    );
    // The log saw a newer term than the record: whoever it followed then may have changed.
    assert_eq!(
        initial_role("a", &members, &replica, 5),
        (Role::Fenced, 5, None)
    );
    let single = list(&["a"]);
    assert_eq!(
        initial_role("a", &single, &RoleRecord::default(), 0),
        (Role::Standalone, 1, Some("a".into()))
    );
    let n = Node::start(
        "a",
        Arc::new(members),
        &replica,
        (10, TermRuns::new(10, 4)),
        4,
    );
    assert_eq!(
        (n.role, n.last_index, n.known_commit),
        (Role::Replica, 10, 0)
    );
}
