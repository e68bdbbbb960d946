//! Test harness: real `rcluster-node` processes on 127.0.0.1 with real data directories, and a
//! minimal blocking HTTP client (one connection per request) so tests need no async runtime.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_rcluster-node");

/// Generous: our machines are shared and slow at times.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct Node {
    child: Option<Child>,
    pub url: String,
    pub addr: String,
    pub dir: PathBuf,
    /// Bound by the harness and kept for the node's whole life, restarts included: the node
    /// inherits it (`--listen-fd`), so its port is never free for another program to take.
    listener: TcpListener,
    /// Runs while the node is down.
    refuser: Option<Refuser>,
    args: Vec<String>,
    log: Arc<Mutex<String>>,
    /// Set for a node that serves HTTPS: how the harness's requests verify it.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// While a node is down, takes each connection from its socket and closes it at once: clients
/// see the node gone, as they would if nothing listened, instead of waiting in the socket's
/// queue for the node's next start.
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

/// A listening socket on a free port of 127.0.0.1, for a node to inherit.
pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

impl Node {
    /// Starts a node on a free port with `dir` as its data dir and waits for its ready line.
    pub fn start(dir: &Path, extra: &[&str]) -> Node {
        Self::start_on(dir, listener(), extra)
    }

    /// Starts a node serving on `listener` (which it keeps across restarts, as members need).
    pub fn start_on(dir: &Path, listener: TcpListener, extra: &[&str]) -> Node {
        let mut node = Node {
            child: None,
            url: String::new(),
            addr: String::new(),
            dir: dir.to_path_buf(),
            listener,
            refuser: None,
            args: extra.iter().map(|s| s.to_string()).collect(),
            log: Arc::new(Mutex::new(String::new())),
            tls: None,
        };
        node.spawn();
        node
    }

    /// Runs the node binary with this node's arguments, the listening socket handed down.
    fn command(&self) -> Command {
        let fd = self.listener.as_raw_fd();
        let mut cmd = Command::new(NODE_BIN);
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen-fd", &fd.to_string()])
            .args(&self.args);
        // SAFETY: runs in the child between fork and exec and only calls fcntl, which is
        // async-signal-safe. It clears close-on-exec on the child's copy of the descriptor.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Replaces the node's extra arguments for its next start.
    pub fn set_args(&mut self, extra: &[&str]) {
        self.args = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Restarts the node; when it exits instead of getting ready (a refusal to start), returns
    /// its exit status and what it wrote to stderr.
    pub fn try_restart(&mut self) -> Result<(), (std::process::ExitStatus, String)> {
        self.kill9();
        let from = self.log().len();
        self.launch()
            .map_err(|status| (status, self.log()[from..].to_string()))
    }

    fn spawn(&mut self) {
        if let Err(status) = self.launch() {
            panic!(
                "node exited ({status}) before getting ready; its log:\n{}",
                self.log()
            );
        }
    }

    /// Starts the process and waits for its ready line; `Err` when it exits first.
    fn launch(&mut self) -> Result<(), std::process::ExitStatus> {
        if let Some(r) = self.refuser.take() {
            r.stop();
        }
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rcluster-node");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("rcluster-node ready on ") {
                    let _ = tx.send(Some(url.to_string()));
                }
            }
            let _ = tx.send(None);
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(Some(url)) => {
                self.addr = url
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .to_string();
                self.url = url;
                self.child = Some(child);
                Ok(())
            }
            Ok(None) => {
                let status = child.wait().expect("wait for rcluster-node");
                let _ = stderr_reader.join();
                self.refuser = Some(Refuser::start(&self.listener));
                Err(status)
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node did not get ready; its log:\n{}", self.log());
            }
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.refuser = Some(Refuser::start(&self.listener));
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Everything the node wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the node's stderr contains `text`. Stderr is read by its own thread, so a line
    /// written before the ready line on stdout may still be on its way when the test goes on.
    pub fn wait_log(&self, text: &str) {
        let start = Instant::now();
        while !self.log().contains(text) {
            assert!(
                start.elapsed() < DEADLINE,
                "the node never logged {text:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP / SIGCONT: a replica that stops answering without closing its connections.
    pub fn pause(&self) {
        let pid = self.pid();
        signal(pid, "-STOP");
        // kill(2) returns before the stop takes effect: until the thread the signal went to gets
        // a CPU, the node's other threads go on, and on a busy machine they answered an append
        // sent after this returned. Paused means every thread is stopped.
        wait_for("the node's threads to stop", || {
            all_stopped(pid).then_some(())
        });
    }
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }
    /// SIGHUP: reload the auth file and the TLS certificate.
    pub fn hangup(&self) {
        signal(self.pid(), "-HUP");
    }

    /// `/v1/status` with the digest. Sent with the cluster secret, which counts as an admin
    /// token on nodes that require tokens (and is ignored by those that do not).
    pub fn status(&self) -> Value {
        let auth = format!("Bearer {SECRET}");
        self.req_h(
            "GET",
            "/v1/status?digest=true",
            None,
            &[("Authorization", &auth)],
        )
        .json()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn req(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.req_h(method, path, body, &[])
    }

    pub fn req_h(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        match &self.tls {
            None => http(&self.addr, method, path, body, headers),
            Some(tls) => try_https(
                &self.addr,
                tls,
                method,
                path,
                body.map(str::as_bytes),
                headers,
            )
            .unwrap_or(Resp {
                status: 0,
                headers: vec![],
                body: String::new(),
            }),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if let Some(r) = self.refuser.take() {
            r.stop();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} (status {})", self.body, self.status))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The error code of a JSON error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// One HTTP/1.1 request on a fresh connection. Returns status 0 when the node cannot be reached
/// or the connection dies before a complete answer (e.g. the node was killed mid-request).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    try_http(addr, method, path, body.map(str::as_bytes), headers).unwrap_or(Resp {
        status: 0,
        headers: vec![],
        body: String::new(),
    })
}

pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> std::io::Result<Resp> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(DEADLINE))?;
    exchange(s, addr, method, path, body, headers)
}

/// [`try_http`] over TLS, verified with `tls`.
pub fn try_https(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> std::io::Result<Resp> {
    exchange(tls_connect(addr, tls)?, addr, method, path, body, headers)
}

/// A TLS connection to `addr` (its certificate must be valid for 127.0.0.1), handshake done.
pub fn tls_connect(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(DEADLINE))?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(tls.clone(), name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// Sends one request on `s` and reads the answer to the end of the connection.
fn exchange<S: Read + Write>(
    mut s: S,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> std::io::Result<Resp> {
    let body = body.unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    // A TLS peer that closes without close_notify ends with an error after the whole answer.
    let read = s.read_to_end(&mut raw);
    match parse_response(&raw) {
        Some(r) => Ok(r),
        None => Err(read
            .err()
            .unwrap_or_else(|| std::io::Error::other("incomplete response"))),
    }
}

pub fn parse_response(raw: &[u8]) -> Option<Resp> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let body = match len {
        Some(n) if rest.len() >= n => rest[..n].to_vec(),
        Some(_) => return None,
        None => rest.to_vec(),
    };
    Some(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Polls `f` until it returns `Some`, failing the test with `what` after the deadline.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Reads server-sent events from `path` until `count` events arrived; returns (event, id, data).
pub fn sse_events(
    addr: &str,
    path: &str,
    count: usize,
) -> mpsc::Receiver<(String, String, String)> {
    let (tx, rx) = mpsc::channel();
    let addr = addr.to_string();
    let path = path.to_string();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
        let mut sent = 0;
        let mut line = String::new();
        let mut in_body = false;
        while sent < count {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if !in_body {
                if l.is_empty() {
                    in_body = true;
                    let _ = ready_tx.send(());
                }
                continue;
            }
            // Chunked framing: skip chunk-size lines (hex only) between events.
            if let Some(v) = l.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("data:") {
                data = v.trim().to_string();
            } else if l.is_empty() && !data.is_empty() {
                let _ = tx.send((
                    std::mem::take(&mut event),
                    std::mem::take(&mut id),
                    std::mem::take(&mut data),
                ));
                sent += 1;
            }
        }
    });
    ready_rx.recv_timeout(DEADLINE).expect("stream opened");
    rx
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/PID/task/*/stat`).
fn all_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses and may hold spaces.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        state == Some('T')
    })
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map(|s| s.success());
    assert_eq!(ok.ok(), Some(true), "kill {sig} {pid}");
}

/// An address on 127.0.0.1 that refuses connections: bound but not listening, so while the
/// returned socket lives no other program can be given its port.
pub fn refusing_addr() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().unwrap().to_string();
    (socket, addr)
}

pub const SECRET: &str = "test-cluster-secret";

/// Several nodes that know each other, with roles assigned through the internal endpoints.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dirs: Vec<tempfile::TempDir>,
    pub names: Vec<String>,
    pub term: u64,
    /// TLS flags every node gets, and how the harness verifies them (none: plain HTTP).
    tls_args: Vec<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Cluster {
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Self::start_opts(n, extra, None)
    }

    /// Like [`Cluster::start`], serving HTTPS with `pki`'s certificate when given (members'
    /// URLs are then `https://…` and the nodes verify each other with its CA).
    pub fn start_opts(n: usize, extra: &[&str], pki: Option<&Pki>) -> Cluster {
        let scheme = if pki.is_some() { "https" } else { "http" };
        let tls_args = pki.map(Pki::node_args).unwrap_or_default();
        let secret_dir = tempfile::tempdir().unwrap();
        let secret = secret_dir.path().join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let listeners: Vec<TcpListener> = (0..n).map(|_| listener()).collect();
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let members: Vec<String> = names
            .iter()
            .zip(&listeners)
            .map(|(name, l)| format!("{name}={scheme}://{}", l.local_addr().unwrap()))
            .collect();
        let mut dirs = vec![secret_dir];
        let mut nodes = Vec::new();
        for (name, listener) in names.iter().zip(listeners) {
            let dir = tempfile::tempdir().unwrap();
            let mut args: Vec<String> = vec![
                "--name".into(),
                name.clone(),
                "--secret-file".into(),
                secret.display().to_string(),
            ];
            for m in &members {
                args.push("--member".into());
                args.push(m.clone());
            }
            args.extend(tls_args.iter().cloned());
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut node = Node::start_on(dir.path(), listener, &args);
            node.tls = pki.map(|p| p.client.clone());
            nodes.push(node);
            dirs.push(dir);
        }
        Cluster {
            nodes,
            dirs,
            names,
            term: 0,
            tls_args,
            tls: pki.map(|p| p.client.clone()),
        }
    }

    /// Starts `n` nodes and makes node 0 primary, the rest its replicas, and waits until all are ready.
    pub fn with_primary(n: usize, extra: &[&str]) -> Cluster {
        let mut c = Cluster::start(n, extra);
        c.elect(0);
        c
    }

    /// Bumps the term and makes node `p` primary and every other node its replica.
    pub fn elect(&mut self, p: usize) {
        self.term += 1;
        let term = self.term;
        let r = self.internal(p, "promote", serde_json::json!({"term": term}));
        assert_eq!(r.status, 200, "promote: {}", r.body);
        for i in 0..self.nodes.len() {
            if i != p {
                let r = self.internal(
                    i,
                    "follow",
                    serde_json::json!({"term": term, "primary": self.names[p]}),
                );
                assert_eq!(r.status, 200, "follow: {}", r.body);
            }
        }
        self.wait_ready();
    }

    /// Starts one more node, as a new pod would start: it knows every member so far and itself,
    /// and waits fenced (empty) until the coordinator gives it a role.
    pub fn add_node(&mut self, extra: &[&str]) -> usize {
        let listener = listener();
        let name = format!("n{}", self.nodes.len() + 1);
        let secret = self.dirs[0].path().join("secret");
        let mut args: Vec<String> = vec![
            "--name".into(),
            name.clone(),
            "--secret-file".into(),
            secret.display().to_string(),
        ];
        for (n, node) in self.names.iter().zip(&self.nodes) {
            args.push("--member".into());
            args.push(format!("{n}={}", node.url));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        args.push("--member".into());
        args.push(format!(
            "{name}={scheme}://{}",
            listener.local_addr().unwrap()
        ));
        args.extend(self.tls_args.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut node = Node::start_on(dir.path(), listener, &args);
        node.tls = self.tls.clone();
        self.nodes.push(node);
        self.dirs.push(dir);
        self.names.push(name);
        self.nodes.len() - 1
    }

    /// The member list (name → URL) of the nodes `which`, as a role command carries it.
    pub fn members(&self, which: &[usize]) -> Value {
        let m: serde_json::Map<String, Value> = which
            .iter()
            .map(|i| {
                (
                    self.names[*i].clone(),
                    Value::from(self.nodes[*i].url.clone()),
                )
            })
            .collect();
        Value::Object(m)
    }

    pub fn wait_ready(&self) {
        for n in &self.nodes {
            wait_for("every node ready", || {
                (n.req("GET", "/readyz", None).status == 200).then_some(())
            });
        }
    }

    pub fn internal(&self, i: usize, op: &str, body: Value) -> Resp {
        self.nodes[i].req_h(
            "POST",
            &format!("/internal/v1/{op}"),
            Some(&body.to_string()),
            &[("Authorization", &format!("Bearer {SECRET}"))],
        )
    }

    /// Waits until every node in `which` applied the same log (same applied index and digest).
    pub fn wait_converged(&self, which: &[usize]) -> String {
        wait_for("nodes to converge", || {
            let s: Vec<Value> = which.iter().map(|i| self.nodes[*i].status()).collect();
            let same = s.windows(2).all(|w| {
                w[0]["digest"] == w[1]["digest"] && w[0]["applied_index"] == w[1]["applied_index"]
            });
            same.then(|| s[0]["digest"].as_str().unwrap().to_string())
        })
    }
}

/// A test CA and a certificate it issued for 127.0.0.1 and `localhost`, as PEM files, plus the
/// harness's client settings that trust that CA only.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client: Arc<rustls::ClientConfig>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, text: String| {
            let p = dir.path().join(file);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca = write("ca.crt", ca_cert.pem());
        let cert = write("tls.crt", cert.pem());
        let key = write("tls.key", key.serialize_pem());
        let trust = rcluster_client::tls::Trust::from_pem_file(&ca).unwrap();
        let client = Arc::new(trust.client_config());
        Pki {
            dir,
            ca,
            cert,
            key,
            client,
        }
    }

    /// The node flags that serve this certificate and trust this CA.
    pub fn node_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
            "--tls-ca".into(),
            self.ca.display().to_string(),
        ]
    }
}
