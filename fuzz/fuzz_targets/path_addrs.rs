//! A party reads the peer's addresses from a `call_path` a relay carried:
//! any bytes must decode to addresses (which encode and decode back to the
//! same) or an error, and opening them with a call's keys (`PathAddrs::open`)
//! never panics. Nobody but the peer can seal, so bytes from the fuzzer
//! must not open. The same bytes read as a sealed hold notice
//! (`wzp_proto::hold::open`) never open either.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wzp_proto::direct_call::call_context;
use wzp_proto::handshake::{EphemeralKey, Initiator, Responder, SessionKeys};
use wzp_proto::identity::Seed;
use wzp_proto::path_addrs::{PathAddrs, PathAddrsError, MAX_SEALED_PATH, MIN_SEALED_PATH};

const CALL_ID: &str = "fuzz-call";

/// The two parties' keys (caller's, callee's) of one fixed handshake.
fn keys() -> &'static (SessionKeys, SessionKeys) {
    static KEYS: OnceLock<(SessionKeys, SessionKeys)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (a, b) = (
            Seed::from_bytes([1; 32]).identity(),
            Seed::from_bytes([2; 32]).identity(),
        );
        let ctx = call_context(CALL_ID);
        let (i, init) = Initiator::start(
            &a,
            EphemeralKey::from_bytes([3; 32]),
            &ctx,
            Some(b.fingerprint()),
        );
        let (r, resp) = Responder::respond(
            &b,
            EphemeralKey::from_bytes([4; 32]),
            &ctx,
            &init,
            Some(a.fingerprint()),
        )
        .expect("a fixed handshake verifies");
        let (caller, fin) = i.finish(&resp).expect("a fixed handshake finishes");
        let callee = r.confirm(&fin).expect("a fixed handshake confirms");
        (caller, callee)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(addrs) = PathAddrs::decode(data) {
        assert_eq!(PathAddrs::decode(&addrs.encode()), Ok(addrs));
    }
    let (caller, callee) = keys();
    for k in [caller, callee] {
        match PathAddrs::open(data, k, CALL_ID) {
            Err(PathAddrsError::Length(n)) => {
                assert_eq!(n, data.len());
                assert!(!(MIN_SEALED_PATH..=MAX_SEALED_PATH).contains(&n));
            }
            Err(_) => assert!((MIN_SEALED_PATH..=MAX_SEALED_PATH).contains(&data.len())),
            Ok(a) => panic!("unsealed bytes opened to {a:?}"),
        }
        match wzp_proto::hold::open(k, CALL_ID, data) {
            Err(wzp_proto::hold::HoldError::Length(n)) => {
                assert_ne!(n, wzp_proto::hold::SEALED_HOLD_LEN)
            }
            Err(_) => assert_eq!(data.len(), wzp_proto::hold::SEALED_HOLD_LEN),
            Ok(h) => panic!("unsealed bytes opened to a hold notice {h:?}"),
        }
    }
});
