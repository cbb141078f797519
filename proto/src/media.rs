//! The media packet: a fixed 22-byte header in clear, the (sealed) payload, and
//! an optional 4-byte [`QualityReport`] trailer.
//!
//! ```text
//! +----------------------+---------------------------------+------------------+
//! | MediaHeader (22 B)   | payload (AEAD ciphertext + tag) | QualityReport 4B |
//! +----------------------+---------------------------------+------------------+
//!                                                            only if flag QR
//! ```
//!
//! Every function here is allocation-free and panic-free on any input, because
//! stages call them on the real-time path. The byte layout is specified in
//! `docs/WIRE.md`; the constants below are the single source of truth in code.

use crate::error::WireError;

/// Wire version carried in byte 0 of every media packet.
pub const MEDIA_VERSION: u8 = 1;

/// Length of [`MediaHeader`] on the wire, in bytes.
pub const HEADER_LEN: usize = 22;

/// Length of the optional [`QualityReport`] trailer, in bytes.
pub const TRAILER_LEN: usize = 4;

/// Length of the AEAD nonce built by [`MediaHeader::nonce`].
pub const NONCE_LEN: usize = 12;

/// Bit of the nonce's `stream` byte (offset 4) set for a feedback report
/// (codec `0x40`): reports count their own `seq`, so their nonces must stay
/// apart from media nonces (bit 0 is the direction). docs/WIRE.md §1.3.
pub const NONCE_FEEDBACK: u8 = 0x02;

/// Maximum associated-data length: header plus trailer.
pub const MAX_AAD_LEN: usize = HEADER_LEN + TRAILER_LEN;

/// Bit flags in byte 1 of the media header.
///
/// Bits 5..=7 are reserved: a sender writes zero and a receiver rejects a
/// packet with any of them set ([`WireError::ReservedFlags`]). Bit 4
/// ([`Flags::COMPACT_REPAIR`]) was reserved before 2026-12-03: receivers
/// built before then reject packets that set it (docs/WIRE.md §1.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// The payload is an FEC repair symbol, not a source codec frame.
    pub const REPAIR: Flags = Flags(0x01);
    /// A 4-byte [`QualityReport`] trailer follows the payload.
    pub const QUALITY_REPORT: Flags = Flags(0x02);
    /// Sent by the responder of the call handshake (clear: by the initiator).
    /// Part of the AEAD nonce, so both directions may share one key safely.
    pub const FROM_RESPONDER: Flags = Flags(0x04);
    /// First frame of a talkspurt (after DTX/silence): the jitter buffer may
    /// re-anchor its playout point here.
    pub const TALKSPURT: Flags = Flags(0x08);
    /// With [`Flags::REPAIR`]: the repair symbol's block holds its source
    /// frames in the compact symbol layout (docs/WIRE.md §1.6). Meaningless
    /// without `REPAIR`. Receivers built before it was defined reject the
    /// packet (a reserved bit), so they lose the repair rather than misread
    /// it.
    pub const COMPACT_REPAIR: Flags = Flags(0x10);
    /// All bits that have a meaning in version 1.
    pub const KNOWN: Flags = Flags(0x1f);

    /// No flags set.
    pub const fn empty() -> Flags {
        Flags(0)
    }

    /// The raw byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Flags from a raw byte; `None` if a reserved bit is set.
    pub const fn from_bits(bits: u8) -> Option<Flags> {
        if bits & !Self::KNOWN.0 != 0 {
            None
        } else {
            Some(Flags(bits))
        }
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the bits of `other` set (`on`) or cleared.
    #[must_use]
    pub const fn with(self, other: Flags, on: bool) -> Flags {
        if on {
            Flags(self.0 | other.0)
        } else {
            Flags(self.0 & !other.0)
        }
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (Self::REPAIR, "REPAIR"),
            (Self::QUALITY_REPORT, "QUALITY_REPORT"),
            (Self::FROM_RESPONDER, "FROM_RESPONDER"),
            (Self::TALKSPURT, "TALKSPURT"),
            (Self::COMPACT_REPAIR, "COMPACT_REPAIR"),
        ];
        write!(f, "Flags(")?;
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    write!(f, " | ")?;
                }
                write!(f, "{name}")?;
                first = false;
            }
        }
        write!(f, ")")
    }
}

/// Codec identifier (byte 2 of the media header).
///
/// An open set: relays forward packets whose codec they do not know, and a
/// receiver that cannot decode a codec drops the frame and counts it. Values
/// are never reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodecId(pub u8);

impl CodecId {
    /// Opus at 48 kHz, any bitrate (the bitrate is in the Opus TOC, not here).
    pub const OPUS: CodecId = CodecId(0x01);
    /// Codec2 3200 bit/s, 8 kHz.
    pub const CODEC2_3200: CodecId = CodecId(0x10);
    /// Codec2 2400 bit/s, 8 kHz.
    pub const CODEC2_2400: CodecId = CodecId(0x11);
    /// Codec2 1600 bit/s, 8 kHz.
    pub const CODEC2_1600: CodecId = CodecId(0x12);
    /// Codec2 1400 bit/s, 8 kHz.
    pub const CODEC2_1400: CodecId = CodecId(0x13);
    /// Codec2 1300 bit/s, 8 kHz.
    pub const CODEC2_1300: CodecId = CodecId(0x14);
    /// Codec2 1200 bit/s, 8 kHz.
    pub const CODEC2_1200: CodecId = CodecId(0x15);
    /// Comfort noise: payload is one byte, the noise level in -dBov.
    pub const COMFORT_NOISE: CodecId = CodecId(0x20);
    /// Raw signed 16-bit little-endian PCM at 48 kHz (tests and loopback).
    pub const PCM_S16LE: CodecId = CodecId(0x30);
    /// Not audio: a receiver feedback report ([`crate::feedback`]), sealed
    /// like media and forwarded blindly by relays.
    pub const FEEDBACK: CodecId = CodecId(0x40);
    /// A source frame with a RaptorQ repair symbol riding in its packet
    /// ([`crate::riding`]): the payload names the frame's own codec.
    pub const WITH_REPAIR: CodecId = CodecId(0x41);

    /// The registered name of this codec, or `None` if this build does not know it.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x01 => "opus",
            0x10 => "codec2_3200",
            0x11 => "codec2_2400",
            0x12 => "codec2_1600",
            0x13 => "codec2_1400",
            0x14 => "codec2_1300",
            0x15 => "codec2_1200",
            0x20 => "comfort_noise",
            0x30 => "pcm_s16le",
            0x40 => "feedback",
            0x41 => "with_repair",
            _ => return None,
        })
    }

    /// Looks a codec up by its registered name.
    pub fn from_name(name: &str) -> Option<CodecId> {
        [
            Self::OPUS,
            Self::CODEC2_3200,
            Self::CODEC2_2400,
            Self::CODEC2_1600,
            Self::CODEC2_1400,
            Self::CODEC2_1300,
            Self::CODEC2_1200,
            Self::COMFORT_NOISE,
            Self::PCM_S16LE,
            Self::FEEDBACK,
            Self::WITH_REPAIR,
        ]
        .into_iter()
        .find(|c| c.name() == Some(name))
    }

    /// Audio (in 48 kHz samples) that a payload of this codec holds, read
    /// from the payload itself: an Opus packet's TOC byte (RFC 6716 §3.1:
    /// frame size times frame count), a Codec2 payload's length (a whole
    /// number of its mode's fixed-size frames), or 16-bit PCM's length.
    /// `None` for codecs that carry no audio or that this build does not
    /// know, and for payloads that do not say (an empty or truncated Opus
    /// packet, a Codec2 payload that is not a whole number of frames, more
    /// than 120 ms). The frame length is not
    /// in the media header: a sender may change it at any packet (docs/WIRE.md
    /// §6.1). Reads at most two bytes; never panics.
    pub fn frame_samples(self, payload: &[u8]) -> Option<u32> {
        match self {
            Self::OPUS => opus_packet_samples(payload),
            Self::CODEC2_3200 | Self::CODEC2_1600 => codec2_packet_samples(payload, 8, self),
            Self::CODEC2_2400 | Self::CODEC2_1200 => codec2_packet_samples(payload, 6, self),
            Self::CODEC2_1400 | Self::CODEC2_1300 => codec2_packet_samples(payload, 7, self),
            Self::PCM_S16LE => u32::try_from(payload.len() / 2).ok().filter(|&n| n > 0),
            _ => None,
        }
    }
}

/// Samples at 48 kHz in a Codec2 payload: a packet carries one or more
/// frames of its mode back to back (docs/WIRE.md §1), `frame_bytes` each
/// (the `codec2` crate's bits per frame, rounded up to whole bytes: 3200 and
/// 1600 8 B, 1400 and 1300 7 B, 2400 and 1200 6 B), 20 ms (3200, 2400) or
/// 40 ms (the others) each. `None` unless the length is a positive whole
/// number of frames holding at most 120 ms.
fn codec2_packet_samples(payload: &[u8], frame_bytes: usize, codec: CodecId) -> Option<u32> {
    let per_frame: usize = match codec {
        CodecId::CODEC2_3200 | CodecId::CODEC2_2400 => 960,
        _ => 1_920,
    };
    let frames = payload.len() / frame_bytes;
    let samples = frames * per_frame;
    (frames > 0 && payload.len() % frame_bytes == 0 && samples <= 5_760).then_some(samples as u32)
}

/// Samples at 48 kHz in an Opus packet, from its TOC byte (and, for a code 3
/// packet, the frame count byte after it). `None` when the packet is empty
/// or truncated, counts no frame, or exceeds the 120 ms Opus allows.
fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let per_frame: u32 = match config {
        // SILK-only: 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][usize::from(config & 3)],
        // Hybrid: 10, 20 ms.
        12..=15 => [480, 960][usize::from(config & 1)],
        // CELT-only: 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][usize::from(config & 3)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let samples = per_frame * frames;
    (frames > 0 && samples <= 5_760).then_some(samples)
}

impl std::fmt::Debug for CodecId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "CodecId({n})"),
            None => write!(f, "CodecId(0x{:02x})", self.0),
        }
    }
}

/// The clear-text header of every media packet. See `docs/WIRE.md` for the
/// byte layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MediaHeader {
    /// Flag bits; [`Flags::QUALITY_REPORT`] says whether a trailer follows.
    pub flags: Flags,
    /// Codec of the payload (of the source frames, for repair symbols).
    pub codec: CodecId,
    /// Which media key sealed the payload; bumped on every rekey.
    pub key_epoch: u8,
    /// Sender (stream) id, unique within a room or call.
    pub sender_id: u32,
    /// Per-sender packet counter; counts every packet, repair included, and
    /// never repeats within one key epoch (it is part of the nonce).
    pub seq: u32,
    /// Media clock in 48 kHz ticks (whatever the codec rate); wraps.
    pub timestamp: u32,
    /// FEC source block number; wraps.
    pub fec_block: u16,
    /// Symbol index within the FEC block (source symbols first, then repair).
    pub fec_symbol: u16,
    /// FEC repair overhead in percent of source symbols (0 = FEC off).
    pub fec_ratio: u8,
    /// Source symbols (frames) in this FEC block, so a receiver knows when
    /// a block can be decoded (0 = FEC off).
    pub fec_block_len: u8,
}

impl Default for MediaHeader {
    fn default() -> Self {
        MediaHeader {
            flags: Flags::empty(),
            codec: CodecId::OPUS,
            key_epoch: 0,
            sender_id: 0,
            seq: 0,
            timestamp: 0,
            fec_block: 0,
            fec_symbol: 0,
            fec_ratio: 0,
            fec_block_len: 0,
        }
    }
}

impl MediaHeader {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    ///
    /// Returns the number of bytes written ([`HEADER_LEN`]). Fails with
    /// [`WireError::BufferTooSmall`] if `out` is shorter. Never allocates.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let Some(out) = out.get_mut(..HEADER_LEN) else {
            return Err(WireError::BufferTooSmall {
                need: HEADER_LEN,
                have: out.len(),
            });
        };
        out.copy_from_slice(&self.to_bytes());
        Ok(HEADER_LEN)
    }

    /// The header as a fixed byte array.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = MEDIA_VERSION;
        b[1] = self.flags.bits();
        b[2] = self.codec.0;
        b[3] = self.key_epoch;
        b[4..8].copy_from_slice(&self.sender_id.to_be_bytes());
        b[8..12].copy_from_slice(&self.seq.to_be_bytes());
        b[12..16].copy_from_slice(&self.timestamp.to_be_bytes());
        b[16..18].copy_from_slice(&self.fec_block.to_be_bytes());
        b[18..20].copy_from_slice(&self.fec_symbol.to_be_bytes());
        b[20] = self.fec_ratio;
        b[21] = self.fec_block_len;
        b
    }

    /// Parses a header from the start of `buf` and returns it with the bytes
    /// that follow it (payload, then the trailer if [`Flags::QUALITY_REPORT`]
    /// is set; use [`split_trailer`] or [`MediaPacket::parse`] to separate them).
    ///
    /// Never panics and never allocates.
    pub fn parse(buf: &[u8]) -> Result<(MediaHeader, &[u8]), WireError> {
        let Some((head, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Err(WireError::TooShort {
                need: HEADER_LEN,
                have: buf.len(),
            });
        };
        if head[0] != MEDIA_VERSION {
            return Err(WireError::UnsupportedVersion(head[0]));
        }
        let flags = Flags::from_bits(head[1]).ok_or(WireError::ReservedFlags(head[1]))?;
        let u32_at =
            |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let u16_at = |i: usize| u16::from_be_bytes([head[i], head[i + 1]]);
        let header = MediaHeader {
            flags,
            codec: CodecId(head[2]),
            key_epoch: head[3],
            sender_id: u32_at(4),
            seq: u32_at(8),
            timestamp: u32_at(12),
            fec_block: u16_at(16),
            fec_symbol: u16_at(18),
            fec_ratio: head[20],
            fec_block_len: head[21],
        };
        if flags.contains(Flags::QUALITY_REPORT) && rest.len() < TRAILER_LEN {
            return Err(WireError::TrailerTooShort { have: rest.len() });
        }
        Ok((header, rest))
    }

    /// Whether the payload is an FEC repair symbol.
    pub fn is_repair(&self) -> bool {
        self.flags.contains(Flags::REPAIR)
    }

    /// Whether a [`QualityReport`] trailer follows the payload.
    pub fn has_quality_report(&self) -> bool {
        self.flags.contains(Flags::QUALITY_REPORT)
    }

    /// Whether the payload is a receiver feedback report (codec `0x40`,
    /// docs/WIRE.md §1.5): its `seq` counts reports, not frames.
    pub fn is_feedback(&self) -> bool {
        self.codec == CodecId::FEEDBACK
    }

    /// The 12-byte AEAD nonce for this packet:
    /// `sender_id (4, BE) | stream (1) | key_epoch (1) | symbol (2, BE) | seq (4, BE)`,
    /// where `stream` is the direction (bit 0: 1 if [`Flags::FROM_RESPONDER`]
    /// is set) plus [`NONCE_FEEDBACK`] (bit 1) for a feedback report
    /// ([`is_feedback`](Self::is_feedback)), and `symbol` is `fec_symbol`
    /// for a repair symbol ([`Flags::REPAIR`]), else 0.
    ///
    /// A source packet's `seq` is its frame's number; a repair symbol carries
    /// the `seq` of its block's last source frame and a `fec_symbol` of at
    /// least the block's source count (so never 0). A feedback report's
    /// `seq` is the sender's report counter, a sequence of its own: bit 1 of
    /// the `stream` byte keeps its nonces apart from every media nonce.
    /// Unique as long as the sender never repeats a source `seq`, a repair
    /// `(seq, fec_symbol)`, nor a report `seq`, under one key (rekey before
    /// a counter wraps or restarts).
    pub fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[0..4].copy_from_slice(&self.sender_id.to_be_bytes());
        n[4] = u8::from(self.flags.contains(Flags::FROM_RESPONDER))
            | if self.is_feedback() {
                NONCE_FEEDBACK
            } else {
                0
            };
        n[5] = self.key_epoch;
        if self.is_repair() {
            n[6..8].copy_from_slice(&self.fec_symbol.to_be_bytes());
        }
        n[8..12].copy_from_slice(&self.seq.to_be_bytes());
        n
    }
}

/// The 4-byte quality report a receiver piggybacks on its own media packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct QualityReport {
    /// Packet loss seen over the last report interval, percent (0..=100).
    pub loss_pct: u8,
    /// Round-trip time in units of 4 ms (0..=1020 ms).
    pub rtt_4ms: u8,
    /// Inter-arrival jitter in milliseconds (saturating at 255).
    pub jitter_ms: u8,
    /// Bitrate the receiver asks the sender not to exceed, kbit/s; 0 = no cap.
    pub bitrate_cap_kbps: u8,
}

impl QualityReport {
    /// Builds a report from natural units, saturating each field.
    pub fn from_measurements(loss_pct: f32, rtt_ms: u32, jitter_ms: u32, cap_kbps: u32) -> Self {
        let loss = if loss_pct.is_nan() {
            0.0
        } else {
            loss_pct.clamp(0.0, 100.0)
        };
        QualityReport {
            loss_pct: loss.round() as u8,
            rtt_4ms: (rtt_ms.div_ceil(4)).min(255) as u8,
            jitter_ms: jitter_ms.min(255) as u8,
            bitrate_cap_kbps: cap_kbps.min(255) as u8,
        }
    }

    /// Round-trip time in milliseconds.
    pub fn rtt_ms(&self) -> u16 {
        u16::from(self.rtt_4ms) * 4
    }

    /// The trailer bytes.
    pub fn to_bytes(&self) -> [u8; TRAILER_LEN] {
        [
            self.loss_pct,
            self.rtt_4ms,
            self.jitter_ms,
            self.bitrate_cap_kbps,
        ]
    }

    /// Parses a trailer; rejects a loss above 100 %.
    pub fn from_bytes(b: [u8; TRAILER_LEN]) -> Result<Self, WireError> {
        if b[0] > 100 {
            return Err(WireError::LossOutOfRange(b[0]));
        }
        Ok(QualityReport {
            loss_pct: b[0],
            rtt_4ms: b[1],
            jitter_ms: b[2],
            bitrate_cap_kbps: b[3],
        })
    }
}

/// Splits the bytes after the header into `(payload, trailer)`.
///
/// If `header.has_quality_report()`, the last [`TRAILER_LEN`] bytes are the
/// trailer. Never panics or allocates.
pub fn split_trailer<'a>(
    header: &MediaHeader,
    rest: &'a [u8],
) -> Result<(&'a [u8], Option<QualityReport>), WireError> {
    if !header.has_quality_report() {
        return Ok((rest, None));
    }
    let Some((payload, trailer)) = rest.split_last_chunk::<TRAILER_LEN>() else {
        return Err(WireError::TrailerTooShort { have: rest.len() });
    };
    Ok((payload, Some(QualityReport::from_bytes(*trailer)?)))
}

/// A parsed media packet borrowing from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaPacket<'a> {
    /// The clear header.
    pub header: MediaHeader,
    /// The exact header bytes as received (the AEAD associated data).
    pub header_bytes: &'a [u8; HEADER_LEN],
    /// The payload (ciphertext and tag, once sealed).
    pub payload: &'a [u8],
    /// The quality report trailer, if the flag is set.
    pub trailer: Option<QualityReport>,
}

impl<'a> MediaPacket<'a> {
    /// Parses a whole datagram. Never panics or allocates.
    pub fn parse(buf: &'a [u8]) -> Result<MediaPacket<'a>, WireError> {
        let (header, rest) = MediaHeader::parse(buf)?;
        let (payload, trailer) = split_trailer(&header, rest)?;
        let Some((header_bytes, _)) = buf.split_first_chunk::<HEADER_LEN>() else {
            // Unreachable: parse succeeded, so buf holds a full header.
            return Err(WireError::TooShort {
                need: HEADER_LEN,
                have: buf.len(),
            });
        };
        Ok(MediaPacket {
            header,
            header_bytes,
            payload,
            trailer,
        })
    }

    /// The AEAD associated data: header bytes, then the trailer bytes if any.
    pub fn associated_data(&self) -> Aad {
        Aad::new(self.header_bytes, self.trailer.as_ref())
    }
}

/// Writes a whole packet: header, payload, and trailer if `trailer` is `Some`
/// (the [`Flags::QUALITY_REPORT`] bit is set or cleared to match).
///
/// Returns the packet length. Never allocates.
pub fn encode_packet(
    header: &MediaHeader,
    payload: &[u8],
    trailer: Option<&QualityReport>,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let trailer_len = if trailer.is_some() { TRAILER_LEN } else { 0 };
    let need = HEADER_LEN + payload.len() + trailer_len;
    let Some(out) = out.get_mut(..need) else {
        return Err(WireError::BufferTooSmall {
            need,
            have: out.len(),
        });
    };
    let mut h = *header;
    h.flags = h.flags.with(Flags::QUALITY_REPORT, trailer.is_some());
    let (head, body) = out.split_at_mut(HEADER_LEN);
    h.encode_into(head)?;
    let (pay, tail) = body.split_at_mut(payload.len());
    pay.copy_from_slice(payload);
    if let Some(t) = trailer {
        tail.copy_from_slice(&t.to_bytes());
    }
    Ok(need)
}

/// Associated data for the media AEAD, on the stack: the 22 header bytes
/// followed by the 4 trailer bytes when a trailer is present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aad {
    buf: [u8; MAX_AAD_LEN],
    len: usize,
}

impl Aad {
    /// Builds the associated data from the encoded header and optional trailer.
    pub fn new(header: &[u8; HEADER_LEN], trailer: Option<&QualityReport>) -> Aad {
        let mut buf = [0u8; MAX_AAD_LEN];
        buf[..HEADER_LEN].copy_from_slice(header);
        let len = match trailer {
            Some(t) => {
                buf[HEADER_LEN..].copy_from_slice(&t.to_bytes());
                MAX_AAD_LEN
            }
            None => HEADER_LEN,
        };
        Aad { buf, len }
    }

    /// The associated-data bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_samples_come_from_the_payload_and_bad_payloads_say_nothing() {
        let cases: &[(CodecId, &[u8], Option<u32>, &str)] = &[
            // config << 3 | code: SILK WB 20 ms, 40 ms, 60 ms, one frame.
            (CodecId::OPUS, &[9 << 3, 0xaa], Some(960), "SILK 20 ms"),
            (CodecId::OPUS, &[10 << 3], Some(1920), "SILK 40 ms"),
            (CodecId::OPUS, &[11 << 3], Some(2880), "SILK 60 ms"),
            (CodecId::OPUS, &[1 << 3], Some(960), "SILK NB 20 ms"),
            (CodecId::OPUS, &[12 << 3], Some(480), "hybrid 10 ms"),
            (CodecId::OPUS, &[15 << 3], Some(960), "hybrid 20 ms"),
            (CodecId::OPUS, &[31 << 3], Some(960), "CELT 20 ms"),
            (CodecId::OPUS, &[28 << 3], Some(120), "CELT 2.5 ms"),
            (
                CodecId::OPUS,
                &[31 << 3 | 1],
                Some(1920),
                "two CELT 20 ms, code 1",
            ),
            (
                CodecId::OPUS,
                &[15 << 3 | 2, 1],
                Some(1920),
                "two hybrid 20 ms, code 2",
            ),
            (
                CodecId::OPUS,
                &[31 << 3 | 3, 3],
                Some(2880),
                "three CELT 20 ms, code 3",
            ),
            (
                CodecId::OPUS,
                &[11 << 3 | 3, 2],
                Some(5760),
                "two SILK 60 ms: 120 ms",
            ),
            (CodecId::OPUS, &[], None, "empty"),
            (
                CodecId::OPUS,
                &[31 << 3 | 3],
                None,
                "code 3 without its count byte",
            ),
            (
                CodecId::OPUS,
                &[31 << 3 | 3, 0],
                None,
                "code 3 counting no frame",
            ),
            (
                CodecId::OPUS,
                &[11 << 3 | 3, 3],
                None,
                "three SILK 60 ms: above 120 ms",
            ),
            (CodecId::OPUS, &[31 << 3 | 3, 0x3f], None, "63 CELT 20 ms"),
            (CodecId::CODEC2_3200, &[0; 8], Some(960), "Codec2 3200"),
            (
                CodecId::CODEC2_3200,
                &[0; 16],
                Some(1920),
                "two Codec2 3200",
            ),
            (
                CodecId::CODEC2_3200,
                &[0; 48],
                Some(5760),
                "six Codec2 3200",
            ),
            (CodecId::CODEC2_3200, &[0; 56], None, "seven 3200: 140 ms"),
            (CodecId::CODEC2_3200, &[0; 12], None, "3200, 1.5 frames"),
            (CodecId::CODEC2_3200, &[0; 6], None, "3200, short"),
            (CodecId::CODEC2_3200, &[], None, "3200, empty"),
            (CodecId::CODEC2_2400, &[0; 6], Some(960), "Codec2 2400"),
            (
                CodecId::CODEC2_2400,
                &[0; 36],
                Some(5760),
                "six Codec2 2400",
            ),
            (CodecId::CODEC2_2400, &[0; 8], None, "2400, 8 bytes"),
            (CodecId::CODEC2_2400, &[], None, "2400, empty"),
            (CodecId::CODEC2_1600, &[0; 8], Some(1920), "Codec2 1600"),
            (
                CodecId::CODEC2_1600,
                &[0; 24],
                Some(5760),
                "three Codec2 1600",
            ),
            (CodecId::CODEC2_1600, &[0; 32], None, "four 1600: 160 ms"),
            (CodecId::CODEC2_1400, &[0; 7], Some(1920), "Codec2 1400"),
            (
                CodecId::CODEC2_1400,
                &[0; 14],
                Some(3840),
                "two Codec2 1400",
            ),
            (CodecId::CODEC2_1400, &[0; 8], None, "1400, 8 bytes"),
            (
                CodecId::CODEC2_1300,
                &[0; 21],
                Some(5760),
                "three Codec2 1300",
            ),
            (CodecId::CODEC2_1300, &[0; 6], None, "1300, 6 bytes"),
            (CodecId::CODEC2_1200, &[0; 6], Some(1920), "Codec2 1200"),
            (
                CodecId::CODEC2_1200,
                &[0; 12],
                Some(3840),
                "two Codec2 1200",
            ),
            (
                CodecId::CODEC2_1200,
                &[0; 18],
                Some(5760),
                "three Codec2 1200",
            ),
            (CodecId::CODEC2_1200, &[0; 24], None, "four 1200: 160 ms"),
            (CodecId::CODEC2_1200, &[0; 8], None, "1200, 8 bytes"),
            (CodecId::CODEC2_1200, &[0; 5], None, "1200, short"),
            (CodecId::CODEC2_1200, &[], None, "1200, empty"),
            (CodecId::PCM_S16LE, &[0; 1920], Some(960), "PCM 20 ms"),
            (CodecId::PCM_S16LE, &[0], None, "PCM, less than a sample"),
            (CodecId::COMFORT_NOISE, &[40], None, "comfort noise"),
            (CodecId::FEEDBACK, &[1, 2, 3], None, "feedback report"),
            (CodecId(0), &[9 << 3], None, "unspecified codec"),
            (CodecId(0x99), &[9 << 3], None, "unknown codec"),
        ];
        for (codec, payload, want, what) in cases {
            assert_eq!(codec.frame_samples(payload), *want, "{what}");
        }
        // Every TOC byte, with and without a count byte: never panics, never
        // above 120 ms.
        for toc in 0..=255u8 {
            for tail in [&[][..], &[0xff][..], &[0x01][..]] {
                let mut p = vec![toc];
                p.extend_from_slice(tail);
                if let Some(n) = CodecId::OPUS.frame_samples(&p) {
                    assert!((120..=5_760).contains(&n), "{p:?}: {n}");
                }
            }
        }
        // Every Codec2 payload length up to 64 bytes: a whole number of the
        // mode's frames (bytes, ms each, as the codec2 crate makes them) up
        // to 120 ms says its length, nothing else does.
        let modes = [
            (CodecId::CODEC2_3200, 8, 20),
            (CodecId::CODEC2_2400, 6, 20),
            (CodecId::CODEC2_1600, 8, 40),
            (CodecId::CODEC2_1400, 7, 40),
            (CodecId::CODEC2_1300, 7, 40),
            (CodecId::CODEC2_1200, 6, 40),
        ];
        for (codec, bytes, ms) in modes {
            for len in 0..=64usize {
                let frames = len / bytes;
                let fits = len > 0 && len % bytes == 0 && frames * ms <= 120;
                let want = fits.then_some((frames * ms * 48) as u32);
                assert_eq!(
                    codec.frame_samples(&vec![0xa5; len]),
                    want,
                    "{codec:?}, {len} bytes"
                );
            }
        }
    }

    #[test]
    fn wire_example_matches_docs() {
        // The hex example in docs/WIRE.md.
        let h = MediaHeader {
            flags: Flags::QUALITY_REPORT | Flags::FROM_RESPONDER,
            codec: CodecId::OPUS,
            key_epoch: 2,
            sender_id: 0x0a0b_0c0d,
            seq: 0x0000_0102,
            timestamp: 0x0001_e000,
            fec_block: 0x0033,
            fec_symbol: 0x0004,
            fec_ratio: 50,
            fec_block_len: 0,
        };
        let mut out = [0u8; 64];
        let n = encode_packet(
            &h,
            &[0xde, 0xad],
            Some(&QualityReport {
                loss_pct: 3,
                rtt_4ms: 20,
                jitter_ms: 12,
                bitrate_cap_kbps: 32,
            }),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            hex::encode(&out[..n]),
            "010601020a0b0c0d000001020001e000003300043200dead03140c20"
        );
        assert_eq!(
            hex::encode(h.nonce()),
            "0a0b0c0d0102000000000102",
            "nonce layout"
        );
    }

    /// docs/WIRE.md §1.5: a feedback report's nonce, next to the media
    /// packet with the same sender, direction, epoch and seq.
    #[test]
    fn feedback_nonce_example_matches_docs() {
        let media = MediaHeader {
            flags: Flags::FROM_RESPONDER,
            codec: CodecId::OPUS,
            key_epoch: 2,
            sender_id: 0x0a0b_0c0d,
            seq: 7,
            ..MediaHeader::default()
        };
        let report = MediaHeader {
            codec: CodecId::FEEDBACK,
            ..media
        };
        assert!(report.is_feedback() && !media.is_feedback());
        assert_eq!(hex::encode(report.nonce()), "0a0b0c0d0302000000000007");
        assert_eq!(hex::encode(media.nonce()), "0a0b0c0d0102000000000007");
        let initiator = MediaHeader {
            flags: Flags::empty(),
            ..report
        };
        assert_eq!(hex::encode(initiator.nonce()), "0a0b0c0d0202000000000007");
    }
}
