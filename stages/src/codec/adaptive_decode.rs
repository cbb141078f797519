//! `codec.adaptive_decode`: Opus or Codec2 frames in, PCM out, decoding
//! each frame by its own codec id: a sender may switch codec, tier and frame
//! size mid-stream (`codec.adaptive_encode`) with nothing reconfigured here.
//!
//! Opus frames go to an Opus decoder that behaves exactly as
//! `codec.opus_decode` (look-ahead, DRED, LBRR, PLC; same params). Codec2
//! frames (`0x10` 3200, `0x15` 1200) go to a Codec2 worker thread as in
//! `codec.codec2_decode` (its repeat-and-fade concealment), whose 8 kHz
//! output is interpolated to 48 kHz. Both land in one output FIFO in stream
//! order: Opus frames wait while Codec2 frames before them are still with
//! the worker, and Opus frames held for look-ahead are decoded before the
//! first Codec2 frame after them. Loss markers (`MISSING`, from the jitter
//! buffer) go to the codec of the frame before them; `seq` is tracked
//! across codecs, so a loss at a switch is concealed once.
//!
//! **Codec2 packets.** A Codec2 payload carries one or more frames of its
//! mode back to back (up to 120 ms; docs/WIRE.md §1): each becomes a
//! worker job, in order. A loss marker conceals the frames its
//! `duration_ms` covers (a jitter buffer gives it the last packet's: three
//! frames for a lost 120 ms packet of Codec2 1200); a seq gap filled
//! without markers (`fill_gaps`), the last packet's frame count per seq
//! missing. A payload that is no whole number of frames is concealed for
//! its duration and counted in `codec2_errors`. 120 ms of audio arriving
//! at once (5760 samples) fits the worker's rings and the output FIFO
//! (what would not is counted in `codec2_worker_dropped` and
//! `overflow_samples`). A Codec2 frame behind the seq expected but newer
//! than any real frame seen is decoded, not dropped as late: the jitter
//! buffer concealed those seqs and then followed the sender back to them
//! (a pause, or a move to longer packets; `jitter.adaptive`).
//!
//! **Switching costs.** A switch is seen from the first frame of the new
//! codec:
//! - Opus -> Codec2: the Codec2 frame's audio comes back from the worker a
//!   cycle later. With `lookahead_frames` >= 1 the held Opus frame covers
//!   that cycle: nothing is concealed. With 0 (a jitter buffer in front
//!   attaching next frames) one quantum is concealed by Opus PLC, continuing
//!   the last Opus audio (`switch_concealed`), and playout stays one
//!   quantum later from then on (the worker's hop).
//! - Codec2 -> Opus: the Opus decoder is reset (the encoder resets too) and
//!   its frames play after the Codec2 audio still in the FIFO: nothing is
//!   concealed.
//! - Opus bit rate or frame size: Opus packets describe themselves; nothing
//!   to do.
//!
//! **Ports**
//! - in `in`: `Frame`, in seq order (a jitter buffer's output).
//! - out `out`: `Pcm@48000`, one quantum per cycle.
//!
//! **Params**: those of `codec.opus_decode` (`profile` = the Opus tier the
//! stream starts on, `frame_ms`, `lookahead_frames`, `complexity`,
//! `use_dred`, `use_fec`, `fill_gaps`); `fill_gaps` applies to Codec2 frames
//! too.
//!
//! **Counters**: those of `codec.opus_decode` for Opus (`frames_decoded`,
//! `classical_plc_invocations`, `dred_reconstructions`, `fec_recovered`,
//! ...; `underruns` for the whole output, `foreign_frames` for frames of
//! unknown codecs on either path), and `codec2_frames_decoded`,
//! `codec2_concealed` (lost Codec2 frames), `codec2_errors` (frames that
//! failed to decode, or concealed for a payload of the wrong length),
//! `codec2_jobs`
//! (frames and losses handed to the worker),
//! `codec2_worker_dropped`, `codec2_dropped_full` (worker queue full),
//! `codec2_gaps_filled`, `codec2_late_dropped`, `codec_switches`,
//! `switch_concealed` (quanta concealed because of a switch),
//! `voiced_frames` (quanta played at -45 dBFS RMS or louder: the talker is
//! heard; `wzp-client --top` reads "talking" from it).
//! **Gauge** `codec`: the wire codec id of the last frame decoded.
//!
//! **Latency** (declared): as `codec.opus_decode`. Codec2 adds a quantum
//! while it is on (see above).
//!
//! ```toml
//! [[stage]]
//! id = "dec"
//! kind = "codec.adaptive_decode"
//! params = { profile = "good", lookahead_frames = 0, fill_gaps = false, complexity = 6 }
//! ```

use rtrb::{Consumer, Producer};
use wzp_engine::prelude::*;

use super::codec2_decode::{
    concealed_frames, spawn_decode_worker, DecodeWorker, DecodeWorkerCounters, Job,
};
use super::codec2_worker::{to_f32, WorkerHandle};
use super::opus_decode::{OpusDecodeFactory, OpusDecodeProc};
use super::profile::{is_opus_id, Codec2Mode, Profile};
use super::resample6::Interpolator6;

pub struct AdaptiveDecodeFactory;

const KIND: &str = "codec.adaptive_decode";

/// Largest gap (frames) filled with Codec2 loss markers; beyond it, resync.
const MAX_GAP: u32 = 50;

/// 8 kHz samples taken from the worker per interpolation step.
const CHUNK_8K: usize = 160;

impl StageFactory for AdaptiveDecodeFactory {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: KIND,
            summary: "decodes Opus or Codec2 per frame by its codec id (live codec switches)",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "Opus and Codec2 frames in seq order; lost ones as MISSING items",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Pcm@48000",
                doc: "decoded mono speech",
            }],
            params: OpusDecodeFactory.info().params,
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let (opus, latency) = OpusDecodeProc::build(cx, p)?;
        // The Codec2 side resamples by 6.
        super::codec2_encode::quantum_48k(cx)?;
        let worker_dropped = cx.counter("codec2_worker_dropped");
        let DecodeWorker {
            jobs_tx,
            pcm_rx,
            worker,
        } = spawn_decode_worker(
            format!("wzp-addec-{}", cx.stage_id),
            DecodeWorkerCounters {
                frames_decoded: cx.counter("codec2_frames_decoded"),
                concealed: cx.counter("codec2_concealed"),
                codec_errors: cx.counter("codec2_errors"),
                worker_dropped: worker_dropped.clone(),
            },
        )
        .map_err(BuildError::Other)?;
        let processor = AdaptiveDecodeProc {
            opus,
            fill_gaps: p.bool("fill_gaps")?,
            jobs_tx,
            pcm_rx,
            worker,
            interp: Interpolator6::new(),
            low_i16: [0; CHUNK_8K],
            low: [0.0; CHUNK_8K],
            high: vec![0.0; CHUNK_8K * 6].into_boxed_slice(),
            on_codec2: false,
            c2_mode: Codec2Mode::M3200,
            c2_packet_frames: 1,
            c2_expected: None,
            last_real_seq: None,
            c2_sent: 0,
            c2_back: 0,
            c2_dropped_seen: 0,
            c2_played: false,
            started: false,
            worker_dropped,
            codec2_dropped_full: cx.counter("codec2_dropped_full"),
            codec2_jobs: cx.counter("codec2_jobs"),
            codec2_gaps_filled: cx.counter("codec2_gaps_filled"),
            codec2_late_dropped: cx.counter("codec2_late_dropped"),
            codec2_resyncs: cx.counter("codec2_resyncs"),
            codec_switches: cx.counter("codec_switches"),
            switch_concealed: cx.counter("switch_concealed"),
            codec: cx.gauge("codec"),
            voiced: cx.counter("voiced_frames"),
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate: 48_000 })],
            latency,
            processor: Box::new(processor),
        })
    }
}

struct AdaptiveDecodeProc {
    opus: OpusDecodeProc,
    fill_gaps: bool,
    jobs_tx: Producer<Job>,
    pcm_rx: Consumer<i16>,
    worker: WorkerHandle,
    interp: Interpolator6,
    low_i16: [i16; CHUNK_8K],
    low: [f32; CHUNK_8K],
    high: Box<[f32]>,
    /// Frames now go to Codec2 (the last real frame was Codec2).
    on_codec2: bool,
    c2_mode: Codec2Mode,
    /// Frames in the last Codec2 packet: what a gap without markers (or a
    /// loss that states no duration) is taken to have held.
    c2_packet_frames: usize,
    /// Seq of the newest real (not MISSING) item seen, either codec.
    last_real_seq: Option<u32>,
    /// Next seq expected while on Codec2.
    c2_expected: Option<u32>,
    /// 8 kHz samples handed to the worker, taken back, and dropped by it:
    /// Opus frames wait while `sent > back + dropped` (the worker holds
    /// audio that plays before them).
    c2_sent: u64,
    c2_back: u64,
    c2_dropped_seen: u64,
    /// Codec2 audio of the current Codec2 stretch has reached the FIFO.
    c2_played: bool,
    started: bool,
    worker_dropped: Counter,
    codec2_dropped_full: Counter,
    codec2_jobs: Counter,
    codec2_gaps_filled: Counter,
    codec2_late_dropped: Counter,
    codec2_resyncs: Counter,
    codec_switches: Counter,
    switch_concealed: Counter,
    codec: Gauge,
    /// Quanta played at or above [`VOICED_MEAN_SQUARE`]: the talker is heard.
    voiced: Counter,
}

/// A played quantum at or above -45 dBFS RMS counts as voiced: speech is
/// -35..-15 dBFS, a room's noise through the sender's suppressor and comfort
/// noise below -50.
pub const VOICED_MEAN_SQUARE: f32 = 3.162_277_7e-5;

impl AdaptiveDecodeProc {
    fn outstanding(&self) -> bool {
        self.c2_sent > self.c2_back + self.c2_dropped_seen
    }

    /// Takes what the worker decoded into the FIFO, at 48 kHz.
    fn collect(&mut self) {
        self.c2_dropped_seen = self.worker_dropped.get();
        loop {
            let (got, _) = self.pcm_rx.pop_partial_slice(&mut self.low_i16);
            let got = got.len();
            if got == 0 {
                break;
            }
            self.c2_back += got as u64;
            self.c2_played = true;
            for (d, s) in self.low.iter_mut().zip(&self.low_i16[..got]) {
                *d = to_f32(*s);
            }
            let n = self.interp.process(&self.low[..got], &mut self.high);
            self.opus.push_into_fifo(&self.high[..n]);
        }
    }

    fn send(&mut self, job: Job) -> bool {
        if self.jobs_tx.push(job).is_err() {
            self.codec2_dropped_full.inc();
            return false;
        }
        self.c2_sent += job.mode.frame_samples_8k() as u64;
        self.codec2_jobs.inc();
        true
    }

    /// Sends `n` lost frames (`bad`: of a payload that could not be read).
    fn send_lost(&mut self, n: usize, bad: bool) -> bool {
        let mode = self.c2_mode;
        let job = if bad { Job::bad(mode) } else { Job::lost(mode) };
        let mut sent = false;
        for _ in 0..n {
            sent |= self.send(job);
        }
        sent
    }

    /// The Codec2 path of `accept` (as `codec.codec2_decode`): a payload of
    /// k frames becomes k jobs in order; a loss conceals the frames its
    /// duration covers.
    fn accept_codec2(&mut self, slot: &Slot<FrameMeta>, mode: Option<Codec2Mode>) -> bool {
        let meta = slot.meta;
        if meta.flags & frame_flags::STREAM_START != 0 {
            self.c2_expected = None;
        }
        if meta.flags & (frame_flags::MISSING | frame_flags::INSERTED)
            == frame_flags::MISSING | frame_flags::INSERTED
        {
            let n = concealed_frames(self.c2_mode, meta.duration_ms, self.c2_packet_frames);
            return self.send_lost(n, false);
        }
        let mut sent = false;
        let real = meta.flags & frame_flags::MISSING == 0;
        if let Some(exp) = self.c2_expected {
            let ahead = meta.seq.wrapping_sub(exp) as i32;
            // Behind the seq expected, yet newer than any real frame: the
            // jitter buffer concealed these seqs (markers only) and then
            // followed the sender back to them (a pause, or a move to
            // longer packets). Follow it: the time concealed is the delay
            // it grew.
            let rewound = real
                && self
                    .last_real_seq
                    .is_none_or(|l| meta.seq.wrapping_sub(l) as i32 > 0);
            if ahead < 0 && !rewound {
                self.codec2_late_dropped.inc();
                return false;
            }
            if ahead < 0 {
                // Rewound: nothing to fill.
            } else if ahead as u32 > MAX_GAP {
                self.codec2_resyncs.inc();
            } else if ahead > 0 && self.fill_gaps {
                // Each packet missing held as many frames as the last one.
                for _ in 0..ahead {
                    sent |= self.send_lost(self.c2_packet_frames, false);
                }
                self.codec2_gaps_filled.add(ahead as u64);
            }
        }
        self.c2_expected = Some(meta.seq.wrapping_add(1));
        if let Some(m) = mode {
            self.c2_mode = m;
        }
        if real && mode.is_some() {
            let mode = self.c2_mode;
            if let Some(k) = mode.payload_frames(slot.len()) {
                self.c2_packet_frames = k;
                for bits in slot.bytes().chunks_exact(mode.frame_bytes()) {
                    sent |= self.send(Job::frame(mode, bits));
                }
                return sent;
            }
            let n = concealed_frames(mode, meta.duration_ms, self.c2_packet_frames);
            return sent | self.send_lost(n, true);
        }
        let n = concealed_frames(self.c2_mode, meta.duration_ms, self.c2_packet_frames);
        sent | self.send_lost(n, false)
    }

    /// Takes one item: routes it to its codec and remembers the newest
    /// real seq. Returns whether the worker got work.
    fn accept(&mut self, slot: &Slot<FrameMeta>) -> bool {
        let meta = slot.meta;
        if meta.flags & frame_flags::STREAM_START != 0 {
            self.last_real_seq = None;
        }
        let sent = self.route(slot);
        if meta.flags & frame_flags::MISSING == 0
            && self
                .last_real_seq
                .is_none_or(|l| meta.seq.wrapping_sub(l) as i32 > 0)
        {
            self.last_real_seq = Some(meta.seq);
        }
        sent
    }

    /// Routes one item to its codec; returns whether the worker got work.
    fn route(&mut self, slot: &Slot<FrameMeta>) -> bool {
        let meta = slot.meta;
        let real = meta.flags & frame_flags::MISSING == 0;
        let c2 = Profile::codec2_mode_of_wire(meta.codec);
        if real && (c2.is_some() || is_opus_id(meta.codec)) {
            self.codec.set(i64::from(meta.codec));
        }
        // Real frames go by their codec; markers and frames of unknown
        // codecs (concealed) to the codec in force.
        let to_codec2 = if real && c2.is_some() {
            true
        } else if real && is_opus_id(meta.codec) {
            false
        } else {
            self.on_codec2
        };
        if to_codec2 != self.on_codec2 {
            self.codec_switches.inc();
            if to_codec2 {
                // Held Opus frames play before this one: nothing after
                // them will reach the Opus decoder to repair with.
                self.opus.flush();
                self.c2_expected = self.opus.expected_seq();
                self.c2_played = false;
                self.interp.reset();
            } else {
                self.opus.set_expected_seq(self.c2_expected);
                self.opus.reset_state();
            }
            self.on_codec2 = to_codec2;
        }
        if to_codec2 {
            if real && c2.is_none() {
                self.opus.count_foreign();
            }
            self.accept_codec2(slot, c2)
        } else {
            self.opus.accept(slot);
            false
        }
    }
}

impl Processor for AdaptiveDecodeProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        let (input, out) = io.frames_in_pcm_out(0, 0);
        self.collect();
        let mut arrived = false;
        let mut woke = false;
        if let Some(batch) = input {
            for slot in batch.iter() {
                woke |= self.accept(slot);
                arrived = true;
            }
        }
        if woke {
            self.worker.wake();
        }
        if !self.outstanding() {
            self.opus.decode_ready(arrived, cx.quantum_ns, out.len());
        }
        let have = self.opus.fifo().len();
        if have < out.len() && self.outstanding() && !self.c2_played && self.started {
            // Just switched to Codec2 with no Opus audio held to cover the
            // worker's hop: continue the Opus audio by PLC for the gap.
            self.opus.conceal_into_fifo(out.len() - have);
            self.switch_concealed.inc();
        }
        if !self.opus.fifo().is_empty() {
            self.started = true;
        }
        let got = self.opus.fifo().pop_into(out);
        if got < out.len() && self.started {
            self.opus.count_underrun();
        }
        if got > 0 {
            let played = &out[..got];
            let energy: f32 = played.iter().map(|x| x * x).sum();
            if energy >= VOICED_MEAN_SQUARE * got as f32 {
                self.voiced.inc();
            }
        }
        Flow::Continue
    }
}
