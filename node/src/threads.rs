//! Connection threads: each runs a single-threaded tokio runtime and keeps the connections the
//! accept loop hands it, in turn, for their whole life (as an event loop of Redis keeps its
//! clients).
//!
//! Why not one multi-threaded runtime: its workers share and steal tasks, so a connection's
//! request moved between cores, and two workers serving gets queued on the core lock and slept
//! on it (futex waits under `strace -k`). With a thread per share of the connections a get costs
//! about 10% less node CPU at 32 connections on two CPUs (README "Performance", alternating
//! runs). The trade: a slow request (a large listing, a role record's fsync) delays the
//! connections of its own thread, which no other thread takes over, and a thread whose
//! connections are idle does not help the others.
//!
//! The main thread is the first connection thread and also runs the node's background work
//! (replication, the log's maintenance, the accept loop); the others are `rcluster-conn-N`.

use crate::admission::Slot;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

/// Serves an admitted connection on the thread that runs it (spawns its task there).
pub type Serve = Arc<dyn Fn(TcpStream, Slot) + Send + Sync>;

/// The connection threads to run: `--worker-threads`, or one per CPU this process may use (its
/// affinity and CPU quota, as the standard library counts them) when unset or 0.
pub fn count(arg: Option<u16>) -> usize {
    match arg.filter(|n| *n > 0) {
        Some(n) => n.into(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// A connection thread's runtime. When it runs out of work it wakes the log writer that its
/// requests left asleep, or hands it to a thread still running (see `wal::wake_deferred`).
pub fn runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(crate::wal::wake_deferred)
        .on_thread_unpark(crate::wal::unparked)
        .build()
}

/// The connection threads beyond the main one, and whose turn it is.
pub struct Lanes {
    /// One per thread beyond the main one; the main thread serves turn 0 itself.
    threads: Vec<mpsc::UnboundedSender<(std::net::TcpStream, Slot)>>,
    next: usize,
    serve: Serve,
}

impl Lanes {
    /// Starts `n - 1` connection threads (the caller's thread is the first), each serving what it
    /// is handed with `serve`, as the caller's does. They run until the `Lanes` is dropped.
    pub fn start(n: usize, serve: Serve) -> std::io::Result<Lanes> {
        let mut threads = Vec::with_capacity(n.saturating_sub(1));
        for i in 1..n {
            let (tx, mut rx) = mpsc::unbounded_channel::<(std::net::TcpStream, Slot)>();
            let runtime = runtime()?;
            let serve = serve.clone();
            std::thread::Builder::new()
                .name(format!("rcluster-conn-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        crate::ack_waiters::relay_here();
                        while let Some((stream, slot)) = rx.recv().await {
                            // Registers the socket with this thread's runtime.
                            match TcpStream::from_std(stream) {
                                Ok(s) => serve(s, slot),
                                Err(e) => tracing::warn!(error = %e, "a connection was dropped"),
                            }
                        }
                    })
                })?;
            threads.push(tx);
        }
        Ok(Lanes {
            threads,
            next: 0,
            serve,
        })
    }

    /// Serves an admitted connection on the thread whose turn it is: the caller's own (called on
    /// it), or another, which it is handed to. A thread that is gone leaves it to the caller's.
    pub fn serve(&mut self, stream: TcpStream, slot: Slot) {
        let turn = self.next;
        self.next = (self.next + 1) % (self.threads.len() + 1);
        if turn == 0 {
            (self.serve)(stream, slot);
            return;
        }
        // Taken off this runtime and registered with the other thread's.
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "a connection was dropped");
                return;
            }
        };
        if let Err(mpsc::error::SendError((s, slot))) =
            self.threads[turn - 1].send((std_stream, slot))
        {
            match TcpStream::from_std(s) {
                Ok(s) => (self.serve)(s, slot),
                Err(e) => tracing::warn!(error = %e, "a connection was dropped"),
            }
        }
    }
}
