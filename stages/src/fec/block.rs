//! The FEC block format and the RaptorQ calls, shared by `fec.raptorq_encode`
//! and `fec.raptorq_decode`. Everything here allocates (raptorq does), so it
//! runs on the FEC worker thread, never in `process`.
//!
//! A block is `K` source frames. Each frame becomes one source symbol of
//! `T` bytes, `T` being the largest symbol of the block (shorter ones are
//! padded with zeros). A symbol holds the frame's payload and what a decoder
//! needs to rebuild the frame exactly: its length and metadata
//! ([`super::symbol`], docs/WIRE.md §1.6). Repair frames carry `T`-byte
//! RaptorQ repair symbols with encoding symbol ids `K..K+R`, and say which
//! symbol layout their block uses (`frame_flags::COMPACT_REPAIR`). Source
//! frames go on the wire unchanged; a decoder rebuilds their symbols from
//! what it receives, so the wire must carry seq, timestamp, codec, flags,
//! duration and payload unchanged.

use raptorq::{
    EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder,
    SourceBlockEncoder, SourceBlockEncodingPlan,
};
use wzp_engine::prelude::*;

pub use super::symbol::{Layout, Symbols, HEADER, MAX_PROTECTED_PAYLOAD};

/// Largest number of source frames per block.
pub const MAX_SOURCE_SYMBOLS: usize = 64;
/// Largest number of repair symbols per block.
pub const MAX_REPAIR_SYMBOLS: usize = 128;

/// Repair symbols for `k` source symbols at `ratio_percent`, rounded up.
pub fn repair_count(k: usize, ratio_percent: u32) -> usize {
    (k * ratio_percent as usize)
        .div_ceil(100)
        .min(MAX_REPAIR_SYMBOLS)
}

fn config(k: usize, t: usize) -> ObjectTransmissionInformation {
    ObjectTransmissionInformation::new((k * t) as u64, t as u16, 1, 1, 1)
}

/// Computes the repair symbols of one block in `layout`. Returns `(esi,
/// bytes)` pairs.
pub fn encode_block(
    frames: &[(FrameMeta, &[u8])],
    repair: usize,
    plan: Option<&SourceBlockEncodingPlan>,
    layout: Layout,
) -> Vec<(u16, Vec<u8>)> {
    let k = frames.len();
    if k == 0 || repair == 0 {
        return Vec::new();
    }
    let symbols = Symbols::new(layout, k, &frames[k - 1].0);
    let t = frames
        .iter()
        .enumerate()
        .map(|(i, (m, p))| symbols.symbol_len(i, m, p))
        .max()
        .unwrap_or(HEADER);
    let mut data = vec![0u8; k * t];
    for (i, (meta, payload)) in frames.iter().enumerate() {
        symbols.write(i, meta, payload, &mut data[i * t..(i + 1) * t]);
    }
    let cfg = config(k, t);
    let encoder = match plan {
        Some(plan) => SourceBlockEncoder::with_encoding_plan(0, &cfg, &data, plan),
        None => SourceBlockEncoder::new(0, &cfg, &data),
    };
    encoder
        .repair_packets(0, repair as u32)
        .into_iter()
        .map(|p| {
            let esi = p.payload_id().encoding_symbol_id() as u16;
            (esi, p.split().1)
        })
        .collect()
}

/// A received symbol could not belong to its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// What a decoder knows about one block.
#[derive(Debug)]
pub struct BlockState {
    pub block: u16,
    k: usize,
    /// Symbol size and layout, known once a repair symbol arrived (its
    /// length, flags and header say them).
    shape: Option<(usize, Symbols)>,
    stream: u32,
    ratio: u8,
    sources: Vec<Option<(FrameMeta, Vec<u8>)>>,
    repairs: Vec<(u16, Vec<u8>)>,
    /// Recovered (or complete): nothing more to do.
    pub done: bool,
}

impl BlockState {
    pub fn new(block: u16, k: usize, stream: u32, ratio: u8) -> Self {
        BlockState {
            block,
            k,
            shape: None,
            stream,
            ratio,
            sources: vec![None; k],
            repairs: Vec::new(),
            done: false,
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    fn received_sources(&self) -> usize {
        self.sources.iter().filter(|s| s.is_some()).count()
    }

    /// Every source frame arrived or was recovered.
    pub fn complete(&self) -> bool {
        self.done || self.received_sources() == self.k
    }

    /// Adds a received frame (source or repair).
    pub fn add(&mut self, meta: &FrameMeta, bytes: &[u8]) -> Result<(), Malformed> {
        if meta.fec.source_symbols as usize != self.k {
            return Err(Malformed);
        }
        let esi = meta.fec.symbol as usize;
        if meta.flags & frame_flags::REPAIR != 0 {
            let (layout, shortest) = if meta.flags & frame_flags::COMPACT_REPAIR != 0 {
                (Layout::Compact, 3)
            } else {
                (Layout::Full, HEADER)
            };
            if esi < self.k || esi >= self.k + MAX_REPAIR_SYMBOLS || bytes.len() < shortest {
                return Err(Malformed);
            }
            // Every repair frame of a block has its size, layout and last
            // frame: one that differs is not of this block.
            let symbols = Symbols::new(layout, self.k, meta);
            let shape = (bytes.len(), symbols);
            if self.shape.is_some_and(|s| s != shape) {
                return Err(Malformed);
            }
            self.shape = Some(shape);
            if !self.repairs.iter().any(|(e, _)| *e as usize == esi) {
                self.repairs.push((esi as u16, bytes.to_vec()));
            }
        } else {
            if esi >= self.k || bytes.len() > MAX_PROTECTED_PAYLOAD {
                return Err(Malformed);
            }
            if self.sources[esi].is_none() {
                self.sources[esi] = Some((*meta, bytes.to_vec()));
            }
        }
        Ok(())
    }

    /// Whether a decode attempt could succeed now.
    pub fn ready(&self) -> bool {
        !self.complete()
            && !self.repairs.is_empty()
            && self.received_sources() + self.repairs.len() >= self.k
    }

    /// Recovers the missing source frames. `None` when RaptorQ needs more
    /// symbols (or the received ones are inconsistent); the block stays open.
    pub fn decode(&mut self) -> Option<Vec<(FrameMeta, Vec<u8>)>> {
        let (t, symbols) = self.shape?;
        let k = self.k;
        let mut packets = Vec::with_capacity(k + self.repairs.len());
        for (i, src) in self.sources.iter().enumerate() {
            if let Some((meta, payload)) = src {
                if symbols.symbol_len(i, meta, payload) > t {
                    // Longer than the block's symbols: not from this block.
                    continue;
                }
                let mut sym = vec![0u8; t];
                symbols.write(i, meta, payload, &mut sym);
                packets.push(EncodingPacket::new(PayloadId::new(0, i as u32), sym));
            }
        }
        for (esi, data) in &self.repairs {
            packets.push(EncodingPacket::new(
                PayloadId::new(0, *esi as u32),
                data.clone(),
            ));
        }
        let cfg = config(k, t);
        // raptorq asserts on inconsistent input; validation above should
        // prevent that, and a worker that survives is worth the guard.
        let data = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut dec = SourceBlockDecoder::new(0, &cfg, (k * t) as u64);
            dec.decode(packets)
        }))
        .ok()??;
        let mut out = Vec::new();
        for i in 0..k {
            if self.sources[i].is_some() {
                continue;
            }
            let (mut meta, payload) = symbols.read(i, data.get(i * t..(i + 1) * t)?)?;
            meta.stream = self.stream;
            meta.fec = FecTag {
                block: self.block,
                symbol: i as u16,
                source_symbols: k as u8,
                ratio_percent: self.ratio,
            };
            out.push((meta, payload.to_vec()));
        }
        for (meta, payload) in &out {
            self.sources[meta.fec.symbol as usize] = Some((*meta, payload.clone()));
        }
        self.done = true;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(k: usize) -> Vec<(FrameMeta, Vec<u8>)> {
        (0..k)
            .map(|i| {
                let meta = FrameMeta {
                    seq: 1000 + i as u32,
                    timestamp: 960 * i as u32,
                    codec: 3,
                    flags: if i == 0 { frame_flags::STREAM_START } else { 0 },
                    duration_ms: 20,
                    ..Default::default()
                };
                let payload = (0..(i * 37) % 200 + 1).map(|b| (b * 7 + i) as u8).collect();
                (meta, payload)
            })
            .collect()
    }

    fn tag(mut meta: FrameMeta, symbol: usize, k: usize, repair: Option<Layout>) -> FrameMeta {
        meta.fec = FecTag {
            block: 9,
            symbol: symbol as u16,
            source_symbols: k as u8,
            ratio_percent: 50,
        };
        match repair {
            Some(Layout::Compact) => meta.flags = frame_flags::REPAIR | frame_flags::COMPACT_REPAIR,
            Some(Layout::Full) => meta.flags = frame_flags::REPAIR,
            None => {}
        }
        meta
    }

    fn same_frame(got: &FrameMeta, want: &FrameMeta) {
        assert_eq!(
            (
                got.seq,
                got.timestamp,
                got.codec,
                got.flags,
                got.duration_ms
            ),
            (
                want.seq,
                want.timestamp,
                want.codec,
                want.flags,
                want.duration_ms
            )
        );
    }

    #[test]
    fn symbols_round_trip_in_both_layouts() {
        let src = frames(6);
        for layout in [Layout::Full, Layout::Compact] {
            let symbols = Symbols::new(layout, 6, &src[5].0);
            for (i, (meta, payload)) in src.iter().enumerate() {
                let mut sym = vec![0u8; symbols.symbol_len(i, meta, payload) + 5];
                symbols.write(i, meta, payload, &mut sym);
                let (back, p) = symbols.read(i, &sym).unwrap();
                assert_eq!(p, &payload[..], "{layout:?} frame {i}");
                same_frame(&back, meta);
            }
        }
    }

    #[test]
    fn compact_symbols_spend_three_bytes_where_the_frame_follows_from_the_last() {
        let src = frames(4);
        let symbols = Symbols::new(Layout::Compact, 4, &src[3].0);
        // Payloads 1, 38, 75, 112 bytes: one length byte each.
        for (i, (meta, payload)) in src.iter().enumerate() {
            assert_eq!(symbols.header_len(i, meta, payload.len()), 3, "frame {i}");
        }
        assert_eq!(symbols.header_len(0, &src[0].0, 128), 4, "two length bytes");
        assert_eq!(
            Symbols::new(Layout::Full, 4, &src[3].0).header_len(0, &src[0].0, 1),
            13
        );
        // A frame not where the last one puts it carries its metadata.
        let moved: [(&str, fn(&mut FrameMeta)); 4] = [
            ("a seq gap", |m| m.seq -= 1),
            ("a timestamp gap", |m| m.timestamp -= 960),
            ("another codec", |m| m.codec = 0x10),
            ("another frame size", |m| m.duration_ms = 40),
        ];
        for (what, change) in moved {
            let mut meta = src[1].0;
            change(&mut meta);
            assert_eq!(symbols.header_len(1, &meta, 38), 12, "{what}");
            let mut sym = vec![0u8; 12 + 38];
            symbols.write(1, &meta, &src[1].1, &mut sym);
            let (back, p) = symbols.read(1, &sym).unwrap();
            assert_eq!(p, &src[1].1[..], "{what}");
            same_frame(&back, &meta);
        }
    }

    #[test]
    fn symbols_that_do_not_hold_a_frame_are_refused() {
        let last = frames(3)[2].0;
        let full = Symbols::new(Layout::Full, 3, &last);
        let compact = Symbols::new(Layout::Compact, 3, &last);
        let cases: &[(&str, Symbols, &[u8])] = &[
            ("full: empty", full, &[]),
            ("full: shorter than a header", full, &[0; 12]),
            (
                "full: length past the end",
                full,
                &[0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ),
            ("compact: empty", compact, &[]),
            ("compact: form only", compact, &[0]),
            ("compact: no length", compact, &[0, 20]),
            ("compact: half a two-byte length", compact, &[0, 20, 0x80]),
            (
                "compact: length past the end",
                compact,
                &[0, 20, 5, 1, 2, 3, 4],
            ),
            (
                "compact: two-byte length past the end",
                compact,
                &[0, 20, 0x81, 0, 1, 2],
            ),
            (
                "compact: explicit, metadata cut",
                compact,
                &[0x80, 20, 0, 1, 2, 3, 4, 5, 6, 7],
            ),
            (
                "compact: explicit, payload cut",
                compact,
                &[0x80, 20, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1],
            ),
        ];
        for (what, symbols, bad) in cases {
            assert!(symbols.read(1, bad).is_none(), "{what}: {bad:?}");
        }
        // Flags that say REPAIR do not make a rebuilt frame a repair frame.
        for (symbols, sym) in [
            (full, &[0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 3, 0xff, 20, 9][..]),
            (compact, &[0x7f, 20, 1, 9][..]),
        ] {
            let (meta, payload) = symbols.read(2, sym).unwrap();
            assert_eq!(payload, [9]);
            assert_eq!(
                meta.flags & (frame_flags::REPAIR | frame_flags::COMPACT_REPAIR),
                0
            );
            assert_ne!(meta.flags & frame_flags::STREAM_START, 0);
        }
        // The longest length a compact symbol can state reads as nothing
        // rather than past a slot.
        let mut sym = vec![0u8; 40];
        sym[2] = 0xff;
        sym[3] = 0xff;
        assert!(compact.read(0, &sym).is_none());
    }

    /// Feeds `src` and `repairs` minus the symbols in `mask` (bit i = symbol
    /// i, sources first) and decodes.
    fn decode_with_loss(
        src: &[(FrameMeta, Vec<u8>)],
        repairs: &[(u16, Vec<u8>)],
        mask: u32,
        layout: Layout,
    ) -> Option<Vec<(FrameMeta, Vec<u8>)>> {
        let k = src.len();
        let mut st = BlockState::new(9, k, 0, 50);
        for (i, (m, p)) in src.iter().enumerate() {
            if mask & (1 << i) == 0 {
                st.add(&tag(*m, i, k, None), p).unwrap();
            }
        }
        for (j, (esi, data)) in repairs.iter().enumerate() {
            if mask & (1 << (k + j)) == 0 {
                st.add(&tag(src[k - 1].0, *esi as usize, k, Some(layout)), data)
                    .unwrap();
            }
        }
        assert!(st.ready() || mask & ((1 << k) - 1) == 0);
        st.decode()
    }

    fn encode(src: &[(FrameMeta, Vec<u8>)], repair: usize, layout: Layout) -> Vec<(u16, Vec<u8>)> {
        let refs: Vec<(FrameMeta, &[u8])> = src.iter().map(|(m, p)| (*m, &p[..])).collect();
        encode_block(&refs, repair, None, layout)
    }

    /// Every loss pattern of up to R symbols, for the block shapes where
    /// RaptorQ decodes from any K symbols, recovers the exact source frames,
    /// in the compact layout and in the full one older senders write.
    #[test]
    fn every_loss_pattern_within_budget_recovers_exactly() {
        let shapes = (1..=8usize)
            .flat_map(|k| [(k, 20), (k, 25), (k, 50)])
            .chain((1..=6).map(|k| (k, 100)));
        for (k, ratio) in shapes {
            for layout in [Layout::Compact, Layout::Full] {
                let r = repair_count(k, ratio);
                let src = frames(k);
                let repairs = encode(&src, r, layout);
                assert_eq!(repairs.len(), r);
                for mask in 0u32..(1 << (k + r)) {
                    if mask.count_ones() as usize > r || mask & ((1 << k) - 1) == 0 {
                        continue;
                    }
                    let got = decode_with_loss(&src, &repairs, mask, layout).unwrap_or_else(|| {
                        panic!("{layout:?} k={k} ratio={ratio} mask={mask:b} failed")
                    });
                    assert_eq!(got.len(), (mask & ((1 << k) - 1)).count_ones() as usize);
                    for (m, p) in got {
                        let (want_m, want_p) = &src[m.fec.symbol as usize];
                        assert_eq!(&p, want_p);
                        same_frame(&m, want_m);
                    }
                }
            }
        }
    }

    /// Blocks whose frames do not all follow from the last one (a codec
    /// change, a frame-size change, a gap, counters wrapping) come back
    /// exactly, whichever frame is lost.
    #[test]
    fn irregular_blocks_recover_exactly() {
        let at = |seq: u32, timestamp: u32, codec: u8, duration_ms: u8| FrameMeta {
            seq,
            timestamp,
            codec,
            duration_ms,
            ..Default::default()
        };
        let blocks: [(&str, [FrameMeta; 3]); 5] = [
            (
                "Opus then Codec2",
                [at(7, 0, 1, 20), at(8, 960, 1, 20), at(9, 1920, 0x15, 40)],
            ),
            (
                "frame size change",
                [at(7, 0, 1, 20), at(8, 960, 1, 40), at(9, 2880, 1, 40)],
            ),
            (
                "a seq gap",
                [at(7, 0, 1, 20), at(9, 960, 1, 20), at(10, 1920, 1, 20)],
            ),
            (
                "a timestamp gap",
                [at(7, 0, 1, 20), at(8, 9600, 1, 20), at(9, 10560, 1, 20)],
            ),
            (
                "both counters wrap",
                [
                    at(u32::MAX, u32::MAX - 959, 1, 20),
                    at(0, 1, 1, 20),
                    at(1, 961, 1, 20),
                ],
            ),
        ];
        for (what, metas) in blocks {
            let src: Vec<(FrameMeta, Vec<u8>)> = metas
                .iter()
                .enumerate()
                .map(|(i, m)| (*m, vec![i as u8 + 1; 20 + 60 * i]))
                .collect();
            let repairs = encode(&src, 1, Layout::Compact);
            for lost in 0..3 {
                let got = decode_with_loss(&src, &repairs, 1 << lost, Layout::Compact)
                    .unwrap_or_else(|| panic!("{what}: frame {lost} lost, no recovery"));
                assert_eq!(got.len(), 1, "{what}");
                let (m, p) = &got[0];
                assert_eq!(m.fec.symbol as usize, lost, "{what}");
                assert_eq!(p, &src[lost].1, "{what}");
                same_frame(m, &src[lost].0);
            }
        }
    }

    /// A flag the wire does not carry (the encoder's `DTX` on a 1-2 byte
    /// frame) is not in the sender's symbols: the receiver rebuilds the
    /// received frames' symbols without it, and the lost frame still comes
    /// back exactly.
    #[test]
    fn flags_the_wire_drops_do_not_spoil_a_block() {
        let mut src = frames(3);
        src[1].0.flags |= frame_flags::DTX;
        src[1].1 = vec![0xf8];
        let repairs = encode(&src, 1, Layout::Compact);
        // What wire.depacketize hands the decoder: STREAM_START only.
        let received: Vec<(FrameMeta, Vec<u8>)> = src
            .iter()
            .map(|(m, p)| {
                let mut m = *m;
                m.flags &= frame_flags::STREAM_START;
                (m, p.clone())
            })
            .collect();
        for lost in [0usize, 2] {
            let got = decode_with_loss(&received, &repairs, 1 << lost, Layout::Compact)
                .unwrap_or_else(|| panic!("frame {lost} lost, no recovery"));
            assert_eq!(got[0].1, src[lost].1, "frame {lost}");
            same_frame(&got[0].0, &received[lost].0);
        }
    }

    /// The point of the compact layout: a repair symbol of a block of two
    /// 11 kb/s Opus frames (about 28 bytes) is ten bytes shorter.
    #[test]
    fn compact_repair_is_ten_bytes_shorter() {
        let src: Vec<(FrameMeta, Vec<u8>)> = frames(2)
            .into_iter()
            .enumerate()
            .map(|(i, (m, _))| (m, vec![0x5a; 27 + i]))
            .collect();
        let compact = encode(&src, 2, Layout::Compact);
        let full = encode(&src, 2, Layout::Full);
        assert_eq!(compact[0].1.len(), 3 + 28);
        assert_eq!(full[0].1.len(), 13 + 28);
    }

    /// Larger blocks: RaptorQ may fail with exactly K symbols (RFC 6330
    /// puts it near 1 %); one symbol more recovers every pattern here.
    #[test]
    fn larger_blocks_need_one_symbol_of_overhead() {
        let (k, r) = (10, 5);
        let src = frames(k);
        let repairs = encode(&src, r, Layout::Compact);
        let (mut at_k, mut at_k_fail) = (0, 0);
        for mask in 0u32..(1 << (k + r)) {
            let lost = mask.count_ones() as usize;
            if lost > r || mask & ((1 << k) - 1) == 0 {
                continue;
            }
            let ok = decode_with_loss(&src, &repairs, mask, Layout::Compact).is_some();
            if lost == r {
                at_k += 1;
                at_k_fail += usize::from(!ok);
            } else {
                assert!(ok, "mask {mask:b} with {lost} lost");
            }
        }
        assert!(
            at_k_fail * 100 < at_k,
            "{at_k_fail} of {at_k} failed at zero overhead"
        );
    }

    #[test]
    fn malformed_symbols_are_refused() {
        let mut st = BlockState::new(1, 4, 0, 50);
        let base = FrameMeta::default();
        let full = Some(Layout::Full);
        let compact = Some(Layout::Compact);
        let cases = [
            (tag(base, 0, 5, None), 10usize), // wrong K
            (tag(base, 4, 4, None), 10),      // source id past K
            (tag(base, 2, 4, full), 20),      // repair id inside the source range
            (tag(base, 5, 4, full), 12),      // full repair shorter than a header
            (tag(base, 5, 4, compact), 2),    // compact repair shorter than a header
            (tag(base, 4 + MAX_REPAIR_SYMBOLS, 4, full), 20),
            (tag(base, 1, 4, None), MAX_ITEM_BYTES),
        ];
        for (m, len) in cases {
            assert_eq!(st.add(&m, &vec![0; len]), Err(Malformed), "{m:?}");
        }
        st.add(&tag(base, 4, 4, compact), &[0; 20]).unwrap();
        assert_eq!(
            st.add(&tag(base, 5, 4, compact), &[0; 21]),
            Err(Malformed),
            "size mismatch"
        );
        assert_eq!(
            st.add(&tag(base, 5, 4, full), &[0; 20]),
            Err(Malformed),
            "another layout"
        );
        let mut other_last = base;
        other_last.seq = 77;
        assert_eq!(
            st.add(&tag(other_last, 5, 4, compact), &[0; 20]),
            Err(Malformed),
            "another last frame"
        );
        st.add(&tag(base, 5, 4, compact), &[0; 20]).unwrap();
    }
}
