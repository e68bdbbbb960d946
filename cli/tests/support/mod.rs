//! Helpers of the CLI's tests: a standalone `rcluster-node` on a free port with its own temporary
//! data directory (killed on drop), and runs of the `rcluster` binary with a deadline. The node
//! binary comes from `rcluster_e2e::bin`, which builds it when it is missing or stale.
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use rcluster_e2e::{DEADLINE, Options, Playground, get_json, http, serial, signal, wait_for};

/// The longest any single CLI run may take in these tests.
pub const CLI_DEADLINE: Duration = Duration::from_secs(60);

/// A standalone node on a free port of 127.0.0.1 (killed on drop).
pub struct Node {
    pub url: String,
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Node {
    pub fn start() -> Node {
        Self::start_with(&[])
    }

    /// Starts a node with extra flags and waits for its ready line.
    pub fn start_with(extra: &[&str]) -> Node {
        Self::start_on(bound().0, extra)
    }

    /// Starts a node on `listener`, which is handed down (`--listen-fd`) so that the port
    /// cannot be taken in between; waits for its ready line.
    pub fn start_on(listener: TcpListener, extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new(rcluster_e2e::bin("rcluster-node"));
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(["--listen-fd", &fd.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
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
        let mut child = cmd.spawn().expect("start rcluster-node");
        drop(listener);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("rcluster-node ready on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let Ok(url) = rx.recv_timeout(DEADLINE) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rcluster-node did not get ready within {DEADLINE:?}");
        };
        Node {
            addr: url.trim_start_matches("http://").to_string(),
            url,
            child,
            _dir: dir,
        }
    }

    /// Runs `rcluster --endpoint URL ARGS...` to completion.
    pub fn rc(&self, args: &[&str]) -> Run {
        let mut all = vec!["--endpoint", &self.url];
        all.extend_from_slice(args);
        rcluster(&all)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listening socket on a free port of 127.0.0.1, and its URL.
pub fn bound() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

/// One HTTP/1.1 request with extra headers on a fresh connection: (status, body).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = addr.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    /// Asserts exit code 1 and a single `error: <code>: ...` line on stderr.
    #[track_caller]
    pub fn api_error(&self, code: &str) {
        assert_eq!(self.code, 1, "expected a server error: {self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:?}");
        assert!(
            self.stderr.starts_with(&format!("error: {code}: ")),
            "{self:?}"
        );
    }
}

/// `rcluster ARGS...` without `RCLUSTER_*` variables from the environment of the test.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rcluster"));
    cmd.args(args)
        .env_remove("RCLUSTER_ENDPOINTS")
        .env_remove("RCLUSTER_CLUSTER_ID");
    cmd
}

/// Runs the CLI with a deadline (killed and failed if it does not finish).
pub fn run(mut cmd: Command) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rcluster starts");
    // Drain both pipes while waiting, so a chatty command never blocks on a full pipe.
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let deadline = Instant::now() + CLI_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rcluster did not finish within {CLI_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

pub fn rcluster(args: &[&str]) -> Run {
    run(command(args))
}

/// Kills (SIGKILL) and reaps a child when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An address nobody listens on, held (bound, not listening) while the socket lives: connections
/// to it are refused and no other test can be given the port meanwhile.
pub fn refusing_addr() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().unwrap().to_string();
    (socket, addr)
}
