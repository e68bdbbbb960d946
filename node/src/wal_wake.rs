//! The log writer's wake-ups on a busy node (see the parent module).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// Group commit on a busy node. A writer woken by the first append of a burst takes the few
// entries queued by then: about five per fsync at 32 and at 128 connections where an fsync takes
// ~100 µs (this project's VMs), and each fsync costs CPU (a VM exit on virtio, the writer's
// wake-ups). Redis fsyncs once per turn of its event loop, after every request it read (32
// entries at 32 clients). Here, while the writer is busy (a batch within [`BUSY_FOR`]), an append
// on a connection thread leaves it asleep, and the thread wakes it as it runs out of work
// (`wake_deferred`, on tokio's `on_thread_park`): the batch then holds what the requests it ran
// appended. [`DEFER_UP_TO`] queued entries wake the writer at once, and it looks on its own every
// [`POLL`], so no entry waits long on a thread that stays busy; an idle node's writer is woken by
// the append as before.

/// Entries a waiting writer may be left to gather before an append wakes it anyway.
pub(super) const DEFER_UP_TO: u64 = 64;
/// After a batch, how long the writer counts as busy: it then waits at most [`POLL`] at a time,
/// and appends may leave it asleep. Unit tests get a window no scheduling delay outlasts, as
/// they check what happens inside it.
pub(super) const BUSY_FOR: Duration = Duration::from_millis(if cfg!(test) { 60_000 } else { 100 });
/// The longest a busy writer sleeps with entries waiting that nobody woke it for.
pub(super) const POLL: Duration = Duration::from_millis(1);

thread_local! {
    /// Whether this thread calls `wake_deferred` before it parks (the node's connection threads).
    static DEFERS: Cell<bool> = const { Cell::new(false) };
    /// The log whose waiting writer this thread left asleep.
    static DEFERRED: RefCell<Option<Arc<dyn Sleeper>>> = const { RefCell::new(None) };
    /// Whether this thread counts in [`RUNNING`] (it woke from a park and has not parked since).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

// Several connection threads append to one log, and each runs out of work at its own moment.
// Were each to wake the writer as it parks, the first would take a batch of its own appends only,
// and the next batch the others': at 32 connections on two threads, 6.5–6.9 entries per fsync
// against 9.0 when one multi-threaded runtime ran them (alternating runs). So a thread that parks
// while another still runs hands the writer it left asleep to the last one running, which wakes
// it as it parks in turn. [`POLL`] still bounds the wait when that one stays busy.

/// Threads that defer, woke from a park, and have not parked since.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// The writers left asleep by threads that parked while another ran.
static HANDED: Mutex<Vec<Arc<dyn Sleeper>>> = Mutex::new(Vec::new());

/// A log writer that may be left asleep.
pub(super) trait Sleeper: Send + Sync {
    /// Wakes the writer if it waits.
    fn wake_if_waiting(&self);
}

/// Wakes the writer this thread left asleep, or hands it to a thread still running: called as a
/// connection thread runs out of work (tokio's `on_thread_park`), so the writer takes everything
/// the requests of every thread appended, in one write and one fsync.
pub fn wake_deferred() {
    DEFERS.set(true);
    let mine = DEFERRED.with(|d| d.borrow_mut().take());
    if !COUNTED.replace(false) {
        // Not counted as running (its first park, or a thread that never reports waking up):
        // nobody would wake what it hands over.
        if let Some(writer) = mine {
            writer.wake_if_waiting();
        }
        return;
    }
    if let Some(writer) = mine {
        let mut handed = HANDED.lock().unwrap();
        if !handed.iter().any(|w| same(w, &writer)) {
            handed.push(writer);
        }
    }
    // Handed over before the count drops: the thread that takes it to zero finds it.
    if RUNNING.fetch_sub(1, Ordering::AcqRel) == 1 {
        let all = std::mem::take(&mut *HANDED.lock().unwrap());
        for writer in all {
            writer.wake_if_waiting();
        }
    }
}

/// Counts this thread as running again: called as a connection thread wakes from a park
/// (tokio's `on_thread_unpark`).
pub fn unparked() {
    if DEFERS.get() && !COUNTED.replace(true) {
        RUNNING.fetch_add(1, Ordering::AcqRel);
    }
}

/// Whether `a` and `b` are the same writer.
fn same<A: ?Sized, B: ?Sized>(a: &Arc<A>, b: &Arc<B>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// Whether an append may leave the waiting writer asleep: it polls (`polls`), fewer than
/// [`DEFER_UP_TO`] entries are queued, and this thread wakes it later.
pub(super) fn may_defer(polls: bool, queued: u64) -> bool {
    polls && queued < DEFER_UP_TO && DEFERS.get()
}

/// Remembers that this thread left `writer` asleep.
pub(super) fn left_asleep(writer: &Arc<impl Sleeper + 'static>) {
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        // The same writer as before: no new reference (an atomic add per append).
        if !d.as_ref().is_some_and(|s| same(s, writer)) {
            *d = Some(writer.clone());
        }
    });
}

#[cfg(test)]
pub(super) fn holds_one() -> bool {
    DEFERRED.with(|d| d.borrow().is_some())
}

/// Writers handed to the last running thread and not woken yet.
#[cfg(test)]
pub(super) fn handed() -> usize {
    HANDED.lock().unwrap().len()
}
