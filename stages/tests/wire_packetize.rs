//! `wire.packetize`: header fields from FrameMeta, params, trailer, drops.

mod wire_support;

use std::sync::Arc;

use wire_support::*;
use wzp_engine::prelude::*;
use wzp_proto::{CodecId, Flags, MediaHeader, MediaPacket, QualityReport, HEADER_LEN};
use wzp_stages::wire::packetize::MAX_PAYLOAD;
use wzp_stages::wire::QualityCell;

wzp_engine::install_alloc_checker!();

fn full_meta() -> FrameMeta {
    FrameMeta {
        seq: 0xdead_beef,
        timestamp: 0x0102_0304,
        stream: 99,
        codec: 0x10,
        flags: frame_flags::REPAIR | frame_flags::STREAM_START | frame_flags::DTX,
        duration_ms: 40,
        fec: FecTag {
            block: 0xabcd,
            symbol: 0x1234,
            source_symbols: 5,
            ratio_percent: 50,
        },
        arrival_ns: 77,
    }
}

#[test]
fn header_fields_come_from_frame_meta_and_params() {
    let mut pack = build(
        "wire.packetize",
        &[
            ("sender_id", i(0x0a0b_0c0d)),
            ("key_epoch", i(3)),
            ("direction", s("responder")),
        ],
    );
    let out = pack.run_frames(&[(full_meta(), b"opus bytes".to_vec())]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), HEADER_LEN + 10);
    let packet = MediaPacket::parse(&out[0]).unwrap();
    assert_eq!(
        packet.header,
        MediaHeader {
            flags: Flags::REPAIR | Flags::TALKSPURT | Flags::FROM_RESPONDER,
            codec: CodecId(0x10),
            key_epoch: 3,
            sender_id: 0x0a0b_0c0d,
            seq: 0xdead_beef,
            timestamp: 0x0102_0304,
            fec_block: 0xabcd,
            fec_symbol: 0x1234,
            fec_ratio: 50,
            fec_block_len: 5,
        }
    );
    assert_eq!(packet.payload, b"opus bytes");
    assert_eq!(packet.trailer, None);
    assert_eq!(pack.packets_out().get(0).unwrap().meta.stream, 0x0a0b_0c0d);
    assert_eq!(pack.counter("packets"), 1);
    assert_eq!(pack.gauge("sender_id"), 0x0a0b_0c0d);
}

#[test]
fn initiator_clears_direction_and_plain_frames_have_no_flags() {
    let mut pack = build("wire.packetize", &[("sender_id", i(5))]);
    let (meta, payload) = frame(1, 3);
    let out = pack.run_frames(&[(meta, payload)]);
    let (h, _) = MediaHeader::parse(&out[0]).unwrap();
    assert_eq!(h.flags, Flags::empty());
    assert_eq!(h.key_epoch, 0);
}

#[test]
fn sender_id_zero_takes_the_frame_stream() {
    let mut pack = build("wire.packetize", &[("sender_id", i(0))]);
    let mut a = frame(1, 3);
    a.0.stream = 1234;
    let mut b = frame(2, 3);
    b.0.stream = 4321;
    let out = pack.run_frames(&[a, b]);
    let ids: Vec<u32> = out
        .iter()
        .map(|p| MediaHeader::parse(p).unwrap().0.sender_id)
        .collect();
    assert_eq!(ids, [1234, 4321]);
}

#[test]
fn default_sender_id_is_random_per_build() {
    let ids: Vec<u32> = (0..4)
        .map(|_| {
            let mut pack = build("wire.packetize", &[]);
            let out = pack.run_frames(&[frame(1, 3)]);
            let id = MediaHeader::parse(&out[0]).unwrap().0.sender_id;
            assert_eq!(pack.gauge("sender_id"), i64::from(id));
            assert_ne!(id, 0);
            assert_ne!(id, wzp_proto::RECEIVER_ENTRY_ID);
            id
        })
        .collect();
    // Four draws of 32 bits: a repeat has probability about 1.4e-9.
    for (k, a) in ids.iter().enumerate() {
        assert!(!ids[k + 1..].contains(a), "random ids repeated: {ids:?}");
    }
}

#[test]
fn quality_trailer_rides_on_every_nth_packet_once_a_report_exists() {
    let cell = Arc::new(QualityCell::new());
    let mut res = Resources::new();
    res.insert("qr", cell.clone());
    let mut pack = build_with(
        "wire.packetize",
        &[
            ("sender_id", i(1)),
            ("quality_report", s("qr")),
            ("quality_every", i(3)),
        ],
        &res,
    );
    // No report yet: no trailer even when due.
    let out = pack.run_frames(&[frame(0, 5)]);
    assert!(MediaPacket::parse(&out[0]).unwrap().trailer.is_none());

    let report = QualityReport::from_measurements(3.0, 80, 12, 32);
    cell.set(report);
    let frames: Vec<_> = (1..=6).map(|n| frame(n, 5)).collect();
    let out = pack.run_frames(&frames);
    let with_trailer: Vec<bool> = out
        .iter()
        .map(|p| {
            let packet = MediaPacket::parse(p).unwrap();
            assert_eq!(packet.payload.len(), 5, "trailer is not payload");
            assert_eq!(packet.header.has_quality_report(), packet.trailer.is_some());
            if let Some(t) = packet.trailer {
                assert_eq!(t, report);
            }
            packet.trailer.is_some()
        })
        .collect();
    // Packets 1..=6 of the stage's count; the 3rd and 6th are due.
    assert_eq!(with_trailer, [false, false, true, false, false, true]);
    assert_eq!(pack.counter("quality_reports"), 2);
}

#[test]
fn missing_frames_are_skipped_and_oversize_frames_dropped() {
    let mut pack = build("wire.packetize", &[("sender_id", i(1))]);
    let mut missing = frame(1, 0);
    missing.0.flags = frame_flags::MISSING;
    let largest = frame(2, MAX_PAYLOAD);
    let too_large = frame(3, MAX_PAYLOAD + 1);
    let out = pack.run_frames(&[missing, largest, too_large]);
    assert_eq!(out.len(), 1);
    assert_eq!(MediaHeader::parse(&out[0]).unwrap().0.seq, 2);
    assert_eq!(out[0].len() + wzp_stages::crypto::TAG_LEN, MAX_ITEM_BYTES);
    assert_eq!(pack.counter("skipped_missing"), 1);
    assert_eq!(pack.counter("oversize_drops"), 1);
    assert_eq!(pack.counter("packets"), 1);
}

#[test]
fn oversize_limit_accounts_for_the_trailer() {
    let cell = Arc::new(QualityCell::new());
    cell.set(QualityReport::default());
    let mut res = Resources::new();
    res.insert("qr", cell);
    let mut pack = build_with(
        "wire.packetize",
        &[
            ("sender_id", i(1)),
            ("quality_report", s("qr")),
            ("quality_every", i(1)),
        ],
        &res,
    );
    let out = pack.run_frames(&[frame(1, MAX_PAYLOAD - 4), frame(2, MAX_PAYLOAD - 3)]);
    assert_eq!(out.len(), 1);
    assert_eq!(pack.counter("oversize_drops"), 1);
}

#[test]
fn bad_params_are_refused_with_the_param_named() {
    let cases: &[(&str, ParamValue, &str)] = &[
        ("sender_id", i(-2), "sender_id"),
        ("sender_id", i(1 << 32), "sender_id"),
        // A feedback report's entry under it is the receiver's own.
        ("sender_id", i(u32::MAX as i64), "sender_id"),
        ("key_epoch", i(256), "key_epoch"),
        ("direction", s("sideways"), "direction"),
        ("quality_report", s("nope"), "quality_report"),
        ("quality_every", i(0), "quality_every"),
    ];
    for (name, value, want) in cases {
        let err = try_build(
            "wire.packetize",
            &[(name, value.clone())],
            &Resources::new(),
        )
        .err()
        .unwrap_or_else(|| panic!("{name} = {value} should be refused"));
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
}

#[test]
fn packetize_is_rt_safe() {
    let cell = Arc::new(QualityCell::new());
    cell.set(QualityReport::default());
    let mut res = Resources::new();
    res.insert("qr", cell);
    let mut pack = build_with(
        "wire.packetize",
        &[("quality_report", s("qr")), ("quality_every", i(2))],
        &res,
    );
    let input = pack.frames_in();
    for n in 0..BATCH as u32 {
        let (mut m, p) = frame(n, 60 + n as usize);
        if n % 7 == 0 {
            m.flags = frame_flags::MISSING;
        }
        input.push(m, &p).unwrap();
    }
    wzp_engine::rt_check::assert_rt_safe("wire.packetize", 20, || pack.step());
    assert!(pack.counter("packets") > 0);
    assert!(pack.counter("quality_reports") > 0);
}

/// A repair frame in the compact symbol layout says so in its header; the
/// flag means nothing without `REPAIR` and is not written then.
#[test]
fn compact_repair_flag_is_written_on_repair_only() {
    let mut pack = build("wire.packetize", &[("sender_id", i(7))]);
    let cases = [
        (
            frame_flags::REPAIR | frame_flags::COMPACT_REPAIR,
            Flags::REPAIR | Flags::COMPACT_REPAIR,
        ),
        (frame_flags::REPAIR, Flags::REPAIR),
        (frame_flags::COMPACT_REPAIR, Flags::empty()),
    ];
    for (frame, wire) in cases {
        let meta = FrameMeta {
            flags: frame,
            ..full_meta()
        };
        let out = pack.run_frames(&[(meta, b"sym".to_vec())]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            MediaPacket::parse(&out[0]).unwrap().header.flags,
            wire,
            "{frame:#x}"
        );
    }
}
