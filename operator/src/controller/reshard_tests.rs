//! The resharding stage's decisions, against tasks that report what a real migration step
//! would (the steps themselves are the playground's and the real control plane's tests).

use super::*;
use crate::nodes::NodeClient;
use crate::reshard::{MoveError, Step};
use rcluster_proto::migration::Phase;
use std::time::Duration;

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(100).unwrap())
}

fn mover() -> Mover {
    Mover::new(NodeClient::new("secret", Duration::from_millis(100)))
}

struct Run {
    map: SlotMap,
    record: Option<ReshardStatus>,
    reasons: Vec<String>,
    started: Option<(rcluster_proto::Migration, String, String)>,
    finished: bool,
}

/// One reconcile's decision; a started task comes back with `result`.
fn decide_once(
    read: Option<&ReshardStatus>,
    slots: &SlotMap,
    wanted: u32,
    primaries: &[Option<String>],
    mem: &mut ReshardMemory,
    result: Result<Step, String>,
) -> Run {
    let mut started = None;
    let d = decide(
        &Input {
            read,
            slots,
            wanted,
            primaries,
            now: &now(),
        },
        mem,
        |mv, m, s, t| {
            started = Some((m, s, t));
            tokio::spawn(
                async move { (mv, result.map_err(|e| MoveError::Protocol(e.to_string()))) },
            )
        },
        mover,
    )
    .unwrap();
    Run {
        map: d.slots,
        record: d.record,
        reasons: d.events.iter().map(|e| e.reason.clone()).collect(),
        started,
        finished: d.finished,
    }
}

async fn task_done(mem: &ReshardMemory) {
    for _ in 0..1000 {
        if mem.moving.as_ref().is_none_or(|h| h.is_finished()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the task did not end");
}

fn urls(n: usize) -> Vec<Option<String>> {
    (0..n).map(|k| Some(format!("http://p{k}"))).collect()
}

#[tokio::test]
async fn a_grown_spec_moves_ranges_one_phase_at_a_time_each_recorded_first() {
    let mut mem = ReshardMemory::default();
    let two = SlotMap::even(4096, 2).unwrap();
    // Nothing to do at the recorded count.
    let r = decide_once(None, &two, 2, &urls(2), &mut mem, Ok(Step::Finished));
    assert_eq!(
        (r.record, r.map.clone(), r.started.is_none()),
        (None, two.clone(), true)
    );

    // Begins: the record and a map with room for shard 2; nothing moves yet.
    let r = decide_once(None, &two, 3, &urls(2), &mut mem, Ok(Step::Finished));
    assert_eq!(r.reasons, ["ReshardStarted"]);
    assert!(r.started.is_none());
    let (map, rec) = (r.map, r.record.unwrap());
    assert_eq!((map.shards, map.epoch), (3, two.epoch + 1));

    // Read back: the first move is recorded, not started.
    let r = decide_once(Some(&rec), &map, 3, &urls(2), &mut mem, Ok(Step::Finished));
    let rec = r.record.unwrap();
    let m = rec.migration.clone().unwrap().to_migration().unwrap();
    assert_eq!((m.to, m.phase), (2, Phase::Copying));
    assert!(
        r.started.is_none(),
        "nothing acts before the move is recorded"
    );
    assert_eq!(r.reasons, ["ReshardStep"], "each recorded move is told");

    // Read back, shard 2 without a primary yet: the migration waits.
    let mut two_primaries = urls(3);
    two_primaries[2] = None;
    let r = decide_once(
        Some(&rec),
        &map,
        3,
        &two_primaries,
        &mut mem,
        Ok(Step::Finished),
    );
    assert!(r.started.is_none());
    assert_eq!(r.record.as_ref(), Some(&rec));

    // With both primaries: the phase's task starts against them.
    let r = decide_once(
        Some(&rec),
        &map,
        3,
        &urls(3),
        &mut mem,
        Ok(Step::Record(Phase::Fencing)),
    );
    let (started, source, target) = r.started.unwrap();
    assert_eq!(
        (started, source.as_str(), target.as_str()),
        (m.clone(), "http://p0", "http://p2")
    );
    task_done(&mem).await;

    // Its outcome is recorded, and no new task starts in the same reconcile.
    let r = decide_once(Some(&rec), &map, 3, &urls(3), &mut mem, Ok(Step::Finished));
    assert!(r.started.is_none());
    assert_eq!(r.reasons, ["ReshardStep"]);
    let rec = r.record.unwrap();
    assert_eq!(rec.migration.as_ref().unwrap().phase, "Fencing");

    // Owned: the map naming the target at the next epoch, in the same record.
    decide_once(
        Some(&rec),
        &map,
        3,
        &urls(3),
        &mut mem,
        Ok(Step::Record(Phase::Owned { epoch: 0 })),
    );
    task_done(&mem).await;
    let r = decide_once(Some(&rec), &map, 3, &urls(3), &mut mem, Ok(Step::Finished));
    let owned = r.record.unwrap();
    let mig = owned.migration.as_ref().unwrap();
    assert_eq!(
        (mig.phase.as_str(), mig.epoch),
        ("Owned", Some(r.map.epoch as i64))
    );
    assert_eq!(r.map.owner(m.start), Some(2));
    assert_eq!(r.map.epoch, map.epoch + 1);
}

#[tokio::test]
async fn a_failed_step_is_told_once_and_retried() {
    let mut mem = ReshardMemory::default();
    let map = SlotMap::even(4096, 2).unwrap().with_shards(3).unwrap();
    let mut r = Resharding::new(2, 3);
    r.next(&map).unwrap();
    let rec = ReshardStatus::new(&r, &map, Some(now()), Some(now()));
    for round in 0..2 {
        decide_once(
            Some(&rec),
            &map,
            3,
            &urls(3),
            &mut mem,
            Err("refused".into()),
        );
        task_done(&mem).await;
        let r = decide_once(Some(&rec), &map, 3, &urls(3), &mut mem, Ok(Step::Finished));
        let want: &[&str] = if round == 0 {
            &["ReshardStepFailed"]
        } else {
            &[]
        };
        assert_eq!(r.reasons, want, "round {round}");
        assert_eq!(r.record.as_ref(), Some(&rec), "a failure changes no record");
    }
}

#[tokio::test]
async fn shrinking_drops_the_empty_shards_from_the_map_before_the_end_is_recorded() {
    let mut mem = ReshardMemory::default();
    // Asked for 3, then back to 2 before anything moved.
    let map = SlotMap::even(4096, 2).unwrap().with_shards(3).unwrap();
    let rec = ReshardStatus::new(&Resharding::new(2, 3), &map, Some(now()), Some(now()));
    let r = decide_once(Some(&rec), &map, 2, &urls(3), &mut mem, Ok(Step::Finished));
    assert!(!r.finished, "the smaller map is recorded first");
    assert_eq!(r.map.shards, 2);
    let rec = r.record.unwrap();
    assert_eq!(rec.shards, 2);
    // Read back with the smaller map: the removed shards' objects go, then the record.
    let r = decide_once(
        Some(&rec),
        &r.map,
        2,
        &urls(2),
        &mut mem,
        Ok(Step::Finished),
    );
    assert!(r.finished);
    assert_eq!(r.record, None);
    assert_eq!(r.reasons, ["ReshardFinished"]);
}
