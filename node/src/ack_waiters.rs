//! Writes waiting for their log position to reach an ack level, woken one by one when it does.
//!
//! The waiters used to watch the engine's change channels, so every fsync and every replica
//! answer woke every waiting write, and each took two locks to find its entry not yet
//! acknowledged: at 128 connections, some 2,500 changes a second (fsyncs and answers, measured)
//! times up to 128 waiters. Here a waiter sleeps until one task that watches the channels finds
//! its position reached (or asks every waiter to look again, when the role or the term changed).
//! Callgrind, the primary's share of a quorum write at 32 and 128 connections: 10-11 % fewer
//! instructions (`scripts/bench-callgrind.py --connections`).
//!
//! A waiter's deadline (the ack timeout) is kept here too, and the same task wakes the waiters
//! whose deadline passed: a tokio timer per write, registered and dropped around every wait,
//! with a second registration after each release, cost about 1,200 of a durable put's 30,000
//! instructions (callgrind), and a deadline needs no precision finer than the task's wake-up.

use crate::replication::AckLevel;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// One queue per ack level, ordered by log position (then by arrival, to tell equal ones apart).
#[derive(Default)]
pub struct AckWaiters {
    inner: Mutex<Inner>,
    /// Told when a wait's deadline comes before the one the releasing task sleeps until.
    rearm: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    queues: [Queue; AckLevel::ALL.len()],
    /// No later than the earliest deadline of a waiter (`None`: nobody waits with one the
    /// releasing task knows of). It may be earlier, after that waiter was released: the task
    /// then wakes once for nothing and looks again.
    armed: Option<Instant>,
}

/// Waits of one level, sorted by key (position, arrival). A position is taken in log order and
/// waited on at once, so nearly every new wait goes at the back and every release takes from the
/// front: a sorted deque does both without the tree's node walks and allocations (a B-tree's
/// insert and remove cost some 300 instructions of every durable put).
#[derive(Default)]
struct Queue(VecDeque<((u64, u64), Waiting)>);

impl Queue {
    fn insert(&mut self, key: (u64, u64), w: Waiting) {
        let at = match self.0.back() {
            Some((last, _)) if *last > key => self.0.partition_point(|(k, _)| *k < key),
            _ => self.0.len(),
        };
        self.0.insert(at, (key, w));
    }

    fn remove(&mut self, key: &(u64, u64)) {
        if let Ok(i) = self.0.binary_search_by(|(k, _)| k.cmp(key)) {
            self.0.remove(i);
        }
    }

    /// Takes the waits of positions up to `upto`, into `done`.
    fn take_upto(&mut self, upto: u64, done: &mut Vec<Waiting>) {
        while self.0.front().is_some_and(|((index, _), _)| *index <= upto) {
            done.extend(self.0.pop_front().map(|(_, w)| w));
        }
    }

    /// Takes the waits whose deadline is at or before `now`, into `done`; the earliest deadline
    /// of those left.
    fn take_due(&mut self, now: Instant, done: &mut Vec<Waiting>) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for (key, w) in std::mem::take(&mut self.0) {
            if w.deadline <= now {
                done.push(w);
            } else {
                earliest = Some(earliest.map_or(w.deadline, |e| e.min(w.deadline)));
                self.0.push_back((key, w));
            }
        }
        earliest
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

struct Waiting {
    tx: oneshot::Sender<()>,
    deadline: Instant,
    /// The waiter's thread's relay, when it has one.
    relay: Option<Arc<Relay>>,
}

thread_local! {
    /// This thread's relay: set on the node's connection threads (see [`relay_here`]).
    static RELAY: RefCell<Option<Arc<Relay>>> = const { RefCell::new(None) };
}

/// Releases bound for the waiters of one connection thread, handed over by the releasing task
/// (which runs on another thread) and sent by a task on theirs.
///
/// Waking a task of another thread's runtime writes that runtime's eventfd, a system call per
/// wake: the releasing task, waking each waiting write of another thread itself, made about 0.55
/// such writes per durable put at 32 connections (`strace -f -y -e trace=write`: 4,623 by the
/// main thread for 8,466 puts). Handed over, a batch of releases costs one wake per thread;
/// the relay's own sends wake tasks of its own thread, which is no system call.
struct Relay {
    queue: std::sync::Mutex<Vec<oneshot::Sender<()>>>,
    ready: Notify,
    /// Times the relay was woken, for the tests.
    #[cfg(test)]
    wakes: std::sync::atomic::AtomicUsize,
}

/// Makes this thread's waits released through a relay task of its own, spawned on the current
/// runtime (a connection thread's, at its start). Waits of threads without one are released
/// directly by the releasing task.
pub fn relay_here() {
    let relay = Arc::new(Relay {
        queue: std::sync::Mutex::new(Vec::new()),
        ready: Notify::new(),
        #[cfg(test)]
        wakes: std::sync::atomic::AtomicUsize::new(0),
    });
    RELAY.set(Some(relay.clone()));
    tokio::spawn(async move {
        loop {
            relay.ready.notified().await;
            let due = std::mem::take(&mut *relay.queue.lock().unwrap());
            for tx in due {
                let _ = tx.send(());
            }
        }
    });
}

/// Releases `done`: each by its thread's relay, or directly when it has none or is this thread's.
fn deliver(done: Vec<Waiting>) {
    let here = RELAY.with_borrow(|r| r.as_ref().map(Arc::as_ptr));
    for w in done {
        match w.relay {
            Some(relay) if Some(Arc::as_ptr(&relay)) != here => {
                let mut queue = relay.queue.lock().unwrap();
                queue.push(w.tx);
                // The first of a batch wakes the relay, which takes everything queued by then.
                let first = queue.len() == 1;
                drop(queue);
                if first {
                    #[cfg(test)]
                    relay
                        .wakes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    relay.ready.notify_one();
                }
            }
            _ => {
                let _ = w.tx.send(());
            }
        }
    }
}

fn slot(level: AckLevel) -> usize {
    AckLevel::ALL
        .iter()
        .position(|l| *l == level)
        .expect("every level is in ALL")
}

impl AckWaiters {
    /// Registers a wait for `index` to reach `level`, released at the latest soon after
    /// `deadline` (the waiter then finds it passed). Register before checking the position: a
    /// release that happens between the check and the wait is then not lost.
    pub fn wait(&self, level: AckLevel, index: u64, deadline: Instant) -> AckWaiter<'_> {
        let (tx, rx) = oneshot::channel();
        let relay = RELAY.with_borrow(Clone::clone);
        let mut inner = self.inner.lock().unwrap();
        let key = (index, inner.next_id);
        inner.next_id += 1;
        inner.queues[slot(level)].insert(
            key,
            Waiting {
                tx,
                deadline,
                relay,
            },
        );
        // Deadlines are the ack timeout after the wait began, so a new one is rarely the
        // earliest: only the first wait after none has one wakes the task.
        let earlier = inner.armed.is_none_or(|at| deadline < at);
        if earlier {
            inner.armed = Some(deadline);
        }
        drop(inner);
        if earlier {
            self.rearm.notify_one();
        }
        AckWaiter {
            set: self,
            level: slot(level),
            key,
            rx,
            released: false,
        }
    }

    /// The levels that have someone waiting.
    pub fn levels(&self) -> Vec<AckLevel> {
        let inner = self.inner.lock().unwrap();
        AckLevel::ALL
            .into_iter()
            .filter(|l| !inner.queues[slot(*l)].is_empty())
            .collect()
    }

    /// Wakes every waiter of `level` at or below `upto`.
    pub fn release(&self, level: AckLevel, upto: u64) {
        let mut done = Vec::new();
        {
            let mut inner = self.inner.lock().unwrap();
            inner.queues[slot(level)].take_upto(upto, &mut done);
        }
        deliver(done);
    }

    /// Told when a wait's deadline comes before the one the releasing task last got from
    /// [`expire`](Self::expire).
    pub fn rearm(&self) -> Arc<Notify> {
        self.rearm.clone()
    }

    /// Wakes every waiter whose deadline is at or before `now` (each finds its time up), once
    /// the earliest known deadline has come; returns the next one.
    pub fn expire(&self, now: Instant) -> Option<Instant> {
        let mut done = Vec::new();
        let mut inner = self.inner.lock().unwrap();
        if inner.armed.is_none_or(|at| at > now) {
            return inner.armed;
        }
        let mut earliest: Option<Instant> = None;
        for queue in &mut inner.queues {
            if let Some(next) = queue.take_due(now, &mut done) {
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
        }
        inner.armed = earliest;
        drop(inner);
        deliver(done);
        earliest
    }

    /// Wakes every waiter, to look again at what else it waits on (the role, the term).
    pub fn release_all(&self) {
        for level in AckLevel::ALL {
            self.release(level, u64::MAX);
        }
    }

    #[cfg(test)]
    fn armed(&self) -> Option<Instant> {
        self.inner.lock().unwrap().armed
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap()
            .queues
            .iter()
            .map(|q| q.len())
            .sum()
    }
}

/// Resolves when released; dropping it (a timeout, a client that left) takes it off its queue,
/// so waits that never complete do not pile up.
pub struct AckWaiter<'a> {
    set: &'a AckWaiters,
    level: usize,
    key: (u64, u64),
    rx: oneshot::Receiver<()>,
    /// Released: its entry is already off the queue, and dropping it need not lock.
    released: bool,
}

impl Future for AckWaiter<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A sender dropped without sending only happens with the set itself: wake either way.
        let ready = Pin::new(&mut self.rx).poll(cx).is_ready();
        if ready {
            self.released = true;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for AckWaiter<'_> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.set.inner.lock().unwrap().queues[self.level].remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn later() -> Instant {
        Instant::now() + std::time::Duration::from_secs(3600)
    }

    fn ready(w: &mut AckWaiter<'_>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(w).poll(&mut cx).is_ready()
    }

    #[test]
    fn release_wakes_only_positions_reached_at_that_level() {
        let set = AckWaiters::default();
        let mut q5 = set.wait(AckLevel::Quorum, 5, later());
        let mut q6 = set.wait(AckLevel::Quorum, 6, later());
        let mut a5 = set.wait(AckLevel::All, 5, later());
        assert_eq!(set.levels(), vec![AckLevel::Quorum, AckLevel::All]);
        set.release(AckLevel::Quorum, 5);
        assert!(ready(&mut q5));
        assert!(!ready(&mut q6));
        assert!(!ready(&mut a5));
        assert_eq!(set.len(), 2);
        set.release(AckLevel::Quorum, u64::MAX);
        assert!(ready(&mut q6));
        set.release_all();
        assert!(ready(&mut a5));
        assert_eq!(set.len(), 0);
        assert!(set.levels().is_empty());
    }

    #[test]
    fn equal_positions_are_all_woken_and_a_dropped_wait_leaves_its_queue() {
        let set = AckWaiters::default();
        let mut a = set.wait(AckLevel::Async, 9, later());
        let mut b = set.wait(AckLevel::Async, 9, later());
        let gone = set.wait(AckLevel::Async, 10, later());
        drop(gone);
        assert_eq!(set.len(), 2);
        set.release(AckLevel::Async, 9);
        assert!(ready(&mut a) && ready(&mut b));
        drop((a, b));
        assert_eq!(set.len(), 0);
    }

    /// Waits registered out of position order (threads take positions in order but may wait in
    /// another) are still released by position, and a dropped one in the middle leaves.
    #[test]
    fn waits_out_of_order_are_released_by_position() {
        let set = AckWaiters::default();
        let mut w8 = set.wait(AckLevel::One, 8, later());
        let mut w6 = set.wait(AckLevel::One, 6, later());
        let w7 = set.wait(AckLevel::One, 7, later());
        let mut w5 = set.wait(AckLevel::One, 5, later());
        drop(w7);
        assert_eq!(set.len(), 3);
        set.release(AckLevel::One, 6);
        assert!(ready(&mut w5) && ready(&mut w6));
        assert!(!ready(&mut w8));
        set.release(AckLevel::One, 7);
        assert!(!ready(&mut w8), "nothing at 7 is left to release");
        set.release(AckLevel::One, 8);
        assert!(ready(&mut w8));
        assert_eq!(set.len(), 0);
    }

    /// A connection thread's waiters are released through its relay: a batch released from
    /// another thread wakes the relay once, and every waiter of the batch is released.
    #[test]
    fn a_batch_for_a_thread_with_a_relay_wakes_its_relay_once() {
        let set = Arc::new(AckWaiters::default());
        let (registered, waiting) = std::sync::mpsc::channel();
        let thread = {
            let set = set.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    relay_here();
                    let relay = RELAY.with_borrow(Clone::clone).expect("a relay was set");
                    let waits: Vec<_> = (1..=10)
                        .map(|i| set.wait(AckLevel::Quorum, i, later()))
                        .collect();
                    registered.send(()).unwrap();
                    let all = futures_util::future::join_all(waits);
                    tokio::time::timeout(std::time::Duration::from_secs(20), all)
                        .await
                        .expect("every waiter released within 20 s");
                    relay.wakes.load(std::sync::atomic::Ordering::Relaxed)
                })
            })
        };
        waiting.recv().unwrap();
        set.release(AckLevel::Quorum, 10);
        assert_eq!(thread.join().unwrap(), 1, "one wake of the relay per batch");
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn waiters_past_their_deadline_are_woken_and_the_next_deadline_is_kept() {
        let set = AckWaiters::default();
        let t0 = Instant::now();
        let at = |ms| t0 + std::time::Duration::from_millis(ms);
        let mut first = set.wait(AckLevel::Quorum, 7, at(100));
        assert_eq!(set.armed(), Some(at(100)));
        let mut third = set.wait(AckLevel::Quorum, 3, at(300));
        let mut other = set.wait(AckLevel::All, 9, at(200));
        // A later deadline leaves the earliest in place; an earlier one moves it.
        assert_eq!(set.armed(), Some(at(100)));
        assert_eq!(set.expire(at(99)), Some(at(100)), "nothing is due yet");
        assert!(!ready(&mut first));
        assert_eq!(set.expire(at(200)), Some(at(300)));
        assert!(ready(&mut first) && ready(&mut other));
        assert!(!ready(&mut third));
        assert_eq!(set.len(), 1);
        // Released on time, it leaves no deadline behind once the task looks again.
        set.release(AckLevel::Quorum, 3);
        assert!(ready(&mut third));
        assert_eq!(set.expire(at(300)), None);
        let mut again = set.wait(AckLevel::Async, 1, at(400));
        assert_eq!(set.armed(), Some(at(400)));
        assert_eq!(set.expire(at(500)), None);
        assert!(ready(&mut again));
    }
}
