use super::*;
use proptest::prelude::*;

#[test]
fn hash_tags_follow_redis_rules() {
    assert_eq!(hash_tag("{user42}/profile"), "user42");
    assert_eq!(hash_tag("posts/{user42}/7"), "user42");
    assert_eq!(hash_tag("plain"), "plain");
    // an empty tag hashes the whole key, as does an unclosed brace
    assert_eq!(hash_tag("{}x"), "{}x");
    assert_eq!(hash_tag("{abc"), "{abc");
    // only the first tag counts
    assert_eq!(hash_tag("{a}{b}"), "a");
    assert_eq!(
        slot_of("{user42}/profile", 4096),
        slot_of("{user42}/posts/7", 4096)
    );
    assert_eq!(slot_of("{user42}", 4096), slot_of("user42", 4096));
}

#[test]
fn counter_suffixed_keys_spread_evenly() {
    // The pattern CRC32C alone gives ([120, 80, 120, 80]) is gone: each shard of four gets a
    // fair share of 4,000 such keys.
    let m = SlotMap::even(4096, 4).unwrap();
    let mut counts = [0u32; 4];
    for i in 0..4000 {
        counts[m.owner_of(&format!("key{i}")) as usize] += 1;
    }
    assert!(counts.iter().all(|c| (900..1100).contains(c)), "{counts:?}");
}

#[test]
fn even_maps_split_equally() {
    let m = SlotMap::even(4096, 4).unwrap();
    assert_eq!(m.ranges.len(), 4);
    for s in 0..4 {
        assert_eq!(m.slot_count(s), 1024);
    }
    assert_eq!(m.owner(0), Some(0));
    assert_eq!(m.owner(1023), Some(0));
    assert_eq!(m.owner(1024), Some(1));
    assert_eq!(m.owner(4095), Some(3));
    assert_eq!(m.owner(4096), None);
    let m = SlotMap::even(10, 3).unwrap();
    assert_eq!(
        (m.slot_count(0), m.slot_count(1), m.slot_count(2)),
        (4, 3, 3)
    );
    assert!(SlotMap::even(0, 1).is_err());
    assert!(SlotMap::even(4, 0).is_err());
    assert!(SlotMap::even(4, 5).is_err());
}

#[test]
fn validation_rejects_gaps_overlaps_and_unknown_shards() {
    let good = SlotMap::even(8, 2).unwrap();
    good.validate().unwrap();
    let mut gap = good.clone();
    gap.ranges[1].start = 5;
    assert!(matches!(gap.validate(), Err(SlotMapError::Coverage { .. })));
    let mut overlap = good.clone();
    overlap.ranges[1].start = 3;
    assert!(matches!(
        overlap.validate(),
        Err(SlotMapError::Coverage { .. })
    ));
    let mut short = good.clone();
    short.ranges[1].end = 6;
    assert!(matches!(
        short.validate(),
        Err(SlotMapError::Coverage { slot: 7 })
    ));
    let mut unknown = good.clone();
    unknown.ranges[1].shard = 2;
    assert_eq!(
        unknown.validate(),
        Err(SlotMapError::UnknownShard { shard: 2 })
    );
}

#[test]
fn moving_a_range_bumps_the_epoch_and_merges_neighbours() {
    let m = SlotMap::even(8, 2).unwrap(); // 0-3 → 0, 4-7 → 1
    let moved = m.with_owner(2, 5, 1).unwrap();
    assert_eq!(moved.epoch, m.epoch + 1);
    assert_eq!(
        moved.ranges,
        vec![
            SlotRange {
                start: 0,
                end: 1,
                shard: 0
            },
            SlotRange {
                start: 2,
                end: 7,
                shard: 1
            },
        ]
    );
    let back = moved.with_owner(2, 3, 0).unwrap();
    assert_eq!(back.ranges, m.ranges);
    assert!(m.with_owner(5, 4, 0).is_err());
    assert!(m.with_owner(0, 8, 0).is_err());
    assert!(m.with_owner(0, 1, 2).is_err());
}

#[test]
fn shard_count_changes_refuse_to_orphan_slots() {
    let m = SlotMap::even(8, 2).unwrap();
    let grown = m.with_shards(3).unwrap();
    assert_eq!(grown.slot_count(2), 0);
    assert_eq!(grown.epoch, m.epoch + 1);
    assert!(grown.with_shards(1).is_err(), "shard 1 still owns slots");
    let drained = grown.with_owner(4, 7, 0).unwrap();
    assert_eq!(drained.with_shards(1).unwrap().ranges.len(), 1);
    assert_eq!(m.with_shards(2).unwrap().epoch, m.epoch);
}

#[test]
fn describe_lists_ranges() {
    let m = SlotMap::even(8, 2).unwrap().with_owner(6, 6, 0).unwrap();
    assert_eq!(m.describe(0), "0-3,6");
    assert_eq!(m.describe(1), "4-5,7");
    assert_eq!(m.with_shards(3).unwrap().describe(2), "-");
}

fn arb_map() -> impl Strategy<Value = SlotMap> {
    (1u32..200, 1u32..6).prop_flat_map(|(slots, shards)| {
        let shards = shards.min(slots);
        let moves = prop::collection::vec((0..slots, 0..slots, 0..shards), 0..12);
        moves.prop_map(move |moves| {
            let mut m = SlotMap::even(slots, shards).unwrap();
            for (a, b, to) in moves {
                m = m.with_owner(a.min(b), a.max(b), to).unwrap();
            }
            m
        })
    })
}

proptest! {
    /// Every slot has exactly one owner after any sequence of moves, the lookup agrees with a
    /// linear scan, and the epoch counts the moves.
    #[test]
    fn every_slot_has_exactly_one_owner(m in arb_map()) {
        m.validate().unwrap();
        let total: u32 = (0..m.shards).map(|s| m.slot_count(s)).sum();
        prop_assert_eq!(total, m.slots);
        for slot in 0..m.slots {
            let owners: Vec<_> = m.ranges.iter().filter(|r| r.contains(slot)).collect();
            prop_assert_eq!(owners.len(), 1);
            prop_assert_eq!(m.owner(slot), Some(owners[0].shard));
        }
        for w in m.ranges.windows(2) {
            prop_assert!(w[0].shard != w[1].shard, "adjacent ranges of one shard are merged");
        }
    }

    #[test]
    fn a_move_changes_only_the_moved_slots(m in arb_map(), a in 0u32..200, b in 0u32..200, to in 0u32..6) {
        let (a, b) = (a.min(b) % m.slots, a.max(b) % m.slots);
        let (a, b) = (a.min(b), a.max(b));
        let to = to % m.shards;
        let next = m.with_owner(a, b, to).unwrap();
        prop_assert_eq!(next.epoch, m.epoch + 1);
        for slot in 0..m.slots {
            let want = if (a..=b).contains(&slot) { to } else { m.owner(slot).unwrap() };
            prop_assert_eq!(next.owner(slot), Some(want));
        }
    }

    #[test]
    fn slots_are_in_range_and_tags_colocate(name in "[a-z{}/]{0,20}", tag in "[a-z0-9]{1,8}", slots in 1u32..5000) {
        prop_assert!(slot_of(&name, slots) < slots);
        let a = format!("{{{tag}}}/a");
        let b = format!("x/{{{tag}}}/b");
        prop_assert_eq!(slot_of(&a, slots), slot_of(&b, slots));
    }
}

fn apply(mut m: SlotMap, moves: &[SlotMove]) -> SlotMap {
    for mv in moves {
        for slot in mv.start..=mv.end {
            assert_eq!(
                m.owner(slot),
                Some(mv.from),
                "{mv} moves a slot {mv:?} does not own"
            );
        }
        m = m.with_owner(mv.start, mv.end, mv.to).unwrap();
    }
    m
}

#[test]
fn balancing_two_to_four_and_back_to_three() {
    let m = SlotMap::even(4096, 2).unwrap().with_shards(4).unwrap();
    let moves = m.balance_moves(4);
    assert_eq!(moves.len(), 2, "{moves:?}");
    let four = apply(m, &moves);
    assert_eq!(
        (0..4).map(|s| four.slot_count(s)).collect::<Vec<_>>(),
        vec![1024; 4]
    );
    let moves = four.balance_moves(3);
    let three = apply(four, &moves).with_shards(3).unwrap();
    assert_eq!(
        (0..3).map(|s| three.slot_count(s)).collect::<Vec<_>>(),
        vec![1366, 1365, 1365]
    );
    assert!(
        three.balance_moves(3).is_empty(),
        "balanced: nothing to move"
    );
}

proptest! {
    /// From any map, the moves reach the balanced counts, take slots only from shards over their
    /// share, and give only to shards under it.
    #[test]
    fn balance_moves_reach_equal_counts(m in arb_map(), shards in 1u32..7) {
        let shards = shards.min(m.slots);
        let grown = m.with_shards(m.shards.max(shards)).unwrap();
        let moves = grown.balance_moves(shards);
        let want = grown.balanced_counts(shards);
        for mv in &moves {
            prop_assert!(grown.slot_count(mv.from) > want.get(mv.from as usize).copied().unwrap_or(0));
            prop_assert!(grown.slot_count(mv.to) < want[mv.to as usize]);
        }
        let done = apply(grown, &moves);
        for s in 0..done.shards {
            prop_assert_eq!(done.slot_count(s), want.get(s as usize).copied().unwrap_or(0));
        }
        prop_assert!(done.with_shards(shards).is_ok(), "removed shards own nothing");
    }
}
