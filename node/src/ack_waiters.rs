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
use std::collections::BTreeMap;
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
    queues: [BTreeMap<(u64, u64), Waiting>; AckLevel::ALL.len()],
    /// No later than the earliest deadline of a waiter (`None`: nobody waits with one the
    /// releasing task knows of). It may be earlier, after that waiter was released: the task
    /// then wakes once for nothing and looks again.
    armed: Option<Instant>,
}

struct Waiting {
    tx: oneshot::Sender<()>,
    deadline: Instant,
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
        let mut inner = self.inner.lock().unwrap();
        let key = (index, inner.next_id);
        inner.next_id += 1;
        inner.queues[slot(level)].insert(key, Waiting { tx, deadline });
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
            let queue = &mut inner.queues[slot(level)];
            while let Some(first) = queue.first_entry()
                && first.key().0 <= upto
            {
                done.push(first.remove().tx);
            }
        }
        for tx in done {
            let _ = tx.send(());
        }
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
            let due: Vec<(u64, u64)> = queue
                .iter()
                .filter(|(_, w)| w.deadline <= now)
                .map(|(k, _)| *k)
                .collect();
            for key in due {
                done.extend(queue.remove(&key).map(|w| w.tx));
            }
            for w in queue.values() {
                earliest = Some(earliest.map_or(w.deadline, |e| e.min(w.deadline)));
            }
        }
        inner.armed = earliest;
        drop(inner);
        for tx in done {
            let _ = tx.send(());
        }
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
