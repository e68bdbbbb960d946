//! Pushed changes: watch and topic streams resume exactly after the last event a client got —
//! on another node, after a kill -9, after a failover — with no gap and no duplicate, or say
//! `reset` when that history is gone.

mod common;
mod events;
mod sharded;

use common::*;
use serde_json::{Value, json};

const FAST: &[&str] = &["--heartbeat-ms", "20", "--lease-ms", "500"];

/// A failover as the coordinator does it: a new term, `p` promoted, the live `others` following.
fn elect(c: &mut Cluster, p: usize, others: &[usize]) {
    c.term += 1;
    let term = c.term;
    let r = c.internal(p, "promote", json!({ "term": term }));
    assert_eq!(r.status, 200, "promote: {}", r.body);
    for &i in others {
        let primary = c.names[p].clone();
        let r = c.internal(i, "follow", json!({"term": term, "primary": primary}));
        assert_eq!(r.status, 200, "follow: {}", r.body);
    }
}

fn put(n: &Node, key: &str, value: &str) -> u64 {
    let r = n.req("PUT", &format!("/v1/kv/{key}?ack=quorum"), Some(value));
    assert_eq!(r.status, 200, "put {key}: {}", r.body);
    r.json()["version"].as_u64().unwrap()
}

#[test]
fn a_watch_resumes_on_another_node_after_a_kill() {
    let mut c = Cluster::with_primary(3, FAST);
    let w = events::open(&c.nodes[1].addr, "/v1/watch?prefix=r/", &[]).expect("watch");
    put(&c.nodes[0], "r/1", "1");
    let first = w.next_change().expect("the first change");
    assert_eq!((first.event.as_str(), first.s("key")), ("put", "r/1"));
    let id = first.id.clone().expect("an event id");
    c.nodes[1].kill9();
    put(&c.nodes[0], "r/2", "2");
    put(&c.nodes[0], "x/other", "0");
    put(&c.nodes[0], "r/3", "3");
    // The client reconnects elsewhere with the id of the last event it got.
    let resumed = events::open(
        &c.nodes[2].addr,
        "/v1/watch?prefix=r/",
        &[("Last-Event-ID", &id)],
    )
    .expect("resumed watch");
    let keys: Vec<String> = (0..2)
        .map(|_| {
            resumed
                .next_change()
                .expect("a change")
                .s("key")
                .to_string()
        })
        .collect();
    assert_eq!(keys, ["r/2", "r/3"], "no gap, no duplicate, in log order");
    // `from=` does the same as the header.
    let again = events::open(
        &c.nodes[0].addr,
        &format!("/v1/watch?prefix=r/&from={id}"),
        &[],
    )
    .expect("watch from");
    assert_eq!(again.next_change().unwrap().s("key"), "r/2");
    c.nodes[1].restart();
}

#[test]
fn a_topic_stream_resumes_on_another_node_after_a_kill() {
    let mut c = Cluster::with_primary(3, FAST);
    let n1 = &c.nodes[0];
    assert_eq!(n1.req("PUT", "/v1/topics/news", Some("{}")).status, 200);
    let s = events::open(&c.nodes[1].addr, "/v1/topics/news/stream", &[]).expect("stream");
    let p = n1.req("POST", "/v1/topics/news/messages?ack=quorum", Some("\"a\""));
    assert_eq!(p.status, 200, "{}", p.body);
    let first = s.next_change().expect("a message");
    assert_eq!(first.data["value"], json!("a"));
    let id = first.id.clone().expect("an id");
    c.nodes[1].kill9();
    for v in ["b", "c"] {
        let r = c.nodes[0].req(
            "POST",
            "/v1/topics/news/messages?ack=quorum",
            Some(&format!("\"{v}\"")),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let resumed = events::open(
        &c.nodes[2].addr,
        "/v1/topics/news/stream",
        &[("Last-Event-ID", &id)],
    )
    .expect("resumed stream");
    let got: Vec<_> = (0..2)
        .map(|_| resumed.next_change().unwrap().data["value"].clone())
        .collect();
    assert_eq!(got, [json!("b"), json!("c")]);
    c.nodes[1].restart();
}

#[test]
fn a_watch_resumes_across_a_failover() {
    let mut c = Cluster::with_primary(3, FAST);
    let w = events::open(&c.nodes[0].addr, "/v1/watch?prefix=f/", &[]).expect("watch");
    let opened = w.next().expect("the opening event");
    assert_eq!(opened.event, "progress", "{opened:?}");
    put(&c.nodes[0], "f/1", "1");
    let id = w.next_change().unwrap().id.unwrap();
    c.nodes[0].kill9();
    elect(&mut c, 1, &[2]);
    put(&c.nodes[1], "f/2", "2");
    let resumed = events::open(
        &c.nodes[2].addr,
        "/v1/watch?prefix=f/",
        &[("Last-Event-ID", &id)],
    )
    .expect("resumed");
    assert_eq!(resumed.next_change().unwrap().s("key"), "f/2");
    // Nothing else: f/1 is not sent again.
    put(&c.nodes[1], "f/3", "3");
    assert_eq!(resumed.next_change().unwrap().s("key"), "f/3");
    c.nodes[0].restart();
}

#[test]
fn a_restarted_node_resumes_from_its_log_and_resets_before_its_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let mut n = Node::start(d.path(), &["--snapshot-entries", "20"]);
    let w = events::open(&n.addr, "/v1/watch?prefix=k/", &[]).expect("watch");
    put(&n, "k/0", "0");
    let early = w.next_change().unwrap().id.unwrap();
    for i in 1..=30 {
        put(&n, &format!("k/{i}"), &i.to_string());
    }
    let mut last = String::new();
    for _ in 1..=30 {
        last = w.next_change().unwrap().id.unwrap();
    }
    wait_for("a snapshot", || {
        (n.status()["snapshot_index"].as_u64() > Some(0)).then_some(())
    });
    for i in 31..=33 {
        put(&n, &format!("k/{i}"), &i.to_string());
    }
    n.restart();
    // After the snapshot: replayed from the log, nothing missing.
    let resumed =
        events::open(&n.addr, "/v1/watch?prefix=k/", &[("Last-Event-ID", &last)]).expect("resumed");
    for i in 31..=33 {
        assert_eq!(resumed.next_change().unwrap().s("key"), format!("k/{i}"));
    }
    // Before it: an explicit reset naming the position to continue from, then live changes.
    let old = events::open(&n.addr, &format!("/v1/watch?prefix=k/&from={early}"), &[])
        .expect("old position");
    let reset = old.next_change().unwrap();
    assert_eq!(reset.event, "reset", "{reset:?}");
    assert_eq!(reset.s("code"), "history_gone");
    let position = reset.data["position"].as_u64().unwrap();
    assert_eq!(reset.id, Some(position.to_string()));
    assert!(position >= last.parse::<u64>().unwrap(), "{reset:?}");
    put(&n, "k/new", "1");
    assert_eq!(old.next_change().unwrap().s("key"), "k/new");
}

#[test]
fn the_changes_of_one_transaction_arrive_together_and_resume_at_its_start() {
    let d = tempfile::tempdir().unwrap();
    let n = Node::start(d.path(), &[]);
    let w = events::open(&n.addr, "/v1/watch?prefix=%7Bt%7D/a&prefix=%7Bt%7D/b", &[])
        .expect("watch two prefixes");
    let start = w.next().unwrap().id.unwrap();
    let body = json!({"success": [
        {"op": "put", "key": "{t}/a1", "value": 1},
        {"op": "put", "key": "{t}/c", "value": 1},
        {"op": "put", "key": "{t}/b1", "value": 2},
        {"op": "delete", "key": "{t}/a0"},
        {"op": "incr", "key": "{t}/a2", "delta": 5},
    ]});
    let r = n.req("POST", "/v1/txn", Some(&body.to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    let index = r.json()["results"][0]["version"].as_u64().unwrap();
    let got: Vec<events::Ev> = (0..3).map(|_| w.next_change().unwrap()).collect();
    let keys: Vec<&str> = got.iter().map(|e| e.s("key")).collect();
    assert_eq!(
        keys,
        ["{t}/a1", "{t}/b1", "{t}/a2"],
        "in operation order, only the prefixes"
    );
    let ids: Vec<String> = got.iter().map(|e| e.id.clone().unwrap()).collect();
    let before = (index - 1).to_string();
    assert_eq!(ids, [before.clone(), before, index.to_string()]);
    assert_eq!(got[0].data["more"], json!(true));
    assert_eq!(got[2].data.get("more"), None);
    assert_eq!(got[2].data["value"], json!(5));
    assert!(got[0].data["modified_ms"].as_u64().is_some() && got[0].data["created_ms"].is_u64());
    // A client cut off after the first change resumes from its id: the whole entry again.
    let again = events::open(
        &n.addr,
        "/v1/watch?prefix=%7Bt%7D/a&prefix=%7Bt%7D/b",
        &[("Last-Event-ID", &ids[0])],
    )
    .expect("resume");
    assert_eq!(again.next_change().unwrap().s("key"), "{t}/a1");
    // From the start position, the same three.
    let from_start = events::open(&n.addr, &format!("/v1/watch?from={start}"), &[]).unwrap();
    assert_eq!(from_start.next_change().unwrap().s("key"), "{t}/a1");
    assert_eq!(from_start.next_change().unwrap().s("key"), "{t}/c");
}

#[test]
fn one_stream_over_several_topics_in_log_order_resumes_per_topic() {
    let c = Cluster::with_primary(2, FAST);
    let n1 = &c.nodes[0];
    for t in ["a", "b", "c"] {
        assert_eq!(n1.req("PUT", &format!("/v1/topics/{t}"), None).status, 200);
    }
    n1.req("POST", "/v1/topics/a/messages", Some("\"old\""));
    let s = events::open(&c.nodes[1].addr, "/v1/stream?topic=a&topic=b", &[]).expect("stream");
    let opened = s.next().unwrap();
    assert_eq!(
        (opened.event.as_str(), opened.id.as_deref()),
        ("progress", Some("a:1,b:0"))
    );
    let publish = |t: &str, v: &str| {
        let r = n1.req("POST", &format!("/v1/topics/{t}/messages?ack=all"), Some(v));
        assert_eq!(r.status, 200, "{}", r.body);
    };
    publish("b", "1");
    publish("c", "0");
    publish("a", "2");
    publish("b", "3");
    let got: Vec<events::Ev> = (0..3).map(|_| s.next_change().unwrap()).collect();
    let seen: Vec<(String, Value)> = got
        .iter()
        .map(|e| (e.s("topic").to_string(), e.data["value"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("b".into(), json!(1)),
            ("a".into(), json!(2)),
            ("b".into(), json!(3))
        ]
    );
    assert_eq!(got[1].id.as_deref(), Some("a:2,b:1"));
    // Resumed elsewhere after the second event: only the third.
    let resumed = events::open(
        &c.nodes[0].addr,
        "/v1/stream?topic=a&topic=b",
        &[("Last-Event-ID", got[1].id.as_deref().unwrap())],
    )
    .unwrap();
    assert_eq!(resumed.next_change().unwrap().data["value"], json!(3));
    // from= names where each topic starts.
    let replay = events::open(
        &c.nodes[1].addr,
        "/v1/stream?topic=a&topic=b&from=a:0,b:0",
        &[],
    )
    .unwrap();
    let first = replay.next_change().unwrap();
    assert_eq!(
        (first.s("topic"), &first.data["value"]),
        ("a", &json!("old"))
    );
}

#[test]
fn a_topic_stream_says_reset_when_retention_dropped_what_it_asked_for() {
    let d = tempfile::tempdir().unwrap();
    let n = Node::start(d.path(), &[]);
    n.req("PUT", "/v1/topics/short", Some(r#"{"max_messages":2}"#));
    for i in 0..5 {
        n.req("POST", "/v1/topics/short/messages", Some(&i.to_string()));
    }
    let s = events::open(&n.addr, "/v1/topics/short/stream?from=1", &[]).unwrap();
    let reset = s.next().unwrap();
    assert_eq!(
        (reset.event.as_str(), reset.id.as_deref()),
        ("reset", Some("2"))
    );
    assert_eq!(reset.data["first_offset"], json!(3));
    assert_eq!(s.next().unwrap().data["offset"], json!(3));
    let m = events::open(&n.addr, "/v1/stream?topic=short&from=short:0", &[]).unwrap();
    assert_eq!(m.next().unwrap().event, "progress");
    let reset = m.next().unwrap();
    assert_eq!((reset.event.as_str(), reset.s("topic")), ("reset", "short"));
    assert_eq!(reset.id.as_deref(), Some("short:3"));
    assert_eq!(m.next().unwrap().data["offset"], json!(3));
}

#[test]
fn bad_resume_points_and_sources_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let n = Node::start(d.path(), &[]);
    n.req("PUT", "/v1/topics/t", None);
    let many: String = (0..129).map(|i| format!("prefix=p{i}&")).collect();
    let cases = [
        (
            "/v1/watch?from=soon".to_string(),
            vec![],
            400,
            "invalid_parameter",
        ),
        (
            "/v1/watch".into(),
            vec![("Last-Event-ID", "x:1")],
            400,
            "invalid_parameter",
        ),
        (
            format!("/v1/watch?{many}"),
            vec![],
            400,
            "invalid_parameter",
        ),
        (
            "/v1/topics/t/stream".into(),
            vec![("Last-Event-ID", "-1")],
            400,
            "invalid_parameter",
        ),
        ("/v1/stream".into(), vec![], 400, "invalid_parameter"),
        (
            "/v1/stream?topic=t&from=t".into(),
            vec![],
            400,
            "invalid_parameter",
        ),
        (
            "/v1/stream?topic=bad/name".into(),
            vec![],
            400,
            "invalid_name",
        ),
        (
            "/v1/stream?topic=t&topic=nope".into(),
            vec![],
            404,
            "topic_not_found",
        ),
        (
            "/v1/stream?topic=t&prefix=x".into(),
            vec![],
            400,
            "invalid_parameter",
        ),
    ];
    for (path, headers, status, code) in cases {
        let r = events::open(&n.addr, &path, &headers)
            .err()
            .expect("a refusal");
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{path}: {}",
            r.body
        );
    }
}

#[test]
fn with_two_shards_a_merged_watch_and_stream_resume_every_shard() {
    let c = sharded::Sharded::start(2, 2);
    let (a, b) = (c.name_on(0, "w"), c.name_on(1, "w"));
    let (ta, tb) = (c.name_on(0, "t"), c.name_on(1, "t"));
    for t in [&ta, &tb] {
        let r = c.node(0, 0).req("PUT", &format!("/v1/topics/{t}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let w = events::open(&c.node(0, 1).addr, "/v1/watch?prefix=w", &[]).expect("merged watch");
    let opened = w.next().unwrap();
    let token: rcluster_proto::SessionToken = opened.id.clone().unwrap().parse().unwrap();
    assert_eq!(
        token.iter().count(),
        2,
        "the first id names both shards: {opened:?}"
    );
    let streams = format!("/v1/stream?topic={ta}&topic={tb}");
    let s = events::open(&c.node(1, 1).addr, &streams, &[]).expect("merged stream");
    assert_eq!(s.next().unwrap().event, "progress");
    put(c.node(0, 0), &a, "1");
    put(c.node(0, 0), &b, "1");
    for t in [&ta, &tb] {
        let r = c.node(1, 0).req(
            "POST",
            &format!("/v1/topics/{t}/messages?ack=all"),
            Some("1"),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let mut watch_id = String::new();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let e = w.next_change().unwrap();
        keys.push(e.s("key").to_string());
        watch_id = e.id.unwrap();
    }
    assert_eq!(sorted(keys), sorted(vec![a.clone(), b.clone()]));
    let mut stream_id = String::new();
    let mut topics = Vec::new();
    for _ in 0..2 {
        let e = s.next_change().unwrap();
        topics.push(e.s("topic").to_string());
        stream_id = e.id.unwrap();
    }
    assert_eq!(sorted(topics), sorted(vec![ta.clone(), tb.clone()]));
    // More on both shards, then both streams resumed on other nodes from their last ids.
    let (a2, b2) = (format!("{a}x"), format!("{b}x"));
    put(c.node(1, 0), &a2, "2");
    put(c.node(1, 0), &b2, "2");
    for t in [&ta, &tb] {
        let r = c.node(0, 0).req(
            "POST",
            &format!("/v1/topics/{t}/messages?ack=all"),
            Some("2"),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let resumed = events::open(
        &c.node(1, 0).addr,
        "/v1/watch?prefix=w",
        &[("Last-Event-ID", &watch_id)],
    )
    .unwrap();
    let keys = (0..2)
        .map(|_| resumed.next_change().unwrap().s("key").to_string())
        .collect();
    assert_eq!(
        sorted(keys),
        sorted(vec![a2, b2]),
        "only the new changes, on both shards"
    );
    let resumed = events::open(
        &c.node(0, 0).addr,
        &streams,
        &[("Last-Event-ID", &stream_id)],
    )
    .unwrap();
    let values: Vec<Value> = (0..2)
        .map(|_| resumed.next_change().unwrap().data["value"].clone())
        .collect();
    assert_eq!(
        values,
        [json!(2), json!(2)],
        "only the new messages, one per topic"
    );
}

#[test]
fn quiet_streams_send_a_heartbeat_so_a_client_can_tell_a_silent_node() {
    let c = Cluster::with_primary(1, FAST);
    let n = &c.nodes[0];
    assert_eq!(n.req("PUT", "/v1/topics/quiet", Some("{}")).status, 200);
    for path in ["/v1/watch?prefix=q/", "/v1/stream?topic=quiet"] {
        let s = events::open(&n.addr, path, &[]).expect("stream");
        let first = s.next().expect("the opening event");
        // Nothing happens; the stream must still speak well within the clients' idle timeout
        // (15 s by default).
        let beat = s
            .next_within(std::time::Duration::from_secs(12))
            .unwrap_or_else(|_| panic!("{path}: silent for 12 s"))
            .expect("the stream is open");
        assert_eq!(beat.event, "progress", "{path}");
        assert_eq!(beat.id, first.id, "{path}: the position did not move");
        s.close();
    }
}

/// The next `cluster` event of `s` whose shard 0 is in `term` or later (the stream also resends
/// the map it already sent, once a second).
fn map_in_term(s: &events::Sse, term: u64) -> Value {
    loop {
        let e = s.next().expect("the cluster stream ended");
        assert_eq!(e.event, "cluster", "{e:?}");
        if e.data["shards"][0]["term"].as_u64() >= Some(term) {
            return e.data["shards"][0].clone();
        }
    }
}

#[test]
fn the_cluster_stream_announces_the_fence_then_the_new_primary() {
    let mut c = Cluster::with_primary(3, FAST);
    let s = events::open(&c.nodes[1].addr, "/v1/cluster/stream", &[]).expect("cluster stream");
    let now = map_in_term(&s, c.term);
    assert_eq!(now["primary"].as_str(), Some(c.names[0].as_str()));
    assert_eq!(
        now["members"][&c.names[2]],
        json!(format!("http://{}", c.nodes[2].addr))
    );
    // A failover as the coordinator runs it: fence, then name the new primary.
    let term = c.term + 1;
    assert_eq!(c.internal(1, "fence", json!({"term": term})).status, 200);
    let fenced = map_in_term(&s, term);
    assert_eq!(
        fenced["primary"],
        Value::Null,
        "fenced: the old primary is deposed"
    );
    c.term = term - 1;
    elect(&mut c, 2, &[1]);
    let named = loop {
        let m = map_in_term(&s, term);
        if !m["primary"].is_null() {
            break m;
        }
    };
    assert_eq!(named["primary"].as_str(), Some(c.names[2].as_str()));
    assert_eq!(named["term"].as_u64(), Some(term));
}
