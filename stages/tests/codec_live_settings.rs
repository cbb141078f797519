//! `codec.opus_encode` takes live settings (bit rate, DRED, loss hint, LBRR)
//! from an `OpusLive` cell the control side writes: applied before the next
//! frame, with no rebuild and no allocation.

wzp_engine::install_alloc_checker!();

mod codec_support;

use std::sync::Arc;

use codec_support::*;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::codec::live::{LiveOpusSettings, OpusLive};
use wzp_stages::codec::opus_encode::OpusEncodeFactory;
use wzp_stages::codec::opus_ffi::{packet_has_lbrr, Dred, DredDecoder};
use wzp_stages::quality::controller::{Controller, ControllerConfig};

fn encoder(cell: &Arc<OpusLive>) -> Harness {
    let mut res = Resources::new();
    res.insert("enc_live", cell.clone());
    Harness::try_with_resources(
        &OpusEncodeFactory,
        &[
            ("live_settings", str_("enc_live")),
            ("dred_ms", int(0)),
            ("expected_loss", int(0)),
        ],
        &res,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Encodes quantum `k` of `x`; returns the packet bytes.
fn step(enc: &mut Harness, x: &[f32], k: usize) -> Vec<u8> {
    enc.set_pcm_in(&x[k * Q..(k + 1) * Q]);
    enc.step();
    let out = capture(enc.frames_out());
    assert_eq!(out.len(), 1, "one 20 ms frame per 20 ms quantum");
    out[0].bytes.clone()
}

const LOUD: LiveOpusSettings = LiveOpusSettings {
    bitrate: 24_000,
    dred_ms: 0,
    expected_loss: 0,
    inband_fec: false,
};

#[test]
fn a_bitrate_change_applies_to_the_very_next_frame() {
    let cell = Arc::new(OpusLive::new());
    let mut enc = encoder(&cell);
    // Speech-like signal: packet size tracks the bit rate.
    let x = speechlike(48_000 * 4);
    let mut sizes = Vec::new();
    for k in 0..100 {
        if k == 50 {
            cell.set(LiveOpusSettings {
                bitrate: 6_000,
                ..LOUD
            })
            .unwrap();
        }
        sizes.push(step(&mut enc, &x, k).len());
    }
    assert_eq!(enc.counter("live_updates"), 1);
    assert_eq!(enc.counter("live_errors"), 0);
    let before = sizes[30..50].iter().sum::<usize>() / 20;
    // 6 kb/s is 15 bytes per 20 ms; allow VBR's swing.
    let first_after = sizes[50];
    assert!(before > 40, "24 kb/s frames average {before} bytes");
    assert!(
        first_after <= 30,
        "the first frame after the change is {first_after} bytes (before: {before})"
    );
    // And it stays there (VBR still spends more on syllable onsets).
    let after = sizes[51..].iter().sum::<usize>() / sizes[51..].len();
    assert!(
        after * 2 < before,
        "{after} vs {before}: {:?}",
        &sizes[51..]
    );
}

#[test]
fn dred_and_lbrr_switch_on_and_off_live() {
    let cell = Arc::new(OpusLive::new());
    let mut enc = encoder(&cell);
    let x = speechlike(48_000 * 6);
    let mut dred_dec = DredDecoder::new().unwrap();
    let mut dred = Dred::new().unwrap();
    let mut reach = |p: &[u8]| dred.parse(&mut dred_dec, p, 48_000).unwrap_or(0);
    let mut lbrr = Vec::new();
    let mut dred_reach = Vec::new();
    for k in 0..280 {
        match k {
            60 => cell
                .set(LiveOpusSettings {
                    dred_ms: 1000,
                    expected_loss: 20,
                    ..LOUD
                })
                .unwrap(),
            140 => cell
                .set(LiveOpusSettings {
                    expected_loss: 20,
                    inband_fec: true,
                    ..LOUD
                })
                .unwrap(),
            220 => cell.set(LOUD).unwrap(),
            _ => {}
        }
        let p = step(&mut enc, &x, k);
        lbrr.push(packet_has_lbrr(&p));
        dred_reach.push(reach(&p));
    }
    assert_eq!(enc.counter("live_updates"), 3);
    let any = |v: &[usize]| v.iter().any(|&r| r > 0);
    assert!(!any(&dred_reach[..60]), "no DRED before it is switched on");
    assert!(any(&dred_reach[60..140]), "DRED once switched on");
    assert!(
        !lbrr[..140].iter().any(|&l| l),
        "no LBRR before it is switched on"
    );
    assert!(lbrr[140..220].iter().any(|&l| l), "LBRR once switched on");
    // Off again: the frame after the change carries neither.
    assert!(!lbrr[221..].iter().any(|&l| l));
    assert!(!any(&dred_reach[221..]));
}

#[test]
fn a_controller_decision_drives_the_encoder() {
    let cell = Arc::new(OpusLive::new());
    let mut enc = encoder(&cell);
    let x = speechlike(48_000 * 2);
    let mut ctl = Controller::new(ControllerConfig::default(), 0);
    let d = ctl.poll(0).unwrap();
    cell.set(LiveOpusSettings::from(&d.settings)).unwrap();
    step(&mut enc, &x, 0);
    assert_eq!(enc.counter("live_updates"), 1);
    assert_eq!(cell.get().unwrap().dred_ms, d.settings.dred_ms);
    // Unchanged settings are not re-applied.
    cell.set(LiveOpusSettings::from(&d.settings)).unwrap();
    step(&mut enc, &x, 1);
    assert_eq!(enc.counter("live_updates"), 1);
}

#[test]
fn a_resource_of_another_type_fails_the_build_with_its_name() {
    let mut res = Resources::new();
    res.insert("nope", Arc::new(7u32));
    let e =
        Harness::try_with_resources(&OpusEncodeFactory, &[("live_settings", str_("nope"))], &res)
            .err()
            .expect("build fails");
    let msg = e.to_string();
    assert!(
        msg.contains("nope") && msg.contains("live_settings"),
        "{msg}"
    );
}

#[test]
fn applying_live_settings_is_real_time_safe() {
    let cell = Arc::new(OpusLive::new());
    let mut enc = encoder(&cell);
    let x = speechlike(48_000 * 3);
    let mut k = 0;
    assert_rt_safe("opus encode with live settings", 140, || {
        if k % 20 == 10 {
            let _ = cell.set(LiveOpusSettings {
                bitrate: if k % 40 == 10 { 12_000 } else { 24_000 },
                dred_ms: if k % 40 == 10 { 1000 } else { 0 },
                expected_loss: 20,
                inband_fec: k % 40 != 10,
            });
        }
        enc.set_pcm_in(&x[k * Q..(k + 1) * Q]);
        enc.step();
        k += 1;
    });
    assert_eq!(enc.counter("live_updates"), 7);
}
