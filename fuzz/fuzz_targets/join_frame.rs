//! A relay parses a client's `join` frame before it knows who the client
//! is: any bytes must give a Join or an error, and verifying it (identity
//! signature and room proof) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_proto::join::Join;
use wzp_proto::TlsFingerprint;

fuzz_target!(|data: &[u8]| {
    if let Ok(join) = serde_json::from_slice::<Join>(data) {
        let relay = TlsFingerprint([7; 32]);
        let _ = join.verify(&join.room.clone(), &relay, join.timestamp_ms, 60);
        let nonce = [9u8; 32];
        let _ = join.verify_room_proof(&join.room.clone(), &nonce, &relay);
        let _ = join.verify_with_room_proof(&join.room.clone(), &relay, &nonce, join.timestamp_ms, 60);
        if let Some(p) = &join.room_proof {
            // The proof's own server name, the one a relay would compare.
            let sni = wzp_proto::handshake::room_sni(&p.room_pub);
            let _ = join.has_valid_room_proof(&sni, &nonce, &relay);
        }
        let frame = join.to_frame();
        let back: Join = serde_json::from_slice(&frame[4..]).expect("a Join re-encodes to a Join");
        assert_eq!(back, join);
    }
});
