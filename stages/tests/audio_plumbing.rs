//! Behaviour of the small audio stages: tone, gain, mix, split, null sink.

mod audio_support;

use audio_support::*;
use wzp_engine::prelude::*;
use wzp_stages::audio::signal::{db_to_gain, rms_dbfs, zero_crossing_hz};
use wzp_stages::audio::{
    gain::Gain, mix::Mix, null_sink::NullSink, split::Split, tone_source::ToneSource,
};

#[test]
fn tone_is_phase_continuous_at_the_right_pitch_and_level() {
    let mut h = Harness::build(&ToneSource, &[("freq", float(1000.0))]).unwrap();
    let mut out = Vec::new();
    for _ in 0..50 {
        assert_eq!(h.run(), Flow::Continue);
        out.extend_from_slice(h.output(0));
    }
    // Sample by sample it is the ideal sine: no jump at quantum boundaries.
    let ideal = sine(1000.0, 48_000, out.len(), db_to_gain(-12.0));
    let worst = out
        .iter()
        .zip(&ideal)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "deviates by {worst}");
    assert!((zero_crossing_hz(&out, 48_000).unwrap() - 1000.0).abs() < 0.01);
    assert!((rms_dbfs(&out) + 15.01).abs() < 0.01);
}

#[test]
fn tone_duration_is_exact_and_then_it_finishes() {
    let mut h = Harness::build(
        &ToneSource,
        &[("duration", dur("1010ms")), ("rate", int(16_000))],
    )
    .unwrap();
    assert_eq!(h.built_outputs[0].ty, PortType::Pcm { rate: 16_000 });
    let (out, cycles) = h.collect_until_finished(100);
    // 1010 ms = 50.5 quanta: 51 quanta, the last half silence.
    assert_eq!(cycles, 51);
    let sound = 16_160;
    assert!(out[sound..].iter().all(|&s| s == 0.0));
    assert!(out[sound - 20..sound].iter().any(|&s| s != 0.0));
    assert_eq!(h.run(), Flow::Finished);
}

#[test]
fn tone_params_are_checked() {
    for (set, needle) in [
        (vec![("freq", float(30_000.0))], "freq"),
        (vec![("freq", float(0.0))], "freq"),
        (vec![("level_db", float(3.0))], "level_db"),
        (vec![("rate", int(11_025))], "whole number"),
    ] {
        let err = Harness::build(&ToneSource, &set).err().unwrap().to_string();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn gain_multiplies_and_checks_its_range() {
    let mut h = Harness::build(&Gain, &[("gain_db", float(-20.0))]).unwrap();
    let x = sine(440.0, 48_000, 960, 0.8);
    let y = h.stream(&x);
    for (a, b) in x.iter().zip(&y) {
        assert!((a * 0.1 - b).abs() < 1e-6);
    }
    let mut unity = Harness::build(&Gain, &[]).unwrap();
    assert_eq!(unity.stream(&x), x, "0 dB is exact");
    for g in [-97.0, 24.5] {
        let err = Harness::build(&Gain, &[("gain_db", float(g))])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("gain_db") && err.contains("-96..=24"), "{err}");
    }
}

#[test]
fn mix_sums_clamps_and_counts() {
    let mut h = Harness::build(&Mix, &[("inputs", int(3))]).unwrap();
    assert_eq!(h.built_inputs.len(), 3);
    assert!(
        h.built_inputs.iter().all(|p| !p.required),
        "inputs are optional"
    );
    assert_eq!(h.built_inputs[2].name, "in2");
    let a = sine(300.0, 48_000, 960, 0.25);
    let b = sine(700.0, 48_000, 960, 0.25);
    h.input(0).copy_from_slice(&a);
    h.input(1).copy_from_slice(&b);
    // in2 is left silent, as an unlinked input is.
    h.run();
    for i in 0..960 {
        assert!((h.output(0)[i] - (a[i] + b[i])).abs() < 1e-7);
    }
    assert_eq!(h.counter("clipped_samples"), 0);

    h.input(0).fill(0.8);
    h.input(1).fill(0.7);
    h.input(2).fill(0.0);
    h.input(2)[0] = -3.0;
    h.input(2)[1] = f32::NAN;
    h.run();
    assert_eq!(h.output(0)[0], -1.0, "0.8 + 0.7 - 3 clamps to -1");
    assert_eq!(h.output(0)[1], 0.0, "NaN becomes silence");
    assert!(h.output(0)[2..].iter().all(|&s| s == 1.0));
    assert_eq!(h.counter("clipped_samples"), 960);

    for n in [0, 65] {
        let err = Harness::build(&Mix, &[("inputs", int(n))])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("inputs"), "{err}");
    }
}

#[test]
fn split_copies_to_every_output() {
    let mut h = Harness::build(&Split, &[("outputs", int(3))]).unwrap();
    let names: Vec<&str> = h.built_outputs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["out0", "out1", "out2"]);
    let x = sine(123.0, 48_000, 960, 0.5);
    h.input(0).copy_from_slice(&x);
    h.run();
    for o in 0..3 {
        assert_eq!(h.output(o), &x[..], "out{o}");
    }
    assert!(Harness::build(&Split, &[("outputs", int(0))]).is_err());
}

#[test]
fn null_sink_reports_the_level_of_the_last_second() {
    let mut h = Harness::build(&NullSink, &[]).unwrap();
    assert_eq!(
        h.gauge("level_dbfs_x100"),
        -12_000,
        "silence before anything"
    );
    let loud = sine(1000.0, 48_000, 48_000, db_to_gain(-12.0));
    h.stream(&loud);
    assert!((h.gauge("level_dbfs_x100") + 1501).abs() <= 2);
    // Half a second of silence: the window holds half tone, half silence.
    h.stream(&vec![0.0; 24_000]);
    assert!(
        (h.gauge("level_dbfs_x100") + 1802).abs() <= 3,
        "{}",
        h.gauge("level_dbfs_x100")
    );
    // A full second of silence flushes the tone out.
    h.stream(&vec![0.0; 24_000]);
    assert_eq!(h.gauge("level_dbfs_x100"), -12_000);
    assert_eq!(h.counter("samples"), 96_000);
}

#[test]
fn null_sink_measures_a_partial_first_second_and_other_rates() {
    let mut h = Harness::build_at(&NullSink, &[("rate", int(8_000))], 48_000, QUANTUM).unwrap();
    assert_eq!(h.built_inputs[0].ty, PortType::Pcm { rate: 8_000 });
    h.stream(&vec![0.5; 1_600]);
    assert_eq!(
        h.gauge("level_dbfs_x100"),
        -602,
        "10 quanta of 0.5: -6.02 dBFS"
    );
    assert_eq!(h.counter("samples"), 1_600);
}
