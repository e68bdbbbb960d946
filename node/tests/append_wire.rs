//! The primary sends appends over connections it keeps open to each replica. A replica killed
//! with kill -9 and restarted on the same port leaves those connections dead: the primary must
//! notice, open new ones, and have every later write acknowledged by both replicas again.

mod common;
use common::*;

const FAST: &[&str] = &["--ack-timeout-ms", "3000"];

fn put_all(c: &Cluster, key: &str, value: u32) -> Resp {
    c.nodes[0].req(
        "PUT",
        &format!("/v1/kv/{key}?ack=all"),
        Some(&value.to_string()),
    )
}

fn writes_survive_replicas_restarted_on_their_ports(mut c: Cluster) {
    c.elect(0);
    // `all`: each write is acknowledged by both replicas, over the primary's kept connections.
    for i in 0..20 {
        let r = put_all(&c, &format!("before/{i}"), i);
        assert_eq!(r.status, 200, "before the restarts: {}", r.body);
    }
    for n in [1, 2] {
        c.nodes[n].restart();
    }
    c.wait_ready();
    for i in 0..20 {
        let r = put_all(&c, &format!("after/{i}"), i);
        assert_eq!(
            r.status, 200,
            "write {i} after both replicas restarted: {}",
            r.body
        );
    }
    c.wait_converged(&[0, 1, 2]);
    for n in [1, 2] {
        let r = c.nodes[n].req("GET", "/v1/kv/after/19?consistency=eventual", None);
        assert_eq!(r.json()["value"], serde_json::json!(19), "n{}", n + 1);
    }
}

#[test]
fn appends_reach_replicas_restarted_on_their_ports() {
    writes_survive_replicas_restarted_on_their_ports(Cluster::start(3, FAST));
}

#[test]
fn appends_over_tls_reach_replicas_restarted_on_their_ports() {
    let pki = Pki::new("append-wire");
    writes_survive_replicas_restarted_on_their_ports(Cluster::start_opts(3, FAST, Some(&pki)));
}
