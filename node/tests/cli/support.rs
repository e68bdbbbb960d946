//! Helpers: a node from the shared harness (`tests/common`) with its own temporary data
//! directory, and runs of the `rcluster` binary with a deadline.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../common/mod.rs"]
mod common;
pub use common::refusing_addr;

pub const CLI_DEADLINE: Duration = Duration::from_secs(60);

/// A standalone node on a free port (killed on drop by the harness).
pub struct Node {
    pub url: String,
    _node: common::Node,
    _dir: tempfile::TempDir,
}

impl Node {
    pub fn start() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = common::Node::start(dir.path(), &[]);
        Node {
            url: node.url.clone(),
            _node: node,
            _dir: dir,
        }
    }

    /// Runs `rcluster --endpoint URL ARGS...` to completion.
    pub fn rc(&self, args: &[&str]) -> Run {
        let mut all = vec!["--endpoint", &self.url];
        all.extend_from_slice(args);
        rcluster(&all)
    }
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

pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rcluster"));
    cmd.args(args).env_remove("RCLUSTER_ENDPOINTS");
    cmd
}

/// Runs the CLI with a deadline (killed and failed if it does not finish).
pub fn run(mut cmd: Command) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rcluster starts");
    let deadline = Instant::now() + CLI_DEADLINE;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rcluster did not finish within {CLI_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn rcluster(args: &[&str]) -> Run {
    run(command(args))
}

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
