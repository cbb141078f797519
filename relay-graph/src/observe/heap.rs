//! Heap accounting: a global allocator that wraps [`System`] and counts
//! live bytes, live allocations and allocations ever made, read by
//! `/metrics` (`wzp_relay_heap_bytes`, `wzp_relay_heap_allocations`,
//! `wzp_relay_heap_allocations_total`).
//!
//! The `wzp-relay` binary installs it:
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: wzp_relay::observe::heap::CountingAlloc = wzp_relay::observe::heap::CountingAlloc;
//! ```
//!
//! Each allocation costs two relaxed atomic adds beside the system
//! allocator's own work (three for a fresh allocation); the bench
//! `cargo bench -p wzp-benches --bench heap` measures it (docs/PERFORMANCE.md,
//! "Memory per connection"). A program that does not install it reads
//! [`stats`] as `None`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_ALLOCS: AtomicUsize = AtomicUsize::new(0);
static TOTAL_ALLOCS: AtomicU64 = AtomicU64::new(0);

/// The counting allocator: [`System`] plus three relaxed counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

#[inline]
fn on_alloc(size: usize) {
    LIVE_BYTES.fetch_add(size, Ordering::Relaxed);
    LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
    TOTAL_ALLOCS.fetch_add(1, Ordering::Relaxed);
}

#[inline]
fn on_dealloc(size: usize) {
    LIVE_BYTES.fetch_sub(size, Ordering::Relaxed);
    LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
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
            // One block replaced by another: live count unchanged.
            if new_size >= layout.size() {
                LIVE_BYTES.fetch_add(new_size - layout.size(), Ordering::Relaxed);
            } else {
                LIVE_BYTES.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
            TOTAL_ALLOCS.fetch_add(1, Ordering::Relaxed);
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
    /// Allocations (and reallocations) ever made.
    pub total_allocations: u64,
}

/// The counters now, or `None` when this program did not install
/// [`CountingAlloc`] (nothing was ever counted).
pub fn stats() -> Option<HeapStats> {
    let total = TOTAL_ALLOCS.load(Ordering::Relaxed);
    (total > 0).then(|| HeapStats {
        live_bytes: LIVE_BYTES.load(Ordering::Relaxed) as u64,
        live_allocations: LIVE_ALLOCS.load(Ordering::Relaxed) as u64,
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
        let before = (
            LIVE_BYTES.load(Ordering::Relaxed),
            LIVE_ALLOCS.load(Ordering::Relaxed),
            TOTAL_ALLOCS.load(Ordering::Relaxed),
        );
        let l = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: a valid non-zero layout; the block is freed below with
        // the layout it has then.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            assert_eq!(LIVE_BYTES.load(Ordering::Relaxed), before.0 + 1000);
            assert_eq!(LIVE_ALLOCS.load(Ordering::Relaxed), before.1 + 1);
            let p = a.realloc(p, l, 4000);
            assert!(!p.is_null());
            assert_eq!(LIVE_BYTES.load(Ordering::Relaxed), before.0 + 4000);
            assert_eq!(LIVE_ALLOCS.load(Ordering::Relaxed), before.1 + 1);
            let l4 = Layout::from_size_align(4000, 8).unwrap();
            let p = a.realloc(p, l4, 10);
            assert_eq!(LIVE_BYTES.load(Ordering::Relaxed), before.0 + 10);
            a.dealloc(p, Layout::from_size_align(10, 8).unwrap());
            let z = a.alloc_zeroed(l);
            assert_eq!(*z, 0);
            a.dealloc(z, l);
        }
        assert_eq!(LIVE_BYTES.load(Ordering::Relaxed), before.0);
        assert_eq!(LIVE_ALLOCS.load(Ordering::Relaxed), before.1);
        assert_eq!(TOTAL_ALLOCS.load(Ordering::Relaxed), before.2 + 4);
        let s = stats().expect("counted allocations");
        assert_eq!(s.total_allocations, before.2 + 4);
    }
}
