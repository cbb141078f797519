//! A person opens a voice message their relay handed over: any bytes must
//! open to a message or be refused with an error, never a panic. Nobody
//! but a sender holding the recipient's key can seal, so fuzzer bytes must
//! not open; and a message a sender did seal still opens after the fuzzer's
//! bytes are appended to nothing else (a prefix of it never does).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wzp_proto::identity::{Identity, Seed};
use wzp_proto::voice_message::{open, seal, MessageKey, MAX_OPUS_PACKET};

fn people() -> &'static (Identity, Identity) {
    static P: OnceLock<(Identity, Identity)> = OnceLock::new();
    P.get_or_init(|| {
        (
            Seed::from_bytes([1; 32]).identity(),
            Seed::from_bytes([2; 32]).identity(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (alice, bob) = people();
    assert!(open(bob, data).is_err(), "fuzzer bytes opened as a voice message");
    // The fuzzer's bytes as frames: a real message of them opens to them.
    let frames: Vec<Vec<u8>> = data
        .chunks(MAX_OPUS_PACKET / 4)
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .take(40)
        .collect();
    if frames.is_empty() {
        return;
    }
    let sealed = seal(alice, &MessageKey::of(bob), 7, &frames, [9; 32]).expect("seals");
    let m = open(bob, &sealed).expect("a sealed message opens");
    assert_eq!(m.frames, frames);
    assert!(open(bob, &sealed[..sealed.len() - 1]).is_err());
});
