//! A playground under test: `rcluster-operator playground --quiet` in a temporary folder on a
//! free port range, with helpers to read its status, kill nodes and wait for conditions.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{DEADLINE, alive, bin, get_json, http, signal, wait_for};

/// Flags of the playground under test.
#[derive(Debug, Clone)]
pub struct Options {
    /// Members per shard.
    pub replicas: u16,
    pub shards: u16,
    pub ack: &'static str,
    pub detection_window_ms: u64,
    pub probe_interval_ms: u64,
    /// Passed to every node after `--`.
    pub node_args: Vec<String>,
    /// `--tls`: the nodes serve https with a certificate of the folder's CA.
    pub tls: bool,
    /// `--auth`: the nodes require access tokens (the folder's `token-*` files).
    pub auth: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replicas: 3,
            shards: 1,
            ack: "quorum",
            detection_window_ms: 500,
            probe_interval_ms: 100,
            node_args: ["--ack-timeout-ms", "2000", "--session-wait-ms", "2000"]
                .map(String::from)
                .to_vec(),
            tls: false,
            auth: false,
        }
    }
}

pub struct Playground {
    child: Option<Child>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub opts: Options,
    pub base_port: u16,
    /// `127.0.0.1:BASE_PORT`
    pub control: String,
    pub names: Vec<String>,
    pub urls: Vec<String>,
    out: Arc<Mutex<String>>,
    /// Output streams (stdout, stderr) read to their end.
    ended: Arc<AtomicU16>,
    pids: Mutex<BTreeSet<u32>>,
}

/// Port ranges handed out by this process, so parallel tests never pick the same one.
static NEXT_RANGE: AtomicU16 = AtomicU16::new(0);

/// Ports a playground of `o` spans: BASE_PORT and BASE_PORT+100·k+i for node i of shard k.
fn span(o: &Options) -> u32 {
    100 * u32::from(o.shards.saturating_sub(1)) + u32::from(o.replicas) + 2
}

/// Where the kernel's ephemeral ports begin: ports from there on may be taken at any moment as
/// the local end of some outgoing connection, so a playground resumed on its recorded base port
/// could find it taken.
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A base port below the ephemeral range (from 20000).
fn candidate_base(o: &Options) -> u16 {
    let slot = u32::from(NEXT_RANGE.fetch_add(1, Ordering::Relaxed));
    let spread = std::process::id() % 400;
    let width = span(o).max(10);
    let room = ephemeral_start().saturating_sub(20_000).max(width);
    let ranges = (room / width).max(1);
    (20_000 + ((spread * 97 + slot * 13) % ranges) * width).min(60_000) as u16
}

fn ports_free(base: u16, o: &Options) -> bool {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    free(base) && (0..o.shards).all(|k| (1..=o.replicas).all(|i| free(base + 100 * k + i)))
}

/// Member `i` (from 1) of `shard`, as the playground names it.
pub fn member_name(shard: u16, i: u16) -> String {
    if shard == 0 {
        format!("n{i}")
    } else {
        format!("s{shard}n{i}")
    }
}

impl Playground {
    /// A new cluster in a fresh temporary folder; waits until it is ready.
    pub fn start(opts: Options) -> Playground {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut pg = Self::start_in(&dir, opts, None);
        pg._tmp = Some(tmp);
        pg
    }

    /// A playground on `dir` (new or resumed); `base_port` picks a free range when `None`.
    pub fn start_in(dir: &Path, opts: Options, base_port: Option<u16>) -> Playground {
        let mut last = String::new();
        for _ in 0..10 {
            let base = base_port.unwrap_or_else(|| candidate_base(&opts));
            if base_port.is_none() && !ports_free(base, &opts) {
                continue;
            }
            match Self::spawn(dir, &opts, base) {
                Ok(pg) => return pg,
                Err(out) if out.contains("cannot listen") => {
                    last = out;
                    if base_port.is_some() {
                        // A resumed cluster keeps its ports: give whatever holds one a moment.
                        std::thread::sleep(std::time::Duration::from_millis(500));
                    }
                }
                Err(out) => panic!("the playground did not get ready:\n{out}"),
            }
        }
        panic!("no free port range for the playground:\n{last}");
    }

    fn spawn(dir: &Path, opts: &Options, base: u16) -> Result<Playground, String> {
        let mut cmd = Command::new(bin("rcluster-operator"));
        cmd.arg("playground")
            .arg("--dir")
            .arg(dir)
            .args(["--quiet", "--replicas", &opts.replicas.to_string()])
            .args(["--shards", &opts.shards.to_string()])
            .args(["--ack", opts.ack, "--base-port", &base.to_string()])
            .args([
                "--detection-window-ms",
                &opts.detection_window_ms.to_string(),
            ])
            .args(["--probe-interval-ms", &opts.probe_interval_ms.to_string()])
            .arg("--node-bin")
            .arg(bin("rcluster-node"))
            .args(opts.tls.then_some("--tls"))
            .args(opts.auth.then_some("--auth"))
            .arg("--")
            .args(&opts.node_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
        let out = Arc::new(Mutex::new(String::new()));
        let ended = Arc::new(AtomicU16::new(0));
        let (tx, rx) = mpsc::channel::<bool>();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (stream, is_stdout) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, true),
            (Box::new(stderr), false),
        ] {
            let (out, tx, ended) = (out.clone(), tx.clone(), ended.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let ready = is_stdout && line.starts_with("playground ready:");
                    {
                        let mut o = out.lock().unwrap();
                        o.push_str(&line);
                        o.push('\n');
                    }
                    if ready {
                        let _ = tx.send(true);
                    }
                }
                ended.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(false);
            });
        }
        let scheme = if opts.tls { "https" } else { "http" };
        let (mut names, mut urls) = (Vec::new(), Vec::new());
        for k in 0..opts.shards {
            for i in 1..=opts.replicas {
                names.push(member_name(k, i));
                urls.push(format!("{scheme}://127.0.0.1:{}", base + 100 * k + i));
            }
        }
        let mut pg = Playground {
            child: Some(child),
            dir: dir.to_path_buf(),
            _tmp: None,
            opts: opts.clone(),
            base_port: base,
            control: format!("127.0.0.1:{base}"),
            names,
            urls,
            out,
            ended,
            pids: Mutex::new(BTreeSet::new()),
        };
        // `false`: a stream ended (the process exited); an error: the deadline passed.
        if rx.recv_timeout(DEADLINE) != Ok(true) {
            pg.terminate();
            return Err(pg.output());
        }
        pg.status();
        Ok(pg)
    }

    /// Everything the playground printed so far.
    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn url(&self, name: &str) -> String {
        let i = self.names.iter().position(|n| n == name).expect("member");
        self.urls[i].clone()
    }

    /// `GET /status` of the playground (`Null` when it does not answer).
    pub fn status(&self) -> Value {
        let s = get_json(&self.control, "/status").unwrap_or(Value::Null);
        let mut pids = self.pids.lock().unwrap();
        let shards = s["shards"].as_array().cloned().unwrap_or_default();
        for doc in std::iter::once(&s).chain(shards.iter()) {
            if let Some(members) = doc["members"].as_array() {
                pids.extend(
                    members
                        .iter()
                        .filter_map(|m| m["pid"].as_u64())
                        .map(|p| p as u32),
                );
            }
        }
        s
    }

    /// The playground's status document of one shard (its coordinator, members, slots).
    pub fn shard_status(&self, shard: u16) -> Value {
        let s = self.status();
        match s["shards"].get(usize::from(shard)) {
            Some(doc) => doc.clone(),
            None if shard == 0 => s,
            None => Value::Null,
        }
    }

    /// The member names of one shard.
    pub fn shard_names(&self, shard: u16) -> Vec<String> {
        (1..=self.opts.replicas)
            .map(|i| member_name(shard, i))
            .collect()
    }

    pub fn decisions(&self) -> Vec<Value> {
        get_json(&self.control, "/decisions")
            .and_then(|d| d["decisions"].as_array().cloned())
            .unwrap_or_default()
    }

    /// (primary, term) when every member is ready and the primary leads in the recorded term.
    pub fn healthy(&self) -> Option<(String, u64)> {
        self.healthy_shard(0)
    }

    /// `healthy` of one shard.
    pub fn healthy_shard(&self, shard: u16) -> Option<(String, u64)> {
        let s = self.shard_status(shard);
        let primary = s["coordinator"]["primary"].as_str()?.to_string();
        let term = s["coordinator"]["term"].as_u64()?;
        let members = s["members"].as_array()?;
        let all_ready = members.iter().all(|m| m["ready"] == true);
        let leads = members
            .iter()
            .any(|m| m["name"] == primary.as_str() && m["role"] == "primary" && m["term"] == term);
        (all_ready && leads).then_some((primary, term))
    }

    pub fn wait_healthy(&self) -> (String, u64) {
        wait_for("every member ready", DEADLINE, || self.healthy())
    }

    /// Waits until every shard is healthy; returns each shard's (primary, term).
    pub fn wait_all_healthy(&self) -> Vec<(String, u64)> {
        wait_for("every shard ready", DEADLINE, || {
            (0..self.opts.shards)
                .map(|k| self.healthy_shard(k))
                .collect::<Option<Vec<_>>>()
        })
    }

    /// The new (primary, term) once a term after `old_term` has a ready primary.
    pub fn wait_primary_after(&self, old_term: u64) -> (String, u64) {
        self.wait_shard_primary_after(0, old_term)
    }

    /// `wait_primary_after` for one shard.
    pub fn wait_shard_primary_after(&self, shard: u16, old_term: u64) -> (String, u64) {
        wait_for("a new primary", DEADLINE, || {
            let s = self.shard_status(shard);
            let term = s["coordinator"]["term"].as_u64()?;
            let primary = s["coordinator"]["primary"].as_str()?.to_string();
            let ok = s["members"].as_array()?.iter().any(|m| {
                m["name"] == primary.as_str()
                    && m["role"] == "primary"
                    && m["ready"] == true
                    && m["term"] == term
            });
            (term > old_term && ok).then_some((primary, term))
        })
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        let s = self.status();
        let shards = s["shards"].as_array().cloned().unwrap_or_default();
        std::iter::once(&s)
            .chain(shards.iter())
            .filter_map(|doc| doc["members"].as_array())
            .flatten()
            .find(|m| m["name"] == name)?["pid"]
            .as_u64()
            .map(|p| p as u32)
    }

    /// `kill -9` of a node process (the playground restarts it).
    pub fn kill9(&self, name: &str) -> u32 {
        let pid = wait_for("the node's pid", DEADLINE, || self.pid(name));
        assert!(signal(pid, "-9"), "kill -9 {pid}");
        pid
    }

    /// Waits for a healthy cluster, then `kill -9`s its primary; returns (primary, term).
    pub fn kill_primary(&self) -> (String, u64) {
        let (primary, term) = self.wait_healthy();
        self.kill9(&primary);
        (primary, term)
    }

    /// Stops a node and keeps it down (`kill`: SIGKILL, else SIGTERM).
    pub fn stop_member(&self, name: &str, kill: bool) {
        let sig = if kill { "kill" } else { "term" };
        let r = http(
            &self.control,
            "POST",
            &format!("/members/{name}/stop?signal={sig}"),
            None,
        );
        assert_eq!(r.map(|r| r.0), Some(200), "stop {name}");
    }

    pub fn start_member(&self, name: &str) {
        let r = http(
            &self.control,
            "POST",
            &format!("/members/{name}/start"),
            None,
        );
        assert_eq!(r.map(|r| r.0), Some(200), "start {name}");
    }

    /// `/v1/status?digest=true` of a node.
    pub fn node_status(&self, name: &str) -> Option<Value> {
        get_json(&self.url(name), "/v1/status?digest=true")
    }

    /// Waits until every member applied the same log; returns the common digest.
    pub fn wait_converged(&self) -> String {
        self.wait_shard_converged(0)
    }

    /// Waits until every member of `shard` applied the same log; returns the shard's digest.
    pub fn wait_shard_converged(&self, shard: u16) -> String {
        let names = self.shard_names(shard);
        wait_for("every member to converge", DEADLINE, || {
            let all: Vec<Value> = names
                .iter()
                .map(|n| self.node_status(n))
                .collect::<Option<_>>()?;
            let first = &all[0];
            let same = all.iter().all(|s| {
                s["digest"] == first["digest"] && s["applied_index"] == first["applied_index"]
            });
            (same && first["digest"].is_string())
                .then(|| first["digest"].as_str().unwrap_or("").to_string())
        })
    }

    /// A client given one endpoint only: it must discover the other members itself.
    pub fn client(&self) -> rcluster_client::Client {
        rcluster_client::Client::builder([self.urls[0].clone()])
            .request_timeout(Duration::from_secs(3))
            .retry_deadline(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// The CA certificate of a `--tls` playground.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls").join("ca.crt")
    }

    /// The access token of `role` (read, write, admin) of an `--auth` playground.
    pub fn token(&self, role: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("token-{role}")))
            .expect("token file")
            .trim()
            .to_string()
    }

    /// A client of every node, trusting the playground's CA (with `--tls`) and using the token of
    /// `role` (with `--auth`; `None`: no token).
    pub fn client_as(&self, role: Option<&str>) -> rcluster_client::Client {
        let mut b = rcluster_client::Client::builder(self.urls.clone())
            .request_timeout(Duration::from_secs(3))
            .retry_deadline(Duration::from_secs(20))
            .access_token(role.map(|r| self.token(r)));
        if self.opts.tls {
            let trust = rcluster_client::tls::Trust::from_pem_file(&self.ca_file()).expect("CA");
            b = b.trust(trust);
        }
        b.build().expect("client")
    }

    pub fn secret(&self) -> String {
        std::fs::read_to_string(self.dir.join("secret")).expect("secret file")
    }

    /// `kill -9` of the playground process itself (not of its nodes); waits until it is gone.
    pub fn kill9_playground(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        // The child stays in place: dropping the playground still reaps it and stops any node
        // that outlived it.
        child.kill().is_ok() && child.wait().is_ok()
    }

    /// SIGTERM and wait; returns whether it exited with code 0 in time.
    pub fn stop(&mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if child.try_wait().is_ok_and(|s| s.is_none()) {
            signal(child.id(), "-TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let clean = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
            }
        };
        // Its last lines may still be on their way through the reader threads.
        let read = Instant::now() + DEADLINE;
        while self.ended.load(Ordering::SeqCst) < 2 && Instant::now() < read {
            std::thread::sleep(Duration::from_millis(10));
        }
        // A playground that could not stop its nodes must not leave them running.
        // Only processes that are still this playground's nodes (pids get reused).
        let dir = self.dir.display().to_string();
        for &pid in self.pids.lock().unwrap().iter() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours = String::from_utf8_lossy(&cmdline).contains(&dir);
            if ours && alive(pid) {
                signal(pid, "-9");
            }
        }
        clean
    }
}

impl Drop for Playground {
    fn drop(&mut self) {
        self.terminate();
        // A failed test's nodes' logs and files are what explains it: keep them.
        if std::thread::panicking()
            && let Some(tmp) = self._tmp.take()
        {
            eprintln!(
                "the failed test's playground is kept in {}",
                tmp.keep().display()
            );
        }
    }
}
