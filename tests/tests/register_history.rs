//! Linearizability across primary failures: 4 clients do put/get/compare-and-set on 3 keys
//! (`ack=quorum`, `consistency=linearizable`) while the primary is killed with SIGKILL at least
//! 20 times. Every operation is recorded with its call and return times and an ok, failed or
//! unknown outcome, and the history is checked with `rcluster_e2e::linearizability`.
//!
//! Writes whose outcome is unknown are retried with the same idempotency key until it is known
//! (for up to 20 s); the retries are part of the one operation, which then spans from its first
//! call to its last return. What stays unknown is recorded as unknown: it may have taken effect
//! at any time after its call, or never.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcluster_client::{AckLevel, Client, Consistency, Error, PutOptions, WriteOptions};
use rcluster_e2e::linearizability::{self, Limits, Observed, OpKind, Operation, Outcome, Verdict};
use rcluster_e2e::ops::{micros, refused, until_known};
use rcluster_e2e::{Options, Playground, Rng, runtime, serial};
use serde_json::json;

const CLIENTS: u64 = 4;
const KEYS: usize = 3;
const KILLS: usize = 20;
/// The kills must fit in this; the test fails if fewer than KILLS happened.
const KILL_BUDGET: Duration = Duration::from_secs(150);
const RESOLVE: Duration = Duration::from_secs(20);

type History = Arc<Mutex<Vec<Operation>>>;

fn write_opts(key: String, if_version: Option<u64>) -> PutOptions {
    PutOptions {
        if_version,
        write: WriteOptions {
            ack: Some(AckLevel::Quorum),
            idempotency_key: Some(key),
        },
        ..PutOptions::default()
    }
}

/// Outcome of a write after its retries.
fn write_outcome(r: Result<u64, Error>) -> (Outcome, bool) {
    match r {
        Ok(version) => (Outcome::Ok(Observed::Written { version }), true),
        Err(e) if e.code() == Some("version_mismatch") => (Outcome::Ok(Observed::Mismatch), true),
        Err(e) if refused(&e) => (Outcome::Failed, true),
        Err(_) => (Outcome::Unknown, false),
    }
}

async fn worker(
    c: u64,
    client: Client,
    keys: Vec<String>,
    origin: Instant,
    stop: Arc<AtomicBool>,
    history: History,
) {
    let mut rng = Rng::new(c);
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let key = keys[rng.below(KEYS as u64) as usize].clone();
        let value = format!("c{c}-{seq}");
        let idem = format!("{key}-c{c}-{seq}");
        let dice = rng.below(10);
        let call = micros(origin);
        let (kind, outcome, returned) = if dice < 4 {
            let (outcome, returned) = match client.get(&key, Some(Consistency::Linearizable)).await
            {
                Ok(Some(rec)) => {
                    versions.insert(key.clone(), rec.version);
                    let value = rec.value.as_str().unwrap_or_default().to_string();
                    (
                        Outcome::Ok(Observed::Found {
                            value,
                            version: rec.version,
                        }),
                        true,
                    )
                }
                Ok(None) => (Outcome::Ok(Observed::NotFound), true),
                // A read that got no answer tells nothing.
                Err(_) => (Outcome::Unknown, false),
            };
            (OpKind::Get, outcome, returned)
        } else {
            let expected = (dice >= 7).then(|| versions.get(&key).copied().unwrap_or(0));
            let opts = write_opts(idem, expected);
            let v = json!(value);
            let r = until_known(RESOLVE, || client.put(&key, &v, &opts)).await;
            if let Ok(p) = &r {
                versions.insert(key.clone(), p.version);
            }
            let (outcome, returned) = write_outcome(r.map(|p| p.version));
            let kind = match expected {
                Some(expected_version) => OpKind::Cas {
                    expected_version,
                    value,
                },
                None => OpKind::Put { value },
            };
            (kind, outcome, returned)
        };
        let ret = returned.then(|| micros(origin));
        history.lock().unwrap().push(Operation {
            client: c,
            key,
            kind,
            call,
            ret,
            outcome,
        });
        tokio::time::sleep(Duration::from_millis(rng.below(10))).await;
    }
}

#[test]
fn register_history_is_linearizable_across_20_primary_kills() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    pg.wait_healthy();
    let rt = runtime();
    let run = Rng::new(3).next_u64();
    let keys: Vec<String> = (0..KEYS).map(|k| format!("reg/{run}/k{k}")).collect();
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            rt.spawn(worker(
                c,
                pg.client(),
                keys.clone(),
                origin,
                stop.clone(),
                history.clone(),
            ))
        })
        .collect();

    let mut rng = Rng::new(5);
    let started = Instant::now();
    let mut kills = 0;
    while kills < KILLS && started.elapsed() < KILL_BUDGET {
        let (_, term) = pg.wait_healthy();
        // A random moment: the clients keep running meanwhile.
        std::thread::sleep(Duration::from_millis(50 + rng.below(250)));
        let (primary, t) = pg.wait_healthy();
        if t != term {
            continue;
        }
        pg.kill9(&primary);
        kills += 1;
        pg.wait_primary_after(term);
    }
    let kill_time = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for w in workers {
            w.await.expect("worker");
        }
    });
    pg.wait_converged();

    let history = history.lock().unwrap().clone();
    let count = |f: &dyn Fn(&Operation) -> bool| history.iter().filter(|o| f(o)).count();
    let ok_writes = count(&|o| matches!(o.outcome, Outcome::Ok(Observed::Written { .. })));
    let ok_reads = count(&|o| matches!(o.outcome, Outcome::Ok(Observed::Found { .. })));
    let unknown = count(&|o| matches!(o.outcome, Outcome::Unknown));
    eprintln!(
        "{kills} kills in {:.1} s; {} operations: {ok_writes} writes and {ok_reads} reads ok, {unknown} unknown",
        kill_time.as_secs_f64(),
        history.len()
    );
    assert_eq!(kills, KILLS, "only {kills} kills in {KILL_BUDGET:?}");
    assert!(ok_writes >= 100 && ok_reads >= 100, "too little progress");

    let checked = Instant::now();
    let verdict = linearizability::check(
        &history,
        Limits {
            max_steps: 20_000_000,
        },
    )
    .expect("well-formed history");
    eprintln!("checked in {:.2} s", checked.elapsed().as_secs_f64());
    if verdict != Verdict::Linearizable {
        let path = std::env::temp_dir().join(format!("rcluster-history-{run}.json"));
        let _ = std::fs::write(&path, serde_json::to_vec(&history).unwrap_or_default());
        panic!("{verdict:?}\nhistory saved to {}", path.display());
    }
    // The check can fail: a read of a value nobody wrote is caught.
    let mut forged = history;
    let read = forged
        .iter_mut()
        .find(|o| matches!(o.outcome, Outcome::Ok(Observed::Found { .. })))
        .expect("a read");
    if let Outcome::Ok(Observed::Found { value, .. }) = &mut read.outcome {
        *value = "never-written".into();
    }
    let verdict = linearizability::check(&forged, Limits::default()).expect("well-formed");
    assert!(matches!(verdict, Verdict::Violation(_)), "{verdict:?}");
}
