//! Opus loss recovery: which mechanism rebuilds lost frames (DRED, LBRR,
//! PLC) under random and burst loss, and whether the rebuilt audio is
//! better than concealment.

wzp_engine::install_alloc_checker!();

mod codec_support;

use codec_support::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::codec::opus_decode::OpusDecodeFactory;
use wzp_stages::codec::opus_encode::OpusEncodeFactory;

struct Run {
    enc: Harness,
    dec: Harness,
    out: Vec<f32>,
    lost: u64,
}

/// Encodes 5 s of speech-like signal and decodes it with the frames that
/// `lost` selects replaced by MISSING markers. The first 0.5 s is never
/// lost: DRED needs some history before its first packet carries any.
fn run(
    enc_over: &[(&str, ParamValue)],
    dec_over: &[(&str, ParamValue)],
    mut lost: impl FnMut(u32) -> bool,
) -> Run {
    let mut enc = Harness::new(&OpusEncodeFactory, enc_over);
    let mut dec = Harness::new(&OpusDecodeFactory, dec_over);
    let x = speechlike(48_000 * 5);
    let mut n_lost = 0;
    let out = run_chain(&mut enc, &mut dec, &x, 8, |m| {
        // The tail (silence to flush) is never lost either.
        let l = m.seq >= 25 && m.seq < 245 && lost(m.seq);
        n_lost += u64::from(l);
        l
    });
    Run {
        enc,
        dec,
        out,
        lost: n_lost,
    }
}

fn counters(r: &Run) -> (u64, u64, u64) {
    (
        r.dec.counter("dred_reconstructions"),
        r.dec.counter("fec_recovered"),
        r.dec.counter("classical_plc_invocations"),
    )
}

fn random_loss(seed: u64, p: f64) -> impl FnMut(u32) -> bool {
    let mut rng = SmallRng::seed_from_u64(seed);
    move |_| rng.random_bool(p)
}

#[test]
fn twenty_percent_random_loss_is_rebuilt_by_dred() {
    let r = run(
        &[("dred_ms", int(200)), ("expected_loss", int(20))],
        &[("lookahead_frames", int(3))],
        random_loss(7, 0.2),
    );
    let (dred, fec, plc) = counters(&r);
    assert!(r.lost > 30, "only {} frames lost", r.lost);
    // Every lost frame is rebuilt exactly once, by one of the three.
    assert_eq!(dred + fec + plc, r.lost, "dred {dred} fec {fec} plc {plc}");
    // DRED misses only where the next held frame is itself lost beyond
    // the lookahead, or its packet fell in a pause with no DRED payload.
    assert!(
        dred as f64 >= 0.8 * r.lost as f64,
        "DRED rebuilt {dred} of {} lost frames (fec {fec}, plc {plc})",
        r.lost
    );
    assert_eq!(r.dec.counter("decode_errors"), 0);
}

#[test]
fn without_dred_or_fec_plc_conceals_every_loss() {
    let r = run(
        &[("dred_ms", int(0)), ("inband_fec", bool_(false))],
        &[],
        random_loss(7, 0.2),
    );
    let (dred, fec, plc) = counters(&r);
    assert!(r.lost > 30);
    assert_eq!((dred, fec), (0, 0));
    assert_eq!(plc, r.lost);
    // Decoded + concealed covers every frame but the one still held.
    assert_eq!(
        r.dec.counter("frames_decoded") + plc + 1,
        r.enc.counter("frames_encoded")
    );
}

#[test]
fn lbrr_recovers_isolated_losses_when_dred_is_off() {
    let x = speechlike(48_000 * 5);
    let active = |seq: u32| {
        let a = seq as usize * Q;
        x.get(a..a + Q).is_some_and(|f| rms(f) > 0.03)
    };
    let r = run(
        &[
            ("dred_ms", int(0)),
            ("inband_fec", bool_(true)),
            ("expected_loss", int(20)),
        ],
        &[],
        // Isolated losses: LBRR holds only the frame just before a packet.
        // Only frames with speech: SILK spends LBRR bits on frames its VAD
        // marks active, and the test signal pauses half the time.
        |seq| seq % 7 == 3 && active(seq),
    );
    let (dred, fec, plc) = counters(&r);
    assert_eq!(dred, 0);
    assert_eq!(dred + fec + plc, r.lost);
    assert!(
        fec as f64 >= 0.8 * r.lost as f64,
        "LBRR rebuilt {fec} of {} (plc {plc})",
        r.lost
    );
}

#[test]
fn decoder_side_switches_turn_recovery_off() {
    let r = run(
        &[("dred_ms", int(200)), ("expected_loss", int(20))],
        &[("use_dred", bool_(false)), ("use_fec", bool_(false))],
        random_loss(3, 0.2),
    );
    let (dred, fec, plc) = counters(&r);
    assert_eq!((dred, fec, plc), (0, 0, r.lost));
}

/// Frames 105..110 (100 ms, 2.10-2.20 s) lost in a row: across the end of
/// a pause and the onset of a syllable (at 2.12 s), the hardest case for
/// concealment, which can only extrapolate the past.
fn burst(seq: u32) -> bool {
    (105..110).contains(&seq)
}

#[test]
fn a_100ms_burst_is_rebuilt_by_dred_from_the_packet_after_it() {
    let r = run(
        &[("dred_ms", int(200)), ("expected_loss", int(20))],
        &[("lookahead_frames", int(5))],
        burst,
    );
    let (dred, fec, plc) = counters(&r);
    assert_eq!(r.lost, 5);
    assert_eq!((dred, fec, plc), (5, 0, 0));
}

#[test]
fn with_one_frame_of_lookahead_only_the_last_of_a_burst_gets_dred() {
    let r = run(
        &[("dred_ms", int(200)), ("expected_loss", int(20))],
        &[("lookahead_frames", int(1))],
        burst,
    );
    let (dred, _fec, plc) = counters(&r);
    assert_eq!((dred, plc), (1, 4));
}

/// A 240 ms burst, longer than what DRED's latents cover at loss hint 14
/// and 24 kb/s (three 40 ms chunks: 80-100 ms back), with the packet after
/// it held: every frame is decoded from that packet's DRED, the oldest by
/// the vocoder carried on past its last latent, as libopus's own demo
/// does, not concealed at its time (docs/QUALITY.md finding 22: 0.16
/// PESQ-WB on the 60 ms burst trace with 160 ms held).
#[test]
fn a_burst_longer_than_the_dred_latents_is_decoded_from_them_whole() {
    let long_burst = |seq: u32| (100..112).contains(&seq);
    let r = run(
        &[("dred_ms", int(1000)), ("expected_loss", int(14))],
        &[("lookahead_frames", int(12))],
        long_burst,
    );
    let (dred, fec, plc) = counters(&r);
    assert_eq!(r.lost, 12);
    assert_eq!((dred, fec, plc), (12, 0, 0));
    // The same packet with too little look-ahead to reach the burst's
    // first frames: those are concealed when due.
    let short = run(
        &[("dred_ms", int(1000)), ("expected_loss", int(14))],
        &[("lookahead_frames", int(4))],
        long_burst,
    );
    let (dred, _fec, plc) = counters(&short);
    assert_eq!((dred, plc), (4, 8));
}

/// Envelope match (10 ms RMS, Pearson) between input and output over the
/// burst and the 40 ms after it, at the chain's declared lag.
fn burst_envelope_match(r: &Run, x: &[f32]) -> f64 {
    let lag = (r.enc.latency + r.dec.latency).as_nanos() as usize * 48 / 1_000_000;
    let (a, b) = (105 * Q, 112 * Q);
    let ex = envelope(&x[a..b], 480);
    let ey = envelope(&r.out[a + lag..b + lag], 480);
    pearson(&ex, &ey)
}

#[test]
fn dred_follows_the_speech_through_a_burst_better_than_plc() {
    let x = speechlike(48_000 * 5);
    let with_dred = run(
        &[("dred_ms", int(200)), ("expected_loss", int(20))],
        &[("lookahead_frames", int(5))],
        burst,
    );
    let plc_only = run(
        &[("dred_ms", int(200)), ("expected_loss", int(20))],
        &[("lookahead_frames", int(5)), ("use_dred", bool_(false))],
        burst,
    );
    let d = burst_envelope_match(&with_dred, &x);
    let p = burst_envelope_match(&plc_only, &x);
    // PLC extrapolates the pause before the burst and misses the onset;
    // DRED was coded from the real signal and tracks the energy contour.
    // Measured here: DRED 0.82, PLC 0.42.
    assert!(d > 0.7, "DRED envelope match {d:.3}");
    assert!(
        d > p + 0.2,
        "DRED {d:.3} not clearly better than PLC {p:.3}"
    );
}

#[test]
fn gaps_without_markers_are_filled_and_late_frames_dropped() {
    let mut enc = Harness::new(
        &OpusEncodeFactory,
        &[("dred_ms", int(200)), ("expected_loss", int(20))],
    );
    let mut dec = Harness::new(&OpusDecodeFactory, &[("lookahead_frames", int(2))]);
    let x = speechlike(Q * 60);
    let mut held: Option<(FrameMeta, Vec<u8>)> = None;
    for (c, chunk) in x.chunks_exact(Q).enumerate() {
        enc.set_pcm_in(chunk);
        enc.step();
        forward(&enc, &mut dec, |_| false);
        // Frames 30 and 31 vanish without markers; frame 30 then shows up
        // late, after 32.
        if c == 30 {
            let s = dec.frames_in().get(0).unwrap();
            held = Some((s.meta, s.bytes().to_vec()));
            dec.frames_in().clear();
        }
        if c == 31 {
            dec.frames_in().clear();
        }
        if c == 33 {
            let (m, b) = held.take().unwrap();
            dec.frames_in().push(m, &b).unwrap();
        }
        dec.step();
    }
    assert_eq!(dec.counter("gaps_filled"), 2);
    assert_eq!(dec.counter("late_dropped"), 1);
    assert_eq!(dec.counter("dred_reconstructions"), 2);
}

#[test]
fn garbage_and_foreign_frames_are_concealed_not_fatal() {
    let mut dec = Harness::new(&OpusDecodeFactory, &[("lookahead_frames", int(0))]);
    let mut rng = SmallRng::seed_from_u64(11);
    let mut junk = [0u8; 300];
    assert_rt_safe("opus decode of junk", 200, || {
        let len = rng.random_range(0..junk.len());
        rng.fill(&mut junk[..len]);
        let codec = if rng.random_bool(0.2) { 5 } else { 1 };
        let seq = rng.random_range(0..400u32);
        let meta = FrameMeta {
            seq,
            timestamp: seq.wrapping_mul(960),
            codec,
            duration_ms: rng.random_range(0..100u8),
            ..Default::default()
        };
        let input = dec.frames_in();
        input.clear();
        let _ = input.push(meta, &junk[..len]);
        dec.step();
        assert!(dec.pcm_out().iter().all(|v| v.is_finite()));
    });
    assert!(dec.counter("foreign_frames") > 0);
    assert!(dec.counter("decode_errors") + dec.counter("frames_decoded") > 0);
}

/// Encodes `signal` and returns every frame (meta, packet), in order.
fn encode_all(enc_over: &[(&str, ParamValue)], signal: &[f32]) -> Vec<Captured> {
    let mut enc = Harness::new(&OpusEncodeFactory, enc_over);
    let mut frames = Vec::new();
    for chunk in signal.chunks_exact(Q) {
        enc.set_pcm_in(chunk);
        enc.step();
        frames.extend(capture(enc.frames_out()));
    }
    frames
}

/// Feeds `frames` to a decoder one per cycle as a jitter buffer would: a
/// lost frame becomes a MISSING marker, carrying the next frame's packet
/// (`NEXT_ATTACHED`) when `attach` is set and that frame is not lost too.
fn decode_as_after_a_jitter_buffer(
    dec: &mut Harness,
    frames: &[Captured],
    lost: &dyn Fn(u32) -> bool,
    attach: bool,
) {
    for (i, f) in frames.iter().enumerate() {
        let input = dec.frames_in();
        input.clear();
        if lost(f.meta.seq) {
            let next = frames.get(i + 1).filter(|n| !lost(n.meta.seq));
            match next {
                Some(n) if attach => {
                    let meta = FrameMeta {
                        flags: frame_flags::MISSING | frame_flags::NEXT_ATTACHED,
                        ..f.meta
                    };
                    input.push(meta, &n.bytes).unwrap();
                }
                _ => {
                    let meta = FrameMeta {
                        flags: frame_flags::MISSING,
                        ..f.meta
                    };
                    input.push(meta, &[]).unwrap();
                }
            }
        } else {
            input.push(f.meta, &f.bytes).unwrap();
        }
        dec.step();
    }
}

/// With no decoder look-ahead (no added latency), a jitter buffer that
/// attaches the next frame to each lost one still gets DRED/LBRR recovery;
/// without the attachment every loss falls back to PLC.
#[test]
fn attached_next_frames_give_recovery_without_lookahead() {
    let x = speechlike(48_000 * 5);
    let frames = encode_all(&[("dred_ms", int(200)), ("expected_loss", int(20))], &x);
    let lost = |seq: u32| (25..245).contains(&seq) && seq % 5 == 2;
    let n_lost = frames.iter().filter(|f| lost(f.meta.seq)).count() as u64;
    assert!(n_lost > 40);

    let mut with = Harness::new(&OpusDecodeFactory, &[("lookahead_frames", int(0))]);
    decode_as_after_a_jitter_buffer(&mut with, &frames, &lost, true);
    let rebuilt = with.counter("dred_reconstructions") + with.counter("fec_recovered");
    assert_eq!(
        rebuilt + with.counter("classical_plc_invocations"),
        n_lost,
        "each loss handled once"
    );
    assert!(
        rebuilt as f64 >= 0.8 * n_lost as f64,
        "rebuilt {rebuilt} of {n_lost} lost frames from the attached packet"
    );
    assert_eq!(with.counter("late_dropped"), 0);
    assert_eq!(with.counter("decode_errors"), 0);
    assert_eq!(
        with.counter("frames_decoded") + n_lost,
        frames.len() as u64,
        "the attached frame itself is still decoded when it arrives"
    );

    let mut without = Harness::new(&OpusDecodeFactory, &[("lookahead_frames", int(0))]);
    decode_as_after_a_jitter_buffer(&mut without, &frames, &lost, false);
    assert_eq!(without.counter("classical_plc_invocations"), n_lost);
    assert_eq!(without.counter("dred_reconstructions"), 0);
}

/// A period a jitter buffer inserts (MISSING | INSERTED, same seq as the
/// frame that follows) is concealed, and that frame is still decoded rather
/// than dropped as late.
#[test]
fn inserted_periods_do_not_cost_the_frame_that_follows() {
    let x = speechlike(Q * 40);
    let frames = encode_all(&[], &x);
    for lookahead in [0, 2] {
        let mut dec = Harness::new(&OpusDecodeFactory, &[("lookahead_frames", int(lookahead))]);
        let mut outs = 0usize;
        for f in &frames {
            if f.meta.seq == 20 || f.meta.seq == 21 {
                let input = dec.frames_in();
                input.clear();
                let meta = FrameMeta {
                    flags: frame_flags::MISSING | frame_flags::INSERTED,
                    ..f.meta
                };
                input.push(meta, &[]).unwrap();
                dec.step();
                outs += 1;
            }
            let input = dec.frames_in();
            input.clear();
            input.push(f.meta, &f.bytes).unwrap();
            dec.step();
            outs += 1;
        }
        assert_eq!(outs, frames.len() + 2);
        assert_eq!(dec.counter("late_dropped"), 0, "lookahead {lookahead}");
        assert_eq!(dec.counter("classical_plc_invocations"), 2);
        assert_eq!(
            dec.counter("frames_decoded"),
            frames.len() as u64 - lookahead as u64,
            "lookahead {lookahead}: every frame decoded (but those still held)"
        );
        assert_eq!(dec.counter("underruns"), 0, "lookahead {lookahead}");
    }
}

/// A jitter buffer holding back for bursts attaches to each lost frame the
/// first frame held after it, `fec.symbol` frames ahead: with no decoder
/// look-ahead, every frame of a three-frame burst is rebuilt from DRED of
/// the packet after the burst, each at its own offset, and the rebuilt
/// audio follows the input's envelope better than if the decoder took the
/// attachment for the next frame (the offset the distance sets matters).
/// Attaching only the next frame (lost too) leaves most to PLC.
#[test]
fn attachments_from_further_ahead_rebuild_a_whole_burst() {
    let x = speechlike(48_000 * 5);
    let frames = encode_all(&[("dred_ms", int(200)), ("expected_loss", int(20))], &x);
    let lost = |seq: u32| (25..245).contains(&seq) && seq % 10 < 3;
    let n_lost = frames.iter().filter(|f| lost(f.meta.seq)).count() as u64;
    assert!(n_lost > 60);
    // (reach, tell the distance) -> (DRED, PLC, output)
    let decode = |reach: usize, tell: bool| {
        let mut dec = Harness::new(&OpusDecodeFactory, &[("lookahead_frames", int(0))]);
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let input = dec.frames_in();
            input.clear();
            if lost(f.meta.seq) {
                let ahead =
                    (1..=reach).find(|d| frames.get(i + d).is_some_and(|n| !lost(n.meta.seq)));
                let mut meta = FrameMeta {
                    flags: frame_flags::MISSING,
                    ..f.meta
                };
                match ahead {
                    Some(d) => {
                        meta.flags |= frame_flags::NEXT_ATTACHED;
                        meta.fec.symbol = if tell { d as u16 } else { 0 };
                        input.push(meta, &frames[i + d].bytes).unwrap();
                    }
                    None => input.push(meta, &[]).unwrap(),
                }
            } else {
                input.push(f.meta, &f.bytes).unwrap();
            }
            dec.step();
            out.extend_from_slice(dec.pcm_out());
        }
        (
            dec.counter("dred_reconstructions"),
            dec.counter("classical_plc_invocations"),
            out,
        )
    };
    // Envelope match over the bursts (5 ms blocks), at the chain's lag.
    let (lag, _) = best_lag(&x, &decode(4, true).2, Q * 10, Q * 25, 48 * 40);
    let burst_match = |y: &[f32]| {
        let (mut ex, mut ey) = (Vec::new(), Vec::new());
        for b in (30..240).step_by(10) {
            let (a, e) = (b * Q, (b + 3) * Q);
            ex.extend(envelope(&x[a..e], 240));
            ey.extend(envelope(&y[a + lag..e + lag], 240));
        }
        pearson(&ex, &ey)
    };
    let (dred, plc, told) = decode(4, true);
    assert_eq!(dred + plc, n_lost, "each loss handled once");
    assert!(
        dred as f64 >= 0.9 * n_lost as f64,
        "DRED rebuilt {dred} of {n_lost} frames lost in bursts"
    );
    let (_, _, untold) = decode(4, false);
    let (m_told, m_untold) = (burst_match(&told), burst_match(&untold));
    println!("burst envelope match: right offsets {m_told:.3}, as if next {m_untold:.3}");
    assert!(
        m_told > m_untold + 0.05,
        "rebuilt at the right offsets {m_told:.3} vs as if the next frame {m_untold:.3}"
    );
    let (dred1, plc1, _) = decode(1, true);
    assert!(
        plc1 as f64 >= 0.6 * n_lost as f64 && dred1 < dred,
        "next-frame attachments only: {dred1} rebuilt, {plc1} concealed"
    );
}
