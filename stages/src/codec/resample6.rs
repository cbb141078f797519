//! 48 kHz <-> 8 kHz by a fixed factor of 6, for the Codec2 stages.
//!
//! Written here rather than taken from `rubato` because the ratio is a
//! fixed integer: a polyphase FIR needs no fractional-delay machinery, runs
//! sample by sample (no block size to match with the graph quantum), and is
//! trivially allocation-free after construction. One Kaiser-windowed sinc
//! prototype of [`TAPS`] taps serves both directions: cut-off 3.5 kHz,
//! about 70 dB stop band from 4.05 kHz, so the 8 kHz side keeps the
//! telephone band (300-3400 Hz) that Codec2 codes and aliasing stays below
//! the codec's own noise.
//!
//! Each direction delays by `(TAPS - 1) / 2` samples at 48 kHz
//! ([`DELAY_48K`], ~2 ms).

/// Taps of the prototype low-pass at 48 kHz (a multiple of 6).
pub const TAPS: usize = 192;
/// Taps per polyphase branch of the interpolator.
const PHASE_TAPS: usize = TAPS / 6;
/// Group delay of one direction, in 48 kHz samples (rounded down).
pub const DELAY_48K: usize = (TAPS - 1) / 2;

/// The prototype: windowed sinc, unity DC gain.
fn prototype() -> Vec<f32> {
    let fc = 3500.0 / 48_000.0;
    let beta = 7.0;
    let m = (TAPS - 1) as f64;
    let i0_beta = bessel_i0(beta);
    let mut h: Vec<f64> = (0..TAPS)
        .map(|n| {
            let x = n as f64 - m / 2.0;
            let sinc = if x == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
            };
            let r = 2.0 * n as f64 / m - 1.0;
            let w = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            sinc * w
        })
        .collect();
    let sum: f64 = h.iter().sum();
    for v in &mut h {
        *v /= sum;
    }
    h.into_iter().map(|v| v as f32).collect()
}

/// Modified Bessel function of the first kind, order 0 (series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..50 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < 1e-12 * sum {
            break;
        }
    }
    sum
}

/// 48 kHz in, 8 kHz out.
pub struct Decimator6 {
    h: Box<[f32]>,
    /// Each sample is written twice, `TAPS` apart, so the last `TAPS`
    /// samples are always one contiguous slice `hist[pos..pos + TAPS]`.
    hist: Box<[f32]>,
    pos: usize,
    phase: usize,
}

impl Default for Decimator6 {
    fn default() -> Self {
        Self::new()
    }
}

impl Decimator6 {
    pub fn new() -> Self {
        Decimator6 {
            h: prototype().into_boxed_slice(),
            hist: vec![0.0; 2 * TAPS].into_boxed_slice(),
            pos: 0,
            phase: 0,
        }
    }

    /// Filters `input`, writing one output per 6 inputs into `out`; returns
    /// how many were written. `out` needs `input.len() / 6 + 1` room; extra
    /// outputs beyond its length are dropped.
    pub fn process(&mut self, input: &[f32], out: &mut [f32]) -> usize {
        let mut n = 0;
        for &x in input {
            self.hist[self.pos] = x;
            self.hist[self.pos + TAPS] = x;
            self.pos = (self.pos + 1) % TAPS;
            self.phase += 1;
            if self.phase == 6 {
                self.phase = 0;
                // The prototype is symmetric, so no reversal is needed.
                let w = &self.hist[self.pos..self.pos + TAPS];
                let y: f32 = w.iter().zip(self.h.iter()).map(|(a, b)| a * b).sum();
                if let Some(o) = out.get_mut(n) {
                    *o = y;
                    n += 1;
                }
            }
        }
        n
    }
}

/// 8 kHz in, 48 kHz out.
pub struct Interpolator6 {
    /// Branch `p` holds `6 * h[6 j + p]` in chronological order of `j`.
    phases: Box<[[f32; PHASE_TAPS]; 6]>,
    hist: Box<[f32]>,
    pos: usize,
}

impl Default for Interpolator6 {
    fn default() -> Self {
        Self::new()
    }
}

impl Interpolator6 {
    pub fn new() -> Self {
        let h = prototype();
        let mut phases = Box::new([[0.0f32; PHASE_TAPS]; 6]);
        for (p, branch) in phases.iter_mut().enumerate() {
            for (i, c) in branch.iter_mut().enumerate() {
                // Oldest input first: input m - j sits at index PHASE_TAPS-1-j.
                let j = PHASE_TAPS - 1 - i;
                *c = 6.0 * h[6 * j + p];
            }
        }
        Interpolator6 {
            phases,
            hist: vec![0.0; 2 * PHASE_TAPS].into_boxed_slice(),
            pos: 0,
        }
    }

    /// Forgets the history: the next input starts a new signal.
    pub fn reset(&mut self) {
        self.hist.fill(0.0);
        self.pos = 0;
    }

    /// Filters `input`, writing six outputs per input into `out` (which must
    /// hold `6 * input.len()`; inputs without room are ignored). Returns
    /// outputs written.
    pub fn process(&mut self, input: &[f32], out: &mut [f32]) -> usize {
        let mut n = 0;
        for &x in input {
            if n + 6 > out.len() {
                break;
            }
            self.hist[self.pos] = x;
            self.hist[self.pos + PHASE_TAPS] = x;
            self.pos = (self.pos + 1) % PHASE_TAPS;
            let w = &self.hist[self.pos..self.pos + PHASE_TAPS];
            for branch in self.phases.iter() {
                out[n] = w.iter().zip(branch.iter()).map(|(a, b)| a * b).sum();
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(f: f32, rate: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * f * i as f32 / rate).sin())
            .collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn passband_kept_stopband_removed_on_the_way_down() {
        for (f, keep) in [
            (500.0, true),
            (2500.0, true),
            (5000.0, false),
            (9000.0, false),
        ] {
            let x = tone(f, 48_000.0, 48_000);
            let mut d = Decimator6::new();
            let mut y = vec![0.0; 8_001];
            let n = d.process(&x, &mut y);
            assert_eq!(n, 8_000);
            let level = rms(&y[1000..n]) / rms(&x);
            if keep {
                assert!((level - 1.0).abs() < 0.02, "{f} Hz passband gain {level}");
            } else {
                assert!(level < 0.001, "{f} Hz leaks with gain {level}");
            }
        }
    }

    #[test]
    fn round_trip_delays_by_two_filters() {
        // Incommensurate tones: one clear correlation peak, not one per period.
        let x: Vec<f32> = (0..9_600)
            .map(|i| {
                [300.0f32, 710.0, 1330.0, 2170.0]
                    .iter()
                    .map(|f| (2.0 * std::f32::consts::PI * f * i as f32 / 48_000.0).sin() / 4.0)
                    .sum()
            })
            .collect();
        let mut d = Decimator6::new();
        let mut i = Interpolator6::new();
        let mut low = vec![0.0; 1_601];
        let n = d.process(&x, &mut low);
        let mut y = vec![0.0; 6 * n];
        let m = i.process(&low[..n], &mut y);
        assert_eq!(m, 6 * n);
        // Two group delays of (TAPS-1)/2, less 5 because each low-rate
        // sample is taken on the 6th input but stands for the 1st.
        let best = (0..400)
            .max_by(|&a, &b| {
                let c = |l: usize| -> f32 { (2000..8000).map(|k| x[k] * y[k + l]).sum() };
                c(a).total_cmp(&c(b))
            })
            .unwrap();
        let expect = TAPS - 1 - 5;
        assert!(
            best.abs_diff(expect) <= 3,
            "lag {best}, expected about {expect}"
        );
        assert!((rms(&y[2000..8000]) / rms(&x[2000..8000]) - 1.0).abs() < 0.03);
    }
}
