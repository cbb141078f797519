//! The client's own files are edited by hand (`~/.wzp/contacts.toml`) or
//! may be cut short (`~/.wzp/history.jsonl`): any text gives contacts or an
//! error, and calls plus a count of skipped lines, never a panic. What
//! parses is consistent: every contact's name passes the name check, no
//! two contacts share a name or a fingerprint, and a blocked fingerprint
//! is listed once. The device-id file gives an id or an error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

// The parsers as they are compiled into wzp-client (`contacts` uses
// `crate::lookalike`, which is this crate's module of the same file).
#[allow(dead_code)]
#[path = "../../client-graph/src/lookalike.rs"]
mod lookalike;
#[allow(dead_code)]
#[path = "../../client-graph/src/contacts.rs"]
mod contacts;
#[allow(dead_code)]
#[path = "../../client-graph/src/history.rs"]
mod history;
#[allow(dead_code)]
#[path = "../../client-graph/src/device.rs"]
mod device;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = contacts::Contacts::parse(text, Path::new("contacts.toml")) {
        let list = c.list();
        for (i, a) in list.iter().enumerate() {
            assert!(contacts::check_name(&a.name).is_ok(), "{:?}", a.name);
            for b in &list[i + 1..] {
                assert_ne!(a.name.to_lowercase(), b.name.to_lowercase());
                assert_ne!(a.fingerprint, b.fingerprint);
            }
        }
        for (i, a) in c.blocked().iter().enumerate() {
            assert!(c.blocked()[i + 1..].iter().all(|b| b.fingerprint != a.fingerprint));
        }
    }
    let (entries, skipped) = history::parse(text);
    assert!(entries.len() + skipped <= text.lines().count());
    // `~/.wzp/identity.device`: an id, or an error; an id reads back as
    // itself once written.
    if let Ok(id) = device::parse(text) {
        assert_eq!(device::parse(&hex::encode(id)).unwrap(), id);
    }
});
