//! Any byte stream on a federation link, pushed in fuzzer-chosen chunks: the
//! decoder never panics, every message it yields keeps the bounds and
//! re-encodes to itself, and the same bytes read as a forwarded media
//! datagram parse or are refused without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_proto::federation::{
    decode_federation_message, encode_federation_frame, parse_forwarded, FederationDecoder,
    FederationMessage, FORWARD_TAG_LEN, MAX_MEDIA_HOPS,
};

fn check(m: &FederationMessage) {
    m.validate().expect("a decoded message keeps the bounds");
    let frame = encode_federation_frame(m).expect("a decoded message re-encodes");
    let again = decode_federation_message(&frame[4..]).expect("a re-encoded message decodes");
    assert_eq!(&again, m);
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut dec = FederationDecoder::new();
    'outer: for piece in stream.chunks(chunk) {
        if dec.push(piece).is_err() {
            break;
        }
        loop {
            match dec.next_message() {
                Ok(Some(m)) => check(&m),
                Ok(None) => break,
                Err(e) if e.is_fatal() => break 'outer,
                Err(_) => {}
            }
        }
    }
    let _ = dec.finish();

    if let Ok(m) = decode_federation_message(stream) {
        check(&m);
    }

    if let Ok(f) = parse_forwarded(stream) {
        assert!(f.tag.hops < MAX_MEDIA_HOPS);
        assert_eq!(f.packet, &stream[FORWARD_TAG_LEN..]);
        let mut out = [0u8; FORWARD_TAG_LEN];
        f.tag.write(&mut out).expect("room for the tag");
        assert_eq!(&out[..], &stream[..FORWARD_TAG_LEN]);
    }
});
