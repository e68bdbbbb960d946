//! The playground with `--tls --auth`: nodes serve https with a certificate of the folder's CA
//! and require access tokens; the coordinator probes and commands them over https with the
//! cluster secret. Acknowledged writes survive a kill -9 of the primary, as without TLS.

use rcluster_client::transport::TransportErrorKind;
use rcluster_client::{Consistency, Error, PutOptions};
use rcluster_e2e::{Options, Playground, runtime, serial};
use serde_json::json;

#[test]
fn a_tls_and_auth_playground_keeps_acknowledged_writes_across_a_kill_9_of_the_primary() {
    let _turn = serial();
    let pg = Playground::start(Options {
        tls: true,
        auth: true,
        ..Options::default()
    });
    assert!(
        pg.urls.iter().all(|u| u.starts_with("https://")),
        "{:?}",
        pg.urls
    );
    let out = pg.output();
    assert!(out.contains("export RCLUSTER_CACERT="), "{out}");
    assert!(out.contains("export RCLUSTER_TOKEN="), "{out}");
    for role in ["read", "write", "admin"] {
        assert!(
            !out.contains(&pg.token(role)),
            "the output shows the {role} token"
        );
    }

    let rt = runtime();
    let writer = pg.client_as(Some("write"));
    let reader = pg.client_as(Some("read"));
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let key = format!("secure/{i}");
        rt.block_on(writer.put(&key, &json!(i), &PutOptions::default()))
            .unwrap_or_else(|e| panic!("write {key}: {e}"));
        acknowledged.push(key);
    }

    // Without a token, or with a read token, writes are refused; nothing is applied.
    let anonymous = pg.client_as(None);
    match rt.block_on(anonymous.put("secure/x", &json!(1), &PutOptions::default())) {
        Err(Error::Api {
            status: 401, code, ..
        }) => assert_eq!(code, "unauthenticated"),
        other => panic!("an anonymous write: {other:?}"),
    }
    match rt.block_on(reader.put("secure/x", &json!(1), &PutOptions::default())) {
        Err(Error::Api {
            status: 403, code, ..
        }) => assert_eq!(code, "forbidden"),
        other => panic!("a write with a read token: {other:?}"),
    }
    // A client that does not trust the playground's CA does not get through the handshake.
    let untrusting = rcluster_client::Client::builder([pg.urls[0].clone()])
        .access_token(Some(pg.token("write")))
        .build()
        .unwrap();
    match rt.block_on(untrusting.get("secure/0", None)) {
        Err(Error::Transport(t)) => assert_eq!(t.kind, TransportErrorKind::Tls, "{t}"),
        other => panic!("a client without the CA: {other:?}"),
    }

    // kill -9 the primary and keep it down: the coordinator (over https, with the cluster
    // secret) must promote another node.
    let (old, term) = pg.wait_healthy();
    pg.stop_member(&old, true);
    let (new, _) = pg.wait_primary_after(term);
    assert_ne!(new, old);
    for i in 30..40 {
        let key = format!("secure/{i}");
        rt.block_on(writer.put(&key, &json!(i), &PutOptions::default()))
            .unwrap_or_else(|e| panic!("write {key} after the failover: {e}"));
        acknowledged.push(key);
    }
    for (i, key) in acknowledged.iter().enumerate() {
        let rec = rt
            .block_on(reader.get(key, Some(Consistency::Linearizable)))
            .unwrap_or_else(|e| panic!("read {key}: {e}"));
        assert_eq!(
            rec.map(|r| r.value),
            Some(json!(i)),
            "{key} was acknowledged"
        );
    }
    let log = std::fs::read_to_string(pg.dir.join(format!("{new}.log"))).unwrap_or_default();
    assert!(
        !log.contains(&pg.token("write")),
        "a node log shows a token"
    );
}
