//! `codec.opus_decode`: Opus frames in (in order, from a jitter buffer), PCM
//! out, with loss recovery.
//!
//! **Loss recovery.** Repairing frame N needs a later frame: its DRED
//! extension reaches back up to 1 s, its LBRR copy holds frame N itself. The
//! decoder therefore keeps `lookahead_frames` frames in hand before decoding
//! the oldest, and declares that as latency. When the oldest held frame is
//! missing it is rebuilt, in this order:
//! 1. **DRED** from the first real frame held after it: `opus_dred_parse` on
//!    that frame's payload (once per frame, asking for as much history as the
//!    oldest gap needs), then `opus_decoder_dred_decode_float` at the offset
//!    `next.timestamp - missing.timestamp` samples, if the packet carries
//!    DRED at all: a frame older than its latents reach is synthesised by
//!    the vocoder carried on from them, which beats concealing it. A burst
//!    of K lost frames is rebuilt from the one packet after it, each frame
//!    at its own offset, provided the lookahead holds K frames
//!    (`lookahead_frames >= K`).
//! 2. **LBRR** (in-band FEC): when the next frame is the very next one and
//!    carries LBRR, `opus_decode_float(next, decode_fec = 1)`.
//! 3. **Classical PLC**: `opus_decode_float(NULL)`.
//!
//! The lead's brief puts DRED before LBRR; libopus's own demo prefers LBRR
//! for the frame just before a packet (it is a real SILK encoding, DRED is a
//! vocoder). Swapping the order is a one-line change if listening tests
//! favour it.
//!
//! **MISSING-frame contract.** An input item is treated as lost when it has
//! `frame_flags::MISSING`, an empty payload, or a codec id that is not Opus
//! (those are counted in `foreign_frames`). A lost item should carry the
//! expected `seq` and `timestamp`; its `duration_ms` (10/20/40/60) sets how
//! much to conceal, else the last packet's duration is used. Items must
//! arrive in `seq` order; the decoder is robust anyway: a `seq` that jumps
//! ahead without markers is filled with implicit lost frames
//! (`gaps_filled`), one that goes back is dropped (`late_dropped`), a jump
//! too large to fill restarts sequence tracking (`resyncs`).
//! `frame_flags::STREAM_START` resets the decoder state before that frame.
//! A `MISSING | INSERTED` item (a jitter buffer growing its delay) is
//! concealed by PLC without consuming its `seq`: the frame of that seq
//! still follows. A `MISSING | NEXT_ATTACHED` item carries a later frame's
//! packet (`fec.symbol` frames ahead, the next when 0): when no real frame is held after the lost one (`lookahead_frames
//! = 0`, or the lookahead holds only losses), recovery (DRED, then LBRR)
//! reads that packet instead, so a jitter buffer that already holds the next
//! frame gives in-band recovery with no decoder look-ahead.
//!
//! **Ports**
//! - in `in`: `Frame`, Opus packets.
//! - out `out`: `Pcm@48000`, one quantum per cycle from a FIFO of decoded
//!   samples (silence before the first frame and on underrun).
//!
//! **Params**
//! - `profile` = `"good"`, `frame_ms` = 0 (profile's): the sender's frame
//!   size, used only to size the declared latency.
//! - `lookahead_frames` = 1: frames held for recovery, 0..=104.
//! - `use_dred` = true, `use_fec` = true: allow those recovery steps.
//! - `complexity` = 0: decoder complexity 0..=10. At 5 and above libopus
//!   conceals with its neural PLC (deep PLC) instead of the classical one
//!   (more CPU on lost frames); at 6 it also enhances every decoded SILK
//!   frame with OSCE LACE, at 7 with NoLACE (more CPU on every frame).
//!   docs/QUALITY.md has the measurements.
//! - `fill_gaps` = true: conceal a sequence gap that comes without MISSING
//!   markers. Graphs with a jitter buffer in front set it to false: the
//!   buffer marks every loss itself and skips a frame on purpose when it
//!   shrinks its delay, which must not be concealed back in.
//!
//! **Counters**: `frames_decoded`, `dred_reconstructions`, `fec_recovered`,
//! `classical_plc_invocations`, `decode_errors`, `foreign_frames`,
//! `gaps_filled`, `late_dropped`, `resyncs`, `underruns`,
//! `overflow_samples`.
//!
//! **Latency**: `lookahead_frames * frame_ms`.
//!
//! ```toml
//! [[stage]]
//! id = "dec"
//! kind = "codec.opus_decode"
//! params = { profile = "good", lookahead_frames = 5 }
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::opus_encode::{opus_frame_ms, opus_profile};
use super::opus_ffi::{
    packet_has_lbrr, packet_samples_per_frame, Decoder, Dred, DredDecoder, MAX_FRAME_SAMPLES,
};
use super::pcm_fifo::PcmFifo;
use super::profile::is_opus_id;

pub struct OpusDecodeFactory;

const KIND: &str = "codec.opus_decode";

/// Most frames the DRED window can span (1040 ms of 10 ms frames).
const MAX_LOOKAHEAD: i64 = 104;

/// The DRED window at its largest (1040 ms), in samples.
const MAX_DRED_SAMPLES: usize = 104 * 480;

impl StageFactory for OpusDecodeFactory {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: KIND,
            summary: "Opus decoder with DRED, LBRR and PLC loss recovery",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "Opus frames in seq order; lost ones as MISSING items",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Pcm@48000",
                doc: "decoded mono speech",
            }],
            params: vec![
                ParamSpec::str(
                    "profile",
                    "good",
                    "sender's profile (for the declared latency)",
                ),
                ParamSpec::int("frame_ms", 0, "sender's frame size; 0 = profile's"),
                ParamSpec::int(
                    "lookahead_frames",
                    1,
                    "frames held to repair losses, 0..=104",
                ),
                ParamSpec::int(
                    "complexity",
                    0,
                    "decoder complexity 0..=10; 5+ deep PLC, 6 OSCE LACE, 7+ OSCE NoLACE",
                ),
                ParamSpec::bool("use_dred", true, "rebuild lost frames from DRED"),
                ParamSpec::bool("use_fec", true, "rebuild lost frames from LBRR"),
                ParamSpec::bool(
                    "fill_gaps",
                    true,
                    "conceal a sequence gap without MISSING markers; turn off behind a jitter buffer, which marks losses itself and skips frames on purpose to shrink its delay",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let (processor, latency) = OpusDecodeProc::build(cx, p)?;
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate: 48_000 })],
            latency,
            processor: Box::new(processor),
        })
    }
}

impl OpusDecodeProc {
    /// The processor and its declared latency, from `codec.opus_decode`'s
    /// params (also the Opus half of `codec.adaptive_decode`).
    pub(crate) fn build(
        cx: &mut BuildContext<'_>,
        p: &Params,
    ) -> Result<(OpusDecodeProc, Duration), BuildError> {
        let profile = opus_profile(p)?;
        let frame_ms = opus_frame_ms(p, profile)?;
        let lookahead = p.int_in("lookahead_frames", 0, MAX_LOOKAHEAD)? as usize;
        let quantum = cx.samples_at(48_000);
        if quantum == 0 {
            return Err(BuildError::Other(
                "the graph quantum holds no whole 48 kHz sample; use a quantum of at least 1 ms"
                    .into(),
            ));
        }
        let mut dec = Decoder::new().map_err(BuildError::Other)?;
        let complexity = p.int_in("complexity", 0, 10)? as i32;
        dec.set_complexity(complexity).map_err(BuildError::Other)?;
        // Read it back: a setting that does not reach libopus is an error,
        // not a silent no-op.
        let held = dec.complexity().map_err(BuildError::Other)?;
        if held != complexity {
            return Err(ParamError::new(
                "complexity",
                format!(
                    "libopus holds {held} after setting {complexity}; report this build of libopus"
                ),
            )
            .into());
        }
        let dred_dec = DredDecoder::new().map_err(BuildError::Other)?;
        let dred = Dred::new().map_err(BuildError::Other)?;
        // Room for the held frames, one full input batch, and the frame
        // being decoded.
        let pending_cap = lookahead + cx.batch_capacity.max(1) + 1;
        let processor = OpusDecodeProc {
            dec,
            dred_dec,
            dred,
            dred_for: None,
            has_dred: false,
            use_dred: p.bool("use_dred")?,
            use_fec: p.bool("use_fec")?,
            fill_gaps: p.bool("fill_gaps")?,
            lookahead,
            pending: Pending::new(pending_cap),
            expected_seq: None,
            last_duration: frame_ms as usize * 48,
            scratch: vec![0.0; MAX_FRAME_SAMPLES].into_boxed_slice(),
            fifo: PcmFifo::new(2 * MAX_FRAME_SAMPLES + 2 * quantum),
            started: false,
            idle_ns: 0,
            frame_ns: u64::from(frame_ms) * 1_000_000,
            c: DecodeCounters {
                frames_decoded: cx.counter("frames_decoded"),
                dred_reconstructions: cx.counter("dred_reconstructions"),
                fec_recovered: cx.counter("fec_recovered"),
                classical_plc_invocations: cx.counter("classical_plc_invocations"),
                decode_errors: cx.counter("decode_errors"),
                foreign_frames: cx.counter("foreign_frames"),
                gaps_filled: cx.counter("gaps_filled"),
                late_dropped: cx.counter("late_dropped"),
                resyncs: cx.counter("resyncs"),
                underruns: cx.counter("underruns"),
                overflow_samples: cx.counter("overflow_samples"),
            },
        };
        let latency = Duration::from_millis(lookahead as u64 * u64::from(frame_ms));
        Ok((processor, latency))
    }
}

struct DecodeCounters {
    frames_decoded: Counter,
    dred_reconstructions: Counter,
    fec_recovered: Counter,
    classical_plc_invocations: Counter,
    decode_errors: Counter,
    foreign_frames: Counter,
    gaps_filled: Counter,
    late_dropped: Counter,
    resyncs: Counter,
    underruns: Counter,
    overflow_samples: Counter,
}

/// A held frame.
#[derive(Clone)]
struct Entry {
    meta: FrameMeta,
    /// Lost (marker, implicit gap, empty or undecodable payload).
    lost: bool,
    len: usize,
    data: [u8; MAX_ITEM_BYTES],
}

impl Entry {
    fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// Fixed-capacity FIFO of held frames.
struct Pending {
    slots: Box<[Entry]>,
    head: usize,
    len: usize,
}

impl Pending {
    fn new(cap: usize) -> Self {
        let empty = Entry {
            meta: FrameMeta::default(),
            lost: true,
            len: 0,
            data: [0; MAX_ITEM_BYTES],
        };
        Pending {
            slots: vec![empty; cap].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    fn free(&self) -> usize {
        self.slots.len() - self.len
    }

    fn get(&self, i: usize) -> &Entry {
        &self.slots[(self.head + i) % self.slots.len()]
    }

    fn push_back(&mut self) -> Option<&mut Entry> {
        if self.len == self.slots.len() {
            return None;
        }
        let i = (self.head + self.len) % self.slots.len();
        self.len += 1;
        Some(&mut self.slots[i])
    }

    fn pop_front(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % self.slots.len();
            self.len -= 1;
        }
    }
}

pub(crate) struct OpusDecodeProc {
    dec: Decoder,
    dred_dec: DredDecoder,
    dred: Dred,
    /// Seq of the held frame whose DRED `dred` holds.
    dred_for: Option<u32>,
    /// That frame carries DRED (whatever its latents reach: see `conceal`).
    has_dred: bool,
    use_dred: bool,
    use_fec: bool,
    fill_gaps: bool,
    lookahead: usize,
    pending: Pending,
    expected_seq: Option<u32>,
    /// Samples of the last decoded or concealed frame.
    last_duration: usize,
    scratch: Box<[f32]>,
    fifo: PcmFifo,
    started: bool,
    /// Time since the last input item, to flush held frames when the
    /// upstream has gone quiet (end of stream).
    idle_ns: u64,
    frame_ns: u64,
    c: DecodeCounters,
}

/// Concealment size from a lost item's duration, if it is one Opus can
/// conceal (a multiple of 2.5 ms up to 120 ms).
fn conceal_samples(meta: &FrameMeta, fallback: usize) -> usize {
    let n = usize::from(meta.duration_ms) * 48;
    if n > 0 && n <= MAX_FRAME_SAMPLES && n % 120 == 0 {
        n
    } else {
        fallback.clamp(120, MAX_FRAME_SAMPLES) / 120 * 120
    }
}

impl OpusDecodeProc {
    /// The next seq expected (none before the first frame or after a
    /// stream start).
    pub(crate) fn expected_seq(&self) -> Option<u32> {
        self.expected_seq
    }

    /// Continues seq tracking from `seq` (a stream whose frames went to
    /// another decoder meanwhile).
    pub(crate) fn set_expected_seq(&mut self, seq: Option<u32>) {
        self.expected_seq = seq;
    }

    /// Decoded samples not yet played.
    pub(crate) fn fifo(&mut self) -> &mut PcmFifo {
        &mut self.fifo
    }

    /// Decodes (or conceals) every held frame into the FIFO: nothing after
    /// them will come to this decoder to repair with.
    pub(crate) fn flush(&mut self) {
        while self.pending.len > 0 {
            self.decode_head();
        }
    }

    /// Clears the decoder's state: the next frame starts afresh.
    pub(crate) fn reset_state(&mut self) {
        self.dec.reset();
        self.dred_for = None;
    }

    /// Conceals at least `samples` (rounded up to whole 2.5 ms) by PLC into
    /// the FIFO, continuing the last decoded audio. Returns samples added.
    pub(crate) fn conceal_into_fifo(&mut self, samples: usize) -> usize {
        let n = samples.div_ceil(120).clamp(1, MAX_FRAME_SAMPLES / 120) * 120;
        let got = self.plc(n);
        let dropped = self.fifo.push(&self.scratch[..got]);
        self.c.overflow_samples.add(dropped as u64);
        got
    }

    /// Appends decoded samples from another codec to the FIFO; what does
    /// not fit counts in `overflow_samples`.
    pub(crate) fn push_into_fifo(&mut self, samples: &[f32]) {
        let dropped = self.fifo.push(samples);
        self.c.overflow_samples.add(dropped as u64);
    }

    /// Counts a frame of a codec no decoder here knows.
    pub(crate) fn count_foreign(&self) {
        self.c.foreign_frames.inc();
    }

    /// Counts an underrun (output short after playback started).
    pub(crate) fn count_underrun(&self) {
        self.c.underruns.inc();
    }

    /// The decode step of `process`: decodes what the look-ahead lets go,
    /// and everything held when the upstream has gone quiet. `arrived`:
    /// any input this cycle.
    pub(crate) fn decode_ready(&mut self, arrived: bool, quantum_ns: u64, want: usize) {
        if arrived {
            self.idle_ns = 0;
        } else {
            self.idle_ns = self.idle_ns.saturating_add(quantum_ns);
        }
        while self.pending.len > self.lookahead {
            self.decode_head();
        }
        // Upstream quiet for longer than the lookahead covers: nothing will
        // come to repair with, so play what is held rather than keep it.
        let quiet = self.idle_ns > self.frame_ns.max(quantum_ns) * (self.lookahead as u64 + 1);
        while quiet && self.fifo.len() < want && self.pending.len > 0 {
            self.decode_head();
        }
    }

    pub(crate) fn accept(&mut self, slot: &Slot<FrameMeta>) {
        let meta = slot.meta;
        if meta.flags & frame_flags::STREAM_START != 0 {
            self.expected_seq = None;
        }
        let inserted = meta.flags & (frame_flags::MISSING | frame_flags::INSERTED)
            == frame_flags::MISSING | frame_flags::INSERTED;
        if inserted {
            // A period a jitter buffer inserted: conceal it, but the frame
            // of this seq still comes next.
            if let Some(e) = self.pending.push_back() {
                e.meta = meta;
                e.lost = true;
                e.len = 0;
            }
            return;
        }
        if let Some(exp) = self.expected_seq {
            let ahead = meta.seq.wrapping_sub(exp) as i32;
            if ahead < 0 {
                self.c.late_dropped.inc();
                return;
            }
            let gap = ahead as usize;
            if gap > 0 && self.fill_gaps {
                // Keep one slot for the frame itself.
                if gap < self.pending.free() {
                    let dur = conceal_samples(&meta, self.last_duration) as u32;
                    for k in 0..gap {
                        let back = (gap - k) as u32;
                        let Some(e) = self.pending.push_back() else {
                            break;
                        };
                        e.meta = FrameMeta {
                            seq: meta.seq.wrapping_sub(back),
                            timestamp: meta.timestamp.wrapping_sub(back.wrapping_mul(dur)),
                            flags: frame_flags::MISSING,
                            ..meta
                        };
                        e.lost = true;
                        e.len = 0;
                    }
                    self.c.gaps_filled.add(gap as u64);
                } else {
                    self.c.resyncs.inc();
                }
            }
        }
        self.expected_seq = Some(meta.seq.wrapping_add(1));
        let foreign = !is_opus_id(meta.codec);
        if foreign && meta.flags & frame_flags::MISSING == 0 {
            self.c.foreign_frames.inc();
        }
        let Some(e) = self.pending.push_back() else {
            // Cannot happen: capacity covers a full batch plus the lookahead.
            return;
        };
        e.meta = meta;
        e.lost = meta.flags & frame_flags::MISSING != 0 || slot.is_empty() || foreign;
        // A lost frame keeps its payload only when it is the next frame,
        // attached by the jitter buffer for in-band recovery.
        let attached =
            e.lost && meta.flags & frame_flags::NEXT_ATTACHED != 0 && is_opus_id(meta.codec);
        e.len = if !e.lost || attached { slot.len() } else { 0 };
        e.data[..e.len].copy_from_slice(&slot.bytes()[..e.len]);
    }

    /// Decodes or rebuilds the oldest held frame into the FIFO.
    fn decode_head(&mut self) {
        let (meta, lost) = {
            let h = self.pending.get(0);
            (h.meta, h.lost)
        };
        if meta.flags & frame_flags::STREAM_START != 0 {
            self.dec.reset();
            self.dred_for = None;
        }
        let out_len = if lost {
            self.conceal()
        } else {
            let bytes = self.pending.get(0).bytes();
            match self.dec.decode_float(Some(bytes), &mut self.scratch, false) {
                Ok(n) => {
                    self.c.frames_decoded.inc();
                    self.last_duration = n;
                    n
                }
                Err(_) => {
                    self.c.decode_errors.inc();
                    self.conceal()
                }
            }
        };
        let dropped = self.fifo.push(&self.scratch[..out_len]);
        self.c.overflow_samples.add(dropped as u64);
        self.pending.pop_front();
    }

    /// Rebuilds the lost head frame into `scratch`; returns its length.
    fn conceal(&mut self) -> usize {
        let lost = self.pending.get(0).meta;
        let n = conceal_samples(&lost, self.last_duration);
        if lost.flags & frame_flags::INSERTED != 0 {
            // Nothing was lost: stretch with plain concealment.
            return self.plc(n);
        }
        // The packet to recover from: the first real frame held after the
        // lost one, else the next frame the jitter buffer attached to it.
        let next = (1..self.pending.len)
            .find(|&i| !self.pending.get(i).lost)
            .map(|i| {
                let m = self.pending.get(i).meta;
                (i, m.seq, m.timestamp)
            })
            .or_else(|| {
                (self.pending.get(0).len > 0).then(|| {
                    // The jitter buffer says how far ahead the attached
                    // frame is (0 from older buffers: the next one).
                    let ahead = u32::from(lost.fec.symbol.max(1));
                    (
                        0,
                        lost.seq.wrapping_add(ahead),
                        lost.timestamp.wrapping_add(ahead.wrapping_mul(n as u32)),
                    )
                })
            });
        if let Some((i, r_seq, r_ts)) = next {
            let r = self.pending.get(i);
            let by_ts = r_ts.wrapping_sub(lost.timestamp) as i32;
            let offset = if by_ts > 0 && (by_ts as usize) <= 2 * 48_000 {
                by_ts as usize
            } else {
                i * n
            };
            if self.use_dred {
                if self.dred_for != Some(r_seq) {
                    // DRED is coded in 40 ms latents; asking for exactly
                    // `offset` can stop a latent short of the lost frame's
                    // start, so ask for one frame more.
                    let want = (offset + n).min(MAX_DRED_SAMPLES) as i32;
                    self.has_dred = self
                        .dred
                        .parse(&mut self.dred_dec, r.bytes(), want)
                        .is_ok_and(|reach| reach > 0);
                    self.dred_for = Some(r_seq);
                }
                // Any DRED at all, not only DRED that reaches `offset`: a
                // frame older than the latents sent is synthesised by the
                // same vocoder carried on from them (libopus's own demo
                // decodes every lost frame of a run this way). Concealing
                // such frames with `opus_decode(NULL)` instead scored 0.16
                // PESQ-WB lower on the 60 ms burst trace with 160 ms held
                // (docs/QUALITY.md finding 22).
                if self.has_dred {
                    let out = &mut self.scratch[..n];
                    if let Ok(got) = self.dec.dred_decode_float(&self.dred, offset as i32, out) {
                        self.c.dred_reconstructions.inc();
                        self.last_duration = got;
                        return got;
                    }
                }
            }
            let is_next = r_seq == lost.seq.wrapping_add(1);
            if self.use_fec
                && is_next
                && packet_has_lbrr(r.bytes())
                && n >= packet_samples_per_frame(r.bytes())
            {
                let bytes = r.bytes();
                let out = &mut self.scratch[..n];
                if let Ok(got) = self.dec.decode_float(Some(bytes), out, true) {
                    self.c.fec_recovered.inc();
                    self.last_duration = got;
                    return got;
                }
            }
        }
        self.plc(n)
    }

    /// Classical concealment of `n` samples into `scratch`.
    fn plc(&mut self, n: usize) -> usize {
        self.c.classical_plc_invocations.inc();
        match self.dec.decode_float(None, &mut self.scratch[..n], false) {
            Ok(got) => got,
            Err(_) => {
                self.c.decode_errors.inc();
                self.scratch[..n].fill(0.0);
                n
            }
        }
    }
}

impl Processor for OpusDecodeProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        let (input, out) = io.frames_in_pcm_out(0, 0);
        let mut arrived = false;
        if let Some(batch) = input {
            for slot in batch.iter() {
                self.accept(slot);
                arrived = true;
            }
        }
        self.decode_ready(arrived, cx.quantum_ns, out.len());
        if !self.fifo.is_empty() {
            self.started = true;
        }
        let got = self.fifo.pop_into(out);
        if got < out.len() && self.started {
            self.c.underruns.inc();
        }
        Flow::Continue
    }
}
