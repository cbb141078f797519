//! Stage kinds for the engine's own tests. The engine knows no media, so its
//! tests bring their own tiny stages.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wzp_engine::prelude::*;

fn info(
    kind: &'static str,
    inputs: Vec<PortInfo>,
    outputs: Vec<PortInfo>,
    params: Vec<ParamSpec>,
    domains: &'static [Domain],
) -> StageInfo {
    StageInfo {
        kind,
        summary: "test stage",
        inputs,
        outputs,
        params,
        default_domain: domains[0],
        domains,
    }
}

fn port(name: &'static str, ty: &'static str) -> PortInfo {
    PortInfo { name, ty, doc: "" }
}

/// `test.ramp`: outputs sample n = n (a running counter), so a sink can
/// check no quantum was lost or repeated. Param `frames`: stop after this
/// many quanta (0 = never). Param `rate`: output rate (0 = graph rate).
pub struct Ramp;
struct RampProc {
    next: f32,
    left: i64,
}
impl Processor for RampProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if self.left == 0 {
            return Flow::Finished;
        }
        for s in io.pcm_out(0) {
            *s = self.next;
            self.next += 1.0;
        }
        if self.left > 0 {
            self.left -= 1;
        }
        Flow::Continue
    }
}
impl StageFactory for Ramp {
    fn info(&self) -> StageInfo {
        info(
            "test.ramp",
            vec![],
            vec![port("out", "Pcm")],
            vec![
                ParamSpec::int("frames", -1, "quanta to emit, -1 forever"),
                ParamSpec::int("rate", 0, "rate"),
            ],
            &[Domain::Clocked],
        )
    }
    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = match p.int("rate")? {
            0 => cx.rate,
            r => r as u32,
        };
        Ok(Built {
            inputs: vec![],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency: Duration::ZERO,
            processor: Box::new(RampProc {
                next: 0.0,
                left: p.int("frames")?,
            }),
        })
    }
}

/// `test.add`: out = in + `value`; declares `latency_ms`.
pub struct Add;
struct AddProc(f32);
impl Processor for AddProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (i, o) = io.pcm_in_out(0, 0);
        for (o, i) in o.iter_mut().zip(i) {
            *o = i + self.0;
        }
        Flow::Continue
    }
}
impl StageFactory for Add {
    fn info(&self) -> StageInfo {
        info(
            "test.add",
            vec![port("in", "Pcm")],
            vec![port("out", "Pcm")],
            vec![
                ParamSpec::float("value", 0.0, "added to every sample"),
                ParamSpec::int("latency_ms", 0, "declared latency"),
                ParamSpec::required("label", ParamType::Str, "a required param"),
            ],
            &[Domain::Clocked],
        )
    }
    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let value = p.float_in("value", -1e6, 1e6)?;
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Pcm { rate: cx.rate })],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate: cx.rate })],
            latency: Duration::from_millis(p.int("latency_ms")? as u64),
            processor: Box::new(AddProc(value as f32)),
        })
    }
}

/// `test.check`: verifies the input continues a ramp (+ offset) without gaps;
/// counts good quanta and broken ones. Optional second input `aux`.
pub struct Check;
struct CheckProc {
    expect: Option<f32>,
    good: Counter,
    broken: Counter,
    last: Gauge,
}
impl Processor for CheckProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let x = io.pcm_in(0);
        let Some(&first) = x.first() else {
            return Flow::Continue;
        };
        let mut ok = true;
        if let Some(e) = self.expect {
            ok &= first == e;
        }
        ok &= x.windows(2).all(|w| w[1] == w[0] + 1.0);
        if ok {
            self.good.inc();
        } else {
            self.broken.inc();
        }
        self.expect = Some(x[x.len() - 1] + 1.0);
        self.last.set(x[x.len() - 1] as i64);
        Flow::Continue
    }
}
impl StageFactory for Check {
    fn info(&self) -> StageInfo {
        info(
            "test.check",
            vec![port("in", "Pcm"), port("aux", "Pcm")],
            vec![],
            vec![ParamSpec::int("rate", 0, "input rate, 0 = graph rate")],
            &[Domain::Clocked],
        )
    }
    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = match p.int("rate")? {
            0 => cx.rate,
            r => r as u32,
        };
        let good = cx.counter("good");
        let broken = cx.counter("broken");
        let last = cx.gauge("last");
        Ok(Built {
            inputs: vec![
                PortDecl::new("in", PortType::Pcm { rate }),
                PortDecl::optional("aux", PortType::Pcm { rate }),
            ],
            outputs: vec![],
            latency: Duration::ZERO,
            processor: Box::new(CheckProc {
                expect: None,
                good,
                broken,
                last,
            }),
        })
    }
}

/// `test.framer`: one frame per quantum holding the first sample's value as
/// a little-endian u32 in its payload and in `seq`.
pub struct Framer;
struct FramerProc;
impl Processor for FramerProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (i, o) = io.pcm_in_frames_out(0, 0);
        let v = i.first().copied().unwrap_or(0.0) as u32;
        if let Some(o) = o {
            let _ = o.push(
                FrameMeta {
                    seq: v,
                    ..Default::default()
                },
                &v.to_le_bytes(),
            );
        }
        Flow::Continue
    }
}
impl StageFactory for Framer {
    fn info(&self) -> StageInfo {
        info(
            "test.framer",
            vec![port("in", "Pcm")],
            vec![port("out", "Frame")],
            vec![],
            &[Domain::Clocked],
        )
    }
    fn build(&self, cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Pcm { rate: cx.rate })],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: Duration::from_millis(5),
            processor: Box::new(FramerProc),
        })
    }
}

/// `test.frame_sink`: counts frames and records the last seq in a shared atomic.
pub struct FrameSink(pub Arc<AtomicU64>);
struct FrameSinkProc {
    n: Counter,
    last: Arc<AtomicU64>,
}
impl Processor for FrameSinkProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if let Some(b) = io.frames_in(0) {
            for f in b.iter() {
                self.n.inc();
                self.last.store(f.meta.seq as u64, Ordering::Relaxed);
            }
        }
        Flow::Continue
    }
}
impl StageFactory for FrameSink {
    fn info(&self) -> StageInfo {
        info(
            "test.frame_sink",
            vec![port("in", "Frame")],
            vec![],
            vec![],
            &[Domain::Packet, Domain::Clocked],
        )
    }
    fn build(&self, cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        let n = cx.counter("frames");
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![],
            latency: Duration::ZERO,
            processor: Box::new(FrameSinkProc {
                n,
                last: self.0.clone(),
            }),
        })
    }
}

/// `test.echo`: out = in; reads an optional `back` input (a feedback link)
/// and shows the first sample of each input in gauges `in_first` and
/// `back_first`, so a test can see how many quanta `back` lags.
pub struct Echo;
struct EchoProc {
    in_first: Gauge,
    back_first: Gauge,
}
impl Processor for EchoProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let back = io.pcm_in(1).first().copied().unwrap_or(-1.0);
        self.back_first.set(back as i64);
        let (i, o) = io.pcm_in_out(0, 0);
        o.copy_from_slice(i);
        self.in_first.set(i.first().copied().unwrap_or(-1.0) as i64);
        Flow::Continue
    }
}
impl StageFactory for Echo {
    fn info(&self) -> StageInfo {
        info(
            "test.echo",
            vec![port("in", "Pcm"), port("back", "Pcm")],
            vec![port("out", "Pcm")],
            vec![],
            &[Domain::Clocked],
        )
    }
    fn build(&self, cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        let pcm = PortType::Pcm { rate: cx.rate };
        Ok(Built {
            inputs: vec![PortDecl::new("in", pcm), PortDecl::optional("back", pcm)],
            outputs: vec![PortDecl::new("out", pcm)],
            latency: Duration::ZERO,
            processor: Box::new(EchoProc {
                in_first: cx.gauge("in_first"),
                back_first: cx.gauge("back_first"),
            }),
        })
    }
}

/// `test.fail`: always refuses to build.
pub struct Fail;
impl StageFactory for Fail {
    fn info(&self) -> StageInfo {
        info(
            "test.fail",
            vec![],
            vec![port("out", "Pcm")],
            vec![],
            &[Domain::Clocked],
        )
    }
    fn build(&self, _cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        Err(BuildError::Other("refused on purpose".into()))
    }
}

pub fn registry() -> (Registry, Arc<AtomicU64>) {
    let last = Arc::new(AtomicU64::new(0));
    let mut r = Registry::new();
    r.register(Ramp).unwrap();
    r.register(Add).unwrap();
    r.register(Check).unwrap();
    r.register(Framer).unwrap();
    r.register(FrameSink(last.clone())).unwrap();
    r.register(Fail).unwrap();
    r.register(Echo).unwrap();
    (r, last)
}

pub const HEADER: &str =
    "[graph]\nname = \"t\"\nclock = { driver = \"manual\", quantum_ms = 20, rate = 48000 }\n";

pub fn parse(body: &str) -> GraphSpec {
    GraphSpec::parse(&format!("{HEADER}{body}"), "t.toml", &Default::default())
        .expect("test graph parses")
}
