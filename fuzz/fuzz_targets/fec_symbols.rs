//! An FEC source symbol as RaptorQ hands it back (docs/WIRE.md §1.6) is
//! outside input: whatever its bytes, its block's shape and last frame,
//! reading it never panics, never reads past it, and a frame read from it
//! writes back into a symbol that reads as the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_engine::prelude::*;

// The layout as it is compiled into wzp-stages.
#[allow(dead_code)]
#[path = "../../stages/src/fec/symbol.rs"]
mod symbol;

use symbol::{Layout, Symbols, MAX_PROTECTED_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    // 12 bytes of block: layout, K, i, the last frame's seq, timestamp,
    // codec; the rest is the symbol.
    let Some((head, sym)) = data.split_at_checked(12) else {
        return;
    };
    let layout = if head[0] & 1 == 0 { Layout::Full } else { Layout::Compact };
    let k = usize::from(head[1] % 64) + 1;
    let i = usize::from(head[2]) % k;
    let last = FrameMeta {
        seq: u32::from_be_bytes([head[3], head[4], head[5], head[6]]),
        timestamp: u32::from_be_bytes([head[7], head[8], head[9], head[10]]),
        codec: head[11],
        ..Default::default()
    };
    let symbols = Symbols::new(layout, k, &last);
    let Some((meta, payload)) = symbols.read(i, sym) else {
        return;
    };
    assert!(payload.len() <= sym.len());
    if payload.len() > MAX_PROTECTED_PAYLOAD {
        return;
    }
    let mut out = vec![0u8; symbols.symbol_len(i, &meta, payload)];
    symbols.write(i, &meta, payload, &mut out);
    let (back, p) = symbols.read(i, &out).expect("a written symbol reads");
    assert_eq!(p, payload);
    assert_eq!(
        (back.seq, back.timestamp, back.codec, back.duration_ms),
        (meta.seq, meta.timestamp, meta.codec, meta.duration_ms)
    );
    // A rebuilt frame is a source frame: never flagged as repair.
    assert_eq!(meta.flags & (frame_flags::REPAIR | frame_flags::COMPACT_REPAIR), 0);
    assert_eq!(back.flags, meta.flags);
});
