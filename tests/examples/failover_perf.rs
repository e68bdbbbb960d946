//! Failover performance of the playground (not a test: it reports numbers).
//!
//! ```text
//! cargo run -p rcluster-e2e --example failover_perf -- --kills 20 --window-ms 1000
//! cargo run -p rcluster-e2e --example failover_perf -- --kills 20 --window-ms 300
//! cargo run -p rcluster-e2e --example failover_perf -- --kills 0 --load-secs 600 --window-ms 300
//! cargo run -p rcluster-e2e --example failover_perf -- --kills 0 --around-secs 30
//! ```
//!
//! - `--kills N`: N times, wait for a healthy cluster, wait a random 0.2–0.7 s, `kill -9` the
//!   primary, and time until the first write acknowledged at `quorum` that was *sent* after the
//!   kill (the dead process cannot acknowledge it, so the new primary did). Median and worst.
//! - `--load-secs D`: D seconds of full write load without kills; counts failovers (should be 0).
//! - `--around-secs S`: writes per second from S seconds before one kill to S seconds after.
//!
//! Other flags: `--writers W` (default 8), `--probe-ms P` (default 100). The binaries are those
//! of the profile the example is built with (`--release` for release numbers).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcluster_client::{AckLevel, Client, PutOptions, RetryPolicy, WriteOptions};
use rcluster_e2e::{DEADLINE, Options, Playground, Rng, runtime, signal, wait_for};
use serde_json::json;

struct Args {
    kills: usize,
    window_ms: u64,
    probe_ms: u64,
    writers: usize,
    load_secs: u64,
    around_secs: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        kills: 20,
        window_ms: 1000,
        probe_ms: 100,
        writers: 8,
        load_secs: 0,
        around_secs: 0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let [flag, value] = pair else {
            return Err(format!("{pair:?}: expected --flag value pairs"));
        };
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--kills" => a.kills = n as usize,
            "--window-ms" => a.window_ms = n,
            "--probe-ms" => a.probe_ms = n,
            "--writers" => a.writers = n as usize,
            "--load-secs" => a.load_secs = n,
            "--around-secs" => a.around_secs = n,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// Every acknowledged write: when it was sent and when it was acknowledged.
#[derive(Default)]
struct Log {
    acks: Vec<(Instant, Instant)>,
    errors: u64,
}

async fn writer(id: usize, client: Client, stop: Arc<AtomicBool>, log: Arc<Mutex<Log>>) {
    let mut rng = Rng::new(id as u64);
    let value = json!("x".repeat(100));
    let opts = PutOptions {
        write: WriteOptions {
            ack: Some(AckLevel::Quorum),
            idempotency_key: None,
        },
        ..PutOptions::default()
    };
    while !stop.load(Ordering::Relaxed) {
        let key = format!("perf/{}", rng.below(1000));
        let sent = Instant::now();
        let ok = client.put(&key, &value, &opts).await.is_ok();
        let mut l = log.lock().unwrap();
        if ok {
            l.acks.push((sent, Instant::now()));
        } else {
            l.errors += 1;
        }
    }
}

fn client(pg: &Playground) -> Client {
    // Short attempts and frequent retries: the first write after the failover should not wait
    // for a long backoff.
    let retry = RetryPolicy {
        attempts: 1000,
        deadline: Duration::from_secs(30),
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_redirects: 3,
    };
    Client::builder([pg.urls[0].clone()])
        .request_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(200))
        .retry(retry)
        .build()
        .expect("client")
}

fn first_write_after(log: &Mutex<Log>, t: Instant) -> Option<Duration> {
    let l = log.lock().unwrap();
    l.acks
        .iter()
        .filter(|(sent, _)| *sent >= t)
        .map(|(_, acked)| *acked - t)
        .min()
}

fn summary(name: &str, mut v: Vec<Duration>) {
    if v.is_empty() {
        return;
    }
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} median {:.0} ms, p90 {:.0} ms, worst {:.0} ms, best {:.0} ms",
        v.len(),
        ms(v[v.len() / 2]),
        ms(v[(v.len() * 9 / 10).min(v.len() - 1)]),
        ms(v[v.len() - 1]),
        ms(v[0])
    );
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("failover_perf: {e}");
            std::process::exit(2);
        }
    };
    let pg = Playground::start(Options {
        detection_window_ms: args.window_ms,
        probe_interval_ms: args.probe_ms,
        node_args: vec![],
        ..Options::default()
    });
    let rt = runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let c = client(&pg);
    let tasks: Vec<_> = (0..args.writers)
        .map(|id| rt.spawn(writer(id, c.clone(), stop.clone(), log.clone())))
        .collect();
    let (_, first_term) = pg.wait_healthy();
    let started = Instant::now();

    let mut rng = Rng::new(1);
    let (mut client_side, mut playground_side, mut detection) =
        (Vec::new(), Vec::new(), Vec::new());
    for k in 0..args.kills {
        let (primary, term) = pg.wait_healthy();
        std::thread::sleep(Duration::from_millis(200 + rng.below(500)));
        let pid = wait_for("the primary's pid", DEADLINE, || pg.pid(&primary));
        assert!(signal(pid, "-9"), "kill -9 {pid}");
        // Taken once the signal is sent: a write sent before could still have been
        // acknowledged by the old primary.
        let killed_at = Instant::now();
        let took = loop {
            if let Some(t) = first_write_after(&log, killed_at) {
                break t;
            }
            if killed_at.elapsed() > DEADLINE {
                let (acks, errors) = {
                    let l = log.lock().unwrap();
                    (l.acks.len(), l.errors)
                };
                stop.store(true, Ordering::SeqCst);
                panic!(
                    "no write acknowledged {DEADLINE:?} after the kill ({acks} acks, {errors} errors)\n{}\n{:#?}",
                    pg.status(),
                    pg.decisions()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let (next, _) = pg.wait_primary_after(term);
        let f = wait_for("the playground's report", DEADLINE, || {
            let f = pg.status()["last_failover"].clone();
            (f["term"].as_u64() > Some(term) && f["time_to_first_write_ms"].is_u64()).then_some(f)
        });
        let pg_ms = f["time_to_first_write_ms"].as_u64().unwrap_or(0);
        let det_ms = f["detection_ms"].as_u64().unwrap_or(0);
        println!(
            "kill {k:2}: {primary} -> {next}: first acknowledged write {:.0} ms after kill -9 \
             (playground: detection {det_ms} ms, first write {pg_ms} ms after the last good probe)",
            took.as_secs_f64() * 1000.0
        );
        client_side.push(took);
        playground_side.push(Duration::from_millis(pg_ms));
        detection.push(Duration::from_millis(det_ms));
    }
    if args.kills > 0 {
        println!(
            "window {} ms, probe every {} ms, {} writers:",
            args.window_ms, args.probe_ms, args.writers
        );
        summary(
            "  kill -9 -> first acknowledged write (client)",
            client_side,
        );
        summary(
            "  last good probe -> first write (playground)",
            playground_side,
        );
        summary("  detection (playground)", detection);
    }

    if args.load_secs > 0 {
        let (_, term) = pg.wait_healthy();
        let failovers = pg.status()["failovers_total"].as_u64().unwrap_or(0);
        let t0 = Instant::now();
        let acks0 = log.lock().unwrap().acks.len();
        std::thread::sleep(Duration::from_secs(args.load_secs));
        let s = pg.status();
        let acks = log.lock().unwrap().acks.len() - acks0;
        let false_failovers = s["failovers_total"].as_u64().unwrap_or(0) - failovers;
        let term_changes = s["coordinator"]["term"].as_u64().unwrap_or(0) - term;
        println!(
            "load without kills: {:.0} s, {acks} writes ({:.0}/s), {false_failovers} failovers, \
             term changes {term_changes} (window {} ms)",
            t0.elapsed().as_secs_f64(),
            acks as f64 / t0.elapsed().as_secs_f64(),
            args.window_ms
        );
    }

    if args.around_secs > 0 {
        let (primary, _) = pg.wait_healthy();
        std::thread::sleep(Duration::from_secs(args.around_secs));
        let killed_at = Instant::now();
        pg.kill9(&primary);
        std::thread::sleep(Duration::from_secs(args.around_secs));
        let l = log.lock().unwrap();
        let mut per_sec: BTreeMap<i64, u64> = BTreeMap::new();
        for (_, acked) in &l.acks {
            let s = if *acked >= killed_at {
                (*acked - killed_at).as_secs() as i64
            } else {
                -((killed_at - *acked).as_secs() as i64) - 1
            };
            if s.unsigned_abs() <= args.around_secs {
                *per_sec.entry(s).or_default() += 1;
            }
        }
        println!("writes per second around a kill -9 of the primary at 0:");
        for (s, n) in per_sec {
            println!("  {s:+4} s  {n:6}  {}", "#".repeat((n / 20) as usize));
        }
    }
    stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let l = log.lock().unwrap();
    println!(
        "total: {} writes acknowledged, {} failed, in {:.0} s; terms {} -> {}",
        l.acks.len(),
        l.errors,
        started.elapsed().as_secs_f64(),
        first_term,
        pg.status()["coordinator"]["term"]
    );
}
