//! The FEC block format and the RaptorQ calls, shared by `fec.raptorq_encode`
//! and `fec.raptorq_decode`. Everything here allocates (raptorq does), so it
//! runs on the FEC worker thread, never in `process`.
//!
//! A block is `K` source frames. Each frame becomes one source symbol of
//! `T` bytes, `T` being the largest encoded frame of the block:
//!
//! ```text
//! 0      2      6          10     11     12        13        13+len    T
//! | len  | seq  | timestamp | codec| flags| duration| payload | zeros... |
//! ```
//!
//! (big-endian). Because the symbol holds the frame's length and metadata, a
//! decoder that recovers a symbol rebuilds the frame exactly, and frames of
//! different sizes share one symbol size. Repair frames carry `T`-byte
//! RaptorQ repair symbols with encoding symbol ids `K..K+R`. Source frames go
//! on the wire unchanged; a decoder rebuilds their symbols from what it
//! receives, so the wire must carry seq, timestamp, codec, flags, duration
//! and payload unchanged.

use raptorq::{
    EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder,
    SourceBlockEncoder, SourceBlockEncodingPlan,
};
use wzp_engine::prelude::*;

/// Bytes of frame metadata at the start of every source symbol.
pub const HEADER: usize = 13;
/// Largest payload a protected frame may have: its repair symbols must fit
/// one frame slot.
pub const MAX_PROTECTED_PAYLOAD: usize = MAX_ITEM_BYTES - HEADER;
/// Largest number of source frames per block.
pub const MAX_SOURCE_SYMBOLS: usize = 64;
/// Largest number of repair symbols per block.
pub const MAX_REPAIR_SYMBOLS: usize = 128;

/// Flags that belong to the frame itself (REPAIR is the block's business).
const CARRIED_FLAGS: u8 = !frame_flags::REPAIR;

/// Repair symbols for `k` source symbols at `ratio_percent`, rounded up.
pub fn repair_count(k: usize, ratio_percent: u32) -> usize {
    (k * ratio_percent as usize)
        .div_ceil(100)
        .min(MAX_REPAIR_SYMBOLS)
}

/// Writes the source symbol of a frame into `out` (zero-padded to its
/// length). `out` must hold at least `HEADER + payload.len()` bytes.
pub fn write_symbol(meta: &FrameMeta, payload: &[u8], out: &mut [u8]) {
    out.fill(0);
    out[0..2].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    out[2..6].copy_from_slice(&meta.seq.to_be_bytes());
    out[6..10].copy_from_slice(&meta.timestamp.to_be_bytes());
    out[10] = meta.codec;
    out[11] = meta.flags & CARRIED_FLAGS;
    out[12] = meta.duration_ms;
    out[HEADER..HEADER + payload.len()].copy_from_slice(payload);
}

/// Reads a frame back from a source symbol; `None` when the length field
/// does not fit the symbol (a corrupt block).
pub fn read_symbol(symbol: &[u8]) -> Option<(FrameMeta, &[u8])> {
    if symbol.len() < HEADER {
        return None;
    }
    let len = u16::from_be_bytes([symbol[0], symbol[1]]) as usize;
    let payload = symbol.get(HEADER..HEADER + len)?;
    let meta = FrameMeta {
        seq: u32::from_be_bytes(symbol[2..6].try_into().ok()?),
        timestamp: u32::from_be_bytes(symbol[6..10].try_into().ok()?),
        codec: symbol[10],
        flags: symbol[11],
        duration_ms: symbol[12],
        ..Default::default()
    };
    Some((meta, payload))
}

fn config(k: usize, t: usize) -> ObjectTransmissionInformation {
    ObjectTransmissionInformation::new((k * t) as u64, t as u16, 1, 1, 1)
}

/// Computes the repair symbols of one block. Returns `(esi, bytes)` pairs.
pub fn encode_block(
    frames: &[(FrameMeta, &[u8])],
    repair: usize,
    plan: Option<&SourceBlockEncodingPlan>,
) -> Vec<(u16, Vec<u8>)> {
    let k = frames.len();
    if k == 0 || repair == 0 {
        return Vec::new();
    }
    let t = frames
        .iter()
        .map(|(_, p)| HEADER + p.len())
        .max()
        .unwrap_or(HEADER);
    let mut data = vec![0u8; k * t];
    for (i, (meta, payload)) in frames.iter().enumerate() {
        write_symbol(meta, payload, &mut data[i * t..(i + 1) * t]);
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
    /// Symbol size, known once a repair symbol arrived.
    t: Option<usize>,
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
            t: None,
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
            if esi < self.k || esi >= self.k + MAX_REPAIR_SYMBOLS || bytes.len() < HEADER {
                return Err(Malformed);
            }
            match self.t {
                Some(t) if t != bytes.len() => return Err(Malformed),
                _ => self.t = Some(bytes.len()),
            }
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
        let t = self.t?;
        let k = self.k;
        let mut packets = Vec::with_capacity(k + self.repairs.len());
        for (i, src) in self.sources.iter().enumerate() {
            if let Some((meta, payload)) = src {
                if HEADER + payload.len() > t {
                    // Longer than the block's symbols: not from this block.
                    continue;
                }
                let mut sym = vec![0u8; t];
                write_symbol(meta, payload, &mut sym);
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
            let (mut meta, payload) = read_symbol(data.get(i * t..(i + 1) * t)?)?;
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

    fn tag(mut meta: FrameMeta, symbol: usize, k: usize, repair: bool) -> FrameMeta {
        meta.fec = FecTag {
            block: 9,
            symbol: symbol as u16,
            source_symbols: k as u8,
            ratio_percent: 50,
        };
        if repair {
            meta.flags = frame_flags::REPAIR;
        }
        meta
    }

    #[test]
    fn symbol_round_trip_and_bad_lengths() {
        let (meta, payload) = &frames(3)[2];
        let mut sym = vec![0u8; HEADER + payload.len() + 5];
        write_symbol(meta, payload, &mut sym);
        let (back, p) = read_symbol(&sym).unwrap();
        assert_eq!(p, &payload[..]);
        assert_eq!(
            (back.seq, back.timestamp, back.codec),
            (meta.seq, meta.timestamp, meta.codec)
        );
        let cases: &[&[u8]] = &[
            &[],
            &[0; 12],
            &[0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ];
        for bad in cases {
            assert!(read_symbol(bad).is_none(), "{bad:?}");
        }
    }

    /// Feeds `src` and `repairs` minus the symbols in `mask` (bit i = symbol
    /// i, sources first) and decodes.
    fn decode_with_loss(
        src: &[(FrameMeta, Vec<u8>)],
        repairs: &[(u16, Vec<u8>)],
        mask: u32,
    ) -> Option<Vec<(FrameMeta, Vec<u8>)>> {
        let k = src.len();
        let mut st = BlockState::new(9, k, 0, 50);
        for (i, (m, p)) in src.iter().enumerate() {
            if mask & (1 << i) == 0 {
                st.add(&tag(*m, i, k, false), p).unwrap();
            }
        }
        for (j, (esi, data)) in repairs.iter().enumerate() {
            if mask & (1 << (k + j)) == 0 {
                st.add(&tag(src[k - 1].0, *esi as usize, k, true), data)
                    .unwrap();
            }
        }
        assert!(st.ready() || mask & ((1 << k) - 1) == 0);
        st.decode()
    }

    /// Every loss pattern of up to R symbols, for the block shapes where
    /// RaptorQ decodes from any K symbols, recovers the exact source frames.
    #[test]
    fn every_loss_pattern_within_budget_recovers_exactly() {
        let shapes = (1..=8usize)
            .flat_map(|k| [(k, 20), (k, 25), (k, 50)])
            .chain((1..=6).map(|k| (k, 100)));
        for (k, ratio) in shapes {
            let r = repair_count(k, ratio);
            let src = frames(k);
            let refs: Vec<(FrameMeta, &[u8])> = src.iter().map(|(m, p)| (*m, &p[..])).collect();
            let repairs = encode_block(&refs, r, None);
            assert_eq!(repairs.len(), r);
            for mask in 0u32..(1 << (k + r)) {
                if mask.count_ones() as usize > r || mask & ((1 << k) - 1) == 0 {
                    continue;
                }
                let got = decode_with_loss(&src, &repairs, mask)
                    .unwrap_or_else(|| panic!("k={k} ratio={ratio} mask={mask:b} failed"));
                assert_eq!(got.len(), (mask & ((1 << k) - 1)).count_ones() as usize);
                for (m, p) in got {
                    let (want_m, want_p) = &src[m.fec.symbol as usize];
                    assert_eq!(&p, want_p);
                    assert_eq!(m.seq, want_m.seq);
                    assert_eq!(m.timestamp, want_m.timestamp);
                    assert_eq!(m.flags, want_m.flags);
                    assert_eq!(m.codec, want_m.codec);
                    assert_eq!(m.duration_ms, want_m.duration_ms);
                }
            }
        }
    }

    /// Larger blocks: RaptorQ may fail with exactly K symbols (RFC 6330
    /// puts it near 1 %); one symbol more recovers every pattern here.
    #[test]
    fn larger_blocks_need_one_symbol_of_overhead() {
        let (k, r) = (10, 5);
        let src = frames(k);
        let refs: Vec<(FrameMeta, &[u8])> = src.iter().map(|(m, p)| (*m, &p[..])).collect();
        let repairs = encode_block(&refs, r, None);
        let (mut at_k, mut at_k_fail) = (0, 0);
        for mask in 0u32..(1 << (k + r)) {
            let lost = mask.count_ones() as usize;
            if lost > r || mask & ((1 << k) - 1) == 0 {
                continue;
            }
            let ok = decode_with_loss(&src, &repairs, mask).is_some();
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
        let cases = [
            (tag(base, 0, 5, false), 10usize), // wrong K
            (tag(base, 4, 4, false), 10),      // source id past K
            (tag(base, 2, 4, true), 20),       // repair id inside the source range
            (tag(base, 5, 4, true), 3),        // repair shorter than a header
            (tag(base, 4 + MAX_REPAIR_SYMBOLS, 4, true), 20),
            (tag(base, 1, 4, false), MAX_ITEM_BYTES),
        ];
        for (m, len) in cases {
            assert_eq!(st.add(&m, &vec![0; len]), Err(Malformed), "{m:?}");
        }
        st.add(&tag(base, 4, 4, true), &[0; 20]).unwrap();
        assert_eq!(
            st.add(&tag(base, 5, 4, true), &[0; 21]),
            Err(Malformed),
            "size mismatch"
        );
    }
}
