//! The client library against scripted HTTP servers on 127.0.0.1: redirects to the primary,
//! retries with one idempotency key, outcome-unknown reports, session tokens, SSE.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcluster_client::{
    Client, ClientBuilder, Consistency, Error, PutOptions, RetryPolicy, WriteOptions,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Answer {
    Json(u16, Vec<(&'static str, String)>, String),
    /// Keep the connection open and never answer.
    Hang,
}

type Script = Arc<dyn Fn(usize, &Seen) -> Answer + Send + Sync>;

/// A keep-alive HTTP/1.1 server whose answers come from a script (given the request's
/// number, counted from 0, and the request).
struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    async fn start(script: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, script.clone(), seen2.clone()));
            }
        });
        Fake { url, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(mut conn: TcpStream, script: Script, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]).to_string();
        buf.drain(..head_end + 4 + len);
        let req = Seen {
            request_line,
            headers,
            body,
        };
        let n = {
            let mut s = seen.lock().unwrap();
            s.push(req.clone());
            s.len() - 1
        };
        match script(n, &req) {
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Answer::Json(status, extra, body) => {
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\n",
                    body.len()
                );
                for (k, v) in extra {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                if conn.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A client of scripted servers: they answer requests in turn, so the cluster stream (which a
/// client opens with its first call; tested against real nodes in tests/tests/cluster_stream.rs)
/// would take turns meant for the calls under test.
fn scripted<const N: usize>(endpoints: [String; N]) -> ClientBuilder {
    Client::builder(endpoints).follow_cluster(false)
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        deadline: Duration::from_secs(20),
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_redirects: 3,
    }
}

fn error_body(code: &str) -> String {
    json!({"error": {"code": code, "message": format!("{code} here")}}).to_string()
}

/// A URL that refuses connections. Its socket stays bound (not listening) while the test
/// process runs, so no other test's server can be given the port.
fn closed_port_url() -> String {
    static HELD: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", socket.local_addr().unwrap());
    HELD.lock().unwrap().push(socket);
    url
}

#[tokio::test]
async fn follows_not_primary_and_remembers_the_primary() {
    let primary =
        Fake::start(|_, _| Answer::Json(200, vec![], json!({"key":"k","version":5}).to_string()))
            .await;
    let purl = primary.url.clone();
    let replica = Fake::start(move |_, _| {
        Answer::Json(
            503,
            vec![("rcluster-primary", purl.clone())],
            error_body("not_primary"),
        )
    })
    .await;
    let client = scripted([replica.url.clone()])
        // Exact request counts: no background member discovery.
        .discover_members(false)
        .retry(fast_retry(1))
        .build()
        .unwrap();

    let put = client
        .put("k", &json!(1), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(put.version, 5);
    assert_eq!(
        client.known_primary().as_deref(),
        Some(primary.url.as_str())
    );
    client
        .put("k", &json!(2), &PutOptions::default())
        .await
        .unwrap();

    assert_eq!(
        replica.seen().len(),
        1,
        "the second write goes straight to the primary"
    );
    let at_primary = primary.seen();
    assert_eq!(at_primary.len(), 2);
    let key = replica.seen()[0]
        .header("idempotency-key")
        .unwrap()
        .to_string();
    assert_eq!(at_primary[0].header("idempotency-key"), Some(key.as_str()));
    assert_ne!(at_primary[1].header("idempotency-key"), Some(key.as_str()));
    assert_eq!(at_primary[0].request_line, "PUT /v1/kv/k HTTP/1.1");
    assert_eq!(at_primary[0].body, "1");
}

#[tokio::test]
async fn retries_after_unknown_outcome_reuse_the_key_then_report_outcome_unknown() {
    let server = Fake::start(|_, _| Answer::Hang).await;
    let client = scripted([server.url.clone()])
        .request_timeout(Duration::from_millis(200))
        .retry(fast_retry(3))
        .build()
        .unwrap();
    let opts = WriteOptions {
        ack: None,
        idempotency_key: Some("my-key".into()),
    };
    let err = client.incr("n", 1, None, None, &opts).await.unwrap_err();
    match &err {
        Error::OutcomeUnknown {
            idempotency_key, ..
        } => assert_eq!(idempotency_key, "my-key"),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.header("idempotency-key") == Some("my-key"))
    );
    assert_eq!(seen[0].request_line, "POST /v1/kv/n/incr HTTP/1.1");
}

#[tokio::test]
async fn unknown_outcome_then_unavailable_is_still_unknown() {
    let server = Fake::start(|n, _| {
        if n == 0 {
            Answer::Hang
        } else {
            Answer::Json(503, vec![], error_body("unavailable"))
        }
    })
    .await;
    let client = scripted([server.url.clone()])
        .request_timeout(Duration::from_millis(200))
        .retry(fast_retry(3))
        .build()
        .unwrap();
    let err = client
        .put("k", &json!(1), &PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err:?}");
    // A read that times out is simply unreachable: nothing could have been applied.
    let reader = Fake::start(|_, _| Answer::Hang).await;
    let client = scripted([reader.url.clone()])
        .request_timeout(Duration::from_millis(100))
        .retry(fast_retry(2))
        .build()
        .unwrap();
    let err = client.get("k", None).await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
}

#[tokio::test]
async fn unreachable_endpoints_fail_fast_as_transport_errors() {
    let client = scripted([closed_port_url(), closed_port_url()])
        .retry(fast_retry(4))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = client
        .put("k", &json!(1), &PutOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Transport(_)),
        "a refused write was never applied: {err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn moves_to_the_next_endpoint_when_one_is_down() {
    let up =
        Fake::start(|_, _| Answer::Json(200, vec![], json!({"key":"k","version":1}).to_string()))
            .await;
    let client = scripted([closed_port_url(), up.url.clone()])
        .retry(fast_retry(3))
        .build()
        .unwrap();
    client.delete("k", &Default::default()).await.unwrap();
    assert_eq!(client.current_endpoint(), up.url);
    assert_eq!(up.seen()[0].request_line, "DELETE /v1/kv/k HTTP/1.1");
}

#[tokio::test]
async fn retries_unavailable_but_not_client_errors() {
    let server = Fake::start(|n, req| {
        if req.request_line.starts_with("GET") {
            return Answer::Json(412, vec![], error_body("version_mismatch"));
        }
        if n == 0 {
            Answer::Json(503, vec![], error_body("unavailable"))
        } else {
            Answer::Json(200, vec![], json!({"key":"k","version":9}).to_string())
        }
    })
    .await;
    let client = scripted([server.url.clone()])
        // Exact request counts: no background member discovery.
        .discover_members(false)
        .retry(fast_retry(3))
        .build()
        .unwrap();
    assert_eq!(
        client
            .put("k", &json!("v"), &PutOptions::default())
            .await
            .unwrap()
            .version,
        9
    );
    let err = client.get("k", None).await.unwrap_err();
    assert_eq!(err.code(), Some("version_mismatch"));
    assert_eq!(server.seen().len(), 3, "two puts and one get");
}

#[tokio::test]
async fn session_reads_send_the_highest_token_seen() {
    let server = Fake::start(|_, req| {
        let token = if req.request_line.starts_with("PUT") {
            "42"
        } else {
            "7"
        };
        Answer::Json(
            200,
            vec![("rcluster-token", token.to_string())],
            json!({"key":"k","value":1,"version":42}).to_string(),
        )
    })
    .await;
    let client = scripted([server.url.clone()])
        // Exact request counts: no background member discovery.
        .discover_members(false)
        .retry(fast_retry(1))
        .build()
        .unwrap();
    client
        .put("k", &json!(1), &PutOptions::default())
        .await
        .unwrap();
    client.get("k", Some(Consistency::Session)).await.unwrap();
    client.get("k", Some(Consistency::Session)).await.unwrap();
    client.get("k", None).await.unwrap();
    assert_eq!(client.token().get(0), 42);
    let seen = server.seen();
    assert_eq!(
        seen[1].request_line,
        "GET /v1/kv/k?consistency=session HTTP/1.1"
    );
    assert_eq!(seen[1].header("rcluster-token"), Some("42"));
    assert_eq!(
        seen[2].header("rcluster-token"),
        Some("42"),
        "a lower token does not win"
    );
    assert_eq!(seen[3].header("rcluster-token"), None);
    assert_eq!(
        seen[1].header("idempotency-key"),
        None,
        "reads carry no idempotency key"
    );
}

#[tokio::test]
async fn get_of_a_missing_key_is_none() {
    let server = Fake::start(|_, _| Answer::Json(404, vec![], error_body("not_found"))).await;
    let client = scripted([server.url.clone()])
        .retry(fast_retry(1))
        .build()
        .unwrap();
    assert_eq!(client.get("nope", None).await.unwrap(), None);
}

/// What an SSE server does on one connection: send `body` (split into writes at `|`), then close
/// or stay silent.
struct SseConn {
    body: &'static str,
    close: bool,
}

/// An event-stream server: connection `i` follows `script[i]` (the last one repeats); returns
/// its URL and the request lines it got.
async fn sse_server(script: Vec<SseConn>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut conn, _)) = listener.accept().await {
            let step = &script[n.min(script.len() - 1)];
            n += 1;
            let mut buf = [0u8; 4096];
            let got = conn.read(&mut buf).await.unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..got])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            seen2.lock().unwrap().push(line);
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";
            let _ = conn.write_all(head.as_bytes()).await;
            for part in step.body.split('|') {
                let _ = conn.write_all(part.as_bytes()).await;
                let _ = conn.flush().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !step.close {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(conn);
                });
            }
        }
    });
    (url, seen)
}

#[tokio::test]
async fn a_watch_resumes_after_its_last_complete_change() {
    let (url, seen) = sse_server(vec![
        // Split mid-line; an entry's first change arrives, its last does not.
        SseConn {
            body: "event: progress\nid: 2\ndata: {}\n\nevent: put\nid: 3\ndata: {\"key\":\"a\",\"val|ue\":1,\"version\":3,\"modified_ms\":9}\n\n: ping\n\nevent: put\nid: 3\ndata: {\"key\":\"b\",\"version\":4,\"more\":true}\n\n",
            close: true,
        },
        SseConn {
            body: "event: progress\nid: 3\ndata: {}\n\nevent: put\nid: 3\ndata: {\"key\":\"b\",\"version\":4,\"more\":true}\n\n|event: delete\nid: 4\ndata: {\"key\":\"c\",\"version\":4}\n\nevent: reset\nid: 9\ndata: {\"code\":\"history_gone\",\"message\":\"gone\",\"position\":9}\n\n",
            close: false,
        },
    ])
    .await;
    let client = scripted([url]).retry(fast_retry(3)).build().unwrap();
    let mut watch = client.watch(Some("a"));
    let mut got = Vec::new();
    for _ in 0..3 {
        match watch.next().await.unwrap() {
            rcluster_client::WatchEvent::Change(c) => got.push((c.kind, c.key, c.position)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        got,
        [
            ("put".into(), "a".into(), "3".into()),
            ("put".into(), "b".into(), "3".into()),
            ("delete".into(), "c".into(), "4".into())
        ],
        "b once, after a cut inside its entry"
    );
    match watch.next().await.unwrap() {
        rcluster_client::WatchEvent::Reset { position, message } => {
            assert_eq!((position.as_str(), message.as_str()), ("9", "gone"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(watch.position(), Some("9"));
    let lines = seen.lock().unwrap().clone();
    assert_eq!(lines[0], "GET /v1/watch?prefix=a HTTP/1.1");
    assert_eq!(
        lines[1], "GET /v1/watch?prefix=a&from=3 HTTP/1.1",
        "resumed after a"
    );
}

#[tokio::test]
async fn a_silent_stream_moves_to_another_node() {
    let (silent, _) = sse_server(vec![SseConn {
        body: "event: progress\nid: a:0\ndata: {}\n\n",
        close: false,
    }])
    .await;
    let (live, seen) = sse_server(vec![SseConn {
        body: "event: message\nid: a:6\ndata: {\"topic\":\"a\",\"offset\":5,\"value\":\"x\",\"published_at_ms\":1}\n\n",
        close: false,
    }])
    .await;
    let client = scripted([silent, live])
        .discover_members(false)
        .retry(fast_retry(3))
        .build()
        .unwrap();
    let mut stream = client
        .stream("a", Some(0))
        .idle_timeout(Duration::from_millis(300));
    match stream.next().await.unwrap() {
        rcluster_client::TopicEvent::Message {
            topic,
            message,
            position,
        } => {
            assert_eq!(
                (topic.as_str(), message.offset, position.as_str()),
                ("a", 5, "a:6")
            );
            assert_eq!(message.value, json!("x"));
        }
        other => panic!("{other:?}"),
    }
    let lines = seen.lock().unwrap().clone();
    assert_eq!(lines[0], "GET /v1/stream?topic=a&from=a%3A0 HTTP/1.1");
}

#[tokio::test]
async fn finds_the_new_primary_through_members_it_discovered() {
    let other =
        Fake::start(|_, _| Answer::Json(200, vec![], json!({"key":"k","version":8}).to_string()))
            .await;
    let other_url = other.url.clone();
    let own_url = Arc::new(Mutex::new(String::new()));
    let own = own_url.clone();
    let puts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let first = Fake::start(move |_, req| {
        if req.request_line.starts_with("GET /v1/status") {
            let members = json!([{"name": "n1", "url": own.lock().unwrap().clone()},
                {"name": "n2", "url": other_url.clone()}]);
            return Answer::Json(
                200,
                vec![],
                json!({"node": "n1", "members": members}).to_string(),
            );
        }
        // The first write succeeds; then this node is fenced and knows no primary.
        if puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Answer::Json(200, vec![], json!({"key":"k","version":1}).to_string())
        } else {
            Answer::Json(503, vec![], error_body("not_primary"))
        }
    })
    .await;
    *own_url.lock().unwrap() = first.url.clone();
    let client = scripted([first.url.clone()])
        .retry(fast_retry(5))
        .build()
        .unwrap();
    let opts = PutOptions::default();
    assert_eq!(client.put("k", &json!(1), &opts).await.unwrap().version, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.endpoints().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no discovery");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.endpoints(), [first.url.clone(), other.url.clone()]);
    assert_eq!(client.put("k", &json!(2), &opts).await.unwrap().version, 8);
    assert_eq!(client.current_endpoint(), other.url);
}

#[tokio::test]
async fn outcome_unknown_is_retried_with_the_same_key_and_reported_if_it_persists() {
    // A deposed primary: the write is in its log; the new primary answers the retry.
    let new_primary = Fake::start(|_, _| {
        Answer::Json(
            200,
            vec![],
            json!({"key":"n","value":-1,"version":7}).to_string(),
        )
    })
    .await;
    let purl = new_primary.url.clone();
    let deposed = Fake::start(move |_, _| {
        Answer::Json(
            503,
            vec![("rcluster-primary", purl.clone())],
            error_body("outcome_unknown"),
        )
    })
    .await;
    let client = scripted([deposed.url.clone()])
        .discover_members(false)
        .retry(fast_retry(3))
        .build()
        .unwrap();
    let r = client
        .incr("n", -1, None, None, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(r.value, -1);
    let key = deposed.seen()[0]
        .header("idempotency-key")
        .unwrap()
        .to_string();
    assert_eq!(
        new_primary.seen()[0].header("idempotency-key"),
        Some(key.as_str()),
        "the retry carries the first attempt's key"
    );

    // Nobody can settle it: the caller learns the outcome is unknown, never "not applied".
    let deposed = Fake::start(|n, _| {
        let code = if n == 0 {
            "outcome_unknown"
        } else {
            "not_primary"
        };
        Answer::Json(503, vec![], error_body(code))
    })
    .await;
    let client = scripted([deposed.url.clone()])
        .discover_members(false)
        .retry(fast_retry(3))
        .build()
        .unwrap();
    let err = client
        .incr("n", -1, None, None, &WriteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err:?}");
}

/// A node that refuses writes for `outage`, then accepts them.
async fn recovering_node(outage: Duration) -> Fake {
    let since = std::time::Instant::now();
    Fake::start(move |_, _| {
        if since.elapsed() < outage {
            Answer::Json(503, vec![], error_body("not_primary"))
        } else {
            Answer::Json(200, vec![], json!({"key":"k","version":3}).to_string())
        }
    })
    .await
}

#[tokio::test]
async fn default_retries_outlast_a_failover_and_a_short_deadline_reports_unknown() {
    let outage = Duration::from_secs(2);
    let server = recovering_node(outage).await;
    let started = std::time::Instant::now();
    let client = scripted([server.url.clone()])
        .discover_members(false)
        .build()
        .unwrap();
    let put = client.put("k", &json!(1), &PutOptions::default()).await;
    assert_eq!(put.unwrap().version, 3);
    assert!(started.elapsed() >= outage);
    let keys: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.header("idempotency-key").unwrap_or("").to_string())
        .collect();
    assert!(keys.len() > 2 && keys.iter().all(|k| !k.is_empty() && *k == keys[0]));

    let server = recovering_node(Duration::from_secs(60)).await;
    let client = scripted([server.url.clone()])
        .retry_deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client
        .put("k", &json!(1), &PutOptions::default())
        .await
        .unwrap_err();
    // not_primary means nothing was applied: the write plainly failed.
    assert_eq!(err.code(), Some("not_primary"), "{err:?}");
}
