//! The noise suppressor behind `audio.denoise`: a sans-IO core that takes
//! the steady sound of the room (a fan, an air conditioner, a computer's
//! hum, a street) out of the microphone, bin by bin, and leaves a voice.
//!
//! **What is noise.** Per frequency bin, the power smoothed over ~10 ms,
//! and its minimum over the last ~3 s (four windows of 0.75 s: a voice
//! pauses within that, a fan does not), times the minimum's bias: the noise
//! the room makes there. A noise that grows is followed within 3 s, one
//! that falls at once. (Over 1.6 s, synthesised speech's own quiet stretches
//! read as a noise floor 30 dB over a -80 dBFS room, and clean speech lost
//! 0.2 PESQ-WB; over 3 s, none.)
//!
//! **What is taken out.** A Wiener gain per bin from the voice-to-noise
//! ratio, smoothed the decision-directed way (Ephraim-Malah, 0.97 a frame)
//! so bins do not flicker between frames (musical noise), never deeper
//! than `depth` dB: a bin that is all noise is turned down by `depth`, one
//! that is all voice passes. Not to silence: what is left of the noise
//! stays as it was, only quieter, which is what a listener expects of a
//! room.
//!
//! Digital silence (a muted microphone, exact zeros) passes untouched and
//! leaves the estimate as it was; a room quieter than -70 dBFS passes
//! untouched too (nothing there is worth a voice's losses). Frames of 10 ms, 5 ms apart
//! ([`super::stft`]): latency one hop. No allocation after
//! [`NoiseSuppressor::new`].

use realfft::num_complex::Complex;

use super::stft::{clean, flush, SineStft};

/// Smoothing of each bin's power per frame (about 10 ms at 5 ms frames):
/// short enough to fall to the room's level in a voice's 150 ms pauses. (At
/// 0.85, ~30 ms, speech at -20 dBFS took ~400 ms to come down, and a -79
/// dBFS room under speech read -52 to -67.)
const SMOOTH: f32 = 0.6;
/// The minimum is taken over this many windows of [`WINDOW_S`].
const WINDOWS: usize = 4;
const WINDOW_S: f32 = 0.75;
/// The minimum of a smoothed power reads under its mean by about this much
/// (measured on white and low-passed noise through these frames: the
/// estimate within 1 dB of the noise's power; a steady tone, whose power
/// does not fluctuate, reads ~5 dB high).
const BIAS: f32 = 4.0;
/// Decision-directed smoothing of the voice-to-noise ratio.
const DIRECTED: f32 = 0.97;
/// Frames whose mean square is under this (-100 dBFS: digital silence)
/// pass and leave the estimate alone.
const QUIET: f32 = 1e-10;
/// A noise under this mean square (-70 dBFS) is not worth the voice's
/// losses: frames pass as they came (on clean speech, PESQ-WB 4.31 with
/// the gains against 4.41 without).
const INAUDIBLE: f32 = 1e-7;
/// ...and gains come back over this (-68 dBFS).
const AUDIBLE: f32 = 1.6e-7;
/// The gauges' averaging time, seconds.
const GAUGE_S: f32 = 1.0;

/// What the suppressor did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DenoiseStats {
    /// Frames run.
    pub frames: u64,
    /// Frames passed untouched as digital silence.
    pub silent: u64,
    /// Times the state was cleared for not being finite.
    pub resets: u64,
}

/// A noise suppressor: per-bin Wiener gains against a minimum-statistics
/// noise estimate.
pub struct NoiseSuppressor {
    hop: usize,
    stft: SineStft,
    hist: Vec<f32>,
    spec: Vec<Complex<f32>>,
    /// Per bin: smoothed power, the current window's minimum, the last
    /// windows' minima (`WINDOWS - 1` each, a ring), the noise estimate,
    /// the last gain and power.
    smooth: Vec<f32>,
    current_min: Vec<f32>,
    past_min: Vec<f32>,
    noise: Vec<f32>,
    gain: Vec<f32>,
    last: Vec<f32>,
    /// Frames into the current window, frames a window, ring position.
    in_window: usize,
    window_frames: usize,
    ring: usize,
    started: bool,
    /// Frames pass: the noise is under -70 dBFS.
    inaudible: bool,
    min_gain: f32,
    gauge_avg: f32,
    in_pow: f32,
    out_pow: f32,
    noise_pow: f32,
    stats: DenoiseStats,
}

impl NoiseSuppressor {
    /// A suppressor for audio at `rate` Hz in frames `hop` samples apart
    /// (its latency), turning noise down by at most `depth_db` dB.
    pub fn new(rate: u32, hop: usize, depth_db: f32) -> Self {
        let stft = SineStft::new(hop);
        let bins = stft.bins();
        let hop_s = hop as f32 / rate.max(1) as f32;
        NoiseSuppressor {
            hop,
            stft,
            hist: vec![0.0; 2 * hop],
            spec: vec![Complex::new(0.0, 0.0); bins],
            smooth: vec![0.0; bins],
            current_min: vec![f32::MAX; bins],
            past_min: vec![f32::MAX; bins * (WINDOWS - 1)],
            noise: vec![0.0; bins],
            gain: vec![1.0; bins],
            last: vec![0.0; bins],
            in_window: 0,
            window_frames: ((WINDOW_S / hop_s).round() as usize).max(1),
            ring: 0,
            started: false,
            inaudible: false,
            min_gain: 10f32.powf(-depth_db.abs() / 20.0),
            gauge_avg: 1.0 - (-hop_s / GAUGE_S).exp(),
            in_pow: 0.0,
            out_pow: 0.0,
            noise_pow: 0.0,
            stats: DenoiseStats::default(),
        }
    }

    /// Samples between frames: the latency.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// What it did so far.
    pub fn stats(&self) -> DenoiseStats {
        self.stats
    }

    /// How much quieter the output is than the input, dB (powers averaged
    /// over about a second; in a pause all of it is noise taken out).
    pub fn removed_db(&self) -> f32 {
        if self.in_pow <= 0.0 || self.out_pow <= 0.0 {
            return 0.0;
        }
        10.0 * (self.in_pow / self.out_pow).log10()
    }

    /// The noise it hears, dBFS (a sine at full scale is -3 dBFS), averaged
    /// over about a second; -120 before it has heard anything.
    pub fn noise_dbfs(&self) -> f32 {
        10.0 * self.noise_pow.max(1e-12).log10()
    }

    /// Forgets the noise (the output stays continuous).
    pub fn reset(&mut self) {
        self.smooth.fill(0.0);
        self.current_min.fill(f32::MAX);
        self.past_min.fill(f32::MAX);
        self.noise.fill(0.0);
        self.gain.fill(1.0);
        self.last.fill(0.0);
        self.in_window = 0;
        self.ring = 0;
        self.started = false;
        self.inaudible = false;
        self.in_pow = 0.0;
        self.out_pow = 0.0;
        self.noise_pow = 0.0;
    }

    /// A stretch of audio, a whole number of hops: `out` is `input` with
    /// the noise turned down, `hop` samples late.
    pub fn process(&mut self, input: &[f32], out: &mut [f32]) {
        let h = self.hop;
        assert!(input.len() == out.len() && input.len() % h == 0);
        for (i, o) in input.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
            self.hist.copy_within(h.., 0);
            self.hist[h..].copy_from_slice(i);
            self.frame(o);
        }
    }

    fn frame(&mut self, o: &mut [f32]) {
        self.stats.frames += 1;
        let power = self.stft.analyse(&self.hist, &mut self.spec);
        if power < QUIET {
            self.stats.silent += 1;
            self.stft.pass(&self.hist, o);
            return;
        }
        let (noise_sum, finite) = self.gains();
        let h = self.hop;
        // Bin powers of a sine-windowed 2h-sample frame back to a mean
        // square: over all 2h bins sum |X|^2 = 2h sum (w x)^2 = 2h h ms
        // (the window's mean square is 1/2); the h + 1 bins here are half.
        let noise_ms = noise_sum / (h * h) as f32;
        if !finite {
            self.reset();
            self.stats.resets += 1;
            self.stft.pass(&self.hist, o);
            return;
        }
        // Pass under -70 dBFS, gains again over -68 (no flapping at the
        // edge).
        self.inaudible = noise_ms < if self.inaudible { AUDIBLE } else { INAUDIBLE };
        if self.inaudible {
            // Nothing worth taking out: the frame as it came.
            self.stft.pass(&self.hist, o);
        } else if !self.stft.synthesise(&mut self.spec, o) {
            self.reset();
            self.stats.resets += 1;
            self.stft.pass(&self.hist, o);
            return;
        }
        let (mut in_e, mut out_e) = (0.0f32, 0.0f32);
        for (x, y) in self.hist[..h].iter().zip(o.iter()) {
            let (x, y) = (clean(*x), clean(*y));
            in_e += x * x;
            out_e += y * y;
        }
        let a = self.gauge_avg;
        self.in_pow = flush(self.in_pow + a * (in_e / h as f32 - self.in_pow));
        self.out_pow = flush(self.out_pow + a * (out_e / h as f32 - self.out_pow));
        self.noise_pow = flush(self.noise_pow + a * (noise_ms - self.noise_pow));
    }

    /// The noise estimate and the gains of this frame, applied to `spec`.
    /// Returns the noise estimate's sum over bins and whether all is
    /// finite.
    fn gains(&mut self) -> (f32, bool) {
        let bins = self.spec.len();
        let tiny = 1e-12f32;
        let new_window = self.in_window + 1 >= self.window_frames;
        let mut noise_sum = 0.0f32;
        let mut finite = true;
        for k in 0..bins {
            let o = flush(self.spec[k].norm_sqr());
            if !self.started {
                self.smooth[k] = o;
            }
            let s = flush(SMOOTH * self.smooth[k] + (1.0 - SMOOTH) * o);
            self.smooth[k] = s;
            self.current_min[k] = self.current_min[k].min(s);
            let mut m = self.current_min[k];
            for w in 0..WINDOWS - 1 {
                m = m.min(self.past_min[w * bins + k]);
            }
            if new_window {
                self.past_min[self.ring * bins + k] = self.current_min[k];
                self.current_min[k] = s;
            }
            let n = BIAS * m;
            self.noise[k] = n;
            // DC and Nyquist count once in Parseval's sum, the others
            // twice (their mirror): halve them here, as the others are.
            noise_sum += if k == 0 || k + 1 == bins { 0.5 * n } else { n };
            // Voice over noise: a posteriori, and a priori decision-
            // directed (the voice as last kept, over the noise now).
            let post = o / (n + tiny);
            let kept = self.gain[k] * self.gain[k] * self.last[k];
            let prior =
                (DIRECTED * kept / (n + tiny) + (1.0 - DIRECTED) * (post - 1.0).max(0.0)).min(1e6);
            let g = (prior / (1.0 + prior)).max(self.min_gain);
            finite &= g.is_finite() && n.is_finite();
            self.gain[k] = g;
            self.last[k] = o;
            self.spec[k] *= g;
        }
        self.started = true;
        if new_window {
            self.in_window = 0;
            self.ring = (self.ring + 1) % (WINDOWS - 1);
        } else {
            self.in_window += 1;
        }
        (noise_sum, finite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: &mut u32) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 17;
        *seed ^= *seed << 5;
        (*seed as f32 / u32::MAX as f32) * 2.0 - 1.0
    }

    fn energy(v: &[f32]) -> f64 {
        v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>()
    }

    fn db(a: f64, b: f64) -> f64 {
        10.0 * (a / b).log10()
    }

    #[test]
    fn steady_noise_is_turned_down_by_the_depth_and_its_level_read() {
        let mut s = NoiseSuppressor::new(16_000, 80, 15.0);
        let mut seed = 1;
        // White noise at -40 dBFS mean square.
        let x: Vec<f32> = (0..16_000 * 8)
            .map(|_| 0.01 * 3f32.sqrt() * noise(&mut seed))
            .collect();
        let mut out = vec![0.0; x.len()];
        s.process(&x, &mut out);
        let n = x.len();
        let removed = db(
            energy(&x[n - 32_000 - 80..n - 80]),
            energy(&out[n - 32_000..]),
        );
        assert!(
            (12.0..16.0).contains(&removed),
            "noise down by {removed:.1} dB"
        );
        assert!(
            (s.removed_db() - removed as f32).abs() < 2.0,
            "gauge {}",
            s.removed_db()
        );
        // Measured -41.6 (the minimum's bias is a mean over bins).
        let level = s.noise_dbfs();
        assert!((level + 40.0).abs() < 2.5, "noise read at {level:.1} dBFS");
    }

    #[test]
    fn a_voice_over_the_noise_keeps_its_level() {
        // A voice-like tone in bursts (300 ms on, 200 off) 15 dB over
        // white noise.
        let mut s = NoiseSuppressor::new(16_000, 80, 15.0);
        let mut seed = 2;
        let n = 16_000 * 6;
        let voice: Vec<f32> = (0..n)
            .map(|i| {
                let on = i % 8000 < 4800;
                let t = i as f32 / 16_000.0;
                if on {
                    0.1 * ((std::f32::consts::TAU * 220.0 * t).sin()
                        + 0.5 * (std::f32::consts::TAU * 440.0 * t).sin()
                        + 0.25 * (std::f32::consts::TAU * 660.0 * t).sin())
                } else {
                    0.0
                }
            })
            .collect();
        let room: Vec<f32> = (0..n).map(|_| 0.01 * noise(&mut seed)).collect();
        let x: Vec<f32> = voice.iter().zip(&room).map(|(v, r)| v + r).collect();
        let mut out = vec![0.0; n];
        s.process(&x, &mut out);
        let r = n - 48_000..n;
        let lag = |v: &[f32]| v[r.start - 80..r.end - 80].to_vec();
        let (voice_r, room_r) = (lag(&voice), lag(&room));
        let dot: f64 = out[r.clone()]
            .iter()
            .zip(&voice_r)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let level = 20.0 * (dot / energy(&voice_r)).log10();
        assert!(level > -1.0, "the voice at {level:.1} dB");
        // In the pauses (from 50 ms into each), the noise is down.
        let (mut o, mut i) = (0.0f64, 0.0f64);
        for t in r.clone() {
            let p = (t - 80) % 8000;
            if p > 4800 + 800 {
                o += (out[t] as f64).powi(2);
                i += (room_r[t - r.start] as f64).powi(2);
            }
        }
        let down = db(i, o);
        assert!(down > 10.0, "noise in the pauses down by only {down:.1} dB");
    }

    /// White noise at `dbfs` (mean square).
    fn white(n: usize, dbfs: f32, seed: &mut u32) -> Vec<f32> {
        let a = 10f32.powf(dbfs / 20.0) * 3f32.sqrt();
        (0..n).map(|_| a * noise(seed)).collect()
    }

    /// How much quieter `out` is than `x` over `r` (output a hop late).
    fn removed(x: &[f32], out: &[f32], r: std::ops::Range<usize>) -> f64 {
        db(energy(&x[r.start - 80..r.end - 80]), energy(&out[r]))
    }

    #[test]
    fn a_noise_that_rises_is_followed_within_three_seconds_and_one_that_falls_at_once() {
        let mut s = NoiseSuppressor::new(16_000, 80, 15.0);
        let mut seed = 4;
        let fs = 16_000;
        let mut x = white(4 * fs, -60.0, &mut seed);
        x.extend(white(6 * fs, -40.0, &mut seed));
        x.extend(white(3 * fs, -60.0, &mut seed));
        let mut out = vec![0.0; x.len()];
        s.process(&x, &mut out);
        // Risen 20 dB: for two seconds and more it is taken for a voice
        // (a window of 1.5 s would have it as noise from 5.25 s)...
        let early = removed(&x, &out, 5 * fs + fs / 2..6 * fs + fs / 2);
        assert!(
            early < 5.0,
            "a new noise taken out by {early:.1} dB after 1.5-2.5 s"
        );
        // ...and within the 3 s window, noise again.
        let late = removed(&x, &out, 7 * fs + fs / 2..8 * fs + fs / 2);
        assert!(
            late > 11.0,
            "the risen noise taken out by only {late:.1} dB"
        );
        // Fallen back: noise at once.
        let fallen = removed(&x, &out, 10 * fs + fs / 10..10 * fs + fs / 2);
        assert!(
            fallen > 11.0,
            "the fallen noise taken out by only {fallen:.1} dB"
        );
    }

    #[test]
    fn a_muted_microphone_leaves_the_estimate_as_it_was() {
        let mut s = NoiseSuppressor::new(16_000, 80, 15.0);
        let mut seed = 5;
        let fs = 16_000;
        let mut x = white(4 * fs, -40.0, &mut seed);
        x.extend(std::iter::repeat_n(0.0, 2 * fs));
        x.extend(white(fs, -40.0, &mut seed));
        let mut out = vec![0.0; x.len()];
        s.process(&x, &mut out);
        // The room comes back and is noise from its first frames.
        let back = removed(&x, &out, 6 * fs + 400..6 * fs + fs / 5);
        assert!(
            back > 11.0,
            "the room after the mute down by only {back:.1} dB"
        );
        assert!(s.stats().silent > 350);
    }

    #[test]
    fn digital_silence_passes_bit_exact_and_the_output_stays_finite() {
        let mut s = NoiseSuppressor::new(48_000, 240, 20.0);
        let zero = vec![0.0f32; 4800];
        let mut out = vec![1.0f32; 4800];
        s.process(&zero, &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
        assert_eq!(s.stats().silent, 20);
        let mut seed = 3;
        let mut x: Vec<f32> = (0..4800).map(|_| 0.3 * noise(&mut seed)).collect();
        x[100] = f32::NAN;
        x[2000] = f32::INFINITY;
        x[3000] = 1e30;
        s.process(&x, &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
        // In frames that pass (silence, a quiet room) too, and the gauges
        // stay finite.
        for floor in [0.0f32, 1e-4] {
            let mut s = NoiseSuppressor::new(48_000, 240, 20.0);
            let mut x: Vec<f32> = (0..48_000).map(|_| floor * noise(&mut seed)).collect();
            x[1000] = f32::NAN;
            x[20_000] = f32::INFINITY;
            x[30_000] = 1e30;
            let mut out = vec![0.0f32; 48_000];
            s.process(&x, &mut out);
            assert!(out.iter().all(|v| v.is_finite() && v.abs() <= 4.0));
            assert!(s.removed_db().is_finite() && s.noise_dbfs().is_finite());
        }
    }
}
