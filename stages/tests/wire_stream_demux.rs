//! wire.stream_demux: one output per sender, reuse after idle, drops when full.

use std::time::Duration;

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;

wzp_engine::install_alloc_checker!();

struct H {
    p: Box<dyn Processor>,
    pool: Vec<Buffer>,
    outs: Vec<u32>,
    cx: Cx,
    counters: Vec<(String, Counter)>,
    gauges: Vec<(String, Gauge)>,
}

fn build(outputs: i64) -> H {
    let res = Resources::new();
    let mut cx = BuildContext::standalone(48_000, Duration::from_millis(20), &res);
    let mut p = Params::default();
    p.insert("outputs", ParamValue::Int(outputs));
    p.insert("idle", ParamValue::Duration(Duration::from_millis(500)));
    let f = wzp_stages::registry();
    let built = f
        .get("wire.stream_demux")
        .unwrap()
        .build(&mut cx, &p)
        .unwrap();
    assert_eq!(built.outputs.len(), outputs as usize);
    let (counters, gauges) = cx.take_metrics();
    let mut pool = vec![Buffer::for_type(PortType::Frame, 20_000_000, 64)];
    let outs: Vec<u32> = (1..=outputs as u32).collect();
    for _ in 0..outputs {
        pool.push(Buffer::for_type(PortType::Frame, 20_000_000, 64));
    }
    H {
        p: built.processor,
        pool,
        outs,
        cx: Cx {
            now_ns: 0,
            cycle: 0,
            rate: 48_000,
            quantum_ns: 20_000_000,
        },
        counters,
        gauges,
    }
}

impl H {
    /// Feeds frames from `streams` (one each); returns, per output, the
    /// (stream, seq, start flag) of what came out.
    fn step(&mut self, streams: &[u32]) -> Vec<Vec<(u32, u32, bool)>> {
        for b in self.pool.iter_mut() {
            b.reset();
        }
        if let Buffer::Frames(b) = &mut self.pool[0] {
            for (i, s) in streams.iter().enumerate() {
                b.push(
                    FrameMeta {
                        stream: *s,
                        seq: self.cx.cycle as u32 * 10 + i as u32,
                        ..Default::default()
                    },
                    b"x",
                )
                .unwrap();
            }
        }
        let mut io = Io::checked(&mut self.pool, &[0], &self.outs).unwrap();
        self.p.process(&mut io, &self.cx);
        self.cx.cycle += 1;
        self.cx.now_ns += self.cx.quantum_ns;
        self.outs
            .iter()
            .map(|&o| match &self.pool[o as usize] {
                Buffer::Frames(b) => b
                    .iter()
                    .map(|s| {
                        (
                            s.meta.stream,
                            s.meta.seq,
                            s.meta.flags & frame_flags::STREAM_START != 0,
                        )
                    })
                    .collect(),
                _ => vec![],
            })
            .collect()
    }

    /// The `senderK` gauges, output by output.
    fn senders(&self) -> Vec<i64> {
        (0..self.outs.len())
            .map(|k| {
                let name = format!("sender{k}");
                self.gauges
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap()
                    .1
                    .get()
            })
            .collect()
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .get()
    }
}

#[test]
fn each_sender_keeps_its_own_output() {
    let mut h = build(3);
    let out = h.step(&[7, 9]);
    assert_eq!(out[0], [(7, 0, true)]);
    assert_eq!(out[1], [(9, 1, true)]);
    assert!(out[2].is_empty());
    let out = h.step(&[9, 7, 7]);
    assert_eq!(out[0], [(7, 11, false), (7, 12, false)]);
    assert_eq!(out[1], [(9, 10, false)]);
    assert_eq!(h.counter("streams_assigned"), 2);
    assert_eq!(h.senders(), [7, 9, -1], "each output names its sender");
}

#[test]
fn an_output_names_its_sender_until_it_is_freed() {
    let mut h = build(2);
    assert_eq!(h.senders(), [-1, -1]);
    h.step(&[u32::MAX, 5]);
    assert_eq!(h.senders(), [i64::from(u32::MAX), 5]);
    // Sender 5 stops; its output is freed after four idle periods (2 s).
    for _ in 0..101 {
        h.step(&[u32::MAX]);
    }
    assert_eq!(h.senders(), [i64::from(u32::MAX), -1]);
    h.step(&[6]);
    assert_eq!(h.senders()[1], 6);
}

#[test]
fn a_full_table_drops_newcomers_until_a_sender_goes_idle() {
    let mut h = build(2);
    h.step(&[1, 2]);
    let out = h.step(&[3]);
    assert!(out.iter().all(|o| o.is_empty()));
    assert_eq!(h.counter("unassigned_drops"), 1);
    // Sender 1 keeps talking; 2 goes quiet for more than `idle` (500 ms).
    for _ in 0..30 {
        h.step(&[1]);
    }
    let out = h.step(&[3]);
    assert_eq!(
        out[1],
        [(3, 320, true)],
        "the idle output went to the newcomer, marked as a new stream"
    );
}

#[test]
fn demux_does_not_allocate() {
    let mut h = build(4);
    let mut n = 0u32;
    assert_rt_safe("wire.stream_demux", 500, || {
        n += 1;
        let _ = &h.step_no_alloc(&[n % 7, 100, n % 3]);
    });
    assert!(h.counter("streams_assigned") > 4);
}

impl H {
    fn step_no_alloc(&mut self, streams: &[u32]) {
        for b in self.pool.iter_mut() {
            b.reset();
        }
        if let Buffer::Frames(b) = &mut self.pool[0] {
            for s in streams {
                let _ = b.push(
                    FrameMeta {
                        stream: *s,
                        ..Default::default()
                    },
                    b"y",
                );
            }
        }
        let mut io = Io::checked(&mut self.pool, &[0], &self.outs).unwrap();
        self.p.process(&mut io, &self.cx);
        self.cx.now_ns += 600_000_000;
    }
}

#[test]
fn bad_params_are_refused() {
    let res = Resources::new();
    let reg = wzp_stages::registry();
    let f = reg.get("wire.stream_demux").unwrap();
    for (name, v) in [
        ("outputs", ParamValue::Int(0)),
        ("outputs", ParamValue::Int(33)),
        ("idle", ParamValue::Duration(Duration::from_millis(10))),
    ] {
        let mut cx = BuildContext::standalone(48_000, Duration::from_millis(20), &res);
        let mut p = Params::default();
        p.insert("outputs", ParamValue::Int(4));
        p.insert("idle", ParamValue::Duration(Duration::from_secs(2)));
        p.insert(name, v);
        let err = f.build(&mut cx, &p).err().expect("refused").to_string();
        assert!(err.contains(name), "{err}");
    }
}
