//! Codec stages beside the raw codec calls, one criterion group per kind
//! (`stage/<kind>`), so the stage's overhead is a ratio from one run.
//!
//! - Opus: `raw/*` calls libopus 1.6.1 through `opusic_sys` directly, with
//!   the settings the stage takes from the `good` profile (48 kHz mono,
//!   VOIP, 24 kb/s, complexity 9, 20 ms, expected loss 10 %, DRED 200 ms).
//!   The stages run the same library on the real-time thread, so the ratio
//!   is the whole stage overhead: FIFOs, metadata, counters, the
//!   flush-denormals guard, the harness's output reset.
//! - Codec2: the stages hand the codec work to a worker thread (the crate
//!   allocates per frame), so `stage` is what the real-time thread pays per
//!   quantum (resampling by 6, ring hand-off, a wake-up) and `raw/*` is the
//!   codec2 call per frame that the worker pays. They are different
//!   threads' costs; `docs/PERFORMANCE.md` puts both against the quantum.
//!
//! Every timed iteration is one quantum (or one frame for the raw calls),
//! timed with an `Instant` pair (see `timer/instant_pair` in the stages
//! bench); inputs are fed and workers are let catch up outside the timing.
//!
//! Run: `cargo bench -p wzp-benches --bench codec -- --warm-up-time 0.5 --measurement-time 2`

use std::ffi::c_int;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use opusic_sys as sys;
use wzp_benches::{time_each, worker_paced, Harness, WorkerThread};
use wzp_engine::prelude::*;
use wzp_stages::audio::signal::speech_like;
use wzp_stages::codec::profile::{Codec2Mode, Profile};

const Q48: usize = 960;

/// A libopus encoder configured by hand as `codec.opus_encode` configures
/// it for `profile`.
struct RawEncoder(*mut sys::OpusEncoder);

impl RawEncoder {
    fn new(profile: &Profile) -> RawEncoder {
        let mut err: c_int = 0;
        // SAFETY: valid rate, channel count and application; `err` is a
        // valid out pointer.
        let p =
            unsafe { sys::opus_encoder_create(48_000, 1, sys::OPUS_APPLICATION_VOIP, &mut err) };
        assert!(
            !p.is_null() && err == sys::OPUS_OK,
            "opus_encoder_create: {err}"
        );
        let ctls = [
            (sys::OPUS_SET_BITRATE_REQUEST, profile.bitrate as i32),
            (sys::OPUS_SET_COMPLEXITY_REQUEST, 9),
            (
                sys::OPUS_SET_PACKET_LOSS_PERC_REQUEST,
                i32::from(profile.expected_loss),
            ),
            (sys::OPUS_SET_INBAND_FEC_REQUEST, 0),
            (sys::OPUS_SET_DTX_REQUEST, 0),
            (sys::OPUS_SET_SIGNAL_REQUEST, sys::OPUS_SIGNAL_VOICE),
            (
                sys::OPUS_SET_DRED_DURATION_REQUEST,
                (profile.dred_ms / 10) as i32,
            ),
        ];
        for (request, value) in ctls {
            // SAFETY: every SET request here takes one opus_int32 vararg;
            // the encoder is live.
            let r = unsafe { sys::opus_encoder_ctl(p, request, value) };
            assert_eq!(r, sys::OPUS_OK, "ctl {request} = {value}");
        }
        RawEncoder(p)
    }

    fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> usize {
        // SAFETY: pointers and lengths come from live slices; libopus reads
        // pcm.len() mono samples and writes at most out.len() bytes.
        let n = unsafe {
            sys::opus_encode_float(
                self.0,
                pcm.as_ptr(),
                pcm.len() as c_int,
                out.as_mut_ptr(),
                out.len() as i32,
            )
        };
        assert!(n > 0, "opus_encode_float: {n}");
        n as usize
    }
}

impl Drop for RawEncoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed once.
        unsafe { sys::opus_encoder_destroy(self.0) }
    }
}

/// A libopus decoder plus the DRED state `codec.opus_decode` holds.
struct RawDecoder {
    dec: *mut sys::OpusDecoder,
    dred_dec: *mut sys::OpusDREDDecoder,
    dred: *mut sys::OpusDRED,
}

impl RawDecoder {
    fn new() -> RawDecoder {
        let mut err: c_int = 0;
        // SAFETY: valid rate and channel count; `err` is a valid out pointer.
        let dec = unsafe { sys::opus_decoder_create(48_000, 1, &mut err) };
        assert!(!dec.is_null() && err == sys::OPUS_OK);
        // SAFETY: as above.
        let dred_dec = unsafe { sys::opus_dred_decoder_create(&mut err) };
        assert!(!dred_dec.is_null() && err == sys::OPUS_OK);
        // SAFETY: as above.
        let dred = unsafe { sys::opus_dred_alloc(&mut err) };
        assert!(!dred.is_null() && err == sys::OPUS_OK);
        RawDecoder {
            dec,
            dred_dec,
            dred,
        }
    }

    fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> usize {
        // SAFETY: `packet` is readable for its length; libopus writes at
        // most out.len() mono samples.
        let n = unsafe {
            sys::opus_decode_float(
                self.dec,
                packet.as_ptr(),
                packet.len() as i32,
                out.as_mut_ptr(),
                out.len() as c_int,
                0,
            )
        };
        assert!(n > 0, "opus_decode_float: {n}");
        n as usize
    }

    /// Parses `packet`'s DRED, asking for `max_samples` of history; returns
    /// how far back it reaches (samples).
    fn dred_parse(&mut self, packet: &[u8], max_samples: i32) -> i32 {
        let mut dred_end: c_int = 0;
        // SAFETY: states are live, `packet` is readable for its length,
        // `dred_end` is a valid out pointer; processing is not deferred.
        unsafe {
            sys::opus_dred_parse(
                self.dred_dec,
                self.dred,
                packet.as_ptr(),
                packet.len() as i32,
                max_samples,
                48_000,
                &mut dred_end,
                0,
            )
        }
    }

    /// Parses `next`'s DRED (asking for `max_samples` of history) and
    /// synthesises `out.len()` samples `offset` samples before it: what the
    /// stage does for one lost frame.
    fn dred_rebuild(&mut self, next: &[u8], max_samples: i32, offset: i32, out: &mut [f32]) {
        let reach = self.dred_parse(next, max_samples);
        assert!(reach >= offset, "DRED reaches back {reach} < {offset}");
        // SAFETY: both states are live; libopus writes out.len() samples.
        let n = unsafe {
            sys::opus_decoder_dred_decode_float(
                self.dec,
                self.dred,
                offset,
                out.as_mut_ptr(),
                out.len() as i32,
            )
        };
        assert!(n > 0, "opus_decoder_dred_decode_float: {n}");
    }
}

impl Drop for RawDecoder {
    fn drop(&mut self) {
        // SAFETY: each created once above, destroyed once here.
        unsafe {
            sys::opus_dred_free(self.dred);
            sys::opus_dred_decoder_destroy(self.dred_dec);
            sys::opus_decoder_destroy(self.dec);
        }
    }
}

/// Opus frames of the built-in speech (4 s, 200 frames), encoded with the
/// `good` profile. The speech goes through twice and the second pass is
/// kept, so every packet carries a full DRED window.
fn encoded_speech() -> Vec<Vec<u8>> {
    let good = Profile::by_name("good").expect("good profile");
    let speech = speech_like(48_000);
    let mut enc = RawEncoder::new(good);
    let mut buf = [0u8; MAX_ITEM_BYTES];
    let mut frames = Vec::new();
    for pass in 0..2 {
        for q in speech.chunks_exact(Q48) {
            let n = enc.encode(q, &mut buf);
            if pass == 1 {
                frames.push(buf[..n].to_vec());
            }
        }
    }
    frames
}

fn opus_meta(seq: u32, flags: u8) -> FrameMeta {
    FrameMeta {
        seq,
        timestamp: seq.wrapping_mul(Q48 as u32),
        codec: 1,
        duration_ms: 20,
        flags: if seq == 0 {
            flags | frame_flags::STREAM_START
        } else {
            flags
        },
        ..Default::default()
    }
}

fn opus(c: &mut Criterion) {
    let reg = wzp_stages::registry();
    let good = Profile::by_name("good").expect("good profile");
    let speech = speech_like(48_000);
    let quanta: Vec<&[f32]> = speech.chunks_exact(Q48).collect();

    {
        let mut g = c.benchmark_group("stage/codec.opus_encode");
        let mut h = Harness::new(&reg, "codec.opus_encode", &[], 48_000);
        let mut k = 0usize;
        g.bench_function("stage", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    h.pcm_in(0).copy_from_slice(quanta[k % quanta.len()]);
                    k += 1;
                    let t = Instant::now();
                    h.step();
                    t.elapsed()
                })
            })
        });
        assert_eq!(h.counter("encode_errors"), 0);
        // (Skipped when a filter left the bench out.)
        assert!(k == 0 || h.counter("frames_encoded") > 0);
        eprintln!("codec.opus_encode: {}", h.counters_line());

        let mut enc = RawEncoder::new(good);
        let mut out = [0u8; MAX_ITEM_BYTES];
        let mut k = 0usize;
        g.bench_function("raw/opus_encode", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    let pcm = quanta[k % quanta.len()];
                    k += 1;
                    let t = Instant::now();
                    std::hint::black_box(enc.encode(pcm, &mut out));
                    t.elapsed()
                })
            })
        });
        g.finish();
    }

    let packets = encoded_speech();
    {
        let mut g = c.benchmark_group("stage/codec.opus_decode");
        let mut h = Harness::new(&reg, "codec.opus_decode", &[], 48_000);
        let mut seq = 0u32;
        g.bench_function("stage", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    let batch = h.frames_in(0);
                    batch.clear();
                    batch
                        .push(opus_meta(seq, 0), &packets[seq as usize % packets.len()])
                        .expect("room for a frame");
                    seq = seq.wrapping_add(1);
                    let t = Instant::now();
                    h.step();
                    t.elapsed()
                })
            })
        });
        assert_eq!(h.counter("decode_errors"), 0);
        assert_eq!(h.counter("classical_plc_invocations"), 0);
        eprintln!("codec.opus_decode: {}", h.counters_line());

        let mut dec = RawDecoder::new();
        let mut out = vec![0.0f32; Q48];
        let mut k = 0usize;
        g.bench_function("raw/opus_decode", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    let p = &packets[k % packets.len()];
                    k += 1;
                    let t = Instant::now();
                    std::hint::black_box(dec.decode(p, &mut out));
                    t.elapsed()
                })
            })
        });

        // libopus leaves DRED out of some packets (about 4 % of this
        // signal, in pauses), and the stage then conceals with PLC instead;
        // the DRED rows use only the packets whose DRED reaches back one
        // frame, so they time the DRED path alone.
        let packets: Vec<Vec<u8>> = {
            let mut probe = RawDecoder::new();
            packets
                .iter()
                .filter(|p| probe.dred_parse(p, 2 * Q48 as i32) >= Q48 as i32)
                .cloned()
                .collect()
        };
        eprintln!("packets with DRED reaching a frame back: {}", packets.len());
        // One frame in two lost: each timed step is the one in which the
        // stage rebuilds a MISSING frame from the DRED of the frame after
        // it (lookahead_frames = 1); the untimed step before it decodes an
        // ordinary frame and takes in the MISSING marker.
        let mut h = Harness::new(&reg, "codec.opus_decode", &[], 48_000);
        let frame = |h: &mut Harness, seq: u32, lost: bool| {
            let batch = h.frames_in(0);
            batch.clear();
            if lost {
                batch
                    .push(opus_meta(seq, frame_flags::MISSING), &[])
                    .expect("room for a marker");
            } else {
                batch
                    .push(opus_meta(seq, 0), &packets[seq as usize % packets.len()])
                    .expect("room for a frame");
            }
        };
        frame(&mut h, 0, false);
        h.step();
        let mut seq = 1u32;
        let mut rebuilt = 0u64;
        g.bench_function("stage_dred_rebuild", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    frame(&mut h, seq, true);
                    h.step();
                    frame(&mut h, seq + 1, false);
                    seq += 2;
                    rebuilt += 1;
                    let t = Instant::now();
                    h.step();
                    t.elapsed()
                })
            })
        });
        assert_eq!(
            h.counter("dred_reconstructions"),
            rebuilt,
            "every lost frame must come from DRED: {}",
            h.counters_line()
        );
        eprintln!("codec.opus_decode (DRED): {}", h.counters_line());

        // The stage asks for the gap plus one frame of history (DRED is
        // coded in 40 ms latents) and rebuilds at the gap's offset.
        let mut dec = RawDecoder::new();
        let mut out = vec![0.0f32; Q48];
        let mut k = 0usize;
        g.bench_function("raw/opus_dred_decode", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    // Untimed: the frame before the loss, so the decoder's
                    // state is what the stage's would be.
                    dec.decode(&packets[k % packets.len()], &mut out);
                    let next = &packets[(k + 2) % packets.len()];
                    k += 2;
                    let t = Instant::now();
                    dec.dred_rebuild(next, 2 * Q48 as i32, Q48 as i32, &mut out);
                    t.elapsed()
                })
            })
        });
        g.finish();
    }
}

/// 16-bit speech at 8 kHz, as the Codec2 worker receives it.
fn speech_8k_i16() -> Vec<i16> {
    speech_like(8_000)
        .iter()
        .map(|x| (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

fn codec2_benches(c: &mut Criterion) {
    let reg = wzp_stages::registry();
    let speech = speech_like(48_000);
    let quanta: Vec<&[f32]> = speech.chunks_exact(Q48).collect();
    let speech8 = speech_8k_i16();

    for (profile, mode) in [
        ("poor", Codec2Mode::M3200),
        ("catastrophic", Codec2Mode::M1200),
    ] {
        let frame_8k = mode.frame_samples_8k();
        let frames_8k: Vec<&[i16]> = speech8.chunks_exact(frame_8k).collect();
        let lib_mode = match mode {
            Codec2Mode::M3200 => codec2::Codec2Mode::MODE_3200,
            Codec2Mode::M1200 => codec2::Codec2Mode::MODE_1200,
        };
        let bits: Vec<Vec<u8>> = {
            let mut c2 = codec2::Codec2::new(lib_mode);
            frames_8k
                .iter()
                .map(|f| {
                    let mut b = vec![0u8; mode.frame_bytes()];
                    c2.encode(&mut b, f);
                    b
                })
                .collect()
        };
        let codec_id = Profile::by_name(profile).expect("profile").id;

        {
            let mut g = c.benchmark_group(format!("stage/codec.codec2_encode/{profile}"));
            worker_paced(&mut g);
            let (mut h, worker) = WorkerThread::started_by("wzp-c2enc", || {
                Harness::new(
                    &reg,
                    "codec.codec2_encode",
                    &[("profile", ParamValue::Str(profile.into()))],
                    48_000,
                )
            });
            let mut k = 0usize;
            g.bench_function("stage", |b| {
                b.iter_custom(|iters| {
                    time_each(iters, || {
                        h.pcm_in(0).copy_from_slice(quanta[k % quanta.len()]);
                        k += 1;
                        let switches = worker.voluntary_switches();
                        let t = Instant::now();
                        h.step();
                        let spent = t.elapsed();
                        // Untimed: the worker encodes what is complete and
                        // parks, as it does within the quantum in real time;
                        // every step wakes it.
                        worker.wait_idle(switches, true);
                        spent
                    })
                })
            });
            assert_eq!(h.counter("codec_errors"), 0);
            assert_eq!(h.counter("ring_overflow_samples"), 0);
            assert!(h.counter("frames_encoded") + 1 >= (k * Q48 / 6 / frame_8k) as u64);
            eprintln!("codec.codec2_encode {profile}: {}", h.counters_line());

            let mut c2 = codec2::Codec2::new(lib_mode);
            let mut out = vec![0u8; mode.frame_bytes()];
            let mut k = 0usize;
            g.bench_function("raw/codec2_encode_frame", |b| {
                b.iter_custom(|iters| {
                    time_each(iters, || {
                        let f = frames_8k[k % frames_8k.len()];
                        k += 1;
                        let t = Instant::now();
                        c2.encode(&mut out, f);
                        std::hint::black_box(&out);
                        t.elapsed()
                    })
                })
            });
            g.finish();
        }

        {
            let mut g = c.benchmark_group(format!("stage/codec.codec2_decode/{profile}"));
            worker_paced(&mut g);
            let (mut h, worker) = WorkerThread::started_by("wzp-c2dec", || {
                Harness::new(
                    &reg,
                    "codec.codec2_decode",
                    &[("profile", ParamValue::Str(profile.into()))],
                    48_000,
                )
            });
            let quanta_per_frame = (mode.frame_ms() / 20) as u64;
            let (mut q, mut sent) = (0u64, 0u64);
            g.bench_function("stage", |b| {
                b.iter_custom(|iters| {
                    time_each(iters, || {
                        let batch = h.frames_in(0);
                        batch.clear();
                        let woken = q % quanta_per_frame == 0;
                        if woken {
                            let meta = FrameMeta {
                                seq: sent as u32,
                                timestamp: (sent * quanta_per_frame * Q48 as u64) as u32,
                                codec: codec_id,
                                duration_ms: mode.frame_ms() as u8,
                                flags: if sent == 0 {
                                    frame_flags::STREAM_START
                                } else {
                                    0
                                },
                                ..Default::default()
                            };
                            batch
                                .push(meta, &bits[sent as usize % bits.len()])
                                .expect("room for a frame");
                            sent += 1;
                        }
                        q += 1;
                        let switches = worker.voluntary_switches();
                        let t = Instant::now();
                        h.step();
                        let spent = t.elapsed();
                        // Untimed: the worker decodes the frame and parks,
                        // as it does within the quantum in real time.
                        worker.wait_idle(switches, woken);
                        spent
                    })
                })
            });
            assert_eq!(h.counter("codec_errors"), 0);
            assert_eq!(h.counter("classical_plc_invocations"), 0);
            assert!(h.counter("frames_decoded") + 1 >= sent);
            eprintln!("codec.codec2_decode {profile}: {}", h.counters_line());

            let mut c2 = codec2::Codec2::new(lib_mode);
            let mut out = vec![0i16; frame_8k];
            let mut k = 0usize;
            g.bench_function("raw/codec2_decode_frame", |b| {
                b.iter_custom(|iters| {
                    time_each(iters, || {
                        let bits = &bits[k % bits.len()];
                        k += 1;
                        let t = Instant::now();
                        c2.decode(&mut out, bits);
                        std::hint::black_box(&out);
                        t.elapsed()
                    })
                })
            });
            g.finish();
        }
    }
}

/// The live-switching stages on the usual path (Opus on), beside the
/// Opus-only stages' `stage` rows: what a call pays per quantum for being
/// able to switch. The encoder also decimates for Codec2 and its worker
/// encodes both Codec2 modes all the time (untimed here, as for
/// `codec.codec2_encode`; its raw rows give that cost).
fn adaptive(c: &mut Criterion) {
    let reg = wzp_stages::registry();
    let speech = speech_like(48_000);
    let quanta: Vec<&[f32]> = speech.chunks_exact(Q48).collect();
    {
        let mut g = c.benchmark_group("stage/codec.adaptive_encode");
        worker_paced(&mut g);
        let (mut h, worker) = WorkerThread::started_by("wzp-adenc", || {
            Harness::new(&reg, "codec.adaptive_encode", &[], 48_000)
        });
        let mut k = 0usize;
        g.bench_function("stage_opus_on", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    h.pcm_in(0).copy_from_slice(quanta[k % quanta.len()]);
                    k += 1;
                    let switches = worker.voluntary_switches();
                    let t = Instant::now();
                    h.step();
                    let spent = t.elapsed();
                    worker.wait_idle(switches, true);
                    spent
                })
            })
        });
        assert_eq!(h.counter("encode_errors"), 0);
        assert_eq!(h.counter("codec2_ring_overflow_samples"), 0);
        assert!(k == 0 || h.counter("frames_encoded") > 0);
        eprintln!("codec.adaptive_encode: {}", h.counters_line());
        g.finish();
    }
    let packets = encoded_speech();
    {
        let mut g = c.benchmark_group("stage/codec.adaptive_decode");
        let mut h = Harness::new(&reg, "codec.adaptive_decode", &[], 48_000);
        let mut seq = 0u32;
        g.bench_function("stage_opus", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    let batch = h.frames_in(0);
                    batch.clear();
                    batch
                        .push(opus_meta(seq, 0), &packets[seq as usize % packets.len()])
                        .expect("room for a frame");
                    seq = seq.wrapping_add(1);
                    let t = Instant::now();
                    h.step();
                    t.elapsed()
                })
            })
        });
        assert_eq!(h.counter("decode_errors"), 0);
        assert_eq!(h.counter("classical_plc_invocations"), 0);
        eprintln!("codec.adaptive_decode: {}", h.counters_line());
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = opus, codec2_benches, adaptive
}
criterion_main!(benches);
