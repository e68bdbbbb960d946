//! How a node process starts: on a listening socket it inherits (`--listen-fd`), and the clear
//! one-line refusals when what it is given is unusable or its data folder is in use.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_restarted_node_serves_on_the_same_inherited_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Node::start(dir.path(), &[]);
    let url = n.url.clone();
    assert_eq!(n.req("PUT", "/v1/kv/k", Some("1")).status, 200);
    for _ in 0..2 {
        n.restart();
        assert_eq!(n.url, url, "same port after a restart");
        assert_eq!(n.req("GET", "/v1/kv/k", None).json()["value"], 1);
    }
}

/// Runs a node process with `args` that is expected to exit at once: its status and stderr.
fn refused(args: &[&str]) -> (std::process::ExitStatus, String) {
    refused_with(args, &[])
}

/// `refused`, with these environment variables set.
fn refused_with(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(NODE_BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node did not exit with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn an_unusable_listen_fd_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // 0 is stdin (/dev/null here): open, but not a socket. 987 is not open at all.
    for (fd, why) in [("0", "not a socket"), ("987", "not an open descriptor")] {
        let (status, stderr) = refused(&["--data-dir", data, "--listen-fd", fd]);
        assert_eq!(status.code(), Some(1), "{stderr}");
        let line = stderr.lines().last().unwrap_or_default();
        assert!(
            line.starts_with(&format!("rcluster-node: --listen-fd {fd}: {why}")),
            "{stderr}"
        );
    }
}

#[test]
fn a_second_process_on_a_data_folder_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path(), &[]);
    assert_eq!(n.req("PUT", "/v1/kv/k", Some("1")).status, 200);
    let data = dir.path().to_str().unwrap();
    let (status, stderr) = refused(&["--data-dir", data, "--listen", "127.0.0.1:0"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    let expected = format!("in use by another rcluster-node process (pid {})", n.pid());
    assert!(line.contains(&expected), "{stderr}");
    // The first one goes on untouched.
    assert_eq!(n.req("PUT", "/v1/kv/k", Some("2")).status, 200);
    assert_eq!(n.req("GET", "/v1/kv/k", None).json()["value"], 2);
}

/// The connection threads of process `pid` beyond its main thread (`rcluster-conn-N`), with the
/// voluntary context switches each has made so far: a thread serving a connection sleeps between
/// its requests.
fn connection_threads(pid: u32) -> Vec<(String, u64)> {
    let mut threads: Vec<(String, u64)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            let switches = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
                .trim()
                .parse()
                .ok()?;
            Some((comm.trim_end().to_string(), switches))
        })
        .filter(|(comm, _)| comm.starts_with("rcluster-conn-"))
        .collect();
    threads.sort();
    threads
}

#[test]
fn worker_threads_sets_the_threads_that_serve_requests() {
    let dir = tempfile::tempdir().unwrap();
    // One more than the default (a thread per CPU), so the default cannot pass for it; 0 asks
    // for the default (what the operator passes for a pod that requests no CPU).
    let default = std::thread::available_parallelism().unwrap().get();
    for (arg, want) in [(default + 1, default + 1), (0, default)] {
        let n = Node::start(dir.path(), &["--worker-threads", &arg.to_string()]);
        assert_eq!(n.req("PUT", "/v1/kv/k", Some("1")).status, 200);
        let metrics = n.req("GET", "/metrics", None).body;
        let line = format!("\nrcluster_worker_threads {want}\n");
        assert!(metrics.contains(&line), "--worker-threads {arg}: {metrics}");
        // The main thread is the first; it also runs the node's background work, so only the
        // others are checked.
        let before = connection_threads(n.pid());
        assert_eq!(before.len(), want - 1, "--worker-threads {arg}: {before:?}");
        // Connections go to the threads in turn (each request here has its own): every thread
        // serves some, and sleeps between them.
        for i in 0..20 * want {
            let key = format!("/v1/kv/k{i}");
            assert_eq!(n.req("PUT", &key, Some("1")).status, 200);
        }
        let after = connection_threads(n.pid());
        for ((name, was), (_, now)) in before.iter().zip(&after) {
            assert!(
                now - was >= 10,
                "{name} served no connection: {was} -> {now} switches"
            );
        }
    }
    // The operator sets it through the environment: the same setting, the same checks.
    let data = dir.path().to_str().unwrap();
    for (args, env) in [
        (vec!["--worker-threads", "1025"], None),
        (vec!["--worker-threads", "many"], None),
        (vec![], Some("-1")),
    ] {
        let env: Vec<_> = env
            .map(|v| ("RCLUSTER_WORKER_THREADS", v))
            .into_iter()
            .collect();
        let (status, stderr) = refused_with(&[&["--data-dir", data][..], &args].concat(), &env);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("--worker-threads <N>"), "{stderr}");
    }
}
