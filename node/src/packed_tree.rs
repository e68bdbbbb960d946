//! The persistent B+tree under [`KeyedSet`](super::KeyedSet): elements (one block pointer each)
//! in leaves of 60, ordered by key; clones share nodes and copy only the path they change.
//!
//! Why not `imbl::OrdSet`: its leaves hold 16 elements, and it splits a full leaf in half even
//! when keys arrive in order, as counters, timestamps and the client library's idempotency keys
//! do. Every leaf then stays half empty: 27–28 heap bytes per 8-byte element, measured
//! (`tests/memory.rs`). Here a leaf with its `Arc` header is 512 bytes (a size mimalloc serves
//! exactly), and a leaf that is full when a key goes past its end keeps its elements and starts
//! a new leaf, so keys that arrive in order fill leaves completely.
//!
//! Invariants (checked by `check` in the tests): every leaf is at the same depth; no node but an
//! empty root is empty; a branch's `lows[i]` is the first element of `children[i]`, so it holds
//! no element the tree does not; keys ascend across leaves.

use super::{Packed, fingerprint};
use imbl_sized_chunks::Chunk;
use std::ops::Bound;
use std::sync::Arc;

/// Elements per leaf: two indices and 60 pointers are 496 bytes, 512 with the `Arc` counts.
const LEAF: usize = 60;
/// Children per branch: 30 lows of 16 bytes and 30 children of 16, with the two chunks' indices
/// and the `Arc` counts, are 1,008 bytes (a size mimalloc serves exactly; 32 took 1,280).
const FAN: usize = 30;

fn key<T: Packed>(t: &T) -> &str {
    t.block().key()
}

#[derive(Clone)]
pub(super) enum Node<T> {
    Leaf(Arc<Chunk<T, LEAF>>),
    Branch(Arc<Branch<T>>),
}

#[derive(Clone)]
pub(super) struct Branch<T> {
    /// The first element of each child: a key at or above `lows[i]` (and below `lows[i + 1]`)
    /// is in `children[i]`.
    lows: Chunk<Low<T>, FAN>,
    children: Chunk<Node<T>, FAN>,
}

/// A branch's low: the element, and its key's first 8 bytes as a big-endian integer (zero past
/// the key's end), so routing compares integers and loads the element's block only when both
/// keys begin with the same 8 bytes. The lows of the branches just above the leaves are one
/// block per leaf, too many to stay cached: searching them by key took about half of a lookup's
/// samples once the leaves were searched by fingerprint (`perf`, gets of 100,000 keys). Both
/// orders agree: a zero byte past a key's end sorts it before any longer key it begins.
#[derive(Clone)]
pub(super) struct Low<T> {
    prefix: u64,
    e: T,
}

impl<T: Packed> Low<T> {
    fn new(e: T) -> Low<T> {
        Low {
            prefix: prefix(key(&e)),
            e,
        }
    }
}

/// A key being looked up, with its fingerprint (for leaves) and prefix (for branches), computed
/// once per walk rather than at every level it passes.
pub(super) struct Probe<'a> {
    key: &'a str,
    tag: u16,
    prefix: u64,
}

impl<'a> Probe<'a> {
    pub(super) fn new(key: &'a str) -> Probe<'a> {
        Probe {
            key,
            tag: fingerprint(key),
            prefix: prefix(key),
        }
    }
}

fn prefix(k: &str) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[..n].copy_from_slice(&k.as_bytes()[..n]);
    u64::from_be_bytes(b)
}

impl<T: Packed> Default for Node<T> {
    fn default() -> Self {
        Node::Leaf(Arc::new(Chunk::new()))
    }
}

/// Where a full node splits when an element (or child) goes in at `i`: at `i`, within the middle
/// half, with the new one last on the left; past the end, nowhere (the new one starts the right
/// node alone). Keys often arrive in runs (a counter), and a run that lands inside a node then
/// goes on appending to the left part, and past the end to a new node, so it fills its nodes
/// completely; halving would leave every node of the run half empty. Random keys split near
/// the middle still.
fn split_at(i: usize, cap: usize) -> usize {
    if i == cap {
        cap
    } else {
        i.clamp(cap / 4, cap * 3 / 4)
    }
}

/// Where `k` is in `items` (sorted by key), or where it would go.
///
/// Not `slice::binary_search_by`: that one is branchless, so each comparison's load waits for
/// the one before, and every comparison here follows a block pointer, usually a cache miss.
/// With branches the processor runs ahead on a predicted side and overlaps some misses; and an
/// equal key ends the search early. Gets went about 10% slower with the branchless search.
fn search<T: Packed>(items: &[T], k: &str) -> Result<usize, usize> {
    let (mut low, mut high) = (0, items.len());
    while low < high {
        let mid = low + (high - low) / 2;
        // The next probe is the middle of one half or the other: start loading both blocks now,
        // while this comparison waits for its own.
        if mid > low {
            items[low + (mid - low) / 2].block().prefetch();
        }
        if high > mid + 1 {
            items[mid + 1 + (high - mid - 1) / 2].block().prefetch();
        }
        match key(&items[mid]).cmp(k) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => return Ok(mid),
        }
    }
    Err(low)
}

/// Where the element of `p`'s key is in a leaf, by a scan of the fingerprints its pointers carry
/// (see `Block`): only a block whose fingerprint matches is loaded to compare keys. A branch
/// needs the keys' order, so it searches its lows by prefix (see `Low`).
fn find<T: Packed>(items: &[T], p: &Probe) -> Option<usize> {
    items
        .iter()
        .position(|e| e.block().tag() == p.tag && key(e) == p.key)
}

/// Requests the cache lines of `*v` (a hint: it never faults, and costs an instruction a line).
fn prefetch_lines<V>(v: *const V) {
    for line in (0..std::mem::size_of::<V>()).step_by(64) {
        super::prefetch_line(v.cast::<u8>().wrapping_add(line));
    }
}

/// Which child of a branch holds `p`'s key: the last whose low is at or below it (the first when none
/// is, as `lows[0]` bounds nothing).
fn route<T: Packed>(lows: &[Low<T>], p: &Probe) -> usize {
    let (mut low, mut high) = (1, lows.len());
    while low < high {
        let mid = low + (high - low) / 2;
        let l = &lows[mid];
        match l.prefix.cmp(&p.prefix).then_with(|| key(&l.e).cmp(p.key)) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => return mid,
        }
    }
    low - 1
}

impl<T: Packed> Node<T> {
    fn first(&self) -> Option<&T> {
        match self {
            Node::Leaf(l) => l.first(),
            Node::Branch(b) => b.lows.first().map(|l| &l.e),
        }
    }

    /// Elements of a leaf, children of a branch.
    fn width(&self) -> usize {
        match self {
            Node::Leaf(l) => l.len(),
            Node::Branch(b) => b.children.len(),
        }
    }

    fn cap(&self) -> usize {
        match self {
            Node::Leaf(_) => LEAF,
            Node::Branch(_) => FAN,
        }
    }

    /// Starts loading every cache line of this node at once. Reading a node is a chain of
    /// dependent loads (its chunk's indices, at the end, then the elements they point to, then
    /// the next probe's), each a miss when the node is not cached; with all its lines requested
    /// together they arrive in about the time of one.
    fn prefetch(&self) {
        match self {
            Node::Leaf(l) => prefetch_lines(Arc::as_ptr(l)),
            Node::Branch(b) => prefetch_lines(Arc::as_ptr(b)),
        }
    }

    pub(super) fn get(&self, k: &Probe) -> Option<&T> {
        let mut n = self;
        loop {
            match n {
                Node::Branch(b) => {
                    n = &b.children[route(&b.lows, k)];
                    n.prefetch();
                }
                Node::Leaf(l) => return find(l, k).map(|i| &l[i]),
            }
        }
    }

    /// Stores the element `make` builds from the one of `p`'s key `k` (`None` when there is
    /// none), in one walk: returns the element it replaced, and the new right sibling when this
    /// node split (its first element is its low). `make` builds an element of key `k`.
    pub(super) fn upsert<F>(&mut self, p: &Probe, make: F) -> (Option<T>, Option<Node<T>>)
    where
        F: FnOnce(Option<&T>) -> T,
    {
        match self {
            Node::Leaf(l) => {
                let l = Arc::make_mut(l);
                // A new key needs its place in the order: only then the search by key.
                let k = p.key;
                let i = match find(l, p).map_or_else(|| search(l, k), Ok) {
                    Ok(i) => {
                        let e = make(Some(&l[i]));
                        debug_assert_eq!(key(&e), k);
                        return (Some(std::mem::replace(&mut l[i], e)), None);
                    }
                    Err(i) => i,
                };
                let e = make(None);
                debug_assert_eq!(key(&e), k);
                if !l.is_full() {
                    l.insert(i, e);
                    return (None, None);
                }
                let at = split_at(i, LEAF);
                let mut right = l.split_off(at);
                if i <= at && at < LEAF {
                    l.insert(i, e);
                } else {
                    right.insert(i - at, e);
                }
                (None, Some(Node::Leaf(Arc::new(right))))
            }
            Node::Branch(b) => {
                let b = Arc::make_mut(b);
                let i = route(&b.lows, p);
                b.children[i].prefetch();
                b.make_room(i, p);
                let (old, split) = b.children[i].upsert(p, make);
                b.refresh_low(i);
                let Some(right) = split else {
                    return (old, None);
                };
                let low = right.first().expect("a split half holds elements").clone();
                let i = i + 1;
                if !b.children.is_full() {
                    b.children.insert(i, right);
                    b.lows.insert(i, Low::new(low));
                    return (old, None);
                }
                let at = split_at(i, FAN);
                let mut other = Branch {
                    lows: b.lows.split_off(at),
                    children: b.children.split_off(at),
                };
                let (side, i) = if i <= at && at < FAN {
                    (&mut *b, i)
                } else {
                    (&mut other, i - at)
                };
                side.children.insert(i, right);
                side.lows.insert(i, Low::new(low));
                (old, Some(Node::Branch(Arc::new(other))))
            }
        }
    }

    /// Removes the element of `k`'s key, which the caller found in the tree (so no shared node is
    /// copied for nothing). A node left small merges with a neighbour when both fit in one.
    pub(super) fn remove(&mut self, k: &Probe) -> Option<T> {
        match self {
            Node::Leaf(l) => {
                let i = find(l, k)?;
                Some(Arc::make_mut(l).remove(i))
            }
            Node::Branch(b) => {
                let b = Arc::make_mut(b);
                let i = route(&b.lows, k);
                b.children[i].prefetch();
                let out = b.children[i].remove(k);
                let (width, cap) = (b.children[i].width(), b.children[i].cap());
                if width == 0 {
                    b.children.remove(i);
                    b.lows.remove(i);
                } else {
                    b.refresh_low(i);
                    if width < cap / 4 {
                        b.merge_around(i);
                    }
                }
                out
            }
        }
    }

    /// The root above a root that split.
    pub(super) fn grow(left: Node<T>, right: Node<T>) -> Node<T> {
        let mut b = Branch {
            lows: Chunk::new(),
            children: Chunk::new(),
        };
        for n in [left, right] {
            let first = n.first().expect("a split half holds elements").clone();
            b.lows.push_back(Low::new(first));
            b.children.push_back(n);
        }
        Node::Branch(Arc::new(b))
    }

    /// The root after a removal: a branch of one child gives way to it.
    pub(super) fn collapse(&mut self) {
        while let Node::Branch(b) = self {
            match b.children.len() {
                0 => *self = Node::default(),
                1 => *self = b.children[0].clone(),
                _ => return,
            }
        }
    }
}

impl<T: Packed> Branch<T> {
    /// Makes `lows[i]` the first element of child `i` again, if an insert or removal changed it.
    fn refresh_low(&mut self, i: usize) {
        if let Some(first) = self.children[i].first()
            && !first.block().same(self.lows[i].e.block())
        {
            self.lows[i] = Low::new(first.clone());
        }
    }

    /// Before an element goes inside full leaf `i` (not past its end: that is a run, which
    /// starts a new leaf), moves some of the leaf's elements to a neighbour with room instead of
    /// letting it split. Keys that arrive in no order (the client library's idempotency keys,
    /// for one) left leaves 61% full when every full leaf split; sharing with a neighbour first
    /// packs them 84% full (the test on keys in no order measures both): a B*-tree's rule, for
    /// leaves, where the elements live.
    fn make_room(&mut self, i: usize, p: &Probe) {
        let Node::Leaf(leaf) = &self.children[i] else {
            return;
        };
        // A key the leaf holds is replaced in place: found by fingerprint, it needs no search
        // by key (which loads a block a probe).
        if !leaf.is_full() || find(leaf, p).is_some() {
            return;
        }
        let Err(at) = search(leaf, p.key) else {
            return;
        };
        if at == LEAF {
            return;
        }
        let room = |n: &Node<T>| LEAF - n.width();
        let right = self.children.get(i + 1).map_or(0, room);
        let left = if i > 0 {
            room(&self.children[i - 1])
        } else {
            0
        };
        if right == 0 && left == 0 {
            return;
        }
        // Half the neighbour's room, so the next element for this leaf finds some too.
        if right >= left {
            // The elements above the new one's place: it stays in this leaf.
            let moved = right.div_ceil(2).min(LEAF - at);
            let (Node::Leaf(a), Node::Leaf(b)) = self.pair_mut(i) else {
                return;
            };
            let (a, b) = (Arc::make_mut(a), Arc::make_mut(b));
            for _ in 0..moved {
                let last = a.pop_back();
                b.push_front(last);
            }
            self.refresh_low(i + 1);
        } else if at > 0 {
            // The elements below the new one's place.
            let moved = left.div_ceil(2).min(at);
            let (Node::Leaf(a), Node::Leaf(b)) = self.pair_mut(i - 1) else {
                return;
            };
            let (a, b) = (Arc::make_mut(a), Arc::make_mut(b));
            for _ in 0..moved {
                let first = b.pop_front();
                a.push_back(first);
            }
            self.refresh_low(i);
        }
    }

    /// Children `l` and `l + 1`, both mutable.
    fn pair_mut(&mut self, l: usize) -> (&mut Node<T>, &mut Node<T>) {
        let (head, tail) = self.children.split_at_mut(l + 1);
        (&mut head[l], &mut tail[0])
    }

    /// Merges child `i` with its right neighbour (its left one, for the last child) when the
    /// two fit in one node.
    fn merge_around(&mut self, i: usize) {
        let (l, r) = match i {
            _ if i + 1 < self.children.len() => (i, i + 1),
            _ if i > 0 => (i - 1, i),
            _ => return,
        };
        let (left, right) = (&self.children[l], &self.children[r]);
        if left.width() + right.width() > left.cap() {
            return;
        }
        let right = self.children.remove(r);
        self.lows.remove(r);
        match (&mut self.children[l], right) {
            (Node::Leaf(a), Node::Leaf(b)) => {
                let mut b = Arc::try_unwrap(b).unwrap_or_else(|b| (*b).clone());
                Arc::make_mut(a).append(&mut b);
            }
            (Node::Branch(a), Node::Branch(b)) => {
                let mut b = Arc::try_unwrap(b).unwrap_or_else(|b| (*b).clone());
                let a = Arc::make_mut(a);
                a.lows.append(&mut b.lows);
                a.children.append(&mut b.children);
            }
            _ => unreachable!("siblings are at the same depth"),
        }
    }
}

/// Elements in key order from a lower bound.
pub(super) struct Iter<'a, T> {
    /// The branches above the current leaf, each with the index of the child being read.
    stack: Vec<(&'a Branch<T>, usize)>,
    leaf: std::slice::Iter<'a, T>,
}

impl<'a, T: Packed> Iter<'a, T> {
    pub(super) fn new(root: &'a Node<T>, lower: Bound<&str>) -> Self {
        let mut stack = Vec::new();
        let mut n = root;
        loop {
            match n {
                Node::Branch(b) => {
                    let i = match lower {
                        Bound::Unbounded => 0,
                        Bound::Included(k) | Bound::Excluded(k) => route(&b.lows, &Probe::new(k)),
                    };
                    stack.push((&**b, i));
                    n = &b.children[i];
                }
                Node::Leaf(l) => {
                    let start = match lower {
                        Bound::Unbounded => 0,
                        Bound::Included(k) => l.partition_point(|x| key(x) < k),
                        Bound::Excluded(k) => l.partition_point(|x| key(x) <= k),
                    };
                    return Iter {
                        stack,
                        leaf: l[start..].iter(),
                    };
                }
            }
        }
    }
}

impl<'a, T: Packed> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        loop {
            if let Some(x) = self.leaf.next() {
                return Some(x);
            }
            // The next child of the nearest branch with one left, then down its left edge.
            let (b, i) = loop {
                let top = self.stack.last_mut()?;
                top.1 += 1;
                if top.1 < top.0.children.len() {
                    break (top.0, top.1);
                }
                self.stack.pop();
            };
            let mut n = &b.children[i];
            while let Node::Branch(c) = n {
                self.stack.push((&**c, 0));
                n = &c.children[0];
            }
            if let Node::Leaf(l) = n {
                self.leaf = l.iter();
            }
        }
    }
}

#[cfg(test)]
#[path = "packed_tree_tests.rs"]
mod tests;
