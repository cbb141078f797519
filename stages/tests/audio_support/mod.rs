//! Drives one stage by hand, the way the engine does: outputs reset before
//! each `process`, inputs written by the test.
#![allow(dead_code)]

use std::time::Duration;

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;

pub const RATE: u32 = 48_000;
pub const QUANTUM: Duration = Duration::from_millis(20);

pub struct Harness {
    processor: Box<dyn Processor>,
    pool: Vec<Buffer>,
    ins: Vec<u32>,
    outs: Vec<u32>,
    cycle: u64,
    rate: u32,
    pub built_inputs: Vec<PortDecl>,
    pub built_outputs: Vec<PortDecl>,
    pub latency: Duration,
    counters: Vec<(String, Counter)>,
    gauges: Vec<(String, Gauge)>,
}

/// Params of `factory` with defaults, overridden by `set`.
pub fn params(factory: &dyn StageFactory, set: &[(&str, ParamValue)]) -> Params {
    let mut p = Params::default();
    for spec in factory.info().params {
        if let Some(d) = spec.default {
            p.insert(spec.name, d);
        }
    }
    for (k, v) in set {
        p.insert(k, v.clone());
    }
    p
}

pub fn int(v: i64) -> ParamValue {
    ParamValue::Int(v)
}
pub fn float(v: f64) -> ParamValue {
    ParamValue::Float(v)
}
pub fn text(v: &str) -> ParamValue {
    ParamValue::Str(v.to_string())
}
pub fn dur(v: &str) -> ParamValue {
    ParamValue::Duration(wzp_engine::params::parse_duration(v).unwrap())
}

impl Harness {
    pub fn build(
        factory: &dyn StageFactory,
        set: &[(&str, ParamValue)],
    ) -> Result<Harness, BuildError> {
        Self::build_at(factory, set, RATE, QUANTUM)
    }

    pub fn build_at(
        factory: &dyn StageFactory,
        set: &[(&str, ParamValue)],
        rate: u32,
        quantum: Duration,
    ) -> Result<Harness, BuildError> {
        Self::build_with(factory, set, rate, quantum, &Resources::new())
    }

    /// [`Harness::build_at`] with the control plane's `resources` (cells).
    pub fn build_with(
        factory: &dyn StageFactory,
        set: &[(&str, ParamValue)],
        rate: u32,
        quantum: Duration,
        resources: &Resources,
    ) -> Result<Harness, BuildError> {
        let mut cx = BuildContext::standalone(rate, quantum, resources);
        let built = factory.build(&mut cx, &params(factory, set))?;
        let (counters, gauges) = cx.take_metrics();
        let qn = quantum.as_nanos() as u64;
        let mut pool = Vec::new();
        for d in built.inputs.iter().chain(&built.outputs) {
            pool.push(Buffer::for_type(d.ty, qn, 64));
        }
        let n_in = built.inputs.len() as u32;
        let n_out = built.outputs.len() as u32;
        Ok(Harness {
            processor: built.processor,
            pool,
            ins: (0..n_in).collect(),
            outs: (n_in..n_in + n_out).collect(),
            cycle: 0,
            rate,
            built_inputs: built.inputs,
            built_outputs: built.outputs,
            latency: built.latency,
            counters,
            gauges,
        })
    }

    /// PCM input `i`, to fill before [`Harness::run`].
    pub fn input(&mut self, i: usize) -> &mut [f32] {
        match &mut self.pool[self.ins[i] as usize] {
            Buffer::Pcm(s) => s,
            _ => panic!("input {i} is not PCM"),
        }
    }

    pub fn input_len(&mut self) -> usize {
        self.input(0).len()
    }

    pub fn output(&self, o: usize) -> &[f32] {
        match &self.pool[self.outs[o] as usize] {
            Buffer::Pcm(s) => s,
            _ => panic!("output {o} is not PCM"),
        }
    }

    /// One cycle: reset outputs, process.
    pub fn run(&mut self) -> Flow {
        for &o in &self.outs {
            self.pool[o as usize].reset();
        }
        let cx = Cx {
            now_ns: self.cycle * QUANTUM.as_nanos() as u64,
            cycle: self.cycle,
            rate: self.rate,
            quantum_ns: QUANTUM.as_nanos() as u64,
        };
        self.cycle += 1;
        let mut io = Io::checked(&mut self.pool, &self.ins, &self.outs).expect("valid pool");
        self.processor.process(&mut io, &cx)
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
            .get()
    }

    /// A handle on a counter that outlives the harness.
    pub fn clone_counter(&self, name: &str) -> Counter {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
            .clone()
    }

    /// A handle on a gauge that outlives the harness.
    pub fn clone_gauge(&self, name: &str) -> Gauge {
        self.gauges
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no gauge {name}"))
            .1
            .clone()
    }

    pub fn gauge(&self, name: &str) -> i64 {
        self.gauges
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no gauge {name}"))
            .1
            .get()
    }

    /// Runs until the stage says `Finished` (at most `limit` cycles),
    /// collecting output 0.
    pub fn collect_until_finished(&mut self, limit: usize) -> (Vec<f32>, usize) {
        let mut out = Vec::new();
        for cycles in 0..limit {
            if self.run() == Flow::Finished {
                return (out, cycles);
            }
            out.extend_from_slice(self.output(0));
        }
        panic!("no Finished within {limit} cycles");
    }

    /// Feeds `signal` quantum by quantum into input 0, collecting output 0.
    pub fn stream(&mut self, signal: &[f32]) -> Vec<f32> {
        let q = self.input(0).len();
        let mut out = Vec::new();
        for chunk in signal.chunks(q) {
            let inp = self.input(0);
            inp.fill(0.0);
            inp[..chunk.len()].copy_from_slice(chunk);
            self.run();
            if !self.outs.is_empty() {
                out.extend_from_slice(self.output(0));
            }
        }
        out
    }
}

pub fn sine(freq: f64, rate: u32, n: usize, amp: f32) -> Vec<f32> {
    (0..n)
        .map(|i| amp * (std::f64::consts::TAU * freq * i as f64 / rate as f64).sin() as f32)
        .collect()
}

/// A unique scratch folder for one test.
pub fn temp_dir(test: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "wzp-audio-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
