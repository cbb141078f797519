//! Any byte stream, pushed in fuzzer-chosen chunks: the decoder never panics,
//! and every message it yields re-encodes and decodes to itself. Every
//! decoded message is also fed to the signal plane's parsers of outside input
//! (presence registration check, the callee's offer reader, both direct-call
//! state machines), which must refuse or ignore it without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_proto::direct_call::{IncomingCall, OutgoingCall};
use wzp_proto::handshake::EphemeralKey;
use wzp_proto::presence::{verify_registration, PresenceClient};
use wzp_proto::signal::{decode_message, encode_frame, read_frame, AcceptMode, FrameDecoder, SignalMessage};
use wzp_proto::{Decoded, Seed, SignalError, TlsFingerprint};

fn signal_plane(m: &SignalMessage) {
    let relay = TlsFingerprint([7; 32]);
    let _ = verify_registration(m, &relay, &[1; 32]);
    let me = Seed::from_bytes([2; 32]).identity();
    let _ = PresenceClient::new(&me, relay, None).handle(m);
    if let Ok(mut inc) = IncomingCall::from_offer(m) {
        let _ = inc.accept(&me, EphemeralKey::from_bytes([3; 32]), AcceptMode::AcceptGeneric, None);
        let _ = inc.handle(m);
    }
    let peer = Seed::from_bytes([4; 32]).identity().fingerprint();
    // A call whose id matches whatever the message names, so it is not ignored.
    let call_id = match m {
        SignalMessage::DirectCallAnswer { call_id, .. }
        | SignalMessage::CallSetup { call_id, .. }
        | SignalMessage::CallRinging { call_id, .. } => call_id.clone(),
        SignalMessage::Hangup { call_id: Some(c), .. }
        | SignalMessage::CallConfirm { call_id: Some(c), .. } => c.clone(),
        _ => "f".into(),
    };
    if let Ok(mut out) = OutgoingCall::start(&me, EphemeralKey::from_bytes([5; 32]), call_id, peer, None) {
        let _ = out.handle(m);
        let _ = out.handle(m);
    }
}

fn check(decoded: &Decoded) {
    if let Decoded::Message(m) = decoded {
        signal_plane(m);
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
