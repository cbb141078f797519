//! The relay's raw server-name reader runs on every ClientHello a stranger
//! sends: it must never panic or read out of bounds, and a name it returns
//! lies inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The reader as it is compiled into wzp-stages.
#[path = "../../stages/src/net/client_hello.rs"]
mod client_hello;

use client_hello::{client_hello_sni, is_canonical, HelloSni};

fuzz_target!(|data: &[u8]| {
    if let HelloSni::Name(name) = client_hello_sni(data) {
        let start = name.as_ptr() as usize - data.as_ptr() as usize;
        assert!(start + name.len() <= data.len());
        let _ = is_canonical(name);
    }
});
