//! Attacker-controlled handshake messages: parsing and verification never
//! panic, and nothing forged is ever accepted.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wzp_proto::handshake::{
    EphemeralKey, HandshakeFinish, HandshakeInit, HandshakeResponse, Initiator, Responder,
};
use wzp_proto::{Identity, Seed};

fn identities() -> &'static (Identity, Identity) {
    static IDS: OnceLock<(Identity, Identity)> = OnceLock::new();
    IDS.get_or_init(|| {
        (
            Seed::from_bytes([1; 32]).identity(),
            Seed::from_bytes([2; 32]).identity(),
        )
    })
}

/// `type || version || body`, so the fuzzer spends its time on the fields
/// that verification looks at rather than on the two header bytes.
fn framed(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ty, 1];
    v.extend_from_slice(body);
    v
}

fuzz_target!(|data: &[u8]| {
    let (alice, bob) = identities();
    let ctx = b"fuzz";

    // Raw bytes straight into every parser.
    let _ = HandshakeInit::parse(data);
    let _ = HandshakeResponse::parse(data);
    let _ = HandshakeFinish::parse(data);

    // As responder: a fuzzed Init (64 bytes of fields), then a fuzzed Finish.
    if data.len() >= 128 {
        let init = HandshakeInit::parse(&framed(0x01, &data[..64])).expect("framed init parses");
        if let Ok((responder, _resp)) =
            Responder::respond(bob, EphemeralKey::from_bytes([3; 32]), ctx, &init, None)
        {
            let fin = HandshakeFinish::parse(&framed(0x03, &data[64..128]))
                .expect("framed finish parses");
            // Accepting requires a valid signature by the claimed key over our
            // transcript, which the fuzzer cannot forge.
            assert!(responder.confirm(&fin).is_err(), "forged Finish accepted");
        }
    }

    // As initiator: a fuzzed Response (128 bytes of fields) to a real Init.
    if data.len() >= 128 {
        let (initiator, _init) =
            Initiator::start(alice, EphemeralKey::from_bytes([4; 32]), ctx, None);
        let resp =
            HandshakeResponse::parse(&framed(0x02, &data[..128])).expect("framed response parses");
        assert!(initiator.finish(&resp).is_err(), "forged Response accepted");
    }
});
