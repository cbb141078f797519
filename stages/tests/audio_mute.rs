//! `audio.mute` driven by hand: the switch the control plane throws takes
//! the signal to silence at the next quantum, fading over it, and back.
//! Every `process` runs under `assert_no_alloc`.

wzp_engine::install_alloc_checker!();

use std::sync::Arc;
use std::time::Duration;

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::audio::mute::{Mute, MuteSwitch};

const Q_NS: u64 = 20_000_000;
const N: usize = 960;

struct Stage {
    p: Box<dyn Processor>,
    pool: Vec<Buffer>,
    counters: Vec<(String, Counter)>,
    gauges: Vec<(String, Gauge)>,
    cycle: u64,
}

impl Stage {
    fn build(params: &[(&'static str, ParamValue)], res: &Resources) -> Result<Stage, BuildError> {
        let mut cx = BuildContext::standalone(48_000, Duration::from_nanos(Q_NS), res);
        let mut p = Params::default();
        for spec in Mute.info().params {
            if let Some(d) = spec.default {
                p.insert(spec.name, d);
            }
        }
        for (k, v) in params {
            p.insert(k, v.clone());
        }
        let built = Mute.build(&mut cx, &p)?;
        let (counters, gauges) = cx.take_metrics();
        let pool = built
            .inputs
            .iter()
            .chain(&built.outputs)
            .map(|d| Buffer::for_type(d.ty, Q_NS, 4))
            .collect();
        Ok(Stage {
            p: built.processor,
            pool,
            counters,
            gauges,
            cycle: 0,
        })
    }

    /// One quantum of a constant `x` in; what came out.
    fn step(&mut self, x: f32) -> Vec<f32> {
        match &mut self.pool[0] {
            Buffer::Pcm(s) => s.fill(x),
            _ => unreachable!(),
        }
        self.pool[1].reset();
        let cx = Cx {
            now_ns: self.cycle * Q_NS,
            cycle: self.cycle,
            rate: 48_000,
            quantum_ns: Q_NS,
        };
        let mut io = Io::checked(&mut self.pool, &[0], &[1]).unwrap();
        let p = &mut self.p;
        assert_rt_safe("audio.mute process", 1, || {
            p.process(&mut io, &cx);
        });
        self.cycle += 1;
        match &self.pool[1] {
            Buffer::Pcm(s) => s.to_vec(),
            _ => unreachable!(),
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .get()
    }

    fn gauge(&self, name: &str) -> i64 {
        self.gauges.iter().find(|(n, _)| n == name).unwrap().1.get()
    }
}

fn with_switch(switch: &Arc<MuteSwitch>) -> Stage {
    let mut res = Resources::new();
    res.insert("call.mute", switch.clone());
    Stage::build(&[("switch", ParamValue::Str("call.mute".into()))], &res).unwrap()
}

#[test]
fn the_switch_silences_the_next_quantum_with_a_fade_and_opens_it_again() {
    let switch = Arc::new(MuteSwitch::new(false));
    let mut st = with_switch(&switch);
    // Open: the signal passes bit for bit.
    assert!(st.step(0.5).iter().all(|&v| v == 0.5));
    assert_eq!(st.gauge("muted"), 0);

    switch.set(true);
    let fade = st.step(0.5);
    // The quantum after the switch fades down, never up, to silence.
    assert!(fade[0] > 0.49 && fade[0] <= 0.5, "{}", fade[0]);
    assert!(fade.windows(2).all(|w| w[1] <= w[0]));
    assert_eq!(fade[N - 1], 0.0);
    assert_eq!(st.gauge("muted"), 1);
    for _ in 0..5 {
        assert!(st.step(0.5).iter().all(|&v| v == 0.0));
    }
    assert_eq!(st.counter("muted_frames"), 6);

    switch.set(false);
    let fade = st.step(0.5);
    assert!(fade[0] < 0.01, "{}", fade[0]);
    assert!(fade.windows(2).all(|w| w[1] >= w[0]));
    assert_eq!(fade[N - 1], 0.5);
    assert!(st.step(0.5).iter().all(|&v| v == 0.5));
    assert_eq!(st.gauge("muted"), 0);
    assert_eq!(st.counter("muted_frames"), 6);
}

#[test]
fn a_switch_thrown_before_the_start_starts_silent_with_no_fade() {
    let switch = Arc::new(MuteSwitch::new(true));
    let mut st = with_switch(&switch);
    assert!(st.step(0.5).iter().all(|&v| v == 0.0));
    assert_eq!(st.gauge("muted"), 1);
}

#[test]
fn with_no_switch_inserted_the_param_holds() {
    let res = Resources::new();
    let named = [("switch", ParamValue::Str("call.mute".into()))];
    let mut open = Stage::build(&named, &res).unwrap();
    assert!(open.step(0.25).iter().all(|&v| v == 0.25));

    let muted = [
        ("switch", ParamValue::Str("call.mute".into())),
        ("muted", ParamValue::Bool(true)),
    ];
    let mut shut = Stage::build(&muted, &res).unwrap();
    assert!(shut.step(0.25).iter().all(|&v| v == 0.0));
}

#[test]
fn a_switch_name_taken_by_another_kind_of_cell_is_refused_by_name() {
    let mut res = Resources::new();
    res.insert("call.mute", Arc::new(42u32));
    let err = Stage::build(&[("switch", ParamValue::Str("call.mute".into()))], &res)
        .err()
        .expect("a u32 is no MuteSwitch");
    let text = err.to_string();
    assert!(
        text.contains("switch") && text.contains("MuteSwitch"),
        "{text}"
    );
}
