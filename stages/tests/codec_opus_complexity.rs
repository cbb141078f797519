//! `codec.opus_decode`'s `complexity` reaches libopus, and the bundled
//! libopus has what it switches on: deep PLC (5 and above, concealment
//! only) and OSCE (6: LACE, 7: NoLACE, every decoded SILK frame).

wzp_engine::install_alloc_checker!();

mod codec_support;

use codec_support::*;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::codec::opus_decode::OpusDecodeFactory;
use wzp_stages::codec::opus_encode::OpusEncodeFactory;
use wzp_stages::codec::opus_ffi::Decoder;

/// 5 s of speech-like signal through encoder and decoder (no DRED, no
/// LBRR: only concealment recovers), losing the frames `lost` selects.
fn decode_at(complexity: i64, lost: impl FnMut(&FrameMeta) -> bool) -> (Vec<f32>, u64) {
    let mut enc = Harness::new(
        &OpusEncodeFactory,
        &[("dred_ms", int(0)), ("expected_loss", int(0))],
    );
    let mut dec = Harness::new(&OpusDecodeFactory, &[("complexity", int(complexity))]);
    let x = speechlike(48_000 * 5);
    let out = run_chain(&mut enc, &mut dec, &x, 8, lost);
    (out, dec.counter("classical_plc_invocations"))
}

/// Every 10th frame from 0.5 s on.
fn every_tenth(m: &FrameMeta) -> bool {
    m.seq >= 25 && m.seq % 10 == 3
}

/// Samples where two outputs differ, within `range`.
fn differing(a: &[f32], b: &[f32], range: std::ops::Range<usize>) -> usize {
    a[range.clone()]
        .iter()
        .zip(&b[range])
        .filter(|(p, q)| p != q)
        .count()
}

#[test]
fn libopus_holds_the_complexity_it_was_given() {
    for c in 0..=10 {
        let mut dec = Decoder::new().unwrap();
        dec.set_complexity(c).unwrap();
        assert_eq!(dec.complexity().unwrap(), c);
        // A stream restart (OPUS_RESET_STATE) keeps it.
        dec.reset();
        assert_eq!(dec.complexity().unwrap(), c, "after reset");
    }
    let mut dec = Decoder::new().unwrap();
    assert!(dec.set_complexity(11).is_err());
}

#[test]
fn deep_plc_conceals_differently_from_classical_plc() {
    let (classical, n0) = decode_at(0, every_tenth);
    let (deep, n5) = decode_at(5, every_tenth);
    assert!(n0 > 15, "{n0} frames concealed");
    assert_eq!(n0, n5, "the same frames are concealed");
    // Identical until the first loss (frame 33; the decoder holds one
    // frame, so its output is 20 ms behind the input)...
    let first_loss = 33 * Q;
    assert_eq!(differing(&classical, &deep, 0..first_loss), 0);
    // ...then the neural concealment takes over the lost frames.
    let after = differing(&classical, &deep, first_loss..classical.len());
    assert!(
        after > 20 * Q / 2,
        "only {after} samples differ: deep PLC did not run"
    );
}

#[test]
fn complexity_5_leaves_clean_frames_alone_6_and_7_enhance_them_with_osce() {
    let none = |_: &FrameMeta| false;
    let (c0, _) = decode_at(0, none);
    let (c5, _) = decode_at(5, none);
    let (c6, _) = decode_at(6, none);
    let (c7, _) = decode_at(7, none);
    let all = 0..c0.len();
    assert_eq!(
        differing(&c0, &c5, all.clone()),
        0,
        "deep PLC only conceals"
    );
    // OSCE (LACE at 6, NoLACE at 7) post-filters every SILK frame: without
    // it compiled in (opusic-sys feature `osce`), 6 and 7 decode as 0.
    let lace = differing(&c0, &c6, all.clone());
    let nolace = differing(&c6, &c7, all.clone());
    assert!(lace > c0.len() / 4, "LACE changed {lace} samples");
    assert!(nolace > c0.len() / 4, "NoLACE changed {nolace} samples");
    // Enhanced, not garbled: each still follows the decoder at 0 closely.
    for (name, y) in [("LACE", &c6), ("NoLACE", &c7)] {
        let r = ncc_at(&c0, y, 48_000, 4 * 48_000, 0);
        assert!(r > 0.9, "{name} output correlates {r:.3} with plain");
    }
}

#[test]
fn decoding_at_complexity_7_is_real_time_safe() {
    let mut enc = Harness::new(
        &OpusEncodeFactory,
        &[("dred_ms", int(200)), ("expected_loss", int(20))],
    );
    let mut dec = Harness::new(
        &OpusDecodeFactory,
        &[("complexity", int(7)), ("lookahead_frames", int(2))],
    );
    let x = speechlike(Q * 140);
    run_chain(&mut enc, &mut dec, &x[..Q * 20], 0, |_| false);
    let mut c = 20;
    // Decoded, DRED-rebuilt and concealed (deep PLC) frames all run inside.
    assert_rt_safe("opus decode at complexity 7", 120, || {
        enc.set_pcm_in(&x[c * Q..(c + 1) * Q]);
        enc.step();
        forward(&enc, &mut dec, |m| {
            m.seq % 10 == 3 || (60..66).contains(&m.seq)
        });
        dec.step();
        c += 1;
    });
    assert!(dec.counter("dred_reconstructions") > 0);
    assert!(dec.counter("classical_plc_invocations") > 0);
}
