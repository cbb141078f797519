//! The sender's own first hop, seen by its transport: what QUIC's
//! acknowledgements say about the packets this side sent (lost, queued).
//!
//! Receiver reports ([`super::receive_stats`]) travel back over the path
//! they describe. When a sender's own link is full (a 12 kb/s uplink under
//! a 24 kb/s stream), its peers' media fills the way back too, and the
//! reports that would move it down are lost with the rest: both sides stay
//! on a tier neither link carries (the failure the rate-cap test met). The
//! sender's QUIC stack already knows: the relay acknowledges every packet,
//! so lost packets and a round-trip time grown by a standing queue show in
//! its statistics within a second, whatever gets back.
//!
//! - [`PathMeter`] (control side, sans-IO): turns the connection's
//!   cumulative counters, read every [`PATH_SAMPLE_INTERVAL`], into one
//!   [`PathSample`] per interval.
//! - [`PathLive`]: the cell the control side publishes samples to and
//!   `quality.adapt` reads them from (one atomic word, lock-free).
//! - The controller acts on a sample only as congestion (see
//!   `Controller::handle_path`): loss on the first hop without a queue is
//!   the receivers' reports' business, which see it end to end.
//!
//! ```
//! use wzp_stages::quality::path::{PathCounters, PathLive, PathMeter};
//! let mut meter = PathMeter::new();
//! let cell = PathLive::new();
//! let mut seen = 0;
//! let at = |ms: u64, sent: u64, lost: u64| PathCounters {
//!     at_ms: ms, sent_packets: sent, lost_packets: lost,
//!     sent_bytes: sent * 100, lost_bytes: lost * 100, rtt_ms: 130, min_rtt_ms: 2,
//! };
//! assert!(meter.sample(at(0, 0, 0)).is_none()); // the first reading sets the base
//! cell.publish(meter.sample(at(500, 25, 10)).unwrap());
//! let s = cell.take_new(&mut seen).unwrap();
//! assert_eq!((s.sent, s.lost, s.queue_ms), (25, 10, 128));
//! assert!(cell.take_new(&mut seen).is_none()); // each sample once
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the control side reads its connection's counters.
pub const PATH_SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// Bytes QUIC adds to each datagram it carries (short header with the
/// connection id, packet number, the DATAGRAM frame's type and length, the
/// packet's AEAD tag): taken off the delivered bytes so the rate compares
/// with what receivers count (`recv_kbps`: media header, payload, tag).
pub const QUIC_DATAGRAM_OVERHEAD_BYTES: u64 = 30;

/// The largest value a sample field holds (14 bits each, so a sample and
/// its sequence number fit one atomic word).
pub const FIELD_MAX: u16 = (1 << 14) - 1;

/// One interval of the first hop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathSample {
    /// Packets sent in the interval (at most [`FIELD_MAX`]).
    pub sent: u16,
    /// Of the packets the transport settled in the interval, those it
    /// declared lost (at most `sent`).
    pub lost: u16,
    /// Smoothed round-trip time above the connection's smallest, ms: the
    /// queue this side's packets (and the acknowledgements) wait in.
    pub queue_ms: u16,
    /// What got through, kbit/s, counted as receivers count it (QUIC's
    /// per-datagram bytes taken off).
    pub delivered_kbps: u16,
}

impl PathSample {
    /// Lost packets per packet sent (0 with none sent).
    pub fn loss_fraction(&self) -> f32 {
        if self.sent == 0 {
            0.0
        } else {
            f32::from(self.lost.min(self.sent)) / f32::from(self.sent)
        }
    }
}

/// The connection's cumulative figures at one reading (quinn's
/// `ConnectionStats`: `path.sent_packets`, `path.lost_packets`,
/// `udp_tx.bytes`, `path.lost_bytes`, `path.rtt`, `path.min_rtt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathCounters {
    /// When read, ms on any monotonic clock.
    pub at_ms: u64,
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub sent_bytes: u64,
    pub lost_bytes: u64,
    pub rtt_ms: u64,
    pub min_rtt_ms: u64,
}

/// Differences successive readings of one connection into samples.
#[derive(Debug, Default)]
pub struct PathMeter {
    last: Option<PathCounters>,
}

impl PathMeter {
    /// A meter for a new connection (its first reading sets the base).
    pub fn new() -> PathMeter {
        PathMeter::default()
    }

    /// The interval since the last reading, or `None` for the first one, a
    /// reading no later than the last, or counters that went backwards (a
    /// different connection: that reading becomes the base).
    pub fn sample(&mut self, now: PathCounters) -> Option<PathSample> {
        let last = self.last.replace(now)?;
        let span_ms = now.at_ms.checked_sub(last.at_ms).filter(|&d| d > 0)?;
        let sent = now.sent_packets.checked_sub(last.sent_packets)?;
        let lost = now.lost_packets.checked_sub(last.lost_packets)?;
        let sent_bytes = now.sent_bytes.checked_sub(last.sent_bytes)?;
        let lost_bytes = now.lost_bytes.checked_sub(last.lost_bytes)?;
        let delivered_packets = sent.saturating_sub(lost);
        let delivered_bytes = sent_bytes
            .saturating_sub(lost_bytes)
            .saturating_sub(delivered_packets * QUIC_DATAGRAM_OVERHEAD_BYTES);
        let clamp = |v: u64| v.min(u64::from(FIELD_MAX)) as u16;
        Some(PathSample {
            sent: clamp(sent),
            lost: clamp(lost.min(sent)),
            queue_ms: clamp(now.rtt_ms.saturating_sub(now.min_rtt_ms)),
            delivered_kbps: clamp(delivered_bytes * 8 / span_ms),
        })
    }
}

/// The cell: the latest sample and an 8-bit sequence number in one word
/// (0 = nothing published yet), so a reader never sees half a sample or
/// one sample twice.
#[derive(Debug, Default)]
pub struct PathLive(AtomicU64);

impl PathLive {
    /// An empty cell.
    pub fn new() -> PathLive {
        PathLive::default()
    }

    /// Publishes a sample (fields above [`FIELD_MAX`] are clamped). One
    /// writer.
    pub fn publish(&self, s: PathSample) {
        let old = self.0.load(Ordering::Relaxed);
        let seq = match (old >> 56) as u8 {
            u8::MAX => 1,
            n => n + 1,
        };
        let f = |v: u16| u64::from(v.min(FIELD_MAX));
        let word = u64::from(seq) << 56
            | f(s.sent) << 42
            | f(s.lost) << 28
            | f(s.queue_ms) << 14
            | f(s.delivered_kbps);
        self.0.store(word, Ordering::Release);
    }

    /// The latest sample if it is not the one `seen` names (then `seen`
    /// names it). Start `seen` at 0. Real-time safe: one atomic load.
    pub fn take_new(&self, seen: &mut u8) -> Option<PathSample> {
        let word = self.0.load(Ordering::Acquire);
        let seq = (word >> 56) as u8;
        if seq == 0 || seq == *seen {
            return None;
        }
        *seen = seq;
        let f = |shift: u32| ((word >> shift) & u64::from(FIELD_MAX)) as u16;
        Some(PathSample {
            sent: f(42),
            lost: f(28),
            queue_ms: f(14),
            delivered_kbps: f(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, sent: u64, lost: u64, rtt: u64) -> PathCounters {
        PathCounters {
            at_ms: ms,
            sent_packets: sent,
            lost_packets: lost,
            sent_bytes: sent * 130,
            lost_bytes: lost * 130,
            rtt_ms: rtt,
            min_rtt_ms: 1,
        }
    }

    #[test]
    fn a_meter_differences_readings_and_counts_delivered_media_bytes() {
        let mut m = PathMeter::new();
        assert_eq!(m.sample(at(1_000, 100, 5, 1)), None);
        let s = m.sample(at(1_500, 125, 15, 121)).unwrap();
        assert_eq!((s.sent, s.lost, s.queue_ms), (25, 10, 120));
        // 15 packets of 130 bytes got through in 500 ms, 30 of each QUIC's.
        assert_eq!(s.delivered_kbps, (15 * 100 * 8 / 500) as u16);
        assert!((s.loss_fraction() - 0.4).abs() < 1e-6);
    }

    #[test]
    fn readings_that_go_backwards_or_stand_still_restart_the_base() {
        let mut m = PathMeter::new();
        assert!(m.sample(at(1_000, 100, 5, 1)).is_none());
        // Same instant: no interval.
        assert!(m.sample(at(1_000, 110, 5, 1)).is_none());
        // A new connection's counters: a base, not a negative interval.
        assert!(m.sample(at(1_500, 3, 0, 1)).is_none());
        assert_eq!(m.sample(at(2_000, 28, 0, 1)).unwrap().sent, 25);
    }

    #[test]
    fn out_of_range_figures_are_clamped_not_wrapped() {
        let mut m = PathMeter::new();
        m.sample(at(0, 0, 0, 0));
        let mut c = at(1, 1 << 20, 1 << 21, 1 << 20);
        c.lost_bytes = 0;
        let s = m.sample(c).unwrap();
        assert_eq!(
            (s.sent, s.lost, s.queue_ms),
            (FIELD_MAX, FIELD_MAX, FIELD_MAX)
        );
        assert_eq!(s.delivered_kbps, FIELD_MAX);
        let cell = PathLive::new();
        cell.publish(PathSample {
            sent: u16::MAX,
            lost: 3,
            queue_ms: 4,
            delivered_kbps: u16::MAX,
        });
        let mut seen = 0;
        let got = cell.take_new(&mut seen).unwrap();
        assert_eq!(
            (got.sent, got.lost, got.queue_ms, got.delivered_kbps),
            (FIELD_MAX, 3, 4, FIELD_MAX)
        );
    }

    #[test]
    fn the_cell_hands_each_sample_out_once_across_the_sequence_wrap() {
        let cell = PathLive::new();
        let mut seen = 0;
        assert!(cell.take_new(&mut seen).is_none());
        for i in 0..600u16 {
            let s = PathSample {
                sent: i,
                lost: i / 2,
                queue_ms: i % 7,
                delivered_kbps: i + 1,
            };
            cell.publish(s);
            assert_eq!(cell.take_new(&mut seen), Some(s), "sample {i}");
            assert_eq!(cell.take_new(&mut seen), None, "sample {i} twice");
        }
    }
}
