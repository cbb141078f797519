//! The receive chain as a TOML graph: frames -> fec.raptorq_encode ->
//! net.netem_frames (seeded loss and jitter) -> fec.raptorq_decode ->
//! jitter.adaptive -> a checking sink. FEC must turn most losses into exact
//! frames, the jitter buffer must deliver one frame per period, and every
//! payload that comes out must be the one that was sent.

use std::time::Duration;

use wzp_engine::prelude::*;

fn payload_of(seq: u32, out: &mut [u8]) -> usize {
    let len = 60 + (seq as usize * 13) % 120;
    for (i, b) in out[..len].iter_mut().enumerate() {
        *b = (seq as usize * 7 + i * 3) as u8;
    }
    len
}

/// `test.frames`: one 20 ms frame per cycle, payload a function of seq.
struct Frames;
struct FramesProc(u32);
impl Processor for FramesProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let Some(out) = io.frames_out(0) else {
            return Flow::Continue;
        };
        let mut buf = [0u8; 200];
        let len = payload_of(self.0, &mut buf);
        let meta = FrameMeta {
            seq: self.0,
            timestamp: self.0.wrapping_mul(960),
            stream: 1,
            duration_ms: 20,
            ..Default::default()
        };
        let _ = out.push(meta, &buf[..len]);
        self.0 += 1;
        Flow::Continue
    }
}
impl StageFactory for Frames {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "test.frames",
            summary: "frame source",
            inputs: vec![],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "",
            }],
            params: vec![],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }
    fn build(&self, _cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        Ok(Built {
            inputs: vec![],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: Duration::ZERO,
            processor: Box::new(FramesProc(0)),
        })
    }
}

/// `test.playout`: checks what a decoder would receive.
struct Playout;
struct PlayoutProc {
    played: Counter,
    missing: Counter,
    bad: Counter,
    per_cycle_wrong: Counter,
    out_of_order: Counter,
    last: Option<u32>,
}
impl Processor for PlayoutProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let Some(input) = io.frames_in(0) else {
            return Flow::Continue;
        };
        if self.last.is_some() && input.len() != 1 {
            self.per_cycle_wrong.inc();
        }
        let mut want = [0u8; 200];
        for s in input.iter() {
            if s.meta.flags & frame_flags::MISSING != 0 {
                self.missing.inc();
                continue;
            }
            let len = payload_of(s.meta.seq, &mut want);
            if s.bytes() != &want[..len] || s.meta.timestamp != s.meta.seq.wrapping_mul(960) {
                self.bad.inc();
            }
            if let Some(last) = self.last {
                if s.meta.seq <= last {
                    self.out_of_order.inc();
                }
            }
            self.last = Some(s.meta.seq);
            self.played.inc();
        }
        Flow::Continue
    }
}
impl StageFactory for Playout {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "test.playout",
            summary: "checking sink",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "",
            }],
            outputs: vec![],
            params: vec![],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }
    fn build(&self, cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![],
            latency: Duration::ZERO,
            processor: Box::new(PlayoutProc {
                played: cx.counter("played"),
                missing: cx.counter("missing"),
                bad: cx.counter("bad"),
                per_cycle_wrong: cx.counter("per_cycle_wrong"),
                out_of_order: cx.counter("out_of_order"),
                last: None,
            }),
        })
    }
}

const GRAPH: &str = r#"
[graph]
name = "fec_chain"
clock = { driver = "manual", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "src"
kind = "test.frames"

[[stage]]
id = "fec_enc"
kind = "fec.raptorq_encode"
params = { frames_per_block = 5, fec_ratio = 60, worker_wait = "500ms" }

[[stage]]
id = "path"
kind = "net.netem_frames"
params = { seed = 42, loss = 8, delay = "30ms", jitter = "10ms" }

[[stage]]
id = "fec_dec"
kind = "fec.raptorq_decode"
params = { worker_wait = "500ms" }

[[stage]]
id = "jb"
kind = "jitter.adaptive"
params = { min_delay = "160ms", initial_delay = "160ms", max_delay = "300ms" }

[[stage]]
id = "sink"
kind = "test.playout"

[[link]]
from = "src.out"
to = "fec_enc.in"

[[link]]
from = "fec_enc.out"
to = "path.in"

[[link]]
from = "path.out"
to = "fec_dec.in"

[[link]]
from = "fec_dec.out"
to = "jb.in"

[[link]]
from = "jb.out"
to = "sink.in"
"#;

#[test]
fn fec_turns_random_loss_into_exact_frames_at_playout() {
    let mut registry = wzp_stages::registry();
    registry.register(Frames).unwrap();
    registry.register(Playout).unwrap();
    let spec = GraphSpec::parse(GRAPH, "fec_chain.toml", &Default::default()).unwrap();
    let compiled = compile(&spec, &registry, &Resources::new()).unwrap();
    let mut graph = Graph::new(compiled);
    let cycles = 1500;
    for _ in 0..cycles {
        graph.step();
    }
    let stats = graph.stats();
    let get = |stage: &str, name: &str| stats.stage(stage).unwrap().counter(name).unwrap();
    let lost = get("path", "lost");
    let recovered = get("fec_dec", "recovered");
    let missing = get("sink", "missing");
    let played = get("sink", "played");
    eprintln!("lost {lost}, recovered {recovered}, concealed {missing}, played {played}, unrecoverable {}", get("fec_dec", "unrecoverable_blocks"));
    assert!(lost > 100, "the path lost frames: {lost}");
    assert_eq!(
        get("sink", "bad"),
        0,
        "every played payload is the one sent"
    );
    assert_eq!(get("sink", "out_of_order"), 0);
    assert_eq!(get("sink", "per_cycle_wrong"), 0, "one frame per period");
    assert!(recovered > 0);
    // 8% loss over 8 symbols with 3 repairs: most blocks recover.
    let source_lost = lost * 5 / 8;
    assert!(
        missing * 4 < source_lost,
        "FEC should hide most losses: {missing} concealed of ~{source_lost} lost sources"
    );
    assert!(
        played + missing >= cycles as u64 - 15,
        "{played} + {missing}"
    );
    assert_eq!(get("fec_dec", "worker_late"), 0);
    assert_eq!(get("fec_enc", "worker_late"), 0);
}
