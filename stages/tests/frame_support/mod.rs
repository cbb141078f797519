//! Test stages for graph tests that watch the frames between the jitter
//! buffer and the decoder, or drop chosen ones on the way, and the helpers
//! such tests share (counters, bounded waits on the Codec2 workers, the
//! loudness measures the far end is checked with).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use wzp_engine::prelude::*;
use wzp_proto::media::CodecId;

/// Registers the stages below.
pub fn register(registry: &mut Registry) {
    registry.register(MediaClock).unwrap();
    registry.register(DropNth).unwrap();
    registry.register(LossWindow).unwrap();
}

/// `test.media_clock`: sums the media the jitter buffer hands the decoder:
/// a frame played counts the length its payload states (an Opus TOC, a
/// Codec2 payload's frames: `CodecId::frame_samples`), a MISSING item the
/// length it asks the decoder to conceal (`duration_ms`).
///
/// Counters: `samples` (both), `played_samples`, `concealed_samples`,
/// `frames_40ms`, `frames_long` (frames played of that length, or of the
/// `long_ms` param's, default 120).
pub struct MediaClock;
struct MediaClockProc {
    samples: Counter,
    played_samples: Counter,
    concealed_samples: Counter,
    frames_40ms: Counter,
    long_samples: u64,
    frames_long: Counter,
}
impl Processor for MediaClockProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let Some(input) = io.frames_in(0) else {
            return Flow::Continue;
        };
        for s in input.iter() {
            if s.meta.flags & frame_flags::MISSING != 0 {
                let n = u64::from(s.meta.duration_ms) * 48;
                self.concealed_samples.add(n);
                self.samples.add(n);
            } else {
                let n = u64::from(CodecId(s.meta.codec).frame_samples(s.bytes()).unwrap_or(0));
                if n == 1920 {
                    self.frames_40ms.inc();
                }
                if n == self.long_samples {
                    self.frames_long.inc();
                }
                self.played_samples.add(n);
                self.samples.add(n);
            }
        }
        Flow::Continue
    }
}
impl StageFactory for MediaClock {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "test.media_clock",
            summary: "sums the media length of the frames it sees",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "",
            }],
            outputs: vec![],
            params: vec![ParamSpec::int(
                "long_ms",
                120,
                "frames played of this length count in frames_long",
            )],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }
    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![],
            latency: Duration::ZERO,
            processor: Box::new(MediaClockProc {
                samples: cx.counter("samples"),
                played_samples: cx.counter("played_samples"),
                concealed_samples: cx.counter("concealed_samples"),
                frames_40ms: cx.counter("frames_40ms"),
                long_samples: p.int_in("long_ms", 1, 255)? as u64 * 48,
                frames_long: cx.counter("frames_long"),
            }),
        })
    }
}

/// `test.drop_nth`: passes frames through, except the `nth` (1-based;
/// 0: none) of those with codec id `codec`. Counter `dropped`.
pub struct DropNth;
struct DropNthProc {
    codec: u8,
    nth: u64,
    seen: u64,
    dropped: Counter,
}
impl Processor for DropNthProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (Some(input), Some(out)) = io.frames_in_out(0, 0) else {
            return Flow::Continue;
        };
        for slot in input.iter() {
            if slot.meta.codec == self.codec {
                self.seen += 1;
                if self.seen == self.nth {
                    self.dropped.inc();
                    continue;
                }
            }
            let _ = out.push_copy(slot);
        }
        Flow::Continue
    }
}
impl StageFactory for DropNth {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "test.drop_nth",
            summary: "drops the nth frame of one codec",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "",
            }],
            params: vec![
                ParamSpec::int("codec", 0, "codec id of the frames counted"),
                ParamSpec::int("nth", 0, "which of them to drop, 1-based; 0: none"),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }
    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: Duration::ZERO,
            processor: Box::new(DropNthProc {
                codec: p.int_in("codec", 0, 255)? as u8,
                nth: p.int_in("nth", 0, i64::MAX)? as u64,
                seen: 0,
                dropped: cx.counter("dropped"),
            }),
        })
    }
}

/// `test.loss_window`: drops `percent` of the frames that pass between
/// graph times `from_ms` and `to_ms` (a fixed LCG draw per frame, repair
/// frames included), so a loss phase lasts as long in time whatever the
/// number of packets sent in it (a per-packet trace ends early when FEC
/// repair adds packets). Counter `dropped`.
pub struct LossWindow;
struct LossWindowProc {
    from_ns: u64,
    to_ns: u64,
    percent: u32,
    x: u32,
    dropped: Counter,
}
impl Processor for LossWindowProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        let (Some(input), Some(out)) = io.frames_in_out(0, 0) else {
            return Flow::Continue;
        };
        let window = (self.from_ns..self.to_ns).contains(&cx.now_ns);
        for slot in input.iter() {
            self.x = self.x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            if window && (self.x >> 16) % 100 < self.percent {
                self.dropped.inc();
                continue;
            }
            let _ = out.push_copy(slot);
        }
        Flow::Continue
    }
}
impl StageFactory for LossWindow {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "test.loss_window",
            summary: "drops a share of the frames within a window of graph time",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "",
            }],
            params: vec![
                ParamSpec::int("from_ms", 0, "window start, graph time"),
                ParamSpec::int("to_ms", 0, "window end, graph time"),
                ParamSpec::int("percent", 0, "share dropped within the window"),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }
    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let ms = |name: &str| -> Result<u64, ParamError> {
            Ok(p.int_in(name, 0, i64::MAX)? as u64 * 1_000_000)
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: Duration::ZERO,
            processor: Box::new(LossWindowProc {
                from_ns: ms("from_ms")?,
                to_ns: ms("to_ms")?,
                percent: p.int_in("percent", 0, 100)? as u32,
                x: 12_345,
                dropped: cx.counter("dropped"),
            }),
        })
    }
}

/// A stage's counter; panics naming it when the stage or counter is not there.
pub fn counter(g: &Graph, stage: &str, name: &str) -> u64 {
    g.stats()
        .stage(stage)
        .and_then(|s| s.counter(name))
        .unwrap_or_else(|| panic!("no counter {stage}.{name}"))
}

/// Waits (bounded, 30 s) until `cond` holds on the graph's counters.
pub fn wait_for(g: &Graph, what: &str, cond: impl Fn(&Graph) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond(g) {
        assert!(Instant::now() < deadline, "{what}: worker stuck");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Waits until the encoder's worker has made `want` Codec2 frames (both
/// modes) and the decoder's has answered every job.
pub fn wait_workers(graph: &Graph, want: u64) {
    wait_for(graph, "encoder", |g| {
        counter(g, "enc", "codec2_frames_encoded") >= want
    });
    wait_for(graph, "decoder", |g| {
        counter(g, "dec", "codec2_frames_decoded")
            + counter(g, "dec", "codec2_concealed")
            + counter(g, "dec", "codec2_errors")
            >= counter(g, "dec", "codec2_jobs")
    });
}

/// 10 ms RMS envelope at 16 kHz.
pub fn envelope(x: &[f32]) -> Vec<f64> {
    x.chunks_exact(160)
        .map(|c| (c.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>() / 160.0).sqrt())
        .collect()
}

/// Pearson correlation of two series (over the shorter length).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma) * (x - ma);
        bb += (y - mb) * (y - mb);
    }
    ab / (aa * bb).sqrt().max(1e-12)
}

/// RMS level.
pub fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}
