//! Quality profiles shared by senders and receivers.
//!
//! A profile names a codec configuration. Its `id` travels in every
//! [`FrameMeta::codec`](wzp_engine::port::FrameMeta) so a receiver knows how
//! to decode a frame without signalling: Opus packets describe themselves
//! (any Opus id decodes with the same decoder), Codec2 frames do not (the id
//! says which mode). Ids are part of the wire contract: never renumber one,
//! only add. `docs/PROFILES.md` is the human-readable copy of this table.

/// Which codec a profile uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Opus,
    /// Codec2 at the given mode's bit rate (3200 or 1200 bps).
    Codec2 {
        mode: Codec2Mode,
    },
}

/// The Codec2 modes wzp uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec2Mode {
    /// 3200 bps, 20 ms frames of 64 bits.
    M3200,
    /// 1200 bps, 40 ms frames of 48 bits.
    M1200,
}

impl Codec2Mode {
    /// Bytes in one encoded frame.
    pub const fn frame_bytes(self) -> usize {
        match self {
            Codec2Mode::M3200 => 8,
            Codec2Mode::M1200 => 6,
        }
    }

    /// Samples at 8 kHz in one frame.
    pub const fn frame_samples_8k(self) -> usize {
        match self {
            Codec2Mode::M3200 => 160,
            Codec2Mode::M1200 => 320,
        }
    }

    pub const fn frame_ms(self) -> u32 {
        match self {
            Codec2Mode::M3200 => 20,
            Codec2Mode::M1200 => 40,
        }
    }

    /// Most frames one packet carries: 120 ms of them (docs/WIRE.md §1).
    pub const fn max_packet_frames(self) -> usize {
        (120 / self.frame_ms()) as usize
    }

    /// Frames in a packet of `packet_ms`: a whole number of frames, one to
    /// [`Self::max_packet_frames`]; `None` for any other duration.
    pub const fn packet_frames(self, packet_ms: u32) -> Option<usize> {
        let f = self.frame_ms();
        if packet_ms == 0 || packet_ms % f != 0 || packet_ms > 120 {
            None
        } else {
            Some((packet_ms / f) as usize)
        }
    }

    /// Frames in a payload of `len` bytes: a whole number of frames, one to
    /// [`Self::max_packet_frames`]; `None` for any other length.
    pub const fn payload_frames(self, len: usize) -> Option<usize> {
        let b = self.frame_bytes();
        if len == 0 || len % b != 0 || len / b > self.max_packet_frames() {
            None
        } else {
            Some(len / b)
        }
    }

    pub(crate) fn to_lib(self) -> codec2::Codec2Mode {
        match self {
            Codec2Mode::M3200 => codec2::Codec2Mode::MODE_3200,
            Codec2Mode::M1200 => codec2::Codec2Mode::MODE_1200,
        }
    }
}

/// One row of the profile table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The `profile` param value, lower case.
    pub name: &'static str,
    /// Profile id, as named in signaling. 0 is never used ("unspecified").
    /// Frames carry [`Profile::wire_codec`], not this.
    pub id: u8,
    pub codec: Codec,
    /// Target bit rate of the codec payload, bits per second.
    pub bitrate: u32,
    /// Frame duration, milliseconds.
    pub frame_ms: u32,
    /// Suggested RaptorQ repair ratio for the FEC stage, repair symbols per
    /// 100 source symbols. Lower-rate profiles are chosen when the path is
    /// bad, and their frames are small, so they can afford more repair.
    pub fec_ratio_percent: u8,
    /// Default DRED window for Opus profiles, ms (0: off). DRED takes its
    /// bits out of the target rate, and libopus only spends them above about
    /// 12 kbps, so the low-rate profiles leave it off.
    pub dred_ms: u32,
    /// Default expected loss, percent, told to the Opus encoder (it sizes
    /// LBRR and DRED from it).
    pub expected_loss: u8,
}

/// The profile table. Names are unique, ids are unique and never reused.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "good",
        id: 1,
        codec: Codec::Opus,
        bitrate: 24_000,
        frame_ms: 20,
        fec_ratio_percent: 20,
        dred_ms: 200,
        expected_loss: 10,
    },
    Profile {
        name: "fair",
        id: 2,
        codec: Codec::Opus,
        bitrate: 16_000,
        frame_ms: 20,
        fec_ratio_percent: 30,
        dred_ms: 200,
        expected_loss: 15,
    },
    Profile {
        name: "degraded",
        id: 3,
        codec: Codec::Opus,
        bitrate: 6_000,
        frame_ms: 40,
        fec_ratio_percent: 50,
        dred_ms: 0,
        expected_loss: 20,
    },
    Profile {
        name: "poor",
        id: 4,
        codec: Codec::Codec2 {
            mode: Codec2Mode::M3200,
        },
        bitrate: 3_200,
        frame_ms: 20,
        fec_ratio_percent: 50,
        dred_ms: 0,
        expected_loss: 0,
    },
    Profile {
        name: "catastrophic",
        id: 5,
        codec: Codec::Codec2 {
            mode: Codec2Mode::M1200,
        },
        bitrate: 1_200,
        frame_ms: 40,
        fec_ratio_percent: 100,
        dred_ms: 0,
        expected_loss: 0,
    },
    Profile {
        name: "studio_32k",
        id: 6,
        codec: Codec::Opus,
        bitrate: 32_000,
        frame_ms: 20,
        fec_ratio_percent: 10,
        dred_ms: 100,
        expected_loss: 5,
    },
    Profile {
        name: "studio_48k",
        id: 7,
        codec: Codec::Opus,
        bitrate: 48_000,
        frame_ms: 20,
        fec_ratio_percent: 10,
        dred_ms: 100,
        expected_loss: 5,
    },
    Profile {
        name: "studio_64k",
        id: 8,
        codec: Codec::Opus,
        bitrate: 64_000,
        frame_ms: 20,
        fec_ratio_percent: 10,
        dred_ms: 100,
        expected_loss: 5,
    },
];

/// Most bytes a media datagram adds around one codec payload: the media
/// header, a RaptorQ symbol header (a repair frame is the block's largest
/// frame plus it), the AEAD tag and a quality-report trailer.
pub const DATAGRAM_OVERHEAD: usize = wzp_proto::media::HEADER_LEN
    + crate::fec::block::HEADER
    + crate::crypto::TAG_LEN
    + wzp_proto::media::TRAILER_LEN;

/// The packet-size cap of the Opus encoder at `bitrate` and `frame_ms`: four
/// times the nominal frame, at least 320 bytes (room for VBR peaks, LBRR and
/// DRED), at most Opus's 1275. libopus lowers the rate of a frame that would
/// not fit rather than fail, so speech never hits it in practice; it makes
/// the profile's datagram size a bound, not a guess.
pub const fn opus_payload_cap(bitrate: u32, frame_ms: u32) -> usize {
    let nominal = (bitrate as usize * frame_ms as usize) / 8000;
    let cap = nominal * 4;
    if cap < 320 {
        320
    } else if cap > 1275 {
        1275
    } else {
        cap
    }
}

impl Profile {
    /// Largest codec payload of one frame: the Opus encoder's cap, or the
    /// fixed Codec2 frame.
    pub const fn max_payload_bytes(&self) -> usize {
        match self.codec {
            Codec::Opus => opus_payload_cap(self.bitrate, self.frame_ms),
            Codec::Codec2 { mode } => mode.frame_bytes(),
        }
    }

    /// Largest datagram this profile sends (payload + [`DATAGRAM_OVERHEAD`]).
    pub const fn max_datagram_bytes(&self) -> usize {
        self.max_payload_bytes() + DATAGRAM_OVERHEAD
    }

    /// `self` when its datagrams fit a path that takes `limit`-byte
    /// datagrams; otherwise the profile of highest bit rate that fits
    /// (studio tiers only where they fit); `None` when nothing fits.
    pub fn fitting(&'static self, limit: usize) -> Option<&'static Profile> {
        if self.max_datagram_bytes() <= limit {
            return Some(self);
        }
        PROFILES
            .iter()
            .filter(|p| p.max_datagram_bytes() <= limit)
            .max_by_key(|p| p.bitrate)
    }

    /// Looks a profile up by its param name.
    pub fn by_name(name: &str) -> Option<&'static Profile> {
        PROFILES.iter().find(|p| p.name == name)
    }

    /// Looks a profile up by its id (as named in signaling, e.g. QualityUpdate).
    pub fn by_id(id: u8) -> Option<&'static Profile> {
        PROFILES.iter().find(|p| p.id == id)
    }

    /// The codec id this profile's frames carry in `FrameMeta::codec` and in
    /// the media header ([`wzp_proto::media::CodecId`]): the codec and mode,
    /// which is all a receiver needs to decode. The profile itself (bit rate,
    /// frame size) is the sender's choice and travels in signaling.
    pub fn wire_codec(&self) -> u8 {
        use wzp_proto::media::CodecId;
        match self.codec {
            Codec::Opus => CodecId::OPUS.0,
            Codec::Codec2 {
                mode: Codec2Mode::M3200,
            } => CodecId::CODEC2_3200.0,
            Codec::Codec2 {
                mode: Codec2Mode::M1200,
            } => CodecId::CODEC2_1200.0,
        }
    }

    /// The Codec2 mode a wire codec id names, if any.
    pub fn codec2_mode_of_wire(id: u8) -> Option<Codec2Mode> {
        use wzp_proto::media::CodecId;
        match CodecId(id) {
            CodecId::CODEC2_3200 => Some(Codec2Mode::M3200),
            CodecId::CODEC2_1200 => Some(Codec2Mode::M1200),
            _ => None,
        }
    }

    pub fn is_opus(&self) -> bool {
        self.codec == Codec::Opus
    }

    pub fn codec2_mode(&self) -> Option<Codec2Mode> {
        match self.codec {
            Codec::Codec2 { mode } => Some(mode),
            Codec::Opus => None,
        }
    }
}

/// Whether a frame with wire codec id `id` can go to the Opus decoder. 0
/// means "unspecified" (an upstream that does not set it) and is tried as Opus.
pub fn is_opus_id(id: u8) -> bool {
    id == 0 || id == wzp_proto::media::CodecId::OPUS.0
}

/// Profile names of one codec family, for error messages.
pub(crate) fn names_where(pred: impl Fn(&Profile) -> bool) -> Vec<&'static str> {
    PROFILES
        .iter()
        .filter(|p| pred(p))
        .map(|p| p.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_fits_the_smallest_quic_path() {
        // QUIC paths carry at least 1200-byte UDP payloads; quinn's largest
        // DATAGRAM on such a path is a little over 1150 bytes.
        for p in PROFILES {
            assert!(
                p.max_datagram_bytes() <= 1100,
                "{}: {} bytes",
                p.name,
                p.max_datagram_bytes()
            );
            assert_eq!(p.fitting(1100), Some(p));
        }
    }

    #[test]
    fn a_narrow_path_gets_the_best_profile_that_fits() {
        let studio = Profile::by_name("studio_64k").unwrap();
        let limit = Profile::by_name("studio_32k").unwrap().max_datagram_bytes();
        assert!(studio.max_datagram_bytes() > limit);
        assert_eq!(studio.fitting(limit).unwrap().name, "studio_32k");
        let good = Profile::by_name("good").unwrap();
        assert_eq!(good.fitting(good.max_datagram_bytes()), Some(good));
        // Only Codec2 fits below the Opus minimum cap.
        let tiny = DATAGRAM_OVERHEAD + 8;
        assert_eq!(good.fitting(tiny).unwrap().name, "poor");
        assert_eq!(good.fitting(DATAGRAM_OVERHEAD), None);
        assert_eq!(opus_payload_cap(6_000, 40), 320);
        assert_eq!(opus_payload_cap(64_000, 20), 640);
        assert_eq!(opus_payload_cap(512_000, 60), 1275);
    }

    #[test]
    fn names_and_ids_are_unique_and_nonzero() {
        for (i, a) in PROFILES.iter().enumerate() {
            assert_ne!(a.id, 0, "{} uses the reserved id 0", a.name);
            for b in &PROFILES[i + 1..] {
                assert_ne!(a.id, b.id, "{} and {} share an id", a.name, b.name);
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn codec2_rows_match_their_mode() {
        for p in PROFILES {
            if let Some(m) = p.codec2_mode() {
                assert_eq!(p.frame_ms, m.frame_ms(), "{}", p.name);
                assert_eq!(
                    p.bitrate as usize,
                    m.frame_bytes() * 8 * 1000 / m.frame_ms() as usize,
                    "{}",
                    p.name
                );
            }
        }
    }

    #[test]
    fn packet_frames_agree_with_the_wire() {
        for p in PROFILES {
            let Some(m) = p.codec2_mode() else { continue };
            let id = wzp_proto::media::CodecId(p.wire_codec());
            // The receiver's depacketizer reads the same count from the
            // payload's length as the decoder does.
            for len in 0..=64 {
                assert_eq!(
                    m.payload_frames(len).map(|k| k as u32 * m.frame_ms() * 48),
                    id.frame_samples(&vec![0; len]),
                    "{}: {len} bytes",
                    p.name
                );
            }
            for ms in 0..=255 {
                let k = m.packet_frames(ms);
                assert_eq!(
                    k.is_some(),
                    ms > 0 && ms <= 120 && ms % m.frame_ms() == 0,
                    "{}: {ms} ms",
                    p.name
                );
                if let Some(k) = k {
                    assert_eq!(k as u32 * m.frame_ms(), ms);
                    assert_eq!(m.payload_frames(k * m.frame_bytes()), Some(k));
                }
            }
        }
    }

    #[test]
    fn lookup() {
        assert_eq!(Profile::by_name("good").unwrap().bitrate, 24_000);
        assert_eq!(Profile::by_id(5).unwrap().name, "catastrophic");
        assert!(Profile::by_name("GOOD").is_none());
        assert!(is_opus_id(0) && is_opus_id(1) && !is_opus_id(0x10) && !is_opus_id(200));
        assert_eq!(Profile::by_name("catastrophic").unwrap().wire_codec(), 0x15);
        assert_eq!(Profile::by_name("poor").unwrap().wire_codec(), 0x10);
        assert_eq!(Profile::by_name("studio_64k").unwrap().wire_codec(), 0x01);
    }
}
