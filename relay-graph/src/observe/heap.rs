//! Heap accounting: a global allocator that wraps [`System`] and counts
//! live bytes, live allocations and allocations ever made, read by
//! `/metrics` (`wzp_relay_heap_bytes`, `wzp_relay_heap_allocations`,
//! `wzp_relay_heap_allocations_total`).
//!
//! The `wzp-relay` binary installs it:
//!
//! ```text
//! #[global_allocator]
//! static HEAP: wzp_relay::observe::heap::CountingAlloc = wzp_relay::observe::heap::CountingAlloc;
//! ```
//!
//! Each allocation and each free costs two relaxed atomic adds on one
//! cache line beside the system allocator's own work; the bench
//! `cargo bench -p wzp-benches --bench heap` measures it (docs/PERFORMANCE.md,
//! "Memory per connection"). A program that does not install it reads
//! [`stats`] as `None`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The counters, together on one cache line: an allocation touches the
/// line once (two adds), not two lines.
#[repr(align(64))]
struct Counters {
    /// Bytes allocated minus bytes freed.
    live_bytes: AtomicUsize,
    /// `alloc` and `alloc_zeroed` calls.
    allocs: AtomicU64,
    /// `dealloc` calls.
    frees: AtomicU64,
}

static COUNTERS: Counters = Counters {
    live_bytes: AtomicUsize::new(0),
    allocs: AtomicU64::new(0),
    frees: AtomicU64::new(0),
};

/// The counting allocator: [`System`] plus two relaxed adds per call.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

#[inline]
fn on_alloc(size: usize) {
    COUNTERS.live_bytes.fetch_add(size, Ordering::Relaxed);
    COUNTERS.allocs.fetch_add(1, Ordering::Relaxed);
}

#[inline]
fn on_dealloc(size: usize) {
    COUNTERS.live_bytes.fetch_sub(size, Ordering::Relaxed);
    COUNTERS.frees.fetch_add(1, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and only updates counters around it, so `System`'s guarantees
// (and the caller's obligations) carry over as they are.
unsafe impl GlobalAlloc for CountingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (thus by `System`)
        // with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        on_dealloc(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // One block replaced by another: only the byte count moves.
            if new_size >= layout.size() {
                COUNTERS
                    .live_bytes
                    .fetch_add(new_size - layout.size(), Ordering::Relaxed);
            } else {
                COUNTERS
                    .live_bytes
                    .fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// What the counting allocator has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes requested and not yet freed (the allocator's own overhead and
    /// free lists are not included; RSS is larger).
    pub live_bytes: u64,
    /// Allocations not yet freed.
    pub live_allocations: u64,
    /// Allocations ever made (`alloc`, `alloc_zeroed`; a `realloc` resizes
    /// one and is not counted).
    pub total_allocations: u64,
}

/// The counters now, or `None` when this program did not install
/// [`CountingAlloc`] (nothing was ever counted).
pub fn stats() -> Option<HeapStats> {
    // Frees read first: a free never precedes its allocation, so the live
    // count read this way is never below the truth by a racing pair.
    let frees = COUNTERS.frees.load(Ordering::Relaxed);
    let total = COUNTERS.allocs.load(Ordering::Relaxed);
    (total > 0).then(|| HeapStats {
        live_bytes: COUNTERS.live_bytes.load(Ordering::Relaxed) as u64,
        live_allocations: total.saturating_sub(frees),
        total_allocations: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocator's bookkeeping, driven directly (this test binary does
    /// not install it globally, so nothing else moves the counters).
    #[test]
    fn counts_alloc_realloc_and_free() {
        let a = CountingAlloc;
        let bytes = || COUNTERS.live_bytes.load(Ordering::Relaxed);
        let live =
            || COUNTERS.allocs.load(Ordering::Relaxed) - COUNTERS.frees.load(Ordering::Relaxed);
        let total = || COUNTERS.allocs.load(Ordering::Relaxed);
        let before = (bytes(), live(), total());
        let l = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: a valid non-zero layout; the block is freed below with
        // the layout it has then.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            assert_eq!(bytes(), before.0 + 1000);
            assert_eq!(live(), before.1 + 1);
            let p = a.realloc(p, l, 4000);
            assert!(!p.is_null());
            assert_eq!(bytes(), before.0 + 4000);
            assert_eq!(live(), before.1 + 1);
            let l4 = Layout::from_size_align(4000, 8).unwrap();
            let p = a.realloc(p, l4, 10);
            assert_eq!(bytes(), before.0 + 10);
            a.dealloc(p, Layout::from_size_align(10, 8).unwrap());
            let z = a.alloc_zeroed(l);
            assert_eq!(*z, 0);
            a.dealloc(z, l);
        }
        assert_eq!(bytes(), before.0);
        assert_eq!(live(), before.1);
        // Two allocations (alloc, alloc_zeroed); reallocs are not counted.
        assert_eq!(total(), before.2 + 2);
        let s = stats().expect("counted allocations");
        assert_eq!(s.total_allocations, before.2 + 2);
        assert_eq!(s.live_allocations, before.1);
    }
}
