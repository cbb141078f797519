//! `codec.codec2_decode`: Codec2 frames in, PCM out.
//!
//! The processor forwards frames (or "lost" markers) through a ring to a
//! worker thread ([`super::codec2_worker`]) that decodes them to 8 kHz, and
//! interpolates what comes back to 48 kHz (polyphase FIR, no allocation).
//! The mode is taken from each frame's codec id (`poor` = 3200, `catastrophic`
//! = 1200), so a sender may switch between the two mid-stream.
//!
//! **Packets.** A payload carries one or more frames of its mode back to
//! back, up to 120 ms (docs/WIRE.md §1): each frame is one worker job
//! (`jobs`), in order.
//!
//! **Lost frames.** An item with `frame_flags::MISSING`, an empty payload, a
//! payload that is no whole number of its mode's frames (also counted in
//! `codec_errors`), or a codec id that is not Codec2
//! (`foreign_frames`) is concealed for the frames its `duration_ms` covers
//! (rounded up; the last packet's frame count if it states none); a seq
//! gap conceals the last packet's frame count per seq. Codec2 has no PLC of its own, so the
//! worker repeats the last good frame's parameters at half and then quarter
//! level, then plays silence (`classical_plc_invocations`). As in
//! `codec.opus_decode`, `seq` jumps without markers are filled
//! (`gaps_filled`), late items dropped (`late_dropped`: behind the seq
//! expected and not newer than every real frame seen; a newer one is a
//! jitter buffer following the sender back over seqs it concealed, and is
//! decoded), large jumps resync
//! (`resyncs`). A `MISSING | INSERTED` item (a jitter buffer growing its
//! delay) is concealed without consuming its `seq`.
//!
//! **Ports**
//! - in `in`: `Frame`, Codec2 frames in seq order.
//! - out `out`: `Pcm@48000`, one quantum per cycle; silence until the first
//!   frame is decoded.
//!
//! **Params**
//! - `profile` = `"catastrophic"`: the mode expected before the first frame
//!   (sets the start-up buffer and the declared latency).
//!
//! **Counters**: `frames_decoded`, `classical_plc_invocations`,
//! `codec_errors`, `foreign_frames`, `gaps_filled`, `late_dropped`,
//! `resyncs`, `underruns` (worker late), `dropped_full`, `worker_dropped`,
//! `jobs` (frames and losses handed to the worker).
//!
//! **Latency**: one quantum for the hop through the worker, plus the
//! interpolator's 2 ms. Playback starts once one frame is decoded.
//!
//! ```toml
//! [[stage]]
//! id = "c2dec"
//! kind = "codec.codec2_decode"
//! params = { profile = "catastrophic" }
//! ```

use std::time::Duration;

use rtrb::{Consumer, Producer, RingBuffer};
use wzp_engine::prelude::*;

use super::codec2_encode::{codec2_profile, quantum_48k};
use super::codec2_worker::{to_f32, SafeCodec2, WorkerHandle};
use super::profile::{Codec2Mode, Profile};
use super::resample6::{Interpolator6, DELAY_48K};

pub struct Codec2DecodeFactory;

const KIND: &str = "codec.codec2_decode";

/// Largest gap (frames) filled with lost markers; beyond it, resync.
const MAX_GAP: u32 = 50;

/// One frame for the decode worker: bits, or a loss to conceal.
#[derive(Clone, Copy)]
pub(crate) struct Job {
    pub(crate) bits: [u8; 8],
    pub(crate) mode: Codec2Mode,
    pub(crate) lost: bool,
    /// Lost because its payload could not be read (not a whole number of
    /// the mode's frames): concealed, counted as a codec error.
    pub(crate) bad: bool,
}

impl Job {
    /// A frame to conceal.
    pub(crate) fn lost(mode: Codec2Mode) -> Job {
        Job {
            bits: [0; 8],
            mode,
            lost: true,
            bad: false,
        }
    }

    /// A frame of a payload that could not be read: concealed, counted as
    /// an error.
    pub(crate) fn bad(mode: Codec2Mode) -> Job {
        Job {
            bad: true,
            ..Job::lost(mode)
        }
    }

    /// One frame's bits (`mode.frame_bytes()` of them).
    pub(crate) fn frame(mode: Codec2Mode, bits: &[u8]) -> Job {
        let mut job = Job::lost(mode);
        let n = bits.len().min(job.bits.len());
        job.bits[..n].copy_from_slice(&bits[..n]);
        job.lost = false;
        job
    }
}

/// Frames a lost item conceals: its `duration_ms` over the mode's frame,
/// rounded up, at least one and at most a packet's worth (120 ms); the
/// frames of the last packet (`fallback`) when it states no duration. A
/// jitter buffer marks a lost packet with the duration of the last one it
/// played, so a lost 120 ms packet of Codec2 1200 conceals three frames.
pub(crate) fn concealed_frames(mode: Codec2Mode, duration_ms: u8, fallback: usize) -> usize {
    let f = mode.frame_ms() as usize;
    let n = match usize::from(duration_ms) {
        0 => fallback,
        ms => ms.div_ceil(f),
    };
    n.clamp(1, mode.max_packet_frames())
}

/// The counters the decode worker moves.
pub(crate) struct DecodeWorkerCounters {
    pub(crate) frames_decoded: Counter,
    /// Lost frames concealed (repeat-and-fade, then silence).
    pub(crate) concealed: Counter,
    pub(crate) codec_errors: Counter,
    /// 8 kHz samples the worker could not hand back (ring full).
    pub(crate) worker_dropped: Counter,
}

/// A running decode worker: jobs in, 8 kHz samples out (every job yields
/// its mode's frame of samples, or counts them in `worker_dropped`).
pub(crate) struct DecodeWorker {
    pub(crate) jobs_tx: Producer<Job>,
    pub(crate) pcm_rx: Consumer<i16>,
    pub(crate) worker: WorkerHandle,
}

/// Starts the Codec2 decode worker shared by `codec.codec2_decode` and
/// `codec.adaptive_decode`. Concealment: Codec2 has no PLC of its own, so a
/// lost frame repeats the last good frame's parameters at half and then
/// quarter level, then plays silence.
pub(crate) fn spawn_decode_worker(
    name: String,
    c: DecodeWorkerCounters,
) -> Result<DecodeWorker, String> {
    let (jobs_tx, mut jobs_rx) = RingBuffer::<Job>::new(64);
    let (mut pcm_tx, pcm_rx) = RingBuffer::<i16>::new(8_000);
    let DecodeWorkerCounters {
        frames_decoded,
        concealed: plc,
        codec_errors,
        worker_dropped,
    } = c;
    let mut codecs: [Option<SafeCodec2>; 2] = [None, None];
    let mut speech = [0i16; 320];
    let mut last_good: Option<([u8; 8], Codec2Mode)> = None;
    let mut lost_run = 0u32;
    let worker = WorkerHandle::spawn(name, move || {
        let mut worked = false;
        while let Ok(job) = jobs_rx.pop() {
            worked = true;
            let n = job.mode.frame_samples_8k();
            let slot = match job.mode {
                Codec2Mode::M3200 => 0,
                Codec2Mode::M1200 => 1,
            };
            let codec = codecs[slot].get_or_insert_with(|| SafeCodec2::new(job.mode));
            let out = &mut speech[..n];
            // Counters move only after the samples are in the ring, so
            // whoever watches them sees the audio already available.
            let outcome = if !job.lost {
                if codec.decode(out, &job.bits[..job.mode.frame_bytes()]) {
                    last_good = Some((job.bits, job.mode));
                    lost_run = 0;
                    &frames_decoded
                } else {
                    &codec_errors
                }
            } else {
                lost_run += 1;
                match last_good {
                    // Repeat the last spectrum, fading: a short gap is
                    // bridged, a long one goes quiet instead of buzzing.
                    Some((bits, m)) if m == job.mode && lost_run <= 2 => {
                        codec.decode(out, &bits[..m.frame_bytes()]);
                        let shift = lost_run;
                        for s in out.iter_mut() {
                            *s >>= shift;
                        }
                    }
                    _ => out.fill(0),
                }
                if job.bad {
                    &codec_errors
                } else {
                    &plc
                }
            };
            let (_, rest) = pcm_tx.push_partial_slice(out);
            worker_dropped.add(rest.len() as u64);
            outcome.inc();
        }
        worked
    })?;
    Ok(DecodeWorker {
        jobs_tx,
        pcm_rx,
        worker,
    })
}

impl StageFactory for Codec2DecodeFactory {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: KIND,
            summary: "Codec2 3200/1200 decoder (worker thread) with simple concealment",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "Codec2 frames in seq order; lost ones as MISSING items",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Pcm@48000",
                doc: "decoded mono speech",
            }],
            params: vec![ParamSpec::str(
                "profile",
                "catastrophic",
                "\"poor\" (3200 bps) or \"catastrophic\" (1200 bps): mode expected first",
            )],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let profile = codec2_profile(p)?;
        let mode = profile.codec2_mode().unwrap_or(Codec2Mode::M1200);
        let quantum = quantum_48k(cx)?;

        let DecodeWorker {
            jobs_tx,
            pcm_rx,
            worker,
        } = spawn_decode_worker(
            format!("wzp-c2dec-{}", cx.stage_id),
            DecodeWorkerCounters {
                frames_decoded: cx.counter("frames_decoded"),
                concealed: cx.counter("classical_plc_invocations"),
                codec_errors: cx.counter("codec_errors"),
                worker_dropped: cx.counter("worker_dropped"),
            },
        )
        .map_err(BuildError::Other)?;

        let latency = Duration::from_nanos(((quantum + DELAY_48K) as u64) * 1_000_000_000 / 48_000);
        let processor = Codec2DecodeProc {
            jobs_tx,
            pcm_rx,
            worker,
            interp: Interpolator6::new(),
            low_i16: vec![0; quantum / 6].into_boxed_slice(),
            low: vec![0.0; quantum / 6].into_boxed_slice(),
            prebuffer: mode.frame_samples_8k(),
            started: false,
            last_mode: mode,
            packet_frames: 1,
            last_real_seq: None,
            expected_seq: None,
            foreign_frames: cx.counter("foreign_frames"),
            gaps_filled: cx.counter("gaps_filled"),
            late_dropped: cx.counter("late_dropped"),
            resyncs: cx.counter("resyncs"),
            underruns: cx.counter("underruns"),
            dropped_full: cx.counter("dropped_full"),
            jobs: cx.counter("jobs"),
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate: 48_000 })],
            latency,
            processor: Box::new(processor),
        })
    }
}

struct Codec2DecodeProc {
    jobs_tx: Producer<Job>,
    pcm_rx: Consumer<i16>,
    worker: WorkerHandle,
    interp: Interpolator6,
    low_i16: Box<[i16]>,
    low: Box<[f32]>,
    prebuffer: usize,
    started: bool,
    last_mode: Codec2Mode,
    /// Frames in the last packet decoded: what a gap without markers is
    /// taken to have held.
    packet_frames: usize,
    /// Seq of the newest real (not MISSING) item seen.
    last_real_seq: Option<u32>,
    expected_seq: Option<u32>,
    foreign_frames: Counter,
    gaps_filled: Counter,
    late_dropped: Counter,
    resyncs: Counter,
    underruns: Counter,
    dropped_full: Counter,
    jobs: Counter,
}

impl Codec2DecodeProc {
    fn send(&mut self, job: Job) -> bool {
        if self.jobs_tx.push(job).is_err() {
            self.dropped_full.inc();
            return false;
        }
        self.jobs.inc();
        true
    }

    /// Sends `n` lost frames (`bad`: of a payload that could not be read).
    fn send_lost(&mut self, n: usize, bad: bool) -> bool {
        let mode = self.last_mode;
        let job = if bad { Job::bad(mode) } else { Job::lost(mode) };
        let mut sent = false;
        for _ in 0..n {
            sent |= self.send(job);
        }
        sent
    }

    fn accept(&mut self, slot: &Slot<FrameMeta>) -> bool {
        let meta = slot.meta;
        if meta.flags & frame_flags::STREAM_START != 0 {
            self.expected_seq = None;
            self.last_real_seq = None;
        }
        let real = meta.flags & frame_flags::MISSING == 0;
        let newest = self
            .last_real_seq
            .is_none_or(|l| meta.seq.wrapping_sub(l) as i32 > 0);
        if real && newest {
            self.last_real_seq = Some(meta.seq);
        }
        let mut sent = false;
        if meta.flags & (frame_flags::MISSING | frame_flags::INSERTED)
            == frame_flags::MISSING | frame_flags::INSERTED
        {
            // A period a jitter buffer inserted: conceal it, but the frame
            // of this seq still comes next.
            let n = concealed_frames(self.last_mode, meta.duration_ms, self.packet_frames);
            return self.send_lost(n, false);
        }
        if let Some(exp) = self.expected_seq {
            let ahead = meta.seq.wrapping_sub(exp) as i32;
            // Behind, yet newer than any real frame: a jitter buffer
            // concealed these seqs and followed the sender back to them
            // (`jitter.adaptive`). Decode it.
            if ahead < 0 && !(real && newest) {
                self.late_dropped.inc();
                return false;
            }
            if ahead < 0 {
                // Rewound: nothing to fill.
            } else if ahead as u32 > MAX_GAP {
                self.resyncs.inc();
            } else {
                // Each packet missing held as many frames as the last one.
                for _ in 0..ahead {
                    sent |= self.send_lost(self.packet_frames, false);
                }
                self.gaps_filled.add(ahead as u64);
            }
        }
        self.expected_seq = Some(meta.seq.wrapping_add(1));
        let own_mode = Profile::codec2_mode_of_wire(meta.codec);
        if own_mode.is_none() && real {
            self.foreign_frames.inc();
        }
        let mode = own_mode.unwrap_or(self.last_mode);
        self.last_mode = mode;
        if real && own_mode.is_some() {
            // One or more frames back to back: one job each, in order.
            if let Some(k) = mode.payload_frames(slot.len()) {
                self.packet_frames = k;
                for bits in slot.bytes().chunks_exact(mode.frame_bytes()) {
                    sent |= self.send(Job::frame(mode, bits));
                }
                return sent;
            }
            let n = concealed_frames(mode, meta.duration_ms, self.packet_frames);
            return sent | self.send_lost(n, true);
        }
        let n = concealed_frames(mode, meta.duration_ms, self.packet_frames);
        sent | self.send_lost(n, false)
    }

    fn play(&mut self, out: &mut [f32]) {
        if !self.started {
            if self.pcm_rx.slots() < self.prebuffer {
                return;
            }
            self.started = true;
        }
        let need = self.low_i16.len();
        let (got, _) = self.pcm_rx.pop_partial_slice(&mut self.low_i16[..need]);
        let got = got.len();
        if got < need {
            self.underruns.inc();
        }
        for (d, s) in self.low.iter_mut().zip(&self.low_i16[..got]) {
            *d = to_f32(*s);
        }
        self.low[got..].fill(0.0);
        self.interp.process(&self.low, out);
    }
}

impl Processor for Codec2DecodeProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (input, out) = io.frames_in_pcm_out(0, 0);
        // Play out before handing this cycle's frames to the worker, so a
        // frame is heard exactly one cycle after it arrived, however fast
        // the worker is.
        self.play(out);
        let mut sent = false;
        if let Some(batch) = input {
            for slot in batch.iter() {
                sent |= self.accept(slot);
            }
        }
        if sent {
            self.worker.wake();
        }
        Flow::Continue
    }
}
