//! The acoustic echo canceller behind `audio.echo_cancel`: a sans-IO core
//! that takes the microphone and the far-end reference (what went to the
//! speaker) one block at a time and returns the microphone with the echo
//! of the reference taken out.
//!
//! **The filter.** A partitioned-block frequency-domain adaptive filter
//! (overlap-save, blocks of `B` samples, FFTs of `2B`): the echo path is
//! modelled as `P` partitions of `B` taps each, so a tail of `P x B`
//! samples, at a cost per block of one FFT per partition and a few more,
//! not of `P x B` multiplies per sample. The update is normalised per
//! frequency bin by the reference's power over the whole tail (NLMS in the
//! frequency domain) and constrained to `B` taps per partition (the
//! gradient's circular wrap removed, one partition a block in turn), so it
//! stays a linear convolution.
//!
//! **Two filters, so talking back does not undo it.** While both ends
//! talk, the microphone holds near-end speech the reference does not
//! explain, and an adaptive filter that keeps learning from it drifts away
//! from the echo path ("double talk"). A detector that stops the learning
//! must be right before the damage is done; two filters need not be. A
//! *background* filter always learns from the reference; the *foreground*
//! filter, which makes the output, only ever takes the background's
//! coefficients when the background has removed clearly more than it for a
//! while (adopt), and when the background has gone clearly worse (it
//! learnt from near-end speech) it is put back to the foreground's
//! (revert). Near-end speech passes: the foreground never learns from it.
//!
//! **A step that follows how much of the error is echo.** Per bin, the
//! background's step is the share of its error that is echo it still
//! misses: the echo estimate times a `leak` read from how the error's
//! power follows the estimate's from block to block (near-end speech does
//! not follow it). So near-end speech, and a steady sound in the room,
//! make the step small where they are.
//!
//! **Nothing learnt before the echo is found.** A decimated correlation of
//! microphone and reference over half a second of the far end talking, its
//! peak standing at one lag and the two spectra coherent there, finds
//! whether the microphone hears the speaker at all, and how late. Until it
//! does, nothing is learnt and the output is the microphone itself, bit for
//! bit: on a headset there is nothing to cancel and nothing is touched.
//!
//! docs/DESIGN.md, decision 17, has what each of these mended, measured.
//!
//! No latency: each block's output needs only that block's microphone and
//! the reference up to it. No allocation after [`EchoCanceller::new`].
//! Callers on a real-time thread should hold
//! [`crate::codec::denormals::FlushDenormals`] around [`EchoCanceller::process`]
//! (the stage does): filter state decaying in silence is otherwise slow.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

/// Step size of the background filter's update (normalised: 1 would solve
/// one block exactly in one step).
const STEP: f32 = 1.0;
/// Reference power (mean square per sample) under which the background
/// does not learn: about -70 dBFS, nothing the speaker would make heard.
const FAR_ACTIVE: f32 = 1e-7;
/// Regularisation of the per-bin normalisation, as a share of the mean
/// power over the bins: bins where the reference has almost nothing do not
/// take huge steps on what little they see.
const REGULARISE: f32 = 0.05;
/// Before the leak can be read, a bin learns at the full step while its
/// error is at most this many times what the reference's power there could
/// make of it (an echo path up to +6 dB); beyond, slower in proportion.
const EXPLAIN: f32 = 4.0;

/// The start-up step runs until it has added up to this many full steps
/// per partition (and the leak reads as echo). 4 against 1
/// (`echo_cancel_room`, speech): 6 / 9 / 16 dB removed after 2 / 4 / 7 s
/// against 4 / 8 / 15, and 15-17 dB while both talk against 14-16; 10
/// gained another 1-2 dB on speech but let flat far-end noise's double talk
/// through 4 dB more; 30 ran into double talk unguarded.
const START_BLOCKS: f32 = 4.0;

/// How fast the per-bin power averages follow (per block).
const SPECTRAL_AVERAGE: f32 = 0.1;
/// How fast the leak estimate learns, per unit of echo energy over error
/// energy, and at most.
const LEAK_RATE: f32 = 0.2;
const LEAK_RATE_MAX: f32 = 0.05;
/// The least leak assumed: the filter is never taken as perfect.
const MIN_LEAK: f32 = 0.005;

/// The comparison of the two filters. Per block: `d = Sff - Sbb`, how
/// much less the background leaves than the foreground, and `v = Sff * Sdd`,
/// the spread `d` has by chance when something neither filter explains
/// (near-end speech) is in the microphone: with `e_f = n + r_f` and
/// `e_b = n + r_b`, `d = |r_f|^2 - |r_b|^2 + 2<n, r_f - r_b>`, whose last term
/// is of the order of `sqrt(Snn * Sdd)` (`Sdd` = `|e_f - e_b|^2`). The
/// background is adopted when `d` clears that spread, on this block or
/// smoothed over a few (fast) or many (slow) blocks; put back when it
/// falls that far behind. Near-end speech makes `Sff` large, so a
/// background that fitted some of it for a block or two is not adopted.
const FAST: f32 = 0.6;
const SLOW: f32 = 0.85;
/// `d |d| > ADOPT * v`, smoothed fast / slow.
const ADOPT_FAST: f32 = 0.5;
const ADOPT_SLOW: f32 = 0.25;
/// `-d |d| > REVERT * v` on any of the three.
const REVERT: f32 = 4.0;

/// Input as the filter takes it: non-finite samples are silence, and
/// nothing past +-4 (12 dB over full scale) gets in to overflow a power.
fn clean(s: f32) -> f32 {
    if s.is_finite() {
        s.clamp(-4.0, 4.0)
    } else {
        0.0
    }
}

/// Whether the microphone hears the reference at all, and how late: the
/// normalised cross-correlation of the two, decimated to about 2 kHz (plain
/// averages of `decimate` samples: speech's energy is below 1 kHz) and
/// averaged over about a second, at every lag the tail covers. Echo gives
/// a peak of 0.3-0.6 (double talk included); two different voices talking
/// over each other with no echo between them, under 0.15, one voice over
/// itself up to 0.34 (see [`ECHO_FOUND`]).
struct Presence {
    decimate: usize,
    /// Decimated reference, a ring of `lags` samples; `pos` the newest.
    far: Vec<f32>,
    pos: usize,
    corr: Vec<f32>,
    mic_pow: f32,
    far_pow: f32,
    mic_sum: f32,
    far_sum: f32,
    count: usize,
    decay: f32,
    /// Decimated samples with the reference active, up to `warm_needed`:
    /// a correlation over fewer is chance.
    warm: usize,
    warm_needed: usize,
    peak: f32,
    lag: usize,
    /// Reads in a row whose peak was over [`ECHO_FOUND`] at the same lag
    /// (within one decimated sample).
    steady: usize,
}

/// Echo counts as found from this correlation peak held at one lag for
/// [`STEADY`] reads (blocks), or from [`ECHO_CLEAR`] held for
/// [`STEADY_CLEAR`], when the microphone's spectrum is also coherent with
/// the reference's at that lag ([`COHERENT`]); as gone under
/// [`ECHO_LOST`]. An echo's lag stands still and its phase follows the
/// reference's; the peak two voices make by chance wanders from lag to lag,
/// and their cross-spectrum's phase averages out. Over 96 pairs of one
/// synthetic voice talking over itself with no echo (benches/quality/
/// speech.sh's segments at eight offsets each, the closest two voices get)
/// the peak alone found echo in 13, the steady peak in 2, with coherence
/// none, from half a second of far-end speech where the others needed a
/// second; 95 of 96 rooms of echo (10-50 % gain, 100-400 ms
/// reverberation, the near voice talking over it from 2 s) were found
/// after 0.73 s of far-end speech in the median, 0.94 s at the 90th
/// percentile (the peak alone, after a second: 1.10 and 1.15, 94 found).
const ECHO_FOUND: f32 = 0.2;
const STEADY: usize = 30;
const ECHO_CLEAR: f32 = 0.3;
const STEADY_CLEAR: usize = 5;
const ECHO_LOST: f32 = 0.12;
/// The coherence needed (0..1: the share of the microphone's power in
/// 20 ms windows that the reference's at the lag explains, averaged over
/// `1 / COH_AVERAGE` blocks and read after [`COH_BLOCKS`]). A room whose
/// reverberation holds 20 times the direct path's energy reads 0.48 (the
/// window holds only the room's first 10-20 ms), so 0.5 missed it; at 0.3
/// none of the 96 pairs above was taken for echo (the built-in voice over
/// itself reversed, a signal of fixed formants, 19 of 140 against 20 with
/// the steady peak alone).
const COHERENT: f32 = 0.3;
const COH_BLOCKS: usize = 20;
const COH_AVERAGE: f32 = 0.05;

impl Presence {
    fn new(rate: u32, tail: usize) -> Self {
        let decimate = (rate as usize / 2000).max(1);
        let lags = (tail / decimate).max(1);
        let decimated_rate = rate as f32 / decimate as f32;
        Presence {
            decimate,
            far: vec![0.0; lags],
            pos: 0,
            corr: vec![0.0; lags],
            mic_pow: 0.0,
            far_pow: 0.0,
            mic_sum: 0.0,
            far_sum: 0.0,
            count: 0,
            decay: 1.0 - 1.0 / decimated_rate,
            warm: 0,
            // Half a second of the far end talking: the coherence check
            // keeps a short look from taking chance for echo.
            warm_needed: decimated_rate as usize / 2,
            peak: 0.0,
            lag: 0,
            steady: 0,
        }
    }

    fn clear(&mut self) {
        self.far.fill(0.0);
        self.corr.fill(0.0);
        self.mic_pow = 0.0;
        self.far_pow = 0.0;
        self.mic_sum = 0.0;
        self.far_sum = 0.0;
        self.count = 0;
        self.warm = 0;
        self.peak = 0.0;
        self.lag = 0;
        self.steady = 0;
    }

    fn push(&mut self, mic: f32, far: f32) {
        self.mic_sum += mic;
        self.far_sum += far;
        self.count += 1;
        if self.count < self.decimate {
            return;
        }
        let scale = 1.0 / self.decimate as f32;
        let (m, f) = (self.mic_sum * scale, self.far_sum * scale);
        self.mic_sum = 0.0;
        self.far_sum = 0.0;
        self.count = 0;
        let lags = self.far.len();
        self.pos = (self.pos + 1) % lags;
        self.far[self.pos] = f;
        if f * f > FAR_ACTIVE && self.warm < self.warm_needed {
            self.warm += 1;
        }
        let a = self.decay;
        self.mic_pow = a * self.mic_pow + m * m;
        self.far_pow = a * self.far_pow + f * f;
        // corr[l] follows mic(n) * far(n - l).
        let (newer, older) = self.far.split_at(self.pos + 1);
        let history = newer.iter().rev().chain(older.iter().rev());
        for (c, &x) in self.corr.iter_mut().zip(history) {
            *c = a * *c + m * x;
        }
    }

    /// Updates `peak` and `lag` (once a block).
    fn read(&mut self) {
        let norm = (self.mic_pow * self.far_pow).sqrt();
        if norm <= 1e-12 || self.warm < self.warm_needed {
            self.peak = 0.0;
            return;
        }
        let mut best = (0usize, 0.0f32);
        for (l, c) in self.corr.iter().enumerate() {
            if c.abs() > best.1 {
                best = (l, c.abs());
            }
        }
        let lag = best.0 * self.decimate;
        if lag.abs_diff(self.lag) <= self.decimate && best.1 / norm > ECHO_FOUND {
            self.steady = self.steady.saturating_add(1);
        } else {
            self.steady = 0;
        }
        self.lag = lag;
        self.peak = best.1 / norm;
    }
}

/// What the canceller did, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EchoStats {
    /// Blocks processed.
    pub blocks: u64,
    /// Times the foreground took the background's coefficients.
    pub adopted: u64,
    /// Times the background was put back to the foreground's coefficients
    /// (it had learnt from something that was not echo).
    pub reverted: u64,
    /// Times both filters were cleared because their state stopped being
    /// finite (non-finite input).
    pub resets: u64,
}

/// A partitioned-block frequency-domain acoustic echo canceller.
pub struct EchoCanceller {
    block: usize,
    partitions: usize,
    bins: usize,
    fwd: Arc<dyn RealToComplex<f32>>,
    inv: Arc<dyn ComplexToReal<f32>>,
    scratch: Vec<Complex<f32>>,
    /// The last `2B` reference samples.
    far_hist: Vec<f32>,
    /// Spectra of the last `P` reference windows, a ring; `head` the newest.
    far_spec: Vec<Complex<f32>>,
    head: usize,
    /// Per bin: the reference's power over all `P` windows.
    far_pow: Vec<f32>,
    fore: Vec<Complex<f32>>,
    back: Vec<Complex<f32>>,
    time: Vec<f32>,
    spec: Vec<Complex<f32>>,
    err_fore: Vec<f32>,
    err_back: Vec<f32>,
    /// The background's estimate of the echo, this block.
    echo_back: Vec<f32>,
    /// The estimate of the echo left in the output's place, this block
    /// (see [`EchoCanceller::echo_estimate`]).
    echo_shape: Vec<f32>,
    /// Per bin, the error's and the echo estimate's power, this block and
    /// averaged (their fluctuations say how much of the error is echo).
    err_pow: Vec<f32>,
    echo_pow: Vec<f32>,
    err_pow_avg: Vec<f32>,
    echo_pow_avg: Vec<f32>,
    /// Smoothed covariance of the error's and the echo estimate's power
    /// fluctuations, and the echo estimate's variance: their ratio is the
    /// share of the echo the background still misses (`leak`).
    cov_ey: f32,
    var_y: f32,
    leak: f32,
    /// Whether the background has learnt enough for `leak` to steer its
    /// step; until then the step follows the far end's share of the error.
    adapted: bool,
    adapt_sum: f32,
    presence: Presence,
    /// The reference's last `tail + block` samples, a ring (`ring_at` the
    /// next to write), and this block's reference at the found delay.
    far_ring: Vec<f32>,
    ring_at: usize,
    far_delayed: Vec<f32>,
    /// The microphone's last `2B` samples, and the coherence check of the
    /// detector's lag: per bin, the cross-spectrum with the reference's
    /// windows at partitions `coh_p` and `coh_p + 1` and both powers,
    /// averaged over the `coh_n` blocks since the lag last moved.
    mic_hist: Vec<f32>,
    coh_cross: Vec<Complex<f32>>,
    coh_far: Vec<f32>,
    coh_mic: Vec<f32>,
    coh_p: usize,
    coh_n: usize,
    coherence: f32,
    /// Blocks since the far end was last active: the detector listens
    /// while this is within the tail (the echo of the last words still
    /// coming) and stands still after, so a silence neither dilutes what
    /// it found with the microphone's own sounds nor decays its sums into
    /// subnormal floats.
    far_quiet: usize,
    /// Whether the foreground has taken anything from the background since
    /// the last reset: until then the output is the microphone itself.
    fore_learnt: bool,
    /// Echo found by `presence`: until it is, the background learns only
    /// once `leak` reads echo (two people talking with no echo between them
    /// leave the microphone untouched).
    echo_found: bool,
    /// `d` smoothed fast and slow, and its spread likewise (see [`FAST`]).
    d_fast: f32,
    d_slow: f32,
    v_fast: f32,
    v_slow: f32,
    /// Smoothed mean squares while the far end is active: microphone and
    /// output, for the echo return loss enhancement.
    mic_pow: f32,
    out_pow: f32,
    stats: EchoStats,
}

impl EchoCanceller {
    /// A canceller for audio at `rate` Hz, working in blocks of `block`
    /// samples with a tail of `partitions x block` samples. `block` and
    /// `partitions` at least 1 (any block: the FFTs are `2 x block` long).
    pub fn new(rate: u32, block: usize, partitions: usize) -> Self {
        assert!(block >= 1, "at least one sample a block");
        assert!(partitions >= 1, "at least one partition");
        let n = 2 * block;
        let bins = block + 1;
        let mut planner = RealFftPlanner::<f32>::new();
        let fwd = planner.plan_fft_forward(n);
        let inv = planner.plan_fft_inverse(n);
        let scratch_len = fwd.get_scratch_len().max(inv.get_scratch_len());
        let zero = Complex::new(0.0, 0.0);
        EchoCanceller {
            block,
            partitions,
            bins,
            fwd,
            inv,
            scratch: vec![zero; scratch_len],
            far_hist: vec![0.0; n],
            far_spec: vec![zero; partitions * bins],
            head: 0,
            far_pow: vec![0.0; bins],
            fore: vec![zero; partitions * bins],
            back: vec![zero; partitions * bins],
            time: vec![0.0; n],
            spec: vec![zero; bins],
            err_fore: vec![0.0; block],
            err_back: vec![0.0; block],
            echo_back: vec![0.0; block],
            echo_shape: vec![0.0; block],
            err_pow: vec![0.0; bins],
            echo_pow: vec![0.0; bins],
            err_pow_avg: vec![0.0; bins],
            echo_pow_avg: vec![0.0; bins],
            cov_ey: 0.0,
            var_y: 0.0,
            leak: 0.0,
            adapted: false,
            adapt_sum: 0.0,
            presence: Presence::new(rate, block * partitions),
            far_ring: vec![0.0; block * (partitions + 1)],
            ring_at: 0,
            far_delayed: vec![0.0; block],
            mic_hist: vec![0.0; n],
            coh_cross: vec![zero; 2 * bins],
            coh_far: vec![0.0; 2 * bins],
            coh_mic: vec![0.0; bins],
            coh_p: usize::MAX,
            coh_n: 0,
            coherence: 0.0,
            far_quiet: usize::MAX,
            fore_learnt: false,
            echo_found: false,
            d_fast: 0.0,
            d_slow: 0.0,
            v_fast: 0.0,
            v_slow: 0.0,
            mic_pow: 0.0,
            out_pow: 0.0,
            stats: EchoStats::default(),
        }
    }

    /// Samples per block.
    pub fn block(&self) -> usize {
        self.block
    }

    /// The tail the filter models, in samples.
    pub fn tail(&self) -> usize {
        self.block * self.partitions
    }

    /// What it did so far.
    pub fn stats(&self) -> EchoStats {
        self.stats
    }

    /// Echo return loss enhancement, dB: how much quieter the output is
    /// than the microphone while the far end talks (smoothed over about a
    /// second). Near-end speech at the same time lowers it: it is a gauge,
    /// not a measurement of the filter alone.
    pub fn erle_db(&self) -> f32 {
        if self.mic_pow <= 0.0 || self.out_pow <= 0.0 {
            return 0.0;
        }
        10.0 * (self.mic_pow / self.out_pow).log10()
    }

    /// How late the echo comes after the reference, in samples, as the
    /// correlation found it (to the decimation's resolution, ~0.5 ms);
    /// `None` while no echo is found.
    pub fn echo_delay(&self) -> Option<usize> {
        self.echo_found.then_some(self.presence.lag)
    }

    /// How coherent the microphone is with the reference at the
    /// detector's lag (0..1), as last read: only while the echo is being
    /// looked for (zero until 20 blocks at one lag); 0.3 or more, with the
    /// correlation's peak, finds the echo.
    pub fn echo_coherence(&self) -> f32 {
        self.coherence
    }

    /// The correlation peak between microphone and reference (0..1): over
    /// 0.2 the microphone hears the speaker. It is measured only while the
    /// far end talks (and for the echo's tail after): through the far end's
    /// silences it holds.
    pub fn echo_correlation(&self) -> f32 {
        self.presence.peak
    }

    /// This block's estimate of the echo the microphone holds: the
    /// foreground's (what was subtracted) once it has learnt, before that
    /// the background's (the output is still the microphone, and this is
    /// the best shape of its echo there is). Zero until the echo is found.
    /// A residual echo suppressor reads how loud what is left is against it.
    pub fn echo_estimate(&self) -> &[f32] {
        &self.echo_shape
    }

    /// Whether there is echo to suppress beyond the filter: the detector
    /// has found it, or the filter has learnt a path (and may still be
    /// unlearning one that went away).
    pub fn echo_active(&self) -> bool {
        self.echo_found || self.fore_learnt
    }

    /// This block's reference as it reaches the microphone: the far end
    /// delayed by [`Self::echo_delay`] (zero while no echo is found). Its
    /// spectrum times the room's coupling is a coarse estimate of the
    /// echo that holds before the filter has learnt any shape.
    pub fn reference_at_echo_delay(&self) -> &[f32] {
        &self.far_delayed
    }

    /// Forgets the echo path (both filters, the reference's history).
    pub fn reset(&mut self) {
        let zero = Complex::new(0.0, 0.0);
        self.far_hist.fill(0.0);
        self.far_spec.fill(zero);
        self.far_pow.fill(0.0);
        self.fore.fill(zero);
        self.back.fill(zero);
        self.clear_comparison();
        self.err_pow_avg.fill(0.0);
        self.echo_pow_avg.fill(0.0);
        self.cov_ey = 0.0;
        self.var_y = 0.0;
        self.leak = 0.0;
        self.adapted = false;
        self.adapt_sum = 0.0;
        self.presence.clear();
        self.far_quiet = usize::MAX;
        self.far_ring.fill(0.0);
        self.far_delayed.fill(0.0);
        self.mic_hist.fill(0.0);
        self.coh_p = usize::MAX;
        self.coh_n = 0;
        self.coherence = 0.0;
        self.fore_learnt = false;
        self.echo_found = false;
        self.mic_pow = 0.0;
        self.out_pow = 0.0;
    }

    /// One block: `mic` and `far` (the reference, as sent to the speaker)
    /// of [`Self::block`] samples each in, the microphone without the
    /// echo out. Non-finite input is read as silence, and samples past +-4
    /// as +-4.
    pub fn process(&mut self, mic: &[f32], far: &[f32], out: &mut [f32]) {
        let b = self.block;
        assert!(mic.len() == b && far.len() == b && out.len() == b);
        self.stats.blocks += 1;

        // The reference's newest window and its spectrum.
        self.far_hist.copy_within(b.., 0);
        let mut far_energy = 0.0f32;
        for (d, &s) in self.far_hist[b..].iter_mut().zip(far) {
            *d = clean(s);
            far_energy += *d * *d;
        }
        far_energy /= b as f32;
        self.far_quiet = if far_energy > FAR_ACTIVE {
            0
        } else {
            self.far_quiet.saturating_add(1)
        };
        let listen = self.far_quiet <= self.partitions;
        self.head = (self.head + 1) % self.partitions;
        self.time.copy_from_slice(&self.far_hist);
        let at = self.head * self.bins;
        // Lengths come from the plan: the FFT cannot fail.
        let _ = self.fwd.process_with_scratch(
            &mut self.time,
            &mut self.far_spec[at..at + self.bins],
            &mut self.scratch,
        );
        self.far_pow.fill(0.0);
        for p in 0..self.partitions {
            let x = &self.far_spec[p * self.bins..(p + 1) * self.bins];
            for (w, c) in self.far_pow.iter_mut().zip(x) {
                *w += c.norm_sqr();
            }
        }

        // Both filters' estimates of the echo, and what each leaves.
        Self::estimate(
            &self.fore,
            &self.far_spec,
            self.head,
            self.partitions,
            &mut self.spec,
            &mut self.time,
            &self.inv,
            &mut self.scratch,
        );
        let scale = 1.0 / (2 * b) as f32;
        let mut e_fore = 0.0f32;
        let mut mic_energy = 0.0f32;
        for (i, &m) in mic.iter().enumerate() {
            let m = clean(m);
            mic_energy += m * m;
            if listen {
                self.presence.push(m, self.far_hist[b + i]);
            }
            let e = m - self.time[b + i] * scale;
            self.err_fore[i] = e;
            e_fore += e * e;
        }
        Self::estimate(
            &self.back,
            &self.far_spec,
            self.head,
            self.partitions,
            &mut self.spec,
            &mut self.time,
            &self.inv,
            &mut self.scratch,
        );
        let mut e_back = 0.0f32;
        for (i, &m) in mic.iter().enumerate() {
            let m = clean(m);
            let y = self.time[b + i] * scale;
            let e = m - y;
            self.echo_back[i] = y;
            self.err_back[i] = e;
            e_back += e * e;
        }

        if !(e_fore.is_finite() && e_back.is_finite()) {
            // Only non-finite state gets here (the input is cleaned): start
            // over rather than pass garbage on.
            self.reset();
            self.stats.resets += 1;
            self.echo_shape.fill(0.0);
            for (o, &m) in out.iter_mut().zip(mic) {
                *o = clean(m);
            }
            return;
        }
        if self.fore_learnt {
            out.copy_from_slice(&self.err_fore);
            for ((y, &m), &e) in self.echo_shape.iter_mut().zip(mic).zip(&self.err_fore) {
                *y = clean(m) - e;
            }
        } else {
            self.echo_shape.copy_from_slice(&self.echo_back);
            // Nothing learnt: the microphone as it came (a copy, so even
            // under flush-to-zero its tiniest samples pass as they were).
            for (o, &m) in out.iter_mut().zip(mic) {
                *o = if m.is_finite() { m } else { 0.0 };
            }
        }

        self.mic_hist.copy_within(b.., 0);
        for (d, &m) in self.mic_hist[b..].iter_mut().zip(mic) {
            *d = clean(m);
        }
        if listen {
            self.presence.read();
            if !self.echo_found && far_energy > FAR_ACTIVE && self.presence.peak > 0.0 {
                self.cohere();
            }
        }
        if ((self.presence.peak > ECHO_FOUND && self.presence.steady >= STEADY)
            || (self.presence.peak > ECHO_CLEAR && self.presence.steady >= STEADY_CLEAR))
            && (self.echo_found
                || self.fore_learnt
                || (self.coherence > COHERENT && self.coh_n >= COH_BLOCKS))
        {
            self.echo_found = true;
        } else if self.presence.peak < ECHO_LOST {
            self.echo_found = false;
        }
        {
            let len = self.far_ring.len();
            for &x in &self.far_hist[b..] {
                self.far_ring[self.ring_at] = x;
                self.ring_at = (self.ring_at + 1) % len;
            }
            if self.echo_found {
                // The block's first sample is `b + lag` samples before the
                // next to write.
                let lag = self.presence.lag.min(len - b);
                let start = (self.ring_at + len - b - lag) % len;
                for (i, d) in self.far_delayed.iter_mut().enumerate() {
                    *d = self.far_ring[(start + i) % len];
                }
            } else {
                self.far_delayed.fill(0.0);
            }
        }
        let far_active = far_energy > FAR_ACTIVE;
        if far_active {
            self.learn(far_energy * b as f32, e_back);
            let n = b as f32;
            self.mic_pow = 0.95 * self.mic_pow + 0.05 * mic_energy / n;
            self.out_pow = 0.95 * self.out_pow + 0.05 * e_fore / n;
        }

        // Which filter leaves less, by more than chance: adopt a better
        // background, put back one that learnt from near-end speech.
        let mut diff = 0.0f32;
        for (f, b) in self.err_fore.iter().zip(&self.err_back) {
            diff += (f - b) * (f - b);
        }
        let d = e_fore - e_back;
        let v = e_fore * diff;
        self.d_fast = FAST * self.d_fast + (1.0 - FAST) * d;
        self.d_slow = SLOW * self.d_slow + (1.0 - SLOW) * d;
        self.v_fast = FAST * FAST * self.v_fast + (1.0 - FAST) * (1.0 - FAST) * v;
        self.v_slow = SLOW * SLOW * self.v_slow + (1.0 - SLOW) * (1.0 - SLOW) * v;
        let signed = |x: f32| x * x.abs();
        if signed(d) > v
            || signed(self.d_fast) > ADOPT_FAST * self.v_fast
            || signed(self.d_slow) > ADOPT_SLOW * self.v_slow
        {
            self.fore.copy_from_slice(&self.back);
            self.fore_learnt = true;
            self.clear_comparison();
            self.stats.adopted += 1;
        } else if far_active
            && (-signed(d) > REVERT * v
                || -signed(self.d_fast) > REVERT * self.v_fast
                || -signed(self.d_slow) > REVERT * self.v_slow)
        {
            self.back.copy_from_slice(&self.fore);
            self.clear_comparison();
            self.stats.reverted += 1;
        }
    }

    /// Updates `coherence`: how consistently the microphone's spectrum
    /// follows the reference's at the detector's lag (the two partitions
    /// around it), averaged over blocks. Two independent talkers' phases
    /// wander and average out; an echo's hold.
    fn cohere(&mut self) {
        let bins = self.bins;
        let p0 = (self.presence.lag / self.block).min(self.partitions - 1);
        if p0 != self.coh_p {
            self.coh_p = p0;
            self.coh_n = 0;
            self.coh_cross.fill(Complex::new(0.0, 0.0));
            self.coh_far.fill(0.0);
            self.coh_mic.fill(0.0);
        }
        self.coh_n += 1;
        self.time.copy_from_slice(&self.mic_hist);
        let _ = self
            .fwd
            .process_with_scratch(&mut self.time, &mut self.spec, &mut self.scratch);
        let a = COH_AVERAGE;
        for (m, c) in self.coh_mic.iter_mut().zip(&self.spec) {
            *m = (1.0 - a) * *m + a * c.norm_sqr();
        }
        let mut best = 0.0f32;
        for c in 0..2 {
            let p = (p0 + c).min(self.partitions - 1);
            let at = ((self.head + self.partitions - p) % self.partitions) * bins;
            let x = &self.far_spec[at..at + bins];
            let mut num = 0.0f32;
            let mut den = 0.0f32;
            let cross = &mut self.coh_cross[c * bins..(c + 1) * bins];
            let far = &mut self.coh_far[c * bins..(c + 1) * bins];
            for ((((cr, f), m), xk), mk) in cross
                .iter_mut()
                .zip(far.iter_mut())
                .zip(&self.spec)
                .zip(x)
                .zip(&self.coh_mic)
            {
                *cr = *cr * (1.0 - a) + m * xk.conj() * a;
                *f = (1.0 - a) * *f + a * xk.norm_sqr();
                num += cr.norm_sqr();
                den += mk * *f;
            }
            if den > 0.0 {
                best = best.max(num / den);
            }
        }
        self.coherence = if self.coh_n >= COH_BLOCKS { best } else { 0.0 };
    }

    fn clear_comparison(&mut self) {
        self.d_fast = 0.0;
        self.d_slow = 0.0;
        self.v_fast = 0.0;
        self.v_slow = 0.0;
    }

    /// `time[B..2B] * 2B` = the echo `w` makes of the reference's last block.
    #[allow(clippy::too_many_arguments)]
    fn estimate(
        w: &[Complex<f32>],
        far_spec: &[Complex<f32>],
        head: usize,
        partitions: usize,
        spec: &mut [Complex<f32>],
        time: &mut [f32],
        inv: &Arc<dyn ComplexToReal<f32>>,
        scratch: &mut [Complex<f32>],
    ) {
        let bins = spec.len();
        spec.fill(Complex::new(0.0, 0.0));
        for p in 0..partitions {
            // Partition p models the taps p blocks back: it meets the
            // reference's window of p blocks ago.
            let x_at = ((head + partitions - p) % partitions) * bins;
            let x = &far_spec[x_at..x_at + bins];
            let wp = &w[p * bins..(p + 1) * bins];
            for ((s, a), c) in spec.iter_mut().zip(wp).zip(x) {
                *s += a * c;
            }
        }
        spec[0].im = 0.0;
        spec[bins - 1].im = 0.0;
        let _ = inv.process_with_scratch(spec, time, scratch);
    }

    /// One normalised, constrained step of the background filter towards
    /// what explains the microphone. `far_energy` and `err_energy`: this
    /// block's reference and background error, summed squares.
    ///
    /// The step is set per bin to the share of the error that is echo the
    /// filter still misses: near-end speech in the error makes that share
    /// small, so the background hardly moves while the near end talks,
    /// and moves fast where the error is all echo. The missed echo is the
    /// echo estimate times `leak`, found by how the error's power follows
    /// the estimate's from block to block (near-end speech does not).
    fn learn(&mut self, far_energy: f32, err_energy: f32) {
        let b = self.block;
        let bins = self.bins;
        let tiny = 1e-12f32;

        // The echo estimate's spectrum and power.
        self.time[..b].fill(0.0);
        self.time[b..].copy_from_slice(&self.echo_back);
        let _ = self
            .fwd
            .process_with_scratch(&mut self.time, &mut self.spec, &mut self.scratch);
        let mut echo_energy = 0.0f32;
        for (p, c) in self.echo_pow.iter_mut().zip(&self.spec) {
            *p = c.norm_sqr();
        }
        let mut cross = 0.0f32;
        for (y, e) in self.echo_back.iter().zip(&self.err_back) {
            echo_energy += y * y;
            cross += y * e;
        }
        // The error's spectrum (kept in `spec` for the update below).
        self.time[..b].fill(0.0);
        self.time[b..].copy_from_slice(&self.err_back);
        let _ = self
            .fwd
            .process_with_scratch(&mut self.time, &mut self.spec, &mut self.scratch);
        for (p, c) in self.err_pow.iter_mut().zip(&self.spec) {
            *p = c.norm_sqr();
        }

        // How much of the echo the background misses.
        let mut cov = 0.0f32;
        let mut var = 0.0f32;
        for k in 0..bins {
            let de = self.err_pow[k] - self.err_pow_avg[k];
            let dy = self.echo_pow[k] - self.echo_pow_avg[k];
            cov += de * dy;
            var += dy * dy;
            self.err_pow_avg[k] += SPECTRAL_AVERAGE * (self.err_pow[k] - self.err_pow_avg[k]);
            self.echo_pow_avg[k] += SPECTRAL_AVERAGE * (self.echo_pow[k] - self.echo_pow_avg[k]);
        }
        let var = var.sqrt();
        let cov = cov / (var + tiny);
        // Learn the leak faster where the echo estimate is a large part of
        // the error.
        let alpha = (LEAK_RATE * echo_energy).min(LEAK_RATE_MAX * err_energy) / (err_energy + tiny);
        self.cov_ey = (1.0 - alpha) * self.cov_ey + alpha * cov;
        self.var_y = (1.0 - alpha) * self.var_y + alpha * var;
        let var_y = self.var_y.max(tiny);
        let cov_ey = self.cov_ey.clamp(MIN_LEAK * var_y, var_y);
        self.leak = cov_ey / var_y;

        // The step per bin.
        let mean_pow = self.far_pow.iter().sum::<f32>() / bins as f32;
        let floor = REGULARISE * mean_pow + tiny;
        if !self.adapted {
            // Until the leak can be read: a step that follows how much of
            // the error the far end could explain.
            let rate = (0.25 * far_energy).min(0.25 * err_energy) / (err_energy + tiny);
            let rate = if self.echo_found {
                STEP * rate / 0.25
            } else {
                0.0
            };
            // Per bin, no faster than the far end could explain that bin's
            // error: a steady near-end sound (a hum, a held note) fills its
            // bins with error the reference never explains, and learning
            // there at the full rate fits the far end to it.
            let parts = self.partitions as f32;
            for ((e, &pw), &ep) in self.spec.iter_mut().zip(&self.far_pow).zip(&self.err_pow) {
                let explainable = (EXPLAIN * pw / parts / (2.0 * ep + tiny)).min(1.0);
                *e *= rate * explainable / (pw + floor);
            }
            self.adapt_sum += rate;
            if self.adapt_sum > START_BLOCKS * self.partitions as f32 && self.leak > 0.03 {
                self.adapted = true;
            }
        } else {
            // Residual echo over error, on the whole block: a floor for the
            // per-bin ratio.
            let rer = ((1e-4 * far_energy + 3.0 * self.leak * echo_energy) / (err_energy + tiny))
                .max(cross * cross / (1.0 + err_energy * echo_energy))
                .min(0.5);
            for k in 0..bins {
                let e = self.err_pow[k] + tiny;
                let r = (self.leak * self.echo_pow[k]).min(0.5 * e);
                let r = 0.7 * r + 0.3 * rer * e;
                self.spec[k] *= STEP * 2.0 * (r / e) / (self.far_pow[k] + floor);
            }
        }

        let scale = 1.0 / (2 * b) as f32;
        for p in 0..self.partitions {
            let x_at = ((self.head + self.partitions - p) % self.partitions) * bins;
            let wp = &mut self.back[p * bins..(p + 1) * bins];
            let x = &self.far_spec[x_at..x_at + bins];
            for ((w, c), e) in wp.iter_mut().zip(x).zip(&self.spec) {
                *w += c.conj() * e;
            }
            // Keep the partition a `B`-tap filter: its taps past `B` are
            // the gradient's circular wrap. One partition a block, in turn:
            // the wrap a partition gathers meanwhile is small, and this is
            // two FFTs a block instead of two per partition (half the cost
            // at 48 kHz; the same echo removed, `echo_cancel_room`).
            if p != self.stats.blocks as usize % self.partitions {
                continue;
            }
            wp[0].im = 0.0;
            wp[bins - 1].im = 0.0;
            let _ = self
                .inv
                .process_with_scratch(wp, &mut self.time, &mut self.scratch);
            for t in &mut self.time[..b] {
                *t *= scale;
            }
            self.time[b..].fill(0.0);
            let _ = self
                .fwd
                .process_with_scratch(&mut self.time, wp, &mut self.scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic noise source in -1..1.
    fn noise(seed: &mut u32) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 17;
        *seed ^= *seed << 5;
        (*seed as f32 / u32::MAX as f32) * 2.0 - 1.0
    }

    fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0f32; x.len()];
        for (n, yn) in y.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for (k, &hk) in h.iter().enumerate() {
                if k > n {
                    break;
                }
                acc += hk * x[n - k];
            }
            *yn = acc;
        }
        y
    }

    fn energy(x: &[f32]) -> f32 {
        x.iter().map(|v| v * v).sum()
    }

    #[test]
    fn white_noise_through_a_short_path_is_cancelled_by_40_db() {
        let block = 64;
        let mut aec = EchoCanceller::new(16_000, block, 4);
        let mut seed = 7;
        let far: Vec<f32> = (0..block * 400).map(|_| 0.3 * noise(&mut seed)).collect();
        let mut h = vec![0.0f32; 200];
        h[30] = 0.5;
        h[31] = -0.3;
        h[90] = 0.2;
        h[150] = -0.1;
        let mic = convolve(&far, &h);
        let mut out = vec![0.0f32; far.len()];
        for ((m, f), o) in mic
            .chunks(block)
            .zip(far.chunks(block))
            .zip(out.chunks_mut(block))
        {
            aec.process(m, f, o);
        }
        let tail = far.len() - block * 50;
        let erle = 10.0 * (energy(&mic[tail..]) / energy(&out[tail..])).log10();
        assert!(erle > 40.0, "ERLE {erle} dB");
        assert!(aec.stats().adopted > 0);
        assert_eq!(aec.stats().resets, 0);
    }

    #[test]
    fn the_detector_stands_still_through_the_far_ends_silence() {
        // Listening through a silence, the detector's sums decayed into
        // subnormal floats after ~90 s (each multiply ~100 cycles), and a
        // steady sound in the room diluted what it had found within
        // seconds. It now listens only while the far end talks and for the
        // echo's tail after.
        let block = 32;
        let mut aec = EchoCanceller::new(16_000, block, 2);
        let mut seed = 21;
        let mut out = vec![0.0f32; block];
        let mut talk = |aec: &mut EchoCanceller, blocks: usize| {
            for _ in 0..blocks {
                let far: Vec<f32> = (0..block).map(|_| 0.3 * noise(&mut seed)).collect();
                let mic: Vec<f32> = far.iter().map(|v| 0.5 * v).collect();
                let mut out = vec![0.0f32; block];
                aec.process(&mic, &far, &mut out);
            }
        };
        talk(&mut aec, 1000);
        // Two minutes of the far end silent, the microphone hearing a hum;
        // past the echo's tail (a second here) nothing moves.
        let silence = vec![0.0f32; block];
        let per_second = 16_000 / block;
        let mut found = 0.0;
        let mut delay = None;
        for i in 0..120 * per_second {
            if i == per_second {
                found = aec.echo_correlation();
                delay = aec.echo_delay();
            }
            let hum: Vec<f32> = (0..block)
                .map(|k| 0.1 * ((i * block + k) as f32 * 0.3).sin())
                .collect();
            aec.process(&hum, &silence, &mut out);
        }
        assert!(found > 0.5);
        assert!(delay.is_some());
        assert_eq!(aec.echo_correlation(), found);
        assert_eq!(aec.echo_delay(), delay);
        assert!(aec
            .presence
            .corr
            .iter()
            .chain([&aec.presence.far_pow, &aec.presence.mic_pow])
            .all(|c| *c == 0.0 || c.is_normal()));
        // And it goes on from where it was when the far end talks again.
        talk(&mut aec, per_second);
        assert!(aec.echo_correlation() > 0.5);
    }

    #[test]
    fn any_block_size_works() {
        // 44.1 kHz in 10 ms blocks: 441 samples, odd.
        let block = 441;
        let mut aec = EchoCanceller::new(44_100, block, 3);
        let mut seed = 5;
        let far: Vec<f32> = (0..block * 300).map(|_| 0.3 * noise(&mut seed)).collect();
        let mic: Vec<f32> = std::iter::repeat_n(0.0, 100)
            .chain(far.iter().map(|v| 0.5 * v))
            .take(far.len())
            .collect();
        let mut out = vec![0.0f32; far.len()];
        for ((m, f), o) in mic
            .chunks(block)
            .zip(far.chunks(block))
            .zip(out.chunks_mut(block))
        {
            aec.process(m, f, o);
        }
        let tail = far.len() - block * 50;
        let erle = 10.0 * (energy(&mic[tail..]) / energy(&out[tail..])).log10();
        assert!(erle > 30.0, "ERLE {erle} dB");
        // To the decimation's step (22 samples at 44.1 kHz).
        let delay = aec.echo_delay().unwrap();
        assert!((78..=122).contains(&delay), "delay {delay}");
    }

    #[test]
    fn with_no_reference_the_microphone_passes_unchanged() {
        let block = 32;
        let mut aec = EchoCanceller::new(16_000, block, 3);
        let mut seed = 3;
        let far = vec![0.0f32; block];
        for _ in 0..50 {
            let mic: Vec<f32> = (0..block).map(|_| 0.5 * noise(&mut seed)).collect();
            let mut out = vec![0.0f32; block];
            aec.process(&mic, &far, &mut out);
            assert_eq!(out, mic);
        }
    }

    #[test]
    fn non_finite_input_is_silence_and_the_state_stays_finite() {
        let block = 32;
        let mut aec = EchoCanceller::new(16_000, block, 2);
        let mut seed = 11;
        for i in 0..100 {
            let mut far: Vec<f32> = (0..block).map(|_| 0.3 * noise(&mut seed)).collect();
            let mut mic = far.clone();
            if i % 7 == 0 {
                far[3] = f32::NAN;
                mic[5] = f32::INFINITY;
                far[9] = f32::MAX;
            }
            let mut out = vec![0.0f32; block];
            aec.process(&mic, &far, &mut out);
            assert!(out.iter().all(|v| v.is_finite()), "block {i}: {out:?}");
        }
    }
}
