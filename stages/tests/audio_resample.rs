//! `audio.resample`: keeps frequency and level, delays by exactly what it
//! declares, and never runs its FIFO dry.

mod audio_support;

use audio_support::*;
use wzp_stages::audio::resample::Resample;
use wzp_stages::audio::signal::{
    goertzel_dbfs, resample_offline, rms_dbfs, speech_like, xcorr_peak, zero_crossing_hz,
};

fn resampler(from: i64, to: i64) -> Harness {
    Harness::build(&Resample, &[("from", int(from)), ("to", int(to))]).unwrap()
}

#[test]
fn tone_survives_48k_to_16k_and_back() {
    let mut down = resampler(48_000, 16_000);
    let mut up = resampler(16_000, 48_000);
    let tone = sine(1000.0, 48_000, 48_000 * 2, 0.5);
    let mid = down.stream(&tone);
    assert_eq!(mid.len(), 16_000 * 2, "one 320-sample quantum per 960 in");
    let out = up.stream(&mid);
    assert_eq!(out.len(), tone.len());
    // Judge the steady state (skip the start-up).
    let steady = &out[4_800..];
    let f = zero_crossing_hz(steady, 48_000).unwrap();
    assert!((f - 1000.0).abs() < 0.5, "frequency {f} Hz");
    let level = rms_dbfs(steady);
    let want = rms_dbfs(&tone);
    assert!((level - want).abs() < 0.1, "level {level} vs {want} dBFS");
    let tone_level = goertzel_dbfs(steady, 48_000, 1000.0);
    assert!(
        (tone_level - want).abs() < 0.1,
        "1 kHz component {tone_level}"
    );
    let mid_f = zero_crossing_hz(&mid[1_600..], 16_000).unwrap();
    assert!((mid_f - 1000.0).abs() < 0.5, "16 kHz leg at {mid_f} Hz");
    for name in ["fifo_underruns", "fifo_overruns", "errors"] {
        assert_eq!(down.counter(name), 0, "down {name}");
        assert_eq!(up.counter(name), 0, "up {name}");
    }
}

#[test]
fn downsampling_removes_what_the_lower_rate_cannot_carry() {
    // 10 kHz is above 8 kHz, the Nyquist frequency of 16 kHz: it must be
    // filtered out, not folded down to 6 kHz.
    let mut down = resampler(48_000, 16_000);
    let alias_bait = sine(10_000.0, 48_000, 48_000, 0.5);
    let out = down.stream(&alias_bait);
    let steady = &out[1_600..];
    assert!(
        rms_dbfs(steady) < -60.0,
        "10 kHz leaked through at {} dBFS",
        rms_dbfs(steady)
    );
    assert!(goertzel_dbfs(steady, 16_000, 6_000.0) < -60.0);
}

/// The stage's output lags the (time-aligned) offline conversion by exactly
/// the latency it declares.
#[test]
fn declared_latency_is_the_measured_delay() {
    for (from, to) in [
        (48_000u32, 16_000u32),
        (16_000, 48_000),
        (44_100, 48_000),
        (48_000, 8_000),
        (24_000, 48_000),
    ] {
        let mut h = resampler(from as i64, to as i64);
        let input = speech_like(from);
        let out = h.stream(&input);
        let reference = resample_offline(&input, from, to).unwrap();
        let (lag, r) = xcorr_peak(&out, &reference, to as usize / 10);
        let declared = (h.latency.as_secs_f64() * to as f64).round() as i64;
        assert_eq!(
            lag as i64, declared,
            "{from}->{to}: measured {lag} samples, declared {declared}"
        );
        assert!(r > 0.999, "{from}->{to}: correlation {r}");
        // Low latency is the point of a sinc resampler here: under 10 ms.
        assert!(h.latency.as_millis() < 10, "{from}->{to}: {:?}", h.latency);
        println!("{from}->{to}: latency {:?} ({declared} samples)", h.latency);
    }
}

#[test]
fn fifo_never_runs_dry_over_a_long_run() {
    // Over 3 minutes of 20 ms quanta for an awkward ratio and an easy one.
    for (from, to) in [(44_100i64, 48_000i64), (48_000, 16_000), (8_000, 44_100)] {
        let mut h = resampler(from, to);
        let q = h.input(0).len();
        let tone = sine(440.0, from as u32, q * 50, 0.3);
        for k in 0..10_000 {
            let start = (k % 49) * q;
            h.input(0).copy_from_slice(&tone[start..start + q]);
            h.run();
        }
        assert_eq!(h.counter("fifo_underruns"), 0, "{from}->{to}");
        assert_eq!(h.counter("fifo_overruns"), 0, "{from}->{to}");
        assert_eq!(h.counter("errors"), 0, "{from}->{to}");
    }
}

#[test]
fn equal_rates_copy_with_no_latency() {
    let mut h = resampler(0, 48_000);
    assert!(h.latency.is_zero());
    let x = sine(300.0, 48_000, 960 * 3, 0.7);
    assert_eq!(h.stream(&x), x);
}

#[test]
fn ports_carry_the_rates() {
    use wzp_engine::prelude::PortType;
    let mut h = resampler(0, 16_000);
    assert_eq!(h.built_inputs[0].ty, PortType::Pcm { rate: 48_000 });
    assert_eq!(h.built_outputs[0].ty, PortType::Pcm { rate: 16_000 });
    assert_eq!(h.input_len(), 960);
    assert_eq!(h.output(0).len(), 320);
}

#[test]
fn bad_rates_are_refused_with_a_reason() {
    for (from, to, needle) in [
        (-1i64, 16_000i64, "out of range"),
        (48_000, 500, "out of range"),
        (48_000, 1_000_000, "out of range"),
        // 11025 Hz gives 220.5 samples per 20 ms.
        (48_000, 11_025, "whole number of samples"),
    ] {
        let err = Harness::build(&Resample, &[("from", int(from)), ("to", int(to))])
            .err()
            .unwrap_or_else(|| panic!("{from}->{to} should be refused"))
            .to_string();
        assert!(err.contains(needle), "{from}->{to}: {err}");
    }
}
