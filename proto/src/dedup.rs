//! Exactly-once delivery of media that reaches a relay over several
//! federation paths (a triangle, a mesh): a window keyed by (origin relay,
//! sender id, lane, sequence number), bounded in streams and in time, plus
//! the hop limit.
//!
//! The key holds the origin because sender ids are only unique within one
//! relay's room: two relays may both have a sender 1, and a key without the
//! origin would drop the second relay's packets as duplicates of the first's.
//! It holds the **lane** ([`lane_of`]) because `seq` alone does not name a
//! packet: an FEC repair symbol carries the `seq` of its block's last source
//! frame (told apart by `fec_symbol`), and a rekey starts a new epoch. The
//! lane is every nonce field but `sender_id` and `seq` (docs/WIRE.md §1.3),
//! so two packets with the same key are the same packet (the nonce never
//! repeats under one key).
//!
//! Per (origin, sender, lane) stream it keeps the highest sequence number seen and
//! a bitmap of the [`WINDOW`] numbers below it (the SRTP replay-window
//! shape): exact, constant memory per stream. Streams silent for the time
//! limit are forgotten; when the table is full the stream heard from least
//! recently makes room. The table never grows past its capacity, so after
//! [`DedupWindow::new`] checking a packet does not allocate: it can run in
//! a `federation.dedup` stage's `process`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::federation::{RelayId, MAX_MEDIA_HOPS};
use crate::media::{CodecId, Flags, MediaHeader};

/// The lane of a media packet: the nonce fields besides `sender_id` and
/// `seq` (direction, key epoch, repair symbol), plus whether it is a
/// feedback report. Within one lane `seq` never repeats.
pub fn lane_of(h: &MediaHeader) -> u32 {
    let direction = u32::from(h.flags.contains(Flags::FROM_RESPONDER));
    let symbol = if h.is_repair() {
        0x1_0000 | u32::from(h.fec_symbol)
    } else if h.codec == CodecId::FEEDBACK {
        0x2_0000 | u32::from(h.fec_symbol)
    } else {
        0
    };
    (u32::from(h.key_epoch) << 24) | (direction << 23) | symbol
}

/// Sequence numbers remembered below the highest per stream (~20 s of audio
/// at 50 packets/s).
pub const WINDOW: u32 = 1024;
/// Default time after which a silent stream is forgotten.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Default number of streams remembered.
pub const DEFAULT_STREAMS: usize = 4096;

const WORDS: usize = (WINDOW / 64) as usize;

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// First time seen: deliver and forward.
    Fresh,
    /// Seen before within the window: drop.
    Duplicate,
    /// Older than the window: drop (it cannot be told apart from a replay).
    TooOld,
    /// Crossed [`MAX_MEDIA_HOPS`] links: drop.
    HopLimit,
}

#[derive(Clone, Debug)]
struct Stream {
    highest: u32,
    /// Bit i of the window: `highest - i` was seen (bit 0 is `highest`).
    seen: [u64; WORDS],
    last: Instant,
}

impl Stream {
    fn bit(&self, back: u32) -> bool {
        self.seen[(back / 64) as usize] & (1 << (back % 64)) != 0
    }

    fn set(&mut self, back: u32) {
        self.seen[(back / 64) as usize] |= 1 << (back % 64);
    }

    /// Shifts the window up by `by` positions (new highest).
    fn advance(&mut self, by: u32) {
        if by >= WINDOW {
            self.seen = [0; WORDS];
            return;
        }
        let words = (by / 64) as usize;
        let bits = by % 64;
        for i in (0..WORDS).rev() {
            let lo = i.checked_sub(words).map_or(0, |j| self.seen[j]);
            let below = i.checked_sub(words + 1).map_or(0, |j| self.seen[j]);
            self.seen[i] = if bits == 0 {
                lo
            } else {
                (lo << bits) | (below >> (64 - bits))
            };
        }
    }
}

/// Counts of what the window decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Fresh packets.
    pub fresh: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Packets older than the window dropped.
    pub too_old: u64,
    /// Packets past the hop limit dropped.
    pub hop_limit: u64,
    /// Streams forgotten to make room (not by age).
    pub evicted: u64,
}

/// The dedup window.
#[derive(Debug)]
pub struct DedupWindow {
    streams: HashMap<(RelayId, u32, u32), Stream>,
    capacity: usize,
    ttl: Duration,
    stats: DedupStats,
}

impl DedupWindow {
    /// A window remembering at most `streams` (origin, sender) streams, each
    /// forgotten after `ttl` of silence. All memory is taken here.
    pub fn new(streams: usize, ttl: Duration) -> DedupWindow {
        let capacity = streams.max(1);
        DedupWindow {
            // At most half full: a rehash after churn happens in place,
            // never by reallocation.
            streams: HashMap::with_capacity(capacity * 2),
            capacity,
            ttl,
            stats: DedupStats::default(),
        }
    }

    /// What the window decided so far.
    pub fn stats(&self) -> DedupStats {
        self.stats
    }

    /// Streams remembered.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is remembered.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Checks (and records) a packet from `origin`'s sender `sender` with
    /// sequence `seq` in lane 0 (a source packet of key epoch 0) that has
    /// crossed `hops` links.
    pub fn check(
        &mut self,
        origin: RelayId,
        sender: u32,
        seq: u32,
        hops: u8,
        now: Instant,
    ) -> Verdict {
        self.check_lane(origin, sender, 0, seq, hops, now)
    }

    /// Checks (and records) a packet in `lane` ([`lane_of`]).
    pub fn check_lane(
        &mut self,
        origin: RelayId,
        sender: u32,
        lane: u32,
        seq: u32,
        hops: u8,
        now: Instant,
    ) -> Verdict {
        let v = self.decide(origin, (sender, lane), seq, hops, now);
        match v {
            Verdict::Fresh => self.stats.fresh += 1,
            Verdict::Duplicate => self.stats.duplicates += 1,
            Verdict::TooOld => self.stats.too_old += 1,
            Verdict::HopLimit => self.stats.hop_limit += 1,
        }
        v
    }

    fn decide(
        &mut self,
        origin: RelayId,
        (sender, lane): (u32, u32),
        seq: u32,
        hops: u8,
        now: Instant,
    ) -> Verdict {
        if hops >= MAX_MEDIA_HOPS {
            return Verdict::HopLimit;
        }
        let key = (origin, sender, lane);
        let ttl = self.ttl;
        if let Some(s) = self.streams.get_mut(&key) {
            if now.saturating_duration_since(s.last) < ttl {
                s.last = s.last.max(now);
                let ahead = seq.wrapping_sub(s.highest);
                if ahead != 0 && ahead < 1 << 31 {
                    s.advance(ahead);
                    s.highest = seq;
                    s.set(0);
                    return Verdict::Fresh;
                }
                let back = s.highest.wrapping_sub(seq);
                if back >= WINDOW {
                    return Verdict::TooOld;
                }
                if s.bit(back) {
                    return Verdict::Duplicate;
                }
                s.set(back);
                return Verdict::Fresh;
            }
            // Silent past the time limit: start over.
            self.streams.remove(&key);
        }
        if self.streams.len() >= self.capacity {
            self.make_room(now);
        }
        let mut s = Stream {
            highest: seq,
            seen: [0; WORDS],
            last: now,
        };
        s.set(0);
        self.streams.insert(key, s);
        Verdict::Fresh
    }

    /// Drops expired streams, or else the least recently heard one.
    fn make_room(&mut self, now: Instant) {
        let ttl = self.ttl;
        let before = self.streams.len();
        self.streams
            .retain(|_, s| now.saturating_duration_since(s.last) < ttl);
        if self.streams.len() < before {
            return;
        }
        if let Some(oldest) = self
            .streams
            .iter()
            .min_by_key(|(_, s)| s.last)
            .map(|(k, _)| *k)
        {
            self.streams.remove(&oldest);
            self.stats.evicted += 1;
        }
    }
}

impl Default for DedupWindow {
    fn default() -> Self {
        DedupWindow::new(DEFAULT_STREAMS, DEFAULT_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u8) -> RelayId {
        RelayId([n; 8])
    }

    #[test]
    fn each_packet_once_whatever_the_order() {
        let t0 = Instant::now();
        let mut w = DedupWindow::default();
        // Two paths deliver the same 300 packets, one reversed in blocks.
        let mut order: Vec<u32> = (0..300).collect();
        let mut other = order.clone();
        for c in other.chunks_mut(7) {
            c.reverse();
        }
        order.extend(other);
        let fresh = order
            .iter()
            .filter(|&&s| w.check(r(1), 5, s, 1, t0) == Verdict::Fresh)
            .count();
        assert_eq!(fresh, 300);
        assert_eq!(w.stats().duplicates, 300);
    }

    #[test]
    fn the_origin_is_part_of_the_key() {
        // The reference system's bug: same sender id and seq from two relays.
        let t0 = Instant::now();
        let mut w = DedupWindow::default();
        for seq in 0..50 {
            assert_eq!(w.check(r(1), 1, seq, 0, t0), Verdict::Fresh);
            assert_eq!(w.check(r(2), 1, seq, 0, t0), Verdict::Fresh);
            assert_eq!(w.check(r(1), 2, seq, 0, t0), Verdict::Fresh);
            assert_eq!(w.check(r(2), 1, seq, 1, t0), Verdict::Duplicate);
        }
    }

    #[test]
    fn repair_symbols_and_epochs_are_their_own_lanes() {
        // A repair symbol carries its block's last source seq: keyed by seq
        // alone, it would be dropped as a duplicate of that frame.
        let t0 = Instant::now();
        let mut w = DedupWindow::default();
        let source = MediaHeader {
            seq: 9,
            ..Default::default()
        };
        let repair = |symbol| MediaHeader {
            seq: 9,
            flags: Flags::REPAIR,
            fec_symbol: symbol,
            ..Default::default()
        };
        let rekeyed = MediaHeader {
            seq: 9,
            key_epoch: 1,
            ..Default::default()
        };
        let mut check = |h: &MediaHeader| w.check_lane(r(1), 7, lane_of(h), h.seq, 0, t0);
        for h in [source, repair(5), repair(6), rekeyed] {
            assert_eq!(check(&h), Verdict::Fresh, "{h:?}");
        }
        for h in [source, repair(5), repair(6), rekeyed] {
            assert_eq!(check(&h), Verdict::Duplicate, "{h:?}");
        }
        let distinct: std::collections::BTreeSet<u32> = [source, repair(5), repair(6), rekeyed]
            .iter()
            .map(lane_of)
            .collect();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn window_edges_wrap_and_age() {
        let t0 = Instant::now();
        let mut w = DedupWindow::default();
        let base = u32::MAX - 10;
        assert_eq!(w.check(r(1), 1, base, 0, t0), Verdict::Fresh);
        // Across the u32 wrap.
        for s in 1..=30u32 {
            assert_eq!(
                w.check(r(1), 1, base.wrapping_add(s), 0, t0),
                Verdict::Fresh
            );
        }
        assert_eq!(
            w.check(r(1), 1, base.wrapping_add(3), 0, t0),
            Verdict::Duplicate
        );
        let top = base.wrapping_add(30);
        // The oldest remembered, and one past it.
        let jump = top.wrapping_add(WINDOW - 1);
        assert_eq!(w.check(r(1), 1, jump, 0, t0), Verdict::Fresh);
        assert_eq!(w.check(r(1), 1, top, 0, t0), Verdict::Duplicate);
        assert_eq!(
            w.check(r(1), 1, top.wrapping_sub(1), 0, t0),
            Verdict::TooOld
        );
        // Shifts of every size keep exact bits.
        let mut w = DedupWindow::default();
        let mut seq = 0u32;
        let mut sent = vec![];
        for step in [1u32, 63, 64, 65, 127, 128, 129, 200, 1] {
            seq += step;
            assert_eq!(w.check(r(3), 9, seq, 0, t0), Verdict::Fresh);
            sent.push(seq);
        }
        for &s in &sent {
            let v = w.check(r(3), 9, s, 0, t0);
            assert_eq!(v, Verdict::Duplicate, "seq {s}");
        }
        assert_eq!(
            w.check(r(3), 9, seq - 2, 0, t0),
            Verdict::Fresh,
            "never seen"
        );
    }

    #[test]
    fn hop_limit_and_time_limit() {
        let t0 = Instant::now();
        let mut w = DedupWindow::new(8, Duration::from_secs(2));
        assert_eq!(w.check(r(1), 1, 1, MAX_MEDIA_HOPS, t0), Verdict::HopLimit);
        assert_eq!(w.check(r(1), 1, 1, MAX_MEDIA_HOPS - 1, t0), Verdict::Fresh);
        assert_eq!(
            w.check(r(1), 1, 1, 0, t0 + Duration::from_secs(1)),
            Verdict::Duplicate
        );
        // After the time limit the stream is forgotten: a restarted sender
        // whose numbers went back is heard again.
        assert_eq!(
            w.check(r(1), 1, 1, 0, t0 + Duration::from_secs(4)),
            Verdict::Fresh
        );
    }

    #[test]
    fn the_table_stays_within_its_capacity() {
        let t0 = Instant::now();
        let mut w = DedupWindow::new(16, Duration::from_secs(60));
        for sender in 0..1000u32 {
            let now = t0 + Duration::from_millis(u64::from(sender));
            assert_eq!(w.check(r(1), sender, 0, 0, now), Verdict::Fresh);
            assert!(w.len() <= 16);
        }
        assert_eq!(w.stats().evicted, 1000 - 16);
        // The newest streams are the ones kept.
        let now = t0 + Duration::from_secs(1);
        assert_eq!(w.check(r(1), 999, 0, 0, now), Verdict::Duplicate);
        assert_eq!(w.check(r(1), 0, 0, 0, now), Verdict::Fresh);
    }
}
