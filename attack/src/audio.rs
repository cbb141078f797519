//! Measures on the legit recordings: dropout windows, the level of a tone
//! (who is heard), overall level (digital silence).

use std::ops::Range;
use std::path::Path;

/// The sample rate `wzp-client join` records at.
pub const RATE: u32 = 16_000;

/// Samples in one dropout window (100 ms).
pub const WINDOW: usize = RATE as usize / 10;

/// A window this far below the recording's median level is a dropout.
pub const DROPOUT_DB: f32 = 10.0;

/// Reads a 16-bit mono WAV recorded at [`RATE`].
pub fn read_wav(path: &Path) -> Vec<f32> {
    let r = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, RATE, 16),
        "{}: unexpected format",
        path.display()
    );
    r.into_samples::<i16>()
        .map(|s| f32::from(s.expect("a sample")) / 32768.0)
        .collect()
}

/// RMS level in dBFS (−120 for silence).
pub fn rms_dbfs(x: &[f32]) -> f32 {
    if x.is_empty() {
        return -120.0;
    }
    let p = x.iter().map(|s| s * s).sum::<f32>() / x.len() as f32;
    (10.0 * p.log10()).max(-120.0)
}

/// Level of each 100 ms window, dBFS.
pub fn window_levels(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(WINDOW).map(rms_dbfs).collect()
}

/// The median of `levels`.
pub fn median(levels: &[f32]) -> f32 {
    let mut v = levels.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(-120.0)
}

/// The dropout windows among `windows` (indices into `levels`): those more
/// than [`DROPOUT_DB`] below `reference`.
pub fn dropouts(levels: &[f32], windows: Range<usize>, reference: f32) -> Vec<usize> {
    let end = windows.end.min(levels.len());
    (windows.start.min(end)..end)
        .filter(|&i| levels[i] < reference - DROPOUT_DB)
        .collect()
}

/// Level of a pure tone at `freq` in `x` (Goertzel), dBFS of a sine's RMS.
pub fn goertzel_dbfs(x: &[f32], freq: f64) -> f32 {
    if x.is_empty() {
        return -120.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(RATE);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - c * s1 * s2;
    // A sine of amplitude A gives power (A N / 2)^2; its RMS is A / sqrt 2.
    let n = x.len() as f64;
    let amp = 2.0 * power.max(0.0).sqrt() / n;
    let rms = amp / std::f64::consts::SQRT_2;
    (20.0 * rms.max(1e-6).log10()) as f32
}

/// Level of the `freq` tone in `x`: the mean power of its Goertzel level
/// over 0.5 s windows. (One coherent sum over seconds would also measure
/// the tone's phase staying put, which a jitter buffer stretching or
/// skipping a frame moves.)
pub fn tone_dbfs(x: &[f32], freq: f64) -> f32 {
    let powers: Vec<f64> = x
        .chunks_exact(RATE as usize / 2)
        .map(|w| 10f64.powf(f64::from(goertzel_dbfs(w, freq)) / 10.0))
        .collect();
    if powers.is_empty() {
        return -120.0;
    }
    (10.0 * (powers.iter().sum::<f64>() / powers.len() as f64).log10()) as f32
}

/// Index of the first window from which the recording carries sound
/// (level above −40 dBFS): the call's start-up ends there.
pub fn first_sound(levels: &[f32]) -> Option<usize> {
    levels.iter().position(|&l| l > -40.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, secs: f64, amp: f32) -> Vec<f32> {
        (0..(secs * f64::from(RATE)) as usize)
            .map(|i| {
                amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(RATE)).sin() as f32
            })
            .collect()
    }

    #[test]
    fn a_tone_is_measured_at_its_frequency_only() {
        let x = tone(440.0, 2.0, 0.25);
        // A sine of amplitude 0.25 has an RMS of -15 dBFS.
        assert!((tone_dbfs(&x, 440.0) + 15.0).abs() < 0.5);
        assert!((rms_dbfs(&x) + 15.0).abs() < 0.2);
        assert!(tone_dbfs(&x, 660.0) < -60.0);
    }

    #[test]
    fn a_gap_is_a_dropout_and_a_steady_tone_is_not() {
        let mut x = tone(440.0, 3.0, 0.25);
        let levels = window_levels(&x);
        let m = median(&levels);
        assert!(dropouts(&levels, 0..levels.len(), m).is_empty());
        // 250 ms of silence: two whole windows (and part of a third).
        for s in &mut x[16_000..20_000] {
            *s = 0.0;
        }
        let levels = window_levels(&x);
        let d = dropouts(&levels, 0..levels.len(), median(&levels));
        assert!(d.len() >= 2 && d.len() <= 3, "{d:?}");
        assert_eq!(first_sound(&levels), Some(0));
    }
}
