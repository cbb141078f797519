//! A relay's mapping port reads any datagram anyone sends it: anything but
//! a well-formed probe reads as none, a probe encodes back to the same
//! bytes, and nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_proto::mapping::{MappingProbe, PROBE_LEN};

fuzz_target!(|data: &[u8]| {
    match MappingProbe::parse(data) {
        Some(p) => {
            assert_eq!(data.len(), PROBE_LEN);
            assert_eq!(&p.encode()[..], data);
        }
        None => assert!(data.len() != PROBE_LEN || !data.starts_with(b"wzp-map1")),
    }
});
