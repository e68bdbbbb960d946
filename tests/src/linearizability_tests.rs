use std::time::Instant;

use proptest::prelude::*;

use super::*;

fn op(
    client: u64,
    key: &str,
    kind: OpKind,
    call: u64,
    ret: Option<u64>,
    outcome: Outcome,
) -> Operation {
    Operation {
        client,
        key: key.to_string(),
        kind,
        call,
        ret,
        outcome,
    }
}

fn put(c: u64, key: &str, value: &str, call: u64, ret: u64, version: u64) -> Operation {
    let kind = OpKind::Put {
        value: value.into(),
    };
    op(
        c,
        key,
        kind,
        call,
        Some(ret),
        Outcome::Ok(Observed::Written { version }),
    )
}

fn put_unknown(c: u64, key: &str, value: &str, call: u64) -> Operation {
    let kind = OpKind::Put {
        value: value.into(),
    };
    op(c, key, kind, call, None, Outcome::Unknown)
}

fn put_failed(c: u64, key: &str, value: &str, call: u64, ret: u64) -> Operation {
    let kind = OpKind::Put {
        value: value.into(),
    };
    op(c, key, kind, call, Some(ret), Outcome::Failed)
}

fn get(c: u64, key: &str, call: u64, ret: u64, found: Option<(&str, u64)>) -> Operation {
    let observed = match found {
        Some((value, version)) => Observed::Found {
            value: value.into(),
            version,
        },
        None => Observed::NotFound,
    };
    op(c, key, OpKind::Get, call, Some(ret), Outcome::Ok(observed))
}

/// `written`: the new version, or `None` for a version mismatch.
fn cas(
    c: u64,
    key: &str,
    expected: u64,
    value: &str,
    call: u64,
    ret: u64,
    written: Option<u64>,
) -> Operation {
    let kind = OpKind::Cas {
        expected_version: expected,
        value: value.into(),
    };
    let observed = match written {
        Some(version) => Observed::Written { version },
        None => Observed::Mismatch,
    };
    op(c, key, kind, call, Some(ret), Outcome::Ok(observed))
}

fn cas_unknown(c: u64, key: &str, expected: u64, value: &str, call: u64) -> Operation {
    let kind = OpKind::Cas {
        expected_version: expected,
        value: value.into(),
    };
    op(c, key, kind, call, None, Outcome::Unknown)
}

fn verdict(history: &[Operation]) -> Verdict {
    check(history, Limits::default()).expect("well-formed history")
}

#[test]
fn linearizable_histories() {
    let cases: Vec<(&str, Vec<Operation>)> = vec![
        ("empty history", vec![]),
        (
            "sequential put then get",
            vec![
                put(1, "k", "a", 0, 10, 1),
                get(2, "k", 20, 30, Some(("a", 1))),
            ],
        ),
        (
            "get concurrent with a put may see the old state",
            vec![put(1, "k", "a", 0, 10, 1), get(2, "k", 5, 30, None)],
        ),
        (
            "get concurrent with a put may see the new state",
            vec![
                get(2, "k", 0, 30, Some(("a", 1))),
                put(1, "k", "a", 5, 10, 1),
            ],
        ),
        (
            "operations touching at one instant count as concurrent",
            vec![put(1, "k", "a", 0, 10, 1), get(2, "k", 10, 20, None)],
        ),
        (
            "unknown write that shows up later with an unseen version",
            vec![
                put_unknown(1, "k", "a", 0),
                get(2, "k", 10, 20, Some(("a", 5))),
            ],
        ),
        (
            "unknown write that never shows up",
            vec![put_unknown(1, "k", "a", 0), get(2, "k", 10, 20, None)],
        ),
        (
            "unknown write that takes effect after later writes",
            vec![
                put_unknown(1, "k", "a", 0),
                put(2, "k", "b", 10, 20, 3),
                get(2, "k", 30, 40, Some(("b", 3))),
                get(2, "k", 50, 60, Some(("a", 7))),
            ],
        ),
        (
            "unknown write's version fixed by a read, then a compare-and-set on it",
            vec![
                put_unknown(1, "k", "a", 0),
                get(2, "k", 10, 20, Some(("a", 4))),
                cas(2, "k", 4, "b", 30, 40, Some(6)),
                get(2, "k", 50, 60, Some(("b", 6))),
            ],
        ),
        (
            "unknown compare-and-set that took effect",
            vec![
                put(1, "k", "a", 0, 10, 2),
                cas_unknown(1, "k", 2, "b", 20),
                get(2, "k", 30, 40, Some(("b", 9))),
            ],
        ),
        (
            "a failed write is dropped",
            vec![put_failed(1, "k", "a", 0, 10), get(2, "k", 20, 30, None)],
        ),
        (
            "unknown get is dropped",
            vec![
                op(1, "k", OpKind::Get, 0, None, Outcome::Unknown),
                get(2, "k", 20, 30, None),
            ],
        ),
        (
            "compare-and-set chain",
            vec![
                cas(1, "k", 0, "a", 0, 10, Some(1)),
                cas(1, "k", 1, "b", 20, 30, Some(4)),
                cas(2, "k", 1, "c", 40, 50, None),
                get(2, "k", 60, 70, Some(("b", 4))),
            ],
        ),
        (
            "two concurrent compare-and-sets: one wins",
            vec![
                put(1, "k", "a", 0, 10, 1),
                cas(1, "k", 1, "b", 20, 40, Some(2)),
                cas(2, "k", 1, "c", 20, 40, None),
            ],
        ),
        (
            "keys are independent",
            vec![
                put(1, "x", "a", 0, 10, 1),
                put(1, "y", "b", 20, 30, 2),
                get(2, "x", 40, 50, Some(("a", 1))),
                get(2, "y", 40, 50, Some(("b", 2))),
            ],
        ),
    ];
    for (name, history) in cases {
        assert_eq!(verdict(&history), Verdict::Linearizable, "{name}");
    }
}

#[test]
fn non_linearizable_histories() {
    let cases: Vec<(&str, Vec<Operation>, usize)> = vec![
        (
            "stale read after an acknowledged write",
            vec![put(1, "k", "a", 0, 10, 1), get(2, "k", 20, 30, None)],
            1,
        ),
        (
            "lost acknowledged write",
            vec![
                put(1, "k", "a", 0, 10, 1),
                put(1, "k", "b", 20, 30, 2),
                get(2, "k", 40, 50, Some(("a", 1))),
            ],
            2,
        ),
        (
            "compare-and-set succeeding twice from the same version",
            vec![
                put(1, "k", "a", 0, 10, 1),
                cas(1, "k", 1, "b", 20, 30, Some(2)),
                cas(2, "k", 1, "c", 40, 50, Some(3)),
            ],
            2,
        ),
        (
            "concurrent compare-and-sets both succeeding from the same version",
            vec![
                put(1, "k", "a", 0, 10, 1),
                cas(1, "k", 1, "b", 20, 40, Some(2)),
                cas(2, "k", 1, "c", 20, 40, Some(3)),
            ],
            2,
        ),
        (
            "compare-and-set reporting a mismatch when the version matched",
            vec![
                put(1, "k", "a", 0, 10, 1),
                cas(2, "k", 1, "b", 20, 30, None),
            ],
            1,
        ),
        (
            "compare-and-set on a missing key reporting a mismatch for version 0",
            vec![cas(2, "k", 0, "b", 20, 30, None)],
            0,
        ),
        (
            "a read of a version nobody wrote",
            vec![
                put(1, "k", "a", 0, 10, 1),
                get(2, "k", 20, 30, Some(("a", 2))),
            ],
            1,
        ),
        (
            "a failed write that shows up",
            vec![
                put_failed(1, "k", "a", 0, 10),
                get(2, "k", 20, 30, Some(("a", 3))),
            ],
            1,
        ),
        (
            "reads going back in time",
            vec![
                put(1, "k", "a", 0, 10, 3),
                put(1, "k", "b", 20, 30, 5),
                get(2, "k", 0, 40, Some(("b", 5))),
                get(2, "k", 50, 60, Some(("a", 3))),
            ],
            3,
        ),
        (
            "a write whose version does not grow",
            vec![put(1, "k", "a", 0, 10, 5), put(1, "k", "b", 20, 30, 4)],
            1,
        ),
        (
            "an unknown write cannot take a version another write got",
            vec![
                put_unknown(1, "k", "a", 0),
                put(2, "other", "b", 10, 20, 4),
                get(2, "k", 30, 40, Some(("a", 4))),
            ],
            2,
        ),
        (
            "an unknown write cannot explain a value it did not write",
            vec![
                put_unknown(1, "k", "a", 0),
                get(2, "k", 10, 20, Some(("z", 5))),
            ],
            1,
        ),
    ];
    for (name, history, stuck) in cases {
        match verdict(&history) {
            Verdict::Violation(v) => {
                assert_eq!(v.key, "k", "{name}");
                assert_eq!(v.stuck, stuck, "{name}: {}", v.description);
                assert!(v.description.contains("not linearizable"), "{name}");
            }
            other => panic!("{name}: expected a violation, got {other:?}"),
        }
    }
}

#[test]
fn counterexample_names_the_longest_prefix() {
    let history = vec![
        put(1, "k", "a", 0, 10, 1),
        put(1, "k", "b", 20, 30, 2),
        get(2, "k", 40, 50, Some(("a", 1))),
    ];
    let Verdict::Violation(v) = verdict(&history) else {
        panic!("expected a violation");
    };
    assert_eq!(v.longest_prefix, vec![0, 1]);
    assert!(
        v.description.contains("value \"b\", version 2"),
        "{}",
        v.description
    );
}

#[test]
fn histories_read_from_json() {
    let json = r#"[
        {"client":1,"key":"k","kind":{"op":"put","value":"a"},"call":0,"ret":10,
         "outcome":{"ok":{"result":"written","version":1}}},
        {"client":2,"key":"k","kind":{"op":"cas","expected_version":1,"value":"b"},"call":5,
         "ret":null,"outcome":"unknown"},
        {"client":2,"key":"k","kind":{"op":"get"},"call":20,"ret":30,
         "outcome":{"ok":{"result":"found","value":"b","version":4}}}
    ]"#;
    let history: Vec<Operation> = serde_json::from_str(json).expect("parses");
    assert_eq!(history[1].outcome, Outcome::Unknown);
    assert_eq!(verdict(&history), Verdict::Linearizable);
    let back = serde_json::to_string(&history).expect("serializes");
    assert_eq!(
        serde_json::from_str::<Vec<Operation>>(&back).unwrap(),
        history
    );
}

#[test]
fn malformed_histories_are_errors() {
    let mut no_return = put(1, "k", "a", 0, 10, 1);
    no_return.ret = None;
    let backwards = put(1, "k", "a", 10, 5, 1);
    let wrong = op(
        1,
        "k",
        OpKind::Get,
        0,
        Some(1),
        Outcome::Ok(Observed::Mismatch),
    );
    let zero = put(1, "k", "a", 0, 10, 0);
    let cases = [
        (no_return, HistoryError::MissingReturn { index: 0 }),
        (
            backwards,
            HistoryError::ReturnBeforeCall {
                index: 0,
                call: 10,
                ret: 5,
            },
        ),
        (
            wrong,
            HistoryError::ResultDoesNotMatch {
                index: 0,
                kind: "get",
                result: "mismatch",
            },
        ),
        (zero, HistoryError::ZeroVersion { index: 0 }),
    ];
    for (operation, error) in cases {
        assert_eq!(check(&[operation], Limits::default()), Err(error));
    }
}

#[test]
fn budget_makes_hard_histories_inconclusive() {
    // Many concurrent unknown writes and a read nobody explains: exponential without a bound.
    let mut history: Vec<Operation> = (0..40)
        .map(|i| put_unknown(i, "k", &format!("v{i}"), 0))
        .collect();
    history.push(get(99, "k", 10, 20, Some(("nobody", 1_000))));
    let verdict = check(&history, Limits { max_steps: 5_000 }).expect("well-formed");
    assert_eq!(
        verdict,
        Verdict::Inconclusive {
            key: "k".into(),
            steps: 5_000
        }
    );
}

/// A small deterministic generator (xorshift), so the history is the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A linearizable history: each operation takes effect at a random instant between its call and
/// its return, on registers with a shared log index. `unknown_percent` of the operations lose
/// their answer (and about half of those never take effect).
fn generate(
    seed: u64,
    clients: u64,
    ops_per_client: u64,
    keys: u64,
    unknown_percent: u64,
) -> Vec<Operation> {
    let mut rng = Rng(seed | 1);
    let mut registers: Vec<Option<(String, u64)>> = vec![None; keys as usize];
    let mut log_index = 0;
    // Per client: operations finished, and the one in flight with whether it took effect.
    let mut finished = vec![0u64; clients as usize];
    let mut in_flight: Vec<Option<(Operation, bool)>> = vec![None; clients as usize];
    let mut history = Vec::new();
    let mut now = 0;
    while finished.iter().sum::<u64>() < clients * ops_per_client {
        now += 1 + rng.below(3);
        let c = rng.below(clients) as usize;
        let lose_answer = rng.below(100) < unknown_percent / 2;
        match in_flight[c].take() {
            None if finished[c] == ops_per_client => {}
            None => {
                let k = rng.below(keys);
                let value = format!("c{c}-{}", finished[c]);
                let kind = match rng.below(3) {
                    0 => OpKind::Get,
                    1 => OpKind::Put { value },
                    _ => OpKind::Cas {
                        expected_version: rng.below(4).min(log_index),
                        value,
                    },
                };
                let call = op(
                    c as u64,
                    &format!("key{k}"),
                    kind,
                    now,
                    None,
                    Outcome::Unknown,
                );
                in_flight[c] = Some((call, false));
            }
            Some((operation, false)) if lose_answer => {
                history.push(operation);
                finished[c] += 1;
            }
            Some((mut operation, false)) => {
                let k: usize = operation.key[3..].parse().expect("generated key");
                let observed = match &operation.kind {
                    OpKind::Get => match &registers[k] {
                        Some((value, version)) => Observed::Found {
                            value: value.clone(),
                            version: *version,
                        },
                        None => Observed::NotFound,
                    },
                    OpKind::Put { value } => write(&mut registers[k], &mut log_index, value),
                    OpKind::Cas {
                        expected_version,
                        value,
                    } => {
                        if registers[k].as_ref().map_or(0, |r| r.1) == *expected_version {
                            write(&mut registers[k], &mut log_index, value)
                        } else {
                            Observed::Mismatch
                        }
                    }
                };
                operation.outcome = Outcome::Ok(observed);
                in_flight[c] = Some((operation, true));
            }
            Some((mut operation, true)) => {
                if lose_answer {
                    operation.outcome = Outcome::Unknown;
                } else {
                    operation.ret = Some(now);
                }
                history.push(operation);
                finished[c] += 1;
            }
        }
    }
    history
}

fn write(register: &mut Option<(String, u64)>, log_index: &mut u64, value: &str) -> Observed {
    *log_index += 1;
    *register = Some((value.to_string(), *log_index));
    Observed::Written {
        version: *log_index,
    }
}

#[test]
fn four_clients_times_300_ops_check_quickly() {
    let history = generate(7, 4, 300, 3, 4);
    assert_eq!(history.len(), 1_200);
    let started = Instant::now();
    // A tight budget stands in for a time limit: the check is deterministic, timings are not.
    let verdict = check(&history, Limits { max_steps: 100_000 }).expect("well-formed");
    assert_eq!(verdict, Verdict::Linearizable);
    eprintln!("checked 1200 operations in {:?}", started.elapsed());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No false alarms: every generated (linearizable) history passes.
    #[test]
    fn generated_histories_are_linearizable(seed in any::<u64>(), clients in 1u64..5, unknown in 0u64..30) {
        let history = generate(seed, clients, 40, 2, unknown);
        let verdict = check(&history, Limits { max_steps: 500_000 }).expect("well-formed");
        prop_assert_eq!(verdict, Verdict::Linearizable);
    }

    /// A read that returns a version no write produced is always caught when no write's outcome
    /// is unknown.
    #[test]
    fn corrupted_read_is_caught(seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
        let mut history = generate(seed, 3, 40, 2, 0);
        let found: Vec<usize> = history
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o.outcome, Outcome::Ok(Observed::Found { .. })))
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!found.is_empty());
        let i = found[pick.index(found.len())];
        if let Outcome::Ok(Observed::Found { version, .. }) = &mut history[i].outcome {
            *version += 1_000_000;
        }
        let verdict = check(&history, Limits { max_steps: 500_000 }).expect("well-formed");
        prop_assert!(matches!(verdict, Verdict::Violation(_)), "{:?}", verdict);
    }
}
