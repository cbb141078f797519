//! `wire.stream_demux`: splits received frames by sender into per-sender
//! outputs, so each talker in a room gets its own FEC decoder, jitter buffer
//! and decoder.
//!
//! Ports: `in` (Frame) -> `out0` .. `out{N-1}` (Frame).
//!
//! Params:
//! - `outputs` (default 4, 1..=32): receive chains behind this stage; a room
//!   of `outputs + 1` people is heard in full.
//! - `idle` (default `"2s"`): a sender silent this long frees its output for
//!   a new one.
//!
//! A new sender takes a free output (or the one idle longest, once past
//! `idle`); its first frame is marked `STREAM_START` so the chain behind
//! resets its state. With every output busy, the new sender's frames are
//! dropped and counted (`unassigned_drops`). Declared latency: 0.
//!
//! Counters: `streams_assigned`, `unassigned_drops`, `overflow_drops`;
//! gauges `active_streams` and, per output, `sender0` .. `sender{N-1}`: the
//! sender id it carries, -1 while free (what names a receive chain's talker:
//! `wzp-client`'s `--top` matches it against the room's participants).
//!
//! ```toml
//! [[stage]]
//! id = "demux"
//! kind = "wire.stream_demux"
//! params = { outputs = 4, idle = "2s" }
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

/// The factory of `wire.stream_demux`.
pub struct StreamDemux;

#[derive(Clone, Copy, Default)]
struct Route {
    active: bool,
    stream: u32,
    last_ns: u64,
}

struct StreamDemuxProc {
    routes: Box<[Route]>,
    idle_ns: u64,
    assigned: Counter,
    unassigned: Counter,
    overflow: Counter,
    active: Gauge,
    /// Per output: the sender id it carries, -1 while free.
    senders: Box<[Gauge]>,
}

impl StreamDemuxProc {
    /// The output for `stream`, assigning one if needed; `None` when all are
    /// busy. The bool says whether it was just assigned.
    fn route(&mut self, stream: u32, now: u64) -> Option<(usize, bool)> {
        if let Some(k) = self
            .routes
            .iter()
            .position(|r| r.active && r.stream == stream)
        {
            self.routes[k].last_ns = now;
            return Some((k, false));
        }
        let free = self.routes.iter().position(|r| !r.active).or_else(|| {
            // The output idle longest, if it is past `idle`.
            let (k, r) = self
                .routes
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.last_ns)?;
            (now.saturating_sub(r.last_ns) >= self.idle_ns).then_some(k)
        })?;
        self.routes[free] = Route {
            active: true,
            stream,
            last_ns: now,
        };
        self.assigned.inc();
        Some((free, true))
    }
}

impl Processor for StreamDemuxProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        let n = io.frames_in(0).map_or(0, |b| b.len());
        for i in 0..n {
            let Some(meta) = io.frames_in(0).and_then(|b| b.get(i)).map(|s| s.meta) else {
                break;
            };
            let now = if meta.arrival_ns != 0 {
                meta.arrival_ns.max(cx.now_ns)
            } else {
                cx.now_ns
            };
            let Some((k, fresh)) = self.route(meta.stream, now) else {
                self.unassigned.inc();
                continue;
            };
            let (inp, out) = io.frames_in_out(0, k);
            let (Some(inp), Some(out)) = (inp, out) else {
                continue;
            };
            let Some(src) = inp.get(i) else { continue };
            match out.push_slot() {
                Some(dst) => {
                    dst.meta = src.meta;
                    if fresh {
                        dst.meta.flags |= frame_flags::STREAM_START;
                    }
                    dst.set_bytes(src.bytes());
                }
                None => self.overflow.inc(),
            }
        }
        // Expire senders gone quiet, so a count of active streams is honest.
        let mut active = 0;
        for (r, g) in self.routes.iter_mut().zip(self.senders.iter()) {
            if r.active && cx.now_ns.saturating_sub(r.last_ns) >= self.idle_ns.saturating_mul(4) {
                r.active = false;
            }
            active += i64::from(r.active);
            g.set(if r.active { i64::from(r.stream) } else { -1 });
        }
        self.active.set(active);
        Flow::Continue
    }
}

const OUTPUT_NAMES: [&str; 32] = [
    "out0", "out1", "out2", "out3", "out4", "out5", "out6", "out7", "out8", "out9", "out10",
    "out11", "out12", "out13", "out14", "out15", "out16", "out17", "out18", "out19", "out20",
    "out21", "out22", "out23", "out24", "out25", "out26", "out27", "out28", "out29", "out30",
    "out31",
];

impl StageFactory for StreamDemux {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "wire.stream_demux",
            summary: "splits received frames by sender, one output per talker",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "frames from every sender",
            }],
            outputs: vec![PortInfo {
                name: "out0..out{N-1}",
                ty: "Frame",
                doc: "one sender each",
            }],
            params: vec![
                ParamSpec::int("outputs", 4, "per-sender outputs, 1..=32"),
                ParamSpec::duration(
                    "idle",
                    Duration::from_secs(2),
                    "silence after which a sender's output is reused",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked, Domain::Packet],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let n = p.int_in("outputs", 1, OUTPUT_NAMES.len() as i64)? as usize;
        let idle = p.duration("idle")?;
        if idle < Duration::from_millis(100) {
            return Err(ParamError::new(
                "idle",
                "is under 100ms; a talker's pauses would lose their output",
            )
            .into());
        }
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: OUTPUT_NAMES[..n]
                .iter()
                .map(|name| PortDecl::new(*name, PortType::Frame))
                .collect(),
            latency: Duration::ZERO,
            processor: Box::new(StreamDemuxProc {
                routes: vec![Route::default(); n].into_boxed_slice(),
                idle_ns: idle.as_nanos() as u64,
                assigned: cx.counter("streams_assigned"),
                unassigned: cx.counter("unassigned_drops"),
                overflow: cx.counter("overflow_drops"),
                active: cx.gauge("active_streams"),
                senders: (0..n)
                    .map(|k| {
                        let g = cx.gauge(&format!("sender{k}"));
                        g.set(-1);
                        g
                    })
                    .collect(),
            }),
        })
    }
}
