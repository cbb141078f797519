//! Helpers shared by the wzp benches: drive a single processor by hand.

use std::time::Duration;

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;

/// A processor with its own buffer pool, stepped one quantum at a time.
pub struct Harness {
    pub processor: Box<dyn Processor>,
    pub pool: Vec<Buffer>,
    pub ins: Vec<u32>,
    pub outs: Vec<u32>,
    pub cx: Cx,
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
        let quantum = Duration::from_millis(20);
        let mut cx = BuildContext::standalone(rate, quantum, &res);
        let built = factory
            .build(&mut cx, &p)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let qn = quantum.as_nanos() as u64;
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
