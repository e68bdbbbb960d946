//! The threads that run the workers (`--threads`). Each is one OS thread with its own
//! current-thread runtime that hosts some of the workers and their connections: a request, the
//! connection task that sends it and the wake-ups between them stay on one thread (no work
//! stealing, no cross-thread wake-up per request), which was most of what a request cost the
//! generator on the CLI's multi-thread runtime. The run's clock, its progress line and Ctrl-C
//! stay on the caller's runtime; the workers see its stop flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rcluster_client::random;
use tokio::sync::oneshot;

use super::api::Mix;
use super::record::{SharedRecorder, lock};
use super::workload::{Worker, error_label};

/// How long workers may take to notice a stop before their thread gives up on them.
const GRACE: Duration = Duration::from_secs(1);
/// How often a thread looks whether its workers are done or the run was stopped.
const POLL: Duration = Duration::from_millis(20);

/// Open loop: when the worker's next request is due.
pub struct Pacing {
    pub next: Instant,
    pub period: Duration,
}

/// One worker's run.
pub struct Job {
    pub mix: Mix,
    pub worker: Worker,
    pub node: usize,
    pub recorder: SharedRecorder,
    pub measure_start: Instant,
    pub end: Instant,
    pub requests: Option<u64>,
    pub issued: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
    pub pacing: Option<Pacing>,
    /// Workers still running, over every thread.
    pub running: Arc<AtomicUsize>,
}

/// Counts a worker out when its job ends, however it ends.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Job {
    async fn run(mut self) -> Worker {
        let _running = Running(self.running.clone());
        loop {
            let due = match &mut self.pacing {
                Some(p) => {
                    let due = p.next;
                    p.next += p.period;
                    tokio::time::sleep_until(due.into()).await;
                    Some(due)
                }
                None => None,
            };
            let now = Instant::now();
            if now >= self.end || self.stop.load(Ordering::Relaxed) {
                break;
            }
            let measured = now >= self.measure_start;
            let over = |n: u64| self.issued.fetch_add(1, Ordering::Relaxed) >= n;
            if measured && self.requests.is_some_and(over) {
                break;
            }
            let api = self.mix.pick(random::unit());
            let (took, result) = self.worker.step(api, due).await;
            if !measured {
                continue;
            }
            // Uncontended: the ticker takes this lock once a second.
            let mut r = lock(&self.recorder);
            let s = r.stats.entry((self.node, api)).or_default();
            match result {
                Ok(()) => s.record_ok(took.as_micros() as u64),
                Err(e) => s.record_error(&error_label(&e)),
            }
            r.last_done = Some(Instant::now());
        }
        self.worker
    }
}

/// A thread running some of the workers.
pub struct Host {
    thread: std::thread::JoinHandle<usize>,
    finished: oneshot::Receiver<()>,
    clean: oneshot::Sender<Instant>,
}

impl Host {
    /// Starts a thread that runs `jobs` until each ends (its time is up, `--requests` were
    /// issued, or `stop` is set).
    pub fn start(jobs: Vec<Job>, stop: Arc<AtomicBool>) -> std::io::Result<Host> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (finished_tx, finished) = oneshot::channel();
        let (clean, clean_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("bench-workers".into())
            .spawn(move || rt.block_on(host(jobs, stop, finished_tx, clean_rx)))?;
        Ok(Host {
            thread,
            finished,
            clean,
        })
    }

    /// Waits until the thread's workers ended (at most [`GRACE`] after the stop flag is set).
    pub async fn finished(&mut self) {
        let _ = (&mut self.finished).await;
    }

    /// Lets the thread remove what its workers created, within `limit`, and waits for it;
    /// returns how many things were left.
    pub async fn clean_up(self, limit: Instant) -> usize {
        let _ = self.clean.send(limit);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join().unwrap_or(0))
            .await
            .unwrap_or(0)
    }
}

/// The thread's life: run the jobs, say when they are done, then clean up when told.
async fn host(
    jobs: Vec<Job>,
    stop: Arc<AtomicBool>,
    finished: oneshot::Sender<()>,
    clean: oneshot::Receiver<Instant>,
) -> usize {
    let tasks: Vec<_> = jobs.into_iter().map(|j| tokio::spawn(j.run())).collect();
    let mut grace: Option<Instant> = None;
    while !tasks.iter().all(|t| t.is_finished()) {
        if grace.is_none() && stop.load(Ordering::Relaxed) {
            grace = Some(Instant::now() + GRACE);
        }
        if grace.is_some_and(|g| Instant::now() >= g) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // Workers stop at their next request; one stuck in a request is given up (and what it
    // created is left).
    let mut workers = Vec::new();
    for t in tasks {
        if t.is_finished() {
            if let Ok(w) = t.await {
                workers.push(w);
            }
        } else {
            t.abort();
        }
    }
    let _ = finished.send(());
    let Ok(limit) = clean.await else {
        return 0;
    };
    let cleaning: Vec<_> = workers
        .into_iter()
        .map(|mut w| tokio::spawn(async move { w.clean_up(limit).await }))
        .collect();
    let mut left = 0;
    for t in cleaning {
        left += t.await.unwrap_or(0);
    }
    left
}
