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

/// The rings between a real-time stage and an I/O thread, each way, with
/// a relay's traffic: 64 voice packets of 100 bytes (a cycle's fan-out),
/// pushed then drained.
fn rings(c: &mut Criterion) {
    use wzp_engine::bridge::{from_io, to_io, DomainWaker};
    use wzp_engine::port::{Batch, PacketMeta, Slot};
    use wzp_engine::stage::Counter;
    const N: usize = 64;
    let mut group = c.benchmark_group("engine/ring");
    group.throughput(Throughput::Elements(N as u64));
    let payload = [0x5a_u8; 100];
    let mut slot = Slot::<PacketMeta>::default();
    slot.set_bytes(&payload);
    let (mut tx, mut rx) = to_io::<PacketMeta>(1024, Counter::default());
    group.bench_function("to_io_100B", |b| {
        b.iter(|| {
            for _ in 0..N {
                tx.send(&slot);
            }
            let mut sum = 0usize;
            rx.drain_with(|_, bytes| sum += bytes.len());
            sum
        })
    });
    let (mut tx, mut rx) = from_io::<PacketMeta>(1024, DomainWaker::new());
    let mut out = Batch::<PacketMeta>::with_capacity(N);
    group.bench_function("from_io_100B", |b| {
        b.iter(|| {
            for _ in 0..N {
                let _ = tx.send(PacketMeta::default(), &payload);
            }
            out.clear();
            rx.drain_into(&mut out)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = engine_overhead, rings
}
criterion_main!(benches);
