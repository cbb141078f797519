//! Flush-to-zero around codec calls.
//!
//! Why: in silence and in decaying tails, the recursive filters inside
//! libopus (SILK's LPC synthesis, CELT's comb and de-emphasis filters, the
//! DRED/FARGAN networks) drive their state towards zero and through the
//! subnormal range. On x86 each arithmetic operation on a subnormal float
//! takes a microcode assist of ~100 cycles, so a decoder that costs 50 us on
//! speech can cost ten times that in silence, exactly when nobody looks. With
//! FTZ (results that would be subnormal become 0) and DAZ (subnormal inputs
//! read as 0) the CPU stays flat. The audible difference is nil: subnormals
//! are below -750 dBFS.
//!
//! Why save and restore instead of setting it once for the thread: MXCSR is
//! per thread and the real-time thread runs other stages (and other people's
//! code) that may rely on IEEE behaviour; a stage must leave the thread as it
//! found it.

/// Sets FTZ|DAZ on creation and restores the previous control word on drop.
/// On targets other than x86_64 it does nothing (aarch64 flushes through
/// FPCR.FZ, which libopus builds there do not need for speed).
#[must_use = "the mode is restored when the guard drops"]
pub struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

/// MXCSR bit 15: flush results to zero.
#[cfg(target_arch = "x86_64")]
pub const MXCSR_FTZ: u32 = 1 << 15;
/// MXCSR bit 6: treat subnormal inputs as zero.
#[cfg(target_arch = "x86_64")]
pub const MXCSR_DAZ: u32 = 1 << 6;

impl FlushDenormals {
    #[inline]
    pub fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = read_mxcsr();
            write_mxcsr(saved | MXCSR_FTZ | MXCSR_DAZ);
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            FlushDenormals {}
        }
    }
}

impl Default for FlushDenormals {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FlushDenormals {
    #[inline]
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        write_mxcsr(self.saved);
    }
}

/// The current MXCSR (x86_64), for tests that check it was restored.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn read_mxcsr() -> u32 {
    // The intrinsics are deprecated because changing the float environment
    // behind the compiler's back is unsound for code the compiler optimises
    // around; here the changed mode only covers calls into C (libopus,
    // opaque to the optimiser) and is restored before Rust float code that
    // could be folded at compile time depends on it.
    #[allow(deprecated)]
    // SAFETY: SSE is part of the x86_64 baseline; reading MXCSR has no side effect.
    unsafe {
        core::arch::x86_64::_mm_getcsr()
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn write_mxcsr(v: u32) {
    #[allow(deprecated)]
    // SAFETY: SSE is baseline on x86_64. Only the FTZ/DAZ bits differ from
    // the value read before, and those change results of subnormal
    // arithmetic only (no exceptions are unmasked, rounding is unchanged).
    unsafe {
        core::arch::x86_64::_mm_setcsr(v)
    }
}
