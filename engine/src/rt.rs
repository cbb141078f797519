//! Real-time thread priority.

use std::sync::atomic::{AtomicBool, Ordering};

static WARNED: AtomicBool = AtomicBool::new(false);

/// SCHED_FIFO priority the clock thread asks for.
pub const FIFO_PRIORITY: i32 = 50;

/// Asks for SCHED_FIFO on the calling thread. On refusal (not root, no
/// RLIMIT_RTPRIO) it logs one warning per process and carries on at normal
/// priority. Returns whether the thread is now real-time.
pub fn promote_current_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: FIFO_PRIORITY,
        };
        // SAFETY: plain syscall on the calling thread (pid 0) with a valid param.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        if rc == 0 {
            return true;
        }
        let err = std::io::Error::last_os_error();
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!("SCHED_FIFO refused ({err}); the clock runs at normal priority and may miss deadlines under load");
        }
        false
    }
    #[cfg(not(target_os = "linux"))]
    {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "real-time priority is only requested on Linux; the clock runs at normal priority"
            );
        }
        false
    }
}
