//! Real-time thread priority.

use std::sync::atomic::{AtomicBool, Ordering};

static WARNED: AtomicBool = AtomicBool::new(false);

/// SCHED_FIFO priority the clock thread asks for.
pub const FIFO_PRIORITY: i32 = 50;

/// SCHED_FIFO priority for the threads that move a real-time graph's
/// packets to and from the network (a client's egress pump and its network
/// runtime): above every normal thread, so a packet the clock thread made
/// is not left waiting behind them, and below the clock thread itself.
pub const NETWORK_FIFO_PRIORITY: i32 = 40;

/// Asks for SCHED_FIFO on the calling thread. On refusal (not root, no
/// RLIMIT_RTPRIO) it logs one warning per process and carries on at normal
/// priority. Returns whether the thread is now real-time.
pub fn promote_current_thread() -> bool {
    promote_current_thread_to(FIFO_PRIORITY)
}

/// [`promote_current_thread`] at another SCHED_FIFO priority (1..=99).
pub fn promote_current_thread_to(priority: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: priority,
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
        let _ = priority;
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "real-time priority is only requested on Linux; the clock runs at normal priority"
            );
        }
        false
    }
}
