//! The FEC worker: a thread that does the RaptorQ work off the real-time
//! path, behind two rtrb rings.
//!
//! raptorq allocates on every encode and decode, so `process` only copies
//! frames into the job ring and copies results out of the result ring. Each
//! cycle that sent work ends with a marker; the next cycle drains results up
//! to that marker, waiting at most `worker_wait` for it. The worker has a
//! whole quantum to answer (it needs tens of microseconds), so in real time
//! the wait is never taken; in a faster-than-real-time run it makes the output
//! independent of thread scheduling: results of cycle N always leave in cycle
//! N + 1. A worker that misses the wait is counted in `worker_late` and its
//! results leave when they come. A stage may also wait for the answer to
//! its own cycle's work (`fec.raptorq_decode` does, in a cycle that brought
//! repair): the worker runs at a real-time priority above the clock
//! thread's where the system allows (`wzp_engine::rt::WORKER_FIFO_PRIORITY`),
//! so a clock thread waiting on its core does not keep it from running.

use std::thread::Thread;
use std::time::{Duration, Instant};

use wzp_engine::prelude::*;

/// One ring item: a frame, or a marker that closes a cycle's work.
#[derive(Clone)]
pub(crate) struct Job {
    marker: Option<u64>,
    slot: Slot<FrameMeta>,
}

/// What the worker does with each frame; `emit` queues a result frame.
pub(crate) trait Work: Send + 'static {
    fn on_frame(&mut self, meta: &FrameMeta, bytes: &[u8], emit: &mut dyn FnMut(FrameMeta, &[u8]));
}

/// The real-time end of a worker.
pub(crate) struct WorkerLink {
    jobs: rtrb::Producer<Job>,
    results: rtrb::Consumer<Job>,
    worker: Thread,
    /// Marker of the last cycle that sent work and is not answered yet.
    awaiting: Option<u64>,
    sent_this_cycle: bool,
    wait: Duration,
    worker_late: Counter,
    worker_drops: Counter,
}

impl WorkerLink {
    /// Spawns the worker thread. Its rings hold `capacity` items each.
    pub(crate) fn spawn(
        name: String,
        capacity: usize,
        wait: Duration,
        mut work: impl Work,
        cx: &mut BuildContext<'_>,
    ) -> Result<WorkerLink, BuildError> {
        let (jobs, mut job_rx) = rtrb::RingBuffer::<Job>::new(capacity);
        let (mut result_tx, results) = rtrb::RingBuffer::<Job>::new(capacity);
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // Above a real-time clock thread, which may wait for this
                // worker within its cycle (`wzp_engine::rt`); refused (not
                // root), it runs at normal priority, as the clock does.
                wzp_engine::rt::try_promote_current_thread_to(wzp_engine::rt::WORKER_FIFO_PRIORITY);
                let emit_to = |tx: &mut rtrb::Producer<Job>, job: Job| -> bool {
                    let mut job = Some(job);
                    loop {
                        match tx.push(job.take().expect("job present until pushed")) {
                            Ok(()) => return true,
                            Err(rtrb::PushError::Full(j)) => {
                                if tx.is_abandoned() {
                                    return false;
                                }
                                job = Some(j);
                                // The real-time side drains once per cycle.
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                };
                loop {
                    while let Ok(job) = job_rx.pop() {
                        if let Some(marker) = job.marker {
                            let done = Job {
                                marker: Some(marker),
                                slot: Slot::default(),
                            };
                            if !emit_to(&mut result_tx, done) {
                                return;
                            }
                            continue;
                        }
                        let mut alive = true;
                        work.on_frame(&job.slot.meta, job.slot.bytes(), &mut |meta, bytes| {
                            let mut slot = Slot::default();
                            slot.meta = meta;
                            slot.set_bytes(bytes);
                            alive &= emit_to(&mut result_tx, Job { marker: None, slot });
                        });
                        if !alive {
                            return;
                        }
                    }
                    if job_rx.is_abandoned() {
                        return;
                    }
                    // Every cycle that sends work ends with an unpark
                    // (`end_cycle`), and an unpark before the park is not
                    // lost: the timeout is a guard, not a poll.
                    std::thread::park_timeout(Duration::from_secs(1));
                }
            })
            .map_err(|e| BuildError::Other(format!("cannot start the FEC worker thread: {e}")))?;
        Ok(WorkerLink {
            jobs,
            results,
            worker: handle.thread().clone(),
            awaiting: None,
            sent_this_cycle: false,
            wait,
            worker_late: cx.counter("worker_late"),
            worker_drops: cx.counter("worker_drops"),
        })
    }

    /// Moves finished results into `out`, first waiting (bounded) for the
    /// last marker sent. `each` sees every frame moved. At most
    /// `limit(meta)` frames leave in one call, counted against the frame
    /// next in line (so results can be paced out over cycles, a ratio's
    /// worth each: see `fec.raptorq_encode`); the rest wait in the ring,
    /// in order, and a call that stops at the limit does not wait.
    pub(crate) fn collect(
        &mut self,
        out: &mut Batch<FrameMeta>,
        limit: impl Fn(&FrameMeta) -> usize,
        mut each: impl FnMut(&mut FrameMeta, usize),
    ) {
        let mut deadline: Option<Instant> = None;
        let mut moved = 0;
        loop {
            if let Ok(job) = self.results.peek() {
                if let Some(marker) = job.marker {
                    if self.awaiting == Some(marker) {
                        self.awaiting = None;
                    }
                    let _ = self.results.pop();
                    continue;
                }
                if moved >= limit(&job.slot.meta) {
                    return;
                }
                moved += 1;
                let Some(dst) = out.push_slot() else {
                    // Output full: the rest leaves next cycle.
                    return;
                };
                dst.meta = job.slot.meta;
                dst.set_bytes(job.slot.bytes());
                each(&mut dst.meta, job.slot.len());
                // Popping drops a plain-data slot: no free.
                let _ = self.results.pop();
                continue;
            }
            if self.awaiting.is_none() {
                return;
            }
            // Only a monotonic bound on the hand-off wait; it never shapes
            // the output when the worker is on time.
            let now = Instant::now();
            let limit = *deadline.get_or_insert(now + self.wait);
            if now >= limit {
                self.worker_late.inc();
                // Stop waiting for this marker; its results leave when ready.
                self.awaiting = None;
                return;
            }
            std::hint::spin_loop();
            std::thread::yield_now();
        }
    }

    /// Queues a frame for the worker. Keeps room for the cycle's marker;
    /// a full ring drops the frame and counts it.
    pub(crate) fn send(&mut self, slot: &Slot<FrameMeta>) -> bool {
        if self.jobs.slots() < 2 {
            self.worker_drops.inc();
            return false;
        }
        let job = Job {
            marker: None,
            slot: slot.clone(),
        };
        if self.jobs.push(job).is_err() {
            self.worker_drops.inc();
            return false;
        }
        self.sent_this_cycle = true;
        true
    }

    /// Closes the cycle's work with a marker and wakes the worker.
    pub(crate) fn end_cycle(&mut self, cycle: u64) {
        if !self.sent_this_cycle {
            return;
        }
        self.sent_this_cycle = false;
        let marker = Job {
            marker: Some(cycle),
            slot: Slot::default(),
        };
        if self.jobs.push(marker).is_ok() {
            self.awaiting = Some(cycle);
        }
        self.worker.unpark();
    }
}

impl Drop for WorkerLink {
    fn drop(&mut self) {
        // Dropped off the real-time thread; wake the worker so it sees the
        // abandoned ring and exits now rather than at its next timeout.
        self.worker.unpark();
    }
}
