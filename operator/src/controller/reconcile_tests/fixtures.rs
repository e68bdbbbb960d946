//! A scripted mock API server (the controller-rs `fixtures.rs` pattern on kube's tower-test
//! service): every request the code under test makes must match the next expectation — method,
//! path, query parameters, body checks — and gets that expectation's answer. Requests are also
//! appended to a shared [`Log`], so tests can check their order against node commands.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock;

pub type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// What happened, in order, across the API server and the nodes.
pub type Log = Arc<Mutex<Vec<String>>>;

pub fn log_push(log: &Log, line: String) {
    log.lock().unwrap().push(line);
}

/// The lines of `log` that start with one of `prefixes`, in order.
pub fn log_lines(log: &Log, prefixes: &[&str]) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .cloned()
        .collect()
}

pub fn mock_client() -> (Client, Handle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

type Check = Box<dyn FnOnce(&Value) + Send>;
type Responder = Box<dyn FnOnce(Value) -> (u16, Value) + Send>;

/// One expected request.
pub struct Expect {
    pub method: Method,
    pub path: String,
    pub query: Vec<String>,
    /// Skipped when the request does not match (for writes that depend on timing).
    pub optional: bool,
    check: Option<Check>,
    reply: Responder,
}

impl Expect {
    pub fn new(method: Method, path: &str) -> Expect {
        Expect {
            method,
            path: path.to_string(),
            query: Vec::new(),
            optional: false,
            check: None,
            reply: Box::new(|body| (200, body)),
        }
    }

    pub fn get(path: &str) -> Expect {
        Expect::new(Method::GET, path)
    }
    pub fn put(path: &str) -> Expect {
        Expect::new(Method::PUT, path)
    }
    pub fn patch(path: &str) -> Expect {
        Expect::new(Method::PATCH, path)
    }
    pub fn post(path: &str) -> Expect {
        Expect::new(Method::POST, path)
    }
    pub fn delete(path: &str) -> Expect {
        Expect::new(Method::DELETE, path)
    }

    /// The query string must contain `part`.
    pub fn query(mut self, part: &str) -> Expect {
        self.query.push(part.to_string());
        self
    }

    pub fn optional(mut self) -> Expect {
        self.optional = true;
        self
    }

    /// Adds a check of the request body (after any earlier ones).
    pub fn check(mut self, f: impl FnOnce(&Value) + Send + 'static) -> Expect {
        self.check = Some(match self.check.take() {
            None => Box::new(f),
            Some(first) => Box::new(move |b: &Value| {
                first(b);
                f(b)
            }),
        });
        self
    }

    /// Answer with `status` and `body` (the default echoes the request body with 200).
    pub fn reply(mut self, status: u16, body: Value) -> Expect {
        self.reply = Box::new(move |_| (status, body));
        self
    }

    pub fn respond(mut self, f: impl FnOnce(Value) -> (u16, Value) + Send + 'static) -> Expect {
        self.reply = Box::new(f);
        self
    }
}

/// A Kubernetes `Status` error body.
pub fn status_error(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("mock: {reason}"), "reason": reason, "code": code})
}

pub fn not_found() -> (u16, Value) {
    (404, status_error(404, "NotFound"))
}

fn split(uri: &http::Uri) -> (String, String) {
    (
        uri.path().to_string(),
        uri.query().unwrap_or("").to_string(),
    )
}

fn short(method: &Method, path: &str) -> String {
    format!("api {method} {path}")
}

/// The mock API server of one script.
pub struct Server {
    task: JoinHandle<Handle>,
    done: tokio::sync::oneshot::Sender<()>,
}

/// Serves `script` in order, until the script is done or the test calls [`finish`] (then only
/// optional expectations may be left).
pub fn serve(mut handle: Handle, script: Vec<Expect>, log: Log) -> Server {
    let (done, mut finished) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut script = script.into_iter().peekable();
        let mut n = 0;
        while script.peek().is_some() {
            let next = tokio::select! {
                next = tokio::time::timeout(Duration::from_secs(30), handle.next_request()) => next,
                _ = &mut finished => {
                    let left: Vec<String> = script.filter(|e| !e.optional).map(|e| format!("{} {}", e.method, e.path)).collect();
                    assert!(left.is_empty(), "requests never made: {left:?}");
                    return handle;
                }
            };
            let (req, send) = match next {
                Ok(Some(x)) => x,
                Ok(None) => {
                    let left: Vec<String> = script
                        .filter(|e| !e.optional)
                        .map(|e| format!("{} {}", e.method, e.path))
                        .collect();
                    assert!(left.is_empty(), "client dropped; never requested: {left:?}");
                    return handle;
                }
                Err(_) => {
                    let e = script.peek().unwrap();
                    panic!("request {n} never came: expected {} {}", e.method, e.path)
                }
            };
            n += 1;
            let method = req.method().clone();
            let (path, query) = split(req.uri());
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
            };
            // Optional expectations that do not match are skipped.
            while script
                .peek()
                .is_some_and(|e| e.optional && (e.method != method || e.path != path))
            {
                script.next();
            }
            let Some(exp) = script.next() else {
                panic!("unexpected request {method} {path}?{query} after the optional tail");
            };
            log_push(&log, short(&method, &path));
            assert_eq!(
                (&method, path.as_str()),
                (&exp.method, exp.path.as_str()),
                "request {n}: got {method} {path}?{query}, body {body}"
            );
            for q in &exp.query {
                assert!(
                    query.contains(q.as_str()),
                    "request {n} {path}: query {query:?} lacks {q:?}"
                );
            }
            if let Some(check) = exp.check {
                check(&body);
            }
            let (status, reply) = (exp.reply)(body);
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(response);
        }
        handle
    });
    Server { task, done }
}

/// After the code under test finished: the script was served and nothing else was requested.
/// Returns the mock for the next script.
pub async fn finish_keep(server: Server) -> Handle {
    let _ = server.done.send(());
    let mut handle = tokio::time::timeout(Duration::from_secs(30), server.task)
        .await
        .expect("mock API server finished its script")
        .expect("every request matched the script");
    let extra = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
    if let Ok(Some((req, _))) = extra {
        panic!("unexpected extra request {} {}", req.method(), req.uri());
    }
    handle
}

pub async fn finish(server: Server) {
    finish_keep(server).await;
}
