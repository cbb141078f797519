//! A relay parses a client's `join` frame before it knows who the client
//! is: any bytes must give a Join or an error, and verifying never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_proto::join::Join;
use wzp_proto::TlsFingerprint;

fuzz_target!(|data: &[u8]| {
    if let Ok(join) = serde_json::from_slice::<Join>(data) {
        let _ = join.verify(&join.room.clone(), &TlsFingerprint([7; 32]), join.timestamp_ms, 60);
        let frame = join.to_frame();
        let back: Join = serde_json::from_slice(&frame[4..]).expect("a Join re-encodes to a Join");
        assert_eq!(back, join);
    }
});
