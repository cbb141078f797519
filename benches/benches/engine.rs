//! Engine overhead: a chain of N stages that do nothing, stepped by hand.
//! Reported per cycle; divide by N for ns per stage per cycle.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wzp_engine::prelude::*;

struct Nop;
struct NopProc;
impl Processor for NopProc {
    fn process(&mut self, _io: &mut Io<'_>, _cx: &Cx) -> Flow {
        Flow::Continue
    }
}
impl StageFactory for Nop {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "bench.nop",
            summary: "does nothing",
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
            params: vec![],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }
    fn build(&self, _cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        Ok(Built {
            inputs: vec![PortDecl::optional("in", PortType::Frame)],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: Duration::ZERO,
            processor: Box::new(NopProc),
        })
    }
}

struct NopPcm;
impl StageFactory for NopPcm {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "bench.nop_pcm",
            ..Nop.info()
        }
    }
    fn build(&self, cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        let t = PortType::Pcm { rate: cx.rate };
        Ok(Built {
            inputs: vec![PortDecl::optional("in", t)],
            outputs: vec![PortDecl::new("out", t)],
            latency: Duration::ZERO,
            processor: Box::new(NopProc),
        })
    }
}

fn chain(kind: &str, n: usize) -> GraphSpec {
    let mut spec = GraphSpec::new(
        "bench",
        ClockSpec {
            driver: ClockDriver::Manual,
            ..Default::default()
        },
    );
    for i in 0..n {
        spec = spec.stage(StageSpec::new(&format!("s{i}"), kind));
        if i > 0 {
            spec = spec.link(&format!("s{}.out", i - 1), &format!("s{i}.in"));
        }
    }
    spec
}

fn engine_overhead(c: &mut Criterion) {
    let mut reg = Registry::new();
    reg.register(Nop).unwrap();
    reg.register(NopPcm).unwrap();
    for kind in ["bench.nop", "bench.nop_pcm"] {
        let mut group = c.benchmark_group(format!("engine/chain/{kind}"));
        for n in [1usize, 10, 100] {
            let compiled = compile(&chain(kind, n), &reg, &Resources::new()).unwrap();
            let mut g = Graph::new(compiled);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| g.step())
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = engine_overhead
}
criterion_main!(benches);
