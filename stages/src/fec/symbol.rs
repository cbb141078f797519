//! The layout of an FEC block's source symbols (docs/WIRE.md §1.6): how a
//! frame's payload and metadata sit in the symbol RaptorQ codes. Parsed
//! from what a decoder rebuilds out of received repair, so it is outside
//! input: reading never panics and refuses a symbol whose length runs past
//! its end (fuzz target `fec_symbols`). No allocation, no RaptorQ: the
//! coding is `fec::block`'s.
//!
//! **Compact** (what `fec.raptorq_encode` writes): most of a frame's
//! metadata follows from the block's last frame, whose seq, timestamp and
//! codec every repair frame's header carries, so a symbol spends 3 bytes on
//! it, not 13:
//!
//! ```text
//! 0       1          2                 2+n                     2+n+9
//! | form  | duration | len (n = 1 or 2) | [seq | timestamp | codec] | payload | zeros...
//! ```
//!
//! `form`: bit 7 set when seq, timestamp and codec follow (explicit), bits
//! 0-6 the frame's flags that travel on the wire (`STREAM_START`; the
//! others are zero). `len`:
//! one byte under 128, else two (`0x80 | len >> 8`, `len & 0xff`). A frame
//! is *implicit* (no seq, timestamp, codec) when frame `i` of `K` is where
//! the block's last frame puts it: `seq = last.seq - (K - 1 - i)`,
//! `timestamp = last.timestamp - (K - 1 - i) * duration * 48`, the same
//! codec (every frame of a block of equal frames; a codec or frame-size
//! change, or a gap, makes the frames before it explicit). Both ends decide
//! it from the frame's own metadata, so a decoder rebuilds a received
//! frame's symbol exactly as the sender wrote it.
//!
//! **Full** (what builds before the compact layout wrote; decoded, never
//! written): 13 bytes of metadata in every symbol:
//!
//! ```text
//! 0      2      6          10     11     12        13        13+len    T
//! | len  | seq  | timestamp | codec| flags| duration| payload | zeros... |
//! ```
//!
//! (big-endian throughout).

use wzp_engine::prelude::*;

/// Most bytes of frame metadata a source symbol holds (the full layout, and
/// an explicit compact one with a two-byte length).
pub const HEADER: usize = 13;
/// Largest payload a protected frame may have: its repair symbols must fit
/// one frame slot.
pub const MAX_PROTECTED_PAYLOAD: usize = MAX_ITEM_BYTES - HEADER;

/// The frame flags a symbol holds: those the wire carries for a source
/// frame (`STREAM_START`, as `TALKSPURT`). A receiver rebuilds a received
/// frame's symbol from what arrived, so a flag the wire drops (the
/// encoder's `DTX` on a 1-2 byte frame) must not be in the sender's symbol
/// either, or every block holding such a frame decodes to garbage; REPAIR
/// and the layout are the block's business.
const CARRIED_FLAGS: u8 = frame_flags::STREAM_START;

/// Compact `form` bit: seq, timestamp and codec follow the length.
const EXPLICIT: u8 = 0x80;

/// How a block's source symbols hold their frames' metadata (module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// 13 bytes in every symbol (builds before the compact layout).
    Full,
    /// 3-4 bytes where the frame sits where the block's last frame puts it.
    Compact,
}

/// How the symbols of one block are laid out: the layout, the block's size
/// and its last frame's seq, timestamp and codec (what compact symbols
/// derive theirs from; a repair frame's header carries them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbols {
    /// The layout.
    pub layout: Layout,
    /// Source frames in the block.
    pub k: usize,
    /// The block's last frame's seq.
    pub last_seq: u32,
    /// The block's last frame's timestamp.
    pub last_timestamp: u32,
    /// The block's last frame's codec.
    pub last_codec: u8,
}

impl Symbols {
    /// The symbols of a block of `k` frames whose last frame (or any of its
    /// repair frames) is `last`.
    pub fn new(layout: Layout, k: usize, last: &FrameMeta) -> Symbols {
        Symbols {
            layout,
            k,
            last_seq: last.seq,
            last_timestamp: last.timestamp,
            last_codec: last.codec,
        }
    }

    /// Whether frame `i` of the block with `meta` sits where the last frame
    /// puts it (its compact symbol then leaves seq, timestamp and codec out).
    fn implicit(&self, i: usize, meta: &FrameMeta) -> bool {
        let back = self.k.saturating_sub(1).saturating_sub(i) as u32;
        meta.seq == self.last_seq.wrapping_sub(back)
            && meta.timestamp
                == self
                    .last_timestamp
                    .wrapping_sub(back.wrapping_mul(u32::from(meta.duration_ms) * 48))
            && meta.codec == self.last_codec
    }

    /// Bytes of metadata in frame `i`'s symbol, for a payload of `len`.
    pub fn header_len(&self, i: usize, meta: &FrameMeta, len: usize) -> usize {
        match self.layout {
            Layout::Full => HEADER,
            Layout::Compact => {
                let len_bytes = if len < 0x80 { 1 } else { 2 };
                let explicit = if self.implicit(i, meta) { 0 } else { 9 };
                2 + len_bytes + explicit
            }
        }
    }

    /// The symbol length frame `i` needs.
    pub fn symbol_len(&self, i: usize, meta: &FrameMeta, payload: &[u8]) -> usize {
        self.header_len(i, meta, payload.len()) + payload.len()
    }

    /// Writes frame `i`'s source symbol into `out` (zero-padded to its
    /// length). `out` must hold at least [`Symbols::symbol_len`] bytes, and
    /// the payload must be at most [`MAX_PROTECTED_PAYLOAD`] bytes.
    pub fn write(&self, i: usize, meta: &FrameMeta, payload: &[u8], out: &mut [u8]) {
        out.fill(0);
        let len = payload.len();
        let at = match self.layout {
            Layout::Full => {
                out[0..2].copy_from_slice(&(len as u16).to_be_bytes());
                out[2..6].copy_from_slice(&meta.seq.to_be_bytes());
                out[6..10].copy_from_slice(&meta.timestamp.to_be_bytes());
                out[10] = meta.codec;
                out[11] = meta.flags & CARRIED_FLAGS;
                out[12] = meta.duration_ms;
                HEADER
            }
            Layout::Compact => {
                let explicit = !self.implicit(i, meta);
                out[0] = (meta.flags & CARRIED_FLAGS) | if explicit { EXPLICIT } else { 0 };
                out[1] = meta.duration_ms;
                let mut at = if len < 0x80 {
                    out[2] = len as u8;
                    3
                } else {
                    out[2] = 0x80 | (len >> 8) as u8;
                    out[3] = len as u8;
                    4
                };
                if explicit {
                    out[at..at + 4].copy_from_slice(&meta.seq.to_be_bytes());
                    out[at + 4..at + 8].copy_from_slice(&meta.timestamp.to_be_bytes());
                    out[at + 8] = meta.codec;
                    at += 9;
                }
                at
            }
        };
        out[at..at + len].copy_from_slice(payload);
    }

    /// Reads frame `i` back from its source symbol; `None` when the symbol
    /// does not hold one (a length past its end: a corrupt block). Only the
    /// flags the wire carries are read (`STREAM_START`): a rebuilt frame is
    /// a source frame, never REPAIR, whatever a sender wrote.
    pub fn read<'a>(&self, i: usize, symbol: &'a [u8]) -> Option<(FrameMeta, &'a [u8])> {
        match self.layout {
            Layout::Full => {
                if symbol.len() < HEADER {
                    return None;
                }
                let len = u16::from_be_bytes([symbol[0], symbol[1]]) as usize;
                let payload = symbol.get(HEADER..HEADER + len)?;
                let meta = FrameMeta {
                    seq: u32::from_be_bytes(symbol[2..6].try_into().ok()?),
                    timestamp: u32::from_be_bytes(symbol[6..10].try_into().ok()?),
                    codec: symbol[10],
                    flags: symbol[11] & CARRIED_FLAGS,
                    duration_ms: symbol[12],
                    ..Default::default()
                };
                Some((meta, payload))
            }
            Layout::Compact => {
                let (&form, rest) = symbol.split_first()?;
                let (&duration_ms, rest) = rest.split_first()?;
                let (&l0, rest) = rest.split_first()?;
                let (len, rest) = if l0 < 0x80 {
                    (usize::from(l0), rest)
                } else {
                    let (&l1, rest) = rest.split_first()?;
                    (usize::from(l0 & 0x7f) << 8 | usize::from(l1), rest)
                };
                let mut meta = FrameMeta {
                    flags: form & CARRIED_FLAGS,
                    duration_ms,
                    ..Default::default()
                };
                let rest = if form & EXPLICIT != 0 {
                    let (m, rest) = rest.split_at_checked(9)?;
                    meta.seq = u32::from_be_bytes(m[0..4].try_into().ok()?);
                    meta.timestamp = u32::from_be_bytes(m[4..8].try_into().ok()?);
                    meta.codec = m[8];
                    rest
                } else {
                    let back = self.k.saturating_sub(1).saturating_sub(i) as u32;
                    meta.seq = self.last_seq.wrapping_sub(back);
                    meta.timestamp = self
                        .last_timestamp
                        .wrapping_sub(back.wrapping_mul(u32::from(duration_ms) * 48));
                    meta.codec = self.last_codec;
                    rest
                };
                Some((meta, rest.get(..len)?))
            }
        }
    }
}
