//! `fec.raptorq_encode`: protects frames with RaptorQ repair frames.
//!
//! Frames are grouped in blocks of `frames_per_block` source frames. Each
//! source frame leaves at once, unchanged except for its `FrameMeta::fec`
//! tag (block id, symbol id `0..K`, `K`, ratio), so protection adds no
//! latency to the audio. When a block completes, `R = ceil(K * fec_ratio /
//! 100)` repair frames follow: flagged `frame_flags::REPAIR`, symbol ids
//! `K..K+R`, each carrying one RaptorQ repair symbol from which, with any
//! other K - 1 symbols of the block, every source frame can be rebuilt
//! exactly (lengths and metadata included; see `fec::block` for the symbol
//! layout: the compact one, flagged `frame_flags::COMPACT_REPAIR` on every
//! repair frame). Block ids count up and wrap at 2^16.
//!
//! RaptorQ allocates, so the encoding runs on a worker thread behind rtrb
//! rings (see `fec::worker`); `process` only copies frames. Repair frames of
//! a block that completed in cycle N leave from cycle N + 1 on, paced:
//! `ceil(ratio / 100)` a cycle (one at ratios up to 100 %), so a block's
//! repair is spread over as many cycles as its source. Sent in one cycle,
//! a block's repair frames leave back to back and share their fate on the
//! path: whatever drops one packet of a 20 ms slot (a queue overflowing, a
//! radio fade) drops them all, and a 2-frame block at 100 % came back from
//! any two of three chances, not of four (live, random 20 % lost 4 % of
//! frames for good where independent packets lose 2 %). Paced, they fall
//! in their own slots; the last leaves `ceil(R / per cycle)` quanta after
//! the block's last frame, which is what the receiver's hold covers
//! (`jitter.adaptive`). The pace keeps up with the source (a block's
//! repair leaves before the next block's), so nothing queues behind it.
//!
//! Frames too large to protect (payload above 1487 bytes) and frames already
//! flagged REPAIR pass through untagged and are counted in `unprotected`.
//!
//! ## Ports
//! - `in` (Frame): encoded frames.
//! - `out` (Frame): the same frames, tagged, plus repair frames.
//!
//! ## Params
//! - `frames_per_block` (int, 5): source frames per block, 1..=64.
//! - `fec_ratio` (int, 50): repair symbols per 100 source symbols, 0..=200
//!   (0 tags frames but sends no repair).
//! - `live_ratio` (string, ""): name of an `Arc<fec::live::FecLive>`
//!   resource (shared with `quality.adapt`'s `fec_live`). A ratio published
//!   there applies from the next block on, where it is above `fec_ratio`:
//!   `fec_ratio` stays the floor (a call configured with repair keeps it),
//!   the controller adds repair where it decides on it (Codec2 for heavy
//!   loss). A block keeps the ratio it began with; its tags carry it, so the
//!   receiver needs no word of the change. A block size published with the
//!   ratio (`FecLive::set_block`) replaces `frames_per_block` the same way,
//!   from the next block (the controller's RaptorQ for dense random loss
//!   sizes blocks to the receiver's latency budget). Empty: `fec_ratio`
//!   and `frames_per_block` throughout.
//! - `worker_wait` (duration, 2ms): longest wait for the worker's answer
//!   at the start of a cycle (see `fec::worker`).
//!
//! ## Counters
//! `blocks`, `repair_sent`, `repair_bytes` (their payload bytes: what the
//! repair costs on the wire, before headers), `unprotected`,
//! `overflow_drops` (output full),
//! `worker_late`, `worker_drops`; gauge `ratio` (the ratio of the block
//! being sent).
//!
//! ## Latency
//! Declares 0: source frames are not delayed. Repair frames trail their block
//! by one quantum and more (paced, above).
//!
//! ## Robustness
//! With the defaults (5 frames, 50 %: 3 repair frames) RaptorQ rebuilds every
//! block from any 5 of its 8 frames; this holds for every block shape up to
//! 8 frames at 50 % (tested exhaustively). Larger blocks occasionally (under
//! 1 % of loss patterns) need one symbol more than K.
//!
//! ## Example
//! ```toml
//! [[stage]]
//! id = "fec_enc"
//! kind = "fec.raptorq_encode"
//! params = { frames_per_block = 5, fec_ratio = 50 }
//!
//! [[link]]
//! from = "enc.out"
//! to = "fec_enc.in"
//! ```

use std::sync::Arc;
use std::time::Duration;

use raptorq::SourceBlockEncodingPlan;
use wzp_engine::prelude::*;

use super::block::{encode_block, repair_count, Layout, MAX_PROTECTED_PAYLOAD, MAX_SOURCE_SYMBOLS};
use super::live::FecLive;
use super::worker::{Work, WorkerLink};
use crate::cell::optional_cell;

/// `fec.raptorq_encode` factory.
pub struct RaptorqEncode;

impl StageFactory for RaptorqEncode {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "fec.raptorq_encode",
            summary: "RaptorQ FEC: tags frames in blocks and adds repair frames",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "encoded frames",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "tagged source frames and REPAIR frames",
            }],
            params: vec![
                ParamSpec::int("frames_per_block", 5, "source frames per block"),
                ParamSpec::int("fec_ratio", 50, "repair symbols per 100 source symbols"),
                ParamSpec::str(
                    "live_ratio",
                    "",
                    "FecLive resource whose ratio, where above fec_ratio, applies from the next block",
                ),
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
        let k = p.int_in("frames_per_block", 1, MAX_SOURCE_SYMBOLS as i64)? as usize;
        let ratio = p.int_in("fec_ratio", 0, 200)? as u32;
        let wait = p.duration("worker_wait")?;
        if wait > Duration::from_secs(1) {
            return Err(ParamError::new("worker_wait", "above 1s; use a few milliseconds").into());
        }
        let live = optional_cell::<FecLive>(cx, p, "live_ratio", "a FecLive")?;
        let repair = repair_count(k, ratio);
        let ratio_gauge = cx.gauge("ratio");
        ratio_gauge.set(i64::from(ratio));
        let work = EncodeWork {
            k,
            // A live ratio may rise from 0: plan for repair whenever it can.
            plan: (repair > 0 || live.is_some())
                .then(|| SourceBlockEncodingPlan::generate(k as u16)),
            block: None,
            frames: vec![None; MAX_SOURCE_SYMBOLS],
            blocks: cx.counter("blocks"),
        };
        let capacity = cx.batch_capacity.max(16) * 4;
        let link = WorkerLink::spawn(
            format!("wzp-fec-enc-{}", cx.stage_id),
            capacity,
            wait,
            work,
            cx,
        )?;
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: Duration::ZERO,
            processor: Box::new(EncodeProc {
                k,
                block_k: k,
                ratio: ratio.min(255) as u8,
                live,
                block_ratio: ratio.min(255) as u8,
                block_repair: repair > 0,
                ratio_gauge,
                block: 0,
                symbol: 0,
                link,
                repair_sent: cx.counter("repair_sent"),
                repair_bytes: cx.counter("repair_bytes"),
                unprotected: cx.counter("unprotected"),
                overflow_drops: cx.counter("overflow_drops"),
            }),
        })
    }
}

/// Worker side: collects a block, then computes its repair symbols (as
/// many as the ratio its frames are tagged with asks). A block has the
/// size its tags say (a live block size changes it between blocks).
struct EncodeWork {
    /// `frames_per_block`: the size `plan` is for.
    k: usize,
    plan: Option<SourceBlockEncodingPlan>,
    block: Option<u16>,
    frames: Vec<Option<(FrameMeta, Vec<u8>)>>,
    blocks: Counter,
}

impl Work for EncodeWork {
    fn on_frame(&mut self, meta: &FrameMeta, bytes: &[u8], emit: &mut dyn FnMut(FrameMeta, &[u8])) {
        if self.block != Some(meta.fec.block) {
            // A new block; a block the ring dropped frames of is abandoned.
            self.block = Some(meta.fec.block);
            self.frames.iter_mut().for_each(|f| *f = None);
        }
        let k = usize::from(meta.fec.source_symbols).clamp(1, MAX_SOURCE_SYMBOLS);
        let Some(slot) = self.frames[..k].get_mut(meta.fec.symbol as usize) else {
            return;
        };
        *slot = Some((*meta, bytes.to_vec()));
        if self.frames[..k].iter().any(|f| f.is_none()) {
            return;
        }
        let frames: Vec<(FrameMeta, &[u8])> = self.frames[..k]
            .iter()
            .flatten()
            .map(|(m, b)| (*m, &b[..]))
            .collect();
        let last = frames[k - 1].0;
        let repair = repair_count(k, u32::from(last.fec.ratio_percent));
        let plan = self.plan.as_ref().filter(|_| k == self.k);
        for (esi, data) in encode_block(&frames, repair, plan, Layout::Compact) {
            let repair = FrameMeta {
                flags: frame_flags::REPAIR | frame_flags::COMPACT_REPAIR,
                fec: FecTag {
                    symbol: esi,
                    ..last.fec
                },
                arrival_ns: 0,
                ..last
            };
            emit(repair, &data);
        }
        self.blocks.inc();
        self.block = None;
        self.frames.iter_mut().for_each(|f| *f = None);
    }
}

/// Repair frames a cycle, for a repair frame of `meta`'s ratio: as many
/// as the source frames it protects over a cycle's one source frame, at
/// least one (the module doc's pacing).
fn repair_pace(meta: &FrameMeta) -> usize {
    usize::from(meta.fec.ratio_percent).div_ceil(100).max(1)
}

struct EncodeProc {
    /// Build-time `frames_per_block`.
    k: usize,
    /// Size of the block being sent (the live one at its first frame).
    block_k: usize,
    /// Build-time `fec_ratio`.
    ratio: u8,
    /// `live_ratio`'s cell, if any.
    live: Option<Arc<FecLive>>,
    /// Ratio of the block being sent (fixed at its first frame).
    block_ratio: u8,
    /// Whether that ratio asks for any repair (the worker gets the block).
    block_repair: bool,
    ratio_gauge: Gauge,
    block: u16,
    symbol: usize,
    link: WorkerLink,
    repair_sent: Counter,
    repair_bytes: Counter,
    unprotected: Counter,
    overflow_drops: Counter,
}

impl Processor for EncodeProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        let (input, out) = io.frames_in_out(0, 0);
        let Some(out) = out else {
            return Flow::Continue;
        };
        let (repair_sent, repair_bytes) = (&self.repair_sent, &self.repair_bytes);
        self.link.collect(out, repair_pace, |_, len| {
            repair_sent.inc();
            repair_bytes.add(len as u64);
        });
        let Some(input) = input else {
            return Flow::Continue;
        };
        for slot in input.iter() {
            if slot.len() > MAX_PROTECTED_PAYLOAD || slot.meta.flags & frame_flags::REPAIR != 0 {
                self.unprotected.inc();
                let mut meta = slot.meta;
                meta.fec = FecTag::default();
                if out.push(meta, slot.bytes()).is_err() {
                    self.overflow_drops.inc();
                }
                continue;
            }
            let Some(dst) = out.push_slot() else {
                // Output full: the frame is lost here, like on the wire.
                self.overflow_drops.inc();
                continue;
            };
            if self.symbol == 0 {
                // A block begins: it takes the ratio (and block size) in
                // force now.
                let live = self.live.as_deref();
                self.block_ratio = live
                    .and_then(FecLive::get)
                    .map_or(self.ratio, |r| r.max(self.ratio));
                self.block_k = live.and_then(FecLive::block).map_or(self.k, usize::from);
                self.block_repair = repair_count(self.block_k, u32::from(self.block_ratio)) > 0;
                self.ratio_gauge.set(i64::from(self.block_ratio));
            }
            dst.meta = slot.meta;
            dst.meta.fec = FecTag {
                block: self.block,
                symbol: self.symbol as u16,
                source_symbols: self.block_k as u8,
                ratio_percent: self.block_ratio,
            };
            dst.set_bytes(slot.bytes());
            if self.block_repair {
                self.link.send(dst);
            }
            self.symbol += 1;
            if self.symbol == self.block_k {
                self.symbol = 0;
                self.block = self.block.wrapping_add(1);
            }
        }
        self.link.end_cycle(cx.cycle);
        Flow::Continue
    }
}
