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

/// SCHED_FIFO priority for a stage's worker thread whose answer the clock
/// thread waits for within a cycle (the FEC stages' RaptorQ workers):
/// above the clock thread. A real-time clock thread that spins for an
/// answer keeps its core; a worker under it could only run on another
/// core, and on a busy machine waited there past the cycle's bound (live,
/// the FEC decoder missed its 2 ms wait in one repair cycle of six). The
/// worker sleeps until it is handed work and does a bounded amount of it.
pub const WORKER_FIFO_PRIORITY: i32 = FIFO_PRIORITY + 1;

/// Asks for SCHED_FIFO at `priority` (1..=99) on the calling thread, and
/// says nothing on refusal: for helper threads, whose graph may not be
/// real-time at all. Returns whether the thread is now real-time.
pub fn try_promote_current_thread_to(priority: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: plain syscall on the calling thread (pid 0) with a valid param.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        false
    }
}

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
