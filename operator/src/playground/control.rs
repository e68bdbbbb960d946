//! The playground's HTTP endpoint on 127.0.0.1:BASE_PORT:
//! - `GET /status`: members (with process ids), the coordinator record, failover statistics;
//! - `GET /decisions`: the recent decision log (the full log is `DIR/decisions.log`);
//! - `GET /metrics`: Prometheus text (the operator's metric names, so one dashboard fits both);
//! - `POST /members/{name}/stop[?signal=kill]`: stop a node and keep it down;
//! - `POST /members/{name}/start`: let a stopped node run again;
//! - `POST /switchover?shard=K[&to=NAME]`: ask shard K's primary for a planned switchover;
//! - `POST /reshard?shards=N`: reshard to N shards while serving (as a start with `--shards N`);
//! - `GET /`: the dashboard (static files compiled in, refreshed by polling the endpoints above);
//! - `GET /traffic`: per-API throughput and latency over the last two minutes (from the nodes'
//!   `/metrics`, see [`super::traffic`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use warp::Filter;
use warp::http::StatusCode;

use super::supervisor::{Signal, Supervisor};
use super::traffic::Traffic;
use crate::metrics::Metrics;

/// How many decisions `/decisions` keeps.
pub const DECISIONS_KEPT: usize = 1000;

/// What the coordination loop publishes for the endpoint.
#[derive(Debug, Default)]
pub struct Shared {
    pub status: Value,
    pub decisions: VecDeque<Value>,
    pub traffic: Traffic,
    /// Where `POST /reshard` hands its request to the loop (which owns the state file).
    pub reshard: Option<tokio::sync::mpsc::UnboundedSender<ReshardAsk>>,
}

/// `POST /reshard?shards=N`, for the loop to answer: the HTTP status and the JSON body.
#[derive(Debug)]
pub struct ReshardAsk {
    pub shards: usize,
    pub reply: tokio::sync::oneshot::Sender<(StatusCode, Value)>,
}

/// The JSON error body of the endpoint.
pub fn error_body(code: &str, message: impl Into<String>) -> Value {
    json!({"error": {"code": code, "message": message.into()}})
}

impl Shared {
    /// Every node's URL in the published status (all shards).
    pub fn node_urls(&self) -> Vec<String> {
        let shards = match self.status.get("shards").and_then(Value::as_array) {
            Some(list) => list.iter().collect(),
            None => vec![&self.status],
        };
        shards.into_iter().flat_map(shard_urls).collect()
    }

    /// Shard `k`'s member URLs (shard 0 is the top level when there are no shards).
    fn shard_member_urls(&self, k: u64) -> Vec<String> {
        match self.status.get("shards").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .find(|s| s.get("shard").and_then(Value::as_u64) == Some(k))
                .map(shard_urls)
                .unwrap_or_default(),
            None if k == 0 => shard_urls(&self.status),
            None => Vec::new(),
        }
    }
}

fn shard_urls(doc: &Value) -> Vec<String> {
    doc.get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("url").and_then(Value::as_str).map(str::to_string))
        .collect()
}

impl Shared {
    pub fn push_decision(&mut self, record: Value) {
        if self.decisions.len() >= DECISIONS_KEPT {
            self.decisions.pop_front();
        }
        self.decisions.push_back(record);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn reply(status: StatusCode, body: Value) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

#[derive(serde::Deserialize)]
struct StopQuery {
    signal: Option<String>,
}

#[derive(serde::Deserialize)]
struct SwitchoverQuery {
    #[serde(default)]
    shard: u64,
    to: Option<String>,
}

#[derive(serde::Deserialize)]
struct ReshardQuery {
    shards: Option<String>,
}

/// The shard count a `POST /reshard` asks for, or why it cannot be.
fn reshard_count(q: &ReshardQuery) -> Result<usize, String> {
    let Some(text) = q.shards.as_deref() else {
        return Err("give the shard count: POST /reshard?shards=N".into());
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=super::MAX_SHARDS).contains(&n) => Ok(n),
        _ => Err(format!(
            "shards must be a whole number from 1 to {}, got {text:?}",
            super::MAX_SHARDS
        )),
    }
}

/// Hands a resharding request to the loop and waits for its answer.
async fn reshard(shared: Arc<Mutex<Shared>>, q: ReshardQuery) -> warp::reply::Response {
    let shards = match reshard_count(&q) {
        Ok(n) => n,
        Err(message) => return reply(StatusCode::BAD_REQUEST, error_body("bad_request", message)),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = lock(&shared)
        .reshard
        .as_ref()
        .is_some_and(|s| s.send(ReshardAsk { shards, reply: tx }).is_ok());
    let unavailable = || {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            error_body("unavailable", "the playground is stopping"),
        )
    };
    if !sent {
        return unavailable();
    }
    match tokio::time::timeout(std::time::Duration::from_secs(30), rx).await {
        Ok(Ok((status, body))) => reply(status, body),
        _ => unavailable(),
    }
}

const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Asks shard `q.shard`'s primary for a planned switchover, as `rcluster switchover` does.
async fn switchover(shared: Arc<Mutex<Shared>>, q: SwitchoverQuery) -> warp::reply::Response {
    let urls = lock(&shared).shard_member_urls(q.shard);
    if urls.is_empty() {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": "not_found", "message": format!("no shard {}", q.shard)}}),
        );
    }
    let client = rcluster_client::Client::builder(urls)
        .discover_members(false)
        .follow_cluster(false)
        .retry_deadline(std::time::Duration::from_secs(5))
        .build();
    let call = rcluster_client::calls::switchover(q.to.as_deref());
    let result = match (client, call) {
        (Ok(c), Ok(call)) => c.execute(&call).await.map(|r| r.json),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match result {
        Ok(body) => reply(StatusCode::OK, json!({"shard": q.shard, "reply": body})),
        Err(e) => reply(
            StatusCode::BAD_GATEWAY,
            json!({"error": {"code": "switchover_failed", "message": e.to_string()}}),
        ),
    }
}

pub fn routes(
    shared: Arc<Mutex<Shared>>,
    supervisor: Arc<Mutex<Supervisor>>,
    metrics: Metrics,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let s = shared.clone();
    let status = warp::path!("status")
        .and(warp::get())
        .map(move || reply(StatusCode::OK, lock(&s).status.clone()));
    let s = shared.clone();
    let traffic = warp::path!("traffic").and(warp::get()).map(move || {
        let doc = json!({ "points": lock(&s).traffic.points });
        reply(StatusCode::OK, doc)
    });
    let page = warp::path::end().and(warp::get()).map(|| {
        use warp::Reply;
        warp::reply::with_header(DASHBOARD_HTML, "content-type", "text/html; charset=utf-8")
            .into_response()
    });
    let s = shared.clone();
    let switch = warp::path!("switchover")
        .and(warp::post())
        .and(warp::query::<SwitchoverQuery>())
        .then(move |q| switchover(s.clone(), q));
    let s = shared.clone();
    let resharding = warp::path!("reshard")
        .and(warp::post())
        .and(warp::query::<ReshardQuery>())
        .then(move |q| reshard(s.clone(), q));
    let s = shared;
    let decisions = warp::path!("decisions").and(warp::get()).map(move || {
        let list: Vec<Value> = lock(&s).decisions.iter().cloned().collect();
        reply(StatusCode::OK, json!({ "decisions": list }))
    });
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        use warp::Reply;
        match metrics.encode() {
            Ok(text) => warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4")
                .into_response(),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": {"code": "metrics", "message": e.to_string()}}),
            ),
        }
    });
    let sup = supervisor.clone();
    let stop = warp::path!("members" / String / "stop")
        .and(warp::post())
        .and(warp::query::<StopQuery>())
        .map(move |name: String, q: StopQuery| {
            let signal = match q.signal.as_deref() {
                None | Some("term") => Signal::Term,
                Some("kill") => Signal::Kill,
                Some(other) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        json!({"error": {"code": "bad_request",
                            "message": format!("signal must be term or kill, got {other:?}")}}),
                    );
                }
            };
            member_result(&name, lock(&sup).stop(&name, signal, true))
        });
    let sup = supervisor;
    let start = warp::path!("members" / String / "start")
        .and(warp::post())
        .map(move |name: String| member_result(&name, lock(&sup).start(&name)));
    status
        .or(decisions)
        .unify()
        .or(metrics)
        .unify()
        .or(stop)
        .unify()
        .or(start)
        .unify()
        .or(traffic)
        .unify()
        .or(page)
        .unify()
        .or(switch)
        .unify()
        .or(resharding)
        .unify()
}

fn member_result(name: &str, r: Result<(), String>) -> warp::reply::Response {
    match r {
        Ok(()) => reply(StatusCode::OK, json!({"member": name, "ok": true})),
        Err(e) => reply(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": "not_found", "message": e}}),
        ),
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Mutex<Shared>>,
    supervisor: Arc<Mutex<Supervisor>>,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(shared, supervisor, metrics))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn call(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    #[tokio::test]
    async fn serves_status_decisions_metrics_dashboard_and_member_commands() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        lock(&shared).status = json!({"ready": true});
        lock(&shared).push_decision(json!({"n": 1}));
        let sup = Arc::new(Mutex::new(Supervisor::new("true".into(), vec![])));
        let metrics = Metrics::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, shared, sup, metrics, async {
            let _ = stopped.await;
        }));

        assert_eq!(
            call(addr, "GET", "/status").await,
            (200, r#"{"ready":true}"#.into())
        );
        assert_eq!(
            call(addr, "GET", "/decisions").await,
            (200, r#"{"decisions":[{"n":1}]}"#.into())
        );
        let (code, text) = call(addr, "GET", "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            text.contains("rcluster_operator_failovers_total 0"),
            "{text}"
        );
        assert_eq!(
            call(addr, "POST", "/members/n9/stop?signal=kill").await.0,
            404
        );
        assert_eq!(
            call(addr, "POST", "/members/n9/stop?signal=hup").await.0,
            400
        );
        assert_eq!(call(addr, "GET", "/nope").await.0, 404);
        let (code, page) = call(addr, "GET", "/").await;
        assert_eq!(code, 200);
        assert!(
            page.contains("<title>rcluster playground</title>"),
            "{page}"
        );
        assert_eq!(
            call(addr, "GET", "/traffic").await,
            (200, r#"{"points":[]}"#.into())
        );
        // No shard 3 in the published status: nothing to ask.
        assert_eq!(call(addr, "POST", "/switchover?shard=3").await.0, 404);
        // Bad shard counts are refused before the loop hears of them.
        for bad in [
            "/reshard",
            "/reshard?shards=0",
            "/reshard?shards=17",
            "/reshard?shards=x",
        ] {
            let (code, body) = call(addr, "POST", bad).await;
            assert_eq!(code, 400, "{bad}: {body}");
            assert!(body.contains(r#""code":"bad_request""#), "{bad}: {body}");
        }
        // No loop to take a good one (it is not running in this test).
        assert_eq!(call(addr, "POST", "/reshard?shards=3").await.0, 503);

        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("server stops on shutdown")
            .unwrap();
    }
}
