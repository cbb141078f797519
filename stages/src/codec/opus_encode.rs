//! `codec.opus_encode`: PCM in, Opus frames (optionally with LBRR and DRED
//! redundancy) out.
//!
//! Input samples are gathered until one Opus frame is complete, so frames
//! need not match the graph quantum: a 40 ms frame spans two 20 ms quanta, a
//! 10 ms frame yields two frames per 20 ms quantum.
//!
//! **Ports**
//! - in `in`: `Pcm@48000`, mono.
//! - out `out`: `Frame`. One item per encoded frame: `seq` (+1 per frame, from
//!   0), `timestamp` (first sample, at 48 kHz, from 0), `codec` (the profile's
//!   id, see `docs/PROFILES.md`), `duration_ms`, `stream` (param),
//!   flags `STREAM_START` on the first frame and `DTX` on the 1-2 byte frames
//!   the encoder emits in DTX silence (a packetizer may skip sending those).
//!
//! **Params** (0 or -1 means "take it from the profile")
//! - `profile` = `"good"`: an Opus row of the profile table.
//! - `bitrate` = 0: bits per second, 500..=512000.
//! - `frame_ms` = 0: 10, 20, 40 or 60.
//! - `complexity` = 9: 0..=10.
//! - `application` = `"voip"`: `"voip"` or `"audio"`.
//! - `lsb_depth` = 16: bits of real resolution in the input, 8..=24. The
//!   samples arrive as floats, for which libopus assumes 24 bits; a 16-bit
//!   microphone or WAV (and the resampler's noise below it) then reads as
//!   content, so the encoder spends bits coding the noise floor and, from
//!   16 kHz speech upsampled to 48 kHz, detects a fullband signal and codes
//!   the empty band above 8 kHz. At 16 (what libopus's own int16 API sets)
//!   the clean 24 kb/s chain scores 4.13 PESQ-WB instead of 3.88, with 16 %
//!   fewer bytes (docs/QUALITY.md, finding 11). 24 for a source that truly
//!   has 24 bits.
//! - `expected_loss` = -1: percent, 0..=100; sizes LBRR and DRED.
//! - `inband_fec` = false: LBRR, a low-rate copy of the previous frame.
//! - `dred_ms` = -1: DRED window, 0 (off)..=1040, a multiple of 10. libopus
//!   only spends bits on DRED when `expected_loss` > 0 and the bit rate is
//!   above ~12 kbps.
//! - `dtx` = false: discontinuous transmission in silence.
//! - `stream` = 0: written to `FrameMeta::stream`.
//! - `max_packet_bytes` = 0: cap on one packet, 8..=1275; 0 = four times the
//!   nominal frame, at least 320 (`profile::opus_payload_cap`). libopus
//!   lowers a frame's rate to fit, so the profile's datagram size is a bound
//!   (`Profile::max_datagram_bytes`) a path can be checked against.
//! - `live_settings` = `""`: name of an `Arc<codec::live::OpusLive>` resource
//!   (the control plane's, or else one the graph's stages share by that
//!   name, e.g. with a `quality.adapt` stage). When set, the bit rate, DRED window, expected loss and LBRR published
//!   in it are applied before the next frame is encoded, without rebuilding
//!   the stage (the quality controller's decisions). The packet cap stays
//!   the one computed at build.
//!
//! **Counters**: `frames_encoded`, `bytes_encoded`, `dtx_frames`,
//! `encode_errors`, `dropped_full` (output batch full), `live_updates`
//! (live settings applied), `live_errors` (a ctl libopus refused).
//!
//! **Latency**: the encoder lookahead (6.5 ms) plus the part of a frame that
//! waits beyond the quantum the graph already buffers:
//! `lookahead + max(0, frame_ms - quantum)`.
//!
//! ```toml
//! [[stage]]
//! id = "enc"
//! kind = "codec.opus_encode"
//! params = { profile = "good", dred_ms = 200, expected_loss = 20 }
//! ```

use std::sync::Arc;
use std::time::Duration;

use opusic_sys as sys;
use wzp_engine::prelude::*;

use super::live::OpusLive;
use super::opus_ffi::Encoder;
use super::profile::{names_where, Profile};
use crate::cell::optional_cell;

pub struct OpusEncodeFactory;

const KIND: &str = "codec.opus_encode";

/// Settings resolved from params and profile.
#[derive(Clone, Debug, PartialEq)]
pub struct OpusEncodeSettings {
    pub profile: &'static Profile,
    pub bitrate: i32,
    pub frame_ms: u32,
    pub complexity: i32,
    pub application: i32,
    /// Bits of resolution in the input (`OPUS_SET_LSB_DEPTH`).
    pub lsb_depth: i32,
    pub expected_loss: i32,
    pub inband_fec: bool,
    pub dred_ms: u32,
    pub dtx: bool,
    pub stream: u32,
    pub max_packet_bytes: usize,
}

pub(crate) fn opus_profile(p: &Params) -> Result<&'static Profile, BuildError> {
    let name = p.str("profile")?;
    match Profile::by_name(name) {
        Some(pr) if pr.is_opus() => Ok(pr),
        Some(pr) => Err(ParamError::new(
            "profile",
            format!(
                "{:?} is a Codec2 profile; use codec.codec2_encode/codec2_decode for it, or one of: {}",
                pr.name,
                names_where(Profile::is_opus).join(", ")
            ),
        )
        .into()),
        None => Err(ParamError::new(
            "profile",
            format!(
                "{name:?} is not a profile; use one of: {}",
                names_where(Profile::is_opus).join(", ")
            ),
        )
        .into()),
    }
}

/// `frame_ms` param: 0 means the profile's; else one of the Opus sizes.
pub(crate) fn opus_frame_ms(p: &Params, profile: &Profile) -> Result<u32, BuildError> {
    match p.int("frame_ms")? {
        0 => Ok(profile.frame_ms),
        v @ (10 | 20 | 40 | 60) => Ok(v as u32),
        v => Err(ParamError::new(
            "frame_ms",
            format!("{v} is not an Opus frame size wzp uses; use 10, 20, 40 or 60 (or 0 for the profile's)"),
        )
        .into()),
    }
}

impl OpusEncodeSettings {
    pub fn from_params(p: &Params) -> Result<Self, BuildError> {
        let profile = opus_profile(p)?;
        let bitrate = match p.int("bitrate")? {
            0 => profile.bitrate as i32,
            _ => p.int_in("bitrate", 500, 512_000)? as i32,
        };
        let frame_ms = opus_frame_ms(p, profile)?;
        let complexity = p.int_in("complexity", 0, 10)? as i32;
        let application = match p.choice("application", &["voip", "audio"])? {
            "voip" => sys::OPUS_APPLICATION_VOIP,
            _ => sys::OPUS_APPLICATION_AUDIO,
        };
        let lsb_depth = p.int_in("lsb_depth", 8, 24)? as i32;
        let expected_loss = match p.int("expected_loss")? {
            -1 => i32::from(profile.expected_loss),
            _ => p.int_in("expected_loss", 0, 100)? as i32,
        };
        let dred_ms = match p.int("dred_ms")? {
            -1 => profile.dred_ms,
            _ => {
                let v = p.int_in("dred_ms", 0, 1040)?;
                if v % 10 != 0 {
                    return Err(ParamError::new(
                        "dred_ms",
                        format!("{v} is not a multiple of 10; DRED works in 10 ms steps"),
                    )
                    .into());
                }
                v as u32
            }
        };
        let stream = p.int_in("stream", 0, u32::MAX as i64)? as u32;
        let max_packet_bytes = match p.int("max_packet_bytes")? {
            0 => super::profile::opus_payload_cap(bitrate as u32, frame_ms),
            _ => p.int_in("max_packet_bytes", 8, 1275)? as usize,
        };
        Ok(OpusEncodeSettings {
            max_packet_bytes,
            profile,
            bitrate,
            frame_ms,
            complexity,
            application,
            lsb_depth,
            expected_loss,
            inband_fec: p.bool("inband_fec")?,
            dred_ms,
            dtx: p.bool("dtx")?,
            stream,
        })
    }

    /// An encoder configured with these settings.
    pub fn encoder(&self) -> Result<Encoder, String> {
        let mut enc = Encoder::new(self.application)?;
        enc.set(sys::OPUS_SET_BITRATE_REQUEST, self.bitrate)?;
        enc.set(sys::OPUS_SET_COMPLEXITY_REQUEST, self.complexity)?;
        enc.set(sys::OPUS_SET_PACKET_LOSS_PERC_REQUEST, self.expected_loss)?;
        enc.set(sys::OPUS_SET_INBAND_FEC_REQUEST, i32::from(self.inband_fec))?;
        enc.set(sys::OPUS_SET_DTX_REQUEST, i32::from(self.dtx))?;
        enc.set(sys::OPUS_SET_SIGNAL_REQUEST, sys::OPUS_SIGNAL_VOICE)?;
        enc.set(sys::OPUS_SET_LSB_DEPTH_REQUEST, self.lsb_depth)?;
        // Units of 10 ms.
        enc.set(
            sys::OPUS_SET_DRED_DURATION_REQUEST,
            (self.dred_ms / 10) as i32,
        )?;
        Ok(enc)
    }
}

impl StageFactory for OpusEncodeFactory {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: KIND,
            summary: "Opus encoder (libopus 1.6) with LBRR, DRED and DTX; frames of 10-60 ms",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Pcm@48000",
                doc: "mono speech",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "one Opus packet per frame, seq/timestamp/codec/duration set",
            }],
            params: vec![
                ParamSpec::str(
                    "profile",
                    "good",
                    "quality profile (docs/PROFILES.md); sets the defaults below",
                ),
                ParamSpec::int("bitrate", 0, "bits per second, 500..=512000; 0 = profile's"),
                ParamSpec::int("frame_ms", 0, "10, 20, 40 or 60; 0 = profile's"),
                ParamSpec::int("complexity", 9, "encoder complexity 0..=10"),
                ParamSpec::str("application", "voip", "\"voip\" or \"audio\""),
                ParamSpec::int(
                    "lsb_depth",
                    16,
                    "bits of real resolution in the input, 8..=24 (16: 16-bit sources)",
                ),
                ParamSpec::int(
                    "expected_loss",
                    -1,
                    "expected packet loss, percent; -1 = profile's",
                ),
                ParamSpec::bool(
                    "inband_fec",
                    false,
                    "LBRR in-band FEC (copy of the previous frame)",
                ),
                ParamSpec::int(
                    "dred_ms",
                    -1,
                    "DRED window 0..=1040 ms in 10 ms steps; -1 = profile's",
                ),
                ParamSpec::bool("dtx", false, "discontinuous transmission in silence"),
                ParamSpec::int("stream", 0, "stream id written to each frame"),
                ParamSpec::int(
                    "max_packet_bytes",
                    0,
                    "cap on one packet, 8..=1275; 0 = 4x the nominal frame, at least 320",
                ),
                ParamSpec::str(
                    "live_settings",
                    "",
                    "name of an OpusLive cell (shared with e.g. quality.adapt) whose settings apply from the next frame",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let s = OpusEncodeSettings::from_params(p)?;
        let quantum = cx.samples_at(48_000);
        if quantum == 0 {
            return Err(BuildError::Other(
                "the graph quantum holds no whole 48 kHz sample; use a quantum of at least 1 ms"
                    .into(),
            ));
        }
        let live = optional_cell::<OpusLive>(cx, p, "live_settings", "an OpusLive")?;
        let mut enc = s.encoder().map_err(BuildError::Other)?;
        let lookahead = enc
            .get(sys::OPUS_GET_LOOKAHEAD_REQUEST)
            .map_err(BuildError::Other)?;
        let frame_samples = s.frame_ms as usize * 48;
        let wait = frame_samples.saturating_sub(quantum);
        let latency =
            Duration::from_nanos((lookahead.max(0) as u64 + wait as u64) * 1_000_000_000 / 48_000);
        let processor = OpusEncodeProc {
            enc,
            frame: vec![0.0; frame_samples].into_boxed_slice(),
            filled: 0,
            seq: 0,
            timestamp: 0,
            codec: s.profile.wire_codec(),
            duration_ms: s.frame_ms as u8,
            stream: s.stream,
            max_packet_bytes: s.max_packet_bytes,
            first: true,
            live,
            live_applied: 0,
            live_updates: cx.counter("live_updates"),
            live_errors: cx.counter("live_errors"),
            frames_encoded: cx.counter("frames_encoded"),
            bytes_encoded: cx.counter("bytes_encoded"),
            dtx_frames: cx.counter("dtx_frames"),
            encode_errors: cx.counter("encode_errors"),
            dropped_full: cx.counter("dropped_full"),
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Pcm { rate: 48_000 })],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency,
            processor: Box::new(processor),
        })
    }
}

struct OpusEncodeProc {
    enc: Encoder,
    frame: Box<[f32]>,
    filled: usize,
    seq: u32,
    timestamp: u32,
    codec: u8,
    duration_ms: u8,
    stream: u32,
    max_packet_bytes: usize,
    first: bool,
    live: Option<Arc<OpusLive>>,
    /// Packed live settings last applied (0: none yet).
    live_applied: u64,
    live_updates: Counter,
    live_errors: Counter,
    frames_encoded: Counter,
    bytes_encoded: Counter,
    dtx_frames: Counter,
    encode_errors: Counter,
    dropped_full: Counter,
}

impl OpusEncodeProc {
    /// Applies the live settings when they changed since the last frame.
    fn apply_live(&mut self) {
        let Some(cell) = self.live.as_deref() else {
            return;
        };
        let raw = cell.raw();
        if raw == self.live_applied {
            return;
        }
        self.live_applied = raw;
        let Some(l) = OpusLive::decode(raw) else {
            return;
        };
        let mut ok = true;
        for (req, v) in [
            (sys::OPUS_SET_BITRATE_REQUEST, l.bitrate as i32),
            (
                sys::OPUS_SET_PACKET_LOSS_PERC_REQUEST,
                i32::from(l.expected_loss),
            ),
            (sys::OPUS_SET_INBAND_FEC_REQUEST, i32::from(l.inband_fec)),
            (sys::OPUS_SET_DRED_DURATION_REQUEST, (l.dred_ms / 10) as i32),
        ] {
            ok &= self.enc.set_quiet(req, v);
        }
        if ok {
            self.live_updates.inc();
        } else {
            self.live_errors.inc();
        }
    }

    fn emit(&mut self, out: &mut Option<&mut Batch<FrameMeta>>) {
        self.apply_live();
        let n = self.frame.len() as u32;
        let mut meta = FrameMeta {
            seq: self.seq,
            timestamp: self.timestamp,
            stream: self.stream,
            codec: self.codec,
            duration_ms: self.duration_ms,
            ..Default::default()
        };
        // Seq and timestamp advance even when the frame cannot be delivered,
        // so the receiver sees the gap as loss rather than a time shift.
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(n);
        let Some(slot) = out.as_deref_mut().and_then(Batch::push_slot) else {
            self.dropped_full.inc();
            return;
        };
        let cap = self.max_packet_bytes.min(MAX_ITEM_BYTES);
        match self
            .enc
            .encode_float(&self.frame, &mut slot.buf_mut()[..cap])
        {
            Ok(len) => {
                slot.set_len(len);
                if self.first {
                    meta.flags |= frame_flags::STREAM_START;
                    self.first = false;
                }
                // libopus signals "nothing worth sending" in DTX with 1-2 byte packets.
                if len <= 2 {
                    meta.flags |= frame_flags::DTX;
                    self.dtx_frames.inc();
                }
                slot.meta = meta;
                self.frames_encoded.inc();
                self.bytes_encoded.add(len as u64);
            }
            Err(_) => {
                if let Some(b) = out.as_deref_mut() {
                    b.pop();
                }
                self.encode_errors.inc();
            }
        }
    }
}

impl Processor for OpusEncodeProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (input, mut out) = io.pcm_in_frames_out(0, 0);
        let mut rest = input;
        while !rest.is_empty() {
            let take = (self.frame.len() - self.filled).min(rest.len());
            self.frame[self.filled..self.filled + take].copy_from_slice(&rest[..take]);
            self.filled += take;
            rest = &rest[take..];
            if self.filled == self.frame.len() {
                self.emit(&mut out);
                self.filled = 0;
            }
        }
        Flow::Continue
    }
}
