//! Drives wire/crypto processors by hand: one input and one output buffer per
//! stage, counters read back by name. Shared by `wire_*.rs` and `crypto_*.rs`.
#![allow(dead_code)]

use std::time::Duration;

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;

pub const QUANTUM_NS: u64 = 20_000_000;
pub const BATCH: usize = 64;

/// A built stage with its own buffers.
pub struct Stage {
    pub processor: Box<dyn Processor>,
    pub pool: Vec<Buffer>,
    /// Pool indices of the inputs, then of the outputs.
    ins: Vec<u32>,
    outs: Vec<u32>,
    counters: Vec<(String, Counter)>,
    gauges: Vec<(String, Gauge)>,
    pub cx: Cx,
}

pub fn s(v: &str) -> ParamValue {
    ParamValue::Str(v.to_string())
}

pub fn i(v: i64) -> ParamValue {
    ParamValue::Int(v)
}

/// Builds `kind` with its defaults overridden by `params`.
pub fn try_build(
    kind: &str,
    params: &[(&str, ParamValue)],
    resources: &Resources,
) -> Result<Stage, BuildError> {
    let registry = wzp_stages::registry();
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
        assert!(
            info.params.iter().any(|s| s.name == *k),
            "{kind} has no param {k}"
        );
        p.insert(k, v.clone());
    }
    let mut bcx = BuildContext::standalone(48_000, Duration::from_nanos(QUANTUM_NS), resources);
    let built = factory.build(&mut bcx, &p)?;
    let (counters, gauges) = bcx.take_metrics();
    // Every input, then every output, in the pool; `in` and `out` (the
    // first of each) are what the helpers below feed and read.
    let pool: Vec<Buffer> = built
        .inputs
        .iter()
        .chain(&built.outputs)
        .map(|p| Buffer::for_type(p.ty, QUANTUM_NS, BATCH))
        .collect();
    let n_in = built.inputs.len() as u32;
    Ok(Stage {
        processor: built.processor,
        pool,
        ins: (0..n_in).collect(),
        outs: (n_in..n_in + built.outputs.len() as u32).collect(),
        counters,
        gauges,
        cx: Cx {
            now_ns: 0,
            cycle: 0,
            rate: 48_000,
            quantum_ns: QUANTUM_NS,
        },
    })
}

pub fn build(kind: &str, params: &[(&str, ParamValue)]) -> Stage {
    build_with(kind, params, &Resources::new())
}

pub fn build_with(kind: &str, params: &[(&str, ParamValue)], resources: &Resources) -> Stage {
    try_build(kind, params, resources).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

impl Stage {
    pub fn frames_in(&mut self) -> &mut Batch<FrameMeta> {
        match &mut self.pool[0] {
            Buffer::Frames(b) => b,
            _ => panic!("input is not a frame port"),
        }
    }

    pub fn packets_in(&mut self) -> &mut Batch<PacketMeta> {
        match &mut self.pool[0] {
            Buffer::Packets(b) => b,
            _ => panic!("input is not a packet port"),
        }
    }

    /// Input port `k` (0 = `in`) as a frame batch.
    pub fn frames_in_at(&mut self, k: usize) -> &mut Batch<FrameMeta> {
        match &mut self.pool[k] {
            Buffer::Frames(b) => b,
            _ => panic!("input {k} is not a frame port"),
        }
    }

    /// Output port `k` (0 = `out`) as a frame batch.
    pub fn frames_out_at(&self, k: usize) -> &Batch<FrameMeta> {
        match &self.pool[self.outs[k] as usize] {
            Buffer::Frames(b) => b,
            _ => panic!("output {k} is not a frame port"),
        }
    }

    pub fn frames_out(&self) -> &Batch<FrameMeta> {
        match &self.pool[self.outs[0] as usize] {
            Buffer::Frames(b) => b,
            _ => panic!("output is not a frame port"),
        }
    }

    pub fn packets_out(&self) -> &Batch<PacketMeta> {
        match &self.pool[self.outs[0] as usize] {
            Buffer::Packets(b) => b,
            _ => panic!("output is not a packet port"),
        }
    }

    /// One cycle: reset the output, process, advance time. Allocation-free.
    pub fn step(&mut self) {
        for &o in &self.outs {
            self.pool[o as usize].reset();
        }
        let mut io = Io::checked(&mut self.pool, &self.ins, &self.outs).expect("distinct buffers");
        self.processor.process(&mut io, &self.cx);
        self.cx.cycle += 1;
        self.cx.now_ns += self.cx.quantum_ns;
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
            .get()
    }

    pub fn gauge(&self, name: &str) -> i64 {
        self.gauges
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no gauge {name}"))
            .1
            .get()
    }

    /// Feeds packets (one cycle) and returns the output packets' bytes.
    pub fn run_packets(&mut self, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let input = self.packets_in();
        input.clear();
        for p in packets {
            input.push(PacketMeta::default(), p).expect("input fits");
        }
        self.step();
        self.packets_out()
            .iter()
            .map(|s| s.bytes().to_vec())
            .collect()
    }

    /// Feeds packets (one cycle) and returns the output frames.
    pub fn run_packets_to_frames(&mut self, packets: &[Vec<u8>]) -> Vec<(FrameMeta, Vec<u8>)> {
        let input = self.packets_in();
        input.clear();
        for p in packets {
            input.push(PacketMeta::default(), p).expect("input fits");
        }
        self.step();
        self.frames_out()
            .iter()
            .map(|s| (s.meta, s.bytes().to_vec()))
            .collect()
    }

    /// Feeds frames (one cycle) and returns the output packets' bytes.
    pub fn run_frames(&mut self, frames: &[(FrameMeta, Vec<u8>)]) -> Vec<Vec<u8>> {
        let input = self.frames_in();
        input.clear();
        for (m, p) in frames {
            input.push(*m, p).expect("input fits");
        }
        self.step();
        self.packets_out()
            .iter()
            .map(|s| s.bytes().to_vec())
            .collect()
    }
}

pub const TEST_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// packetize -> seal on one side, open -> depacketize on the other.
pub struct Pipeline {
    pub pack: Stage,
    pub seal: Stage,
    pub open: Stage,
    pub depack: Stage,
}

impl Pipeline {
    /// A pipeline with the test key and the given packetize params.
    pub fn new(pack_params: &[(&str, ParamValue)]) -> Pipeline {
        Pipeline::with_key(pack_params, &[("key", s(TEST_KEY))])
    }

    pub fn with_key(pack_params: &[(&str, ParamValue)], key: &[(&str, ParamValue)]) -> Pipeline {
        Pipeline {
            pack: build("wire.packetize", pack_params),
            seal: build("crypto.seal", key),
            open: build("crypto.open", key),
            depack: build("wire.depacketize", &[]),
        }
    }

    /// Frames to sealed wire packets.
    pub fn send(&mut self, frames: &[(FrameMeta, Vec<u8>)]) -> Vec<Vec<u8>> {
        let plain = self.pack.run_frames(frames);
        self.seal.run_packets(&plain)
    }

    /// Wire packets to frames.
    pub fn receive(&mut self, packets: &[Vec<u8>]) -> Vec<(FrameMeta, Vec<u8>)> {
        let opened = self.open.run_packets(packets);
        self.depack.run_packets_to_frames(&opened)
    }
}

/// A frame with the given seq, payload derived from it.
pub fn frame(seq: u32, len: usize) -> (FrameMeta, Vec<u8>) {
    let meta = FrameMeta {
        seq,
        timestamp: seq.wrapping_mul(960),
        stream: 7,
        codec: 1,
        duration_ms: 20,
        ..Default::default()
    };
    let payload = (0..len).map(|k| (k as u32 ^ seq) as u8).collect();
    (meta, payload)
}
