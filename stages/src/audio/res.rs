//! The residual echo suppressor behind `audio.echo_cancel`'s `suppress`: a
//! sans-IO core that takes what the linear canceller left (its output) and
//! its echo estimate, and takes out, bin by bin, the echo the linear filter
//! did not: while it is still learning the path (the first seconds of a
//! call), what a distorting speaker adds that no linear filter models, and
//! the reverberation past its tail.
//!
//! **Where the echo is.** A linear filter leaves a residual `r = y - y^` of
//! the echo `y`. Its power follows the estimate's `|Y^|^2`: a filter that has
//! learnt half the path leaves a residual as loud as its estimate, one that
//! has learnt it to 25 dB leaves one 25 dB under it. The suppressor reads
//! that ratio, `lambda`, the way the canceller reads its own leak: by how
//! the power of what is left follows the estimate's from frame to frame
//! (near-end speech does not follow it), in twelve bands (a filter learns
//! the loud low bins of speech first). The residual echo per bin is then
//! `2 lambda |Y^|^2` (twice: better some echo bins too quiet than echo
//! heard), held with a decay (80 % left after 10 ms): what a filter still
//! learning leaves is the echo of the far end's last quarter second, which
//! lingers in bins the estimate of this frame has left.
//!
//! **Before the filter has any shape.** Just after the echo is found the
//! filter's estimate is near zero, and `lambda` of it says little. The far
//! end itself, delayed by the echo's delay (the canceller's
//! `reference_at_echo_delay`), is a second, coarse estimate: per band, the
//! output's power regressed on its power the same way (`coupling`), and the
//! residual echo per bin is never taken under `coupling |X_d|^2`. As the
//! filter learns, what is left follows the far end less, and the coupling
//! falls by itself.
//!
//! **What is taken out.** A Wiener gain per bin from the near-end-to-echo
//! ratio, smoothed the decision-directed way (Ephraim-Malah) so bins do not
//! flicker between frames (musical noise): a bin that is all echo is cut
//! by up to 40 dB, one that is all near-end voice passes. The gain never
//! takes a bin under the room's own noise floor (a slow minimum of each
//! bin's power, tracked where there is no echo, left alone through digital
//! silence such as a muted microphone): the background sound of the room
//! stays as it was while the far end talks, rather than pumping with the
//! far end's words.
//!
//! **Nothing touched where there is nothing to do.** While the canceller
//! has not found the speaker in the microphone (`active` false) the input
//! passes as it came, bit for bit, `hop` samples late; no FFT is run. A
//! headset call loses nothing but the latency.
//!
//! Frames of `2 hop` samples, sine (square-root Hann) windows, `hop` apart:
//! the windows' squares add up to one, so a frame whose gains are all one
//! comes out as it went in. Latency: `hop` samples. No allocation after
//! [`EchoSuppressor::new`].

use realfft::num_complex::Complex;

use super::stft::{clean, flush, SineStft, NEGLIGIBLE};

/// The residual echo is taken as this many times what `lambda` reads.
const OVERDRIVE: f32 = 2.0;
/// The residual echo is taken as at least this many times what the
/// reference's power at the echo's delay makes of it (`coupling`): the
/// estimate that holds before the filter has learnt anything, coarse (it
/// knows the room by its delay and its colour per band only), so taken at
/// face value ([`OVERDRIVE`] x 0.5), not doubled. `echo_cancel_room`,
/// speech, seconds 2-7 of the far end alone, dB removed: none 13.0 / 15.9
/// / 15.0 / 20.2 / 22.4 / 22.9, x 0.25 15.0 / 17.0 / 15.3 / 20.3 / 22.6 /
/// 23.4, x 0.5 16.7 / 18.8 / 16.2 / 20.5 / 23.3 / 25.0, x 1 17.7 / 21.9 /
/// 18.0 / 20.7 / 24.5 / 27.1; the near voice's level in double talk -3.5 /
/// -1.1 / -2.3 / -1.8, -3.6 / -1.1 / -2.3 / -1.9, -3.8 / -1.1 / -2.4 /
/// -2.0, -4.2 / -1.2 / -2.9 / -2.4.
const COARSE: f32 = 0.5;
/// The most the reference's power is taken to reach the microphone at:
/// +20 dB (a loud speaker next to the microphone).
const MAX_COUPLING: f32 = 100.0;
/// Share of the residual echo estimate left after 10 ms once the echo
/// estimate falls: what a filter still learning leaves is the echo of the
/// last 250 ms of the far end, not of this frame's sounds only, so it lingers
/// in bins the current estimate has left (0.8 against 0.6, speech through a
/// simulated room, `echo_cancel_room`: 2-3 dB more echo removed while the
/// far end talks alone, 0.2-0.7 dB less of the near voice kept in double
/// talk).
const DECAY_PER_10MS: f32 = 0.8;
/// Decision-directed smoothing of the near-end-to-echo ratio.
const DIRECTED: f32 = 0.9;
/// The deepest cut, as a gain: -40 dB.
const MIN_GAIN: f32 = 0.01;
/// How fast the per-bin averages of the regression follow.
const AVERAGE: f32 = 0.1;
/// How fast `lambda` learns, per unit of echo estimate over output energy,
/// and at most.
const LAMBDA_RATE: f32 = 0.2;
const LAMBDA_RATE_MAX: f32 = 0.05;
/// `lambda`'s range: the filter is never taken as perfect, and never as
/// having learnt less than a hundredth of the path's power.
const MIN_LAMBDA: f32 = 0.003;
const MAX_LAMBDA: f32 = 100.0;
/// Smoothing of a bin's power for the noise floor, and how fast the floor
/// may rise per second (dB) where no echo is: slowly while the power is
/// near it, fast when the power is more than [`FLOOR_FAR`] over it (the
/// room came back after a muted microphone, or the floor caught a dip).
const FLOOR_SMOOTH: f32 = 0.2;
const FLOOR_RISE_DB_S: f32 = 2.0;
const FLOOR_RISE_FAST_DB_S: f32 = 10.0;
const FLOOR_FAR: f32 = 100.0;
/// A minimum of a fluctuating power reads under its mean: the floor kept
/// is this many times the minimum (3 dB; the room's sound between the far
/// end's words came through 4 dB quieter without it).
const FLOOR_BIAS: f32 = 2.0;
/// Frames whose mean square is under this (-100 dBFS: digital silence, a
/// muted microphone) leave the floor as it was.
const FLOOR_QUIET: f32 = 1e-10;
/// The gauge's averaging time, seconds.
const GAUGE_S: f32 = 1.0;

/// Upper edges (Hz) of the bands `lambda` is read in: a filter learns
/// the loud low bins of speech first, so what it leaves is a different
/// share of its estimate in each band.
const BAND_EDGES: [f32; 12] = [
    300.0,
    600.0,
    1000.0,
    1500.0,
    2000.0,
    3000.0,
    4000.0,
    6000.0,
    8000.0,
    12000.0,
    16000.0,
    f32::MAX,
];
const BANDS: usize = BAND_EDGES.len();

/// What the suppressor did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SuppressStats {
    /// Frames run.
    pub frames: u64,
    /// Frames with gains computed (the echo was found).
    pub active: u64,
    /// Times the state was cleared for not being finite.
    pub resets: u64,
}

/// A residual echo suppressor: per-bin gains after a linear canceller.
pub struct EchoSuppressor {
    hop: usize,
    bins: usize,
    stft: SineStft,
    /// The last `2 hop` samples of the canceller's output (as they came)
    /// and of its echo estimate.
    out_hist: Vec<f32>,
    echo_hist: Vec<f32>,
    ref_hist: Vec<f32>,
    spec: Vec<Complex<f32>>,
    echo_spec: Vec<Complex<f32>>,
    ref_spec: Vec<Complex<f32>>,
    /// Per bin, the reference's average power; per band, the regression of
    /// the output's power on it, and `coupling`.
    ref_avg: Vec<f32>,
    ref_cov: [f32; BANDS],
    ref_var: [f32; BANDS],
    coupling: [f32; BANDS],
    /// Per bin: its band, regression averages, residual echo held, smoothed
    /// power, noise floor, last gain and last power.
    band: Vec<usize>,
    out_avg: Vec<f32>,
    echo_avg: Vec<f32>,
    resid: Vec<f32>,
    smooth: Vec<f32>,
    floor: Vec<f32>,
    gain: Vec<f32>,
    last: Vec<f32>,
    /// Whether the per-bin state holds anything yet (it starts on the
    /// first active frame).
    started: bool,
    /// Per band: the regression's smoothed covariance and variance, and
    /// `lambda`.
    cov: [f32; BANDS],
    var: [f32; BANDS],
    lambda: [f32; BANDS],
    decay: f32,
    rise: f32,
    rise_fast: f32,
    /// Per-frame weight of the gauge's average.
    gauge_avg: f32,
    /// Smoothed input and output power of active frames with echo, for
    /// [`Self::suppressed_db`].
    in_pow: f32,
    kept_pow: f32,
    stats: SuppressStats,
}

impl EchoSuppressor {
    /// A suppressor for audio at `rate` Hz in frames `hop` samples apart
    /// (its latency), `hop >= 1`.
    pub fn new(rate: u32, hop: usize) -> Self {
        assert!(hop >= 1, "at least one sample a hop");
        let n = 2 * hop;
        let bins = hop + 1;
        let zero = Complex::new(0.0, 0.0);
        let hop_10ms = hop as f32 * 100.0 / rate.max(1) as f32;
        let hop_s = hop as f32 / rate.max(1) as f32;
        EchoSuppressor {
            hop,
            bins,
            stft: SineStft::new(hop),
            out_hist: vec![0.0; n],
            echo_hist: vec![0.0; n],
            ref_hist: vec![0.0; n],
            spec: vec![zero; bins],
            echo_spec: vec![zero; bins],
            ref_spec: vec![zero; bins],
            ref_avg: vec![0.0; bins],
            ref_cov: [0.0; BANDS],
            ref_var: [0.0; BANDS],
            coupling: [0.0; BANDS],
            band: (0..bins)
                .map(|k| {
                    let hz = k as f32 * rate as f32 / n as f32;
                    BAND_EDGES.iter().position(|&e| hz < e).unwrap_or(BANDS - 1)
                })
                .collect(),
            out_avg: vec![0.0; bins],
            echo_avg: vec![0.0; bins],
            resid: vec![0.0; bins],
            smooth: vec![0.0; bins],
            floor: vec![0.0; bins],
            gain: vec![1.0; bins],
            last: vec![0.0; bins],
            started: false,
            cov: [0.0; BANDS],
            var: [0.0; BANDS],
            lambda: [1.0; BANDS],
            decay: DECAY_PER_10MS.powf(hop_10ms),
            rise: 10f32.powf(FLOOR_RISE_DB_S * hop_s / 10.0),
            rise_fast: 10f32.powf(FLOOR_RISE_FAST_DB_S * hop_s / 10.0),
            gauge_avg: 1.0 - (-hop_s / GAUGE_S).exp(),
            in_pow: 0.0,
            kept_pow: 0.0,
            stats: SuppressStats::default(),
        }
    }

    /// Samples between frames: the latency.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// What it did so far.
    pub fn stats(&self) -> SuppressStats {
        self.stats
    }

    /// How loud the residual echo reads against the echo estimate (the
    /// share of the path the linear filter has not learnt), in the band
    /// holding `hz`.
    pub fn lambda(&self, hz: f32) -> f32 {
        let b = BAND_EDGES.iter().position(|&e| hz < e).unwrap_or(BANDS - 1);
        self.lambda[b]
    }

    /// How loud what is left reads against the far end's power at the
    /// echo's delay, in the band holding `hz`.
    pub fn coupling(&self, hz: f32) -> f32 {
        let b = BAND_EDGES.iter().position(|&e| hz < e).unwrap_or(BANDS - 1);
        self.coupling[b]
    }

    /// How much quieter the output is than the input while there is echo
    /// to suppress, dB (powers averaged over about a second of such frames). Near-end speech at
    /// the same time lowers it: a gauge.
    pub fn suppressed_db(&self) -> f32 {
        if self.in_pow <= 0.0 || self.kept_pow <= 0.0 {
            return 0.0;
        }
        10.0 * (self.in_pow / self.kept_pow).log10()
    }

    /// Forgets everything learnt (the bypass history stays, so the output
    /// stays continuous).
    pub fn reset(&mut self) {
        self.out_avg.fill(0.0);
        self.echo_avg.fill(0.0);
        self.resid.fill(0.0);
        self.smooth.fill(0.0);
        self.floor.fill(0.0);
        self.gain.fill(1.0);
        self.last.fill(0.0);
        self.started = false;
        self.cov = [0.0; BANDS];
        self.var = [0.0; BANDS];
        self.lambda = [1.0; BANDS];
        self.ref_avg.fill(0.0);
        self.ref_cov = [0.0; BANDS];
        self.ref_var = [0.0; BANDS];
        self.coupling = [0.0; BANDS];
        self.in_pow = 0.0;
        self.kept_pow = 0.0;
    }

    /// One stretch of audio, any length that is a whole number of hops:
    /// `input` (what the canceller left), `echo` (its estimate of the echo
    /// in the microphone) and `reference` (the far end as it reaches the
    /// microphone: delayed by the echo's delay, zero while that is not
    /// known); `out` the input with the residual echo taken out, `hop`
    /// samples late. `active` false (no echo found) passes the input as it
    /// came.
    pub fn process(
        &mut self,
        input: &[f32],
        echo: &[f32],
        reference: &[f32],
        active: bool,
        out: &mut [f32],
    ) {
        let h = self.hop;
        assert!(input.len() == echo.len() && input.len() == reference.len());
        assert!(input.len() == out.len());
        assert!(input.len() % h == 0, "a whole number of hops");
        for (((i, e), r), o) in input
            .chunks_exact(h)
            .zip(echo.chunks_exact(h))
            .zip(reference.chunks_exact(h))
            .zip(out.chunks_exact_mut(h))
        {
            self.out_hist.copy_within(h.., 0);
            self.out_hist[h..].copy_from_slice(i);
            self.echo_hist.copy_within(h.., 0);
            self.echo_hist[h..].copy_from_slice(e);
            self.ref_hist.copy_within(h.., 0);
            self.ref_hist[h..].copy_from_slice(r);
            self.frame(active, o);
        }
    }

    /// The frame over `out_hist`: writes the output's next `hop` samples
    /// (the frame's first half, completed by the previous frame's second).
    fn frame(&mut self, active: bool, o: &mut [f32]) {
        let h = self.hop;
        self.stats.frames += 1;
        if !active {
            self.stft.pass(&self.out_hist, o);
            return;
        }
        self.stats.active += 1;
        if !(self.suppress() && self.stft.synthesise(&mut self.spec, o)) {
            // Non-finite state (nothing the cleaned input makes; kept as a
            // guard): start over, passing this frame.
            self.reset();
            self.stats.resets += 1;
            self.stft.pass(&self.out_hist, o);
        }
        let mut in_e = 0.0f32;
        let mut out_e = 0.0f32;
        for (x, y) in self.out_hist[..h].iter().zip(o.iter()) {
            in_e += clean(*x) * clean(*x);
            out_e += y * y;
        }
        if self.echo_hist.iter().any(|&v| v != 0.0) {
            let a = self.gauge_avg;
            self.in_pow = flush(self.in_pow + a * (in_e / h as f32 - self.in_pow));
            self.kept_pow = flush(self.kept_pow + a * (out_e / h as f32 - self.kept_pow));
        }
    }

    /// Analyses the frame and applies the gains to its spectrum (`spec`).
    /// False if the state went non-finite.
    fn suppress(&mut self) -> bool {
        let tiny = 1e-12f32;
        self.stft.analyse(&self.echo_hist, &mut self.echo_spec);
        if self.ref_hist.iter().any(|&v| v != 0.0) {
            self.stft.analyse(&self.ref_hist, &mut self.ref_spec);
        } else {
            self.ref_spec.fill(Complex::new(0.0, 0.0));
        }
        // Digital silence (a muted microphone) says nothing of the room.
        let quiet = self.stft.analyse(&self.out_hist, &mut self.spec) < FLOOR_QUIET;

        // How loud the residual is against the estimate: per band, the
        // regression of the output's power fluctuations on the estimate's.
        let mut cov = [0.0f32; BANDS];
        let mut var = [0.0f32; BANDS];
        let mut echo_e = [0.0f32; BANDS];
        let mut out_e = [0.0f32; BANDS];
        let mut ref_cov = [0.0f32; BANDS];
        let mut ref_var = [0.0f32; BANDS];
        let mut ref_e = [0.0f32; BANDS];
        for k in 0..self.bins {
            let o = self.spec[k].norm_sqr();
            let y = self.echo_spec[k].norm_sqr();
            let c = self.ref_spec[k].norm_sqr();
            if !self.started {
                self.ref_avg[k] = c;
                self.out_avg[k] = o;
                self.echo_avg[k] = y;
                self.smooth[k] = o;
                self.floor[k] = o.max(NEGLIGIBLE);
            }
            let b = self.band[k];
            let dout = o - self.out_avg[k];
            let dy = y - self.echo_avg[k];
            cov[b] += dout * dy;
            var[b] += dy * dy;
            self.out_avg[k] = flush(self.out_avg[k] + AVERAGE * (o - self.out_avg[k]));
            self.echo_avg[k] = flush(self.echo_avg[k] + AVERAGE * (y - self.echo_avg[k]));
            let dc = c - self.ref_avg[k];
            ref_cov[b] += dout * dc;
            ref_var[b] += dc * dc;
            ref_e[b] += c;
            self.ref_avg[k] = flush(self.ref_avg[k] + AVERAGE * (c - self.ref_avg[k]));
            echo_e[b] += y;
            out_e[b] += o;
        }
        self.started = true;
        for b in 0..BANDS {
            let ratio = regress(
                &mut self.cov[b],
                &mut self.var[b],
                cov[b],
                var[b],
                echo_e[b],
                out_e[b],
            );
            if let Some(l) = ratio {
                self.lambda[b] = l.clamp(MIN_LAMBDA, MAX_LAMBDA);
            }
            // The same regression on the reference's power: how much of
            // the far end's sound, at the echo's delay, is still in the output.
            let (c, v) = (&mut self.ref_cov[b], &mut self.ref_var[b]);
            if let Some(k) = regress(c, v, ref_cov[b], ref_var[b], ref_e[b], out_e[b]) {
                self.coupling[b] = k.clamp(0.0, MAX_COUPLING);
            }
        }

        let mut finite = true;
        for k in 0..self.bins {
            let o = flush(self.spec[k].norm_sqr());
            let y = self.echo_spec[k].norm_sqr();
            let c = self.ref_spec[k].norm_sqr();
            let r = flush(
                (OVERDRIVE * self.lambda[self.band[k]] * y)
                    .max(COARSE * OVERDRIVE * self.coupling[self.band[k]] * c)
                    .max(self.decay * self.resid[k]),
            );
            finite &= r.is_finite();
            self.resid[k] = r;
            // The room's floor: a slow minimum of the smoothed power, let
            // rise only where the echo does not make the power (fast when
            // far under it), and left alone through digital silence.
            if !quiet {
                self.smooth[k] = flush(self.smooth[k] + FLOOR_SMOOTH * (o - self.smooth[k]));
                let smooth = self.smooth[k];
                let floor = &mut self.floor[k];
                if smooth < *floor {
                    *floor = smooth.max(NEGLIGIBLE);
                } else if r < smooth {
                    *floor *= if smooth > FLOOR_FAR * *floor {
                        self.rise_fast
                    } else {
                        self.rise
                    };
                }
            }
            // Near end over residual echo: a posteriori, and a priori
            // decision-directed (the near end as last kept, over the
            // residual now).
            let post = o / (r + tiny);
            let kept = self.gain[k] * self.gain[k] * self.last[k];
            let prior =
                (DIRECTED * kept / (r + tiny) + (1.0 - DIRECTED) * (post - 1.0).max(0.0)).min(1e6);
            let mut g = prior / (1.0 + prior);
            let keep_floor = (FLOOR_BIAS * self.floor[k] / (o + tiny)).min(1.0).sqrt();
            g = g.max(MIN_GAIN).max(keep_floor);
            self.gain[k] = g;
            self.last[k] = o;
            self.spec[k] *= g;
        }
        finite && self.lambda.iter().all(|l| l.is_finite())
    }
}

/// One frame's step of a band's regression of the output's power on a
/// regressor's (the echo estimate's, or the reference's): the smoothed
/// covariance `cov` and variance `var` take the frame's, weighted by how
/// much of the output the regressor's energy `reg_e` could explain
/// against `out_e`; their ratio, once the variance holds anything.
fn regress(
    cov: &mut f32,
    var: &mut f32,
    frame_cov: f32,
    frame_var: f32,
    reg_e: f32,
    out_e: f32,
) -> Option<f32> {
    let tiny = 1e-12f32;
    let alpha = (LAMBDA_RATE * reg_e).min(LAMBDA_RATE_MAX * out_e) / (out_e + tiny);
    *cov = (1.0 - alpha) * *cov + alpha * frame_cov;
    *var = (1.0 - alpha) * *var + alpha * frame_var;
    (*var > tiny).then(|| *cov / *var)
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

    #[test]
    fn inactive_passes_the_input_bit_exact_one_hop_late() {
        let mut s = EchoSuppressor::new(16_000, 80);
        let mut seed = 1;
        let x: Vec<f32> = (0..1600).map(|_| 0.3 * noise(&mut seed)).collect();
        let y: Vec<f32> = (0..1600).map(|_| 0.3 * noise(&mut seed)).collect();
        let mut out = vec![0.0; 1600];
        s.process(&x, &y, &no_reference(&x), false, &mut out);
        assert!(out[..80].iter().all(|&v| v == 0.0));
        assert!(out[80..] == x[..1520]);
        assert_eq!(s.stats().active, 0);
    }

    #[test]
    fn active_with_no_echo_estimate_passes_the_input_one_hop_late() {
        // Gains of one: the windows reconstruct the input to float
        // precision, whether the frames before were passed or not.
        let mut s = EchoSuppressor::new(16_000, 80);
        let mut seed = 2;
        let x: Vec<f32> = (0..3200).map(|_| 0.3 * noise(&mut seed)).collect();
        let zero = vec![0.0f32; 3200];
        let mut out = vec![0.0; 3200];
        s.process(
            &x[..1600],
            &zero[..1600],
            &no_reference(&x[..1600]),
            false,
            &mut out[..1600],
        );
        s.process(
            &x[1600..],
            &zero[1600..],
            &no_reference(&x[1600..]),
            true,
            &mut out[1600..],
        );
        for i in 80..3200 {
            assert!(
                (out[i] - x[i - 80]).abs() < 1e-5,
                "{i}: {} vs {}",
                out[i],
                x[i - 80]
            );
        }
        assert!(s.stats().active > 0);
    }

    /// A reference of silence as long as `x`: the echo's delay not known.
    fn no_reference(x: &[f32]) -> Vec<f32> {
        vec![0.0; x.len()]
    }

    fn energy(v: &[f32]) -> f64 {
        v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>()
    }

    /// Echo in bursts (250 ms on, 250 off) of `secs`: the estimate `far`,
    /// and what the canceller left, `residual x far` over a -60 dBFS room.
    fn bursts(secs: usize, residual: f32, seed: &mut u32) -> (Vec<f32>, Vec<f32>) {
        let n = 16_000 * secs;
        let mut input = vec![0.0f32; n];
        let mut echo = vec![0.0f32; n];
        for i in 0..n {
            let on = (i / 4000) % 2 == 0;
            let far = if on { 0.2 * noise(seed) } else { 0.0 };
            echo[i] = far;
            input[i] = residual * far + 0.001 * noise(seed);
        }
        (input, echo)
    }

    #[test]
    fn lambda_reads_what_the_filter_left_and_that_much_is_cut() {
        // A filter 10 dB in: a residual of 0.3 x its estimate, whose power
        // is 0.09 x the estimate's.
        let mut s = EchoSuppressor::new(16_000, 80);
        let mut seed = 3;
        let (input, echo) = bursts(6, 0.3, &mut seed);
        let n = input.len();
        let mut out = vec![0.0; n];
        s.process(&input, &echo, &no_reference(&input), true, &mut out);
        for hz in [500.0, 1000.0, 2500.0, 5000.0] {
            let l = s.lambda(hz);
            assert!((0.06..0.13).contains(&l), "lambda at {hz} Hz: {l}");
        }
        // The last 2 s, one hop aligned.
        let cut =
            10.0 * (energy(&input[n - 32_000 - 80..n - 80]) / energy(&out[n - 32_000..])).log10();
        assert!(cut > 15.0, "residual echo cut by only {cut:.1} dB");
        assert!(s.suppressed_db() > 15.0, "gauge {}", s.suppressed_db());

        // A filter halfway there (0.9): still cut.
        let mut s = EchoSuppressor::new(16_000, 80);
        let (input, echo) = bursts(6, 0.9, &mut seed);
        s.process(&input, &echo, &no_reference(&input), true, &mut out);
        let l = s.lambda(1000.0);
        assert!((0.6..1.0).contains(&l), "lambda {l}");
        let cut =
            10.0 * (energy(&input[n - 32_000 - 80..n - 80]) / energy(&out[n - 32_000..])).log10();
        assert!(cut > 20.0, "residual echo cut by only {cut:.1} dB");
    }

    #[test]
    fn a_near_voice_over_the_residual_echo_is_kept() {
        // Double talk: a near voice (a 1 kHz tone, louder than the
        // residual) on top of what the filter left.
        let mut s = EchoSuppressor::new(16_000, 80);
        let mut seed = 5;
        let (mut input, echo) = bursts(6, 0.3, &mut seed);
        let voice: Vec<f32> = (0..input.len())
            .map(|i| 0.1 * (std::f32::consts::TAU * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        for (x, v) in input.iter_mut().zip(&voice) {
            *x += v;
        }
        let n = input.len();
        let mut out = vec![0.0; n];
        s.process(&input, &echo, &no_reference(&input), true, &mut out);
        // The voice's level in the output over the last 4 s (its projection).
        let r = n - 64_000..n;
        let dot: f64 = out[r.clone()]
            .iter()
            .zip(&voice[r.start - 80..r.end - 80])
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let level = 20.0 * (dot / energy(&voice[r.start - 80..r.end - 80])).log10();
        assert!(level > -1.0, "the near voice at {level:.1} dB");
        // What else is left (the residual echo) is cut all the same.
        let rest: Vec<f32> = out[r.clone()]
            .iter()
            .zip(&voice[r.start - 80..r.end - 80])
            .map(|(o, v)| o - v)
            .collect();
        let residual: Vec<f32> = input[r.start - 80..r.end - 80]
            .iter()
            .zip(&voice[r.start - 80..r.end - 80])
            .map(|(x, v)| x - v)
            .collect();
        let cut = 10.0 * (energy(&residual) / energy(&rest)).log10();
        assert!(
            cut > 10.0,
            "residual echo cut by only {cut:.1} dB with the voice on"
        );
    }

    #[test]
    fn the_reference_at_the_echo_delay_cuts_echo_the_filter_has_no_estimate_of() {
        // Just after the echo is found: the filter has learnt nothing (its
        // estimate is zero, the output is the microphone), but the far end
        // at the echo's delay is known. Echo at half the reference's
        // amplitude (a quarter of its power), and a near voice (a 1 kHz
        // tone) over it.
        let mut s = EchoSuppressor::new(16_000, 80);
        let mut seed = 8;
        let (mut input, far) = bursts(6, 0.5, &mut seed);
        let voice: Vec<f32> = (0..input.len())
            .map(|i| 0.05 * (std::f32::consts::TAU * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        for (x, v) in input.iter_mut().zip(&voice) {
            *x += v;
        }
        let n = input.len();
        let mut out = vec![0.0; n];
        s.process(&input, &no_reference(&input), &far, true, &mut out);
        for hz in [500.0, 2500.0, 5000.0] {
            let c = s.coupling(hz);
            assert!((0.15..0.35).contains(&c), "coupling at {hz} Hz: {c}");
        }
        let r = n - 32_000..n;
        let past = r.start - 80..r.end - 80;
        let rest: Vec<f32> = out[r.clone()]
            .iter()
            .zip(&voice[past.clone()])
            .map(|(o, v)| o - v)
            .collect();
        let echo: Vec<f32> = input[past.clone()]
            .iter()
            .zip(&voice[past.clone()])
            .map(|(x, v)| x - v)
            .collect();
        let cut = 10.0 * (energy(&echo) / energy(&rest)).log10();
        assert!(cut > 10.0, "echo cut by only {cut:.1} dB");
        let dot: f64 = out[r.clone()]
            .iter()
            .zip(&voice[past.clone()])
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let level = 20.0 * (dot / energy(&voice[past])).log10();
        assert!(level > -1.5, "the near voice at {level:.1} dB");
        // With no reference (the delay not known) nothing is cut.
        let mut s = EchoSuppressor::new(16_000, 80);
        s.process(
            &input,
            &no_reference(&input),
            &no_reference(&input),
            true,
            &mut out,
        );
        let kept = 10.0 * (energy(&input[r.start - 80..r.end - 80]) / energy(&out[r])).log10();
        assert!(kept.abs() < 0.1, "{kept:.2} dB taken with nothing known");
    }

    #[test]
    fn after_suppressing_it_passes_bit_exact_again() {
        let mut s = EchoSuppressor::new(16_000, 80);
        let mut seed = 6;
        let (input, echo) = bursts(2, 0.5, &mut seed);
        let mut out = vec![0.0; input.len()];
        s.process(&input, &echo, &no_reference(&input), true, &mut out);
        let x: Vec<f32> = (0..1600).map(|_| 0.3 * noise(&mut seed)).collect();
        let mut out = vec![0.0; 1600];
        s.process(&x, &echo[..1600], &no_reference(&x), false, &mut out);
        // The first hop completes the last active frame; the second the
        // first passed frame, within float error; from the third on, bit
        // for bit.
        for i in 80..160 {
            assert!((out[i] - x[i - 80]).abs() < 1e-5);
        }
        assert!(out[160..] == x[80..1520]);
    }

    #[test]
    fn the_rooms_floor_outlasts_a_muted_microphone() {
        // Echo in bursts over a room at -50 dBFS; then 3 s of digital
        // silence (the microphone muted); then the same again. The room's
        // sound between the bursts comes through as before.
        let _ftz = crate::codec::denormals::FlushDenormals::new();
        let mut s = EchoSuppressor::new(16_000, 80);
        let mut seed = 7;
        let room = |seed: &mut u32, n: usize| -> Vec<f32> {
            (0..n).map(|_| 0.005 * noise(seed)).collect()
        };
        let (echo_a, far_a) = bursts(4, 0.5, &mut seed);
        let room_a = room(&mut seed, echo_a.len());
        let input_a: Vec<f32> = echo_a.iter().zip(&room_a).map(|(e, r)| e + r).collect();
        let mut out_a = vec![0.0; input_a.len()];
        s.process(&input_a, &far_a, &no_reference(&input_a), true, &mut out_a);
        let silence = vec![0.0f32; 48_000];
        let mut out = vec![0.0; 48_000];
        s.process(&silence, &silence, &no_reference(&silence), true, &mut out);
        let (echo_b, far_b) = bursts(4, 0.5, &mut seed);
        let room_b = room(&mut seed, echo_b.len());
        let input_b: Vec<f32> = echo_b.iter().zip(&room_b).map(|(e, r)| e + r).collect();
        let mut out_b = vec![0.0; input_b.len()];
        s.process(&input_b, &far_b, &no_reference(&input_b), true, &mut out_b);
        // Between the bursts of the last 2 s (the far end silent for over
        // 100 ms), the output's level against the room's.
        let between = |out: &[f32], room: &[f32]| {
            let (mut o, mut r) = (0.0f64, 0.0f64);
            for i in 32_000..64_000 - 80 {
                if (i / 4000) % 2 == 1 && i % 4000 > 1600 {
                    o += (out[i + 80] as f64).powi(2);
                    r += (room[i] as f64).powi(2);
                }
            }
            10.0 * (o / r).log10()
        };
        let (before, after) = (between(&out_a, &room_a), between(&out_b, &room_b));
        assert!(before > -3.0, "the room at {before:.1} dB before");
        assert!(
            after > before - 3.0,
            "the room at {after:.1} dB after the mute, {before:.1} before"
        );
    }

    #[test]
    fn non_finite_input_leaves_the_output_finite() {
        let mut s = EchoSuppressor::new(48_000, 240);
        let mut seed = 4;
        let mut x: Vec<f32> = (0..4800).map(|_| 0.3 * noise(&mut seed)).collect();
        let mut y = x.clone();
        x[100] = f32::NAN;
        y[2000] = f32::INFINITY;
        x[3000] = 1e30;
        let mut out = vec![0.0; 4800];
        s.process(&x, &y, &no_reference(&x), true, &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
