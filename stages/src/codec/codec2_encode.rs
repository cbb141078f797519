//! `codec.codec2_encode`: PCM in, Codec2 frames out, for links too poor for
//! Opus (profiles `poor` = 3200 bps / 20 ms, `catastrophic` = 1200 bps /
//! 40 ms).
//!
//! The processor decimates 48 kHz to 8 kHz (polyphase FIR, in place, no
//! allocation) and pushes 16-bit samples into a ring; a worker thread
//! ([`super::codec2_worker`]) encodes whole frames, because the `codec2`
//! crate allocates per frame; the processor pops the encoded frames from a
//! second ring and stamps them.
//!
//! **Ports**
//! - in `in`: `Pcm@48000`, mono.
//! - out `out`: `Frame`, one per Codec2 frame: `seq` +1 per frame from 0,
//!   `timestamp` (first sample at 48 kHz), `codec` (profile id),
//!   `duration_ms`, `stream`; `STREAM_START` on the first.
//!
//! **Params**
//! - `profile` = `"catastrophic"`: `"poor"` (3200) or `"catastrophic"` (1200).
//! - `stream` = 0: written to `FrameMeta::stream`.
//!
//! **Counters**: `frames_encoded` (by the worker), `frames_out`,
//! `ring_overflow_samples` (worker stalled: input dropped), `codec_errors`,
//! `worker_dropped` (processor not draining), `dropped_full` (output batch
//! full).
//!
//! **Latency**: one quantum for the hop through the worker (a frame
//! completed in cycle c leaves in cycle c+1; under a faster-than-real-time
//! clock it may leave later, never lost), the part of a frame that waits
//! beyond the quantum, the decimator's 2 ms and Codec2's own 20 ms
//! (analysis window centred behind the newest input):
//! `quantum + max(0, frame - quantum) + 22 ms`.
//!
//! ```toml
//! [[stage]]
//! id = "c2enc"
//! kind = "codec.codec2_encode"
//! params = { profile = "catastrophic" }
//! ```

use std::time::Duration;

use rtrb::{Consumer, Producer, RingBuffer};
use wzp_engine::prelude::*;

use super::codec2_worker::{to_i16, SafeCodec2, WorkerHandle};
use super::profile::{names_where, Codec2Mode, Profile};
use super::resample6::{Decimator6, DELAY_48K};

pub struct Codec2EncodeFactory;

/// Codec2's own delay: its 40 ms analysis window is centred 20 ms behind
/// the newest input. Measured end to end by the `codec_codec2` tests.
const CODEC2_DELAY_48K: usize = 960;

const KIND: &str = "codec.codec2_encode";

/// An encoded frame travelling from the worker.
#[derive(Clone, Copy, Default)]
struct Encoded {
    bits: [u8; 8],
}

pub(crate) fn codec2_profile(p: &Params) -> Result<&'static Profile, BuildError> {
    let name = p.str("profile")?;
    let is_c2 = |p: &Profile| p.codec2_mode().is_some();
    match Profile::by_name(name) {
        Some(pr) if is_c2(pr) => Ok(pr),
        Some(pr) => Err(ParamError::new(
            "profile",
            format!(
                "{:?} is an Opus profile; use codec.opus_encode/opus_decode for it, or one of: {}",
                pr.name,
                names_where(is_c2).join(", ")
            ),
        )
        .into()),
        None => Err(ParamError::new(
            "profile",
            format!(
                "{name:?} is not a profile; use one of: {}",
                names_where(is_c2).join(", ")
            ),
        )
        .into()),
    }
}

pub(crate) fn quantum_48k(cx: &BuildContext<'_>) -> Result<usize, BuildError> {
    let q = cx.samples_at(48_000);
    if q == 0 || q % 6 != 0 {
        return Err(BuildError::Other(format!(
            "the graph quantum is {q} samples at 48 kHz; Codec2 stages resample by 6 and need a multiple of 6 (any whole number of ms)"
        )));
    }
    Ok(q)
}

impl StageFactory for Codec2EncodeFactory {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: KIND,
            summary: "Codec2 3200/1200 encoder (worker thread), for the worst links",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Pcm@48000",
                doc: "mono speech",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "one Codec2 frame per item",
            }],
            params: vec![
                ParamSpec::str(
                    "profile",
                    "catastrophic",
                    "\"poor\" (3200 bps) or \"catastrophic\" (1200 bps)",
                ),
                ParamSpec::int("stream", 0, "stream id written to each frame"),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let profile = codec2_profile(p)?;
        let stream = p.int_in("stream", 0, u32::MAX as i64)? as u32;
        let mode = profile.codec2_mode().unwrap_or(Codec2Mode::M1200);
        let quantum = quantum_48k(cx)?;
        let frame_8k = mode.frame_samples_8k();
        let frame_48k = frame_8k * 6;

        // One second of input: the worker would have to stall that long
        // before anything is dropped.
        let (pcm_tx, mut pcm_rx) = RingBuffer::<i16>::new(8_000);
        let (mut bits_tx, bits_rx) = RingBuffer::<Encoded>::new(64);
        let frames_encoded = cx.counter("frames_encoded");
        let codec_errors = cx.counter("codec_errors");
        let worker_dropped = cx.counter("worker_dropped");
        let mut codec = SafeCodec2::new(mode);
        let mut speech = vec![0i16; frame_8k];
        let (fe, ce) = (frames_encoded.clone(), codec_errors.clone());
        let worker = WorkerHandle::spawn(format!("wzp-c2enc-{}", cx.stage_id), move || {
            let mut worked = false;
            while pcm_rx.slots() >= frame_8k {
                if pcm_rx.pop_entire_slice(&mut speech).is_err() {
                    break;
                }
                worked = true;
                let mut e = Encoded::default();
                if !codec.encode(&mut e.bits, &speech) {
                    ce.inc();
                    continue;
                }
                if bits_tx.push(e).is_err() {
                    worker_dropped.inc();
                }
                fe.inc();
            }
            worked
        })
        .map_err(BuildError::Other)?;

        let wait = frame_48k.saturating_sub(quantum);
        let latency = Duration::from_nanos(
            ((quantum + wait + DELAY_48K + CODEC2_DELAY_48K) as u64) * 1_000_000_000 / 48_000,
        );
        let processor = Codec2EncodeProc {
            decim: Decimator6::new(),
            low: vec![0.0; quantum / 6 + 1].into_boxed_slice(),
            low_i16: vec![0; quantum / 6 + 1].into_boxed_slice(),
            pcm_tx,
            bits_rx,
            worker,
            frame_bytes: mode.frame_bytes(),
            frame_48k: frame_48k as u32,
            seq: 0,
            first: true,
            codec: profile.wire_codec(),
            duration_ms: mode.frame_ms() as u8,
            stream,
            frames_out: cx.counter("frames_out"),
            ring_overflow_samples: cx.counter("ring_overflow_samples"),
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

struct Codec2EncodeProc {
    decim: Decimator6,
    low: Box<[f32]>,
    low_i16: Box<[i16]>,
    pcm_tx: Producer<i16>,
    bits_rx: Consumer<Encoded>,
    worker: WorkerHandle,
    frame_bytes: usize,
    frame_48k: u32,
    seq: u32,
    first: bool,
    codec: u8,
    duration_ms: u8,
    stream: u32,
    frames_out: Counter,
    ring_overflow_samples: Counter,
    dropped_full: Counter,
}

impl Processor for Codec2EncodeProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (input, mut out) = io.pcm_in_frames_out(0, 0);
        // Frames the worker finished since last cycle, taken before this
        // cycle's samples go in: a frame always leaves exactly one cycle
        // after it completed, however fast the worker is.
        while let Ok(e) = self.bits_rx.pop() {
            let mut meta = FrameMeta {
                seq: self.seq,
                timestamp: self.seq.wrapping_mul(self.frame_48k),
                stream: self.stream,
                codec: self.codec,
                duration_ms: self.duration_ms,
                ..Default::default()
            };
            if self.first {
                meta.flags |= frame_flags::STREAM_START;
                self.first = false;
            }
            self.seq = self.seq.wrapping_add(1);
            match out
                .as_deref_mut()
                .map(|b| b.push(meta, &e.bits[..self.frame_bytes]))
            {
                Some(Ok(())) => self.frames_out.inc(),
                _ => self.dropped_full.inc(),
            }
        }
        let n = self.decim.process(input, &mut self.low);
        for (d, s) in self.low_i16.iter_mut().zip(&self.low[..n]) {
            *d = to_i16(*s);
        }
        let (_, rest) = self.pcm_tx.push_partial_slice(&self.low_i16[..n]);
        self.ring_overflow_samples.add(rest.len() as u64);
        if n > 0 {
            self.worker.wake();
        }
        Flow::Continue
    }
}
