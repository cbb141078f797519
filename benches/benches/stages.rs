//! Per-stage cost of one 20 ms quantum, each stage beside the raw work it
//! wraps, in one criterion group per kind (`stage/<kind>`): the ratio of the
//! two entries is the stage's overhead, read off one run.
//!
//! - `stage`: one `Harness::step` (output reset, `Io` checks, `process`),
//!   the per-stage work the engine does every cycle minus its scheduling
//!   (which `benches/engine.rs` measures).
//! - `raw/...`: the library call (rubato, raptorq) or, for the plain PCM
//!   stages, the loop they run, on buffers allocated up front.
//!
//! The FEC stages do their RaptorQ work on a worker thread, so a quantum on
//! the real-time thread costs only the processor's copying; the RaptorQ cost
//! per block is paid on the worker. Those groups therefore hold three rows:
//! `stage` (processor, per quantum), `worker/...` (what the worker runs per
//! block, `wzp_stages::fec::block`) and `raw/...` (the bare raptorq calls
//! per block). `docs/PERFORMANCE.md` explains how to compare them.
//!
//! Run: `cargo bench -p wzp-benches --bench stages -- --warm-up-time 0.5 --measurement-time 2`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use raptorq::{
    EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder,
    SourceBlockEncoder, SourceBlockEncodingPlan,
};
use rubato::{
    calculate_cutoff, Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};
use wzp_benches::{rt_iter, time_each, worker_paced, Harness, WorkerThread};
use wzp_engine::prelude::*;
use wzp_stages::audio::signal::speech_like;
use wzp_stages::fec::block::{encode_block, BlockState, Layout, Symbols};

/// Samples per quantum at 48 kHz.
const Q48: usize = 960;

fn speech_quantum() -> Vec<f32> {
    // A voiced stretch of the built-in speech, so gain/mix/resample see
    // ordinary values (no denormals, no silence shortcuts).
    speech_like(48_000)[24_000..24_000 + Q48].to_vec()
}

fn audio_plumbing(c: &mut Criterion) {
    let reg = wzp_stages::registry();
    let x = speech_quantum();

    {
        let mut g = c.benchmark_group("stage/audio.tone_source");
        let mut h = Harness::new(&reg, "audio.tone_source", &[], 48_000);
        g.bench_function("stage", |b| rt_iter(b, || h.step()));
        // The stage's loop: f64 phase accumulator, one sin per sample.
        let (mut phase, step, amp) = (0.0f64, 440.0 / 48_000.0, 0.251f64);
        let mut y = vec![0.0f32; Q48];
        g.bench_function("raw/sin_loop", |b| {
            rt_iter(b, || {
                for s in y.iter_mut() {
                    *s = (amp * (std::f64::consts::TAU * phase).sin()) as f32;
                    phase += step;
                    if phase >= 1.0 {
                        phase -= 1.0;
                    }
                }
                black_box(&mut y);
            })
        });
        g.finish();
    }

    {
        let mut g = c.benchmark_group("stage/audio.wav_source");
        let mut h = Harness::new(
            &reg,
            "audio.wav_source",
            &[
                ("path", ParamValue::Str("builtin:speech".into())),
                ("loop", ParamValue::Bool(true)),
            ],
            48_000,
        );
        g.bench_function("stage", |b| rt_iter(b, || h.step()));
        let data = speech_like(48_000);
        let mut y = vec![0.0f32; Q48];
        let mut pos = 0usize;
        g.bench_function("raw/copy_quantum", |b| {
            rt_iter(b, || {
                // The built-in signal is a whole number of quanta long.
                if pos + Q48 > data.len() {
                    pos = 0;
                }
                y.copy_from_slice(&data[pos..pos + Q48]);
                pos += Q48;
                black_box(&mut y);
            })
        });
        g.finish();
    }

    {
        let mut g = c.benchmark_group("stage/audio.gain");
        let mut h = Harness::new(
            &reg,
            "audio.gain",
            &[("gain_db", ParamValue::Float(-6.0))],
            48_000,
        );
        h.pcm_in(0).copy_from_slice(&x);
        g.bench_function("stage", |b| rt_iter(b, || h.step()));
        let gain = 0.501f32;
        let mut y = vec![0.0f32; Q48];
        g.bench_function("raw/mul_loop", |b| {
            rt_iter(b, || {
                for (y, x) in y.iter_mut().zip(black_box(&x)) {
                    *y = x * gain;
                }
                black_box(&mut y);
            })
        });
        g.finish();
    }

    {
        let mut g = c.benchmark_group("stage/audio.mix");
        let mut h = Harness::new(&reg, "audio.mix", &[("inputs", ParamValue::Int(2))], 48_000);
        h.pcm_in(0).copy_from_slice(&x);
        let x2: Vec<f32> = x.iter().rev().copied().collect();
        h.pcm_in(1).copy_from_slice(&x2);
        g.bench_function("stage", |b| rt_iter(b, || h.step()));
        let mut y = vec![0.0f32; Q48];
        g.bench_function("raw/add_clamp_loop", |b| {
            rt_iter(b, || {
                for ((y, a), b) in y.iter_mut().zip(black_box(&x)).zip(black_box(&x2)) {
                    let s = a + b;
                    *y = if s.is_nan() { 0.0 } else { s.clamp(-1.0, 1.0) };
                }
                black_box(&mut y);
            })
        });
        g.finish();
    }

    {
        let mut g = c.benchmark_group("stage/audio.split");
        let mut h = Harness::new(
            &reg,
            "audio.split",
            &[("outputs", ParamValue::Int(2))],
            48_000,
        );
        h.pcm_in(0).copy_from_slice(&x);
        g.bench_function("stage", |b| rt_iter(b, || h.step()));
        let (mut y0, mut y1) = (vec![0.0f32; Q48], vec![0.0f32; Q48]);
        g.bench_function("raw/copy_twice", |b| {
            rt_iter(b, || {
                y0.copy_from_slice(black_box(&x));
                y1.copy_from_slice(black_box(&x));
                black_box((&mut y0, &mut y1));
            })
        });
        g.finish();
    }

    {
        let mut g = c.benchmark_group("stage/audio.null_sink");
        let mut h = Harness::new(&reg, "audio.null_sink", &[], 48_000);
        h.pcm_in(0).copy_from_slice(&x);
        g.bench_function("stage", |b| rt_iter(b, || h.step()));
        g.bench_function("raw/energy_sum", |b| {
            rt_iter(b, || {
                let e: f64 = black_box(&x)
                    .iter()
                    .map(|&s| s as f64 * s as f64)
                    .filter(|e| e.is_finite())
                    .sum();
                black_box(e)
            })
        });
        g.finish();
    }
}

/// rubato 0.16 `SincFixedIn` configured as `audio.resample` configures it
/// (stages/src/audio/signal.rs `sinc_resampler`): 128 taps, 256x
/// oversampled table, cubic interpolation, Blackman-Harris window, the
/// cutoff rubato recommends for that window (scaled by the ratio when
/// going down, as rubato does), one quantum per call. The stage also
/// wraps the table in a time-alignment shim; that wrapper is part of what
/// the ratio measures.
fn raw_sinc(from: u32, to: u32, chunk: usize) -> SincFixedIn<f32> {
    let window = WindowFunction::BlackmanHarris2;
    let params = SincInterpolationParameters {
        sinc_len: 128,
        f_cutoff: calculate_cutoff::<f32>(128, window),
        interpolation: SincInterpolationType::Cubic,
        oversampling_factor: 256,
        window,
    };
    SincFixedIn::new(to as f64 / from as f64, 1.0, params, chunk, 1).expect("rubato accepts")
}

fn resample(c: &mut Criterion) {
    let reg = wzp_stages::registry();
    let speech48 = speech_like(48_000);
    let speech16 = speech_like(16_000);
    for (from, to, src) in [
        (48_000u32, 16_000u32, &speech48),
        (16_000, 48_000, &speech16),
    ] {
        let q_in = (from / 50) as usize;
        let x = &src[src.len() / 2..src.len() / 2 + q_in];
        let mut g = c.benchmark_group(format!(
            "stage/audio.resample/{}k_to_{}k",
            from / 1000,
            to / 1000
        ));
        let mut h = Harness::new(
            &reg,
            "audio.resample",
            &[
                ("from", ParamValue::Int(from as i64)),
                ("to", ParamValue::Int(to as i64)),
            ],
            48_000,
        );
        h.pcm_in(0).copy_from_slice(x);
        g.bench_function("stage", |b| rt_iter(b, || h.step()));
        assert_eq!(h.counter("fifo_underruns"), 0, "{from}->{to}: FIFO ran dry");
        assert_eq!(h.counter("errors"), 0);

        let mut r = raw_sinc(from, to, q_in);
        let mut out = vec![0.0f32; r.output_frames_max()];
        g.bench_function("raw/rubato_sinc_fixed_in", |b| {
            rt_iter(b, || {
                let (_, n) = r
                    .process_into_buffer(&[black_box(x)], &mut [&mut out[..]], None)
                    .expect("one chunk in");
                black_box(n)
            })
        });
        g.finish();
    }
}

/// What the device stages' clock-drift correction adds per 20 ms quantum
/// at 48 kHz: the level control and the resampler, at a step of exactly 1
/// and 1000 ppm off it.
fn device_drift(c: &mut Criterion) {
    use wzp_stages::audio::drift::{DriftControl, Resampler};
    let speech = speech_like(48_000);
    let x = &speech[speech.len() / 2..speech.len() / 2 + 960];
    let mut g = c.benchmark_group("stage/audio.device_*/drift_correction_48k");
    for (name, step) in [("step_1", 1.0), ("step_1000ppm", 1.001)] {
        let mut r = Resampler::new(2 * 960 + 16);
        let mut out = vec![0.0f32; 2 * 960];
        g.bench_function(name, |b| {
            rt_iter(b, || {
                r.feed(black_box(x));
                black_box(r.produce(step, &mut out))
            })
        });
    }
    let mut ctl = DriftControl::new(48_000, 0.02);
    let mut level = 1900usize;
    g.bench_function("level_control", |b| {
        rt_iter(b, || {
            level = 1900 + (level + 7) % 40;
            black_box(ctl.observe(black_box(level)))
        })
    });
    g.finish();
}

/// A deterministic noise source in -1..1 (xorshift32).
fn xorshift(seed: &mut u32) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;
    (*seed as f32 / u32::MAX as f32) * 2.0 - 1.0
}

/// Far end and microphone for the echo canceller, one loop of the built-in
/// speech (4 s, a whole number of quanta at 8-48 kHz) so they can be played
/// round and round: the far end is the speech over a -50 dBFS noise floor
/// (every block active, so the background learns on every block), the
/// microphone its echo through a 40 ms delay and a short decaying tail
/// (circular convolution: no seam where the loop wraps) plus a -60 dBFS
/// near-end noise floor.
fn echo_signals(rate: u32) -> (Vec<f32>, Vec<f32>) {
    let fs = rate as usize;
    let mut seed = 0x2545_f491u32;
    let far: Vec<f32> = speech_like(rate)
        .iter()
        .map(|s| s + 0.005 * xorshift(&mut seed))
        .collect();
    // 40 ms of delay, then 30 ms of room: a direct path at -6 dB and a
    // tail decaying by 60 dB in 100 ms.
    let delay = fs * 40 / 1000;
    let mut h = vec![0.0f32; delay + fs * 30 / 1000];
    h[delay] = 0.5;
    for (i, t) in h.iter_mut().enumerate().skip(delay + 1) {
        let age = (i - delay) as f32 / fs as f32;
        *t = 0.15 * xorshift(&mut seed) * (-6.9 * age / 0.1).exp();
    }
    let n = far.len();
    let mic = (0..n)
        .map(|i| {
            let echo: f32 = h
                .iter()
                .enumerate()
                .skip(delay)
                .map(|(k, hk)| hk * far[(i + n - k) % n])
                .sum();
            echo + 0.001 * xorshift(&mut seed)
        })
        .collect();
    (far, mic)
}

/// What the noise suppressor (`wzp_stages::audio::ns`, the core of
/// `audio.denoise`) costs per 20 ms quantum (four 5 ms frames at 48 kHz,
/// 240-sample hops; 80 at 16 kHz): the built-in speech over white noise 15
/// dB under it, after 4 s to learn the noise. `quiet_room`: the same speech
/// over a -80 dBFS floor, where frames pass without the inverse FFT.
fn denoise(c: &mut Criterion) {
    use wzp_stages::audio::ns::NoiseSuppressor;
    for rate in [48_000u32, 16_000] {
        let hop = rate as usize / 200;
        let q = rate as usize / 50;
        let mut g = c.benchmark_group(format!("stage/audio.denoise/suppressor_{}k", rate / 1000));
        for (name, level) in [("noisy", 0.03f32), ("quiet_room", 0.0001)] {
            let speech = wzp_stages::audio::signal::speech_like(rate);
            let mut seed = 9u32;
            let x: Vec<f32> = speech
                .iter()
                .map(|s| s + level * xorshift(&mut seed))
                .collect();
            let mut ns = NoiseSuppressor::new(rate, hop, 15.0);
            let mut out = vec![0.0f32; q];
            let mut pos = 0;
            let mut step = |ns: &mut NoiseSuppressor, out: &mut [f32]| {
                if pos + q > x.len() {
                    pos = 0;
                }
                ns.process(&x[pos..pos + q], out);
                pos += q;
                out[0]
            };
            for _ in 0..200 {
                step(&mut ns, &mut out);
            }
            g.bench_function(name, |b| {
                let _ftz = wzp_stages::codec::denormals::FlushDenormals::new();
                rt_iter(b, || black_box(step(&mut ns, &mut out)))
            });
        }
        g.finish();
    }
}

/// What the gain control (`wzp_stages::audio::agc`, the core of
/// `audio.agc`) costs per 20 ms quantum at 48 kHz: the built-in speech at
/// -40 dBFS (raised ~20 dB), and at -3 dBFS (cut, the limiter at work).
fn agc(c: &mut Criterion) {
    use wzp_stages::audio::agc::{AgcConfig, AutoGain};
    let rate = 48_000u32;
    let q = rate as usize / 50;
    let mut g = c.benchmark_group("stage/audio.agc/48k");
    for (name, scale) in [("quiet_voice", 0.03f32), ("loud_voice", 2.0)] {
        let x: Vec<f32> = wzp_stages::audio::signal::speech_like(rate)
            .iter()
            .map(|s| s * scale)
            .collect();
        let mut agc = AutoGain::new(rate, AgcConfig::default());
        let mut out = vec![0.0f32; q];
        let mut pos = 0;
        let mut step = |agc: &mut AutoGain, out: &mut [f32]| {
            if pos + q > x.len() {
                pos = 0;
            }
            agc.process(&x[pos..pos + q], out);
            pos += q;
            out[0]
        };
        for _ in 0..200 {
            step(&mut agc, &mut out);
        }
        g.bench_function(name, |b| rt_iter(b, || black_box(step(&mut agc, &mut out))));
    }
    g.finish();
}

/// An echo canceller being played a far end and a microphone, a quantum
/// (two blocks) at a time, round and round the signals' loop.
struct AecPlay {
    aec: wzp_stages::audio::aec::EchoCanceller,
    block: usize,
    pos: usize,
    out: Vec<f32>,
    /// Under `FlushDenormals` (FTZ|DAZ).
    ftz: bool,
    /// The residual echo suppressor after it, as `audio.echo_cancel` runs
    /// by default, and its output.
    res: Option<wzp_stages::audio::res::EchoSuppressor>,
    res_out: Vec<f32>,
}

impl AecPlay {
    fn quantum(&mut self, mic: &[f32], far: &[f32]) -> f32 {
        let _ftz = self
            .ftz
            .then(wzp_stages::codec::denormals::FlushDenormals::new);
        let b = self.block;
        for k in 0..2 {
            let at = self.pos + k * b;
            let out = &mut self.out[k * b..(k + 1) * b];
            self.aec.process(&mic[at..at + b], &far[at..at + b], out);
            if let Some(res) = self.res.as_mut() {
                res.process(
                    out,
                    self.aec.echo_estimate(),
                    self.aec.reference_at_echo_delay(),
                    self.aec.echo_active(),
                    &mut self.res_out[k * b..(k + 1) * b],
                );
            }
        }
        self.pos = (self.pos + 2 * b) % far.len();
        self.out[0] + self.res_out[0]
    }
}

/// What the acoustic echo canceller (`wzp_stages::audio::aec`, the core of
/// `audio.echo_cancel`) costs per 20 ms quantum (two 10 ms blocks) with a
/// 250 ms tail (25 partitions, the stage's default), at 48 and 16 kHz.
///
/// - `learning`: far end talking, echo present and found, the background
///   filter adapting on every block (after 3 s of audio to find the echo).
/// - `idle`: after that, the far end silent (exact zeros) for 2 minutes
///   before and during timing, so the background does not learn; both
///   filters still run; the echo detector stands still. (Listening
///   through silence, its correlations decayed into subnormal floats after
///   ~90 s in a first version, 15x the cost; this row is what shows it.)
/// - `*_ftz`: the same under `FlushDenormals` (FTZ|DAZ), as the stage
///   runs it.
/// - `*_suppress_ftz`: with the residual echo suppressor after the filter
///   (`wzp_stages::audio::res`, 5 ms frames), as the stage runs by default.
///
/// Signals and pre-roll are made on a bench's first call, so a filter that
/// skips these benches skips their setup too.
fn echo_cancel(c: &mut Criterion) {
    use std::cell::OnceCell;
    use wzp_stages::audio::aec::{EchoCanceller, EchoStats};
    const PARTITIONS: usize = 25;
    for rate in [48_000u32, 16_000] {
        let block = rate as usize / 100;
        // (far, mic, silence)
        let signals = OnceCell::new();
        let signals = || {
            signals.get_or_init(|| {
                let (far, mic) = echo_signals(rate);
                let silence = vec![0.0f32; far.len()];
                (far, mic, silence)
            })
        };
        let mut g = c.benchmark_group(format!(
            "stage/audio.echo_cancel/canceller_{}k",
            rate / 1000
        ));
        for (name, idle, ftz, suppress) in [
            ("learning", false, false, false),
            ("learning_ftz", false, true, false),
            ("learning_suppress_ftz", false, true, true),
            ("idle", true, false, false),
            ("idle_ftz", true, true, false),
            ("idle_suppress_ftz", true, true, true),
        ] {
            let mut play: Option<(AecPlay, EchoStats)> = None;
            g.bench_function(name, |b| {
                let (far, mic, silence) = signals();
                let (p, _) = play.get_or_insert_with(|| {
                    let mut p = AecPlay {
                        aec: EchoCanceller::new(rate, block, PARTITIONS),
                        block,
                        pos: 0,
                        out: vec![0.0; 2 * block],
                        ftz,
                        res: suppress
                            .then(|| wzp_stages::audio::res::EchoSuppressor::new(rate, block / 2)),
                        res_out: vec![0.0; 2 * block],
                    };
                    // 3 s to find the echo and adapt to it.
                    for _ in 0..150 {
                        p.quantum(mic, far);
                    }
                    assert!(
                        p.aec.echo_delay().is_some(),
                        "echo not found after 3 s (correlation {})",
                        p.aec.echo_correlation()
                    );
                    if idle {
                        // 2 minutes of far-end silence.
                        for _ in 0..6000 {
                            p.quantum(mic, silence);
                        }
                    }
                    let stats = p.aec.stats();
                    (p, stats)
                });
                let far_timed = if idle { silence } else { far };
                rt_iter(b, || black_box(p.quantum(mic, black_box(far_timed))))
            });
            if let Some((p, before)) = &play {
                let after = p.aec.stats();
                eprintln!(
                    "echo_cancel {}k {name}: {} blocks timed, adopted {}, reverted {}, resets {}, ERLE {:.1} dB",
                    rate / 1000,
                    after.blocks - before.blocks,
                    after.adopted - before.adopted,
                    after.reverted - before.reverted,
                    after.resets - before.resets,
                    p.aec.erle_db()
                );
            }
        }
        g.finish();
    }
}

/// A 60-byte frame like a 24 kb/s Opus frame.
fn frame_meta(seq: u32) -> FrameMeta {
    FrameMeta {
        seq,
        timestamp: seq.wrapping_mul(960),
        codec: 1,
        duration_ms: 20,
        flags: if seq == 0 {
            frame_flags::STREAM_START
        } else {
            0
        },
        ..Default::default()
    }
}

fn payload(seq: u32) -> Vec<u8> {
    // 55..=65 bytes, so FEC blocks mix sizes as Opus VBR does.
    let len = 55 + (seq.wrapping_mul(7) % 11) as usize;
    (0..len).map(|i| (i as u32 ^ seq) as u8).collect()
}

fn jitter_and_netem(c: &mut Criterion) {
    let reg = wzp_stages::registry();
    let payloads: Vec<Vec<u8>> = (0..64).map(payload).collect();

    {
        let mut g = c.benchmark_group("stage/jitter.adaptive");
        let mut h = Harness::new(&reg, "jitter.adaptive", &[], 48_000);
        let mut seq = 0u32;
        g.bench_function("stage", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    let now = h.cx.now_ns;
                    let batch = h.frames_in(0);
                    batch.clear();
                    let mut meta = frame_meta(seq);
                    // 5 ms of network delay plus up to 3 ms of jitter.
                    meta.arrival_ns = now + 5_000_000 + (seq as u64 * 7919 % 3_000) * 1_000;
                    batch
                        .push(meta, &payloads[seq as usize % payloads.len()])
                        .expect("room for one frame");
                    seq = seq.wrapping_add(1);
                    let t = Instant::now();
                    h.step();
                    t.elapsed()
                })
            })
        });
        // (Skipped when a filter left the bench out.)
        assert!(
            seq == 0 || h.counter("played") > 0,
            "the buffer played nothing"
        );
        eprintln!("jitter.adaptive: {}", h.counters_line());
        g.finish();
    }

    {
        let mut g = c.benchmark_group("stage/net.netem_frames");
        let mut h = Harness::new(
            &reg,
            "net.netem_frames",
            &[
                ("seed", ParamValue::Int(7)),
                ("loss", ParamValue::Float(5.0)),
                ("delay", ParamValue::Duration(Duration::from_millis(40))),
                ("jitter", ParamValue::Duration(Duration::from_millis(15))),
            ],
            48_000,
        );
        let mut seq = 0u32;
        g.bench_function("stage", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    let batch = h.frames_in(0);
                    batch.clear();
                    batch
                        .push(frame_meta(seq), &payloads[seq as usize % payloads.len()])
                        .expect("room for one frame");
                    seq = seq.wrapping_add(1);
                    let t = Instant::now();
                    h.step();
                    t.elapsed()
                })
            })
        });
        assert!(seq == 0 || (h.counter("lost") > 0 && h.counter("passed") > 0));
        eprintln!("net.netem_frames: {}", h.counters_line());
        g.finish();
    }
}

/// Frames per FEC block and repair symbols, as `fec.raptorq_encode`'s
/// defaults: 5 frames, 50 % -> 3 repair symbols.
const K: usize = 5;
const R: usize = 3;

/// One block's source frames (seq `base..base+K`) with their FEC tags.
fn block_frames(block: u16, base: u32) -> Vec<(FrameMeta, Vec<u8>)> {
    (0..K)
        .map(|i| {
            let seq = base + i as u32;
            let mut meta = frame_meta(seq);
            meta.fec = FecTag {
                block,
                symbol: i as u16,
                source_symbols: K as u8,
                ratio_percent: 50,
            };
            (meta, payload(seq))
        })
        .collect()
}

fn fec_config(t: usize) -> ObjectTransmissionInformation {
    // The layout fec::block uses: one source block, one sub-block, symbol
    // alignment 1 (symbols are the size of a frame, not of a page).
    ObjectTransmissionInformation::new((K * t) as u64, t as u16, 1, 1, 1)
}

fn fec(c: &mut Criterion) {
    let reg = wzp_stages::registry();
    // The processors never wait for their worker here (`worker_wait = 0`): in
    // real time the worker answers within the quantum, so the wait is never
    // taken; in a bench stepping back to back it would time the hand-off.
    let no_wait = ("worker_wait", ParamValue::Duration(Duration::ZERO));

    // ---- encode ----
    {
        let mut g = c.benchmark_group("stage/fec.raptorq_encode");
        worker_paced(&mut g);
        let (mut h, worker) = WorkerThread::started_by("wzp-fec-enc", || {
            Harness::new(
                &reg,
                "fec.raptorq_encode",
                std::slice::from_ref(&no_wait),
                48_000,
            )
        });
        let payloads: Vec<Vec<u8>> = (0..K as u32 * 16).map(payload).collect();
        let mut seq = 0u32;
        g.bench_function("stage", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    let batch = h.frames_in(0);
                    batch.clear();
                    batch
                        .push(frame_meta(seq), &payloads[seq as usize % payloads.len()])
                        .expect("room for one frame");
                    seq = seq.wrapping_add(1);
                    let switches = worker.voluntary_switches();
                    let t = Instant::now();
                    h.step();
                    let spent = t.elapsed();
                    // Untimed: the worker stores the frame (and encodes the
                    // block when it completes), then parks, as it does
                    // within the quantum in real time; so every timed step
                    // wakes a parked worker, as in production.
                    worker.wait_idle(switches, true);
                    spent
                })
            })
        });
        assert_eq!(h.counter("worker_drops"), 0, "the worker fell behind");
        assert!(h.counter("repair_sent") >= h.counter("blocks").saturating_sub(1) * R as u64);
        eprintln!("fec.raptorq_encode: {}", h.counters_line());

        let frames = block_frames(0, 0);
        let refs: Vec<(FrameMeta, &[u8])> = frames.iter().map(|(m, p)| (*m, &p[..])).collect();
        let plan = SourceBlockEncodingPlan::generate(K as u16);
        g.bench_function("worker/fec_block_encode", |b| {
            rt_iter(b, || {
                encode_block(black_box(&refs), R, Some(&plan), Layout::Compact)
            })
        });

        let symbols = Symbols::new(Layout::Compact, K, &refs[K - 1].0);
        let t = refs
            .iter()
            .enumerate()
            .map(|(i, (m, p))| symbols.symbol_len(i, m, p))
            .max()
            .unwrap();
        let mut data = vec![0u8; K * t];
        for (i, (m, p)) in refs.iter().enumerate() {
            symbols.write(i, m, p, &mut data[i * t..(i + 1) * t]);
        }
        let cfg = fec_config(t);
        g.bench_function("raw/raptorq_encode", |b| {
            rt_iter(b, || {
                let enc = SourceBlockEncoder::with_encoding_plan(0, &cfg, black_box(&data), &plan);
                enc.repair_packets(0, R as u32)
            })
        });
        g.finish();
    }

    // ---- decode ----
    // Sixteen distinct blocks of content; the stream keeps counting block
    // ids (the decoder's window cares about ids, not about content).
    let contents: Vec<(Vec<(FrameMeta, Vec<u8>)>, Vec<(u16, Vec<u8>)>)> = (0..16u32)
        .map(|i| {
            let frames = block_frames(0, i * K as u32);
            let refs: Vec<(FrameMeta, &[u8])> = frames.iter().map(|(m, p)| (*m, &p[..])).collect();
            let repairs = encode_block(&refs, R, None, Layout::Compact);
            (frames, repairs)
        })
        .collect();
    // The third row waits for the worker in the cycle that brings repair,
    // as the stage does in real time (its `worker_wait`): the hand-off and
    // the rebuild are on the clock thread's time there.
    let same_cycle = (
        "worker_wait",
        ParamValue::Duration(Duration::from_millis(2)),
    );
    for (name, lost_symbol, wait) in [
        ("stage_one_lost_per_block", Some(2usize), &no_wait),
        ("stage_no_loss", None, &no_wait),
        (
            "stage_one_lost_rebuilt_same_cycle",
            Some(2usize),
            &same_cycle,
        ),
    ] {
        let mut g = c.benchmark_group("stage/fec.raptorq_decode");
        worker_paced(&mut g);
        let (mut h, worker) = WorkerThread::started_by("wzp-fec-dec", || {
            Harness::new(
                &reg,
                "fec.raptorq_decode",
                std::slice::from_ref(wait),
                48_000,
            )
        });
        let mut q = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    let block = q / K as u64;
                    let i = (q % K as u64) as usize;
                    let batch = h.frames_in(0);
                    batch.clear();
                    if i == 0 && block > 0 {
                        // The previous block's repair frames, in the
                        // quantum after it (fec.raptorq_encode paces them
                        // one a quantum from there; all in one here: the
                        // heaviest quantum a block gives the decoder).
                        let (frames, repairs) = &contents[(block as usize - 1) % contents.len()];
                        for (esi, data) in repairs {
                            let mut meta = frames[K - 1].0;
                            meta.flags = frame_flags::REPAIR;
                            meta.fec.block = (block - 1) as u16;
                            meta.fec.symbol = *esi;
                            batch.push(meta, data).expect("room for repairs");
                        }
                    }
                    if lost_symbol != Some(i) {
                        let (frames, _) = &contents[block as usize % contents.len()];
                        let (mut meta, bytes) = (frames[i].0, &frames[i].1);
                        meta.fec.block = block as u16;
                        batch.push(meta, bytes).expect("room for a frame");
                    }
                    // The quantum whose frame was lost sends the worker
                    // nothing, so it stays parked.
                    let woken = !batch.is_empty();
                    q += 1;
                    let switches = worker.voluntary_switches();
                    let t = Instant::now();
                    h.step();
                    let spent = t.elapsed();
                    // Untimed: the worker stores the frames and, after a
                    // loss, decodes the block, then parks; in real time it
                    // does so well within the quantum.
                    worker.wait_idle(switches, woken);
                    spent
                })
            })
        });
        assert_eq!(h.counter("worker_drops"), 0, "the worker fell behind");
        assert_eq!(h.counter("malformed"), 0);
        if lost_symbol.is_some() {
            assert!(
                h.counter("recovered") + 1 >= q / K as u64,
                "too few frames recovered: {}",
                h.counters_line()
            );
        }
        eprintln!("fec.raptorq_decode {name}: {}", h.counters_line());
        g.finish();
    }

    let mut g = c.benchmark_group("stage/fec.raptorq_decode");
    let (frames, repairs) = &contents[0];
    let lost = 2usize;
    let tagged = |meta: FrameMeta, esi: u16, repair: bool| FrameMeta {
        flags: if repair {
            frame_flags::REPAIR | frame_flags::COMPACT_REPAIR
        } else {
            meta.flags
        },
        fec: FecTag {
            symbol: esi,
            ..meta.fec
        },
        ..meta
    };
    g.bench_function("worker/fec_block_decode", |b| {
        rt_iter(b, || {
            // What the worker does for a block that lost one frame: keep
            // the 4 sources, take the first repair, decode.
            let mut st = BlockState::new(0, K, 0, 50);
            for (i, (m, p)) in frames.iter().enumerate() {
                if i != lost {
                    st.add(m, p).expect("valid source");
                }
            }
            let (esi, data) = &repairs[0];
            st.add(&tagged(frames[K - 1].0, *esi, true), data)
                .expect("valid repair");
            assert!(st.ready());
            st.decode().expect("one repair recovers one loss")
        })
    });

    let t_len = repairs[0].1.len();
    let cfg = fec_config(t_len);
    let symbols = Symbols::new(Layout::Compact, K, &frames[K - 1].0);
    let mut packets = Vec::new();
    for (i, (m, p)) in frames.iter().enumerate() {
        if i != lost {
            let mut sym = vec![0u8; t_len];
            symbols.write(i, m, p, &mut sym);
            packets.push(EncodingPacket::new(PayloadId::new(0, i as u32), sym));
        }
    }
    packets.push(EncodingPacket::new(
        PayloadId::new(0, repairs[0].0 as u32),
        repairs[0].1.clone(),
    ));
    g.bench_function("raw/raptorq_decode", |b| {
        b.iter_custom(|iters| {
            time_each(iters, || {
                // `decode` consumes its packets; the copy is untimed.
                let p = packets.clone();
                let t = Instant::now();
                let mut dec = SourceBlockDecoder::new(0, &cfg, (K * t_len) as u64);
                black_box(dec.decode(p).expect("decodes"));
                t.elapsed()
            })
        })
    });
    g.finish();
}

fn timer(c: &mut Criterion) {
    // The cost of the clock reads `time_each` wraps around every step; the
    // per-step benches above include it once.
    let mut g = c.benchmark_group("timer");
    g.bench_function("instant_pair", |b| {
        b.iter_custom(|iters| {
            time_each(iters, || {
                let t = Instant::now();
                t.elapsed()
            })
        })
    });
    g.finish();
}

/// `sfu.fanout` in a relay-like cycle: a room of ten, each member sending
/// one packet per 20 ms cycle under its own sender id, 64 such rooms (640
/// packets in, 5760 copies out per cycle). Rows: `bind_off` (forwarding
/// only, the stage before sender binding) and `bind_on` (ids bound, rate
/// buckets, replay index): their ratio is the cost of the checks.
fn sfu_fanout(c: &mut Criterion) {
    use std::sync::Arc;
    use wzp_engine::port::Buffer;
    use wzp_stages::sfu::{fanout::Fanout, membership_channel, SfuCommand};
    const ROOMS: u32 = 64;
    const SIZE: u32 = 10;
    let mut g = c.benchmark_group("stage/sfu.fanout");
    for bind in [false, true] {
        let (mut ctl, port) = membership_channel(4096);
        let mut res = Resources::new();
        res.insert("m", Arc::new(port));
        let mut p = Params::default();
        for spec in Fanout.info().params {
            if let Some(d) = spec.default {
                p.insert(spec.name, d);
            }
        }
        p.insert("membership", ParamValue::Str("m".into()));
        p.insert("bind_senders", ParamValue::Bool(bind));
        let qn = 20_000_000u64;
        let mut bcx = BuildContext::standalone(48_000, Duration::from_nanos(qn), &res);
        let mut proc = Fanout.build(&mut bcx, &p).expect("fanout builds").processor;
        let (counters, _) = bcx.take_metrics();
        let mut pool = vec![
            Buffer::for_type(PortType::Packet, qn, 1024),
            Buffer::for_type(PortType::Packet, qn, 8192),
        ];
        for peer in 0..ROOMS * SIZE {
            ctl.send(SfuCommand::Join {
                peer,
                room: peer / SIZE,
            })
            .expect("ring holds every join");
        }
        let mut template = wzp_proto::MediaHeader::default().to_bytes().to_vec();
        template.resize(wzp_proto::HEADER_LEN + 80, 0x5a);
        let mut cx = Cx {
            now_ns: 0,
            cycle: 0,
            rate: 48_000,
            quantum_ns: qn,
        };
        let mut seq = 0u32;
        let name = if bind { "bind_on" } else { "bind_off" };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    let Buffer::Packets(input) = &mut pool[0] else {
                        unreachable!("packet buffer")
                    };
                    input.clear();
                    for peer in 0..ROOMS * SIZE {
                        template[4..8].copy_from_slice(&(peer + 1).to_be_bytes());
                        template[8..12].copy_from_slice(&seq.to_be_bytes());
                        input
                            .push(
                                PacketMeta {
                                    peer,
                                    ..Default::default()
                                },
                                &template,
                            )
                            .expect("room for a cycle's packets");
                    }
                    seq = seq.wrapping_add(1);
                    pool[1].reset();
                    let t = Instant::now();
                    let mut io = Io::checked(&mut pool, &[0], &[1]).expect("distinct buffers");
                    proc.process(&mut io, &cx);
                    let e = t.elapsed();
                    cx.now_ns += qn;
                    cx.cycle += 1;
                    e
                })
            })
        });
        let get = |n: &str| {
            counters
                .iter()
                .find(|(k, _)| k == n)
                .map_or(0, |(_, c)| c.get())
        };
        // (Skipped when a filter left the bench out.)
        assert!(
            seq == 0 || get("copies") == u64::from(seq) * u64::from(ROOMS * SIZE * (SIZE - 1)),
            "{name}: every packet must be fanned out: copies {} rate_limited {}",
            get("copies"),
            get("rate_limited")
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = timer, audio_plumbing, resample, device_drift, echo_cancel, denoise, agc, jitter_and_netem, fec, sfu_fanout
}
criterion_main!(benches);
