//! A RaptorQ repair symbol riding in a source frame's packet: the sealed
//! payload of a media packet with codec id
//! [`CodecId::WITH_REPAIR`](crate::CodecId::WITH_REPAIR) (`0x41`).
//!
//! The packet's clear header is the source frame's (its `seq`, `timestamp`,
//! flags and FEC tag) with `codec = 0x41`; the payload holds the source
//! frame's codec and payload, then the repair's header fields (relative to
//! the carrier's where they can be) and its symbol. A repair sent in a
//! packet of its own costs a 22-byte header and a 16-byte AEAD tag; riding,
//! 10 bytes. Byte layout in `docs/WIRE.md` §1.7.
//!
//! ```text
//! +-------+---------+---------+------+------+-------+-------+-------+-------+-------+---------+--------+
//! | codec | src len | source  | form | seq  | ts    | fec   | fec   | fec   | fec   | [codec] | symbol |
//! | 1 B   | 1-2 B   | payload | 1 B  | back | back  | block | symb. | ratio | k     |  0/1 B  | 1+ B   |
//! |       |         |         |      | 1 B  | 2 B   | 2 B   | 2 B   | 1 B   | 1 B   |         |        |
//! +-------+---------+---------+------+------+-------+-------+-------+-------+-------+---------+--------+
//! ```
//!
//! Relays need none of it: they forward codec ids they do not know, and the
//! payload is sealed. A receiver of a build that does not know `0x41` would
//! drop the frame, so senders let repair ride only to receivers that say
//! they take it (`ReceiverInfo::riding_repair`, docs/WIRE.md §1.5).
//!
//! Encoding and parsing never allocate and never panic on any input.

use crate::CodecId;

/// Form bit: the repair's symbols are in the compact layout (docs/WIRE.md
/// §1.6; the `COMPACT_REPAIR` header flag of a repair packet).
pub const FORM_COMPACT: u8 = 0x01;
/// Form bit: the repair's codec byte follows (it differs from the source
/// frame's).
pub const FORM_CODEC: u8 = 0x02;

/// Bytes of the repair's fields after the source payload, without the
/// optional codec byte: form, seq back, timestamp back, block, symbol,
/// ratio, k.
pub const REPAIR_FIELDS_LEN: usize = 10;

/// Longest source payload a riding packet can say (two length bytes).
pub const MAX_SOURCE_LEN: usize = 0x7fff;

/// Most frames a repair's block may end before its carrier (the seq back
/// byte).
pub const MAX_SEQ_BACK: u32 = 255;

/// A repair symbol as a stand-alone repair packet's header would describe
/// it, and its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RidingRepair<'a> {
    /// `seq` of the block's last source frame.
    pub seq: u32,
    /// `timestamp` of the block's last source frame.
    pub timestamp: u32,
    /// Codec of the block's source frames.
    pub codec: CodecId,
    /// FEC source block number.
    pub fec_block: u16,
    /// Encoding symbol id: `fec_block_len` and up.
    pub fec_symbol: u16,
    /// Repair overhead in percent, 1 and up.
    pub fec_ratio: u8,
    /// Source symbols in the block, 1 and up.
    pub fec_block_len: u8,
    /// The block's symbols are in the compact layout.
    pub compact: bool,
    /// The repair symbol (at least one byte).
    pub symbol: &'a [u8],
}

/// A riding packet's payload, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Riding<'a> {
    /// The source frame's codec.
    pub codec: CodecId,
    /// The source frame's payload.
    pub payload: &'a [u8],
    /// The repair that rode with it.
    pub repair: RidingRepair<'a>,
}

/// Why a riding payload could not be written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RidingError {
    /// The payload ends inside a field.
    #[error("riding repair payload truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the fields read so far need.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The source codec is one no frame can carry here (feedback, or this
    /// codec itself).
    #[error("codec 0x{0:02x} cannot ride as a source frame")]
    SourceCodec(u8),
    /// A length written in two bytes that fits in one (each payload has one
    /// encoding).
    #[error("source length {0} written in two bytes")]
    LongLength(usize),
    /// Form bits other than compact and codec set.
    #[error("reserved form bits set in 0x{0:02x}")]
    ReservedForm(u8),
    /// The codec byte is written though it is the source frame's.
    #[error("repair codec written though it is the source frame's")]
    SameCodec,
    /// A repair symbol id below the block's source symbols, a block of no
    /// source symbols, or a ratio of 0.
    #[error("not a repair: symbol {symbol} of a block of {k} at ratio {ratio} %")]
    NotRepair {
        /// `fec_symbol`.
        symbol: u16,
        /// `fec_block_len`.
        k: u8,
        /// `fec_ratio`.
        ratio: u8,
    },
    /// No symbol bytes after the fields.
    #[error("riding repair has an empty symbol")]
    EmptySymbol,
    /// Writing: the repair's block ends more than [`MAX_SEQ_BACK`] frames,
    /// or 65535 timestamp ticks, before the carrier (or after it), or the
    /// source payload is longer than [`MAX_SOURCE_LEN`].
    #[error("repair too far from its carrier, or source too long, to ride")]
    OutOfReach,
    /// Writing: the output buffer is too small.
    #[error("output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], RidingError> {
    let end = *at + n;
    let s = b.get(*at..end).ok_or(RidingError::Truncated {
        need: end,
        have: b.len(),
    })?;
    *at = end;
    Ok(s)
}

fn can_ride(codec: CodecId) -> bool {
    codec != CodecId::FEEDBACK && codec != CodecId::WITH_REPAIR
}

/// Bytes [`encode_riding`] writes for a source payload of `source_len`
/// bytes and a repair symbol of `symbol_len`, with the codec byte when
/// `codec_byte`.
pub fn riding_len(source_len: usize, symbol_len: usize, codec_byte: bool) -> usize {
    1 + if source_len < 0x80 { 1 } else { 2 }
        + source_len
        + REPAIR_FIELDS_LEN
        + usize::from(codec_byte)
        + symbol_len
}

/// Parses the payload of a packet with codec `0x41` whose header says
/// `carrier_seq` and `carrier_ts`. Never panics, never allocates.
pub fn parse_riding(
    payload: &[u8],
    carrier_seq: u32,
    carrier_ts: u32,
) -> Result<Riding<'_>, RidingError> {
    let mut at = 0;
    let codec = CodecId(take(payload, &mut at, 1)?[0]);
    if !can_ride(codec) {
        return Err(RidingError::SourceCodec(codec.0));
    }
    let first = take(payload, &mut at, 1)?[0];
    let len = if first & 0x80 == 0 {
        usize::from(first)
    } else {
        let len = usize::from(first & 0x7f) << 8 | usize::from(take(payload, &mut at, 1)?[0]);
        if len < 0x80 {
            return Err(RidingError::LongLength(len));
        }
        len
    };
    let source = take(payload, &mut at, len)?;
    let f = take(payload, &mut at, REPAIR_FIELDS_LEN)?;
    let form = f[0];
    if form & !(FORM_COMPACT | FORM_CODEC) != 0 {
        return Err(RidingError::ReservedForm(form));
    }
    let seq_back = u32::from(f[1]);
    let ts_back = u32::from(u16::from_be_bytes([f[2], f[3]]));
    let fec_block = u16::from_be_bytes([f[4], f[5]]);
    let fec_symbol = u16::from_be_bytes([f[6], f[7]]);
    let (fec_ratio, fec_block_len) = (f[8], f[9]);
    if fec_block_len == 0 || fec_ratio == 0 || fec_symbol < u16::from(fec_block_len) {
        return Err(RidingError::NotRepair {
            symbol: fec_symbol,
            k: fec_block_len,
            ratio: fec_ratio,
        });
    }
    let repair_codec = if form & FORM_CODEC != 0 {
        let c = CodecId(take(payload, &mut at, 1)?[0]);
        if c == codec {
            return Err(RidingError::SameCodec);
        }
        c
    } else {
        codec
    };
    let symbol = &payload[at..];
    if symbol.is_empty() {
        return Err(RidingError::EmptySymbol);
    }
    Ok(Riding {
        codec,
        payload: source,
        repair: RidingRepair {
            seq: carrier_seq.wrapping_sub(seq_back),
            timestamp: carrier_ts.wrapping_sub(ts_back),
            codec: repair_codec,
            fec_block,
            fec_symbol,
            fec_ratio,
            fec_block_len,
            compact: form & FORM_COMPACT != 0,
            symbol,
        },
    })
}

/// The bytes [`encode_riding`] would write for `riding` in a packet whose
/// header says `carrier_seq` and `carrier_ts`, or why it would refuse:
/// what a sender asks before it reserves room (a refused repair goes in a
/// packet of its own).
pub fn riding_check(
    riding: &Riding<'_>,
    carrier_seq: u32,
    carrier_ts: u32,
) -> Result<usize, RidingError> {
    let r = &riding.repair;
    if !can_ride(riding.codec) {
        return Err(RidingError::SourceCodec(riding.codec.0));
    }
    if r.fec_block_len == 0 || r.fec_ratio == 0 || r.fec_symbol < u16::from(r.fec_block_len) {
        return Err(RidingError::NotRepair {
            symbol: r.fec_symbol,
            k: r.fec_block_len,
            ratio: r.fec_ratio,
        });
    }
    if r.symbol.is_empty() {
        return Err(RidingError::EmptySymbol);
    }
    let seq_back = carrier_seq.wrapping_sub(r.seq);
    let ts_back = carrier_ts.wrapping_sub(r.timestamp);
    let len = riding.payload.len();
    if seq_back > MAX_SEQ_BACK || ts_back > u32::from(u16::MAX) || len > MAX_SOURCE_LEN {
        return Err(RidingError::OutOfReach);
    }
    Ok(riding_len(len, r.symbol.len(), r.codec != riding.codec))
}

/// Writes `riding` as the payload of a packet whose header says
/// `carrier_seq` and `carrier_ts`, into `out`; returns the bytes written.
/// Refuses what the layout cannot say ([`RidingError::OutOfReach`]: the
/// repair's block ends too far before the carrier; the sender then sends
/// the repair in a packet of its own) and what a parser would refuse.
pub fn encode_riding(
    riding: &Riding<'_>,
    carrier_seq: u32,
    carrier_ts: u32,
    out: &mut [u8],
) -> Result<usize, RidingError> {
    let need = riding_check(riding, carrier_seq, carrier_ts)?;
    if out.len() < need {
        return Err(RidingError::BufferTooSmall {
            need,
            have: out.len(),
        });
    }
    let r = &riding.repair;
    let seq_back = carrier_seq.wrapping_sub(r.seq);
    let ts_back = carrier_ts.wrapping_sub(r.timestamp);
    let len = riding.payload.len();
    let codec_byte = r.codec != riding.codec;
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&[riding.codec.0]);
    if len < 0x80 {
        put(&[len as u8]);
    } else {
        put(&[0x80 | (len >> 8) as u8, len as u8]);
    }
    put(riding.payload);
    let form = if r.compact { FORM_COMPACT } else { 0 } | if codec_byte { FORM_CODEC } else { 0 };
    put(&[form, seq_back as u8]);
    put(&(ts_back as u16).to_be_bytes());
    put(&r.fec_block.to_be_bytes());
    put(&r.fec_symbol.to_be_bytes());
    put(&[r.fec_ratio, r.fec_block_len]);
    if codec_byte {
        put(&[r.codec.0]);
    }
    put(r.symbol);
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(payload: &'a [u8], symbol: &'a [u8]) -> Riding<'a> {
        Riding {
            codec: CodecId::OPUS,
            payload,
            repair: RidingRepair {
                seq: 98,
                timestamp: 960 * 98,
                codec: CodecId::OPUS,
                fec_block: 49,
                fec_symbol: 2,
                fec_ratio: 100,
                fec_block_len: 2,
                compact: true,
                symbol,
            },
        }
    }

    #[test]
    fn wire_example_matches_docs() {
        // docs/WIRE.md §1.7: an Opus frame of 3 bytes carried as seq 100,
        // timestamp 96000, with the first repair symbol (4 bytes) of block
        // 49 (frames 97-98, compact, 100 %).
        let r = sample(&[0x0b, 0x01, 0x02], &[0xaa, 0xbb, 0xcc, 0xdd]);
        let mut out = [0u8; 64];
        let n = encode_riding(&r, 100, 96_000, &mut out).unwrap();
        let want: [u8; 19] = [
            0x01, 0x03, 0x0b, 0x01, 0x02, // codec, length, source payload
            0x01, 0x02, 0x07, 0x80, // form (compact), seq back 2, ts back 1920
            0x00, 0x31, 0x00, 0x02, 0x64, 0x02, // block 49, symbol 2, 100 %, k 2
            0xaa, 0xbb, 0xcc, 0xdd, // the symbol
        ];
        assert_eq!(&out[..n], &want[..]);
        assert_eq!(n, riding_len(3, 4, false));
        assert_eq!(parse_riding(&want, 100, 96_000), Ok(r));
    }

    #[test]
    fn round_trips_long_sources_other_codecs_and_wrapping_fields() {
        let source = [7u8; 300];
        let symbol = [9u8; 310];
        let mut r = sample(&source, &symbol);
        r.repair.codec = CodecId::CODEC2_1200;
        r.repair.compact = false;
        // The carrier's seq and timestamp wrapped since the block's end.
        r.repair.seq = u32::MAX - 1;
        r.repair.timestamp = u32::MAX - 959;
        let mut out = [0u8; 1500];
        let n = encode_riding(&r, 3, 3 * 960, &mut out).unwrap();
        assert_eq!(n, riding_len(300, 310, true));
        assert_eq!(out[1], 0x81);
        assert_eq!(out[2], 44);
        assert_eq!(parse_riding(&out[..n], 3, 3 * 960), Ok(r));
    }

    #[test]
    fn what_the_layout_cannot_say_is_not_written() {
        let mut out = [0u8; 64];
        let r = sample(&[1, 2], &[3]);
        // 256 frames back.
        assert_eq!(
            encode_riding(&r, 98 + 256, 960 * 99, &mut out),
            Err(RidingError::OutOfReach)
        );
        // A carrier before its repair's block.
        assert_eq!(
            encode_riding(&r, 97, 960 * 97, &mut out),
            Err(RidingError::OutOfReach)
        );
        assert!(matches!(
            encode_riding(&r, 100, 960 * 100, &mut out[..5]),
            Err(RidingError::BufferTooSmall { .. })
        ));
        let mut fb = r;
        fb.codec = CodecId::FEEDBACK;
        assert_eq!(
            encode_riding(&fb, 100, 960 * 100, &mut out),
            Err(RidingError::SourceCodec(0x40))
        );
        let mut src = r;
        src.repair.fec_symbol = 1;
        assert!(matches!(
            encode_riding(&src, 100, 960 * 100, &mut out),
            Err(RidingError::NotRepair { .. })
        ));
        let empty = sample(&[1], &[]);
        assert_eq!(
            encode_riding(&empty, 100, 960 * 100, &mut out),
            Err(RidingError::EmptySymbol)
        );
    }

    #[test]
    fn bad_input_is_rejected_with_its_reason() {
        let good: [u8; 19] = [
            0x01, 0x03, 0x0b, 0x01, 0x02, 0x01, 0x02, 0x07, 0x80, 0x00, 0x31, 0x00, 0x02, 0x64,
            0x02, 0xaa, 0xbb, 0xcc, 0xdd,
        ];
        let with = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            b
        };
        let cases: Vec<(Vec<u8>, RidingError)> = vec![
            (vec![], RidingError::Truncated { need: 1, have: 0 }),
            (vec![0x01], RidingError::Truncated { need: 2, have: 1 }),
            (
                good[..4].to_vec(),
                RidingError::Truncated { need: 5, have: 4 },
            ),
            (
                good[..14].to_vec(),
                RidingError::Truncated { need: 15, have: 14 },
            ),
            (good[..15].to_vec(), RidingError::EmptySymbol),
            (with(0, 0x40).to_vec(), RidingError::SourceCodec(0x40)),
            (with(0, 0x41).to_vec(), RidingError::SourceCodec(0x41)),
            (vec![0x01, 0x80, 0x03, 1, 2, 3], RidingError::LongLength(3)),
            (with(5, 0x05).to_vec(), RidingError::ReservedForm(0x05)),
            (with(5, 0x80).to_vec(), RidingError::ReservedForm(0x80)),
            (
                with(12, 0x01).to_vec(),
                RidingError::NotRepair {
                    symbol: 1,
                    k: 2,
                    ratio: 100,
                },
            ),
            (
                with(13, 0).to_vec(),
                RidingError::NotRepair {
                    symbol: 2,
                    k: 2,
                    ratio: 0,
                },
            ),
            (
                with(14, 0).to_vec(),
                RidingError::NotRepair {
                    symbol: 2,
                    k: 0,
                    ratio: 100,
                },
            ),
            // The codec byte named, equal to the source's.
            (
                {
                    let mut b = with(5, FORM_CODEC).to_vec();
                    b.insert(15, 0x01);
                    b
                },
                RidingError::SameCodec,
            ),
            // The codec byte named, and nothing after it.
            (
                with(5, FORM_CODEC)[..15].to_vec(),
                RidingError::Truncated { need: 16, have: 15 },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                parse_riding(&bytes, 100, 96_000),
                Err(want),
                "input {bytes:02x?}"
            );
        }
        assert!(parse_riding(&good, 100, 96_000).is_ok());
    }
}
