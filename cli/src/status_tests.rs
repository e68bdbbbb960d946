//! The cluster view's text, lag and slot lines, from made-up reports.

use super::*;
use rcluster_proto::migration::{Incoming, Outgoing};
use rcluster_proto::{MemberReport, ShardInfo, SwitchoverRequest};

fn status(node: &str, role: Role, term: u64, last: u64, ready: bool) -> NodeStatus {
    NodeStatus {
        node: node.into(),
        role,
        term,
        last_log_index: last,
        applied_index: last,
        ready,
        ..NodeStatus::default()
    }
}

fn member(name: &str, status: Option<NodeStatus>) -> MemberView {
    MemberView {
        name: name.into(),
        url: format!("http://127.0.0.1:700{}", &name[1..]),
        error: status.is_none().then(|| "connection refused".to_string()),
        status,
        lag_entries: None,
    }
}

fn two_shards() -> ClusterMap {
    let info = |shard: ShardId, names: &[&str], term| ShardInfo {
        shard,
        members: names
            .iter()
            .map(|n| (n.to_string(), format!("http://127.0.0.1:700{}", &n[1..])))
            .collect(),
        primary: Some(names[0].to_string()),
        term,
    };
    ClusterMap {
        slots: SlotMap::even(4096, 2).unwrap(),
        shards: vec![info(0, &["n1", "n2"], 3), info(1, &["n3", "n4"], 1)],
    }
}

#[test]
fn lag_comes_from_the_primary_or_the_log_positions() {
    let mut p = status("n1", Role::Primary, 3, 100, true);
    p.members = vec![MemberReport {
        name: "n2".into(),
        lag_entries: Some(7),
        ..MemberReport::default()
    }];
    let mut members = vec![
        member("n1", Some(p)),
        member("n2", Some(status("n2", Role::Replica, 3, 95, true))),
        member("n3", Some(status("n3", Role::Replica, 3, 90, false))),
        member("n4", None),
    ];
    fill_lag(&mut members);
    let lags: Vec<Option<u64>> = members.iter().map(|m| m.lag_entries).collect();
    assert_eq!(lags, [Some(0), Some(7), Some(10), None]);
    // Without a primary nobody's lag is known.
    let mut lone = vec![member("n2", Some(status("n2", Role::Replica, 3, 95, true)))];
    fill_lag(&mut lone);
    assert_eq!(lone[0].lag_entries, None);
}

#[test]
fn every_shard_and_member_is_shown() {
    let map = two_shards();
    let mut s0 = vec![
        member("n1", Some(status("n1", Role::Primary, 3, 120, true))),
        member("n2", None),
    ];
    fill_lag(&mut s0);
    let mut replica = status("n4", Role::Replica, 1, 40, true);
    replica.switchover_request = Some(SwitchoverRequest {
        to: Some("n4".into()),
        at_ms: 1_795_954_049_970,
    });
    let mut s1 = vec![
        member("n3", Some(status("n3", Role::Primary, 1, 42, true))),
        member("n4", Some(replica)),
    ];
    fill_lag(&mut s1);
    let view = ClusterView {
        cluster_id: Some("shop".into()),
        answered_by: "http://127.0.0.1:7002".into(),
        shards: vec![
            ShardView {
                shard: 0,
                slot_ranges: vec![[0, 2047]],
                slots: 2048,
                primary: Some("n1".into()),
                term: 3,
                members: s0,
            },
            ShardView {
                shard: 1,
                slot_ranges: vec![[2048, 4095]],
                slots: 2048,
                primary: Some("n3".into()),
                term: 1,
                members: s1,
            },
        ],
        map,
        migrations: Vec::new(),
        reshard: None,
    };
    let text = render(&view, 1_795_954_049_970 + 2_000);
    let expected = "\
cluster shop  (4096 slots, map epoch 1, 2 shards; map from http://127.0.0.1:7002)
shard 0  slots 0-2047 (2048)  primary n1  term 3
  NAME  ROLE     TERM  APPLIED  LAG  URL                    READY
  n1    primary     3      120    0  http://127.0.0.1:7001  yes
  n2    -           -        -    -  http://127.0.0.1:7002  unreachable: connection refused
shard 1  slots 2048-4095 (2048)  primary n3  term 1
  NAME  ROLE     TERM  APPLIED  LAG  URL                    READY
  n3    primary     1       42    0  http://127.0.0.1:7003  yes
  n4    replica     1       40    2  http://127.0.0.1:7004  yes
  switchover to n4 requested on n4 at 2026-11-29 12:07:29 UTC (2.0 s ago)
";
    assert_eq!(text, expected, "\n{text}");
    // The JSON keeps raw values.
    let doc = serde_json::to_value(&view).unwrap();
    assert_eq!(
        doc["shards"][1]["members"][1]["status"]["switchover_request"]["at_ms"],
        1_795_954_049_970u64
    );
    assert_eq!(doc["shards"][0]["slot_ranges"], json!([[0, 2047]]));
}

#[test]
fn slot_lines_name_the_slot_shard_and_primary() {
    let map = two_shards();
    let key = "{user42}/posts/7";
    let slot = rcluster_proto::slot_of("user42", 4096);
    let shard = map.slots.owner(slot).unwrap();
    let line = slot_line(&map, key, false);
    let primary = if shard == 0 { "n1" } else { "n3" };
    assert!(
        line.starts_with(&format!(
            "{key}  slot {slot} (hash tag \"user42\")  shard {shard}  primary {primary} http://"
        )),
        "{line}"
    );
    let doc: serde_json::Value = serde_json::from_str(&slot_line(&map, "plain", true)).unwrap();
    assert_eq!(doc["slot"], rcluster_proto::slot_of("plain", 4096));
    assert_eq!(doc["hash_tag"], serde_json::Value::Null);
    // Keys with the same tag share a slot.
    assert_eq!(
        map.slots.slot_of("{user42}/profile"),
        map.slots.slot_of(key)
    );
}

fn shard_view(shard: ShardId, slots: u32, members: Vec<MemberView>) -> ShardView {
    ShardView {
        shard,
        slot_ranges: Vec::new(),
        slots,
        primary: None,
        term: 1,
        members,
    }
}

#[test]
fn a_migration_shows_each_range_once_with_the_furthest_step_and_the_slot_counts() {
    // Shard 0's primary fenced 1366-2047 for shard 2, which reports its import of it; shard 1
    // holds only a dropped range (history, not shown); a replica's stale report of shard 0 is
    // not the shard's word (its primary's is).
    let mut s0 = status("n1", Role::Primary, 4, 300, true);
    s0.slot_state.outgoing.push(Outgoing {
        start: 1366,
        end: 2047,
        to: 2,
        fence_index: 290,
        handed_off: None,
        dropped: false,
    });
    let stale = status("n2", Role::Replica, 3, 250, true);
    let mut s1 = status("s1n1", Role::Primary, 1, 80, true);
    s1.slot_state.outgoing.push(Outgoing {
        start: 3414,
        end: 4095,
        to: 2,
        fence_index: 50,
        handed_off: Some(3),
        dropped: true,
    });
    let mut s2 = status("s2n1", Role::Primary, 1, 40, true);
    s2.slot_state.incoming = Some(Incoming {
        start: 1366,
        end: 2047,
        from: 0,
        copy_at: Some(280),
        copied: true,
        source_index: 289,
    });
    let shards = vec![
        shard_view(
            0,
            1366 + 682,
            vec![member("n2", Some(stale)), member("n1", Some(s0))],
        ),
        shard_view(1, 1365, vec![member("n3", Some(s1))]),
        shard_view(2, 683, vec![member("n5", Some(s2.clone()))]),
    ];
    let moving = migrations(&shards);
    assert_eq!(
        moving,
        [MigrationView {
            start: 1366,
            end: 2047,
            from: 0,
            to: 2,
            phase: "fenced".into(),
            detail: "fence at index 290".into(),
        }]
    );
    // Before the fence only the target knows: it is catching up (or copying).
    let only_target = vec![shard_view(2, 683, vec![member("n5", Some(s2.clone()))])];
    assert_eq!(migrations(&only_target)[0].phase, "catching up");
    let mut copying = s2;
    if let Some(i) = copying.slot_state.incoming.as_mut() {
        i.copied = false;
    }
    let view = ClusterView {
        cluster_id: None,
        answered_by: "http://127.0.0.1:7001".into(),
        map: two_shards(),
        migrations: migrations(&[shard_view(2, 683, vec![member("n5", Some(copying))])]),
        shards,
        reshard: Some(json!({"shards": 3, "moved_slots": 683, "remaining_slots": 682})),
    };
    let text = render(&view, 0);
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    assert_eq!(
        tail,
        [
            "  slots per shard: 0:2048  1:1365  2:683",
            "  slots 1366-2047 shard 0 → 2: copying (copy of index 280)",
            "resharding to 3 shards: 683 slots moved, 682 to go",
        ],
        "\n{text}"
    );
    // Nothing moving: no such lines.
    let idle = ClusterView {
        migrations: Vec::new(),
        reshard: None,
        ..view
    };
    assert!(!render(&idle, 0).contains("slots per shard"));
}
