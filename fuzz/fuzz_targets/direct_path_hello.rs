//! A direct call's acceptor reads the dialer's hello from whoever connected
//! to its address, before it knows who that is: any bytes must decode to a
//! hello (which re-encodes to the same bytes) or an error, and checking one
//! against the call (`PathProof::verify`) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_proto::direct_path::{PathHello, PathProof, Role};
use wzp_proto::identity::Seed;

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = PathHello::decode(data) {
        assert_eq!(&hello.encode()[..], data);
    }
    let (me, peer) = (
        Seed::from_bytes([1; 32]).identity(),
        Seed::from_bytes([2; 32]).identity(),
    );
    for role in [Role::Dialer, Role::Acceptor] {
        let proof = PathProof::new(&me, role, peer.fingerprint(), "fuzz-call", &[3; 32])
            .expect("a valid call id");
        assert!(proof.verify(data).is_err() || data.len() == 98);
    }
});
