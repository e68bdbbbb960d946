//! What the engine's core mutex guards, and the guard that proves no file I/O runs under it.
//!
//! The mutex holds the replication core, the state machine and the in-memory ends of the log (the
//! WAL writer's queue, the shipping cache, the watchers' event buffer): applying an entry and
//! queueing it must happen in one order. Everything that touches files (the role record, log
//! truncation, snapshots) runs without it; `assert_unlocked` checks that in debug builds.

use crate::log::Entry;
use crate::replication::Node;
use crate::state::{KvEvent, State};
use crate::wal::Wal;
use bytes::Bytes;
use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

/// Record changes kept for watchers that fall behind briefly.
pub(super) const EVENT_BUFFER: usize = 65_536;
/// Encoded entries kept in memory for shipping to replicas without reading the WAL files (their
/// bytes and the cache's own per-entry cost, see [`cached_cost`]).
const CACHE_BYTES: usize = 64 << 20;

/// What one cached entry holds in memory: its payload (trimmed to its length when cached) and its
/// slot in the queue. Counting only payload lengths let the cache take twice its bound, since an
/// encoder's buffer grows by doubling.
fn cached_cost(payload: &[u8]) -> usize {
    payload.len() + size_of::<Cached>()
}

/// An encoded entry kept for shipping.
#[derive(Clone)]
pub struct Cached {
    pub index: u64,
    pub term: u64,
    pub ts_ms: u64,
    pub payload: Bytes,
}

pub struct Core {
    /// The replication core: role, term, members, the log's shape, the known commit.
    pub node: Node,
    pub state: State,
    pub primary_last_index: u64,
    pub last_contact: Option<Instant>,
    pub discarded_total: u64,
    pub(super) wal: Arc<Wal>,
    pub(super) last_ts: u64,
    cache: VecDeque<Cached>,
    cache_bytes: usize,
    events: VecDeque<KvEvent>,
    /// Highest index of an event that fell out of `events`; watchers behind it must resync.
    events_evicted_upto: u64,
    pub(super) entries_since_snapshot: u64,
    pub(super) bytes_since_snapshot: u64,
}

impl Core {
    pub(super) fn new(node: Node, state: State, wal: Wal, replayed: u64) -> Core {
        let last = node.last_index;
        Core {
            node,
            state,
            primary_last_index: 0,
            last_contact: None,
            discarded_total: 0,
            wal: Arc::new(wal),
            last_ts: 0,
            cache: VecDeque::new(),
            cache_bytes: 0,
            events: VecDeque::new(),
            events_evicted_upto: last,
            entries_since_snapshot: replayed,
            bytes_since_snapshot: 0,
        }
    }

    /// The record changes recovery replayed, so a watch can resume on a restarted node from any
    /// position since its snapshot; changes up to `from` are not among them.
    pub(super) fn with_events(mut self, events: VecDeque<KvEvent>, from: u64) -> Core {
        self.events = events;
        self.events_evicted_upto = from;
        self
    }

    /// The oldest position a watch can resume from here: changes up to it are not kept.
    pub fn history_start(&self) -> u64 {
        self.events_evicted_upto
    }

    /// The applied index and the term of its entry: the point a read of the state stands at.
    pub fn applied_entry(&self) -> (u64, Option<u64>) {
        let index = self.state.applied_index;
        (index, self.term_at(index))
    }

    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.node.term_at(index)
    }

    pub fn leads(&self) -> bool {
        self.node.leads()
    }

    pub fn last_index(&self) -> u64 {
        self.node.last_index
    }

    /// Queues an applied entry to the WAL writer and keeps it for shipping and watchers: `e`,
    /// received already encoded as `payload` (a replica's append).
    pub(super) fn append(&mut self, e: &Entry, mut payload: Vec<u8>, events: Vec<KvEvent>) {
        self.wal.append(e.index, &payload);
        let len = payload.len();
        let kept = self.ships().then(|| {
            // Exactly its length: a `Bytes` made from a full `Vec` needs no shared header.
            payload.shrink_to_fit();
            Bytes::from(payload)
        });
        self.appended(e, len, kept, events);
    }

    /// As `append`, for an entry made here: encoded straight into the log's buffer, and copied
    /// for shipping only when there are members to ship to.
    pub(super) fn append_new(&mut self, e: &Entry, events: Vec<KvEvent>) {
        let ships = self.ships();
        let (mut len, mut kept) = (0, None);
        self.wal.append_entry(e, |p| {
            len = p.len();
            kept = ships.then(|| Bytes::from(p.to_vec()));
        });
        self.appended(e, len, kept, events);
    }

    /// Whether appended entries are kept for shipping: a node alone would hold 64 MB for nothing.
    fn ships(&self) -> bool {
        self.node.members.len() > 1
    }

    /// What follows an append: the log's shape, the shipping cache, the events.
    fn appended(&mut self, e: &Entry, len: usize, kept: Option<Bytes>, events: Vec<KvEvent>) {
        self.node.appended(e.index, e.term);
        self.entries_since_snapshot += 1;
        self.bytes_since_snapshot += len as u64;
        match kept {
            // Cleared, not just left, so the cache stays one run of consecutive entries if
            // members come later.
            None => {
                self.cache.clear();
                self.cache_bytes = 0;
            }
            Some(payload) => {
                self.cache_bytes += cached_cost(&payload);
                self.cache.push_back(Cached {
                    index: e.index,
                    term: e.term,
                    ts_ms: e.ts_ms,
                    payload,
                });
            }
        }
        while self.cache_bytes > CACHE_BYTES
            && let Some(old) = self.cache.pop_front()
        {
            self.cache_bytes -= cached_cost(&old.payload);
        }
        for ev in events {
            if self.events.len() == EVENT_BUFFER
                && let Some(old) = self.events.pop_front()
            {
                self.events_evicted_upto = old.index;
            }
            self.events.push_back(ev);
        }
    }

    /// The log was cut back to before `from` (a divergent suffix discarded): what the caches hold
    /// of the entries before it is still the log's, and a watch resuming there must not be told
    /// its history is gone. Only entries never known to be committed are cut, and watchers were
    /// never sent those.
    pub(super) fn truncate_caches(&mut self, from: u64, old_last: u64) {
        while self.cache.back().is_some_and(|c| c.index >= from) {
            if let Some(c) = self.cache.pop_back() {
                self.cache_bytes -= cached_cost(&c.payload);
            }
        }
        while self.events.back().is_some_and(|e| e.index >= from) {
            self.events.pop_back();
        }
        // Changes after `from - 1` come again with the entries that replace the cut ones.
        self.events_evicted_upto = self.events_evicted_upto.min(from.saturating_sub(1));
        let cut = (old_last + 1).saturating_sub(from);
        self.entries_since_snapshot = self.entries_since_snapshot.saturating_sub(cut);
    }

    /// The log was replaced below the caches (a snapshot installed): forget them.
    pub(super) fn reset_caches(&mut self, old_last: u64) {
        self.cache.clear();
        self.cache_bytes = 0;
        self.events.clear();
        // Every watcher is behind this point and must resync.
        self.events_evicted_upto = old_last.max(self.node.last_index) + 1;
        self.entries_since_snapshot = 0;
    }

    /// Cached entries from `from`, or `None` when `from` is older than the cache.
    pub fn cached_from(&self, from: u64, max: usize, max_bytes: usize) -> Option<Vec<Cached>> {
        let first = self
            .cache
            .front()
            .map_or(self.node.last_index + 1, |c| c.index);
        if from < first && from <= self.node.last_index {
            return None;
        }
        let skip = from.saturating_sub(first) as usize;
        let mut bytes = 0;
        Some(
            self.cache
                .iter()
                .skip(skip)
                .take(max)
                .take_while(|c| {
                    bytes += c.payload.len();
                    bytes <= max_bytes || bytes == c.payload.len()
                })
                .cloned()
                .collect(),
        )
    }

    pub fn entry_ts(&self, index: u64) -> Option<u64> {
        let first = self.cache.front()?.index;
        self.cache
            .get(index.checked_sub(first)? as usize)
            .map(|c| c.ts_ms)
    }

    /// Buffered record changes after `after` up to `upto`, or `None` when some were evicted.
    pub(super) fn events_between(
        &self,
        after: u64,
        upto: u64,
        prefixes: &[String],
    ) -> Option<Vec<KvEvent>> {
        if after < self.events_evicted_upto {
            return None;
        }
        let start = self.events.partition_point(|e| e.index <= after);
        Some(
            self.events
                .range(start..)
                .take_while(|e| e.index <= upto)
                .filter(|e| prefixes.is_empty() || prefixes.iter().any(|p| e.key().starts_with(p)))
                .cloned()
                .collect(),
        )
    }
}

thread_local! {
    /// Core guards alive on this thread. A std guard cannot cross an `.await` in a task that may
    /// move, so the count is exact.
    static HELD: Cell<u32> = const { Cell::new(0) };
}

/// The core lock, held: counts itself so file I/O can check it is not under it.
pub type CoreGuard<'a> = Held<'a, Core>;

/// The core lock, held for reading: requests that only look (a get, a read's checks, routing)
/// run side by side on several connection threads instead of queueing for the lock. Under a
/// mutex two threads serving gets collided on it often enough to sleep on it (futex waits
/// from `Engine::core` under `strace -k`): the lookup under it misses the cache.
pub type CoreView<'a> = Viewed<'a, Core>;

/// A held lock that counts itself on its thread (see `assert_unlocked`).
pub struct Held<'a, T>(RwLockWriteGuard<'a, T>, Counted);

impl<'a, T> Held<'a, T> {
    pub(super) fn lock(m: &'a RwLock<T>) -> Held<'a, T> {
        Held(m.write().unwrap(), Counted::new())
    }
}

impl<T> Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// A lock held for reading, counted as `Held` is: a writer waits for it.
pub struct Viewed<'a, T>(RwLockReadGuard<'a, T>, Counted);

impl<'a, T> Viewed<'a, T> {
    pub(super) fn read(m: &'a RwLock<T>) -> Viewed<'a, T> {
        Viewed(m.read().unwrap(), Counted::new())
    }
}

impl<T> Deref for Viewed<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// One guard of the core lock in this thread's count, for as long as it lives.
struct Counted;

impl Counted {
    fn new() -> Counted {
        HELD.with(|h| h.set(h.get() + 1));
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get() - 1));
    }
}

/// In debug builds, panics when this thread holds the core lock: `what` (an fsync, a rename, a
/// directory listing) would stall every request while it runs.
pub fn assert_unlocked(what: &str) {
    debug_assert_eq!(
        HELD.with(|h| h.get()),
        0,
        "{what} while the core lock is held"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "an fsync while the core lock is held")]
    #[cfg(debug_assertions)]
    fn file_io_under_the_core_lock_is_caught() {
        let m = RwLock::new(());
        let _held = Held::lock(&m);
        assert_unlocked("an fsync");
    }

    #[test]
    #[should_panic(expected = "a rename while the core lock is held")]
    #[cfg(debug_assertions)]
    fn file_io_under_the_core_lock_held_for_reading_is_caught() {
        let m = RwLock::new(());
        let _viewed = Viewed::read(&m);
        assert_unlocked("a rename");
    }

    #[test]
    fn file_io_after_the_lock_is_released_is_fine() {
        let m = RwLock::new(());
        drop(Held::lock(&m));
        drop(Viewed::read(&m));
        {
            let _a = Held::lock(&m);
        }
        assert_unlocked("an fsync");
    }
}
