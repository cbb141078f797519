//! What a receiver measures about a sender comes from the sender's packets:
//! any sequence of headers (any seq, timestamp, flags, codec) at any
//! arrival times, with reports taken between them, must never panic (the
//! fuzz build checks arithmetic overflow), and every report must be
//! consistent (no more received than expected, a loss fraction in 0..=1).
//! The sender's side too: its count of what it sent, and the send clock,
//! asked about any span or timestamp.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_proto::{CodecId, Flags, MediaHeader};

// The measurement as it is compiled into wzp-stages (proto and std only).
#[allow(dead_code)]
#[path = "../../stages/src/delay_floor.rs"]
mod delay_floor;
#[allow(dead_code)]
#[path = "../../stages/src/quality/receive_stats.rs"]
mod receive_stats;

use receive_stats::{ReceiveStats, SendClock, SentBytes};

fuzz_target!(|data: &[u8]| {
    let Some((&window, rest)) = data.split_first() else {
        return;
    };
    let mut stats = ReceiveStats::new(7, u32::from(window), 0);
    let mut sent = SentBytes::new(2_000_000_000);
    let mut clock = SendClock::new(16);
    let mut now = 0u64;
    // 16 bytes a packet: flags, codec, seq (4), timestamp (4), time step
    // (4, 10 us units), length (2).
    for p in rest.chunks_exact(16) {
        let u32_at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let header = MediaHeader {
            flags: Flags::from_bits(p[0] & Flags::KNOWN.bits()).unwrap_or(Flags::empty()),
            codec: CodecId(p[1]),
            sender_id: 7,
            seq: u32_at(2),
            timestamp: u32_at(6),
            ..Default::default()
        };
        now = now.saturating_add(u64::from(u32_at(10)) * 10_000);
        let len = usize::from(u16::from_le_bytes([p[14], p[15]]));
        stats.on_packet(now, &header, len);
        sent.on_sent(len, now);
        clock.on_sent(header.timestamp, now);
        if p[0] & 0x80 != 0 {
            let e = stats.take_report(now);
            assert!(e.received <= e.expected, "{e:?}");
            let loss = e.loss_fraction();
            assert!((0.0..=1.0).contains(&loss), "{e:?}");
            let _ = clock.rtt_ns(e.echo_ts, e.echo_hold_ms, now);
            let start = now.saturating_sub(u64::from(u32_at(10)) * 1_000);
            if let Some(k) = sent.kbps(start, now) {
                assert!(k.is_finite() && k >= 0.0, "{k}");
            }
        }
    }
});
