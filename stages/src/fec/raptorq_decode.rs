//! `fec.raptorq_decode`: rebuilds lost frames from RaptorQ repair frames.
//!
//! The receiving half of `fec.raptorq_encode`. Source frames leave at once
//! (audio is never held back for a block that may not complete); repair
//! frames are consumed, not forwarded. When a block has lost source frames
//! and enough of its symbols have arrived (any K of them, usually), the
//! missing frames are rebuilt exactly (payload, seq, timestamp, codec, flags,
//! duration) and leave flagged `RECOVERED`, with `arrival_ns` set to the time
//! they leave, so the jitter buffer after this stage treats them as late
//! arrivals of a stream that is losing packets.
//!
//! RaptorQ allocates, so decoding runs on a worker thread behind rtrb rings
//! (see `fec::worker`); `process` only copies frames. In a cycle that
//! brought repair frames, `process` waits (up to `worker_wait`) for the
//! worker to take them and leaves with what they rebuilt: a lost frame
//! leaves in the cycle its block's last needed repair frame came, not one
//! later (a quantum less for the jitter buffer to hold; the sender paces
//! its repair over several cycles, so each quantum of hold counts). The
//! worker needs tens of microseconds for a block; one that misses the wait
//! is counted in `worker_late` and its frames leave in the next cycle.
//! Frames rebuilt by a late source frame (no repair that cycle) leave in
//! the next cycle without a wait.
//!
//! Memory is bounded: the worker keeps the newest `blocks_in_flight` block
//! ids (wrapping at 2^16); older blocks are closed, and counted in
//! `unrecoverable_blocks` when they still miss frames (including blocks of
//! which nothing arrived). Frames of a closed block are counted `stale`.
//! A new stream id or a jump of many blocks restarts the window.
//!
//! ## Ports
//! - `in` (Frame): received frames, source and REPAIR.
//! - `out` (Frame): source frames as they arrive, plus recovered ones.
//!
//! ## Params
//! - `blocks_in_flight` (int, 8): blocks kept open, 2..=256.
//! - `worker_wait` (duration, 2ms): longest wait for the worker's answer
//!   (in a cycle that brought repair, and at the start of a cycle).
//!
//! ## Counters
//! `recovered`, `unrecoverable_blocks`, `repair_received`, `malformed`,
//! `stale`, `overflow_drops`, `worker_late`, `worker_drops`.
//!
//! ## Latency
//! Declares 0: source frames are not delayed. A recovered frame is as late as
//! the last symbol its block needed; for it to be played, the jitter buffer
//! must hold it that long (`jitter.adaptive` does, for a stream losing
//! packets).
//!
//! ## Example
//! ```toml
//! [[stage]]
//! id = "fec_dec"
//! kind = "fec.raptorq_decode"
//! params = { blocks_in_flight = 8 }
//!
//! [[link]]
//! from = "depacketize.out"
//! to = "fec_dec.in"
//!
//! [[link]]
//! from = "fec_dec.out"
//! to = "jb.in"
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::block::{BlockState, MAX_SOURCE_SYMBOLS};
use super::worker::{Work, WorkerLink};

/// `fec.raptorq_decode` factory.
pub struct RaptorqDecode;

impl StageFactory for RaptorqDecode {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "fec.raptorq_decode",
            summary:
                "RaptorQ FEC: passes source frames on and rebuilds lost ones from repair frames",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "received source and REPAIR frames",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "source frames, received or recovered",
            }],
            params: vec![
                ParamSpec::int("blocks_in_flight", 8, "blocks kept open for recovery"),
                ParamSpec::duration(
                    "worker_wait",
                    Duration::from_millis(2),
                    "longest wait for the FEC worker per cycle",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let window = p.int_in("blocks_in_flight", 2, 256)? as usize;
        let wait = p.duration("worker_wait")?;
        if wait > Duration::from_secs(1) {
            return Err(ParamError::new("worker_wait", "above 1s; use a few milliseconds").into());
        }
        let work = DecodeWork {
            window,
            slots: (0..window).map(|_| None).collect(),
            newest: None,
            stream: 0,
            warm: 0,
            unrecoverable: cx.counter("unrecoverable_blocks"),
            malformed: cx.counter("malformed"),
            stale: cx.counter("stale"),
        };
        let capacity = cx.batch_capacity.max(16) * 4;
        let link = WorkerLink::spawn(
            format!("wzp-fec-dec-{}", cx.stage_id),
            capacity,
            wait,
            work,
            cx,
        )?;
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: Duration::ZERO,
            processor: Box::new(DecodeProc {
                link,
                recovered: cx.counter("recovered"),
                repair_received: cx.counter("repair_received"),
                overflow_drops: cx.counter("overflow_drops"),
            }),
        })
    }
}

/// Worker side: a window of open blocks, keyed by `block % window`.
struct DecodeWork {
    window: usize,
    slots: Vec<Option<BlockState>>,
    newest: Option<u16>,
    stream: u32,
    /// Block ids the window advanced since it (re)started, saturating at
    /// `window`: below that, ids leaving the window predate the stream.
    warm: usize,
    unrecoverable: Counter,
    malformed: Counter,
    stale: Counter,
}

impl DecodeWork {
    fn close(&mut self, idx: usize, count_absent: bool) {
        match self.slots[idx].take() {
            Some(state) if !state.complete() => self.unrecoverable.inc(),
            Some(_) => {}
            None if count_absent => self.unrecoverable.inc(),
            None => {}
        }
    }

    fn restart(&mut self, block: u16, stream: u32) {
        for idx in 0..self.window {
            self.close(idx, false);
        }
        self.newest = Some(block);
        self.stream = stream;
        self.warm = 0;
    }

    /// Moves the window so `block` is inside it; false when the block is
    /// too old to keep.
    fn place(&mut self, block: u16, stream: u32) -> bool {
        let Some(newest) = self.newest else {
            self.restart(block, stream);
            return true;
        };
        if stream != self.stream {
            self.restart(block, stream);
            return true;
        }
        let ahead = block.wrapping_sub(newest) as i16 as i64;
        let window = self.window as i64;
        if ahead > 4 * window || ahead <= -4 * window {
            // Far from anything open: the sender restarted its counter.
            self.restart(block, stream);
            return true;
        }
        if ahead <= -window {
            return false;
        }
        for step in 1..=ahead.max(0) {
            let id = newest.wrapping_add(step as u16);
            let idx = id as usize % self.window;
            let count_absent = self.warm >= self.window;
            self.close(idx, count_absent);
            self.warm = (self.warm + 1).min(self.window);
        }
        if ahead > 0 {
            self.newest = Some(block);
        }
        true
    }
}

impl Work for DecodeWork {
    fn on_frame(&mut self, meta: &FrameMeta, bytes: &[u8], emit: &mut dyn FnMut(FrameMeta, &[u8])) {
        let k = meta.fec.source_symbols as usize;
        if k == 0 || k > MAX_SOURCE_SYMBOLS {
            self.malformed.inc();
            return;
        }
        if !self.place(meta.fec.block, meta.stream) {
            self.stale.inc();
            return;
        }
        let idx = meta.fec.block as usize % self.window;
        let state = self.slots[idx].get_or_insert_with(|| {
            BlockState::new(meta.fec.block, k, meta.stream, meta.fec.ratio_percent)
        });
        if state.block != meta.fec.block || state.add(meta, bytes).is_err() {
            self.malformed.inc();
            return;
        }
        if state.ready() {
            if let Some(frames) = state.decode() {
                for (m, payload) in frames {
                    emit(m, &payload);
                }
            }
        }
    }
}

struct DecodeProc {
    link: WorkerLink,
    recovered: Counter,
    repair_received: Counter,
    overflow_drops: Counter,
}

impl Processor for DecodeProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        let (input, out) = io.frames_in_out(0, 0);
        let Some(out) = out else {
            return Flow::Continue;
        };
        let now = cx.now_ns;
        self.collect(out, now);
        let Some(input) = input else {
            return Flow::Continue;
        };
        let mut repair = false;
        for slot in input.iter() {
            let protected = slot.meta.fec.source_symbols > 0;
            if slot.meta.flags & frame_flags::REPAIR != 0 {
                self.repair_received.inc();
                if protected {
                    repair |= self.link.send(slot);
                }
                continue;
            }
            if out.push_copy(slot).is_err() {
                self.overflow_drops.inc();
            }
            if protected {
                self.link.send(slot);
            }
        }
        self.link.end_cycle(cx.cycle);
        if repair {
            // What this cycle's repair rebuilds leaves now (module doc).
            self.collect(out, now);
        }
        Flow::Continue
    }
}

impl DecodeProc {
    /// Moves the frames the worker rebuilt into `out`, waiting (bounded) for
    /// its answer to the last cycle that sent it work.
    fn collect(&mut self, out: &mut Batch<FrameMeta>, now: u64) {
        let recovered = &self.recovered;
        self.link.collect(
            out,
            |_| usize::MAX,
            |m, _| {
                m.arrival_ns = now;
                // A rebuilt frame arrives late by nature: if it was the
                // stream's first, its STREAM_START would make the jitter
                // buffer reset the stream that is already playing.
                m.flags &= !frame_flags::STREAM_START;
                m.flags |= frame_flags::RECOVERED;
                recovered.inc();
            },
        );
    }
}
