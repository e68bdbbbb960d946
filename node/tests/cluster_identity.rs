//! Cluster identity: every node of a cluster carries the cluster's id, reports it, and refuses
//! requests meant for another cluster; the client learns the id and never follows a redirect
//! into, or writes to, a node of another cluster.

mod common;
mod rawhttp;

use std::io::Write;
use std::net::TcpListener;

use common::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const ID_HEADER: &str = "rcluster-cluster-id";

/// One member of a cluster on a fixed address, started with the shared test secret.
struct Member {
    node: Node,
    _dir: tempfile::TempDir,
}

fn secret_file(dir: &Path) -> String {
    let p = dir.join("secret");
    std::fs::write(&p, SECRET).unwrap();
    p.display().to_string()
}

/// Starts `name` on `listener` as a member of `members` (name=url) in cluster `id`.
fn member(name: &str, listener: TcpListener, members: &[(&str, &str)], id: &str) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let mut args = vec![
        "--name".to_string(),
        name.to_string(),
        "--secret-file".into(),
        secret,
        "--cluster-id".into(),
        id.into(),
    ];
    for (n, a) in members {
        args.push("--member".into());
        args.push(format!("{n}=http://{a}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start_on(&dir.path().join("data"), listener, &args);
    Member { node, _dir: dir }
}

fn internal(n: &Node, op: &str, body: serde_json::Value) -> Resp {
    n.req_h(
        "POST",
        &format!("/internal/v1/{op}"),
        Some(&body.to_string()),
        &[("Authorization", &format!("Bearer {SECRET}"))],
    )
}

/// A listening socket for a node, and its address.
fn bound() -> (TcpListener, String) {
    let l = listener();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

#[test]
fn a_node_reports_its_cluster_id_and_refuses_requests_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path(), &["--cluster-id", "shop-a"]);
    let s = n.req("GET", "/v1/status", None);
    assert_eq!(s.json()["cluster_id"], json!("shop-a"));
    assert_eq!(s.header(ID_HEADER), Some("shop-a"));
    let missing = n.req("GET", "/v1/kv/nothing", None);
    assert_eq!(
        missing.header(ID_HEADER),
        Some("shop-a"),
        "errors carry it too"
    );

    let r = n.req_h("PUT", "/v1/kv/k", Some("1"), &[(ID_HEADER, "shop-b")]);
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "cluster_mismatch"),
        "{}",
        r.body
    );
    assert_eq!(
        n.req("GET", "/v1/kv/k", None).status,
        404,
        "nothing was written"
    );
    let r = n.req_h("PUT", "/v1/kv/k", Some("1"), &[(ID_HEADER, "shop-a")]);
    assert_eq!(r.status, 200, "{}", r.body);
    // Plain clients that send no id keep working.
    assert_eq!(n.req("GET", "/v1/kv/k", None).status, 200);

    // A node started by hand without an id serves everyone but those expecting a cluster.
    let dir2 = tempfile::tempdir().unwrap();
    let plain = Node::start(dir2.path(), &[]);
    assert_eq!(plain.req("PUT", "/v1/kv/k", Some("1")).status, 200);
    assert_eq!(plain.status()["cluster_id"], json!(null));
    let r = plain.req_h("GET", "/v1/kv/k", None, &[(ID_HEADER, "shop-a")]);
    assert_eq!((r.status, r.code().as_str()), (409, "cluster_mismatch"));

    // The id also comes from the environment or the config file.
    let dir3 = tempfile::tempdir().unwrap();
    let config = dir3.path().join("cluster.json");
    std::fs::write(&config, r#"{"cluster_id":"from-file","members":{}}"#).unwrap();
    let from_file = Node::start(
        &dir3.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(from_file.status()["cluster_id"], json!("from-file"));
}

#[test]
fn a_node_of_another_cluster_refuses_replication_traffic() {
    // Cluster B: one member, primary in term 1, holding a record.
    let (b_listener, b_addr) = bound();
    let b = member("b1", b_listener, &[("b1", &b_addr)], "cluster-b");
    assert_eq!(internal(&b.node, "promote", json!({"term": 1})).status, 200);
    wait_for("b1 ready", || {
        (b.node.req("GET", "/readyz", None).status == 200).then_some(())
    });
    assert_eq!(b.node.req("PUT", "/v1/kv/b-key", Some("1")).status, 200);

    // Cluster A believes its second member lives where B's node is.
    let (a_listener, a_addr) = bound();
    let a = member(
        "a1",
        a_listener,
        &[("a1", &a_addr), ("a2", &b_addr)],
        "cluster-a",
    );
    let r = internal(&a.node, "promote", json!({"term": 5}));
    assert_eq!(r.status, 200, "{}", r.body);
    let error = wait_for("a1 to report why a2 does not replicate", || {
        let s = a.node.status();
        let m = s["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == "a2")?
            .clone();
        m["error"].as_str().map(str::to_string)
    });
    assert!(error.contains("cluster_mismatch"), "{error}");

    // B's node kept its term, role and data.
    let s = b.node.status();
    assert_eq!(
        (s["term"].clone(), s["role"].clone()),
        (json!(1), json!("primary"))
    );
    assert_eq!(b.node.req("GET", "/v1/kv/b-key", None).status, 200);
    // Role commands meant for A are refused, before anything changes.
    let r = b.node.req_h(
        "POST",
        "/internal/v1/fence",
        Some(r#"{"term":9}"#),
        &[
            ("Authorization", &format!("Bearer {SECRET}")),
            (ID_HEADER, "cluster-a"),
        ],
    );
    assert_eq!((r.status, r.code().as_str()), (409, "cluster_mismatch"));
    assert_eq!(b.node.status()["term"], json!(1));
    // A's hello (a replica's "I follow you") is refused too.
    let r = b.node.req_h(
        "POST",
        "/internal/v1/hello",
        Some(r#"{"term":5,"primary":"a2"}"#),
        &[
            ("Authorization", &format!("Bearer {SECRET}")),
            (ID_HEADER, "cluster-a"),
        ],
    );
    assert_eq!((r.status, r.code().as_str()), (409, "cluster_mismatch"));
}

/// A put through the client library (what the `rcluster` CLI runs; its flags are tested in
/// `cli/tests`) with these endpoints and, when given, a configured cluster id.
fn client_put(
    endpoints: &[&str],
    cluster_id: Option<&str>,
    key: &str,
) -> Result<u64, rcluster_client::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = rcluster_client::Client::builder(endpoints.iter().map(|e| e.to_string()))
            .request_timeout(Duration::from_secs(3))
            .cluster_id(cluster_id.map(str::to_string))
            .build()?;
        let put = client.put(key, &json!(1), &Default::default()).await?;
        Ok(put.version)
    })
}

/// Cluster A: a1 primary, a2 its replica.
fn cluster_a() -> (Member, Member, String, String) {
    let ((l1, a1_addr), (l2, a2_addr)) = (bound(), bound());
    let members = [("a1", a1_addr.as_str()), ("a2", a2_addr.as_str())];
    let a1 = member("a1", l1, &members, "cluster-a");
    let a2 = member("a2", l2, &members, "cluster-a");
    assert_eq!(
        internal(&a1.node, "promote", json!({"term": 1})).status,
        200
    );
    let r = internal(&a2.node, "follow", json!({"term": 1, "primary": "a1"}));
    assert_eq!(r.status, 200, "{}", r.body);
    for n in [&a1.node, &a2.node] {
        wait_for("cluster A ready", || {
            (n.req("GET", "/readyz", None).status == 200).then_some(())
        });
    }
    (a1, a2, a1_addr, a2_addr)
}

#[test]
fn the_client_never_follows_a_redirect_into_another_cluster() {
    let (a1, a2, a1_addr, a2_addr) = cluster_a();
    // a1 dies and a node of cluster B takes its port; a2 still names a1's address as primary.
    drop(a1);
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind(&a1_addr).expect("take a1's port");
    let b = Node::start_on(dir.path(), taken, &["--cluster-id", "cluster-b"]);
    let r = a2
        .node
        .req_h("PUT", "/v1/kv/k", Some("1"), &[("Rcluster-Direct", "1")]);
    assert_eq!(
        r.header("rcluster-primary"),
        Some(format!("http://{a1_addr}").as_str())
    );
    // A plain write a2 forwards to "its primary" names a2's cluster, so B refuses it.
    let forwarded = a2.node.req("PUT", "/v1/kv/k", Some("1"));
    assert_eq!(forwarded.code(), "cluster_mismatch", "{}", forwarded.body);

    let a2_url = format!("http://{a2_addr}");
    let err = client_put(&[&a2_url], None, "k").expect_err("the write cannot succeed");
    assert!(
        err.to_string().contains("cluster"),
        "the error names the cause: {err}"
    );
    assert_eq!(
        b.req("GET", "/v1/kv/k", None).status,
        404,
        "nothing reached B"
    );
    assert_eq!(b.status()["records"], json!(0));
}

#[test]
fn a_configured_cluster_id_keeps_the_client_off_other_clusters() {
    let (a1, a2, _a1_addr, a2_addr) = cluster_a();
    let dir = tempfile::tempdir().unwrap();
    let b = Node::start(dir.path(), &["--cluster-id", "cluster-b"]);
    // B's node comes first in the endpoint list.
    let a2_url = format!("http://{a2_addr}");
    client_put(&[&b.url, &a2_url], Some("cluster-a"), "k").expect("A's node takes the write");
    let err = client_put(&[&b.url], Some("cluster-a"), "k2").expect_err("B is refused");
    assert_eq!(err.code(), Some("cluster_mismatch"), "{err}");
    assert_eq!(b.status()["records"], json!(0), "nothing was written to B");
    assert_eq!(a1.node.req("GET", "/v1/kv/k", None).status, 200);
    // A write the replica forwards comes back with the primary's headers, once each: the
    // replica states the same cluster id in place of the relayed one, not beside it. Asked on a
    // kept-alive connection (the node's own HTTP/1.1 path) and on one that closes (hyper's).
    let kept_alive = {
        let mut s = rawhttp::connect(&a2.node.addr);
        s.write_all(b"PUT /v1/kv/relayed HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1")
            .unwrap();
        rawhttp::read_one(&mut s).expect("the answer, on a connection kept open")
    };
    let closed = a2.node.req("PUT", "/v1/kv/relayed", Some("2"));
    for relayed in [kept_alive, closed] {
        assert_eq!(relayed.status, 200, "{}", relayed.body);
        for name in [
            ID_HEADER,
            "content-type",
            "rcluster-token",
            "rcluster-shard",
            "date",
        ] {
            let values: Vec<&str> = relayed
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(values.len(), 1, "{name}: {:?}", relayed.headers);
        }
        assert_eq!(relayed.header(ID_HEADER), Some("cluster-a"));
    }
}
