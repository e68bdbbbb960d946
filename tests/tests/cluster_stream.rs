//! Clients learn a new primary by push (`GET /v1/cluster/stream`): after a `kill -9` of the
//! primary, a client that sends nothing meanwhile knows the new primary as soon as the failover
//! is done, and its next write goes straight there — no attempt on the dead address, no timeout
//! waited out against it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcluster_client::{Client, Notice, PutOptions, calls};
use rcluster_e2e::{DEADLINE, Options, Playground, http, runtime, serial, wait_for};
use serde_json::json;

/// How many cluster streams `url` has opened (its request counter for the `cluster_stream` api).
fn streams_opened(url: &str) -> u64 {
    let Some((200, text)) = http(url, "GET", "/metrics", None) else {
        return 0;
    };
    text.lines()
        .filter(|l| {
            l.starts_with("rcluster_requests_total{") && l.contains("api=\"cluster_stream\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn after_a_kill_9_the_next_write_goes_straight_to_the_pushed_primary() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    let (old, term) = pg.wait_healthy();
    let old_url = pg.url(&old);
    let rt = runtime();
    // Every attempt that failed, by endpoint (the client tells a notice handler before each retry).
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = failed.clone();
    let client = Client::builder(pg.urls.clone())
        .locate_primary(true)
        .request_timeout(Duration::from_secs(5))
        .retry_deadline(Duration::from_secs(30))
        .on_notice(move |n: &Notice<'_>| {
            if let Notice::Retrying { endpoint, .. } = n {
                seen.lock().unwrap().push(endpoint.to_string());
            }
        })
        .build()
        .expect("client");
    let put = |key: &str| {
        let call = calls::put(key, &json!(key), &PutOptions::default()).expect("call");
        rt.block_on(client.execute(&call))
    };
    let first = put("push/before").expect("write before the kill");
    assert_eq!(
        first.endpoint, old_url,
        "the located primary took the first write"
    );
    assert_eq!(client.known_primary().as_deref(), Some(old_url.as_str()));
    // The client streams from a node that is not the primary, so the stream outlives the kill.
    wait_for("the client's cluster stream", DEADLINE, || {
        pg.urls
            .iter()
            .filter(|u| **u != old_url)
            .any(|u| streams_opened(u) > 0)
            .then_some(())
    });

    pg.kill9(&old);
    let (new, _) = pg.wait_primary_after(term);
    let new_url = pg.url(&new);
    // Nothing is sent meanwhile: only the push can tell the client.
    wait_for("the client to hear of the new primary", DEADLINE, || {
        (client.known_primary().as_deref() == Some(new_url.as_str())).then_some(())
    });
    let after = put("push/after").expect("write after the failover");
    assert_eq!(
        after.endpoint, new_url,
        "the write went straight to the new primary"
    );
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "no attempt failed (the dead primary {old_url} was not tried): {failed:?}"
    );
}
