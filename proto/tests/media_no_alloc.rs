//! The real-time path: header encode/parse and packet splitting never allocate.

use assert_no_alloc::{assert_no_alloc, violation_count, AllocDisabler};
use wzp_proto::{encode_packet, CodecId, Flags, MediaHeader, MediaPacket, QualityReport};

#[global_allocator]
static ALLOC: AllocDisabler = AllocDisabler;

#[test]
fn encode_and_parse_do_not_allocate() {
    let before = violation_count();
    let mut buf = [0u8; 256];
    let payload = [7u8; 100];
    let report = QualityReport::from_measurements(2.0, 80, 5, 32);
    let total = assert_no_alloc(|| {
        let mut total = 0usize;
        for seq in 0..1000u32 {
            let h = MediaHeader {
                flags: Flags::REPAIR,
                codec: CodecId::OPUS,
                seq,
                ..Default::default()
            };
            let n = encode_packet(&h, &payload, Some(&report), &mut buf).unwrap();
            let pkt = MediaPacket::parse(&buf[..n]).unwrap();
            total += pkt.payload.len() + pkt.associated_data().as_bytes().len();
            total += pkt.header.nonce()[11] as usize;
            // Errors must not allocate either.
            total += usize::from(MediaPacket::parse(&buf[..3]).is_err());
        }
        total
    });
    assert!(total > 0);
    assert_eq!(violation_count() - before, 0, "media path allocated");
}

#[test]
fn feedback_encode_and_parse_do_not_allocate() {
    use wzp_proto::feedback::{feedback_len, MAX_FEEDBACK_ENTRIES};
    use wzp_proto::{encode_feedback, FeedbackEntry, FeedbackReport};
    let before = violation_count();
    let mut entries = [FeedbackEntry::default(); MAX_FEEDBACK_ENTRIES];
    for (i, e) in entries.iter_mut().enumerate() {
        e.sender_id = i as u32;
        e.expected = 50;
        e.received = 45;
    }
    let mut buf = [0u8; feedback_len(MAX_FEEDBACK_ENTRIES)];
    let total = assert_no_alloc(|| {
        let mut total = 0usize;
        for k in 0..200u16 {
            let n = encode_feedback(k, &entries, &mut buf).unwrap();
            let r = FeedbackReport::parse(&buf[..n]).unwrap();
            total += r.entries().map(|e| usize::from(e.received)).sum::<usize>();
            total += usize::from(r.entry_for(31).is_some());
            // Errors must not allocate either.
            total += usize::from(FeedbackReport::parse(&buf[..n - 1]).is_err());
        }
        total
    });
    assert!(total > 0);
    assert_eq!(violation_count() - before, 0, "feedback path allocated");
}

#[test]
fn forwarded_media_tag_write_and_parse_do_not_allocate() {
    use wzp_proto::federation::{
        parse_forwarded, ForwardTag, RelayId, RoomId, FORWARD_TAG_LEN, MAX_MEDIA_HOPS,
    };
    let tag = ForwardTag {
        hops: 2,
        room: RoomId::of_name("general"),
        origin: RelayId([9; 8]),
    };
    let mut dgram = [0u8; 256];
    let n = encode_packet(
        &MediaHeader {
            sender_id: 5,
            seq: 77,
            ..Default::default()
        },
        &[1u8; 60],
        None,
        &mut dgram[FORWARD_TAG_LEN..],
    )
    .unwrap();
    let before = violation_count();
    let seen = assert_no_alloc(|| {
        let mut seen = 0u64;
        for hops in 0..=MAX_MEDIA_HOPS {
            ForwardTag { hops, ..tag }.write(&mut dgram).unwrap();
            match parse_forwarded(&dgram[..FORWARD_TAG_LEN + n]) {
                Ok(f) => seen += u64::from(f.seq) + u64::from(f.tag.hops),
                // The refusal at the hop limit must not allocate either.
                Err(_) => seen += 1000,
            }
        }
        seen
    });
    assert_eq!(seen, 77 * 8 + (0..8).sum::<u64>() + 1000);
    assert_eq!(
        violation_count() - before,
        0,
        "forwarded-media path allocated"
    );
}
