//! The recovery words `wzp-client identity restore` reads are outside input:
//! any text gives a seed or an error, never a panic, and a seed's own words
//! give that seed back.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser as it is compiled into wzp-client.
#[allow(dead_code)]
#[path = "../../client-graph/src/cli/recovery_words.rs"]
mod recovery_words;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match recovery_words::parse(text) {
        Ok(seed) => {
            let again = recovery_words::parse(&seed.to_mnemonic()).expect("a seed's words parse");
            assert_eq!(again.as_bytes(), seed.as_bytes());
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
