//! The four media stages wired in a TOML graph, as a call graph uses them:
//! frames -> packetize -> seal -> open -> depacketize -> frames.

use std::collections::BTreeMap;
use std::time::Duration;

use wzp_engine::prelude::*;

/// `test.frames`: one frame per cycle, seq n, payload derived from n.
struct Frames;
struct FramesProc {
    next: u32,
    left: u32,
}

fn payload_byte(seq: u32, k: usize) -> u8 {
    (seq as usize * 31 + k) as u8
}

impl Processor for FramesProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if self.left == 0 {
            return Flow::Finished;
        }
        let Some(out) = io.frames_out(0) else {
            return Flow::Continue;
        };
        if let Some(slot) = out.push_slot() {
            let seq = self.next;
            slot.meta = FrameMeta {
                seq,
                timestamp: seq.wrapping_mul(960),
                codec: 1,
                duration_ms: 20,
                flags: if seq == 0 {
                    frame_flags::STREAM_START
                } else {
                    0
                },
                ..Default::default()
            };
            for (k, b) in slot.buf_mut()[..80].iter_mut().enumerate() {
                *b = payload_byte(seq, k);
            }
            slot.set_len(80);
        }
        self.next += 1;
        self.left -= 1;
        Flow::Continue
    }
}

impl StageFactory for Frames {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "test.frames",
            summary: "numbered frames",
            inputs: vec![],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "",
            }],
            params: vec![ParamSpec::int("count", 10, "frames to emit")],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }
    fn build(&self, _cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        Ok(Built {
            inputs: vec![],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: Duration::ZERO,
            processor: Box::new(FramesProc {
                next: 0,
                left: p.int("count")? as u32,
            }),
        })
    }
}

/// `test.check`: counts frames that match what `test.frames` sent.
struct Check;
struct CheckProc {
    sender: u32,
    good: Counter,
    bad: Counter,
}

impl Processor for CheckProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let Some(input) = io.frames_in(0) else {
            return Flow::Continue;
        };
        for f in input.iter() {
            let m = f.meta;
            let ok = m.stream == self.sender
                && m.timestamp == m.seq.wrapping_mul(960)
                && m.codec == 1
                && (m.flags & frame_flags::STREAM_START != 0) == (m.seq == 0)
                && f.bytes().len() == 80
                && f.bytes()
                    .iter()
                    .enumerate()
                    .all(|(k, b)| *b == payload_byte(m.seq, k));
            if ok {
                self.good.inc();
            } else {
                self.bad.inc();
            }
        }
        Flow::Continue
    }
}

impl StageFactory for Check {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "test.check",
            summary: "checks frames",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "",
            }],
            outputs: vec![],
            params: vec![ParamSpec::int("sender", 0, "expected stream id")],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }
    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![],
            latency: Duration::ZERO,
            processor: Box::new(CheckProc {
                sender: p.int("sender")? as u32,
                good: cx.counter("good"),
                bad: cx.counter("bad"),
            }),
        })
    }
}

const GRAPH: &str = r#"
[graph]
name = "e2e-media"
clock = { driver = "manual", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "src"
kind = "test.frames"
params = { count = 50 }

[[stage]]
id = "pack"
kind = "wire.packetize"
params = { sender_id = "${sender}" }

[[stage]]
id = "seal"
kind = "crypto.seal"
params = { room = "${room}", room_secret = "${room_secret}" }

[[stage]]
id = "open"
kind = "crypto.open"
params = { room = "${room}", room_secret = "${room_secret}" }

[[stage]]
id = "depack"
kind = "wire.depacketize"

[[stage]]
id = "check"
kind = "test.check"
params = { sender = "${sender}" }

[[link]]
from = "src.out"
to = "pack.in"

[[link]]
from = "pack.out"
to = "seal.in"

[[link]]
from = "seal.out"
to = "open.in"

[[link]]
from = "open.out"
to = "depack.in"

[[link]]
from = "depack.out"
to = "check.in"
"#;

#[test]
fn media_stages_run_in_a_graph() {
    let mut registry = wzp_stages::registry();
    registry.register(Frames).unwrap();
    registry.register(Check).unwrap();
    let vars: BTreeMap<String, String> = [
        ("sender", "3054"),
        ("room", "lobby"),
        ("room_secret", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let spec = GraphSpec::parse(GRAPH, "e2e-media.toml", &vars).unwrap();
    let compiled = compile(&spec, &registry, &Resources::new()).unwrap();
    let mut graph = Graph::new(compiled);
    for _ in 0..50 {
        graph.step();
    }
    let stats = graph.stats();
    let counter = |stage: &str, name: &str| stats.stage(stage).unwrap().counter(name).unwrap();
    assert_eq!(counter("pack", "packets"), 50);
    assert_eq!(counter("seal", "sealed"), 50);
    assert_eq!(counter("open", "opened"), 50);
    assert_eq!(counter("depack", "frames"), 50);
    assert_eq!(counter("check", "good"), 50);
    assert_eq!(counter("check", "bad"), 0);
}

#[test]
fn a_graph_without_a_key_names_the_stage_and_what_to_set() {
    let registry = wzp_stages::registry();
    let text = r#"
[graph]
name = "nokey"
clock = { driver = "manual", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "seal"
kind = "crypto.seal"
"#;
    let spec = GraphSpec::parse(text, "nokey.toml", &BTreeMap::new()).unwrap();
    let err = compile(&spec, &registry, &Resources::new())
        .err()
        .expect("no key source");
    let msg = err.to_string();
    assert!(msg.contains("seal"), "{msg}");
    assert!(msg.contains("room_secret"), "{msg}");
}
