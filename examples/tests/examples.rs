//! Each example program runs against a real playground (three `rcluster-node` processes under the
//! failover loop) while its primary is killed with SIGKILL; the program checks its application's
//! promise itself and exits 0 only when it held. The chat example also has the node serving its
//! reader's stream paused (SIGSTOP) for a while, so the stream must notice and resume elsewhere.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcluster_e2e::{DEADLINE, Options, Playground, serial, signal, wait_for};

/// A running example and the lines it printed so far.
struct Example {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Example {
    fn start(exe: &str, pg: &Playground, args: &[&str]) -> Example {
        let mut child = Command::new(exe)
            .args(args)
            .args(&pg.urls)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the example");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("example: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Example {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// The first printed line that starts with `prefix`.
    fn wait_line(&mut self, prefix: &str) -> String {
        wait_for(&format!("a line {prefix:?}"), DEADLINE * 2, || {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
                .cloned();
            if found.is_none()
                && let Ok(Some(status)) = self.child.try_wait()
            {
                panic!("the example exited ({status}) before printing {prefix:?}");
            }
            found
        })
    }

    /// Waits for the program to end; its last line must be the `ok:` of its checks.
    fn finish(mut self) -> String {
        let deadline = Instant::now() + DEADLINE * 4;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the example did not finish");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The output ends with the process; wait until all of it is read.
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let last = self
            .lines
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default();
        assert!(status.success(), "the example failed ({status})");
        assert!(last.starts_with("ok:"), "{last}");
        last
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts the example, kills the primary once it is under way, and checks it succeeds.
fn with_primary_kill(exe: &str, args: &[&str], opts: Options) -> String {
    let _turn = serial();
    let pg = Playground::start(opts);
    pg.wait_healthy();
    let mut ex = Example::start(exe, &pg, args);
    ex.wait_line("ready");
    let (_, term) = pg.kill_primary();
    pg.wait_primary_after(term);
    ex.finish()
}

#[test]
fn profiles_are_read_back_by_a_majority_through_a_primary_kill() {
    let out = with_primary_kill(
        env!("CARGO_BIN_EXE_profiles"),
        &["--rounds", "100"],
        Options::default(),
    );
    assert!(out.contains("majority"), "{out}");
}

#[test]
fn the_marketplace_never_oversells_through_a_primary_kill() {
    let out = with_primary_kill(
        env!("CARGO_BIN_EXE_marketplace"),
        &["--rounds", "100"],
        Options::default(),
    );
    assert!(out.contains("never oversold"), "{out}");
}

#[test]
fn the_timeline_merges_expires_and_reposts_over_two_shards_through_a_primary_kill() {
    let opts = Options {
        shards: 2,
        ..Options::default()
    };
    let out = with_primary_kill(
        env!("CARGO_BIN_EXE_timeline"),
        &["--rounds", "3", "--ttl-secs", "4"],
        opts,
    );
    assert!(out.contains("repost on top"), "{out}");
}

#[test]
fn pubsub_delivers_exactly_once_through_a_primary_kill() {
    let out = with_primary_kill(
        env!("CARGO_BIN_EXE_pubsub"),
        &["--rounds", "150"],
        Options::default(),
    );
    assert!(
        out.contains("exactly once") || out.contains("once in order"),
        "{out}"
    );
}

#[test]
fn chat_replies_follow_their_messages_across_a_paused_node_and_a_primary_kill() {
    let _turn = serial();
    let pg = Playground::start(Options::default());
    pg.wait_healthy();
    let mut ex = Example::start(env!("CARGO_BIN_EXE_chat"), &pg, &["--rounds", "200"]);
    let line = ex.wait_line("watching ");
    let url = line.trim_start_matches("watching ").to_string();
    let i = pg.urls.iter().position(|u| *u == url).expect("a member");
    let name = pg.names[i].clone();
    // Freeze the reader's node: its connection stays open but says nothing.
    let pid = wait_for("the node's pid", DEADLINE, || pg.pid(&name));
    assert!(signal(pid, "-STOP"));
    let paused = Instant::now();
    // The reader's stream goes silent; it must move to another node and go on.
    let moved = ex.wait_line("alice now on ");
    let silent_for = paused.elapsed();
    assert!(signal(pid, "-CONT"));
    assert!(!moved.ends_with(&url), "{moved}");
    let (_, term) = pg.kill_primary();
    pg.wait_primary_after(term);
    let out = ex.finish();
    assert!(out.contains("every reply after its message"), "{out}");
    println!("the reader moved on after {silent_for:?} of silence");
}
