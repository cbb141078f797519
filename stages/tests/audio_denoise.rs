//! `audio.denoise`: a room's steady noise is turned down in the
//! microphone; a voice over it is not, and a quiet room passes as it was.

mod audio_support;

use std::time::Duration;

use audio_support::*;
use wzp_engine::prelude::*;
use wzp_stages::audio::denoise::Denoise;
use wzp_stages::audio::signal::speech_like;

const FS: u32 = 16_000;

fn noise(seed: &mut u32) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;
    (*seed as f32 / u32::MAX as f32) * 2.0 - 1.0
}

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|v| *v as f64 * *v as f64).sum()
}

fn db(a: f64, b: f64) -> f64 {
    10.0 * (a / b.max(1e-30)).log10()
}

fn harness(set: &[(&str, ParamValue)]) -> Harness {
    let mut all = vec![("rate", int(FS as i64))];
    all.extend_from_slice(set);
    Harness::build_at(&Denoise, &all, FS, Duration::from_millis(20)).unwrap()
}

/// Runs `x` through the stage and returns the output aligned with it (the
/// latency taken off).
fn run(h: &mut Harness, x: &[f32]) -> Vec<f32> {
    let q = h.input(0).len();
    let late = (h.latency.as_nanos() * FS as u128 / 1_000_000_000) as usize;
    let silence = vec![0.0f32; q];
    let mut out = Vec::with_capacity(x.len() + q);
    for c in x.chunks(q).chain([&silence[..]]) {
        h.input(0).fill(0.0);
        h.input(0)[..c.len()].copy_from_slice(c);
        assert_eq!(h.run(), Flow::Continue);
        out.extend_from_slice(&h.output(0)[..c.len()]);
    }
    out.drain(..late);
    out.truncate(x.len());
    out
}

/// The built-in speech over a fan: noise low-passed (a one-pole at ~1 kHz)
/// `snr_db` under the speech's level while it talks.
fn noisy_speech(secs: usize, snr_db: f64) -> (Vec<f32>, Vec<f32>) {
    let speech: Vec<f32> = speech_like(FS)
        .into_iter()
        .cycle()
        .take(FS as usize * secs)
        .collect();
    let mut seed = 11;
    let mut lp = 0.0f32;
    let mut fan: Vec<f32> = (0..speech.len())
        .map(|_| {
            lp += 0.3 * (noise(&mut seed) - lp);
            lp
        })
        .collect();
    let active: Vec<f32> = speech.iter().copied().filter(|v| v.abs() > 0.01).collect();
    let speech_ms = energy(&active) / active.len() as f64;
    let fan_ms = energy(&fan) / fan.len() as f64;
    let k = (speech_ms / fan_ms / 10f64.powf(snr_db / 10.0)).sqrt() as f32;
    fan.iter_mut().for_each(|v| *v *= k);
    (speech, fan)
}

/// The level of `part` in `out` over `r`: its projection, against itself.
fn level_of(out: &[f32], part: &[f32], r: std::ops::Range<usize>) -> f64 {
    let dot: f64 = out[r.clone()]
        .iter()
        .zip(&part[r.clone()])
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    20.0 * (dot.max(1e-30) / energy(&part[r])).log10()
}

#[test]
fn a_fan_is_turned_down_and_the_voice_over_it_kept() {
    let (speech, fan) = noisy_speech(12, 10.0);
    let mic: Vec<f32> = speech.iter().zip(&fan).map(|(s, f)| s + f).collect();
    let mut h = harness(&[]);
    let out = run(&mut h, &mic);
    let late = 4 * FS as usize..12 * FS as usize;
    // The voice comes through at close to its level...
    let voice = level_of(&out, &speech, late.clone());
    assert!(voice > -1.5, "the voice at {voice:.1} dB");
    // ...and what else comes through (the fan, and what the gains took
    // from the voice) is well under what the fan was.
    let rest: Vec<f32> = out[late.clone()]
        .iter()
        .zip(&speech[late.clone()])
        .map(|(o, s)| o - s)
        .collect();
    let down = db(energy(&fan[late.clone()]), energy(&rest));
    // Measured 4.8 dB (the fan in the pauses 14.9, the voice -0.8).
    assert!(
        down > 3.0,
        "the fan and the voice's losses {down:.1} dB under the fan"
    );
    // Where the speech pauses, the fan is down by most of the depth.
    let pauses: Vec<usize> = late
        .clone()
        .filter(|&i| {
            speech[i.saturating_sub(800)..(i + 800).min(speech.len())]
                .iter()
                .all(|v| v.abs() < 1e-3)
        })
        .collect();
    assert!(pauses.len() > FS as usize / 2, "no pauses to measure in");
    let (o, f): (f64, f64) = pauses
        .iter()
        .map(|&i| ((out[i] as f64).powi(2), (fan[i] as f64).powi(2)))
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let quiet = db(f, o);
    assert!(
        (11.0..17.0).contains(&quiet),
        "the fan in the pauses down by {quiet:.1} dB"
    );
    // The gauges: the fan's level, and noise removed.
    let fan_dbfs = 10.0 * (energy(&fan) / fan.len() as f64).log10();
    let heard = h.gauge("noise_dbfs") as f64 / 10.0;
    assert!(
        (heard - fan_dbfs).abs() < 3.0,
        "noise read at {heard} dBFS, the fan is at {fan_dbfs:.1}"
    );
    assert!(h.gauge("removed_db") > 0);
    assert_eq!(h.counter("denoise_resets"), 0);
}

#[test]
fn a_quiet_room_passes_as_it_was() {
    // Speech over a -80 dBFS floor: nothing worth taking out. After the
    // first half second the output is the input, bit for bit.
    let (speech, fan) = noisy_speech(8, 60.0);
    let fan_dbfs = 10.0 * (energy(&fan) / fan.len() as f64).log10();
    assert!(fan_dbfs < -75.0, "the room at {fan_dbfs:.1} dBFS");
    let mic: Vec<f32> = speech.iter().zip(&fan).map(|(s, f)| s + f).collect();
    let mut h = harness(&[]);
    let out = run(&mut h, &mic);
    let from = FS as usize / 2;
    let changed = (from..mic.len()).filter(|&i| out[i] != mic[i]).count();
    assert_eq!(changed, 0, "{changed} samples changed in a quiet room");
    assert!(
        h.gauge("noise_dbfs") < -700,
        "noise read at {}",
        h.gauge("noise_dbfs")
    );
}

#[test]
fn disabled_passes_through_and_digital_silence_passes_bit_exact() {
    let (speech, fan) = noisy_speech(2, 10.0);
    let mic: Vec<f32> = speech.iter().zip(&fan).map(|(s, f)| s + f).collect();
    let mut h = harness(&[("enabled", ParamValue::Bool(false))]);
    assert_eq!(h.latency, Duration::ZERO);
    assert!(run(&mut h, &mic) == mic);
    let mut h = harness(&[]);
    assert_eq!(h.latency, Duration::from_millis(5));
    let zero = vec![0.0f32; FS as usize];
    assert!(run(&mut h, &zero) == zero);
}

#[test]
fn params_and_the_quantum_are_checked() {
    for (set, needle) in [
        (vec![("depth", float(1.0))], "depth"),
        (vec![("depth", float(60.0))], "depth"),
        (vec![("rate", int(22_050))], "multiple of 100 Hz"),
    ] {
        let err = Harness::build_at(&Denoise, &set, 48_000, Duration::from_millis(20))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
    let err = Harness::build_at(&Denoise, &[], 48_000, Duration::from_millis(2))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("whole number"), "{err}");
    // 44.1 kHz: 10 ms frames.
    let mut h = Harness::build_at(
        &Denoise,
        &[("rate", int(44_100))],
        44_100,
        Duration::from_millis(20),
    )
    .unwrap();
    assert_eq!(h.latency, Duration::from_millis(10));
    assert_eq!(h.run(), Flow::Continue);
}
