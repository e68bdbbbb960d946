//! The operator binary as a shell user meets it: output into a pipe that closes early, and
//! `run` without a Kubernetes cluster.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rcluster-operator");
const DEADLINE: Duration = Duration::from_secs(60);

fn wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("rcluster-operator did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `rcluster-operator crd | head -1`: the CRD is larger than a pipe's buffer, so the operator is
/// still writing when the reader leaves; it stops quietly with success, no panic.
#[test]
fn crd_into_a_pipe_that_closes_early() {
    let mut child = Command::new(BIN)
        .arg("crd")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 128];
    out.read_exact(&mut first).unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(first.contains("apiVersion:"), "{first}");
    drop(out);
    let status = wait(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "no panic message: {err}");
}

/// Without a cluster to talk to, `run` says why once, in plain text when stderr is not a terminal.
#[test]
fn run_without_kubernetes_says_why_once_without_colours() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.matches("cannot configure the Kubernetes client")
            .count(),
        1,
        "{err}"
    );
    assert!(!err.contains('\x1b'), "no colour codes in a pipe: {err:?}");
}
