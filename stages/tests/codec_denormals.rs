//! Flush-to-zero is on inside codec calls and the caller's float mode is
//! back as it was after every `process`.
#![cfg(target_arch = "x86_64")]

wzp_engine::install_alloc_checker!();

mod codec_support;

use std::hint::black_box;

use codec_support::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::codec::denormals::{read_mxcsr, FlushDenormals, MXCSR_DAZ, MXCSR_FTZ};
use wzp_stages::codec::opus_decode::OpusDecodeFactory;
use wzp_stages::codec::opus_encode::OpusEncodeFactory;

fn subnormal_product() -> f32 {
    black_box(f32::MIN_POSITIVE) * black_box(0.25)
}

#[test]
fn the_guard_flushes_subnormals_and_restores_the_mode() {
    let before = read_mxcsr();
    assert_eq!(
        before & (MXCSR_FTZ | MXCSR_DAZ),
        0,
        "test thread starts in IEEE mode"
    );
    assert!(subnormal_product() > 0.0);
    {
        let _g = FlushDenormals::new();
        assert_eq!(
            read_mxcsr() & (MXCSR_FTZ | MXCSR_DAZ),
            MXCSR_FTZ | MXCSR_DAZ
        );
        assert_eq!(subnormal_product(), 0.0);
        // DAZ: a subnormal input reads as zero.
        assert_eq!(black_box(f32::MIN_POSITIVE / 4.0) * black_box(1.0), 0.0);
        {
            let _nested = FlushDenormals::new();
        }
        assert_eq!(
            read_mxcsr() & MXCSR_FTZ,
            MXCSR_FTZ,
            "inner guard restored the outer mode"
        );
    }
    // Bits 0-5 are sticky exception flags that the subnormal arithmetic
    // above raised on purpose; the control bits must be as before.
    const FLAGS: u32 = 0x3f;
    assert_eq!(read_mxcsr() & !FLAGS, before & !FLAGS);
    assert!(subnormal_product() > 0.0);
}

#[test]
fn codec_processors_leave_the_float_mode_as_they_found_it() {
    let mut enc = Harness::new(
        &OpusEncodeFactory,
        &[("dred_ms", int(200)), ("expected_loss", int(20))],
    );
    let mut dec = Harness::new(&OpusDecodeFactory, &[("lookahead_frames", int(2))]);
    let x = speechlike(Q * 60);
    let mut c = 0;
    assert_rt_safe("opus chain, mode check", 60, || {
        let before = read_mxcsr();
        enc.set_pcm_in(&x[c * Q..(c + 1) * Q]);
        enc.step();
        assert_eq!(read_mxcsr(), before, "encoder changed MXCSR");
        // Losses so DRED parse/decode and PLC run too.
        forward(&enc, &mut dec, |m| m.seq % 6 == 5);
        dec.step();
        assert_eq!(read_mxcsr(), before, "decoder changed MXCSR");
        c += 1;
    });
    assert!(dec.counter("dred_reconstructions") > 0);
}

#[test]
fn silence_after_speech_decodes_to_clean_zeros_or_normal_floats() {
    let mut enc = Harness::new(&OpusEncodeFactory, &[]);
    let mut dec = Harness::new(&OpusDecodeFactory, &[]);
    let mut x = speechlike(Q * 20);
    x.extend(std::iter::repeat_n(0.0, Q * 100));
    let y = run_chain(&mut enc, &mut dec, &x, 2, |_| false);
    let subnormal = y.iter().filter(|v| v.is_subnormal()).count();
    assert_eq!(
        subnormal, 0,
        "{subnormal} subnormal samples in the decoded tail"
    );
}
