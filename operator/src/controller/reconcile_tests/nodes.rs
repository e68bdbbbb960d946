//! Nodes for the reconcile tests: real `rcluster-node` processes on 127.0.0.1, and a tiny fake
//! node (warp) whose status a test sets and whose role commands are logged.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warp::Filter;

use super::fixtures::{Log, log_push};

pub const SECRET: &str = "s3cret-token";

/// Sockets bound (not listening) on ports that must refuse connections, held for the whole
/// test process so that no node of another test can be given one of their ports.
static REFUSING: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());

/// Blocking HTTP/1.1 request to a node; `None` when it does not answer.
pub fn http(url: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, Value)> {
    let addr = url.strip_prefix("http://")?;
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let (_, rest) = text.split_once("\r\n\r\n")?;
    Some((
        code,
        serde_json::from_str(rest.trim()).unwrap_or(Value::Null),
    ))
}

pub fn status(url: &str) -> Option<Value> {
    http(url, "GET", "/v1/status", None).map(|(_, v)| v)
}

/// Polls `f` until it returns `Some`, for at most 30 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `target/<profile>/rcluster-node` next to this test executable, built once if missing.
pub fn node_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test exe>
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target/<profile>");
        let bin = profile_dir.join("rcluster-node");
        if !bin.exists() {
            let target_dir = profile_dir.parent().expect("target dir");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let mut cmd = Command::new(cargo);
            cmd.current_dir(workspace)
                .env("CARGO_TARGET_DIR", target_dir)
                .args(["build", "-p", "rcluster-node", "--bin", "rcluster-node"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let ok = cmd.status().expect("run cargo build").success();
            assert!(ok && bin.exists(), "cannot build {}", bin.display());
        }
        bin
    })
    .clone()
}

/// A real node process; killed on drop.
pub struct RealNode {
    pub name: String,
    pub url: String,
    child: Child,
    args: Vec<std::ffi::OsString>,
    /// Held for the node's life and inherited by every start of it (`--listen-fd`): a restart
    /// gets the same port, which no other program can take meanwhile.
    listener: TcpListener,
    /// Runs while the node is killed.
    refuser: Option<Refuser>,
    _dir: tempfile::TempDir,
}

impl RealNode {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.refuser.is_none() {
            self.refuser = Some(Refuser::start(&self.listener));
        }
    }

    /// Starts the node again on its data directory and port (after [`RealNode::kill`]: a pod
    /// recreated by the StatefulSet with its volume).
    pub fn restart(&mut self) {
        self.kill();
        if let Some(r) = self.refuser.take() {
            r.stop();
        }
        self.child = spawn(&self.args, &self.listener, &self.url);
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.kill();
        if let Some(r) = self.refuser.take() {
            r.stop();
        }
    }
}

/// While a node is killed, takes each connection from its socket and closes it at once: the
/// controller sees the node gone, as it would if nothing listened, rather than a request that
/// waits in the socket's queue and is carried out by the node's next start.
struct Refuser {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Refuser {
    fn start(listener: &TcpListener) -> Refuser {
        let listener = listener
            .try_clone()
            .expect("duplicate the listening socket");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Refuser { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Runs the node binary with `args`, serving on `listener`, and waits for its ready line on
/// `url`.
fn spawn(args: &[std::ffi::OsString], listener: &TcpListener, url: &str) -> Child {
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new(node_binary());
    cmd.args(args).args(["--listen-fd", &fd.to_string()]);
    // SAFETY: runs in the child between fork and exec and only calls fcntl, which is
    // async-signal-safe: it clears close-on-exec on the child's copy of the socket.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rcluster-node");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("node ready line");
    assert_eq!(line.trim(), format!("rcluster-node ready on {url}"));
    child
}

/// Starts a cluster of real nodes named `names`, all fenced in term 0, sharing [`SECRET`].
pub fn start_real(names: &[&str]) -> Vec<RealNode> {
    let listeners: Vec<TcpListener> = names
        .iter()
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let members: Vec<String> = names
        .iter()
        .zip(&ports)
        .flat_map(|(n, p)| ["--member".to_string(), format!("{n}=http://127.0.0.1:{p}")])
        .collect();
    names
        .iter()
        .zip(&ports)
        .zip(listeners)
        .map(|((name, port), listener)| {
            let dir = tempfile::tempdir().unwrap();
            let secret = dir.path().join("secret");
            std::fs::write(&secret, SECRET).unwrap();
            let url = format!("http://127.0.0.1:{port}");
            let mut args: Vec<std::ffi::OsString> = ["--name", name, "--data-dir"]
                .iter()
                .map(Into::into)
                .collect();
            args.push(dir.path().join("data").into());
            args.extend(
                [
                    "--heartbeat-ms",
                    "50",
                    "--lease-ms",
                    "1000",
                    "--log-level",
                    "warn",
                    "--secret-file",
                ]
                .iter()
                .map(Into::into),
            );
            args.push(secret.into());
            args.extend(members.iter().map(Into::into));
            RealNode {
                name: name.to_string(),
                child: spawn(&args, &listener, &url),
                url,
                args,
                listener,
                refuser: None,
                _dir: dir,
            }
        })
        .collect()
}

/// A fake node: serves the status a test sets, checks the bearer token, logs and applies role
/// commands the way a node does (terms never go back).
pub struct FakeNode {
    pub name: String,
    pub url: String,
    pub state: Arc<Mutex<Value>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub fn fake_status(
    name: &str,
    role: &str,
    term: u64,
    last_term: u64,
    index: u64,
    ready: bool,
) -> Value {
    json!({"node": name, "role": role, "term": term, "last_log_term": last_term,
           "last_log_index": index, "applied_index": index, "commit_index": index, "ready": ready})
}

fn command(state: &mut Value, name: &str, op: &str, body: &Value) -> (u16, Value) {
    if op == "clear-switchover" {
        state["switchover_request"] = Value::Null;
        return (200, state.clone());
    }
    let term = body["term"].as_u64().unwrap_or(0);
    if term < state["term"].as_u64().unwrap_or(0) {
        return (409, json!({"error": {"code": "stale_term"}}));
    }
    state["term"] = json!(term);
    if let Some(members) = body["members"].as_object().filter(|_| op != "fence") {
        let list: Vec<Value> = members.keys().map(|n| json!({"name": n})).collect();
        state["members"] = json!(list);
    }
    match op {
        "fence" => {
            state["role"] = json!("fenced");
            state["ready"] = json!(false);
            state["following"] = Value::Null;
        }
        "promote" => {
            // A promote writes the term's first entry; the fake acknowledges it at every level.
            let first = state["last_log_index"].as_u64().unwrap_or(0) + 1;
            state["last_log_index"] = json!(first);
            state["last_log_term"] = json!(term);
            state["term_start"] = json!(first);
            state["commit_by_ack"] =
                json!({"async": first, "one": first, "quorum": first, "all": first});
            state["role"] = json!("primary");
            state["primary"] = json!(name);
            state["following"] = json!(name);
            state["ready"] = json!(true);
        }
        "follow" => {
            state["role"] = json!("replica");
            state["primary"] = body["primary"].clone();
            state["following"] = body["primary"].clone();
            state["ready"] = json!(true);
        }
        _ => return (404, json!({"error": {"code": "not_found"}})),
    }
    (200, state.clone())
}

impl FakeNode {
    pub async fn start(name: &str, status: Value, log: Log) -> FakeNode {
        let state = Arc::new(Mutex::new(status));
        let get_state = state.clone();
        let status_route = warp::path!("v1" / "status")
            .and(warp::get())
            .map(move || warp::reply::json(&*get_state.lock().unwrap()));
        let (cmd_state, who) = (state.clone(), name.to_string());
        let commands = warp::path!("internal" / "v1" / String)
            .and(warp::post())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::json())
            .map(move |op: String, auth: Option<String>, body: Value| {
                if auth.as_deref() != Some(&format!("Bearer {SECRET}")) {
                    return warp::reply::with_status(
                        warp::reply::json(&json!({"error": {"code": "unauthorized"}})),
                        warp::http::StatusCode::UNAUTHORIZED,
                    );
                }
                if op == "cluster-map" {
                    // Logged apart from the role commands, whose order the tests check.
                    log_push(&log, format!("map {who} epoch {}", body["slots"]["epoch"]));
                    cmd_state.lock().unwrap()["cluster_map"] = body;
                    return warp::reply::with_status(
                        warp::reply::json(&json!({})),
                        warp::http::StatusCode::OK,
                    );
                }
                log_push(&log, format!("node {who} {op} term {}", body["term"]));
                let (code, reply) = command(&mut cmd_state.lock().unwrap(), &who, &op, &body);
                warp::reply::with_status(
                    warp::reply::json(&reply),
                    warp::http::StatusCode::from_u16(code).unwrap(),
                )
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            warp::serve(status_route.or(commands))
                .incoming(listener)
                .graceful(async {
                    let _ = stopped.await;
                })
                .run(),
        );
        FakeNode {
            name: name.to_string(),
            url,
            state,
            _stop: stop,
        }
    }
}

/// A URL where nothing listens: a member whose node is down. Its port stays bound (without
/// listening, so connections are refused) until the test process ends.
pub fn dead_url() -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", socket.local_addr().unwrap());
    REFUSING.lock().unwrap().push(socket);
    url
}

/// Primary `primary` of term 3; every member at the same log position, following it.
pub async fn fake_cluster(
    n: usize,
    primary: usize,
    log: &Log,
) -> (Vec<FakeNode>, BTreeMap<String, String>) {
    let mut nodes = Vec::new();
    for i in 0..n {
        let name = format!("demo-{i}");
        let role = if i == primary { "primary" } else { "replica" };
        let mut s = fake_status(&name, role, 3, 3, 50, true);
        s["following"] = json!(format!("demo-{primary}"));
        nodes.push(FakeNode::start(&name, s, log.clone()).await);
    }
    let urls = nodes
        .iter()
        .map(|n| (n.name.clone(), n.url.clone()))
        .collect();
    (nodes, urls)
}
