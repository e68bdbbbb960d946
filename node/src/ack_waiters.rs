//! Writes waiting for their log position to reach an ack level, woken one by one when it does.
//!
//! The waiters used to watch the engine's change channels, so every fsync and every replica
//! answer woke every waiting write, and each took two locks to find its entry not yet
//! acknowledged: at 128 connections, some 2,500 changes a second (fsyncs and answers, measured)
//! times up to 128 waiters. Here a waiter sleeps until one task that watches the channels finds
//! its position reached (or asks every waiter to look again, when the role or the term changed).
//! Callgrind, the primary's share of a quorum write at 32 and 128 connections: 10-11 % fewer
//! instructions (`scripts/bench-callgrind.py --connections`).

use crate::replication::AckLevel;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// One queue per ack level, ordered by log position (then by arrival, to tell equal ones apart).
#[derive(Default)]
pub struct AckWaiters {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    queues: [BTreeMap<(u64, u64), oneshot::Sender<()>>; AckLevel::ALL.len()],
}

fn slot(level: AckLevel) -> usize {
    AckLevel::ALL
        .iter()
        .position(|l| *l == level)
        .expect("every level is in ALL")
}

impl AckWaiters {
    /// Registers a wait for `index` to reach `level`. Register before checking the position:
    /// a release that happens between the check and the wait is then not lost.
    pub fn wait(&self, level: AckLevel, index: u64) -> AckWaiter<'_> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap();
        let key = (index, inner.next_id);
        inner.next_id += 1;
        inner.queues[slot(level)].insert(key, tx);
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
                done.push(first.remove());
            }
        }
        for tx in done {
            let _ = tx.send(());
        }
    }

    /// Wakes every waiter, to look again at what else it waits on (the role, the term).
    pub fn release_all(&self) {
        for level in AckLevel::ALL {
            self.release(level, u64::MAX);
        }
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

    fn ready(w: &mut AckWaiter<'_>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(w).poll(&mut cx).is_ready()
    }

    #[test]
    fn release_wakes_only_positions_reached_at_that_level() {
        let set = AckWaiters::default();
        let mut q5 = set.wait(AckLevel::Quorum, 5);
        let mut q6 = set.wait(AckLevel::Quorum, 6);
        let mut a5 = set.wait(AckLevel::All, 5);
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
        let mut a = set.wait(AckLevel::Async, 9);
        let mut b = set.wait(AckLevel::Async, 9);
        let gone = set.wait(AckLevel::Async, 10);
        drop(gone);
        assert_eq!(set.len(), 2);
        set.release(AckLevel::Async, 9);
        assert!(ready(&mut a) && ready(&mut b));
        drop((a, b));
        assert_eq!(set.len(), 0);
    }
}
