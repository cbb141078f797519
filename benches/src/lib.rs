//! Helpers shared by the wzp benches: drive a single processor by hand.

use std::time::Duration;

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;

/// The quantum every bench runs at, as the shipped graphs do.
pub const QUANTUM: Duration = Duration::from_millis(20);

/// A processor with its own buffer pool, stepped one quantum at a time.
pub struct Harness {
    pub processor: Box<dyn Processor>,
    pub pool: Vec<Buffer>,
    pub ins: Vec<u32>,
    pub outs: Vec<u32>,
    pub cx: Cx,
    /// Counters and gauges the stage registered, to check after a run that
    /// the bench exercised the path it claims to (e.g. DRED rebuilt frames).
    pub counters: Vec<(String, Counter)>,
    pub gauges: Vec<(String, Gauge)>,
}

impl Harness {
    /// Builds `kind` with `params` at `rate`/20 ms and gives it fresh buffers.
    pub fn new(
        registry: &Registry,
        kind: &str,
        params: &[(&str, ParamValue)],
        rate: u32,
    ) -> Harness {
        let factory = registry
            .get(kind)
            .unwrap_or_else(|| panic!("no stage kind {kind}"));
        let info = factory.info();
        let mut p = Params::default();
        for spec in &info.params {
            if let Some(d) = &spec.default {
                p.insert(spec.name, d.clone());
            }
        }
        for (k, v) in params {
            p.insert(k, v.clone());
        }
        let res = Resources::new();
        let mut cx = BuildContext::standalone(rate, QUANTUM, &res);
        let built = factory
            .build(&mut cx, &p)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let (counters, gauges) = cx.take_metrics();
        let qn = QUANTUM.as_nanos() as u64;
        let mut pool = Vec::new();
        let mut ins = Vec::new();
        for d in &built.inputs {
            ins.push(pool.len() as u32);
            pool.push(Buffer::for_type(d.ty, qn, 64));
        }
        let mut outs = Vec::new();
        for d in &built.outputs {
            outs.push(pool.len() as u32);
            pool.push(Buffer::for_type(d.ty, qn, 64));
        }
        Harness {
            processor: built.processor,
            pool,
            ins,
            outs,
            cx: Cx {
                now_ns: 0,
                cycle: 0,
                rate,
                quantum_ns: qn,
            },
            counters,
            gauges,
        }
    }

    /// Mutable access to input buffer `i` (to fill it before a step).
    pub fn input(&mut self, i: usize) -> &mut Buffer {
        &mut self.pool[self.ins[i] as usize]
    }

    /// Output buffer `o` after a step.
    pub fn output(&self, o: usize) -> &Buffer {
        &self.pool[self.outs[o] as usize]
    }

    /// Input `i` as PCM samples; panics if the port is not PCM.
    pub fn pcm_in(&mut self, i: usize) -> &mut [f32] {
        match self.input(i) {
            Buffer::Pcm(s) => s,
            _ => panic!("input {i} is not a PCM port"),
        }
    }

    /// Input `i` as a frame batch; panics if the port is not Frame.
    pub fn frames_in(&mut self, i: usize) -> &mut Batch<FrameMeta> {
        match self.input(i) {
            Buffer::Frames(b) => b,
            _ => panic!("input {i} is not a Frame port"),
        }
    }

    /// Output `o` as PCM samples; panics if the port is not PCM.
    pub fn pcm_out(&self, o: usize) -> &[f32] {
        match self.output(o) {
            Buffer::Pcm(s) => s,
            _ => panic!("output {o} is not a PCM port"),
        }
    }

    /// Output `o` as a frame batch; panics if the port is not Frame.
    pub fn frames_out(&self, o: usize) -> &Batch<FrameMeta> {
        match self.output(o) {
            Buffer::Frames(b) => b,
            _ => panic!("output {o} is not a Frame port"),
        }
    }

    /// The value of the stage's counter `name`; panics if it has none, so a
    /// renamed counter breaks the bench instead of silently reading 0.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.get())
            .unwrap_or_else(|| panic!("the stage has no counter {name:?}"))
    }

    /// Every counter as `name=value`, for a bench's closing report.
    pub fn counters_line(&self) -> String {
        self.counters
            .iter()
            .filter(|(_, c)| c.get() != 0)
            .map(|(n, c)| format!("{n}={}", c.get()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One cycle: reset outputs, process, advance time.
    pub fn step(&mut self) -> Flow {
        for &o in &self.outs {
            self.pool[o as usize].reset();
        }
        let mut io = Io::checked(&mut self.pool, &self.ins, &self.outs)
            .expect("harness buffers are distinct");
        let flow = self.processor.process(&mut io, &self.cx);
        self.cx.cycle += 1;
        self.cx.now_ns += self.cx.quantum_ns;
        flow
    }
}

/// Sums what `step` reports over `iters` calls: for `iter_custom` benches
/// whose iterations need untimed work (feeding inputs, letting a worker
/// thread catch up) around the timed part. Each call times itself with a
/// pair of `Instant` reads; the `timer/instant_pair` bench measures what
/// that pair adds.
pub fn time_each(iters: u64, mut step: impl FnMut() -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        total += step();
    }
    total
}

/// Spins (yielding) until `done` holds; panics after `limit`, so a worker
/// that stopped answering fails the bench instead of hanging it.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "gave up waiting for the worker after {limit:?}"
        );
        std::thread::yield_now();
    }
}
