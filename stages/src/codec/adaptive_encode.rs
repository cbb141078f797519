//! `codec.adaptive_encode`: PCM in, Opus or Codec2 frames out, switching
//! codec, tier and frame size mid-stream when its live cells say so.
//!
//! The stage holds both encoders. Opus runs as in `codec.opus_encode`
//! (same params, same live Opus settings); Codec2 runs in a worker thread
//! (the `codec2` crate allocates) that encodes the decimated input in both
//! wzp modes all the time, so a switch to Codec2 starts from a warm encoder
//! with frames already made. Every packet leaves with one `seq` and media
//! clock for the whole stream (`seq` +1 per packet, `timestamp` the running
//! sum of packet durations at 48 kHz), whatever the codec: a receiver sees a
//! codec change as nothing but the `codec` id (docs/WIRE.md §1), with no gap
//! to conceal. `codec.adaptive_decode` decodes such a stream.
//!
//! **Codec2 packets.** On Codec2 the codec cell's `frame_ms` is the packet
//! duration: a whole number k of the mode's frames up to 120 ms (1200: 40,
//! 80 or 120 ms; 3200: 20 to 120 ms in 20 ms steps). The stage gathers k
//! worker frames and sends them as one item: the k frames back to back as
//! the payload (k × 6 or k × 8 bytes), `duration_ms` k × the frame, the
//! timestamp advancing by the whole packet, one `seq`. A receiver counts
//! the frames by the payload's length (docs/WIRE.md §1). Each datagram
//! costs about 68 bytes of header, tag and QUIC framing, so Codec2 1200 in
//! 40 ms packets needs ~15 kbit/s on the wire, in 120 ms packets ~5.7.
//! A change of k applies from the next packet; a change of codec or mode
//! with a packet partly filled sends that packet at once, shorter (the
//! audio is not dropped, and the media clock stays the sum of what was
//! sent).
//!
//! **Switching.** The codec cell ([`CodecLive`], param `codec_live`) is read
//! once per cycle, before any frame of the cycle leaves:
//! - to Codec2: from this cycle on, the Codec2 frames the worker finished
//!   go out, or into the packet being filled (in 1200 mode, whose 40 ms
//!   frames finish every other cycle, the one finished last cycle if none
//!   finished in this one, so the stream does not pause); a partly filled
//!   Opus frame is dropped.
//! - to Opus (or the other Codec2 mode): a Codec2 packet partly filled
//!   leaves first, shorter; the next Opus frame to complete goes out; the
//!   Opus encoder's state is reset first (the far decoder resets on the
//!   codec change too); its settings stay, DRED's duration among them
//!   (which libopus's own reset clears: [`Encoder::reset`]).
//! - Opus frame size (10/20/40/60 ms, e.g. `degraded`'s 40 ms): applies from
//!   the next frame boundary; Codec2 packet duration: from the next packet.
//!   A new Opus profile also sets its bit rate; the Opus cell
//!   (`live_settings`) overrides it when it changes after.
//!
//! The codecs' own delays differ (Codec2 about 36 ms more: its analysis
//! window, the resampler and the worker hop), so a switch to Codec2 repeats
//! about that much speech and a switch back skips it: no frame is lost.
//!
//! **Ports**
//! - in `in`: `Pcm@48000`, mono.
//! - out `out`: `Frame`: `seq`, `timestamp`, `codec` (`0x01` Opus, `0x10`
//!   Codec2 3200, `0x15` Codec2 1200; a Codec2 item holds one to six
//!   frames), `duration_ms`, `stream`;
//!   `STREAM_START` on the first, `DTX` on 1-2 byte Opus frames.
//!
//! **Params**: every `codec.opus_encode` param (`profile` is the Opus tier
//! the stream starts on; `live_settings` names the Opus cell), and
//! - `codec_live` = `""`: name of an `Arc<codec::live::CodecLive>` resource
//!   (shared with `quality.adapt`'s `codec_live`) holding the profile to
//!   send and the frame (Opus) or packet (Codec2) duration. Empty: the
//!   stage stays on `profile`.
//!
//! **Counters**: as `codec.opus_encode` (`frames_encoded`, `bytes_encoded`,
//! `dtx_frames`, `encode_errors`, `dropped_full`, `live_updates`,
//! `live_errors`, all for Opus), and `codec2_frames_out` (frames sent),
//! `codec2_packets_out` (items they left in),
//! `codec2_frames_encoded` (worker, both modes), `codec2_errors`,
//! `codec2_ring_overflow_samples` (worker stalled: input dropped),
//! `codec2_worker_dropped`, `codec_switches` (Opus <-> Codec2 or between
//! Codec2 modes), `frame_size_switches` (Opus frame duration or Codec2
//! frames per packet wanted), `live_codec_errors`
//! (a codec cell value that could not apply). **Gauges**: `codec` (the wire
//! id in force), `frame_ms` (the frame or packet duration wanted).
//!
//! **Latency** (declared): Opus's, as `codec.opus_encode` at `profile`.
//! While Codec2 is on, `codec.codec2_encode`'s (one quantum + 22 ms + the
//! part of a 40 ms frame beyond the quantum) applies instead, plus the
//! frames a packet waits for (k - 1 frames: 80 ms for 1200 at 120 ms).
//!
//! **Cost**: the worker encodes Codec2 3200 and 1200 all the time (see
//! docs/PERFORMANCE.md); the real-time side decimates and moves samples.
//!
//! ```toml
//! [[stage]]
//! id = "enc"
//! kind = "codec.adaptive_encode"
//! params = { profile = "good", live_settings = "enc_live", codec_live = "codec_live" }
//! ```

use std::sync::Arc;
use std::time::Duration;

use opusic_sys as sys;
use rtrb::{Consumer, Producer, RingBuffer};
use wzp_engine::prelude::*;

use super::codec2_worker::{to_i16, SafeCodec2, WorkerHandle};
use super::live::{CodecLive, OpusLive};
use super::opus_encode::{OpusEncodeFactory, OpusEncodeSettings};
use super::opus_ffi::Encoder;
use super::profile::{Codec2Mode, Profile};
use super::resample6::Decimator6;
use crate::cell::optional_cell;

pub struct AdaptiveEncodeFactory;

const KIND: &str = "codec.adaptive_encode";

/// Largest Opus frame the stage makes (60 ms).
const MAX_OPUS_FRAME: usize = 60 * 48;

/// Largest Codec2 packet: 120 ms of frames in the mode with the most bytes
/// per ms (3200: six 8-byte frames).
const MAX_CODEC2_PACKET: usize = {
    let a = Codec2Mode::M3200.max_packet_frames() * Codec2Mode::M3200.frame_bytes();
    let b = Codec2Mode::M1200.max_packet_frames() * Codec2Mode::M1200.frame_bytes();
    if a > b {
        a
    } else {
        b
    }
};

/// A Codec2 frame travelling from the worker.
#[derive(Clone, Copy)]
struct Encoded {
    mode: Codec2Mode,
    bits: [u8; 8],
}

fn mode_slot(m: Codec2Mode) -> usize {
    match m {
        Codec2Mode::M3200 => 0,
        Codec2Mode::M1200 => 1,
    }
}

impl StageFactory for AdaptiveEncodeFactory {
    fn info(&self) -> StageInfo {
        let mut params = OpusEncodeFactory.info().params;
        params.push(ParamSpec::str(
            "codec_live",
            "",
            "name of a CodecLive cell (shared with quality.adapt) choosing Opus or Codec2 and the frame size",
        ));
        StageInfo {
            kind: KIND,
            summary: "Opus + Codec2 encoder that switches codec, tier and frame size live",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Pcm@48000",
                doc: "mono speech",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "Opus or Codec2 frames, one seq and media clock for the stream",
            }],
            params,
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let s = OpusEncodeSettings::from_params(p)?;
        let quantum = super::codec2_encode::quantum_48k(cx)?;
        let live = optional_cell::<OpusLive>(cx, p, "live_settings", "an OpusLive")?;
        let codec_live = optional_cell::<CodecLive>(cx, p, "codec_live", "a CodecLive")?;
        let enc = s.encoder().map_err(BuildError::Other)?;
        let mut probe = s.encoder().map_err(BuildError::Other)?;
        let lookahead = probe
            .get(sys::OPUS_GET_LOOKAHEAD_REQUEST)
            .map_err(BuildError::Other)?;
        let frame_samples = s.frame_ms as usize * 48;
        let wait = frame_samples.saturating_sub(quantum);
        let latency =
            Duration::from_nanos((lookahead.max(0) as u64 + wait as u64) * 1_000_000_000 / 48_000);

        // The Codec2 worker: both modes on the same decimated input.
        let (pcm_tx, mut pcm_rx) = RingBuffer::<i16>::new(8_000);
        let (mut bits_tx, bits_rx) = RingBuffer::<Encoded>::new(64);
        let encoded = cx.counter("codec2_frames_encoded");
        let errors = cx.counter("codec2_errors");
        let worker_dropped = cx.counter("codec2_worker_dropped");
        let mut c3200 = SafeCodec2::new(Codec2Mode::M3200);
        let mut c1200 = SafeCodec2::new(Codec2Mode::M1200);
        let mut chunk = [0i16; 160];
        let mut pair = [0i16; 320];
        let mut half = false;
        let (fe, ce) = (encoded.clone(), errors.clone());
        let worker = WorkerHandle::spawn(format!("wzp-adenc-{}", cx.stage_id), move || {
            let mut worked = false;
            while pcm_rx.slots() >= chunk.len() {
                if pcm_rx.pop_entire_slice(&mut chunk).is_err() {
                    break;
                }
                worked = true;
                let mut out = |mode, ok: bool, bits: [u8; 8]| {
                    if !ok {
                        ce.inc();
                    } else if bits_tx.push(Encoded { mode, bits }).is_err() {
                        worker_dropped.inc();
                    } else {
                        fe.inc();
                    }
                };
                let mut bits = [0u8; 8];
                let ok = c3200.encode(&mut bits, &chunk);
                out(Codec2Mode::M3200, ok, bits);
                let at = if half { 160 } else { 0 };
                pair[at..at + 160].copy_from_slice(&chunk);
                half = !half;
                if !half {
                    let mut bits = [0u8; 8];
                    let ok = c1200.encode(&mut bits, &pair);
                    out(Codec2Mode::M1200, ok, bits);
                }
            }
            worked
        })
        .map_err(BuildError::Other)?;

        let codec_gauge = cx.gauge("codec");
        let frame_gauge = cx.gauge("frame_ms");
        codec_gauge.set(i64::from(s.profile.wire_codec()));
        frame_gauge.set(i64::from(s.frame_ms));
        let processor = AdaptiveEncodeProc {
            enc,
            frame: vec![0.0; MAX_OPUS_FRAME].into_boxed_slice(),
            frame_len: frame_samples,
            opus_frame_len: frame_samples,
            filled: 0,
            bitrate: s.bitrate,
            seq: 0,
            timestamp: 0,
            stream: s.stream,
            max_packet_bytes: s.max_packet_bytes,
            first: true,
            live,
            live_applied: 0,
            codec_live,
            codec_applied: 0,
            codec2: None,
            opus_idle: false,
            decim: Decimator6::new(),
            low: vec![0.0; quantum / 6 + 1].into_boxed_slice(),
            low_i16: vec![0; quantum / 6 + 1].into_boxed_slice(),
            pcm_tx,
            bits_rx,
            standby: [None; 2],
            c2_wanted_frames: 1,
            c2_packet: [0; MAX_CODEC2_PACKET],
            c2_packet_mode: Codec2Mode::M3200,
            c2_packet_frames: 1,
            c2_pending: 0,
            worker,
            c: Counters {
                live_updates: cx.counter("live_updates"),
                live_errors: cx.counter("live_errors"),
                live_codec_errors: cx.counter("live_codec_errors"),
                frames_encoded: cx.counter("frames_encoded"),
                bytes_encoded: cx.counter("bytes_encoded"),
                dtx_frames: cx.counter("dtx_frames"),
                encode_errors: cx.counter("encode_errors"),
                dropped_full: cx.counter("dropped_full"),
                codec2_frames_out: cx.counter("codec2_frames_out"),
                codec2_packets_out: cx.counter("codec2_packets_out"),
                codec2_ring_overflow_samples: cx.counter("codec2_ring_overflow_samples"),
                codec_switches: cx.counter("codec_switches"),
                frame_size_switches: cx.counter("frame_size_switches"),
                codec: codec_gauge,
                frame_ms: frame_gauge,
            },
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Pcm { rate: 48_000 })],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency,
            processor: Box::new(processor),
        })
    }
}

struct Counters {
    live_updates: Counter,
    live_errors: Counter,
    live_codec_errors: Counter,
    frames_encoded: Counter,
    bytes_encoded: Counter,
    dtx_frames: Counter,
    encode_errors: Counter,
    dropped_full: Counter,
    codec2_frames_out: Counter,
    codec2_packets_out: Counter,
    codec2_ring_overflow_samples: Counter,
    codec_switches: Counter,
    frame_size_switches: Counter,
    codec: Gauge,
    frame_ms: Gauge,
}

struct AdaptiveEncodeProc {
    enc: Encoder,
    frame: Box<[f32]>,
    /// Samples in the Opus frame being filled.
    frame_len: usize,
    /// The Opus frame size wanted; applied at the next frame boundary.
    opus_frame_len: usize,
    filled: usize,
    bitrate: i32,
    seq: u32,
    timestamp: u32,
    stream: u32,
    max_packet_bytes: usize,
    first: bool,
    live: Option<Arc<OpusLive>>,
    live_applied: u64,
    codec_live: Option<Arc<CodecLive>>,
    codec_applied: u64,
    /// The Codec2 mode being sent; `None`: Opus.
    codec2: Option<Codec2Mode>,
    /// No Opus frame went out since the encoder last ran: reset it before
    /// the next one.
    opus_idle: bool,
    decim: Decimator6,
    low: Box<[f32]>,
    low_i16: Box<[i16]>,
    pcm_tx: Producer<i16>,
    bits_rx: Consumer<Encoded>,
    /// Per mode, the newest Codec2 frame not sent (it finished while another
    /// codec was on), so a switch into 1200 mode between its 40 ms frames
    /// has one to send at once.
    standby: [Option<Encoded>; 2],
    /// Codec2 frames per packet wanted (the codec cell's packet duration
    /// over the mode's frame); applies from the next packet.
    c2_wanted_frames: usize,
    /// The Codec2 packet being filled: `c2_pending` frames of
    /// `c2_packet_mode` back to back, sent at `c2_packet_frames`.
    c2_packet: [u8; MAX_CODEC2_PACKET],
    c2_packet_mode: Codec2Mode,
    c2_packet_frames: usize,
    c2_pending: usize,
    worker: WorkerHandle,
    c: Counters,
}

impl AdaptiveEncodeProc {
    /// Reads the codec cell; on a change, switches codec or frame size. A
    /// Codec2 packet partly filled when the codec or mode changes leaves at
    /// once, shorter (no audio is dropped, and the stream's media clock
    /// stays the sum of what was sent).
    fn apply_codec(&mut self, out: &mut Option<&mut Batch<FrameMeta>>) {
        let Some(cell) = self.codec_live.as_deref() else {
            return;
        };
        let raw = cell.raw();
        if raw == self.codec_applied {
            return;
        }
        self.codec_applied = raw;
        let Some(l) = CodecLive::decode(raw) else {
            self.c.live_codec_errors.inc();
            return;
        };
        let wanted = l.profile.codec2_mode();
        if wanted != self.codec2 {
            self.c.codec_switches.inc();
            self.flush_codec2(out);
            if self.codec2.is_none() {
                // Leaving Opus: its partial frame is not sent.
                self.filled = 0;
                self.opus_idle = true;
            }
            self.codec2 = wanted;
        }
        if let Some(mode) = wanted {
            let frames = mode.packet_frames(l.frame_ms).unwrap_or_else(|| {
                self.c.live_codec_errors.inc();
                1
            });
            if frames != self.c2_wanted_frames {
                self.c.frame_size_switches.inc();
                self.c2_wanted_frames = frames;
            }
        } else {
            let len = l.frame_ms as usize * 48;
            if len != self.opus_frame_len {
                self.c.frame_size_switches.inc();
                self.opus_frame_len = len;
            }
            let bitrate = l.profile.bitrate as i32;
            if bitrate != self.bitrate {
                if self.enc.set_quiet(sys::OPUS_SET_BITRATE_REQUEST, bitrate) {
                    self.bitrate = bitrate;
                } else {
                    self.c.live_errors.inc();
                }
            }
        }
        self.c.codec.set(i64::from(l.profile.wire_codec()));
        self.c.frame_ms.set(i64::from(l.frame_ms));
    }

    /// Applies the live Opus settings when they changed since last frame.
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
            self.bitrate = l.bitrate as i32;
            self.c.live_updates.inc();
        } else {
            self.c.live_errors.inc();
        }
    }

    /// Stamps the next frame of the stream: `samples` long at 48 kHz.
    fn next_meta(&mut self, codec: u8, samples: usize) -> FrameMeta {
        let mut meta = FrameMeta {
            seq: self.seq,
            timestamp: self.timestamp,
            stream: self.stream,
            codec,
            duration_ms: (samples / 48) as u8,
            ..Default::default()
        };
        if self.first {
            meta.flags |= frame_flags::STREAM_START;
            self.first = false;
        }
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples as u32);
        meta
    }

    /// Adds one Codec2 frame to the packet being filled; sends the packet
    /// once it holds the frames wanted. A new packet takes the frame count
    /// wanted now: a change of packet duration applies at a packet boundary.
    fn emit_codec2(&mut self, e: Encoded, out: &mut Option<&mut Batch<FrameMeta>>) {
        if self.c2_pending > 0 && self.c2_packet_mode != e.mode {
            self.flush_codec2(out);
        }
        if self.c2_pending == 0 {
            self.c2_packet_mode = e.mode;
            self.c2_packet_frames = self.c2_wanted_frames.clamp(1, e.mode.max_packet_frames());
        }
        let fb = e.mode.frame_bytes();
        let at = self.c2_pending * fb;
        self.c2_packet[at..at + fb].copy_from_slice(&e.bits[..fb]);
        self.c2_pending += 1;
        if self.c2_pending >= self.c2_packet_frames {
            self.flush_codec2(out);
        }
    }

    /// Sends the Codec2 frames pending as one packet (fewer than wanted
    /// when the codec changes under it).
    fn flush_codec2(&mut self, out: &mut Option<&mut Batch<FrameMeta>>) {
        let frames = self.c2_pending;
        if frames == 0 {
            return;
        }
        self.c2_pending = 0;
        let mode = self.c2_packet_mode;
        let samples = frames * mode.frame_samples_8k() * 6;
        let codec = match mode {
            Codec2Mode::M3200 => Profile::by_name("poor"),
            Codec2Mode::M1200 => Profile::by_name("catastrophic"),
        }
        .map_or(0, Profile::wire_codec);
        let meta = self.next_meta(codec, samples);
        let bytes = &self.c2_packet[..frames * mode.frame_bytes()];
        match out.as_deref_mut().map(|b| b.push(meta, bytes)) {
            Some(Ok(())) => {
                self.c.codec2_packets_out.inc();
                self.c.codec2_frames_out.add(frames as u64);
            }
            _ => self.c.dropped_full.inc(),
        }
    }

    fn emit_opus(&mut self, out: &mut Option<&mut Batch<FrameMeta>>) {
        self.apply_live();
        if self.opus_idle {
            self.enc.reset();
            self.opus_idle = false;
        }
        let n = self.frame_len;
        let first = self.first;
        let mut meta = self.next_meta(wzp_proto::media::CodecId::OPUS.0, n);
        let Some(slot) = out.as_deref_mut().and_then(Batch::push_slot) else {
            self.c.dropped_full.inc();
            return;
        };
        let cap = self.max_packet_bytes.min(MAX_ITEM_BYTES);
        match self
            .enc
            .encode_float(&self.frame[..n], &mut slot.buf_mut()[..cap])
        {
            Ok(len) => {
                slot.set_len(len);
                if len <= 2 {
                    meta.flags |= frame_flags::DTX;
                    self.c.dtx_frames.inc();
                }
                slot.meta = meta;
                self.c.frames_encoded.inc();
                self.c.bytes_encoded.add(len as u64);
            }
            Err(_) => {
                if let Some(b) = out.as_deref_mut() {
                    b.pop();
                }
                // The seq is spent (the receiver sees a loss); the stream
                // start flag goes on the next frame instead.
                self.first = first;
                self.c.encode_errors.inc();
            }
        }
    }
}

impl Processor for AdaptiveEncodeProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (input, mut out) = io.pcm_in_frames_out(0, 0);
        self.apply_codec(&mut out);
        // Codec2 frames the worker finished since last cycle, before this
        // cycle's samples go in (a frame leaves one cycle after it
        // completed, however fast the worker is).
        let mut sent = false;
        while let Ok(e) = self.bits_rx.pop() {
            if self.codec2 == Some(e.mode) {
                self.standby[mode_slot(e.mode)] = None;
                self.emit_codec2(e, &mut out);
                sent = true;
            } else {
                self.standby[mode_slot(e.mode)] = Some(e);
            }
        }
        if let Some(mode) = self.codec2 {
            if !sent {
                if let Some(e) = self.standby[mode_slot(mode)].take() {
                    self.emit_codec2(e, &mut out);
                }
            }
        }
        // Codec2 input: always, so its encoders stay warm.
        let n = self.decim.process(input, &mut self.low);
        for (d, s) in self.low_i16.iter_mut().zip(&self.low[..n]) {
            *d = to_i16(*s);
        }
        let (_, rest) = self.pcm_tx.push_partial_slice(&self.low_i16[..n]);
        self.c.codec2_ring_overflow_samples.add(rest.len() as u64);
        if n > 0 {
            self.worker.wake();
        }
        // Opus input: frames are filled all the time and encoded only when
        // Opus is on.
        let mut rest = input;
        while !rest.is_empty() {
            if self.filled == 0 {
                self.frame_len = self.opus_frame_len;
            }
            let take = (self.frame_len - self.filled).min(rest.len());
            self.frame[self.filled..self.filled + take].copy_from_slice(&rest[..take]);
            self.filled += take;
            rest = &rest[take..];
            if self.filled == self.frame_len {
                if self.codec2.is_none() {
                    self.emit_opus(&mut out);
                }
                self.filled = 0;
            }
        }
        Flow::Continue
    }
}
