//! Heap bytes per record, by component, counted by a global allocator wrapper: what the state
//! machine costs for each key (records, their index nodes, idempotency results), separate from
//! what the process's allocator and caches add to RSS (scripts/bench-memory.py measures that).
//!
//! Run `cargo test --release -p rcluster-node --test memory -- --nocapture` for the breakdown; the
//! test fails when a component grows past its bound, so a wider record or map node is noticed.

use mimalloc::MiMalloc;
use rcluster_node::alloc::Allocator;
use rcluster_node::log::{Entry, IdemTag, Op};
use rcluster_node::record::Rec;
use rcluster_node::state::{Idem, IdemRecord, OpResult, State};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicI64, Ordering};

/// Bytes requested and in use, as the allocator saw them (`usable` adds the size-class rounding of
/// mimalloc, the node binary's allocator: what the requests really take from the heap).
static REQUESTED: AtomicI64 = AtomicI64::new(0);
static USABLE: AtomicI64 = AtomicI64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

/// Counts, then forwards to the allocator `rcluster-node` uses.
struct Counting;

fn usable(ptr: *mut u8) -> i64 {
    // SAFETY: `ptr` was returned by mimalloc and is still live.
    unsafe { MiMalloc.usable_size(ptr) as i64 }
}

// SAFETY: every call is forwarded to the node's `Allocator` unchanged; the wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { Allocator.alloc(layout) };
        if !p.is_null() {
            REQUESTED.fetch_add(layout.size() as i64, Ordering::Relaxed);
            USABLE.fetch_add(usable(p), Ordering::Relaxed);
            LIVE.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        REQUESTED.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        USABLE.fetch_sub(usable(ptr), Ordering::Relaxed);
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { Allocator.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Clone, Copy, Debug, Default)]
struct Heap {
    requested: i64,
    usable: i64,
    allocations: i64,
}

fn heap() -> Heap {
    Heap {
        requested: REQUESTED.load(Ordering::Relaxed),
        usable: USABLE.load(Ordering::Relaxed),
        allocations: LIVE.load(Ordering::Relaxed),
    }
}

impl std::ops::Sub for Heap {
    type Output = Heap;
    fn sub(self, o: Heap) -> Heap {
        Heap {
            requested: self.requested - o.requested,
            usable: self.usable - o.usable,
            allocations: self.allocations - o.allocations,
        }
    }
}

const RECORDS: u64 = 200_000;
/// A 100-byte JSON value, as the benchmarks write (a string of 98 characters).
fn value() -> String {
    format!("\"{}\"", "x".repeat(98))
}

/// The client library's key shape.
fn idem_key(i: u64) -> String {
    rcluster_proto::idempotency::key(0x5eed, i)
}

/// Loads `RECORDS` puts of 100-byte values (keys k0, k1, …) the way the log applies them.
fn load(with_idem: bool) -> State {
    let value = value();
    let mut state = State::default();
    for i in 0..RECORDS {
        let e = Entry {
            term: 1,
            index: i + 1,
            ts_ms: 1_790_000_000_000 + i,
            idem: with_idem.then(|| IdemTag {
                key: idem_key(i),
                fingerprint: i,
            }),
            op: Op::Put {
                key: format!("k{i}"),
                value: value.as_str().into(),
                ttl_ms: None,
                if_version: None,
            },
        };
        state.apply_logged(&e).expect("a put applies");
    }
    state
}

fn per_record(h: Heap) -> (f64, f64) {
    (
        h.requested as f64 / RECORDS as f64,
        h.usable as f64 / RECORDS as f64,
    )
}

fn line(name: &str, h: Heap) {
    let (r, u) = per_record(h);
    println!(
        "  {name:<34} {r:>7.1} B requested {u:>7.1} B in heap chunks {:>5.2} allocations",
        h.allocations as f64 / RECORDS as f64
    );
}

#[test]
fn heap_bytes_per_record_by_component() {
    let value_text = value();
    assert_eq!(value_text.len(), 100);
    // The records measured alone: each one block holding key, value and metadata, as a put
    // stamps it (version and times as large as a real log's).
    let base = heap();
    let blocks: Vec<Rec> = (0..RECORDS)
        .map(|i| {
            let at = 1_790_000_000_000 + i;
            Rec::build(&format!("k{i}"), &value_text, i + 1, None, at, at)
        })
        .collect();
    let blocks_heap = heap() - base;
    let base = heap();
    let idem_blocks: Vec<Idem> = (0..RECORDS)
        .map(|i| {
            let r = IdemRecord {
                fingerprint: i,
                index: i + 1,
                ts_ms: 1_790_000_000_000 + i,
                result: Box::new(OpResult::Put {
                    version: i + 1,
                    expires_at_ms: None,
                }),
                slot: 0,
            };
            Idem::new(&idem_key(i), &r)
        })
        .collect();
    let idem_blocks_heap = heap() - base;
    // The vectors' own buffers are not part of any record.
    let vec_of = |size: usize| Heap {
        requested: (RECORDS as usize * size) as i64,
        usable: (RECORDS as usize * size) as i64,
        allocations: 1,
    };
    let blocks_heap = blocks_heap - vec_of(size_of::<Rec>());
    let idem_blocks_heap = idem_blocks_heap - vec_of(size_of::<Idem>());
    drop((blocks, idem_blocks));

    let base = heap();
    let plain = load(false);
    let records = heap() - base;
    let base = heap();
    let tagged = load(true);
    let with_idem = heap() - base;
    let idem = with_idem - records;
    assert_eq!(plain.records.len() as u64, RECORDS);
    assert_eq!(tagged.idem.len() as u64, RECORDS);

    println!("heap per record, {RECORDS} puts of 100-byte values:");
    line("record block (key, value, metadata)", blocks_heap);
    line("record map nodes", records - blocks_heap);
    line("records total", records);
    line("idempotency block (key, result)", idem_blocks_heap);
    line("idempotency map nodes, queue", idem - idem_blocks_heap);
    line("idempotency total", idem);
    line("records + idempotency", with_idem);
    println!(
        "  size_of Rec {} B (the map's element), IdemRecord {} B",
        size_of::<Rec>(),
        size_of::<rcluster_node::state::IdemRecord>()
    );

    // Bounds a little above what the representation costs now: a regression past them is a
    // representation change that must be measured and justified.
    let (_, rec) = per_record(records);
    let (_, idm) = per_record(idem);
    assert!(rec < 160.0, "records take {rec:.1} B each in the heap");
    assert!(idm < 100.0, "idempotency results take {idm:.1} B each");
    // The map's share alone: about 14 B for an 8-byte element (27 B when it was `imbl::OrdSet`,
    // whose half-empty leaves this bound would catch).
    let (_, nodes) = per_record(records - blocks_heap);
    assert!(nodes < 20.0, "the record map takes {nodes:.1} B a record");
    drop((plain, tagged));
}
