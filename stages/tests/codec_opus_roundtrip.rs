//! Opus encode -> decode without loss: the audio survives, framing and
//! metadata are right for every frame size, the declared latency is the
//! measured one, and neither processor allocates.

wzp_engine::install_alloc_checker!();

mod codec_support;

use codec_support::*;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::codec::opus_decode::OpusDecodeFactory;
use wzp_stages::codec::opus_encode::OpusEncodeFactory;

fn chain(enc_over: &[(&str, ParamValue)], dec_over: &[(&str, ParamValue)]) -> (Harness, Harness) {
    (
        Harness::new(&OpusEncodeFactory, enc_over),
        Harness::new(&OpusDecodeFactory, dec_over),
    )
}

/// Why 0.85: SILK and CELT are waveform-matching coders, so at 24 kbps the
/// decoded speech-like signal lines up with the input sample by sample
/// (measured here: about 0.95). A decoder that garbles, drops or shifts
/// frames, or a lag that is wrong by even a fraction of a pitch period,
/// scores far below 0.5 on this harmonic signal.
const MIN_NCC_24K: f64 = 0.85;

#[test]
fn speech_survives_and_measured_lag_is_the_declared_latency() {
    let (mut enc, mut dec) = chain(&[("profile", str_("good"))], &[("profile", str_("good"))]);
    let x = speechlike(48_000 * 2);
    let y = run_chain(&mut enc, &mut dec, &x, 5, |_| false);
    let declared = (enc.latency + dec.latency).as_nanos() as usize * 48 / 1_000_000;
    let (lag, ncc) = best_lag(&x, &y, 24_000, 48_000, 2_000);
    assert!(ncc > MIN_NCC_24K, "correlation {ncc:.3} at lag {lag}");
    assert!(
        lag.abs_diff(declared) <= 48,
        "measured lag {lag} samples, declared {declared}"
    );
    // The decoder still holds its one frame of lookahead.
    assert_eq!(
        dec.counter("frames_decoded") + 1,
        enc.counter("frames_encoded")
    );
    assert_eq!(dec.counter("classical_plc_invocations"), 0);
    assert_eq!(dec.counter("underruns"), 0);
    assert_eq!(enc.counter("encode_errors"), 0);
}

#[test]
fn every_frame_size_frames_and_stamps_correctly() {
    for frame_ms in [10u32, 20, 40, 60] {
        let mut enc = Harness::new(&OpusEncodeFactory, &[("frame_ms", int(frame_ms as i64))]);
        let x = speechlike(Q * 12);
        let mut frames = Vec::new();
        for (c, chunk) in x.chunks_exact(Q).enumerate() {
            enc.set_pcm_in(chunk);
            enc.step();
            let got = capture(enc.frames_out());
            // 10 ms: two per quantum; 40 ms: one every second quantum.
            let expect = ((c + 1) * 20 / frame_ms as usize) - (c * 20 / frame_ms as usize);
            assert_eq!(got.len(), expect, "{frame_ms} ms, cycle {c}");
            frames.extend(got);
        }
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.meta.seq, i as u32);
            assert_eq!(f.meta.timestamp, i as u32 * frame_ms * 48);
            assert_eq!(f.meta.duration_ms as u32, frame_ms);
            assert_eq!(
                f.meta.codec, 0x01,
                "Opus frames carry the wire codec id 0x01"
            );
            assert_eq!(f.meta.flags & frame_flags::STREAM_START != 0, i == 0);
            assert!(!f.bytes.is_empty() && f.bytes.len() < 400);
        }
    }
}

#[test]
fn forty_ms_frames_decode_across_quanta() {
    let (mut enc, mut dec) = chain(
        &[("profile", str_("degraded"))],
        &[("profile", str_("degraded"))],
    );
    let x = speechlike(48_000 * 2);
    let y = run_chain(&mut enc, &mut dec, &x, 6, |_| false);
    let declared = (enc.latency + dec.latency).as_nanos() as usize * 48 / 1_000_000;
    // 6 kbps narrowband SILK keeps the band below 4 kHz but not the exact
    // waveform: a looser bar than 24 kbps, still far above a broken chain.
    let (lag, ncc) = best_lag(&x, &y, 24_000, 48_000, 4_000);
    assert!(ncc > 0.6, "correlation {ncc:.3} at lag {lag}");
    assert!(
        lag.abs_diff(declared) <= 96,
        "lag {lag}, declared {declared}"
    );
    assert_eq!(dec.counter("underruns"), 0);
}

#[test]
fn dtx_marks_silent_frames() {
    let mut enc = Harness::new(&OpusEncodeFactory, &[("dtx", bool_(true))]);
    let silence = vec![0.0; Q];
    let mut dtx = 0;
    for _ in 0..50 {
        enc.set_pcm_in(&silence);
        enc.step();
        dtx += enc
            .frames_out()
            .iter()
            .filter(|s| s.meta.flags & frame_flags::DTX != 0 && s.len() <= 2)
            .count();
    }
    assert!(dtx > 30, "only {dtx} of 50 silent frames were DTX");
    assert_eq!(enc.counter("dtx_frames"), dtx as u64);
}

/// Runs 100 cycles of encode -> lossy forward -> decode under
/// `assert_rt_safe`, after a 20-cycle warm-up so redundancy is present.
fn rt_safe_run(
    what: &str,
    enc_over: &[(&str, ParamValue)],
    dec_over: &[(&str, ParamValue)],
) -> Harness {
    let (mut enc, mut dec) = chain(enc_over, dec_over);
    let x = speechlike(Q * 120);
    run_chain(&mut enc, &mut dec, &x[..Q * 20], 0, |_| false);
    let mut c = 20;
    // Single losses, a burst, and gaps made by dropping a frame with no
    // marker at all: every recovery path runs inside.
    assert_rt_safe(what, 100, || {
        enc.set_pcm_in(&x[c * Q..(c + 1) * Q]);
        enc.step();
        forward(&enc, &mut dec, |m| {
            m.seq % 10 == 3 || (40..44).contains(&m.seq)
        });
        if c % 25 == 7 {
            dec.frames_in().clear();
        }
        dec.step();
        c += 1;
    });
    assert!(dec.counter("gaps_filled") > 0);
    dec
}

#[test]
fn processors_do_not_allocate() {
    let dec = rt_safe_run(
        "opus with DRED",
        &[("dred_ms", int(200)), ("expected_loss", int(20))],
        &[("lookahead_frames", int(4))],
    );
    assert!(dec.counter("dred_reconstructions") > 0);
    let dec = rt_safe_run(
        "opus with LBRR",
        &[
            ("dred_ms", int(0)),
            ("expected_loss", int(20)),
            ("inband_fec", bool_(true)),
        ],
        &[],
    );
    assert!(dec.counter("fec_recovered") > 0);
    let dec = rt_safe_run(
        "opus with DTX, PLC only",
        &[("dred_ms", int(0)), ("dtx", bool_(true))],
        &[("lookahead_frames", int(0))],
    );
    assert!(dec.counter("classical_plc_invocations") > 10);
}

/// Every Opus profile's packets stay under its cap (the bound a path's
/// datagram size is checked against), even with DRED and LBRR at high
/// expected loss; and a small explicit cap is honoured.
#[test]
fn packets_stay_under_the_profile_cap() {
    use wzp_stages::codec::profile::PROFILES;
    let x = speechlike(48_000 * 3);
    let cases = PROFILES
        .iter()
        .filter(|p| p.is_opus())
        .map(|p| (p.name, p.max_payload_bytes(), 0i64))
        .chain([("studio_64k", 60, 60i64)]);
    for (name, cap, explicit) in cases {
        let mut enc = Harness::new(
            &OpusEncodeFactory,
            &[
                ("profile", str_(name)),
                ("expected_loss", int(30)),
                ("inband_fec", bool_(true)),
                ("dred_ms", int(1000)),
                ("max_packet_bytes", int(explicit)),
            ],
        );
        let mut largest = 0;
        let mut frames = 0;
        for chunk in x.chunks_exact(Q) {
            enc.set_pcm_in(chunk);
            enc.step();
            for s in enc.frames_out().iter() {
                largest = largest.max(s.len());
                frames += 1;
            }
        }
        assert!(frames > 50, "{name}: {frames} frames");
        assert!(
            largest <= cap,
            "{name}: a {largest}-byte packet over the {cap}-byte cap"
        );
        assert!(largest > 8, "{name}: encoder produced nothing real");
        assert_eq!(enc.counter("encode_errors"), 0, "{name}");
    }
}
