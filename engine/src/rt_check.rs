//! Proof that real-time code does not allocate.
//!
//! Test binaries install the checking allocator once at their root:
//!
//! ```text
//! wzp_engine::install_alloc_checker!();
//! ```
//!
//! and wrap real-time calls in [`count_allocs`] (or use
//! [`assert_rt_safe`]), which counts every allocation and free made inside.

pub use assert_no_alloc::AllocDisabler;

/// Installs the allocation-checking global allocator in a test binary (debug
/// builds only; release builds keep the system allocator).
#[macro_export]
macro_rules! install_alloc_checker {
    () => {
        #[cfg(debug_assertions)]
        #[global_allocator]
        static WZP_ALLOC_CHECKER: $crate::rt_check::AllocDisabler = $crate::rt_check::AllocDisabler;
    };
}

/// Runs `f` with allocation forbidden on this thread; returns its result and
/// how many allocations or frees it attempted. Needs
/// [`install_alloc_checker!`] in the test binary, else the count is always 0
/// and [`checker_installed`] says so.
pub fn count_allocs<R>(f: impl FnOnce() -> R) -> (R, u32) {
    let before = violations();
    let r = assert_no_alloc::assert_no_alloc(f);
    (r, violations() - before)
}

#[cfg(debug_assertions)]
fn violations() -> u32 {
    assert_no_alloc::violation_count()
}

#[cfg(not(debug_assertions))]
fn violations() -> u32 {
    0
}

/// Whether allocations are actually being counted in this binary: makes an
/// allocation on purpose and checks it was seen. Tests assert this first, so
/// a test that forgot the checker fails instead of passing vacuously.
pub fn checker_installed() -> bool {
    let ((), n) = count_allocs(|| {
        let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(16));
        std::hint::black_box(&v);
    });
    n > 0
}

/// Runs `f` `times` times with allocation forbidden and panics with `what` if
/// any allocation or free happened.
pub fn assert_rt_safe(what: &str, times: usize, mut f: impl FnMut()) {
    assert!(
        checker_installed(),
        "install_alloc_checker!() is missing from this test binary"
    );
    let ((), n) = count_allocs(|| {
        for _ in 0..times {
            f();
        }
    });
    assert_eq!(
        n, 0,
        "{what}: {n} allocation(s) or free(s) on the real-time path"
    );
}
