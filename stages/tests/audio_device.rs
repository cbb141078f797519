//! `audio.device_capture` and `audio.device_playout` on a machine without
//! audio hardware (this one and CI: ALSA lists only its `null` device).
//!
//! - Building either stage for the default device fails with a message
//!   that says what is missing and what to use instead; a wrong or partial
//!   name never falls back to `null` silently.
//! - `device = "null"` opens ALSA's null device for real: a graph plays a
//!   tone into it and captures from it, every cycle allocation-free.
//! - The device-callback halves are driven by hand (`build_detached`) to
//!   check, sample for sample, what reaches the graph and the device,
//!   underruns, overruns and re-priming, with both sides allocation-free.
//! - A dry run opens nothing.

wzp_engine::install_alloc_checker!();

mod audio_support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use audio_support::*;
use cpal::traits::{DeviceTrait, HostTrait};
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::audio::device::{CaptureFeed, PlayoutDrain};
use wzp_stages::audio::device_capture::{self, DeviceCapture};
use wzp_stages::audio::device_playout::{self, DevicePlayout};
use wzp_stages::audio::drift;

/// Whether the host's default device opens this way (never on this machine
/// or CI, where ALSA has no card); the no-device tests only mean something
/// without one.
fn has_real_device(input: bool) -> bool {
    let Some(id) = cpal::available_hosts().into_iter().next() else {
        return false;
    };
    let Ok(host) = cpal::host_from_id(id) else {
        return false;
    };
    if input {
        host.default_input_device()
            .is_some_and(|d| d.default_input_config().is_ok())
    } else {
        host.default_output_device()
            .is_some_and(|d| d.default_output_config().is_ok())
    }
}

fn build_error(factory: &dyn StageFactory, set: &[(&str, ParamValue)]) -> BuildError {
    match Harness::build(factory, set) {
        Ok(_) => panic!("{} built, but it should have failed", factory.info().kind),
        Err(e) => e,
    }
}

fn other_message(e: BuildError) -> String {
    match e {
        BuildError::Other(m) => m,
        BuildError::Param(p) => panic!("expected a device error, got param error {p:?}"),
    }
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}:\n{msg}");
    }
}

#[test]
fn capture_without_a_device_fails_and_names_the_alternatives() {
    if has_real_device(true) {
        eprintln!("skipped: this machine has an audio input device");
        return;
    }
    let msg = other_message(build_error(&DeviceCapture, &[]));
    eprintln!("the message a user sees:\n{msg}");
    assert_contains(
        &msg,
        &[
            "audio.device_capture: no audio input device found (ALSA reports: ",
            "--input tone",
            "--input FILE.wav",
            "audio.tone_source",
            "audio.wav_source",
            // The null device is mentioned, with how to ask for it.
            "device = \"null\"",
        ],
    );
}

#[test]
fn playout_without_a_device_fails_and_names_the_alternatives() {
    if has_real_device(false) {
        eprintln!("skipped: this machine has an audio output device");
        return;
    }
    let msg = other_message(build_error(&DevicePlayout, &[]));
    eprintln!("the message a user sees:\n{msg}");
    assert_contains(
        &msg,
        &[
            "audio.device_playout: no audio output device found (ALSA reports: ",
            "--output FILE.wav",
            "--output null",
            "audio.wav_sink",
            "audio.null_sink",
        ],
    );
}

#[test]
fn a_graph_with_a_missing_device_fails_to_compile_naming_the_stage() {
    if has_real_device(true) {
        eprintln!("skipped: this machine has an audio input device");
        return;
    }
    let spec = GraphSpec::parse(
        r#"
[graph]
name = "mic"
clock = { driver = "manual", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "mic"
kind = "audio.device_capture"

[[stage]]
id = "rec"
kind = "audio.null_sink"

[[link]]
from = "mic.out"
to = "rec.in"
"#,
        "mic.toml",
        &Default::default(),
    )
    .unwrap();
    let err = compile(&spec, &wzp_stages::registry(), &Resources::new())
        .err()
        .expect("no input device: the graph must not compile");
    let text = err.to_string();
    eprintln!("{text}");
    assert_contains(
        &text,
        &["mic.toml", "stage `mic`", "no audio input device found"],
    );
}

#[test]
fn wrong_and_partial_names_never_fall_back_to_null() {
    // "discard" is part of the null device's description, "nul" of its id:
    // neither may select it.
    for (factory, word) in [
        (&DeviceCapture as &dyn StageFactory, "input"),
        (&DevicePlayout, "output"),
    ] {
        for name in ["no-such-device-xyz", "nul", "Discard"] {
            let msg = other_message(build_error(factory, &[("device", text(name))]));
            assert_contains(
                &msg,
                &[
                    &format!("no audio {word} device matches \"{name}\""),
                    "device = \"default\"",
                    "\"null\"",
                ],
            );
        }
    }
}

#[test]
fn bad_params_are_rejected_before_any_device_is_touched() {
    let cases: &[(&dyn StageFactory, &[(&str, ParamValue)], &str, &str)] = &[
        (
            &DeviceCapture,
            &[("buffer", dur("5ms"))],
            "buffer",
            "out of range",
        ),
        (
            &DeviceCapture,
            &[("buffer", dur("11s"))],
            "buffer",
            "out of range",
        ),
        (&DeviceCapture, &[("buffer", dur("30ms"))], "buffer", "two"),
        (
            &DeviceCapture,
            &[("device", text("  "))],
            "device",
            "is empty",
        ),
        (
            &DeviceCapture,
            &[("rate", int(44_123))],
            "rate",
            "whole number",
        ),
        (&DeviceCapture, &[("rate", int(-1))], "rate", ""),
        (
            &DevicePlayout,
            &[("prefill", dur("2s"))],
            "prefill",
            "out of range",
        ),
        (
            &DevicePlayout,
            &[("prefill", dur("100ms")), ("buffer", dur("120ms"))],
            "buffer",
            "prefill",
        ),
        (
            &DevicePlayout,
            &[("buffer", dur("1ms"))],
            "buffer",
            "out of range",
        ),
        (
            &DevicePlayout,
            &[("device", text(""))],
            "device",
            "is empty",
        ),
        (
            &DevicePlayout,
            &[("rate", int(999))],
            "rate",
            "out of range",
        ),
    ];
    for (factory, set, param, says) in cases {
        match build_error(*factory, set) {
            BuildError::Param(p) => {
                assert_eq!(p.param, *param, "{set:?}");
                assert!(p.message.contains(says), "{set:?}: {}", p.message);
            }
            BuildError::Other(m) => panic!("{set:?}: expected a param error, got {m}"),
        }
    }
}

#[test]
fn a_dry_run_opens_no_device_and_declares_ports_and_latency() {
    let resources = Resources::new();
    let mut cx = BuildContext::standalone(48_000, Duration::from_millis(20), &resources);
    cx.dry_run = true;
    let cap = DeviceCapture
        .build(&mut cx, &params(&DeviceCapture, &[("rate", int(16_000))]))
        .expect("a dry run builds without a device");
    assert!(cap.inputs.is_empty());
    assert_eq!(cap.outputs.len(), 1);
    assert_eq!(cap.outputs[0].name, "out");
    assert_eq!(cap.outputs[0].ty, PortType::Pcm { rate: 16_000 });
    // A quantum, and the drift correction's 8 samples (at 16 kHz).
    assert_eq!(cap.latency, Duration::from_micros(20_500));
    let play = DevicePlayout
        .build(
            &mut cx,
            &params(&DevicePlayout, &[("prefill", dur("40ms"))]),
        )
        .expect("a dry run builds without a device");
    assert_eq!(play.inputs.len(), 1);
    assert_eq!(play.inputs[0].name, "in");
    assert_eq!(play.inputs[0].ty, PortType::Pcm { rate: 48_000 });
    // The prefill, and the drift correction's 8 samples (at 48 kHz).
    assert_eq!(play.latency, Duration::from_nanos(40_166_667));

    // The same through the compiler, as `graph explain` does.
    let spec = GraphSpec::parse(
        r#"
[graph]
name = "mic_to_speaker"
clock = { driver = "manual", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "mic"
kind = "audio.device_capture"

[[stage]]
id = "speaker"
kind = "audio.device_playout"
params = { prefill = "40ms" }

[[link]]
from = "mic.out"
to = "speaker.in"
"#,
        "explain.toml",
        &Default::default(),
    )
    .unwrap();
    let compiled =
        wzp_engine::compile::compile_dry_run(&spec, &wzp_stages::registry(), &Resources::new())
            .expect("a dry run compiles without a device");
    assert_eq!(
        compiled.max_path_latency(),
        Duration::from_nanos(60_333_334)
    );
}

/// Builds a device stage with its callback half kept by the test.
struct Detached<T: Send>(
    Mutex<Option<T>>,
    fn(&mut BuildContext<'_>, &Params) -> Result<(Built, T), BuildError>,
    &'static dyn StageFactory,
);

impl<T: Send + 'static> StageFactory for Detached<T> {
    fn info(&self) -> StageInfo {
        self.2.info()
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let (built, half) = (self.1)(cx, p)?;
        *self.0.lock().unwrap() = Some(half);
        Ok(built)
    }
}

impl<T: Send> Detached<T> {
    fn take(&self) -> T {
        self.0.lock().unwrap().take().expect("built")
    }
}

fn ramp(i: usize) -> f32 {
    ((i * 7919) % 2000) as f32 / 1000.0 - 1.0
}

#[test]
fn playout_delivers_the_prefill_then_the_input_to_every_channel() {
    // With drift correction (the default) the audio comes DELAY samples
    // later, bit for bit (the clocks have not been compared yet); without
    // it, at once.
    playout_exactly(true, drift::DELAY);
    playout_exactly(false, 0);
}

fn playout_exactly(correct: bool, d: usize) {
    let factory: Detached<PlayoutDrain> = Detached(
        Mutex::new(None),
        device_playout::build_detached,
        &DevicePlayout,
    );
    let mut h = Harness::build(
        &factory,
        &[
            ("prefill", dur("20ms")),
            ("buffer", dur("200ms")),
            ("drift_correction", ParamValue::Bool(correct)),
        ],
    )
    .unwrap();
    let mut drain = factory.take();
    drain.set_channels(2);
    assert_eq!(
        h.latency,
        Duration::from_millis(20) + drift::added_latency(correct, 48_000)
    );

    // Stereo device buffers of 441 frames, on purpose not a quantum.
    let mut dev = vec![0.5f32; 2 * 441];
    let mut heard: Vec<f32> = Vec::with_capacity(20_000);
    let mut sent = 0usize;
    assert_rt_safe(
        "audio.device_playout: process and device callback",
        1,
        || {
            // Before the graph runs: silence, and the cushion is kept.
            drain.fill_interleaved(&mut dev);
            assert!(dev.iter().all(|&s| s == 0.0));
            for _ in 0..10 {
                for s in h.input(0) {
                    *s = ramp(sent);
                    sent += 1;
                }
                h.run();
                for _ in 0..2 {
                    drain.fill_interleaved(&mut dev);
                    for f in dev.chunks_exact(2) {
                        assert_eq!(f[0], f[1], "every channel plays the same sample");
                        heard.push(f[0]);
                    }
                }
            }
        },
    );
    assert_eq!(h.counter("underruns"), 0);
    assert_eq!(h.counter("overruns"), 0);
    assert_eq!(heard.len(), 20 * 441);
    assert!(
        heard[..960 + d].iter().all(|&s| s == 0.0),
        "the prefill is silence"
    );
    for (k, &s) in heard[960 + d..].iter().enumerate() {
        assert_eq!(s, ramp(k), "sample {k} after the prefill");
    }
    // 1740 samples are left (with correction the first 8 are its delay's
    // silence and 8 wait in it): two callbacks of 700 frames, then a short one.
    let left = 1740;
    let played = heard.len() - 960 - d;
    let mut dev = vec![0.0f32; 2 * 700];
    let mut tail = Vec::new();
    for _ in 0..3 {
        drain.fill_interleaved(&mut dev);
        tail.extend(dev.chunks_exact(2).map(|f| f[0]));
    }
    assert_eq!(h.counter("underruns"), 1);
    for (k, &s) in tail[..left].iter().enumerate() {
        assert_eq!(s, ramp(played + k));
    }
    assert!(tail[left..].iter().all(|&s| s == 0.0), "the gap is silence");
    // One new quantum (>= prefill and >= one callback) resumes playback.
    for s in h.input(0) {
        *s = ramp(sent);
        sent += 1;
    }
    h.run();
    drain.fill_interleaved(&mut dev);
    let resumed: Vec<f32> = dev.chunks_exact(2).map(|f| f[0]).collect();
    assert_eq!(
        resumed,
        (0..700).map(|k| ramp(9600 - d + k)).collect::<Vec<_>>()
    );
    assert_eq!(h.counter("underruns"), 1);
    assert_eq!(h.counter("device_samples"), 20 * 441 + 4 * 700 + 441);

    // A device that stops asking: the 200 ms ring fills and quanta overrun.
    for _ in 0..12 {
        h.run();
    }
    assert!(h.counter("overruns") >= 2, "{}", h.counter("overruns"));
}

fn voice(j: usize) -> i16 {
    (((j * 37) % 2000) as i16 - 1000) * 16
}

fn push_callbacks(feed: &mut CaptureFeed, frames: &mut usize, count: usize, scratch: &mut [i16]) {
    for _ in 0..count {
        for f in scratch.chunks_exact_mut(2) {
            f.fill(voice(*frames));
            *frames += 1;
        }
        feed.push_interleaved(scratch);
    }
}

#[test]
fn capture_delivers_device_audio_one_quantum_at_a_time() {
    // With drift correction (the default) the audio comes DELAY samples
    // later, bit for bit (the clocks have not been compared yet); without
    // it, at once.
    capture_exactly(true, drift::DELAY);
    capture_exactly(false, 0);
}

fn capture_exactly(correct: bool, d: usize) {
    let factory: Detached<CaptureFeed> = Detached(
        Mutex::new(None),
        device_capture::build_detached,
        &DeviceCapture,
    );
    let mut h = Harness::build(
        &factory,
        &[
            ("buffer", dur("200ms")),
            ("drift_correction", ParamValue::Bool(correct)),
        ],
    )
    .unwrap();
    let mut feed = factory.take();
    feed.set_channels(2);
    assert_eq!(
        h.latency,
        Duration::from_millis(20) + drift::added_latency(correct, 48_000)
    );
    let mut scratch = vec![0i16; 2 * 256];
    let mut frames = 0usize;
    let mut got: Vec<f32> = Vec::with_capacity(10_000);
    let expect = |j: usize| voice(j) as f32 / 32768.0;

    assert_rt_safe(
        "audio.device_capture: process and device callback",
        1,
        || {
            // Heard before the graph ran: discarded, so the first quantum is fresh.
            push_callbacks(&mut feed, &mut frames, 4, &mut scratch);
            h.run();
            assert!(h.output(0).iter().all(|&s| s == 0.0));
            let fresh = frames;
            // 5 x 256 = 1280 >= one quantum plus one device period: primed.
            push_callbacks(&mut feed, &mut frames, 5, &mut scratch);
            h.run();
            got.extend_from_slice(h.output(0));
            push_callbacks(&mut feed, &mut frames, 4, &mut scratch);
            h.run();
            got.extend_from_slice(h.output(0));
            // Nothing more: 384 samples, then silence and an underrun.
            h.run();
            got.extend_from_slice(h.output(0));
            assert_eq!(fresh, 1024);
        },
    );
    assert_eq!(h.counter("underruns"), 1);
    assert_eq!(h.counter("overruns"), 0);
    assert!(got[..d].iter().all(|&s| s == 0.0));
    for (k, &s) in got[d..2304].iter().enumerate() {
        assert_eq!(s, expect(1024 + k), "sample {k}");
    }
    assert!(got[2304..].iter().all(|&s| s == 0.0), "the gap is silence");

    // Re-priming: 768 samples are less than a quantum plus a period, so
    // silence without a second underrun; 1280 are enough.
    push_callbacks(&mut feed, &mut frames, 3, &mut scratch);
    h.run();
    assert!(h.output(0).iter().all(|&s| s == 0.0));
    assert_eq!(h.counter("underruns"), 1);
    push_callbacks(&mut feed, &mut frames, 2, &mut scratch);
    h.run();
    let next: Vec<f32> = h.output(0).to_vec();
    assert_eq!(
        next,
        (0..960)
            .map(|k| expect(1024 + 2304 - d + k))
            .collect::<Vec<_>>()
    );

    // A graph that stops reading: the 200 ms ring fills, callbacks overrun.
    push_callbacks(&mut feed, &mut frames, 60, &mut scratch);
    assert!(h.counter("overruns") > 0);
    assert_eq!(h.counter("device_samples"), frames as u64);
}

/// Waits up to `limit` for `f` to hold.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

const NULL_PLAYOUT: &str = r#"
[graph]
name = "tone_to_null"
clock = { driver = "manual", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "tone"
kind = "audio.tone_source"
params = { freq = 440, level_db = -12 }

[[stage]]
id = "speaker"
kind = "audio.device_playout"
params = { device = "null" }

[[link]]
from = "tone.out"
to = "speaker.in"
"#;

#[test]
fn a_tone_plays_into_the_null_device_for_a_second_without_allocating() {
    let spec = GraphSpec::parse(NULL_PLAYOUT, "null.toml", &Default::default()).unwrap();
    let compiled = compile(&spec, &wzp_stages::registry(), &Resources::new())
        .unwrap_or_else(|e| panic!("ALSA's null device must open here: {e}"));
    let mut graph = Graph::new(compiled);
    let stats = graph.stats();
    let speaker = stats.stage("speaker").unwrap();
    assert_eq!(speaker.gauge("device_channels"), Some(1), "null takes mono");
    let start = Instant::now();
    // 50 cycles of 20 ms, paced like the real clock.
    assert_rt_safe("tone -> audio.device_playout(null) cycle", 50, || {
        graph.step();
        std::thread::sleep(Duration::from_millis(20));
    });
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(
        eventually(Duration::from_secs(5), || speaker
            .counter("device_samples")
            .unwrap()
            > 50 * 960),
        "the null device asked for no audio"
    );
    assert_eq!(speaker.counter("stream_errors"), Some(0));
    drop(graph);
}

#[test]
fn capture_from_the_null_device_is_silence_and_the_stream_closes_on_drop() {
    let mut h = Harness::build(&DeviceCapture, &[("device", text("null"))])
        .unwrap_or_else(|e| panic!("ALSA's null device must open here: {e}"));
    let device_samples = h.clone_counter("device_samples");
    let overruns = h.clone_counter("overruns");
    assert_eq!(h.gauge("device_channels"), 1);
    // The first cycle arms the feed; the unclocked null device then fills
    // the ring at once and keeps overrunning it.
    h.run();
    assert!(
        eventually(Duration::from_secs(5), || overruns.get() > 0),
        "the null device captured nothing"
    );
    let (samples_before, overruns_before) = (device_samples.get(), overruns.get());
    // 25 cycles paced like the real clock: driven faster, the graph would
    // outrun any device.
    assert_rt_safe("audio.device_capture(null) process", 25, || {
        h.run();
        assert!(h.output(0).iter().all(|&s| s == 0.0));
        std::thread::sleep(Duration::from_millis(20));
    });
    assert!(device_samples.get() - samples_before >= 25 * 960);
    assert!(
        overruns.get() > overruns_before,
        "the device kept filling the ring"
    );
    // A loaded machine may starve the device thread for a cycle now and
    // then, but not for all of them.
    assert!(h.counter("underruns") < 25, "no cycle got captured audio");
    assert_eq!(h.counter("stream_errors"), 0);
    drop(h);
    // Dropping the stage joined the stream thread and closed the device:
    // the callback count no longer moves.
    let after = device_samples.get();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(device_samples.get(), after);
}

/// What a drifting-clock run of a device stage ended with.
#[derive(Debug)]
struct DriftRun {
    underruns: u64,
    overruns: u64,
    drift_ppm: i64,
    resyncs: u64,
    /// Audio queued between device and graph at the end, as counted.
    queued_ms: i64,
    /// Worst departure from a clean sine after the start (see
    /// [`worst_recurrence`]): ~1e-5 for a resampled tone, above 1e-2 at a
    /// gap, a cut or a dropped sample.
    worst: f64,
    samples: usize,
}

const TONE_HZ: f64 = 440.0;

fn tone(i: usize, rate: f64) -> f32 {
    (0.5 * (2.0 * std::f64::consts::PI * TONE_HZ * i as f64 / rate).sin()) as f32
}

/// The residual of a pure sine's recurrence x[n+1] = 2 cos(w) x[n] - x[n-1]
/// (`w` per sample), worst over `x`.
fn worst_recurrence(x: &[f32], w: f64) -> f64 {
    let c = 2.0 * w.cos();
    x.windows(3)
        .map(|t| (t[2] as f64 - c * t[1] as f64 + t[0] as f64).abs())
        .fold(0.0, f64::max)
}

/// Plays a 440 Hz tone through `audio.device_playout` (prefill 20 ms,
/// buffer 60 ms) for `secs` of graph time to a simulated device whose clock
/// runs `ppm` faster than the graph's, asking for 441 frames a callback.
fn playout_on_a_drifting_clock(correct: bool, ppm: f64, secs: f64) -> DriftRun {
    playout_run(correct, ppm, secs, "60ms", None)
}

/// As [`playout_on_a_drifting_clock`] with the ring's `buffer`, and the
/// device stalling (no callback) for `stall = (from_s, for_s)`.
fn playout_run(
    correct: bool,
    ppm: f64,
    secs: f64,
    buffer: &str,
    stall: Option<(f64, f64)>,
) -> DriftRun {
    let factory: Detached<PlayoutDrain> = Detached(
        Mutex::new(None),
        device_playout::build_detached,
        &DevicePlayout,
    );
    let mut h = Harness::build(
        &factory,
        &[
            ("prefill", dur("20ms")),
            ("buffer", dur(buffer)),
            ("drift_correction", ParamValue::Bool(correct)),
        ],
    )
    .unwrap();
    let mut drain = factory.take();
    let timing = drain.timing().clone();
    let quanta = (secs / 0.02) as usize;
    let period = 441.0 / (48_000.0 * (1.0 + ppm * 1e-6));
    let mut heard: Vec<f32> = Vec::with_capacity((secs * 48_200.0) as usize + 4096);
    let mut dev = vec![0.0f32; 441];
    let mut sent = 0usize;
    let mut q = 0usize;
    let mut next_callback = 0.0037;
    assert_rt_safe("audio.device_playout on a drifting clock", 1, || {
        while q < quanta {
            let graph = q as f64 * 0.02;
            if next_callback < graph {
                if stall.is_some_and(|(from, len)| (from..from + len).contains(&next_callback)) {
                    // The device hangs, and resumes where it was.
                    next_callback += stall.map_or(0.0, |(_, len)| len);
                    continue;
                }
                timing.set_now((next_callback * 1e9) as u64);
                drain.fill_interleaved(&mut dev);
                heard.extend_from_slice(&dev);
                next_callback += period;
            } else {
                for s in h.input(0) {
                    *s = tone(sent, 48_000.0);
                    sent += 1;
                }
                timing.set_now((graph * 1e9) as u64);
                h.run();
                q += 1;
            }
        }
    });
    // The device's samples are 1 + ppm shorter: the tone is that much
    // lower per sample.
    let w = 2.0 * std::f64::consts::PI * TONE_HZ / (48_000.0 * (1.0 + ppm * 1e-6));
    DriftRun {
        underruns: h.counter("underruns"),
        overruns: h.counter("overruns"),
        drift_ppm: if correct { h.gauge("drift_ppm") } else { 0 },
        resyncs: if correct { h.counter("resyncs") } else { 0 },
        queued_ms: if correct { h.gauge("queued_ms") } else { 0 },
        worst: worst_recurrence(&heard[2000..], w),
        samples: heard.len(),
    }
}

/// Records a 440 Hz tone through `audio.device_capture` (buffer 60 ms) for
/// `secs` of graph time from a simulated device whose clock runs `ppm`
/// faster than the graph's, handing over 256 frames a callback.
fn capture_on_a_drifting_clock(correct: bool, ppm: f64, secs: f64) -> DriftRun {
    capture_run(correct, ppm, secs, "60ms", None)
}

/// As [`capture_on_a_drifting_clock`] with the ring's `buffer`, and the
/// graph stalling (no cycle) for `stall = (from_s, for_s)`.
fn capture_run(
    correct: bool,
    ppm: f64,
    secs: f64,
    buffer: &str,
    stall: Option<(f64, f64)>,
) -> DriftRun {
    let factory: Detached<CaptureFeed> = Detached(
        Mutex::new(None),
        device_capture::build_detached,
        &DeviceCapture,
    );
    let mut h = Harness::build(
        &factory,
        &[
            ("buffer", dur(buffer)),
            ("drift_correction", ParamValue::Bool(correct)),
        ],
    )
    .unwrap();
    let mut feed = factory.take();
    let timing = feed.timing().clone();
    let quanta = (secs / 0.02) as usize;
    let device_rate = 48_000.0 * (1.0 + ppm * 1e-6);
    let period = 256.0 / device_rate;
    let mut got: Vec<f32> = Vec::with_capacity(quanta * 960);
    let mut buf = vec![0.0f32; 256];
    let mut frames = 0usize;
    let mut q = 0usize;
    let mut next_callback = 0.0029;

    assert_rt_safe("audio.device_capture on a drifting clock", 1, || {
        while q < quanta {
            let graph = q as f64 * 0.02;
            if next_callback < graph {
                timing.set_now((next_callback * 1e9) as u64);
                for s in buf.iter_mut() {
                    *s = tone(frames, device_rate);
                    frames += 1;
                }
                feed.push_interleaved(&buf);
                next_callback += period;
            } else if stall.is_some_and(|(from, len)| (from..from + len).contains(&graph)) {
                // The graph hangs: its cycles in the stall are skipped.
                q += 1;
            } else {
                timing.set_now((graph * 1e9) as u64);
                h.run();
                got.extend_from_slice(h.output(0));
                q += 1;
            }
        }
    });
    // The tone is 440 Hz of the device's time; the graph's samples are
    // 1 + ppm longer than the device's.
    let w = 2.0 * std::f64::consts::PI * TONE_HZ * (1.0 + ppm * 1e-6) / device_rate;
    let start = got.iter().position(|&s| s != 0.0).unwrap_or(0) + 2000;
    DriftRun {
        underruns: h.counter("underruns"),
        overruns: h.counter("overruns"),
        drift_ppm: if correct { h.gauge("drift_ppm") } else { 0 },
        resyncs: if correct { h.counter("resyncs") } else { 0 },
        queued_ms: if correct { h.gauge("queued_ms") } else { 0 },
        worst: worst_recurrence(&got[start..], w),
        samples: got.len(),
    }
}

/// Whether the gauge reads the clocks' real difference (it settles within
/// a few seconds; its ripple is a few ppm).
fn reads(gauge: i64, ppm: f64) -> bool {
    (gauge as f64 - ppm).abs() <= 0.1 * ppm.abs() + 15.0
}

#[test]
fn playout_follows_a_device_clock_that_runs_fast_or_slow() {
    for ppm in [1000.0, -1000.0, 150.0] {
        let run = playout_on_a_drifting_clock(true, ppm, 60.0);
        eprintln!("corrected, {ppm} ppm: {run:?}");
        assert_eq!(run.underruns, 0, "{ppm} ppm: {run:?}");
        assert_eq!(run.overruns, 0, "{ppm} ppm: {run:?}");
        assert!(run.worst < 1e-3, "{ppm} ppm: not a clean tone: {run:?}");
        assert!(reads(run.drift_ppm, ppm), "{ppm} ppm: {run:?}");
        let expect = 60.0 * 48_000.0 * (1.0 + ppm * 1e-6);
        assert!((run.samples as f64 - expect).abs() < 1000.0, "{run:?}");
    }
    // Without the correction the same clocks cost gaps (a device running
    // fast) or cut quanta (running slow) within the minute, and the tone
    // shows them.
    let fast = playout_on_a_drifting_clock(false, 1000.0, 60.0);
    eprintln!("uncorrected, fast: {fast:?}");
    assert!(fast.underruns > 0 && fast.worst > 1e-2, "{fast:?}");
    let slow = playout_on_a_drifting_clock(false, -1000.0, 60.0);
    eprintln!("uncorrected, slow: {slow:?}");
    assert!(slow.overruns > 0 && slow.worst > 1e-2, "{slow:?}");
}

#[test]
fn capture_follows_a_device_clock_that_runs_fast_or_slow() {
    for ppm in [1000.0, -1000.0, -150.0] {
        let run = capture_on_a_drifting_clock(true, ppm, 60.0);
        eprintln!("corrected, {ppm} ppm: {run:?}");
        assert_eq!(run.underruns, 0, "{ppm} ppm: {run:?}");
        assert_eq!(run.overruns, 0, "{ppm} ppm: {run:?}");
        assert!(run.worst < 1e-3, "{ppm} ppm: not a clean tone: {run:?}");
        assert!(reads(run.drift_ppm, ppm), "{ppm} ppm: {run:?}");
        assert_eq!(run.samples, 3000 * 960);
    }
    let fast = capture_on_a_drifting_clock(false, 1000.0, 60.0);
    eprintln!("uncorrected, fast: {fast:?}");
    assert!(fast.overruns > 0 && fast.worst > 1e-2, "{fast:?}");
    let slow = capture_on_a_drifting_clock(false, -1000.0, 60.0);
    eprintln!("uncorrected, slow: {slow:?}");
    assert!(slow.underruns > 0 && slow.worst > 1e-2, "{slow:?}");
}

/// A device that hangs for 300 ms (playout) or a graph that does (capture)
/// leaves 300 ms more queued than the ring settled at: the correction drops
/// it at once (resampling at 2000 ppm would take minutes, with the delay
/// held all that time), and the delay is back where it was.
#[test]
fn after_a_stall_the_delay_comes_back_at_once() {
    for (name, run) in [
        (
            "playout",
            playout_run(true, 0.0, 20.0, "1s", Some((10.0, 0.3))),
        ),
        (
            "capture",
            capture_run(true, 0.0, 20.0, "1s", Some((10.0, 0.3))),
        ),
    ] {
        eprintln!("{name}: {run:?}");
        assert!(run.resyncs >= 1, "{name}: {run:?}");
        assert!(run.queued_ms < 60, "{name}: the delay came back: {run:?}");
        assert_eq!(run.overruns, 0, "{name}: {run:?}");
    }
    // Ordinary drift never drops anything.
    let calm = playout_run(true, 1000.0, 20.0, "1s", None);
    assert_eq!(calm.resyncs, 0, "{calm:?}");
}
