//! Helpers for rcluster's end-to-end tests: the binaries of the other packages, a playground
//! (real `rcluster-node` processes under `rcluster-operator playground`) with free ports, a tiny
//! blocking HTTP client, client-side helpers that resolve unknown outcomes, and the
//! [`linearizability`] checker for the histories the tests record.
//!
//! The binaries come from the same target folder as the running test. They are rebuilt with
//! `$CARGO build -p rcluster-node -p rcluster-operator -p rcluster-cli --bins` when missing or older than the
//! sources (cargo does not build other packages' binaries for an integration test).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

pub mod linearizability;
pub mod module_graph;
pub mod ops;
mod playground;
pub use playground::{Options, Playground};

/// Generous: the machine is shared and slow at times.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// `target/<profile>` of the running test or example.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/test-hash or target/<profile>/examples/name
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary inside target/<profile>/...")
        .to_path_buf()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn newest_source() -> SystemTime {
    fn walk(p: &Path, newest: &mut SystemTime) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), newest);
            }
        } else if let Ok(t) = meta.modified() {
            // Sources only: other files (proptest regressions, notes) never change a binary.
            let source = p.extension().is_some_and(|e| e == "rs") || p.ends_with("Cargo.toml");
            if source {
                *newest = (*newest).max(t);
            }
        }
    }
    let root = workspace_root();
    let mut newest = SystemTime::UNIX_EPOCH;
    for part in ["proto", "node", "client", "cli", "operator"] {
        walk(&root.join(part).join("src"), &mut newest);
        walk(&root.join(part).join("Cargo.toml"), &mut newest);
    }
    newest
}

const BINARIES: [&str; 3] = ["rcluster-node", "rcluster-operator", "rcluster"];

fn stale() -> bool {
    let newest = newest_source();
    BINARIES.iter().any(|b| {
        std::fs::metadata(bin_dir().join(b))
            .and_then(|m| m.modified())
            .map_or(true, |t| t < newest)
    })
}

/// The path of one of the workspace's binaries, built first when missing or stale.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        if !stale() {
            return Ok(());
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let dir = bin_dir();
        let mut cmd = Command::new(cargo);
        // Variables cargo set for this test process (CARGO_PKG_NAME...) would reach build
        // scripts that watch them (ring's does) and rebuild half the dependency tree.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let per_package = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|p| k.starts_with(p));
            let per_run = ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"];
            if per_package || per_run.contains(&k.as_ref()) {
                cmd.env_remove(k.as_ref());
            }
        }
        cmd.current_dir(workspace_root()).args([
            "build",
            "-p",
            "rcluster-node",
            "-p",
            "rcluster-operator",
            "-p",
            "rcluster-cli",
            "--bins",
        ]);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
            None => {}
        }
        eprintln!("building the node, operator and CLI binaries: {cmd:?}");
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{cmd:?} failed: {status}"))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// One blocking HTTP/1.1 request on a fresh connection; `None` when there is no complete answer.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let addr = addr.trim_start_matches("http://");
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(rest.len());
    (rest.len() >= len).then(|| (status, rest[..len].to_string()))
}

/// GET returning the JSON body of a 200 answer.
pub fn get_json(base: &str, path: &str) -> Option<serde_json::Value> {
    match http(base, "GET", path, None)? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// Polls `f` until it returns `Some`, failing the test with `what` after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Sends a signal (`"-9"`, `"-STOP"`, `"-CONT"`, `"-TERM"`) to a process.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a process runs (a zombie does not count).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Playgrounds are heavy on a 2-core machine: tests of one binary take turns.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A small pseudo-random generator (tests need variety, not quality).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((seed ^ t ^ u64::from(std::process::id())) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
