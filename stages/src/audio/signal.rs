//! Pure signal helpers: levels, lag-aligned correlation, frequency
//! estimates, offline resampling and the built-in speech-like test signal.
//!
//! Level convention: dBFS here is the RMS relative to a full-scale DC (or
//! square) signal, so a sine of peak amplitude 1.0 reads -3.01 dBFS, and a
//! sine of peak `L` dBFS (the `level_db` of `audio.tone_source`) reads
//! `L - 3.01`.

use realfft::num_complex::Complex;
use realfft::RealFftPlanner;
use rubato::sinc_interpolator::{ScalarInterpolator, SincInterpolator};
use rubato::{calculate_cutoff, Resampler, SincFixedIn, SincInterpolationType, WindowFunction};

/// The level reported for silence (and the floor of every level).
pub const SILENCE_DBFS: f32 = -120.0;

/// Linear gain for `db` decibels.
pub fn db_to_gain(db: f64) -> f32 {
    10f64.powf(db / 20.0) as f32
}

/// Level in dBFS of a mean square value, floored at [`SILENCE_DBFS`].
pub fn mean_square_dbfs(mean_square: f64) -> f32 {
    if mean_square.is_nan() || mean_square <= 0.0 {
        return SILENCE_DBFS;
    }
    ((10.0 * mean_square.log10()) as f32).max(SILENCE_DBFS)
}

/// RMS level of `x` in dBFS (see the module doc for the convention);
/// [`SILENCE_DBFS`] for an empty or silent slice.
pub fn rms_dbfs(x: &[f32]) -> f32 {
    if x.is_empty() {
        return SILENCE_DBFS;
    }
    let sum: f64 = x.iter().map(|&s| s as f64 * s as f64).sum();
    mean_square_dbfs(sum / x.len() as f64)
}

/// Finds how far `received` lags behind `sent`: the lag `L` in
/// `0..=max_lag` that maximises the normalised correlation of
/// `received[L..]` with `sent`, over their overlap. Returns `(L, r)` with `r`
/// in -1..=1 (1: same waveform up to a gain).
///
/// Only lags whose overlap covers at least half of the shorter signal are
/// considered, so a few samples that happen to line up at the far end cannot
/// win. An inverted signal reads as a low (not a high negative) correlation
/// because the maximum is taken. Empty or silent input gives `(0, 0.0)`.
///
/// Computed with an FFT, so seconds of audio and lags of a second are cheap.
pub fn xcorr_peak(received: &[f32], sent: &[f32], max_lag: usize) -> (usize, f32) {
    let (a, b) = (received, sent);
    if a.is_empty() || b.is_empty() {
        return (0, 0.0);
    }
    let max_lag = max_lag.min(a.len() - 1);
    let n = (a.len() + b.len()).next_power_of_two();
    let mut planner = RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let spectrum = |x: &[f32]| {
        let mut buf = vec![0.0f64; n];
        for (d, &s) in buf.iter_mut().zip(x) {
            *d = s as f64;
        }
        let mut out = fwd.make_output_vec();
        // Lengths come from the same plan, so this cannot fail.
        fwd.process(&mut buf, &mut out).expect("fft sizes match");
        out
    };
    let fa = spectrum(a);
    let fb = spectrum(b);
    // IFFT(A * conj(B))[L] = sum_n a[n + L] * b[n] (no wrap: n >= |a| + |b|).
    let mut prod: Vec<Complex<f64>> = fa.iter().zip(&fb).map(|(x, y)| x * y.conj()).collect();
    // The DC and Nyquist bins of a real signal's product are real; rounding
    // can leave a tiny imaginary part that realfft would reject.
    prod[0].im = 0.0;
    let last = prod.len() - 1;
    prod[last].im = 0.0;
    let mut corr = inv.make_output_vec();
    inv.process(&mut prod, &mut corr).expect("fft sizes match");

    let prefix = |x: &[f32]| {
        let mut p = Vec::with_capacity(x.len() + 1);
        p.push(0.0f64);
        let mut acc = 0.0;
        for &s in x {
            acc += s as f64 * s as f64;
            p.push(acc);
        }
        p
    };
    let pa = prefix(a);
    let pb = prefix(b);
    let min_overlap = (a.len().min(b.len()) / 2).max(1);
    let mut best = (0usize, 0.0f32);
    let mut found = false;
    for lag in 0..=max_lag {
        let overlap = b.len().min(a.len() - lag);
        if overlap < min_overlap {
            break;
        }
        let ea = pa[lag + overlap] - pa[lag];
        let eb = pb[overlap];
        let denom = (ea * eb).sqrt();
        if denom <= 1e-20 {
            continue;
        }
        let r = (corr[lag] / n as f64 / denom).clamp(-1.0, 1.0) as f32;
        if !found || r > best.1 {
            best = (lag, r);
            found = true;
        }
    }
    best
}

/// How well `received` carries the voice in `sent`, when the delay between
/// them may move (a jitter buffer moves its playout point during a call, so
/// no single lag fits): the median, over the voiced `seg`-sample pieces of
/// `sent` (above -45 dBFS), of each piece's best lag-aligned correlation
/// with `received` ([`xcorr_peak`]). `None` with fewer than 3 voiced pieces.
pub fn segmental_correlation(received: &[f32], sent: &[f32], seg: usize) -> Option<f32> {
    let seg = seg.max(1);
    let mut rs: Vec<f32> = sent
        .chunks(seg)
        .filter(|c| c.len() == seg && rms_dbfs(c) > -45.0)
        .map(|c| xcorr_peak(received, c, received.len().saturating_sub(seg / 2)).1)
        .collect();
    if rs.len() < 3 {
        return None;
    }
    rs.sort_by(|a, b| a.total_cmp(b));
    Some(rs[rs.len() / 2])
}

/// Level in dBFS (same convention as [`rms_dbfs`]) of the component of `x`
/// at `freq` Hz, by the Goertzel algorithm: a pure sine of peak `A` reads
/// `20 log10(A) - 3.01`, whatever else is mixed in.
pub fn goertzel_dbfs(x: &[f32], rate: u32, freq: f64) -> f32 {
    if x.is_empty() {
        return SILENCE_DBFS;
    }
    let w = 2.0 * std::f64::consts::PI * freq / rate as f64;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = v as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let re = s1 - s2 * w.cos();
    let im = s2 * w.sin();
    let amplitude = 2.0 * (re * re + im * im).sqrt() / x.len() as f64;
    mean_square_dbfs(amplitude * amplitude / 2.0)
}

/// Frequency in Hz of a roughly periodic signal, from the time between its
/// first and last rising zero crossing (interpolated between samples).
/// `None` with fewer than two crossings.
pub fn zero_crossing_hz(x: &[f32], rate: u32) -> Option<f64> {
    let mut first = None;
    let mut last = 0.0;
    let mut count = 0usize;
    for (i, w) in x.windows(2).enumerate() {
        if w[0] < 0.0 && w[1] >= 0.0 {
            let t = i as f64 + (-w[0] as f64) / (w[1] as f64 - w[0] as f64);
            first.get_or_insert(t);
            last = t;
            count += 1;
        }
    }
    let first = first?;
    if count < 2 || last <= first {
        return None;
    }
    Some((count - 1) as f64 * rate as f64 / (last - first))
}

/// Oversampling of the sinc table: positions are resolved to 1/256 of an
/// input sample.
const SINC_OVERSAMPLING: usize = 256;

/// A sinc table read `shift` table steps away from where rubato asks.
///
/// rubato 0.16's `SincFixedIn` puts output sample `n` at input time
/// `n * t + (t - 1 + 1/256)` (`t` = input samples per output sample): its
/// first output is one step ahead and the table's centre sits one step
/// early. For 16 kHz -> 48 kHz that is two output samples early. Reading
/// the table `-(t - 1 + 1/256) * 256` steps over cancels it, so the output
/// is time-aligned to 1/512 of an input sample and latencies and
/// correlations come out exact. The shift stays inside rubato's buffer:
/// it is less than `t + 1` input samples, and rubato keeps a filter
/// length of margin on both sides.
struct AlignedSinc {
    inner: Box<dyn SincInterpolator<f32>>,
    shift: isize,
}

impl SincInterpolator<f32> for AlignedSinc {
    fn get_sinc_interpolated(&self, wave: &[f32], index: usize, subindex: usize) -> f32 {
        let f = SINC_OVERSAMPLING as isize;
        let p = index as isize * f + subindex as isize + self.shift;
        let (i, s) = (p.div_euclid(f), p.rem_euclid(f) as usize);
        // Out of range cannot happen (see above); silence beats a panic.
        if i < 0 || i as usize + self.inner.len() >= wave.len() {
            return 0.0;
        }
        self.inner.get_sinc_interpolated(wave, i as usize, s)
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn nbr_sincs(&self) -> usize {
        self.inner.nbr_sincs()
    }
}

/// The fastest sinc table this CPU can use (as rubato picks it).
fn sinc_table(sinc_len: usize, f_cutoff: f32) -> Box<dyn SincInterpolator<f32>> {
    let w = WindowFunction::BlackmanHarris2;
    #[cfg(target_arch = "x86_64")]
    {
        use rubato::sinc_interpolator::sinc_interpolator_avx::AvxInterpolator;
        use rubato::sinc_interpolator::sinc_interpolator_sse::SseInterpolator;
        if let Ok(i) = AvxInterpolator::<f32>::new(sinc_len, SINC_OVERSAMPLING, f_cutoff, w) {
            return Box::new(i);
        }
        if let Ok(i) = SseInterpolator::<f32>::new(sinc_len, SINC_OVERSAMPLING, f_cutoff, w) {
            return Box::new(i);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use rubato::sinc_interpolator::sinc_interpolator_neon::NeonInterpolator;
        if let Ok(i) = NeonInterpolator::<f32>::new(sinc_len, SINC_OVERSAMPLING, f_cutoff, w) {
            return Box::new(i);
        }
    }
    Box::new(ScalarInterpolator::<f32>::new(
        sinc_len,
        SINC_OVERSAMPLING,
        f_cutoff,
        w,
    ))
}

/// A single-channel, time-aligned `SincFixedIn` taking `chunk` input frames
/// per call: band-limited sinc of `sinc_len` taps (a multiple of 8), cubic
/// interpolation of a 256x oversampled table, Blackman-Harris window.
pub(crate) fn sinc_resampler(
    from: u32,
    to: u32,
    chunk: usize,
    sinc_len: usize,
) -> Result<SincFixedIn<f32>, String> {
    if from == 0 || to == 0 || chunk == 0 || sinc_len % 8 != 0 {
        return Err(format!("cannot resample from {from} Hz to {to} Hz"));
    }
    let ratio = to as f64 / from as f64;
    let mut f_cutoff = calculate_cutoff::<f32>(sinc_len, WindowFunction::BlackmanHarris2);
    if ratio < 1.0 {
        // The anti-aliasing filter sits below the new, lower Nyquist frequency.
        f_cutoff *= ratio as f32;
    }
    let t = 1.0 / ratio;
    let shift = -(((t - 1.0) * SINC_OVERSAMPLING as f64).round() as isize + 1);
    let table = AlignedSinc {
        inner: sinc_table(sinc_len, f_cutoff),
        shift,
    };
    SincFixedIn::new_with_interpolator(
        ratio,
        1.0,
        SincInterpolationType::Cubic,
        Box::new(table),
        chunk,
        1,
    )
    .map_err(|e| format!("cannot resample from {from} Hz to {to} Hz: {e}"))
}

/// Where [`sinc_resampler`] puts an input instant in its output stream,
/// relative to where it belongs (`t * to / from`), in whole output samples:
/// 0 unless rubato changes how it places its grid. The stream is otherwise
/// time-aligned (rubato holds output back rather than delaying it).
/// Measured with an impulse on a spare resampler, so callers stay exact
/// whatever rubato's internals do.
pub(crate) fn sinc_stream_offset(
    from: u32,
    to: u32,
    chunk: usize,
    sinc_len: usize,
) -> Result<i64, String> {
    let mut r = sinc_resampler(from, to, chunk, sinc_len)?;
    // Far enough in that start-up does not matter, far enough from the end
    // that the whole filter response comes out.
    let at = 2 * chunk + chunk / 2;
    let chunks = 4 + (2 * sinc_len).div_ceil(chunk);
    let mut input = vec![0.0f32; chunk];
    let mut buf = r.output_buffer_allocate(true);
    let mut stream = Vec::new();
    for c in 0..chunks {
        input.fill(0.0);
        if at / chunk == c {
            input[at % chunk] = 1.0;
        }
        let (_, n) = r
            .process_into_buffer(&[&input[..]], &mut buf, None)
            .map_err(|e| format!("resampling from {from} Hz to {to} Hz failed: {e}"))?;
        stream.extend_from_slice(&buf[0][..n]);
    }
    let peak = stream
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let expected = (at as f64 * to as f64 / from as f64).round() as i64;
    Ok(peak as i64 - expected)
}

/// Resamples a whole signal from `from` Hz to `to` Hz off the real-time
/// path (256-tap band-limited sinc). The output is time-aligned with the
/// input to within half a sample and holds `ceil(len * to / from)` samples.
pub fn resample_offline(x: &[f32], from: u32, to: u32) -> Result<Vec<f32>, String> {
    if from == 0 || to == 0 {
        return Err(format!("cannot resample from {from} Hz to {to} Hz"));
    }
    if from == to || x.is_empty() {
        return Ok(x.to_vec());
    }
    const CHUNK: usize = 4096;
    const SINC_LEN: usize = 256;
    let offset = sinc_stream_offset(from, to, CHUNK, SINC_LEN)?;
    let mut r = sinc_resampler(from, to, CHUNK, SINC_LEN)?;
    let want = (x.len() as u64 * to as u64).div_ceil(from as u64) as usize;
    let skip = offset.max(0) as usize;
    let mut out = Vec::with_capacity(want + skip + r.output_frames_max());
    // A stream that comes out early is delayed back into place.
    out.resize((-offset).max(0) as usize, 0.0);
    let mut chunk = vec![0.0f32; CHUNK];
    let mut buf = r.output_buffer_allocate(true);
    let mut pos = 0;
    while out.len() < want + skip {
        chunk.fill(0.0);
        let take = CHUNK.min(x.len().saturating_sub(pos));
        chunk[..take].copy_from_slice(&x[pos..pos + take]);
        pos += take;
        let (_, n) = r
            .process_into_buffer(&[&chunk[..]], &mut buf, None)
            .map_err(|e| format!("resampling from {from} Hz to {to} Hz failed: {e}"))?;
        out.extend_from_slice(&buf[0][..n]);
    }
    out.drain(..skip);
    out.truncate(want);
    Ok(out)
}

/// How long the built-in speech-like signal lasts, in seconds.
pub const SPEECH_SECONDS: f64 = 4.0;

/// The built-in speech-like test signal at `rate` Hz, [`SPEECH_SECONDS`]
/// long, peaking near -6 dBFS. Deterministic (no randomness, same samples
/// on every run).
///
/// A glottal pulse train (Rosenberg pulses, differentiated for lip
/// radiation) at a pitch gliding between 100 and 220 Hz, through three
/// formant resonators that move between vowels from syllable to syllable,
/// shaped by a syllable-rate (about 4 Hz) envelope with short gaps between
/// syllables and longer pauses between phrases. It has the spectral
/// envelope, pitch range and on/off structure that codecs, VAD/DTX and
/// concealment react to, without shipping a recording.
pub fn speech_like(rate: u32) -> Vec<f32> {
    use std::f64::consts::PI;
    // (F1, F2, F3) in Hz for /a/, /i/, /u/, /e/, /o/.
    const VOWELS: [[f64; 3]; 5] = [
        [730.0, 1090.0, 2440.0],
        [270.0, 2290.0, 3010.0],
        [300.0, 870.0, 2240.0],
        [530.0, 1840.0, 2480.0],
        [570.0, 840.0, 2410.0],
    ];
    const BANDWIDTHS: [f64; 3] = [80.0, 100.0, 130.0];
    // Syllable plan: (voiced length s, gap after s); phrases end with a long gap.
    const SYLLABLES: [(f64, f64); 14] = [
        (0.20, 0.05),
        (0.16, 0.04),
        (0.24, 0.06),
        (0.18, 0.30),
        (0.22, 0.05),
        (0.15, 0.04),
        (0.26, 0.07),
        (0.19, 0.05),
        (0.21, 0.35),
        (0.17, 0.05),
        (0.23, 0.06),
        (0.16, 0.04),
        (0.25, 0.05),
        (0.20, 0.20),
    ];
    let fs = rate as f64;
    let total = (SPEECH_SECONDS * fs).round() as usize;
    let mut out = vec![0.0f32; total];

    // Per-sample plan: syllable index and position inside it.
    let mut starts = Vec::with_capacity(SYLLABLES.len());
    let mut t0 = 0.15; // a short lead-in of silence
    for &(len, gap) in SYLLABLES.iter() {
        starts.push((t0, len));
        t0 += len + gap;
    }

    // Two-pole resonator state per formant.
    let mut y1 = [0.0f64; 3];
    let mut y2 = [0.0f64; 3];
    let mut glottal_phase = 0.0f64;
    let mut prev_pulse = 0.0f64;
    let mut noise = 0x1234_5678u32;
    let nyquist_guard = 0.45 * fs;

    for (i, o) in out.iter_mut().enumerate() {
        let t = i as f64 / fs;
        // Syllable envelope: raised cosine over each voiced stretch.
        let mut env = 0.0;
        let mut vowel_pos = 0.0;
        for (k, &(s, len)) in starts.iter().enumerate() {
            if t >= s && t < s + len {
                let x = (t - s) / len;
                env = (0.5 - 0.5 * (2.0 * PI * x).cos()).sqrt();
                vowel_pos = k as f64 + x;
                break;
            }
        }
        // Pitch: slow intonation contour with phrase-final fall, 100..220 Hz.
        let contour = 0.5 + 0.35 * (2.0 * PI * 0.45 * t).sin() + 0.15 * (2.0 * PI * 1.3 * t).sin();
        let f0 = 100.0 + 120.0 * contour.clamp(0.0, 1.0);
        glottal_phase += f0 / fs;
        if glottal_phase >= 1.0 {
            glottal_phase -= 1.0;
        }
        // Rosenberg pulse: opening 40 % of the period, closing 16 %.
        let p = glottal_phase;
        let pulse = if p < 0.40 {
            0.5 * (1.0 - (PI * p / 0.40).cos())
        } else if p < 0.56 {
            (PI * (p - 0.40) / (2.0 * 0.16)).cos()
        } else {
            0.0
        };
        let excitation = pulse - prev_pulse; // lip radiation: a first difference
        prev_pulse = pulse;
        // A little aspiration noise keeps the spectrum from being purely harmonic.
        noise ^= noise << 13;
        noise ^= noise >> 17;
        noise ^= noise << 5;
        let aspiration = (noise as f64 / u32::MAX as f64 - 0.5) * 0.02;
        let mut x = (excitation + aspiration) * env;

        // Formants glide from one vowel to the next across a syllable.
        let k = vowel_pos.floor() as usize;
        let frac = vowel_pos - vowel_pos.floor();
        let va = VOWELS[k % VOWELS.len()];
        let vb = VOWELS[(k + 1) % VOWELS.len()];
        for f in 0..3 {
            let freq = va[f] + (vb[f] - va[f]) * frac * 0.3;
            if freq >= nyquist_guard {
                continue;
            }
            let r = (-PI * BANDWIDTHS[f] / fs).exp();
            let a1 = 2.0 * r * (2.0 * PI * freq / fs).cos();
            let a2 = -r * r;
            // Unity gain at DC keeps the cascade's overall level independent of
            // where the formants sit.
            let g = 1.0 - a1 - a2;
            let v = g * x + a1 * y1[f] + a2 * y2[f];
            y2[f] = y1[f];
            y1[f] = v;
            x = v;
        }
        *o = x as f32;
    }
    let peak = out.iter().fold(0.0f32, |m, &s| m.max(s.abs()));
    if peak > 0.0 {
        let g = db_to_gain(-6.0) / peak;
        out.iter_mut().for_each(|s| *s *= g);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmental_correlation_finds_a_voice_through_a_moving_delay() {
        let x = noise(16_000, 7);
        // The second half arrives 40 samples later than the first.
        let mut moved = vec![0.0; 100];
        moved.extend_from_slice(&x[..8_000]);
        moved.extend(std::iter::repeat_n(0.0, 40));
        moved.extend_from_slice(&x[8_000..]);
        let r = segmental_correlation(&moved, &x, 2_000).unwrap();
        assert!(r > 0.99, "{r}");
        let other = noise(16_000, 8);
        let r = segmental_correlation(&moved, &other, 2_000).unwrap();
        assert!(r < 0.3, "{r}");
        // Too little voice to say.
        assert_eq!(segmental_correlation(&moved, &x[..4_000], 2_000), None);
        assert_eq!(
            segmental_correlation(&moved, &vec![0.0; 16_000], 2_000),
            None
        );
    }

    fn sine(freq: f64, rate: u32, n: usize, amp: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() as f32
            })
            .collect()
    }

    /// Deterministic noise (xorshift), zero mean, uniform in -0.5..0.5.
    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as f32 / u32::MAX as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn rms_of_known_signals() {
        assert_eq!(rms_dbfs(&[]), SILENCE_DBFS);
        assert_eq!(rms_dbfs(&[0.0; 100]), SILENCE_DBFS);
        assert!((rms_dbfs(&[1.0; 100]) - 0.0).abs() < 1e-4);
        assert!((rms_dbfs(&[-0.5; 100]) + 6.0206).abs() < 1e-3);
        let s = sine(1000.0, 48_000, 48_000, db_to_gain(-12.0));
        assert!((rms_dbfs(&s) + 15.0103).abs() < 0.01, "{}", rms_dbfs(&s));
        assert_eq!(rms_dbfs(&[f32::NAN]), SILENCE_DBFS);
    }

    #[test]
    fn xcorr_finds_the_delay_and_gain_does_not_matter() {
        let sent = noise(4000, 7);
        for lag in [0usize, 1, 137, 1500] {
            let mut received = vec![0.0f32; lag];
            received.extend(sent.iter().map(|s| 0.3 * s));
            received.extend(std::iter::repeat_n(0.0, 500));
            let (l, r) = xcorr_peak(&received, &sent, 2000);
            assert_eq!(l, lag);
            assert!(r > 0.999, "r = {r} at lag {lag}");
        }
    }

    #[test]
    fn xcorr_respects_max_lag_and_rejects_unrelated_signals() {
        let sent = noise(4000, 7);
        let mut received = vec![0.0f32; 300];
        received.extend_from_slice(&sent);
        let (l, r) = xcorr_peak(&received, &sent, 100);
        assert!(l <= 100);
        assert!(r < 0.2, "true lag is out of range, r = {r}");

        let other = noise(4300, 99);
        let (_, r) = xcorr_peak(&other, &sent, 300);
        assert!(r < 0.2, "unrelated noise correlated at {r}");

        let inverted: Vec<f32> = sent.iter().map(|s| -s).collect();
        let (_, r) = xcorr_peak(&inverted, &sent, 10);
        assert!(r < 0.2, "inverted signal read as {r}");
    }

    #[test]
    fn xcorr_matches_brute_force() {
        let a = noise(700, 3);
        let b: Vec<f32> = noise(400, 5)
            .iter()
            .zip(&a[37..])
            .map(|(n, x)| 0.5 * n + x)
            .collect();
        let (lag, r) = xcorr_peak(&a, &b, 200);
        let mut best = (0, f32::MIN);
        for l in 0..=200 {
            let ov = b.len().min(a.len() - l);
            let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
            for n in 0..ov {
                ab += a[n + l] as f64 * b[n] as f64;
                aa += a[n + l] as f64 * a[n + l] as f64;
                bb += b[n] as f64 * b[n] as f64;
            }
            let v = (ab / (aa * bb).sqrt()) as f32;
            if v > best.1 {
                best = (l, v);
            }
        }
        assert_eq!(lag, 37);
        assert_eq!(lag, best.0);
        assert!((r - best.1).abs() < 1e-4, "{r} vs {}", best.1);
    }

    #[test]
    fn xcorr_of_empty_or_silent_input_is_zero() {
        assert_eq!(xcorr_peak(&[], &[1.0], 10), (0, 0.0));
        assert_eq!(xcorr_peak(&[1.0], &[], 10), (0, 0.0));
        assert_eq!(xcorr_peak(&[0.0; 50], &[0.0; 50], 10), (0, 0.0));
    }

    #[test]
    fn goertzel_and_zero_crossings_read_a_tone() {
        let s = sine(1000.0, 48_000, 9600, db_to_gain(-6.0));
        let f = zero_crossing_hz(&s, 48_000).unwrap();
        assert!((f - 1000.0).abs() < 0.5, "{f}");
        let at = goertzel_dbfs(&s, 48_000, 1000.0);
        assert!((at + 9.03).abs() < 0.05, "{at}");
        let off = goertzel_dbfs(&s, 48_000, 3000.0);
        assert!(off < at - 40.0, "{off}");
        assert_eq!(zero_crossing_hz(&[0.5; 10], 48_000), None);
    }

    #[test]
    fn offline_resampling_keeps_frequency_level_and_alignment() {
        let src = sine(440.0, 44_100, 44_100, 0.5);
        let out = resample_offline(&src, 44_100, 48_000).unwrap();
        assert_eq!(out.len(), 48_000);
        let f = zero_crossing_hz(&out[1000..47_000], 48_000).unwrap();
        assert!((f - 440.0).abs() < 0.2, "{f}");
        let want = sine(440.0, 48_000, 48_000, 0.5);
        let (lag, r) = xcorr_peak(&out[..40_000], &want[..40_000], 10);
        assert_eq!(lag, 0, "resampled signal is shifted");
        assert!(r > 0.99999, "{r}");
        assert!((rms_dbfs(&out[1000..47_000]) - rms_dbfs(&want)).abs() < 0.1);
    }

    #[test]
    fn the_sinc_resampler_is_time_aligned() {
        for (from, to) in [
            (48_000, 16_000),
            (16_000, 48_000),
            (44_100, 48_000),
            (48_000, 44_100),
            (8_000, 48_000),
            (48_000, 8_000),
        ] {
            assert_eq!(
                sinc_stream_offset(from, to, 960, 128).unwrap(),
                0,
                "{from}->{to}"
            );
        }
    }

    #[test]
    fn speech_like_is_deterministic_and_speech_shaped() {
        let a = speech_like(48_000);
        let b = speech_like(48_000);
        assert_eq!(a, b);
        assert_eq!(a.len(), (SPEECH_SECONDS * 48_000.0) as usize);
        let peak = a.iter().fold(0.0f32, |m, &s| m.max(s.abs()));
        assert!((peak - db_to_gain(-6.0)).abs() < 1e-3);
        // Pauses: some 20 ms windows are silent, most are active.
        let windows: Vec<f32> = a.chunks(960).map(rms_dbfs).collect();
        let silent = windows.iter().filter(|&&l| l < -60.0).count();
        let active = windows.iter().filter(|&&l| l > -40.0).count();
        assert!(silent >= 10, "{silent} silent windows");
        assert!(active >= windows.len() / 2, "{active} active windows");
        // Pitch lies in the voice range: the strongest periodicity of a
        // voiced stretch is between 100 and 220 Hz (autocorrelation peak).
        let v = &a[(0.30 * 48_000.0) as usize..(0.30 * 48_000.0) as usize + 4800];
        let lag_of = |lo: usize, hi: usize| {
            (lo..hi)
                .max_by(|&x, &y| {
                    let c = |l: usize| v.iter().zip(&v[l..]).map(|(p, q)| p * q).sum::<f32>();
                    c(x).total_cmp(&c(y))
                })
                .unwrap()
        };
        let period = lag_of(48_000 / 230, 48_000 / 95);
        let f0 = 48_000.0 / period as f64;
        assert!((100.0..=225.0).contains(&f0), "pitch {f0} Hz");
        // It runs at narrowband rates too.
        assert_eq!(
            speech_like(8_000).len(),
            (SPEECH_SECONDS * 8_000.0) as usize
        );
        assert!(speech_like(8_000).iter().all(|s| s.is_finite()));
    }
}
