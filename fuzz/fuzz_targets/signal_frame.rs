//! Any byte stream, pushed in fuzzer-chosen chunks: the decoder never panics,
//! and every message it yields re-encodes and decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_proto::signal::{decode_message, encode_frame, read_frame, FrameDecoder};
use wzp_proto::{Decoded, SignalError};

fn check(decoded: &Decoded) {
    if let Decoded::Message(m) = decoded {
        match encode_frame(m) {
            Ok(frame) => {
                let again = decode_message(&frame[4..]).expect("re-encoded message decodes");
                assert_eq!(&again, decoded);
            }
            // Messages carrying an unknown inner variant, or padded past the
            // limit by escaping, are not re-encodable; that is allowed.
            Err(SignalError::Encode(_)) | Err(SignalError::FrameTooLarge { .. }) => {}
            Err(e) => panic!("unexpected encode error {e}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte picks the chunk size so split frames are explored too.
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut dec = FrameDecoder::new();
    'outer: for piece in stream.chunks(chunk) {
        if dec.push(piece).is_err() {
            break;
        }
        loop {
            match dec.next_frame() {
                Ok(Some(d)) => check(&d),
                Ok(None) => break,
                Err(e) if e.is_fatal() => break 'outer,
                Err(_) => {}
            }
        }
    }
    let _ = dec.finish();

    // The blocking reader over the same bytes.
    let mut cur = std::io::Cursor::new(stream);
    for _ in 0..1024 {
        match read_frame(&mut cur) {
            Ok(Some(d)) => check(&d),
            Ok(None) => break,
            Err(e) if e.is_fatal() => break,
            Err(_) => {}
        }
    }

    // The whole input as one JSON body.
    if let Ok(d) = decode_message(stream) {
        check(&d);
    }
});
