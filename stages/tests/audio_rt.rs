//! Every audio stage runs for many cycles without allocating or freeing.

wzp_engine::install_alloc_checker!();

mod audio_support;

use audio_support::*;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::audio::{
    denoise::Denoise, echo_cancel::EchoCancel, gain::Gain, gain_control::Agc, mix::Mix, mute::Mute,
    null_sink::NullSink, resample::Resample, room::Room, split::Split, tone_source::ToneSource,
    wav_sink::WavSink, wav_source::WavSource,
};

const CYCLES: usize = 600;

/// Fills every PCM input with a loud tone (so clamps and clips are exercised)
/// and runs `CYCLES` cycles under the allocation checker.
fn run_rt(what: &str, h: &mut Harness) {
    let tone = sine(997.0, RATE, 48_000, 1.5);
    let mut k = 0usize;
    assert_rt_safe(what, CYCLES, || {
        for i in 0..h.built_inputs.len() {
            let inp = h.input(i);
            let n = inp.len();
            let start = (k * n) % (tone.len() - n);
            inp.copy_from_slice(&tone[start..start + n]);
        }
        k += 1;
        std::hint::black_box(h.run());
    });
}

#[test]
fn tone_source_is_rt_safe() {
    let mut h = Harness::build(&ToneSource, &[("duration", dur("5s"))]).unwrap();
    run_rt("audio.tone_source", &mut h);
    // 600 cycles of 20 ms outlast 5 s: the finished path ran too.
    assert_eq!(h.run(), Flow::Finished);
}

#[test]
fn wav_source_is_rt_safe_including_loops() {
    let mut h = Harness::build(&WavSource, &[("loop", ParamValue::Bool(true))]).unwrap();
    run_rt("audio.wav_source", &mut h);
    // 12 s of a 4 s signal: it wrapped around three times.
    assert_eq!(h.counter("loops"), 2);
    let mut once = Harness::build(&WavSource, &[]).unwrap();
    run_rt("audio.wav_source (to the end)", &mut once);
    assert_eq!(once.run(), Flow::Finished);
}

#[test]
fn wav_sink_is_rt_safe() {
    let dir = temp_dir("rt-sink");
    let path = dir.join("out.wav");
    let mut h = Harness::build(
        &WavSink,
        &[
            ("path", text(path.to_str().unwrap())),
            ("buffer", dur("30s")),
        ],
    )
    .unwrap();
    run_rt("audio.wav_sink", &mut h);
    assert_eq!(h.counter("dropped_samples"), 0);
    drop(h);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn echo_cancel_is_rt_safe_while_it_learns() {
    // The same tone on `mic` and `ref`: an echo with no delay, found after
    // the first second, so most cycles learn, and the residual echo
    // suppressor after the filter runs its frames from then on.
    let mut h = Harness::build(&EchoCancel, &[]).unwrap();
    run_rt("audio.echo_cancel", &mut h);
    assert_eq!(h.gauge("echo_found"), 1);
    assert!(h.counter("filter_adopted") > 0);
    assert!(h.gauge("suppress_db") != 0, "the suppressor never ran");
}

#[test]
fn denoise_is_rt_safe() {
    let mut h = Harness::build(&Denoise, &[]).unwrap();
    run_rt("audio.denoise", &mut h);
    assert!(h.gauge("noise_dbfs") > -1200, "the suppressor never ran");
}

#[test]
fn agc_is_rt_safe_and_limits_a_tone_over_full_scale() {
    let mut h = Harness::build(&Agc, &[]).unwrap();
    run_rt("audio.agc", &mut h);
    // A steady tone is the room to it, not a voice: no gain; its peaks
    // (1.5) are held under -1 dBFS by the limiter.
    assert_eq!(h.gauge("gain_db"), 0);
    assert!(h.counter("limited") > 0);
    assert_eq!(h.counter("clipped"), 0);
    assert!(h.output(0).iter().all(|v| v.abs() <= 0.892));
}

#[test]
fn mute_is_rt_safe() {
    let mut h = Harness::build(&Mute, &[("muted", ParamValue::Bool(true))]).unwrap();
    run_rt("audio.mute", &mut h);
    assert!(h.output(0).iter().all(|&v| v == 0.0));
}

#[test]
fn room_is_rt_safe() {
    let mut h = Harness::build(&Room, &[("reflections", int(32))]).unwrap();
    run_rt("audio.room", &mut h);
}

#[test]
fn null_sink_is_rt_safe() {
    let mut h = Harness::build(&NullSink, &[]).unwrap();
    run_rt("audio.null_sink", &mut h);
    assert_eq!(h.counter("samples"), (CYCLES * 960) as u64);
}

#[test]
fn gain_is_rt_safe() {
    let mut h = Harness::build(&Gain, &[("gain_db", float(-6.0))]).unwrap();
    run_rt("audio.gain", &mut h);
}

#[test]
fn mix_is_rt_safe() {
    let mut h = Harness::build(&Mix, &[("inputs", int(8))]).unwrap();
    run_rt("audio.mix", &mut h);
    assert!(
        h.counter("clipped_samples") > 0,
        "a loud 8-way sum must clip"
    );
}

#[test]
fn split_is_rt_safe() {
    let mut h = Harness::build(&Split, &[("outputs", int(4))]).unwrap();
    run_rt("audio.split", &mut h);
}

#[test]
fn resample_is_rt_safe_for_common_rate_pairs() {
    for (from, to) in [
        (48_000, 16_000),
        (16_000, 48_000),
        (48_000, 44_100),
        (44_100, 48_000),
        (8_000, 48_000),
        (48_000, 48_000),
    ] {
        let mut h = Harness::build(&Resample, &[("from", int(from)), ("to", int(to))]).unwrap();
        run_rt(&format!("audio.resample {from}->{to}"), &mut h);
        assert_eq!(h.counter("fifo_underruns"), 0, "{from}->{to}");
        assert_eq!(h.counter("fifo_overruns"), 0, "{from}->{to}");
        assert_eq!(h.counter("errors"), 0, "{from}->{to}");
    }
}
