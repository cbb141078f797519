//! Any payload of a packet with codec 0x41 (a repair symbol riding in a
//! source frame's packet, docs/WIRE.md §1.7), under any carrier seq and
//! timestamp: parsing never panics, and whatever parses re-encodes to the
//! same bytes (one encoding per payload).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_proto::riding::{encode_riding, parse_riding, riding_len};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let seq = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let ts = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    let payload = &data[8..];
    let Ok(r) = parse_riding(payload, seq, ts) else {
        return;
    };
    assert!(!r.repair.symbol.is_empty());
    assert!(r.repair.fec_symbol >= u16::from(r.repair.fec_block_len));
    let mut out = vec![0u8; payload.len()];
    let n = encode_riding(&r, seq, ts, &mut out).expect("what parses re-encodes");
    assert_eq!(&out[..n], payload);
    assert_eq!(
        n,
        riding_len(r.payload.len(), r.repair.symbol.len(), r.repair.codec != r.codec)
    );
});
