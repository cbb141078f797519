//! Clock drift correction for `audio.device_capture` and
//! `audio.device_playout`.
//!
//! The graph runs on the machine's timer; a sound card runs on its own
//! crystal. The two never agree exactly: tens of ppm between a card and the
//! system clock is usual, USB and Bluetooth devices can be further apart, and
//! NTP may slew the system clock by up to 500 ppm. Between a device and the
//! graph sits a ring, and with nothing correcting it the ring's level walks:
//! at 100 ppm the 20 ms playout cushion is gone after 200 s (an underrun, a
//! gap of silence, then the cushion again: a click every few minutes of a
//! call), or the ring fills and quanta are cut (capture: the delay grows by
//! 6 ms a minute until the buffer is full, then audio is dropped).
//!
//! The correction keeps the ring at the level it settled at in the first
//! second and a half after the graph started:
//!
//! - [`DriftControl`] reads the ring's level once a quantum, smooths it with
//!   two exponential averages of 0.5 s each (the level seen at quantum
//!   boundaries beats with the device's period), and turns the distance from
//!   its reference into a resampling step: `1 + error / 4 s`, within
//!   ±[`MAX_PPM`]. A proportional loop is enough: the ring integrates the
//!   clocks' difference, so a constant drift is held at a constant offset of
//!   drift x 4 s (0.4 ms at 100 ppm) and never accumulates. A stall (the
//!   device or the graph hanging for a while) leaves far more queued than
//!   that: past 80 ms over the reference the excess is dropped at once
//!   ([`DriftControl::excess`]), one jump instead of minutes of delay.
//! - [`Resampler`] changes the stream's rate by that step: a 16-tap
//!   Kaiser-windowed sinc, 256 phases interpolated linearly, so the pitch
//!   moves by at most 3.5 cents (2000 ppm) and the audio carries no clicks,
//!   where dropping or repeating samples would. At a step of exactly 1 it
//!   gives its input back bit for bit, [`DELAY`] samples later.
//!
//! - [`DeviceTiming`] takes the sawtooth out of the level. A device moves
//!   audio a period at a time (5-25 ms), so the ring's level read at a
//!   quantum boundary depends on where that boundary falls between two
//!   callbacks, and as the clocks slide past each other that phase moves
//!   slowly: averaging cannot remove a bias of up to half a period that
//!   changes over tens of seconds. The device callback stamps its time and
//!   period; the level is then counted as if the device moved audio
//!   continuously (playout: what the device still holds of its last period
//!   is added; capture: what it has heard since its last callback).
//!
//! Everything here that runs per quantum is real-time safe: no allocation,
//! lock or panic (buffers are sized at build).

/// Taps of the interpolation kernel.
pub const TAPS: usize = 16;
const HALF: usize = TAPS / 2;
/// Phases of the kernel table; the kernel between two is interpolated.
const PHASES: usize = 256;
/// Kaiser window shape: about 70 dB of stop band for 16 taps.
const KAISER_BETA: f64 = 7.0;

/// Samples the resampler delays its input by (0.17 ms at 48 kHz).
pub const DELAY: usize = HALF;

/// Largest correction, in parts per million of the rate.
pub const MAX_PPM: f64 = 2000.0;
/// How fast the level is pulled back: a step of `1 + error / TIME_CONSTANT`.
const TIME_CONSTANT_S: f64 = 4.0;
/// Time constant of each of the two smoothing averages of the level.
const SMOOTHING_S: f64 = 0.5;
/// Quanta left alone after the start (the graph's first cycles are uneven).
const WARMUP_S: f64 = 0.5;
/// How long the reference level is averaged over.
const REFERENCE_S: f64 = 1.0;
/// More queued than the reference by this much (a device or the graph
/// stalled) is dropped at once: resampling at 2000 ppm would take minutes
/// to bring 200 ms back, with the delay held high all that time.
const RESYNC_S: f64 = 0.08;

/// When the device last called back and how many frames it moved: written
/// by the device callback, read by the processor (a sequence lock of
/// atomics: no lock, no allocation either side).
#[derive(Debug)]
pub struct DeviceTiming {
    epoch: std::time::Instant,
    /// Time from [`DeviceTiming::set_now`] instead of the wall clock.
    manual: std::sync::atomic::AtomicBool,
    manual_ns: AtomicU64,
    seq: AtomicU64,
    stamp_ns: AtomicU64,
    frames: AtomicU64,
}

use std::sync::atomic::{AtomicU64, Ordering};

impl Default for DeviceTiming {
    fn default() -> Self {
        DeviceTiming {
            epoch: std::time::Instant::now(),
            manual: Default::default(),
            manual_ns: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            stamp_ns: AtomicU64::new(0),
            frames: AtomicU64::new(0),
        }
    }
}

impl DeviceTiming {
    /// Nanoseconds on the timing's clock: the wall clock, or the time last
    /// given to [`DeviceTiming::set_now`].
    pub fn now_ns(&self) -> u64 {
        if self.manual.load(Ordering::Acquire) {
            self.manual_ns.load(Ordering::Acquire)
        } else {
            self.epoch.elapsed().as_nanos() as u64
        }
    }

    /// Runs the timing on a clock of the caller's (a host that drives the
    /// device callback by hand, a simulation): `ns` from here on.
    pub fn set_now(&self, ns: u64) {
        self.manual_ns.store(ns, Ordering::Release);
        self.manual.store(true, Ordering::Release);
    }

    /// The device callback starts: called before it touches the ring, so a
    /// level read meanwhile is retried (it would pair the new level with the
    /// old stamp). Returns the callback's time for [`DeviceTiming::end`].
    pub fn begin(&self) -> u64 {
        let now = self.now_ns();
        self.seq.fetch_add(1, Ordering::AcqRel);
        now
    }

    /// The device callback that began at `at` moved `frames` frames.
    pub fn end(&self, at: u64, frames: usize) {
        self.stamp_ns.store(at, Ordering::Release);
        self.frames.store(frames as u64, Ordering::Release);
        self.seq.fetch_add(1, Ordering::AcqRel);
    }

    /// Reads `level()` between two looks at the last callback, so the
    /// level and the stamp belong together; returns the level and how far
    /// through its period the device is, in frames (0 ..= period) and the
    /// period (0 before the first callback).
    pub fn read(&self, rate: u32, mut level: impl FnMut() -> usize) -> (usize, u64, u64) {
        let mut last = (level(), 0, 0);
        for _ in 0..4 {
            let s1 = self.seq.load(Ordering::Acquire);
            let l = level();
            let stamp = self.stamp_ns.load(Ordering::Acquire);
            let frames = self.frames.load(Ordering::Acquire);
            let s2 = self.seq.load(Ordering::Acquire);
            let elapsed = self.now_ns().saturating_sub(stamp);
            let moved = (elapsed as u128 * rate as u128 / 1_000_000_000) as u64;
            last = (l, moved.min(frames), frames);
            if s1 == s2 && s1 % 2 == 0 {
                break;
            }
        }
        last
    }
}

/// The level of a playout ring as if the device took audio continuously:
/// the ring, plus what the device still holds of its last period.
pub fn playout_level(timing: &DeviceTiming, rate: u32, ring: impl FnMut() -> usize) -> usize {
    let (level, through, period) = timing.read(rate, ring);
    level + (period - through) as usize
}

/// The level of a capture ring as if the device handed audio over
/// continuously: the ring, plus what the device heard since its last period.
pub fn capture_level(timing: &DeviceTiming, rate: u32, ring: impl FnMut() -> usize) -> usize {
    let (level, through, _) = timing.read(rate, ring);
    level + through as usize
}

/// Reads a ring's level once a quantum and says how fast to resample.
#[derive(Clone, Debug)]
pub struct DriftControl {
    rate: f64,
    warmup: u32,
    window: u32,
    sum: f64,
    seen: u32,
    reference: Option<f64>,
    alpha: f64,
    s1: f64,
    s2: f64,
    step: f64,
}

impl DriftControl {
    /// For a ring of samples at `rate` Hz, read every `quantum_s` seconds.
    pub fn new(rate: u32, quantum_s: f64) -> Self {
        let q = quantum_s.max(1e-4);
        DriftControl {
            rate: rate.max(1) as f64,
            warmup: (WARMUP_S / q).ceil() as u32,
            window: ((REFERENCE_S / q).ceil() as u32).max(1),
            sum: 0.0,
            seen: 0,
            reference: None,
            alpha: 1.0 - (-q / SMOOTHING_S).exp(),
            s1: 0.0,
            s2: 0.0,
            step: 1.0,
        }
    }

    /// Takes this quantum's level (samples in the ring) and returns the
    /// resampling step: input samples per output sample. Above 1 when the
    /// ring holds more than its reference (consume faster / produce less),
    /// below 1 when it holds less.
    pub fn observe(&mut self, level: usize) -> f64 {
        let level = level as f64;
        if self.warmup > 0 {
            self.warmup -= 1;
            return self.step;
        }
        let Some(reference) = self.reference else {
            self.sum += level;
            self.seen += 1;
            if self.seen >= self.window {
                let r = self.sum / self.seen as f64;
                self.reference = Some(r);
                self.s1 = r;
                self.s2 = r;
            }
            return self.step;
        };
        self.s1 += self.alpha * (level - self.s1);
        self.s2 += self.alpha * (self.s1 - self.s2);
        let error_s = (self.s2 - reference) / self.rate;
        let max = MAX_PPM * 1e-6;
        self.step = 1.0 + (error_s / TIME_CONSTANT_S).clamp(-max, max);
        self.step
    }

    /// Samples to drop now to bring the ring back to its reference: 0 but
    /// after a stall left it more than [`RESYNC_S`] over (then everything
    /// over the reference, and the smoothing restarts there).
    pub fn excess(&mut self, level: usize) -> usize {
        let Some(reference) = self.reference else {
            return 0;
        };
        let over = level as f64 - reference;
        if over <= RESYNC_S * self.rate {
            return 0;
        }
        self.s1 = reference;
        self.s2 = reference;
        over as usize
    }

    /// The step last returned (1 until the reference is known).
    pub fn step(&self) -> f64 {
        self.step
    }

    /// The level the ring is held at, once measured.
    pub fn reference(&self) -> Option<f64> {
        self.reference
    }
}

/// The latency the correction adds to a stage at `rate` Hz: [`DELAY`]
/// samples when on, rounded up to the nanosecond.
pub fn added_latency(on: bool, rate: u32) -> std::time::Duration {
    if !on {
        return std::time::Duration::ZERO;
    }
    let nanos = (DELAY as u64 * 1_000_000_000).div_ceil(rate.max(1) as u64);
    std::time::Duration::from_nanos(nanos)
}

/// A step as parts per million (`(step - 1) x 10^6`, rounded).
pub fn step_ppm(step: f64) -> i64 {
    ((step - 1.0) * 1e6).round() as i64
}

/// Zeroth-order modified Bessel function of the first kind (for the Kaiser
/// window), by its power series.
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// The kernel for a fractional position `frac` in [0, 1]: tap `j` weighs
/// input sample `i - HALF + 1 + j` for an output at `i + frac`. Normalised
/// to a sum of 1; at `frac` 0 it is exactly the unit impulse at `HALF - 1`.
fn kernel_row(frac: f64, row: &mut [f32]) {
    let norm = bessel_i0(KAISER_BETA);
    let mut sum = 0.0;
    let mut w = [0.0f64; TAPS];
    for (j, wj) in w.iter_mut().enumerate() {
        let d = j as f64 - (HALF as f64 - 1.0) - frac;
        let sinc = if d == 0.0 {
            1.0
        } else {
            let x = std::f64::consts::PI * d;
            x.sin() / x
        };
        let r = d / HALF as f64;
        let win = if r.abs() >= 1.0 {
            0.0
        } else {
            bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / norm
        };
        // Exact zeros at the other integers keep frac 0 an identity.
        *wj = if d != 0.0 && d.fract() == 0.0 {
            0.0
        } else {
            sinc * win
        };
        sum += *wj;
    }
    for (o, wj) in row.iter_mut().zip(w) {
        *o = (wj / sum) as f32;
    }
}

/// Changes a stream's rate by a step near 1 (see the module docs).
pub struct Resampler {
    /// `(PHASES + 1) x TAPS` coefficients.
    table: Box<[f32]>,
    buf: Box<[f32]>,
    len: usize,
    /// Where the next output falls, in `buf`'s samples.
    pos: f64,
}

impl Resampler {
    /// A resampler that takes at most `max_input` samples between two
    /// calls to [`Resampler::produce`]. Allocates; call at build.
    pub fn new(max_input: usize) -> Self {
        let mut table = vec![0.0f32; (PHASES + 1) * TAPS].into_boxed_slice();
        for (p, row) in table.chunks_exact_mut(TAPS).enumerate() {
            kernel_row(p as f64 / PHASES as f64, row);
        }
        // TAPS - 1 zeros of history: the first input sample reaches the
        // output DELAY samples late, and at a step of 1 every call gives
        // back as many samples as it was fed.
        Resampler {
            table,
            buf: vec![0.0; TAPS + max_input + 4].into_boxed_slice(),
            len: TAPS - 1,
            pos: (HALF - 1) as f64,
        }
    }

    /// Room left for input before the next [`Resampler::produce`].
    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Appends input; returns how many samples fitted (all, when the caller
    /// keeps to `max_input`).
    pub fn feed(&mut self, input: &[f32]) -> usize {
        let n = input.len().min(self.room());
        self.buf[self.len..self.len + n].copy_from_slice(&input[..n]);
        self.len += n;
        n
    }

    /// Appends input from two slices (a ring's two halves).
    pub fn feed2(&mut self, a: &[f32], b: &[f32]) -> usize {
        let n = self.feed(a);
        if n < a.len() {
            return n;
        }
        n + self.feed(b)
    }

    /// Input samples still to be fed before `n` more outputs can be made at
    /// `step` (one more than the exact count, against rounding).
    pub fn needed_for(&self, n: usize, step: f64) -> usize {
        if n == 0 {
            return 0;
        }
        let last = self.pos + (n - 1) as f64 * step;
        let want = last.floor() as usize + HALF + 2;
        want.saturating_sub(self.len)
    }

    /// Writes outputs into `out`, advancing `step` input samples per
    /// output, while input lasts and `out` has room; returns how many.
    pub fn produce(&mut self, step: f64, out: &mut [f32]) -> usize {
        let step = if step.is_finite() && step > 0.5 && step < 2.0 {
            step
        } else {
            1.0
        };
        let mut made = 0;
        for o in out.iter_mut() {
            let i = self.pos.floor();
            let base = i as usize;
            if base + HALF >= self.len {
                break;
            }
            let ph = (self.pos - i) * PHASES as f64;
            let p = (ph.floor() as usize).min(PHASES - 1);
            let w = (ph - p as f64) as f32;
            let r0 = &self.table[p * TAPS..(p + 1) * TAPS];
            let r1 = &self.table[(p + 1) * TAPS..(p + 2) * TAPS];
            let x = &self.buf[base + 1 - HALF..base + 1 + HALF];
            let dot = |r: &[f32]| x.iter().zip(r).map(|(&s, &c)| s * c).sum::<f32>();
            let a0 = dot(r0);
            // w == 0 (every output at a step of 1) is phase 0 exactly.
            *o = if w == 0.0 {
                a0
            } else {
                a0 + w * (dot(r1) - a0)
            };
            made += 1;
            self.pos += step;
        }
        // Drop the history no later output can reach.
        let keep_from = (self.pos.floor() as usize + 1)
            .saturating_sub(HALF)
            .min(self.len);
        if keep_from > 0 {
            self.buf.copy_within(keep_from..self.len, 0);
            self.len -= keep_from;
            self.pos -= keep_from as f64;
        }
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_at_phase_zero_is_the_identity_and_every_row_sums_to_one() {
        let r = Resampler::new(960);
        for (p, row) in r.table.chunks_exact(TAPS).enumerate() {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "row {p} sums to {s}");
        }
        let row0 = &r.table[..TAPS];
        for (j, &c) in row0.iter().enumerate() {
            assert_eq!(c, if j == HALF - 1 { 1.0 } else { 0.0 }, "tap {j}");
        }
        let last = &r.table[PHASES * TAPS..];
        for (j, &c) in last.iter().enumerate() {
            assert_eq!(c, if j == HALF { 1.0 } else { 0.0 }, "tap {j} of phase 1");
        }
    }

    #[test]
    fn at_a_step_of_one_the_input_comes_back_bit_for_bit_delay_samples_late() {
        let mut r = Resampler::new(960);
        let input: Vec<f32> = (0..9600)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let mut out = Vec::new();
        let mut scratch = vec![0.0f32; 2000];
        for q in input.chunks(960) {
            assert_eq!(r.feed(q), q.len());
            let n = r.produce(1.0, &mut scratch);
            assert_eq!(n, q.len(), "as many out as in");
            out.extend_from_slice(&scratch[..n]);
        }
        assert!(out[..DELAY].iter().all(|&s| s == 0.0));
        assert_eq!(&out[DELAY..], &input[..input.len() - DELAY]);
    }

    /// Residual of a pure sine's recurrence x[n+1] = 2 cos(w) x[n] - x[n-1]:
    /// zero for a clean sine, large at a click, a gap or a skipped sample.
    fn worst_recurrence(x: &[f32], w: f64) -> f64 {
        let c = 2.0 * w.cos();
        x.windows(3)
            .map(|t| (t[2] as f64 - c * t[1] as f64 + t[0] as f64).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn a_sine_resampled_off_one_stays_a_clean_sine_at_the_scaled_pitch() {
        for &ppm in &[-2000.0, -150.0, 37.0, 2000.0] {
            let step = 1.0 + ppm * 1e-6;
            let w_in = 2.0 * std::f64::consts::PI * 1000.0 / 48_000.0;
            let mut r = Resampler::new(960);
            let mut out = Vec::new();
            let mut scratch = vec![0.0f32; 2000];
            let mut k = 0usize;
            for _ in 0..100 {
                let q: Vec<f32> = (k..k + 960)
                    .map(|i| (0.5 * (w_in * i as f64).sin()) as f32)
                    .collect();
                k += 960;
                r.feed(&q);
                let n = r.produce(step, &mut scratch);
                out.extend_from_slice(&scratch[..n]);
            }
            let expect = (100.0 * 960.0 / step) as usize;
            assert!(
                out.len().abs_diff(expect) <= 2,
                "{ppm} ppm: {} out, {expect} expected",
                out.len()
            );
            let tail = &out[TAPS..];
            let worst = worst_recurrence(tail, w_in * step);
            assert!(worst < 2e-4, "{ppm} ppm: residual {worst}");
            // The same check finds one skipped sample.
            let mut skipped = tail[..4000].to_vec();
            skipped.remove(2000);
            assert!(worst_recurrence(&skipped, w_in * step) > 2e-3);
        }
    }

    #[test]
    fn needed_for_is_enough_to_produce_a_whole_quantum() {
        for &step in &[0.998, 1.0, 1.000_37, 1.002] {
            let mut r = Resampler::new(2000);
            let mut scratch = vec![0.0f32; 960];
            let mut fed = 0usize;
            for _ in 0..500 {
                let need = r.needed_for(960, step);
                assert!(need <= r.room());
                let q = vec![0.25f32; need];
                r.feed(&q);
                fed += need;
                assert_eq!(r.produce(step, &mut scratch), 960, "step {step}");
            }
            let expect = 500.0 * 960.0 * step;
            assert!((fed as f64 - expect).abs() < 40.0, "step {step}: fed {fed}");
        }
    }

    #[test]
    fn the_control_holds_its_reference_and_pushes_back_on_either_side() {
        // 20 ms quanta at 48 kHz: 25 quanta of warm-up, 50 of reference.
        let mut c = DriftControl::new(48_000, 0.02);
        for _ in 0..75 {
            assert_eq!(c.observe(2000), 1.0);
        }
        assert_eq!(c.reference(), Some(2000.0));
        for _ in 0..500 {
            c.observe(2000);
        }
        assert_eq!(c.step(), 1.0, "at the reference nothing moves");
        // Fuller: consume faster / produce less.
        for _ in 0..500 {
            c.observe(2096);
        }
        let ppm = step_ppm(c.step());
        assert!((480..=520).contains(&ppm), "{ppm}");
        // Far emptier: the step is capped.
        for _ in 0..500 {
            c.observe(0);
        }
        assert_eq!(step_ppm(c.step()), -(MAX_PPM as i64));
    }

    #[test]
    fn a_stall_is_dropped_at_once_and_ordinary_wander_is_not() {
        let mut c = DriftControl::new(48_000, 0.02);
        assert_eq!(c.excess(100_000), 0, "no reference yet");
        for _ in 0..75 {
            c.observe(2000);
        }
        // 80 ms over is left to the resampler; more is dropped to the reference.
        assert_eq!(c.excess(2000 + 3840), 0);
        assert_eq!(c.excess(2000 + 3841), 3841);
        assert_eq!(c.excess(2000 + 14_400), 14_400);
        // The smoothing starts again at the reference: no pull-back after.
        assert_eq!(c.observe(2000), 1.0);
    }

    #[test]
    fn bad_steps_fall_back_to_one() {
        for step in [f64::NAN, f64::INFINITY, 0.0, -1.0, 5.0] {
            let mut r = Resampler::new(960);
            let q: Vec<f32> = (0..960).map(|i| i as f32).collect();
            r.feed(&q);
            let mut out = vec![0.0f32; 2000];
            assert_eq!(r.produce(step, &mut out), 960, "{step}");
        }
    }
}
