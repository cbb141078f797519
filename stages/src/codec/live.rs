//! Live encoder settings: a lock-free cell the control side writes and
//! `codec.opus_encode` reads before every frame, so the quality controller
//! can retune bit rate, DRED, the loss hint and LBRR without rebuilding the
//! stage (the encoder keeps its state: no glitch, no reset).
//!
//! The settings pack into one `AtomicU64`: a frame sees either the old or
//! the new set, never half of each. The stage compares the packed value with
//! the one it applied last and runs the `opus_encoder_ctl` calls only on a
//! change (plain field writes in libopus: no allocation, no lock), before
//! encoding the next frame, so a change applies within one frame.
//!
//! Frame duration and codec (Opus <-> Codec2) changes live in a second
//! cell, [`CodecLive`], read by `codec.adaptive_encode` (which holds both
//! codecs); `codec.opus_encode` cannot change them live.
//!
//! ```
//! use std::sync::Arc;
//! use wzp_stages::codec::live::{LiveOpusSettings, OpusLive};
//! let cell = Arc::new(OpusLive::new());
//! // resources.insert("enc_live", cell.clone()); then the stage's
//! // `live_settings = "enc_live"` param; later, from the control side:
//! cell.set(LiveOpusSettings { bitrate: 16_000, dred_ms: 1000, expected_loss: 20, inband_fec: false })
//!     .unwrap();
//! assert_eq!(cell.get().unwrap().bitrate, 16_000);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use super::profile::Profile;

/// The Opus encoder settings that may change mid-call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveOpusSettings {
    /// Bits per second, 500..=512000, a multiple of 100.
    pub bitrate: u32,
    /// DRED window, ms, 0..=1040 in 10 ms steps.
    pub dred_ms: u32,
    /// Expected loss told to the encoder, percent 0..=100 (sizes LBRR and
    /// DRED).
    pub expected_loss: u8,
    /// LBRR in-band FEC.
    pub inband_fec: bool,
}

const PRESENT: u64 = 1 << 40;

impl LiveOpusSettings {
    /// Checks the ranges; the error says which value is wrong and how.
    pub fn validate(&self) -> Result<(), String> {
        if !(500..=512_000).contains(&self.bitrate) || self.bitrate % 100 != 0 {
            return Err(format!(
                "live bitrate {} is not a multiple of 100 in 500..=512000",
                self.bitrate
            ));
        }
        if self.dred_ms > 1040 || self.dred_ms % 10 != 0 {
            return Err(format!(
                "live dred_ms {} is not a multiple of 10 in 0..=1040",
                self.dred_ms
            ));
        }
        if self.expected_loss > 100 {
            return Err(format!(
                "live expected_loss {} is above 100 %",
                self.expected_loss
            ));
        }
        Ok(())
    }

    fn pack(&self) -> u64 {
        u64::from(self.bitrate / 100)
            | (u64::from(self.dred_ms / 10) << 16)
            | (u64::from(self.expected_loss) << 24)
            | (u64::from(self.inband_fec) << 32)
            | PRESENT
    }

    fn unpack(v: u64) -> Option<LiveOpusSettings> {
        if v & PRESENT == 0 {
            return None;
        }
        Some(LiveOpusSettings {
            bitrate: (v & 0xffff) as u32 * 100,
            dred_ms: ((v >> 16) & 0xff) as u32 * 10,
            expected_loss: ((v >> 24) & 0xff) as u8,
            inband_fec: (v >> 32) & 1 == 1,
        })
    }
}

/// The shared cell (an engine resource). Single writer or last writer wins.
#[derive(Debug, Default)]
pub struct OpusLive(AtomicU64);

impl OpusLive {
    /// An empty cell: the stage keeps its build-time settings until the
    /// first `set`.
    pub fn new() -> OpusLive {
        OpusLive::default()
    }

    /// Publishes new settings; refused (and nothing changes) when a value is
    /// out of range.
    pub fn set(&self, s: LiveOpusSettings) -> Result<(), String> {
        s.validate()?;
        self.0.store(s.pack(), Ordering::Release);
        Ok(())
    }

    /// The settings last published, if any.
    pub fn get(&self) -> Option<LiveOpusSettings> {
        LiveOpusSettings::unpack(self.0.load(Ordering::Acquire))
    }

    /// The raw packed value (0 before the first `set`), for cheap change
    /// detection on the real-time side.
    pub(crate) fn raw(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn decode(raw: u64) -> Option<LiveOpusSettings> {
        LiveOpusSettings::unpack(raw)
    }
}

/// The codec choice that may change mid-call: which profile's codec to send
/// (Opus, or Codec2 in one of its modes) and the frame duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveCodecSettings {
    /// A row of the profile table (docs/PROFILES.md). For an Opus profile
    /// its bit rate applies when the profile changes (a later
    /// [`OpusLive`] change overrides it); for a Codec2 one, its mode.
    pub profile: &'static Profile,
    /// Packet duration, ms: 10, 20, 40 or 60 for Opus (one frame each);
    /// for Codec2 a whole number of the mode's frames up to 120 ms (3200:
    /// 20, 40, .., 120; 1200: 40, 80, 120), sent together in one packet
    /// so the per-packet overhead fits a narrow path (docs/PROFILES.md).
    pub frame_ms: u32,
}

impl LiveCodecSettings {
    /// The profile with its own frame duration.
    pub fn of(profile: &'static Profile) -> LiveCodecSettings {
        LiveCodecSettings {
            profile,
            frame_ms: profile.frame_ms,
        }
    }

    /// Checks the packet duration fits the codec; the error says what
    /// would.
    pub fn validate(&self) -> Result<(), String> {
        match self.profile.codec2_mode() {
            Some(m) if m.packet_frames(self.frame_ms).is_none() => {
                let fits: Vec<String> = (1..=m.max_packet_frames())
                    .map(|k| (k as u32 * m.frame_ms()).to_string())
                    .collect();
                Err(format!(
                    "live frame_ms {} does not fit {:?}: Codec2 in that mode sends {} ms \
                     frames, up to 120 ms of them per packet; use {}",
                    self.frame_ms,
                    self.profile.name,
                    m.frame_ms(),
                    fits.join(", ")
                ))
            }
            None if ![10, 20, 40, 60].contains(&self.frame_ms) => Err(format!(
                "live frame_ms {} is not an Opus frame size wzp uses; use 10, 20, 40 or 60",
                self.frame_ms
            )),
            _ => Ok(()),
        }
    }

    fn pack(&self) -> u64 {
        u64::from(self.profile.id) | (u64::from(self.frame_ms) << 8) | PRESENT
    }

    fn unpack(v: u64) -> Option<LiveCodecSettings> {
        if v & PRESENT == 0 {
            return None;
        }
        Some(LiveCodecSettings {
            profile: Profile::by_id((v & 0xff) as u8)?,
            frame_ms: ((v >> 8) & 0xff) as u32,
        })
    }
}

/// The codec cell (an engine resource), written by the control side or a
/// `quality.adapt` stage, read by `codec.adaptive_encode` before every
/// frame. Single writer or last writer wins.
#[derive(Debug, Default)]
pub struct CodecLive(AtomicU64);

impl CodecLive {
    /// An empty cell: the stage keeps its build-time profile until the
    /// first `set`.
    pub fn new() -> CodecLive {
        CodecLive::default()
    }

    /// Publishes a new codec choice; refused (nothing changes) when the
    /// frame duration does not fit the codec.
    pub fn set(&self, s: LiveCodecSettings) -> Result<(), String> {
        s.validate()?;
        self.0.store(s.pack(), Ordering::Release);
        Ok(())
    }

    /// The choice last published, if any.
    pub fn get(&self) -> Option<LiveCodecSettings> {
        LiveCodecSettings::unpack(self.0.load(Ordering::Acquire))
    }

    /// The raw packed value (0 before the first `set`).
    pub(crate) fn raw(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn decode(raw: u64) -> Option<LiveCodecSettings> {
        LiveCodecSettings::unpack(raw)
    }
}

impl TryFrom<&crate::quality::controller::Settings> for LiveCodecSettings {
    type Error = String;

    /// The codec part of a controller decision.
    fn try_from(s: &crate::quality::controller::Settings) -> Result<LiveCodecSettings, String> {
        let profile = Profile::by_name(s.tier)
            .ok_or_else(|| format!("tier {:?} is not a profile", s.tier))?;
        let l = LiveCodecSettings {
            profile,
            frame_ms: s.frame_ms,
        };
        l.validate()?;
        Ok(l)
    }
}

impl From<&crate::quality::controller::Settings> for LiveOpusSettings {
    /// The encoder part of a controller decision (Opus tiers).
    fn from(s: &crate::quality::controller::Settings) -> LiveOpusSettings {
        LiveOpusSettings {
            bitrate: s.bitrate.clamp(500, 512_000) / 100 * 100,
            dred_ms: s.dred_ms.min(1040) / 10 * 10,
            expected_loss: s.loss_hint.min(100),
            inband_fec: s.lbrr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_cell_round_trips_every_profile_and_refuses_frames_that_do_not_fit() {
        let cell = CodecLive::new();
        assert_eq!(cell.get(), None);
        for p in crate::codec::profile::PROFILES {
            cell.set(LiveCodecSettings::of(p)).unwrap();
            assert_eq!(cell.get(), Some(LiveCodecSettings::of(p)));
        }
        let good = Profile::by_name("good").unwrap();
        let poor = Profile::by_name("poor").unwrap();
        for ms in [10, 40, 60] {
            let s = LiveCodecSettings {
                profile: good,
                frame_ms: ms,
            };
            cell.set(s).unwrap();
            assert_eq!(cell.get(), Some(s));
        }
        let catastrophic = Profile::by_name("catastrophic").unwrap();
        // Codec2: any whole number of the mode's frames up to 120 ms.
        let fits = [
            (poor, 20),
            (poor, 40),
            (poor, 60),
            (poor, 80),
            (poor, 100),
            (poor, 120),
            (catastrophic, 40),
            (catastrophic, 80),
            (catastrophic, 120),
        ];
        for (profile, frame_ms) in fits {
            let s = LiveCodecSettings { profile, frame_ms };
            cell.set(s).unwrap();
            assert_eq!(cell.get(), Some(s));
        }
        let poor_fits = "use 20, 40, 60, 80, 100, 120";
        let catastrophic_fits = "use 40, 80, 120";
        let bad = [
            (good, 30, "10, 20, 40 or 60"),
            (good, 0, "10, 20, 40 or 60"),
            (good, 80, "10, 20, 40 or 60"),
            (good, 120, "10, 20, 40 or 60"),
            (poor, 0, poor_fits),
            (poor, 10, poor_fits),
            (poor, 30, poor_fits),
            (poor, 140, poor_fits),
            (poor, 255, poor_fits),
            (catastrophic, 20, catastrophic_fits),
            (catastrophic, 60, catastrophic_fits),
            (catastrophic, 100, catastrophic_fits),
            (catastrophic, 160, catastrophic_fits),
            (catastrophic, 0, catastrophic_fits),
        ];
        cell.set(LiveCodecSettings {
            profile: good,
            frame_ms: 60,
        })
        .unwrap();
        for (profile, frame_ms, why) in bad {
            let e = cell
                .set(LiveCodecSettings { profile, frame_ms })
                .unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        assert_eq!(
            cell.get().unwrap().frame_ms,
            60,
            "refused sets change nothing"
        );
    }

    #[test]
    fn pack_round_trip_and_range_checks() {
        let cell = OpusLive::new();
        assert_eq!(cell.get(), None);
        for s in [
            LiveOpusSettings {
                bitrate: 500,
                dred_ms: 0,
                expected_loss: 0,
                inband_fec: false,
            },
            LiveOpusSettings {
                bitrate: 512_000,
                dred_ms: 1040,
                expected_loss: 100,
                inband_fec: true,
            },
        ] {
            cell.set(s).unwrap();
            assert_eq!(cell.get(), Some(s));
        }
        let good = LiveOpusSettings {
            bitrate: 24_000,
            dred_ms: 200,
            expected_loss: 10,
            inband_fec: false,
        };
        let bad = [
            (
                "bitrate",
                LiveOpusSettings {
                    bitrate: 400,
                    ..good
                },
            ),
            (
                "bitrate",
                LiveOpusSettings {
                    bitrate: 24_050,
                    ..good
                },
            ),
            (
                "dred_ms",
                LiveOpusSettings {
                    dred_ms: 1050,
                    ..good
                },
            ),
            (
                "dred_ms",
                LiveOpusSettings {
                    dred_ms: 15,
                    ..good
                },
            ),
            (
                "expected_loss",
                LiveOpusSettings {
                    expected_loss: 101,
                    ..good
                },
            ),
        ];
        for (what, s) in bad {
            let e = cell.set(s).unwrap_err();
            assert!(e.contains(what), "{e}");
        }
        assert_eq!(
            cell.get().unwrap().bitrate,
            512_000,
            "refused sets change nothing"
        );
    }
}
