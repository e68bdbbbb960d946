use super::*;
use rcluster_proto::migration::{Incoming, Outgoing};

fn m(phase: Phase) -> Migration {
    Migration {
        phase,
        ..Migration::new(10, 19, 0, 1)
    }
}

fn importing(copied: bool, source_index: u64) -> SlotState {
    SlotState {
        incoming: Some(Incoming {
            start: 10,
            end: 19,
            from: 0,
            copy_at: Some(5),
            copied,
            source_index,
        }),
        ..SlotState::default()
    }
}

fn giving(fence_index: u64, handed_off: Option<u64>, dropped: bool) -> SlotState {
    SlotState {
        outgoing: vec![Outgoing {
            start: 10,
            end: 19,
            to: 1,
            fence_index,
            handed_off,
            dropped,
        }],
        ..SlotState::default()
    }
}

#[test]
fn copying_begins_copies_then_catches_up_before_fencing() {
    let idle = SlotState::default();
    let copying = m(Phase::Copying);
    assert_eq!(next_step(&copying, &idle, &idle, false), Step::Begin);
    assert_eq!(
        next_step(&copying, &idle, &importing(false, 0), false),
        Step::Copy
    );
    assert_eq!(
        next_step(&copying, &idle, &importing(true, 7), false),
        Step::CatchUp { from: 7 }
    );
    assert_eq!(
        next_step(&copying, &idle, &importing(true, 7), true),
        Step::Record(Phase::Fencing)
    );
}

#[test]
fn the_target_takes_the_log_up_to_the_fence_before_the_map_changes() {
    let fencing = m(Phase::Fencing);
    let target = importing(true, 7);
    assert_eq!(
        next_step(&fencing, &SlotState::default(), &target, true),
        Step::Fence
    );
    assert_eq!(
        next_step(&fencing, &giving(9, None, false), &target, true),
        Step::Drain { from: 7, until: 9 }
    );
    assert_eq!(
        next_step(&fencing, &giving(7, None, false), &target, true),
        Step::Record(Phase::Owned { epoch: 0 })
    );
}

#[test]
fn the_source_stops_serving_before_the_target_starts() {
    let owned = m(Phase::Owned { epoch: 4 });
    let target = importing(true, 9);
    assert_eq!(
        next_step(&owned, &giving(9, None, false), &target, false),
        Step::Handoff { epoch: 4 }
    );
    assert_eq!(
        next_step(&owned, &giving(9, Some(4), false), &target, false),
        Step::End { epoch: 4 }
    );
    let done = SlotState::default();
    assert_eq!(
        next_step(&owned, &giving(9, Some(4), false), &done, false),
        Step::Record(Phase::Dropping { epoch: 4 })
    );
    let dropping = m(Phase::Dropping { epoch: 4 });
    assert_eq!(
        next_step(&dropping, &giving(9, Some(4), false), &done, false),
        Step::Drop
    );
    assert_eq!(
        next_step(&dropping, &giving(9, Some(4), true), &done, false),
        Step::Finished
    );
}

#[test]
fn an_abort_forgets_the_import_and_unfences_the_source() {
    let aborting = m(Phase::Aborting);
    assert_eq!(
        next_step(
            &aborting,
            &giving(9, None, false),
            &importing(true, 9),
            false
        ),
        Step::Abort
    );
    assert_eq!(
        next_step(
            &aborting,
            &giving(9, None, false),
            &SlotState::default(),
            false
        ),
        Step::Unfence
    );
    assert_eq!(
        next_step(
            &aborting,
            &SlotState::default(),
            &SlotState::default(),
            false
        ),
        Step::Finished
    );
}
