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
//! Frame duration and codec (Opus <-> Codec2) changes need a different
//! stage or buffer size: they go through `Graph::reconfigure`, not here.
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
