//! The node's allocator: mimalloc, called the way the C library's `malloc` would be.
//!
//! The `mimalloc` crate passes every Rust allocation to `mi_malloc_aligned`, whose fast path
//! serves only blocks up to 1 KiB; larger ones (request futures, buffers) take its generic aligned
//! path first. An alignment of 16 or less, no larger than the size, is what `mi_malloc` gives every
//! block anyway (as glibc's `malloc` does, and std's `System` relies on the same rule), so those
//! go straight to `mi_malloc`. Callgrind, a get over 32 connections: `mi_malloc_aligned` took 957
//! of its instructions, `mi_malloc` now about 510.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// Alignment every `mi_malloc` block of at least this size has (`MI_MAX_ALIGN_SIZE`).
const MALLOC_ALIGN: usize = 16;

pub struct Allocator;

fn plain(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: every block comes from mimalloc and goes back to it through `mi_free`, which takes
// blocks of both entry points; `plain` sizes get the alignment `mi_malloc` guarantees.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            // SAFETY: a plain C allocation; the size is not zero (align <= size).
            unsafe { libmimalloc_sys::mi_malloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: forwarded as is.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            // SAFETY: as `alloc`.
            unsafe { libmimalloc_sys::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: forwarded as is.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            // SAFETY: `ptr` came from mimalloc; the new block keeps the alignment (as `alloc`).
            unsafe { libmimalloc_sys::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            // SAFETY: forwarded as is.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layout gets its alignment, zeroed blocks are zero, and a reallocated block keeps its
    /// bytes and alignment, on both entry points.
    #[test]
    fn blocks_have_their_alignment_and_keep_their_bytes() {
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1usize, 7, 8, 16, 24, 100, 1024, 1025, 5000, 70_000] {
                let Ok(layout) = Layout::from_size_align(size.max(align), align) else {
                    continue;
                };
                // SAFETY: non-zero sizes; every block is freed with the layout it has.
                unsafe {
                    let p = Allocator.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{layout:?}"
                    );
                    std::ptr::write_bytes(p, 0xAB, layout.size());
                    let grown = layout.size() * 3;
                    let q = Allocator.realloc(p, layout, grown);
                    assert!(
                        !q.is_null() && (q as usize).is_multiple_of(align),
                        "{layout:?} grown"
                    );
                    assert!((0..layout.size()).all(|i| *q.add(i) == 0xAB), "{layout:?}");
                    let shrunk = layout.size().div_ceil(2).next_multiple_of(align);
                    let grown_layout = Layout::from_size_align(grown, align).expect("valid");
                    let r = Allocator.realloc(q, grown_layout, shrunk);
                    assert!(
                        !r.is_null() && (r as usize).is_multiple_of(align),
                        "{layout:?} shrunk"
                    );
                    assert!((0..shrunk).all(|i| *r.add(i) == 0xAB), "{layout:?}");
                    Allocator.dealloc(r, Layout::from_size_align(shrunk, align).expect("valid"));
                    let z = Allocator.alloc_zeroed(layout);
                    assert!(
                        !z.is_null() && (z as usize).is_multiple_of(align),
                        "{layout:?} zeroed"
                    );
                    assert!((0..layout.size()).all(|i| *z.add(i) == 0), "{layout:?}");
                    Allocator.dealloc(z, layout);
                }
            }
        }
    }
}
