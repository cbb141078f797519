//! Media header: round-trips, bad input, trailer splitting, nonce and AAD.

use proptest::prelude::*;
use wzp_proto::media::{Aad, NONCE_LEN};
use wzp_proto::{
    encode_packet, split_trailer, CodecId, Flags, MediaHeader, MediaPacket, QualityReport,
    WireError, HEADER_LEN, TRAILER_LEN,
};

fn arb_header() -> impl Strategy<Value = MediaHeader> {
    (
        0u8..=0x1f,
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(
            |(
                flags,
                codec,
                key_epoch,
                sender_id,
                seq,
                timestamp,
                fec_block,
                fec_symbol,
                fec_ratio,
                fec_block_len,
            )| {
                MediaHeader {
                    flags: Flags::from_bits(flags).unwrap(),
                    codec: CodecId(codec),
                    key_epoch,
                    sender_id,
                    seq,
                    timestamp,
                    fec_block,
                    fec_symbol,
                    fec_ratio,
                    fec_block_len,
                }
            },
        )
}

fn arb_report() -> impl Strategy<Value = QualityReport> {
    (0u8..=100, any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(l, r, j, b)| QualityReport {
        loss_pct: l,
        rtt_4ms: r,
        jitter_ms: j,
        bitrate_cap_kbps: b,
    })
}

proptest! {
    #[test]
    fn header_round_trips_every_field(h in arb_header(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut buf = vec![0u8; HEADER_LEN + payload.len()];
        prop_assert_eq!(h.encode_into(&mut buf).unwrap(), HEADER_LEN);
        buf[HEADER_LEN..].copy_from_slice(&payload);
        if h.has_quality_report() && payload.len() < TRAILER_LEN {
            prop_assert_eq!(MediaHeader::parse(&buf), Err(WireError::TrailerTooShort { have: payload.len() }));
        } else {
            let (parsed, rest) = MediaHeader::parse(&buf).unwrap();
            prop_assert_eq!(parsed, h);
            prop_assert_eq!(rest, &payload[..]);
        }
        prop_assert_eq!(&h.to_bytes()[..], &buf[..HEADER_LEN]);
    }

    #[test]
    fn packet_round_trips_with_and_without_trailer(
        h in arb_header(),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        report in proptest::option::of(arb_report()),
    ) {
        let mut buf = [0u8; 512];
        let n = encode_packet(&h, &payload, report.as_ref(), &mut buf).unwrap();
        prop_assert_eq!(n, HEADER_LEN + payload.len() + if report.is_some() { TRAILER_LEN } else { 0 });
        let pkt = MediaPacket::parse(&buf[..n]).unwrap();
        let mut expected = h;
        expected.flags = expected.flags.with(Flags::QUALITY_REPORT, report.is_some());
        prop_assert_eq!(pkt.header, expected);
        prop_assert_eq!(pkt.payload, &payload[..]);
        prop_assert_eq!(pkt.trailer, report);
        prop_assert_eq!(&pkt.header_bytes[..], &buf[..HEADER_LEN]);
        let aad = pkt.associated_data();
        prop_assert_eq!(aad.as_bytes().len(), HEADER_LEN + if report.is_some() { TRAILER_LEN } else { 0 });
        prop_assert_eq!(&aad.as_bytes()[..HEADER_LEN], &buf[..HEADER_LEN]);
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = MediaPacket::parse(&bytes);
    }

    #[test]
    fn nonce_is_unique_per_sender_direction_kind_epoch_seq_and_repair_symbol(a in arb_header(), b in arb_header()) {
        // A repair symbol shares its block's last source seq: its symbol
        // number (never 0 for repair) keeps the nonce apart.
        let key = |h: &MediaHeader| (
            h.sender_id,
            h.flags.contains(Flags::FROM_RESPONDER),
            // Feedback reports count their own seq.
            h.is_feedback(),
            h.key_epoch,
            h.seq,
            if h.is_repair() { h.fec_symbol } else { 0 },
        );
        prop_assert_eq!(a.nonce() == b.nonce(), key(&a) == key(&b));
        prop_assert_eq!(a.nonce().len(), NONCE_LEN);
    }
}

fn valid() -> [u8; HEADER_LEN] {
    MediaHeader {
        seq: 1,
        ..Default::default()
    }
    .to_bytes()
}

#[test]
fn bad_input_table() {
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = valid().to_vec();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Vec<u8>, WireError)> = vec![
        (
            "empty",
            vec![],
            WireError::TooShort {
                need: HEADER_LEN,
                have: 0,
            },
        ),
        (
            "one byte",
            vec![1],
            WireError::TooShort {
                need: HEADER_LEN,
                have: 1,
            },
        ),
        (
            "one short of a header",
            valid()[..HEADER_LEN - 1].to_vec(),
            WireError::TooShort {
                need: HEADER_LEN,
                have: HEADER_LEN - 1,
            },
        ),
        (
            "version 0",
            with(&|v| v[0] = 0),
            WireError::UnsupportedVersion(0),
        ),
        (
            "version 2",
            with(&|v| v[0] = 2),
            WireError::UnsupportedVersion(2),
        ),
        (
            "version 0xff",
            with(&|v| v[0] = 0xff),
            WireError::UnsupportedVersion(0xff),
        ),
        (
            "reserved flag bit 5",
            with(&|v| v[1] = 0x20),
            WireError::ReservedFlags(0x20),
        ),
        (
            "reserved flag bit 7 with known bits",
            with(&|v| v[1] = 0x81),
            WireError::ReservedFlags(0x81),
        ),
        (
            "trailer flag, no bytes after header",
            with(&|v| v[1] = Flags::QUALITY_REPORT.bits()),
            WireError::TrailerTooShort { have: 0 },
        ),
        (
            "trailer flag, three bytes after header",
            with(&|v| {
                v[1] = Flags::QUALITY_REPORT.bits();
                v.extend_from_slice(&[0, 0, 0]);
            }),
            WireError::TrailerTooShort { have: 3 },
        ),
        (
            "trailer loss above 100",
            with(&|v| {
                v[1] = Flags::QUALITY_REPORT.bits();
                v.extend_from_slice(&[0xaa, 101, 1, 1, 1]);
            }),
            WireError::LossOutOfRange(101),
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(
            MediaPacket::parse(&bytes).map(|p| p.header),
            Err(expected),
            "case {name:?}"
        );
    }
}

#[test]
fn trailer_of_exactly_four_bytes_means_empty_payload() {
    let h = MediaHeader {
        flags: Flags::QUALITY_REPORT,
        ..Default::default()
    };
    let mut buf = h.to_bytes().to_vec();
    buf.extend_from_slice(&[5, 10, 3, 64]);
    let (header, rest) = MediaHeader::parse(&buf).unwrap();
    let (payload, trailer) = split_trailer(&header, rest).unwrap();
    assert!(payload.is_empty());
    let t = trailer.unwrap();
    assert_eq!(
        (t.loss_pct, t.rtt_ms(), t.jitter_ms, t.bitrate_cap_kbps),
        (5, 40, 3, 64)
    );
}

#[test]
fn split_trailer_without_flag_returns_everything_as_payload() {
    let h = MediaHeader::default();
    assert_eq!(
        split_trailer(&h, &[1, 2, 3]).unwrap(),
        (&[1u8, 2, 3][..], None)
    );
}

#[test]
fn encode_into_short_buffer_fails_without_writing() {
    let mut buf = [0xeeu8; HEADER_LEN - 1];
    assert_eq!(
        MediaHeader::default().encode_into(&mut buf),
        Err(WireError::BufferTooSmall {
            need: HEADER_LEN,
            have: HEADER_LEN - 1
        })
    );
    assert!(buf.iter().all(|&b| b == 0xee));
    let mut small = [0u8; 30];
    assert_eq!(
        encode_packet(
            &MediaHeader::default(),
            &[0; 8],
            Some(&QualityReport::default()),
            &mut small
        ),
        Err(WireError::BufferTooSmall { need: 34, have: 30 })
    );
}

#[test]
fn quality_report_from_measurements_saturates() {
    let r = QualityReport::from_measurements(150.0, 5000, 999, 100_000);
    assert_eq!(r.loss_pct, 100);
    assert_eq!(r.rtt_4ms, 255);
    assert_eq!(r.jitter_ms, 255);
    assert_eq!(r.bitrate_cap_kbps, 255);
    let r = QualityReport::from_measurements(f32::NAN, 41, 7, 24);
    assert_eq!((r.loss_pct, r.rtt_4ms, r.rtt_ms()), (0, 11, 44));
}

#[test]
fn codec_names_round_trip() {
    for c in [
        CodecId::OPUS,
        CodecId::CODEC2_3200,
        CodecId::CODEC2_1200,
        CodecId::COMFORT_NOISE,
        CodecId::PCM_S16LE,
    ] {
        assert_eq!(CodecId::from_name(c.name().unwrap()), Some(c));
    }
    assert_eq!(CodecId(0xee).name(), None);
    assert_eq!(format!("{:?}", CodecId(0xee)), "CodecId(0xee)");
}

#[test]
fn aad_without_trailer_is_the_header() {
    let h = MediaHeader::default().to_bytes();
    assert_eq!(Aad::new(&h, None).as_bytes(), &h[..]);
}

#[test]
fn flags_debug_lists_names() {
    assert_eq!(
        format!("{:?}", Flags::REPAIR | Flags::TALKSPURT),
        "Flags(REPAIR | TALKSPURT)"
    );
}
