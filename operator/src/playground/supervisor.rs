//! The node processes: start, notice exits, restart with backoff, hold a node down on request,
//! and stop them all on shutdown (SIGTERM, then SIGKILL for stragglers).
//!
//! Every call is synchronous and quick, so the supervisor lives behind a plain mutex shared by
//! the coordination loop and the control endpoint; only the shutdown waits, after taking the
//! children out.

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    /// Full command line after the binary.
    pub args: Vec<String>,
    /// The node's listening socket, held by the playground and handed to every start of the
    /// node (`--listen-fd`), so a restart never finds its port taken.
    pub listener: Option<Arc<std::net::TcpListener>>,
    /// Where the node's stdout and stderr go.
    pub log: PathBuf,
}

/// Something the caller should log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        node: String,
        pid: u32,
        restart: bool,
    },
    Exited {
        node: String,
        how: String,
        /// `None` while the node is held down.
        restart_in: Option<Duration>,
    },
    SpawnFailed {
        node: String,
        error: String,
    },
}

/// Restarts back off when a node keeps crashing soon after it started.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A node that ran this long before exiting is restarted quickly again.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Connections closed on a down node's port per poll: the kernel queues no more than
/// `net.core.somaxconn` (4096 by default) on a listening socket.
const MAX_REFUSED: usize = 4096;

struct Slot {
    spec: NodeSpec,
    child: Option<Child>,
    pid: Option<u32>,
    started: Option<Instant>,
    restarts: u64,
    /// Kept down on request (`stop`) until `start`.
    held: bool,
    restart_at: Option<Instant>,
    backoff: Duration,
    /// Left the cluster: stopped for good, and forgotten once it exited (killed at this time if
    /// it has not by then).
    retiring: Option<Instant>,
}

/// A node as the control endpoint and the status table show it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProcessInfo {
    pub pid: Option<u32>,
    pub restarts: u64,
    pub held: bool,
}

pub struct Supervisor {
    bin: PathBuf,
    slots: Vec<Slot>,
    /// Once shutting down nothing is restarted.
    stopping: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

impl Slot {
    /// Closes the connections waiting on the port of a node whose process is not running.
    ///
    /// The playground holds the socket, so the kernel still accepts connections to a node that
    /// is down. Left queued, what they carry would be served by the node's next start, after the
    /// sender gave up or died: a killed primary's append would reach a replica restarted after a
    /// failover, and its unreplicated entries would enter the new primary's log. A dead
    /// process's port refuses; this one closes what arrives, the nearest it can come to that.
    fn refuse_waiting(&self) {
        let Some(listener) = &self.spec.listener else {
            return;
        };
        // Shared with the node, which makes it non-blocking too; a socket never handed out yet
        // is blocking, and `accept` must not wait here.
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        for _ in 0..MAX_REFUSED {
            match listener.accept() {
                Ok((conn, _)) => drop(conn),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    /// A node to start on the next poll.
    fn new(spec: NodeSpec) -> Slot {
        Slot {
            spec,
            child: None,
            pid: None,
            started: None,
            restarts: 0,
            held: false,
            restart_at: Some(Instant::now()),
            backoff: FIRST_BACKOFF,
            retiring: None,
        }
    }
}

impl Supervisor {
    pub fn new(bin: PathBuf, specs: Vec<NodeSpec>) -> Supervisor {
        let slots = specs.into_iter().map(Slot::new).collect();
        Supervisor {
            bin,
            slots,
            stopping: false,
        }
    }

    /// Adds a node to run (started on the next poll): a shard added while the playground runs.
    pub fn add(&mut self, spec: NodeSpec) -> Result<(), String> {
        if self.slots.iter().any(|s| s.spec.name == spec.name) {
            return Err(format!("{} is still running (or stopping)", spec.name));
        }
        self.slots.push(Slot::new(spec));
        Ok(())
    }

    /// Reaps exited nodes and starts those that are due (all of them on the first call).
    pub fn poll(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        for slot in &mut self.slots {
            if let (Some(child), Some(deadline)) = (slot.child.as_mut(), slot.retiring)
                && now >= deadline
            {
                let _ = child.start_kill();
            }
            if let Some(child) = slot.child.as_mut() {
                match child.try_wait() {
                    Ok(None) => continue,
                    Ok(Some(status)) => {
                        slot.child = None;
                        slot.pid = None;
                        let ran = slot.started.map_or(Duration::ZERO, |s| now - s);
                        slot.backoff = if ran >= STABLE_AFTER {
                            FIRST_BACKOFF
                        } else {
                            slot.backoff
                        };
                        let restart_in = (!slot.held && !self.stopping).then_some(slot.backoff);
                        slot.restart_at = restart_in.map(|d| now + d);
                        slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
                        events.push(Event::Exited {
                            node: slot.spec.name.clone(),
                            how: describe_exit(status),
                            restart_in,
                        });
                    }
                    Err(e) => {
                        events.push(Event::SpawnFailed {
                            node: slot.spec.name.clone(),
                            error: format!("cannot check the process: {e}"),
                        });
                        continue;
                    }
                }
            }
            // No process runs (a running child `continue`d above). Also just before a restart:
            // the new process is handed nothing that was sent while none ran.
            slot.refuse_waiting();
            let due = slot.restart_at.is_some_and(|t| t <= now);
            if due && !slot.held && !self.stopping {
                slot.restart_at = None;
                match spawn(&self.bin, &slot.spec) {
                    Ok(child) => {
                        let restart = slot.started.is_some();
                        slot.restarts += u64::from(restart);
                        slot.pid = child.id();
                        slot.started = Some(now);
                        events.push(Event::Started {
                            node: slot.spec.name.clone(),
                            pid: slot.pid.unwrap_or(0),
                            restart,
                        });
                        slot.child = Some(child);
                    }
                    Err(error) => {
                        slot.restart_at = Some(now + slot.backoff);
                        slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
                        events.push(Event::SpawnFailed {
                            node: slot.spec.name.clone(),
                            error,
                        });
                    }
                }
            }
        }
        self.slots
            .retain(|s| s.retiring.is_none() || s.child.is_some());
        events
    }

    /// Stops `name` for good (it left the cluster): SIGTERM now, SIGKILL after `grace`; the
    /// node is forgotten once it exited.
    pub fn retire(&mut self, name: &str, grace: Duration) -> Result<(), String> {
        self.stop(name, Signal::Term, true)?;
        let slot = self.slot(name)?;
        slot.retiring.get_or_insert(Instant::now() + grace);
        Ok(())
    }

    /// The nodes that run or are to run again (not those leaving).
    pub fn names(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.retiring.is_none())
            .map(|s| s.spec.name.clone())
            .collect()
    }

    /// Whether `name` is a node here (running, held, or retiring and not yet exited).
    pub fn has(&self, name: &str) -> bool {
        self.slots.iter().any(|s| s.spec.name == name)
    }

    pub fn info(&self, name: &str) -> ProcessInfo {
        self.slots
            .iter()
            .find(|s| s.spec.name == name)
            .map(|s| ProcessInfo {
                pid: s.pid,
                restarts: s.restarts,
                held: s.held,
            })
            .unwrap_or_default()
    }

    /// Sends `signal` to a node; with `hold` it stays down until [`Supervisor::start`].
    pub fn stop(&mut self, name: &str, signal: Signal, hold: bool) -> Result<(), String> {
        let slot = self.slot(name)?;
        slot.held |= hold;
        if hold {
            slot.restart_at = None;
        }
        let Some(child) = slot.child.as_mut() else {
            return Ok(());
        };
        match signal {
            Signal::Kill => child.start_kill().map_err(|e| e.to_string()),
            Signal::Term => match child.id() {
                Some(pid) => send_term(pid),
                None => Ok(()),
            },
        }
    }

    /// Lets a held node run again (started on the next poll).
    pub fn start(&mut self, name: &str) -> Result<(), String> {
        let slot = self.slot(name)?;
        slot.held = false;
        if slot.child.is_none() {
            slot.restart_at = Some(Instant::now());
            slot.backoff = FIRST_BACKOFF;
        }
        Ok(())
    }

    fn slot(&mut self, name: &str) -> Result<&mut Slot, String> {
        self.slots
            .iter_mut()
            .find(|s| s.spec.name == name)
            .ok_or_else(|| format!("no member named {name:?}"))
    }

    /// Stops restarting and hands over the running children for [`terminate`].
    pub fn take_children(&mut self) -> Vec<(String, Child)> {
        self.stopping = true;
        self.slots
            .iter_mut()
            .filter_map(|s| {
                s.pid = None;
                s.child.take().map(|c| (s.spec.name.clone(), c))
            })
            .collect()
    }
}

fn spawn(bin: &PathBuf, spec: &NodeSpec) -> Result<Child, String> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| format!("cannot open {}: {e}", spec.log.display()))
    };
    let (out, err) = (open()?, open()?);
    let parent = std::process::id();
    let mut cmd = Command::new(bin);
    cmd.args(&spec.args);
    if let Some(listener) = &spec.listener {
        let fd = listener.as_raw_fd();
        cmd.args(["--listen-fd", &fd.to_string()]);
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
    }
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: Ctrl-C in a terminal reaches only the playground, which then
        // stops the nodes in order instead of racing their restarts.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the hook runs between fork and exec and makes only async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || die_with_parent(parent));
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

/// In the child, before exec: the kernel kills the node when the playground dies, even by
/// SIGKILL, so no node keeps running on a folder nobody coordinates (or that was deleted).
/// The signal follows the thread that forked: the supervisor is polled from the coordination
/// loop, which runs on the main thread (`block_on`) for the playground's whole life.
fn die_with_parent(parent: u32) -> std::io::Result<()> {
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // A parent that died before the prctl sends nothing: the child is already orphaned.
    if unsafe { libc::getppid() } as u32 != parent {
        return Err(std::io::Error::other("the playground exited"));
    }
    Ok(())
}

fn send_term(pid: u32) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -TERM {pid} failed"))
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(9)) => "killed (signal 9)".into(),
        (None, Some(sig)) => format!("terminated by signal {sig}"),
        (None, None) => "exited".into(),
    }
}

/// SIGTERM every child, wait up to `grace`, then SIGKILL the rest and reap them.
pub async fn terminate(children: Vec<(String, Child)>, grace: Duration) -> Vec<String> {
    for (_, child) in &children {
        if let Some(pid) = child.id() {
            let _ = send_term(pid);
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    let mut report = Vec::new();
    for (name, mut child) in children {
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(Ok(status)) => report.push(format!("{name} {}", describe_exit(status))),
            Ok(Err(e)) => report.push(format!("{name}: {e}")),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                report.push(format!("{name} did not stop in {grace:?}; killed"));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(name: &str, dir: &std::path::Path, secs: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            args: vec![secs.into()],
            listener: None,
            log: dir.join(format!("{name}.log")),
        }
    }

    async fn poll_until(sup: &mut Supervisor, mut f: impl FnMut(&Event) -> bool) -> Event {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = sup.poll(Instant::now()).into_iter().find(|e| f(e)) {
                return e;
            }
            assert!(Instant::now() < deadline, "no matching event");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn restarts_a_killed_child_and_holds_a_stopped_one() {
        let tmp = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new(
            PathBuf::from("sleep"),
            vec![
                sleeper("a", tmp.path(), "30"),
                sleeper("b", tmp.path(), "30"),
            ],
        );
        let started = sup.poll(Instant::now());
        assert_eq!(started.len(), 2, "{started:?}");
        let first = sup.info("a").pid.unwrap();

        sup.stop("a", Signal::Kill, false).unwrap();
        let exited = poll_until(&mut sup, |e| matches!(e, Event::Exited { .. })).await;
        assert!(
            matches!(&exited, Event::Exited { node, how, restart_in: Some(_) } if node == "a" && how.contains("signal 9")),
            "{exited:?}"
        );
        poll_until(&mut sup, |e| {
            matches!(e, Event::Started { restart: true, .. })
        })
        .await;
        let info = sup.info("a");
        assert_eq!(info.restarts, 1);
        assert_ne!(info.pid, Some(first));

        sup.stop("b", Signal::Term, true).unwrap();
        let exited = poll_until(&mut sup, |e| matches!(e, Event::Exited { .. })).await;
        assert!(matches!(
            exited,
            Event::Exited {
                restart_in: None,
                ..
            }
        ));
        for _ in 0..5 {
            assert!(
                sup.poll(Instant::now() + Duration::from_secs(60))
                    .is_empty()
            );
        }
        assert!(sup.info("b").held && sup.info("b").pid.is_none());
        sup.start("b").unwrap();
        poll_until(&mut sup, |e| matches!(e, Event::Started { .. })).await;
        assert!(sup.stop("zz", Signal::Term, false).is_err());

        // A node that leaves the cluster stops and is forgotten.
        sup.retire("b", Duration::from_secs(10)).unwrap();
        assert_eq!(sup.names(), ["a"]);
        poll_until(
            &mut sup,
            |e| matches!(e, Event::Exited { node, .. } if node == "b"),
        )
        .await;
        assert!(sup.stop("b", Signal::Term, false).is_err(), "forgotten");

        let report = terminate(sup.take_children(), Duration::from_secs(10)).await;
        assert_eq!(report.len(), 1, "{report:?}");
        assert!(
            sup.poll(Instant::now() + Duration::from_secs(60))
                .is_empty()
        );
    }

    /// Whether the peer closed `conn` (end of stream or reset) rather than leaving it waiting.
    fn closed_by_peer(conn: &mut std::net::TcpStream) -> bool {
        use std::io::Read;
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        match conn.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => panic!("nothing runs on the port, yet it answered {n} bytes"),
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    /// A node that is down must be down for whoever sends to it: a connection made to its port
    /// meanwhile (the playground holds the socket, so the kernel accepts it) is closed, never
    /// left in the queue for the node's next start to serve. Otherwise an append a primary sent
    /// to a killed replica reaches it when it restarts, after that primary is gone.
    #[tokio::test]
    async fn a_stopped_node_gets_nothing_sent_while_it_was_down() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let spec = NodeSpec {
            name: "a".into(),
            // `exec`: the signal reaches the process holding the socket; `--listen-fd N` lands
            // in $1 and $2.
            args: vec!["-c".into(), "exec sleep 30".into(), "sh".into()],
            listener: Some(Arc::new(listener)),
            log: tmp.path().join("a.log"),
        };
        let mut sup = Supervisor::new(PathBuf::from("sh"), vec![spec]);
        sup.poll(Instant::now());
        assert!(sup.info("a").pid.is_some());
        sup.stop("a", Signal::Kill, true).unwrap();
        poll_until(&mut sup, |e| matches!(e, Event::Exited { .. })).await;

        // Held down: what arrives is closed on the next poll.
        let mut held = std::net::TcpStream::connect(addr).unwrap();
        held.write_all(b"PUT /v1/kv/x HTTP/1.1\r\n\r\n").unwrap();
        sup.poll(Instant::now());
        assert!(
            closed_by_peer(&mut held),
            "a held node's port kept a request"
        );

        // Sent just before the node starts again: not handed to the new process.
        let mut late = std::net::TcpStream::connect(addr).unwrap();
        late.write_all(b"PUT /v1/kv/y HTTP/1.1\r\n\r\n").unwrap();
        sup.start("a").unwrap();
        poll_until(&mut sup, |e| matches!(e, Event::Started { .. })).await;
        assert!(
            closed_by_peer(&mut late),
            "a request sent while the node was down waited for its next start"
        );

        let report = terminate(sup.take_children(), Duration::from_secs(10)).await;
        assert_eq!(report.len(), 1, "{report:?}");
    }
}
