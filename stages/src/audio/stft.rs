//! Sine-windowed short-time Fourier frames, for stages that apply a gain
//! per frequency bin (the echo suppressor, the noise suppressor): frames of
//! `2 hop` samples, `hop` apart, a sine (square-root Hann) window on the
//! way in and again on the way out. The windows' squares add up to one, so
//! a frame whose gains are all one comes out as it went in; the output is
//! `hop` samples late. A frame passed with [`SineStft::pass`] after another
//! passed frame is the input itself, bit for bit (non-finite samples made
//! silence and anything past +-4 clamped, as everywhere here), with no FFT
//! run.
//!
//! No allocation after [`SineStft::new`].

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

/// Input as the analysis takes it: non-finite samples are silence, and
/// nothing past +-4 (12 dB over full scale) gets in to overflow a power.
pub fn clean(s: f32) -> f32 {
    if s.is_finite() {
        s.clamp(-4.0, 4.0)
    } else {
        0.0
    }
}

/// Powers under this are zero to the gain stages: state decaying through
/// silence never reaches the subnormal range (slow on any CPU without
/// flush-to-zero).
pub const NEGLIGIBLE: f32 = 1e-30;

/// A power, with what is negligible made zero.
pub fn flush(p: f32) -> f32 {
    if p < NEGLIGIBLE {
        0.0
    } else {
        p
    }
}

/// Analysis and overlap-add synthesis of sine-windowed frames.
pub struct SineStft {
    hop: usize,
    window: Vec<f32>,
    fwd: Arc<dyn RealToComplex<f32>>,
    inv: Arc<dyn ComplexToReal<f32>>,
    scratch: Vec<Complex<f32>>,
    time: Vec<f32>,
    /// What the previous frame adds to the next `hop` output samples, and
    /// whether it passed untouched.
    carry: Vec<f32>,
    prev_pass: bool,
}

impl SineStft {
    /// Frames `hop` apart (`hop >= 1`).
    pub fn new(hop: usize) -> Self {
        assert!(hop >= 1, "at least one sample a hop");
        let n = 2 * hop;
        let mut planner = RealFftPlanner::<f32>::new();
        let fwd = planner.plan_fft_forward(n);
        let inv = planner.plan_fft_inverse(n);
        let scratch_len = fwd.get_scratch_len().max(inv.get_scratch_len());
        SineStft {
            hop,
            window: (0..n)
                .map(|i| (std::f32::consts::PI * i as f32 / n as f32).sin())
                .collect(),
            fwd,
            inv,
            scratch: vec![Complex::new(0.0, 0.0); scratch_len],
            time: vec![0.0; n],
            carry: vec![0.0; hop],
            prev_pass: true,
        }
    }

    /// Samples between frames: the latency.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Frequency bins of a frame: `hop + 1`, bin `k` at `k rate / (2 hop)`.
    pub fn bins(&self) -> usize {
        self.hop + 1
    }

    /// The spectrum of `frame` (`2 hop` samples, the oldest first, cleaned
    /// with [`clean`]) windowed, into `spec` (`hop + 1` bins). Returns the
    /// frame's mean square (cleaned, before the window).
    pub fn analyse(&mut self, frame: &[f32], spec: &mut [Complex<f32>]) -> f32 {
        let mut power = 0.0f32;
        for ((t, w), &x) in self.time.iter_mut().zip(&self.window).zip(frame) {
            let x = clean(x);
            power += x * x;
            *t = w * x;
        }
        // Lengths come from the plan: the FFT cannot fail.
        let _ = self
            .fwd
            .process_with_scratch(&mut self.time, spec, &mut self.scratch);
        power / frame.len() as f32
    }

    /// The frame `spec` (as [`Self::analyse`] left it, gains applied) back
    /// to samples: the next `hop` output samples into `out`. False, with
    /// nothing written or kept, if it is not finite (pass the frame instead).
    pub fn synthesise(&mut self, spec: &mut [Complex<f32>], out: &mut [f32]) -> bool {
        let h = self.hop;
        let bins = spec.len();
        spec[0].im = 0.0;
        spec[bins - 1].im = 0.0;
        let _ = self
            .inv
            .process_with_scratch(spec, &mut self.time, &mut self.scratch);
        if !self.time.iter().all(|v| v.is_finite()) {
            return false;
        }
        let scale = 1.0 / (2 * h) as f32;
        let (w1, w2) = self.window.split_at(h);
        let (t1, t2) = self.time.split_at(h);
        for ((((o, c), w1), w2), (t1, t2)) in out
            .iter_mut()
            .zip(&mut self.carry)
            .zip(w1)
            .zip(w2)
            .zip(t1.iter().zip(t2))
        {
            *o = *c + w1 * t1 * scale;
            *c = w2 * t2 * scale;
        }
        self.prev_pass = false;
        true
    }

    /// `frame` passed with gains of one, no FFT: the next `hop` output
    /// samples into `out`, the frame's first half as it came (cleaned) when
    /// the frame before passed too.
    pub fn pass(&mut self, frame: &[f32], out: &mut [f32]) {
        let h = self.hop;
        if self.prev_pass {
            // As it came, but for non-finite or out-of-range samples (the
            // analysed frames clean them too). The sample itself, not a
            // clamp of it: under flush-to-zero (the stages run so) a clamp
            // makes a subnormal sample zero.
            for (o, &x) in out.iter_mut().zip(&frame[..h]) {
                *o = if x.abs() <= 4.0 { x } else { clean(x) };
            }
        } else {
            for (((o, c), w), &x) in out
                .iter_mut()
                .zip(&self.carry)
                .zip(&self.window[..h])
                .zip(&frame[..h])
            {
                *o = c + w * w * clean(x);
            }
        }
        for ((c, w), &x) in self
            .carry
            .iter_mut()
            .zip(&self.window[h..])
            .zip(&frame[h..])
        {
            *c = w * w * clean(x);
        }
        self.prev_pass = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_gains_of_one_come_out_as_they_went_in_a_hop_late() {
        let hop = 80;
        let mut stft = SineStft::new(hop);
        let mut seed = 1u32;
        let x: Vec<f32> = (0..4000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as f32 / u32::MAX as f32 - 0.5
            })
            .collect();
        let mut hist = vec![0.0f32; 2 * hop];
        let mut spec = vec![Complex::new(0.0, 0.0); stft.bins()];
        let mut out = vec![0.0f32; x.len()];
        for (f, (i, o)) in x
            .chunks_exact(hop)
            .zip(out.chunks_exact_mut(hop))
            .enumerate()
        {
            hist.copy_within(hop.., 0);
            hist[hop..].copy_from_slice(i);
            // Passed and transformed frames in turn, three of each.
            if (f / 3) % 2 == 0 {
                stft.pass(&hist, o);
            } else {
                stft.analyse(&hist, &mut spec);
                assert!(stft.synthesise(&mut spec, o));
            }
        }
        for i in hop..x.len() {
            assert!((out[i] - x[i - hop]).abs() < 1e-5, "{i}");
        }
        // The second and third passed frames of a run: bit for bit.
        for f in (6..x.len() / hop).filter(|f| (f / 3) % 2 == 0 && f % 3 != 0) {
            assert!(
                out[f * hop..(f + 1) * hop] == x[(f - 1) * hop..f * hop],
                "frame {f}"
            );
        }
    }
}
