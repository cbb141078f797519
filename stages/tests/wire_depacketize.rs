//! `wire.depacketize`: header to FrameMeta, bad input counted and dropped.

mod wire_support;

use std::sync::Arc;

use proptest::prelude::*;
use wire_support::*;
use wzp_engine::prelude::*;
use wzp_proto::{encode_packet, CodecId, Flags, MediaHeader, QualityReport, HEADER_LEN};
use wzp_stages::wire::QualityCell;

wzp_engine::install_alloc_checker!();

fn header() -> MediaHeader {
    MediaHeader {
        flags: Flags::TALKSPURT,
        codec: CodecId::OPUS,
        key_epoch: 0,
        sender_id: 0x0a0b_0c0d,
        seq: 258,
        timestamp: 0x0001_e000,
        fec_block: 51,
        fec_symbol: 4,
        fec_ratio: 50,
        fec_block_len: 0,
    }
}

fn packet(h: &MediaHeader, payload: &[u8], trailer: Option<&QualityReport>) -> Vec<u8> {
    let mut out = vec![0u8; 1500];
    let n = encode_packet(h, payload, trailer, &mut out).unwrap();
    out.truncate(n);
    out
}

/// An Opus packet whose TOC says SILK, 40 ms, one frame (config 10, code 0).
const OPUS_40MS: &[u8] = &[10 << 3, 0xbc, 0xde];

#[test]
fn frame_meta_comes_from_the_header_and_params() {
    let mut depack = build(
        "wire.depacketize",
        &[("duration_ms", i(60)), ("fec_source_symbols", i(5))],
    );
    let mut h2 = header();
    h2.flags = Flags::REPAIR;
    h2.fec_ratio = 0;
    let input = depack.packets_in();
    input
        .push(
            PacketMeta {
                arrival_ns: 123,
                ..Default::default()
            },
            &packet(&header(), OPUS_40MS, None),
        )
        .unwrap();
    input
        .push(PacketMeta::default(), &packet(&h2, b"", None))
        .unwrap();
    depack.cx.now_ns = 999;
    depack.step();
    let out: Vec<_> = depack.frames_out().iter().collect();
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0].meta,
        FrameMeta {
            seq: 258,
            timestamp: 0x0001_e000,
            stream: 0x0a0b_0c0d,
            codec: 1,
            flags: frame_flags::STREAM_START,
            // The packet's TOC says 40 ms; the param is for payloads that
            // do not say.
            duration_ms: 40,
            fec: FecTag {
                block: 51,
                symbol: 4,
                source_symbols: 5,
                ratio_percent: 50
            },
            arrival_ns: 123,
        }
    );
    assert_eq!(out[0].bytes(), OPUS_40MS);
    assert_eq!(out[1].meta.flags, frame_flags::REPAIR);
    assert_eq!(out[1].meta.duration_ms, 60, "a repair symbol: the param");
    assert_eq!(out[1].meta.fec.source_symbols, 0, "FEC off: no block shape");
    assert_eq!(out[1].meta.arrival_ns, 999, "0 means now");
    assert!(out[1].bytes().is_empty());
    assert_eq!(depack.counter("frames"), 2);
}

/// The compact-layout flag of a repair packet reaches the FEC decoder; on a
/// source packet it means nothing and is not passed on.
#[test]
fn compact_repair_flag_is_passed_on_with_repair_only() {
    let mut depack = build("wire.depacketize", &[]);
    let cases = [
        (
            Flags::REPAIR | Flags::COMPACT_REPAIR,
            frame_flags::REPAIR | frame_flags::COMPACT_REPAIR,
        ),
        (Flags::REPAIR, frame_flags::REPAIR),
        (Flags::COMPACT_REPAIR, 0),
    ];
    for (wire, frame) in cases {
        let mut h = header();
        h.flags = wire;
        let out = depack.run_packets_to_frames(&[packet(&h, b"sym", None)]);
        let flags: Vec<u8> = out.iter().map(|(m, _)| m.flags).collect();
        assert_eq!(flags, [frame], "{wire:?}");
    }
}

/// A sender may change frame size at any packet (the adaptive encoder moves
/// between 20 and 40 ms frames with its tier): each frame's length comes
/// from its own payload, or a jitter buffer would play 40 ms frames one per
/// 20 ms period.
#[test]
fn frame_duration_comes_from_each_payload_and_the_param_only_when_it_cannot() {
    let mut depack = build("wire.depacketize", &[("duration_ms", i(30))]);
    let with = |codec: CodecId, payload: &[u8]| {
        let mut h = header();
        h.codec = codec;
        packet(&h, payload, None)
    };
    let cases: &[(Vec<u8>, u8, &str)] = &[
        (with(CodecId::OPUS, &[9 << 3, 1, 2]), 20, "Opus SILK 20 ms"),
        (with(CodecId::OPUS, OPUS_40MS), 40, "Opus SILK 40 ms"),
        (
            with(CodecId::OPUS, &[31 << 3 | 1, 5]),
            40,
            "Opus 2 x CELT 20 ms",
        ),
        (
            with(CodecId::OPUS, &[11 << 3 | 3, 2, 0]),
            120,
            "Opus 2 x SILK 60 ms",
        ),
        (with(CodecId::CODEC2_3200, &[7; 8]), 20, "Codec2 3200"),
        (with(CodecId::CODEC2_1200, &[7; 6]), 40, "Codec2 1200"),
        (
            with(CodecId::OPUS, &[]),
            30,
            "empty Opus payload: the param",
        ),
        (
            with(CodecId::OPUS, &[31 << 3 | 3]),
            30,
            "truncated code 3 packet: the param",
        ),
        (
            with(CodecId::OPUS, &[28 << 3]),
            30,
            "2.5 ms, no whole ms: the param",
        ),
        (
            with(CodecId(0x99), &[9 << 3]),
            30,
            "unknown codec: the param",
        ),
    ];
    let packets: Vec<Vec<u8>> = cases.iter().map(|(p, _, _)| p.clone()).collect();
    let frames = depack.run_packets_to_frames(&packets);
    assert_eq!(frames.len(), cases.len());
    for ((meta, _), (_, want, what)) in frames.iter().zip(cases) {
        assert_eq!(meta.duration_ms, *want, "{what}");
    }
}

#[test]
fn quality_trailer_goes_to_gauges_and_cell_not_payload() {
    let cell = Arc::new(QualityCell::new());
    let mut res = Resources::new();
    res.insert("qr", cell.clone());
    let mut depack = build_with("wire.depacketize", &[("quality_report", s("qr"))], &res);
    let report = QualityReport {
        loss_pct: 3,
        rtt_4ms: 20,
        jitter_ms: 12,
        bitrate_cap_kbps: 32,
    };
    let frames = depack.run_packets_to_frames(&[packet(&header(), b"xyz", Some(&report))]);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].1, b"xyz");
    assert_eq!(depack.gauge("qr_loss_pct"), 3);
    assert_eq!(depack.gauge("qr_rtt_ms"), 80);
    assert_eq!(depack.gauge("qr_jitter_ms"), 12);
    assert_eq!(depack.gauge("qr_bitrate_cap_kbps"), 32);
    assert_eq!(depack.counter("quality_reports"), 1);
    assert_eq!(cell.get(), Some(report));
}

#[test]
fn bad_input_table() {
    let good = packet(&header(), b"ok", None);
    let with = |i: usize, v: u8| {
        let mut p = good.clone();
        p[i] = v;
        p
    };
    let mut qr_flag_no_room = packet(&header(), b"abc", None);
    qr_flag_no_room[1] |= Flags::QUALITY_REPORT.bits();
    let mut loss_over_100 = packet(&header(), b"ok", Some(&QualityReport::default()));
    let n = loss_over_100.len();
    loss_over_100[n - 4] = 101;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", vec![1]),
        ("header minus one", good[..HEADER_LEN - 1].to_vec()),
        ("version 0", with(0, 0)),
        ("version 2", with(0, 2)),
        ("reserved flag 0x20", with(1, 0x20)),
        ("reserved flag 0x80", with(1, 0x80)),
        ("trailer flag, 3 bytes left", qr_flag_no_room),
        ("trailer loss 101%", loss_over_100),
    ];
    let mut depack = build("wire.depacketize", &[]);
    for (name, bytes) in &cases {
        let before = depack.counter("malformed");
        let frames = depack.run_packets_to_frames(&[bytes.clone(), good.clone()]);
        assert_eq!(depack.counter("malformed"), before + 1, "{name}");
        assert_eq!(frames.len(), 1, "{name}: the good packet still passes");
        assert_eq!(frames[0].1, b"ok");
    }
    assert_eq!(depack.counter("frames"), cases.len() as u64);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_are_accounted(
        packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..20)
    ) {
        let mut depack = build("wire.depacketize", &[]);
        let frames = depack.run_packets_to_frames(&packets);
        // Every packet is one of: malformed, a frame, a feedback report
        // (codec 0x40, which never goes to `out`), or a source frame with a
        // repair riding in it (codec 0x41: two frames).
        prop_assert_eq!(
            depack.counter("malformed") + depack.counter("frames") - depack.counter("riding")
                + depack.counter("feedback"),
            packets.len() as u64
        );
        prop_assert_eq!(frames.len() as u64, depack.counter("frames"));
    }
}

#[test]
fn depacketize_is_rt_safe() {
    let cell = Arc::new(QualityCell::new());
    let mut res = Resources::new();
    res.insert("qr", cell);
    let mut depack = build_with("wire.depacketize", &[("quality_report", s("qr"))], &res);
    let input = depack.packets_in();
    for n in 0..BATCH {
        let bytes = match n % 3 {
            0 => packet(&header(), &[n as u8; 100], None),
            1 => packet(&header(), &[n as u8; 10], Some(&QualityReport::default())),
            _ => vec![2; n],
        };
        input.push(PacketMeta::default(), &bytes).unwrap();
    }
    wzp_engine::rt_check::assert_rt_safe("wire.depacketize", 20, || depack.step());
    assert!(depack.counter("frames") > 0);
    assert!(depack.counter("malformed") > 0);
}

/// A feedback report (codec 0x40) is counted as `feedback`, never as a frame,
/// and never reaches `out` (an unlinked `feedback` port drops it). This is
/// the case the accounting property once missed (found by proptest in CI).
#[test]
fn a_feedback_report_is_accounted_apart_from_frames() {
    let mut depack = build("wire.depacketize", &[]);
    let mut fb = header();
    fb.codec = CodecId::FEEDBACK;
    let frames = depack
        .run_packets_to_frames(&[packet(&fb, &[0; 19], None), packet(&header(), b"ok", None)]);
    assert_eq!(depack.counter("feedback"), 1);
    assert_eq!(depack.counter("frames"), 1);
    assert_eq!(depack.counter("malformed"), 0);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].1, b"ok");
}
