//! The worker thread behind the Codec2 stages.
//!
//! The `codec2` crate (pure Rust) allocates hundreds of times per frame, so
//! it cannot run in `process`. The stage's processor only moves samples and
//! frames through `rtrb` rings; a worker thread owned by the processor does
//! the codec work. The processor wakes the worker with
//! [`std::thread::Thread::unpark`], which neither allocates nor locks (an
//! atomic swap, plus a futex wake only when the worker sleeps). A wake is
//! never lost (an unpark before the park makes the park return at once),
//! so an idle worker sleeps until woken: a call's four receive chains each
//! have a worker that an Opus call never wakes, and polling them every 5 ms
//! cost 800 wake-ups a second. It also wakes on its own once a second, a
//! guard that would make a forgotten wake heard rather than hang.
//!
//! Dropping the handle (off the real-time thread: the engine returns old
//! schedules to the control side to be dropped) stops and joins the worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use super::profile::Codec2Mode;

/// How long the worker sleeps when idle and not woken (a guard only: every
/// producer wakes it).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// A running worker. Wakes it with [`WorkerHandle::wake`].
pub struct WorkerHandle {
    thread: Thread,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts a worker that calls `step` until stopped; `step` returns
    /// whether it did any work (if not, the worker sleeps until woken).
    pub fn spawn(
        name: String,
        mut step: impl FnMut() -> bool + Send + 'static,
    ) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_w = stop.clone();
        let join = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                while !stop_w.load(Ordering::Acquire) {
                    if !step() {
                        std::thread::park_timeout(IDLE_WAIT);
                    }
                }
            })
            .map_err(|e| format!("could not start the codec worker thread {name:?}: {e}"))?;
        Ok(WorkerHandle {
            thread: join.thread().clone(),
            stop,
            join: Some(join),
        })
    }

    /// Wakes the worker. Real-time safe: no allocation, no lock.
    #[inline]
    pub fn wake(&self) {
        self.thread.unpark();
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.thread.unpark();
        if let Some(j) = self.join.take() {
            // A worker that panicked has nothing left to clean up.
            let _ = j.join();
        }
    }
}

/// A Codec2 instance that survives a panic inside the crate: the call is
/// caught and the codec rebuilt, so one bad frame cannot stop the stream.
pub struct SafeCodec2 {
    mode: Codec2Mode,
    codec: codec2::Codec2,
}

impl SafeCodec2 {
    pub fn new(mode: Codec2Mode) -> Self {
        SafeCodec2 {
            mode,
            codec: codec2::Codec2::new(mode.to_lib()),
        }
    }

    pub fn mode(&self) -> Codec2Mode {
        self.mode
    }

    /// Encodes one frame of `frame_samples_8k` samples into `bits`.
    pub fn encode(&mut self, bits: &mut [u8], speech: &[i16]) -> bool {
        let codec = &mut self.codec;
        let ok =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| codec.encode(bits, speech)))
                .is_ok();
        if !ok {
            self.codec = codec2::Codec2::new(self.mode.to_lib());
        }
        ok
    }

    /// Decodes one frame of bits into `frame_samples_8k` samples.
    pub fn decode(&mut self, speech: &mut [i16], bits: &[u8]) -> bool {
        let codec = &mut self.codec;
        let ok =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| codec.decode(speech, bits)))
                .is_ok();
        if !ok {
            self.codec = codec2::Codec2::new(self.mode.to_lib());
            speech.fill(0);
        }
        ok
    }
}

/// Float sample to 16-bit, clamped.
#[inline]
pub fn to_i16(x: f32) -> i16 {
    (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

/// 16-bit sample to float.
#[inline]
pub fn to_f32(x: i16) -> f32 {
    f32::from(x) / 32768.0
}
