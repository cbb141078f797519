//! `audio.ring_source`: the cadences a callee's and a caller's speaker
//! play, at their level, with click-free edges; bad params refused. Every
//! `process` runs under `assert_no_alloc`.

wzp_engine::install_alloc_checker!();

mod audio_support;

use audio_support::*;
use std::sync::Arc;
use wzp_engine::rt_check::assert_rt_safe;

use wzp_engine::prelude::Resources;
use wzp_stages::audio::ring_source::{RingGate, RingSource};
use wzp_stages::audio::signal::rms_dbfs;

/// `quanta` quanta of the pattern.
fn play(pattern: &str, level_db: f64, quanta: usize) -> (Vec<f32>, Harness) {
    let mut h = Harness::build(
        &RingSource,
        &[("pattern", text(pattern)), ("level_db", float(level_db))],
    )
    .unwrap();
    let mut out = Vec::new();
    for _ in 0..quanta {
        assert_rt_safe("audio.ring_source process", 1, || {
            h.run();
        });
        out.extend_from_slice(h.output(0));
    }
    (out, h)
}

/// Per 10 ms, whether the ring sounds (over -60 dBFS RMS).
fn sounding(x: &[f32]) -> Vec<bool> {
    x.chunks(480).map(|c| rms_dbfs(c) > -60.0).collect()
}

/// (start, end) of each run of sound, in 10 ms blocks.
fn bursts(on: &[bool]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut start = None;
    for (i, &s) in on.iter().enumerate() {
        match (s, start) {
            (true, None) => start = Some(i),
            (false, Some(a)) => {
                v.push((a, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(a) = start {
        v.push((a, on.len()));
    }
    v
}

#[test]
fn a_callee_hears_a_double_ring_every_three_seconds() {
    // 6.5 s: two whole cadences and the start of a third.
    let (x, h) = play("ring", -16.0, 325);
    assert_eq!(
        bursts(&sounding(&x)),
        [(0, 40), (60, 100), (300, 340), (360, 400), (600, 640)],
        "0.4 s on, 0.2 off, 0.4 on, 2 off"
    );
    assert_eq!(h.counter("rings"), 3);
    // The peak is the level asked for (two tones in phase at most).
    let peak = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let peak_db = 20.0 * peak.log10();
    assert!((-17.0..=-16.0).contains(&peak_db), "peak {peak_db} dBFS");
    // Both tones are there, nothing else: most of the energy at 400 and 450.
    let burst = &x[4_800..4_800 + 9_600];
    let e = |f: f64| {
        let (mut c, mut s) = (0f64, 0f64);
        for (i, v) in burst.iter().enumerate() {
            let w = std::f64::consts::TAU * f * i as f64 / 48_000.0;
            c += f64::from(*v) * w.cos();
            s += f64::from(*v) * w.sin();
        }
        (c * c + s * s).sqrt()
    };
    assert!(e(400.0) > 50.0 * e(1000.0));
    assert!(e(450.0) > 50.0 * e(1000.0));
    assert!((e(400.0) / e(450.0) - 1.0).abs() < 0.1);
}

#[test]
fn a_caller_hears_ringback_two_seconds_in_six() {
    let (x, h) = play("ringback", -20.0, 650);
    assert_eq!(
        bursts(&sounding(&x)),
        [(0, 200), (600, 800), (1200, 1300)],
        "2 s on, 4 s off"
    );
    assert_eq!(h.counter("rings"), 3);
}

#[test]
fn bursts_fade_in_and_out_without_a_click() {
    let (x, _) = play("ring", 0.0, 60);
    // Sample to sample, the ring never jumps more than its two tones can
    // move in one sample at full scale (no step at an edge).
    let max_step = x
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0f32, f32::max);
    let slope = (std::f64::consts::TAU * 450.0 / 48_000.0) as f32;
    assert!(max_step <= slope * 1.05, "step {max_step} > {slope}");
    // The first and last samples of a burst are near silence.
    assert!(x[0].abs() < 1e-3);
    assert!(x[19_199].abs() < 0.01, "{}", x[19_199]);
}

#[test]
fn bad_params_are_refused_with_what_to_use() {
    for (set, needle) in [
        (
            vec![("pattern", text("chime"))],
            "\"ring\", \"ringback\", \"connected\", \"waiting\", \"hold\" or \"none\"",
        ),
        (vec![("level_db", float(3.0))], "level_db"),
        (vec![("level_db", float(-80.0))], "level_db"),
    ] {
        let err = match Harness::build(&RingSource, &set) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{set:?} built"),
        };
        assert!(err.contains(needle), "{set:?}: {err}");
    }
}

#[test]
fn a_call_starting_sweeps_once_upwards_then_is_silent() {
    // 2 s at 20 ms quanta.
    let (x, h) = play("connected", -20.0, 100);
    let runs = bursts(&sounding(&x));
    assert_eq!(runs, [(0, 80)], "0.8 s of sound, once");
    assert_eq!(h.counter("rings"), 1);
    // Its peak is the level asked.
    let peak = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!((peak - 0.1).abs() < 0.005, "peak {peak}");
    // It rises: low in its first tenth, high in its last.
    let zc = |s: &[f32]| wzp_stages::audio::signal::zero_crossing_hz(s, 48_000).expect("a tone");
    let (early, late) = (zc(&x[2_400..4_800]), zc(&x[33_600..36_000]));
    assert!(
        early < 800.0 && late > 3_000.0,
        "{early} Hz, then {late} Hz"
    );
    // No click at either end.
    assert!(
        x[0].abs() < 1e-3 && x[38_399].abs() < 2e-3,
        "{} {}",
        x[0],
        x[38_399]
    );
    // "none" is silence.
    let (x, _) = play("none", -20.0, 10);
    assert!(x.iter().all(|v| *v == 0.0));
}

/// 20 ms quanta of the `"waiting"` pattern behind `gate`, opened and shut
/// by `open(quantum)`.
fn gated(gate: &Arc<RingGate>, quanta: usize, open: impl Fn(usize) -> bool) -> Vec<f32> {
    let mut res = Resources::new();
    res.insert("call.waiting", gate.clone());
    let mut h = Harness::build_with(
        &RingSource,
        &[
            ("pattern", text("waiting")),
            ("level_db", float(-20.0)),
            ("gate", text("call.waiting")),
        ],
        RATE,
        QUANTUM,
        &res,
    )
    .unwrap();
    let mut out = Vec::new();
    for q in 0..quanta {
        gate.set(open(q));
        assert_rt_safe("audio.ring_source process", 1, || {
            h.run();
        });
        out.extend_from_slice(h.output(0));
    }
    out
}

#[test]
fn a_waiting_call_beeps_twice_only_while_its_gate_is_open_and_from_the_start_each_time() {
    let gate = Arc::new(RingGate::new(false));
    // Shut for 1 s, open for 11 s (two cadences begin), shut 1 s, open 1 s.
    let open = |q: usize| (50..600).contains(&q) || q >= 650;
    let x = gated(&gate, 700, open);
    assert_eq!(
        bursts(&sounding(&x)),
        [
            (100, 120),
            (140, 160),
            (1100, 1120),
            (1140, 1160),
            (1300, 1320),
            (1340, 1360)
        ],
        "0.2 s on, 0.2 off, 0.2 on, every 10 s while open; from the start when it opens again"
    );
    // 440 Hz at the level asked, nothing else.
    let beep = &x[100 * 480 + 960..120 * 480 - 960];
    let level = |f: f64| wzp_stages::audio::signal::goertzel_dbfs(beep, 48_000, f);
    assert!((level(440.0) - -23.0).abs() < 1.5, "{} dBFS", level(440.0));
    assert!(level(1000.0) < level(440.0) - 40.0);
    // No gate inserted: always on, as the other patterns.
    let (x, _) = play("waiting", -20.0, 60);
    assert_eq!(bursts(&sounding(&x)), [(0, 20), (40, 60)]);
}

#[test]
fn a_held_call_beeps_once_every_four_seconds_at_523_hz() {
    let (x, _) = play("hold", -20.0, 500);
    assert_eq!(
        bursts(&sounding(&x)),
        [(0, 30), (400, 430), (800, 830)],
        "0.3 s on every 4 s (10 ms units)"
    );
    let beep = &x[960..30 * 480 - 960];
    let level = |f: f64| wzp_stages::audio::signal::goertzel_dbfs(beep, 48_000, f);
    assert!((level(523.0) - -23.0).abs() < 1.5, "{} dBFS", level(523.0));
    assert!(level(440.0) < level(523.0) - 30.0);
}
