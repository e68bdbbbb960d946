//! A key and its payload packed into one reference-counted allocation, and the persistent set of
//! them ordered by key: how the state keeps millions of records and idempotency results.
//!
//! Why: a map entry of a `String` key and a struct holding an `Arc<str>` value costs three
//! allocations and a wide map element (324 heap bytes for a 100-byte record). Packed, an entry is
//! one allocation reached through one 8-byte pointer, so the map's leaves hold 8 bytes an entry.
//!
//! Layout: a 4-byte reference count (the only mutable part), then `key_len` varint, the key,
//! `payload_len` varint, the payload. The key comes first because map lookups compare keys many
//! times per request and read nothing else.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::num::NonZero;
use std::ops::Bound;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering as Atomic, fence};

#[path = "packed_tree.rs"]
mod tree;

const REFS: usize = std::mem::size_of::<AtomicU32>();
/// Past this many references a clone aborts, as `Arc` does: a count that wraps would free a
/// block still in use.
const MAX_REFS: u32 = i32::MAX as u32;

/// An immutable key and payload; cloning shares them.
///
/// The pointer's top 16 bits hold the key's [`fingerprint`]: a leaf of the map finds an element
/// by scanning its pointers for the fingerprint and loads only the block that matches, where a
/// binary search loaded six other blocks, each likely a cache miss (gets of 100,000 keys spent
/// about 2 µs more user time than gets of 2,000). Linux gives user space addresses below 2^47
/// (2^48 on aarch64) unless an `mmap` call asks for higher ones (`5level-paging.rst`), which
/// mimalloc does not; `Block::new` checks it of every block.
pub struct Block(NonNull<u8>);

/// Bits of a pointer that hold the fingerprint, above the address.
const TAG_BITS: u32 = if usize::BITS == 64 { 16 } else { 0 };
const ADDR_MASK: usize = usize::MAX >> TAG_BITS;

/// A key's 16-bit fingerprint: each 8-byte word folded in by a multiply whose high and low
/// halves are xored (as wyhash does), a last fold to spread short keys, the top 16 bits. Keys
/// that differ in a digit or two take as many distinct fingerprints as random values would
/// (the test `fingerprints_spread_keys_that_differ_little`); one fold alone left keys `k0` to
/// `k9999` on 7,624 fingerprints instead of about 9,280.
pub fn fingerprint(key: &str) -> u16 {
    fn fold(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        (p >> 64) as u64 ^ p as u64
    }
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    const K2: u64 = 0xD6E8_FEB8_6659_FD93;
    let mut h = key.len() as u64;
    let mut words = key.as_bytes().chunks_exact(8);
    for w in &mut words {
        h = fold(h ^ u64::from_le_bytes(w.try_into().expect("8 bytes")), K);
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    h = fold(fold(h ^ u64::from_le_bytes(last), K), K2);
    if TAG_BITS == 0 { 0 } else { (h >> 48) as u16 }
}

// SAFETY: the bytes after the count are never written after `Block::new` returns, and the count
// is atomic: a `Block` is as thread-safe as an `Arc<[u8]>`.
unsafe impl Send for Block {}
// SAFETY: as above.
unsafe impl Sync for Block {}

/// A few varints on the stack (a payload's header, a length).
pub struct Varints {
    buf: [u8; 64],
    len: usize,
}

impl Default for Varints {
    fn default() -> Varints {
        Varints {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl Varints {
    pub fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// At most 10 bytes; callers put at most six varints and a byte here.
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Reads the varint at `*at` of bytes a [`Varints`] wrote, and moves past it.
pub fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = bytes[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

fn layout(len: usize) -> Layout {
    // A count, then bytes: aligned for the count.
    Layout::from_size_align(REFS + len, std::mem::align_of::<AtomicU32>())
        .expect("a block smaller than isize::MAX")
}

impl Block {
    /// A block of `key` and the concatenation of `payload`.
    pub fn new(key: &str, payload: &[&[u8]]) -> Block {
        let payload_len: usize = payload.iter().map(|p| p.len()).sum();
        let mut lens = Varints::default();
        lens.varint(key.len() as u64);
        let key_len_bytes = lens.len;
        lens.varint(payload_len as u64);
        let (klen, plen) = lens.bytes().split_at(key_len_bytes);
        let len = klen.len() + key.len() + plen.len() + payload_len;
        let layout = layout(len);
        // SAFETY: the layout has a non-zero size (the count).
        let ptr = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            handle_alloc_error(layout)
        };
        if ptr.addr().get() > ADDR_MASK {
            // Not reachable on Linux without an mmap hint above 2^47 (see `Block`): the address
            // needs the fingerprint's bits, and masking them off would point elsewhere. Stopped
            // before the block is used, as an allocation failure is.
            eprintln!(
                "rcluster-node: an allocation at {ptr:p} uses the bits its map's fingerprints need"
            );
            std::process::abort();
        }
        // SAFETY: the block is the count and then exactly `len` bytes, aligned for the count, and
        // ours alone; every part is copied within it.
        unsafe {
            ptr.cast::<AtomicU32>().write(AtomicU32::new(1));
            let mut at = ptr.as_ptr().add(REFS);
            for p in [klen, key.as_bytes(), plen]
                .into_iter()
                .chain(payload.iter().copied())
            {
                std::ptr::copy_nonoverlapping(p.as_ptr(), at, p.len());
                at = at.add(p.len());
            }
        }
        let tag = usize::from(fingerprint(key))
            .checked_shl(usize::BITS - TAG_BITS)
            .unwrap_or(0);
        Block(ptr.map_addr(|a| a | tag))
    }

    /// The block's address, without the fingerprint.
    #[inline]
    fn ptr(&self) -> NonNull<u8> {
        // SAFETY: the address below the fingerprint is the allocation's, which is not null.
        self.0
            .map_addr(|a| unsafe { NonZero::new_unchecked(a.get() & ADDR_MASK) })
    }

    /// The fingerprint of the block's key, read from the pointer (no load of the block).
    #[inline]
    pub fn tag(&self) -> u16 {
        self.0
            .addr()
            .get()
            .checked_shr(usize::BITS - TAG_BITS)
            .unwrap_or(0) as u16
    }

    fn refs(&self) -> &AtomicU32 {
        // SAFETY: the block starts with the count, initialised in `new`, alive while `self` is.
        unsafe { self.ptr().cast::<AtomicU32>().as_ref() }
    }

    /// Bytes `at..at + len` after the count. Callers only follow the block's own lengths.
    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        // SAFETY: the bytes after the count were written by `new` and are never written again;
        // the offsets come from the varints `new` wrote, so they stay inside the block.
        unsafe { std::slice::from_raw_parts(self.ptr().as_ptr().add(REFS + at), len) }
    }

    /// The varint at `*at` (its last byte is below 0x80, so the walk stays inside the block).
    fn varint_at(&self, at: &mut usize) -> usize {
        let mut v = 0usize;
        let mut shift = 0;
        loop {
            let b = self.bytes(*at, 1)[0];
            *at += 1;
            v |= usize::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    /// The key, and where the payload's length starts.
    fn key_at(&self) -> (&str, usize) {
        let mut at = 0;
        let len = self.varint_at(&mut at);
        // SAFETY: written by `new` from a `&str`.
        let key = unsafe { std::str::from_utf8_unchecked(self.bytes(at, len)) };
        (key, at + len)
    }

    pub fn key(&self) -> &str {
        self.key_at().0
    }

    pub fn payload(&self) -> &[u8] {
        let (_, mut at) = self.key_at();
        let len = self.varint_at(&mut at);
        self.bytes(at, len)
    }

    /// Every byte after the count: equal blocks have equal bytes.
    fn all(&self) -> &[u8] {
        let (_, mut at) = self.key_at();
        let len = self.varint_at(&mut at);
        self.bytes(0, at + len)
    }

    /// Asks the processor to start loading the block's first bytes (its key's length and first
    /// bytes), so a search can overlap the cache misses of its next comparisons.
    #[inline]
    pub fn prefetch(&self) {
        prefetch_line(self.ptr().as_ptr());
    }

    /// Whether both are the same block (not merely equal).
    pub fn same(&self, other: &Block) -> bool {
        self.0 == other.0
    }
}

impl Clone for Block {
    fn clone(&self) -> Block {
        // Relaxed, as `Arc::clone`: the new reference comes from an existing one.
        if self.refs().fetch_add(1, Atomic::Relaxed) > MAX_REFS {
            std::process::abort();
        }
        Block(self.0)
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.refs().fetch_sub(1, Atomic::Release) != 1 {
            return;
        }
        // As `Arc::drop`: every other owner's use happens before the free.
        fence(Atomic::Acquire);
        let layout = layout(self.all().len());
        // SAFETY: this was the last reference; the block was allocated with this layout.
        unsafe { dealloc(self.ptr().as_ptr(), layout) }
    }
}

impl PartialEq for Block {
    fn eq(&self, other: &Block) -> bool {
        self.same(other) || self.all() == other.all()
    }
}

impl Eq for Block {}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {} bytes", self.key(), self.payload().len())
    }
}

/// What a [`KeyedSet`] holds: a type made of one block.
pub trait Packed: Clone {
    fn block(&self) -> &Block;
}

/// Elements ordered by key, found by `&str`. Persistent, so a snapshot or a transaction's undo
/// copy is an O(1) clone (a B+tree of its own: see `packed_tree.rs` for why).
#[derive(Clone)]
pub struct KeyedSet<T: Packed> {
    root: tree::Node<T>,
    len: usize,
}

impl<T: Packed> Default for KeyedSet<T> {
    fn default() -> Self {
        KeyedSet {
            root: tree::Node::default(),
            len: 0,
        }
    }
}

impl<T: Packed> KeyedSet<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.root.get(&tree::Probe::new(key))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Stores `e`, returning the element of the same key it replaced.
    pub fn insert(&mut self, e: T) -> Option<T> {
        // The key is read from a second handle on the block, as `e` moves into the closure.
        let block = e.block().clone();
        self.upsert(block.key(), |_| e)
    }

    /// Stores the element `make` builds from the one of key `key` (`None` when there is none),
    /// in one walk of the tree, and returns the element it replaced. `make` builds an element of
    /// key `key`.
    pub fn upsert(&mut self, key: &str, make: impl FnOnce(Option<&T>) -> T) -> Option<T> {
        let (old, split) = self.root.upsert(&tree::Probe::new(key), make);
        if let Some(right) = split {
            let left = std::mem::take(&mut self.root);
            self.root = tree::Node::grow(left, right);
        }
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, key: &str) -> Option<T> {
        // Looked up first: a removal copies the shared nodes on its path, which a missing key
        // must not cost.
        let probe = tree::Probe::new(key);
        self.root.get(&probe)?;
        let out = self.root.remove(&probe);
        self.root.collapse();
        self.len -= usize::from(out.is_some());
        out
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        tree::Iter::new(&self.root, Bound::Unbounded)
    }

    /// Elements with keys above `lower`, in key order.
    pub fn from(&self, lower: Bound<&str>) -> impl Iterator<Item = &T> {
        tree::Iter::new(&self.root, lower)
    }
}

impl<'a, T: Packed> IntoIterator for &'a KeyedSet<T> {
    type Item = &'a T;
    type IntoIter = Box<dyn Iterator<Item = &'a T> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<T: Packed> Extend<T> for KeyedSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, elements: I) {
        for e in elements {
            self.insert(e);
        }
    }
}

impl<T: Packed> FromIterator<T> for KeyedSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(elements: I) -> Self {
        let mut set = KeyedSet::new();
        set.extend(elements);
        set
    }
}

impl<T: Packed + std::fmt::Debug> std::fmt::Debug for KeyedSet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Asks the processor to start loading the cache line at `at` (a hint: it never faults, whatever
/// the address; elsewhere than x86_64 it does nothing).
#[inline]
pub(crate) fn prefetch_line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Raw(Block);

    impl Packed for Raw {
        fn block(&self) -> &Block {
            &self.0
        }
    }

    #[test]
    fn key_and_payload_read_back_and_blocks_are_freed_once() {
        let long = "k".repeat(300);
        let b = Block::new(&long, &[b"ab", b"", &[7u8; 200]]);
        assert_eq!(b.key(), long);
        assert_eq!(b.payload().len(), 202);
        assert_eq!(&b.payload()[..2], b"ab");
        assert_eq!(
            (b.tag(), b.clone().tag()),
            (fingerprint(&long), fingerprint(&long))
        );
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        assert_eq!(b.clone().payload().len(), 202);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no panic");
        }
        assert_eq!(b.refs().load(Atomic::Relaxed), 1);
        assert_eq!(b, Block::new(&long, &[b"ab", &[7u8; 200]]));
        assert_ne!(b, Block::new(&long, &[b"ab", &[8u8; 200]]));
    }

    #[test]
    fn a_set_is_ordered_and_found_by_key_and_replaces_by_key() {
        let mut set = KeyedSet::new();
        set.insert(Raw(Block::new("b", &[b"1"])));
        set.insert(Raw(Block::new("a", &[b"2"])));
        let old = set.insert(Raw(Block::new("b", &[b"3"])));
        assert_eq!(old.map(|r| r.0.payload().to_vec()), Some(b"1".to_vec()));
        assert_eq!(set.get("b").map(|r| r.0.payload()), Some(&b"3"[..]));
        let keys: Vec<&str> = set.iter().map(|r| r.0.key()).collect();
        assert_eq!(keys, ["a", "b"]);
        let after: Vec<&str> = set.from(Bound::Excluded("a")).map(|r| r.0.key()).collect();
        assert_eq!(after, ["b"]);
        assert_eq!(
            set.remove("a").map(|r| r.0.key().to_string()),
            Some("a".into())
        );
        assert_eq!(set.len(), 1);
    }
}
