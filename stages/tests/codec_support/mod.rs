//! Shared helpers for the `codec_*` tests: drive one processor by hand,
//! make speech-like test signals, and measure how well outputs match.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;

pub const RATE: u32 = 48_000;
pub const QUANTUM_NS: u64 = 20_000_000;
pub const Q: usize = 960;

/// One stage, built standalone, with its own buffer pool.
pub struct Harness {
    pub processor: Box<dyn Processor>,
    pub latency: Duration,
    counters: Vec<(String, Counter)>,
    gauges: Vec<(String, Gauge)>,
    pool: Vec<Buffer>,
    ins: Vec<u32>,
    outs: Vec<u32>,
    cycle: u64,
}

/// Params with the kind's defaults, then `overrides`.
pub fn params(factory: &dyn StageFactory, overrides: &[(&str, ParamValue)]) -> Params {
    let mut p = Params::default();
    for spec in factory.info().params {
        if let Some(d) = spec.default {
            p.insert(spec.name, d);
        }
    }
    for (k, v) in overrides {
        assert!(
            factory.info().params.iter().any(|s| s.name == *k),
            "test uses undeclared param {k}"
        );
        p.insert(k, v.clone());
    }
    p
}

pub fn int(v: i64) -> ParamValue {
    ParamValue::Int(v)
}
pub fn bool_(v: bool) -> ParamValue {
    ParamValue::Bool(v)
}
pub fn str_(v: &str) -> ParamValue {
    ParamValue::Str(v.to_string())
}

impl Harness {
    pub fn try_new(
        factory: &dyn StageFactory,
        overrides: &[(&str, ParamValue)],
    ) -> Result<Harness, BuildError> {
        Self::try_with_resources(factory, overrides, &Resources::new())
    }

    /// Like [`Harness::try_new`], with resources for the factory to look up.
    pub fn try_with_resources(
        factory: &dyn StageFactory,
        overrides: &[(&str, ParamValue)],
        resources: &Resources,
    ) -> Result<Harness, BuildError> {
        let mut cx = BuildContext::standalone(RATE, Duration::from_nanos(QUANTUM_NS), resources);
        let p = params(factory, overrides);
        let built = factory.build(&mut cx, &p)?;
        let (counters, gauges) = cx.take_metrics();
        let mut pool = Vec::new();
        let mut ins = Vec::new();
        let mut outs = Vec::new();
        for d in &built.inputs {
            ins.push(pool.len() as u32);
            pool.push(Buffer::for_type(d.ty, QUANTUM_NS, 64));
        }
        for d in &built.outputs {
            outs.push(pool.len() as u32);
            pool.push(Buffer::for_type(d.ty, QUANTUM_NS, 64));
        }
        Ok(Harness {
            processor: built.processor,
            latency: built.latency,
            counters,
            gauges,
            pool,
            ins,
            outs,
            cycle: 0,
        })
    }

    pub fn new(factory: &dyn StageFactory, overrides: &[(&str, ParamValue)]) -> Harness {
        match Self::try_new(factory, overrides) {
            Ok(h) => h,
            Err(e) => panic!("build failed: {e}"),
        }
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

    /// Waits (bounded) until `name` reaches `at_least`, for counters a
    /// worker thread moves.
    pub fn wait_counter(&self, name: &str, at_least: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.counter(name) < at_least {
            assert!(
                Instant::now() < deadline,
                "{name} stuck at {} < {at_least}",
                self.counter(name)
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    pub fn set_pcm_in(&mut self, x: &[f32]) {
        let i = self.ins[0] as usize;
        if let Buffer::Pcm(b) = &mut self.pool[i] {
            b.copy_from_slice(x);
        }
    }

    pub fn frames_in(&mut self) -> &mut Batch<FrameMeta> {
        let i = self.ins[0] as usize;
        match &mut self.pool[i] {
            Buffer::Frames(b) => b,
            _ => panic!("input 0 is not a frame port"),
        }
    }

    /// Runs one cycle (outputs reset first, as the engine does).
    pub fn step(&mut self) {
        for &o in &self.outs {
            self.pool[o as usize].reset();
        }
        let cx = Cx {
            now_ns: self.cycle * QUANTUM_NS,
            cycle: self.cycle,
            rate: RATE,
            quantum_ns: QUANTUM_NS,
        };
        self.cycle += 1;
        let mut io = Io::checked(&mut self.pool, &self.ins, &self.outs).expect("valid pool");
        self.processor.process(&mut io, &cx);
    }

    pub fn pcm_out(&self) -> &[f32] {
        match &self.pool[self.outs[0] as usize] {
            Buffer::Pcm(b) => b,
            _ => panic!("output 0 is not PCM"),
        }
    }

    pub fn frames_out(&self) -> &Batch<FrameMeta> {
        match &self.pool[self.outs[0] as usize] {
            Buffer::Frames(b) => b,
            _ => panic!("output 0 is not a frame port"),
        }
    }
}

/// An encoded frame as captured from an encoder's output.
#[derive(Clone, Debug)]
pub struct Captured {
    pub meta: FrameMeta,
    pub bytes: Vec<u8>,
}

pub fn capture(b: &Batch<FrameMeta>) -> Vec<Captured> {
    b.iter()
        .map(|s| Captured {
            meta: s.meta,
            bytes: s.bytes().to_vec(),
        })
        .collect()
}

/// A voiced, speech-like test signal: a gliding pitch (110-170 Hz) with
/// harmonics shaped by three formants, in syllables of ~150 ms separated by
/// short pauses. Deterministic. Peak about 0.5.
pub fn speechlike(n: usize) -> Vec<f32> {
    let fs = RATE as f64;
    let formants = [(650.0, 120.0), (1150.0, 150.0), (2500.0, 250.0)];
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / fs;
            let f0 = 140.0 + 30.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            phase += f0 / fs;
            let syl = (2.0 * std::f64::consts::PI * 3.3 * t).sin();
            let env = if syl > 0.0 { syl.powf(0.6) } else { 0.0 };
            let mut s = 0.0;
            let mut k = 1;
            while (k as f64) * f0 < 3600.0 {
                let f = k as f64 * f0;
                let a: f64 = formants
                    .iter()
                    .map(|(fc, bw)| 1.0 / (1.0 + ((f - fc) / bw).powi(2)))
                    .sum();
                s += a * (2.0 * std::f64::consts::PI * k as f64 * phase).sin();
                k += 1;
            }
            (0.18 * env * s) as f32
        })
        .collect()
}

/// Normalised cross-correlation of `x[a..b]` with `y[a+lag..b+lag]`.
pub fn ncc_at(x: &[f32], y: &[f32], a: usize, b: usize, lag: usize) -> f64 {
    let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
    for k in a..b {
        let (p, q) = (f64::from(x[k]), f64::from(y[k + lag]));
        xy += p * q;
        xx += p * p;
        yy += q * q;
    }
    if xx == 0.0 || yy == 0.0 {
        0.0
    } else {
        xy / (xx * yy).sqrt()
    }
}

/// The lag in `0..max_lag` at which `y` best matches `x` over `x[a..b]`,
/// and the normalised correlation there.
pub fn best_lag(x: &[f32], y: &[f32], a: usize, b: usize, max_lag: usize) -> (usize, f64) {
    (0..max_lag)
        .map(|l| (l, ncc_at(x, y, a, b, l)))
        .max_by(|p, q| p.1.total_cmp(&q.1))
        .expect("non-empty lag range")
}

/// RMS of consecutive blocks of `block` samples.
pub fn envelope(x: &[f32], block: usize) -> Vec<f32> {
    x.chunks_exact(block)
        .map(|c| (c.iter().map(|v| v * v).sum::<f32>() / block as f32).sqrt())
        .collect()
}

/// Pearson correlation of two equally long sequences.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let ma = a[..n].iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let mb = b[..n].iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for k in 0..n {
        let (p, q) = (f64::from(a[k]) - ma, f64::from(b[k]) - mb);
        ab += p * q;
        aa += p * p;
        bb += q * q;
    }
    ab / (aa * bb).sqrt().max(1e-30)
}

pub fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// Moves the encoder's output frames into the decoder's input, replacing
/// those `lost` selects by MISSING markers as a jitter buffer would (same
/// seq, timestamp and duration, empty payload). Allocation-free.
pub fn forward(enc: &Harness, dec: &mut Harness, mut lost: impl FnMut(&FrameMeta) -> bool) {
    let input = dec.frames_in();
    input.clear();
    for slot in enc.frames_out().iter() {
        if lost(&slot.meta) {
            let meta = FrameMeta {
                flags: frame_flags::MISSING,
                ..slot.meta
            };
            let _ = input.push(meta, &[]);
        } else {
            let _ = input.push_copy(slot);
        }
    }
}

/// Runs `signal` through encoder and decoder, one quantum per cycle, plus
/// `tail` quanta of silence to flush; returns the decoder's output.
pub fn run_chain(
    enc: &mut Harness,
    dec: &mut Harness,
    signal: &[f32],
    tail: usize,
    mut lost: impl FnMut(&FrameMeta) -> bool,
) -> Vec<f32> {
    let zeros = vec![0.0; Q];
    let mut out = Vec::with_capacity(signal.len() + tail * Q);
    let chunks = signal
        .chunks_exact(Q)
        .chain(std::iter::repeat_n(&zeros[..], tail));
    for chunk in chunks {
        enc.set_pcm_in(chunk);
        enc.step();
        forward(enc, dec, &mut lost);
        dec.step();
        out.extend_from_slice(dec.pcm_out());
    }
    out
}
