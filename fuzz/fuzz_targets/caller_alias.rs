//! A caller's alias is outside input (the offer carries it): `listen`
//! compares it with the contacts' names through the look-alike skeleton and
//! prints it revealed. Any text gives a skeleton and a revealed form, never
//! a panic; a name looks like itself; the revealed form is plain ASCII.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The look-alike test as it is compiled into wzp-client.
#[allow(dead_code)]
#[path = "../../client-graph/src/lookalike.rs"]
mod lookalike;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (a, b) = text.split_at(text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i));
    let _ = lookalike::skeleton(a);
    assert!(lookalike::look_alike(a, a));
    assert_eq!(lookalike::look_alike(a, b), lookalike::look_alike(b, a));
    let shown = lookalike::reveal(text);
    assert!(shown.bytes().all(|c| c.is_ascii_graphic() || c == b' '), "{shown:?}");
});
