//! Any datagram: parsing never panics, and whatever parses re-encodes to the
//! same bytes; a feedback report's nonce is apart from every media nonce;
//! the payload's frame length reads without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_proto::{encode_packet, MediaHeader, MediaPacket, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(pkt) = MediaPacket::parse(data) else {
        return;
    };
    assert_eq!(&pkt.header.to_bytes()[..], &data[..HEADER_LEN]);
    let mut out = vec![0u8; data.len()];
    let n = encode_packet(&pkt.header, pkt.payload, pkt.trailer.as_ref(), &mut out)
        .expect("a parsed packet re-encodes into the same length");
    assert_eq!(&out[..n], data);
    let (h, rest) = MediaHeader::parse(data).expect("header parsed once already");
    assert_eq!(h, pkt.header);
    assert_eq!(rest.len(), data.len() - HEADER_LEN);
    // Feedback reports count their own seq: their nonces carry a bit no
    // media nonce has (docs/WIRE.md §1.3).
    let nonce = pkt.header.nonce();
    assert_eq!(
        nonce[4] & wzp_proto::NONCE_FEEDBACK != 0,
        pkt.header.is_feedback()
    );
    let _ = pkt.associated_data();
    // A payload's own length (what depacketize writes as the frame's
    // duration): never panics, never beyond what one Opus packet holds; a
    // Codec2 payload (several frames back to back) counts whole 20 ms frames.
    if let Some(n) = pkt.header.codec.frame_samples(pkt.payload) {
        assert!(n > 0 && (n <= 5_760 || pkt.header.codec == wzp_proto::CodecId::PCM_S16LE));
        if (0x10..=0x15).contains(&pkt.header.codec.0) {
            assert!(n % 960 == 0 && !pkt.payload.is_empty());
        }
    }
});
