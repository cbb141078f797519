//! `wzp-client replay-adapt` reads a call's log: any text must cut into an
//! input line's fields or an error, never a panic, and every typed reader
//! must answer any field's text with a value or an error. What parses as a
//! report entry is consistent (no more received than expected).
#![no_main]

use libfuzzer_sys::fuzz_target;

// The text layer as it is compiled into wzp-stages (std and proto only).
#[allow(dead_code)]
#[path = "../../stages/src/quality/input_line.rs"]
mod input_line;

use input_line::{Fields, PREFIX};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // As found in a log, and as an input line's body.
    for line in [text.to_string(), format!("{PREFIX}{text}")] {
        let Ok(mut f) = Fields::of(&line) else { continue };
        assert!(!f.kind().is_empty());
        if let Ok(e) = f.entry() {
            assert!(e.received <= e.expected);
        }
        let _ = f.num::<u64>("at_ns");
        let _ = f.num::<f32>("heavy_loss");
        let _ = f.maybe::<f32>("sent_kbps");
        let _ = f.maybe::<u16>("hold_budget_ms");
        let _ = f.flag("rate_check");
        let _ = f.take("top_tier");
        let _ = f.done();
    }
});
