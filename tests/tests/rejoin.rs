//! An old primary with a divergent log comes back after a failover: it rejoins as a replica of
//! the new primary, discards its unreplicated entries, and never serves them, not even for an
//! instant while it restarts.
//!
//! The divergence is made on purpose: with both replicas down the primary accepts `ack=async`
//! writes that exist only in its log; then it is killed and held down while the replicas come
//! back and elect a new primary, which takes new writes. Then the old primary is started again.

use std::sync::atomic::{AtomicBool, Ordering};

use rcluster_e2e::{DEADLINE, Options, Playground, http, runtime, serial, wait_for};
use serde_json::{Value, json};

const STALE: usize = 5;

fn stale_key(i: usize) -> String {
    format!("rejoin/stale-{i}")
}

#[test]
fn old_primary_rejoins_as_a_replica_and_never_serves_its_stale_log() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    let (old, term) = pg.wait_healthy();
    let rt = runtime();
    let client = pg.client();
    rt.block_on(client.put("rejoin/base", &json!("v0"), &Default::default()))
        .expect("base write");
    let replicas: Vec<String> = pg.names.iter().filter(|n| **n != old).cloned().collect();
    for r in &replicas {
        pg.stop_member(r, true);
    }
    for r in &replicas {
        wait_for("replica down", DEADLINE, || {
            pg.pid(r).is_none().then_some(())
        });
    }

    // Entries only the old primary holds.
    let old_url = pg.url(&old);
    let mut written = 0;
    for i in 0..STALE {
        let path = format!("/v1/kv/{}?ack=async", stale_key(i));
        match http(&old_url, "PUT", &path, Some("\"stale\"")) {
            Some((200, _)) => written += 1,
            other => panic!("async write on the lone primary: {other:?}"),
        }
    }
    pg.stop_member(&old, true);
    wait_for("old primary down", DEADLINE, || {
        pg.pid(&old).is_none().then_some(())
    });
    for r in &replicas {
        pg.start_member(r);
    }
    let (new, _) = pg.wait_primary_after(term);
    assert_ne!(new, old);
    rt.block_on(client.put("rejoin/base", &json!("v1"), &Default::default()))
        .expect("write on the new primary");

    // Watch the old primary from before it starts until well after it rejoined.
    let stop = AtomicBool::new(false);
    let (served, claimed) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let (mut served, mut claimed) = (Vec::new(), false);
            while !stop.load(Ordering::SeqCst) {
                for i in 0..STALE {
                    let path = format!("/v1/kv/{}?consistency=eventual", stale_key(i));
                    if let Some((200, body)) = http(&old_url, "GET", &path, None) {
                        served.push(body);
                    }
                }
                if let Some((200, body)) = http(&old_url, "GET", "/v1/status", None) {
                    let s: Value = serde_json::from_str(&body).unwrap_or_default();
                    claimed |= s["role"] == "primary";
                }
            }
            (served, claimed)
        });
        pg.start_member(&old);
        wait_for("the old primary to follow the new one", DEADLINE, || {
            let s = pg.node_status(&old)?;
            (s["role"] == "replica" && s["following"] == new.as_str() && s["ready"] == true)
                .then_some(())
        });
        pg.wait_converged();
        stop.store(true, Ordering::SeqCst);
        watcher.join().expect("watcher")
    });
    assert!(
        served.is_empty(),
        "the old primary served its stale log: {served:?}"
    );
    assert!(
        !claimed,
        "the old primary claimed to be primary after restarting"
    );

    let s = pg.node_status(&old).expect("status");
    assert!(
        s["entries_discarded"].as_u64() >= Some(written as u64),
        "it discarded its {written} unreplicated entries: {s}"
    );
    for name in &pg.names {
        let url = pg.url(name);
        for i in 0..STALE {
            let path = format!("/v1/kv/{}?consistency=eventual", stale_key(i));
            assert_eq!(
                http(&url, "GET", &path, None).map(|r| r.0),
                Some(404),
                "{name}"
            );
        }
        let (code, body) =
            http(&url, "GET", "/v1/kv/rejoin/base?consistency=eventual", None).expect("read");
        assert_eq!(code, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["value"], "v1", "{name}");
    }
    let f = wait_for(
        "the failover report to count the discarded entries",
        DEADLINE,
        || {
            let s = pg.status();
            let f = s["last_failover"].clone();
            f["entries_discarded"].as_u64().map(|_| f)
        },
    );
    assert_eq!(f["from"], old.as_str());
    assert_eq!(f["to"], new.as_str());
    assert!(
        f["entries_discarded"].as_u64() >= Some(written as u64),
        "{f}"
    );
    assert!(f["time_to_first_write_ms"].as_u64().is_some(), "{f}");
}
